"""Runs and steps: a row each, opened when they start and closed with a final status."""
from __future__ import annotations

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.store.db import dumps, now
from daemon.store.tables import T

runs, steps = T["runs"], T["steps"]


async def start_run(conn: AsyncConnection, integration: str, trigger: str) -> int:
    return (await conn.execute(insert(runs).values(
        integration=integration, trigger=trigger, status="running", started_at=now()))
            ).inserted_primary_key[0]


async def start_step(conn: AsyncConnection, run_id: int, flow: str) -> int:
    return (await conn.execute(insert(steps).values(
        run_id=run_id, flow=flow, status="running", counts="{}", started_at=now()))
            ).inserted_primary_key[0]


async def finish_step(conn: AsyncConnection, step_id: int, status: str, counts: dict,
                      message: str) -> None:
    await conn.execute(update(steps).where(steps.c.id == step_id).values(
        status=status, counts=dumps(counts), message=message[:2000], finished_at=now()))
