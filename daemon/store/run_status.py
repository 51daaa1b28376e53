"""Runs and steps: a row each, opened when they start and closed with a final status; and
closing the runs a dead process left ``running``.

Final statuses of a run: ``ok``, ``errors`` (record errors), ``failed`` (a system refused or
was unreachable), ``stopped`` (the daemon stopped, at a chunk boundary or after the grace),
``crashed`` (an unexpected exception), ``waiting`` (a gate holds it) and ``interrupted`` (found ``running`` at start-up: the
process that ran it died). A step still ``running`` when its run ends takes the run's status.
"""
from __future__ import annotations

from typing import Iterable

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from daemon.store.db import dumps, now
from daemon.store.tables import T

runs, steps = T["runs"], T["steps"]
INTERRUPTED = "interrupted: the process running it ended without finishing it"


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


async def end_run(db: AsyncEngine, run_id: int, status: str, message: str = "") -> None:
    """Write a run's final status, and the same on any of its steps still running."""
    at = now()
    async with db.begin() as conn:
        await conn.execute(update(runs).where(runs.c.id == run_id).values(
            status=status, message=message[:2000], finished_at=at))
        await conn.execute(update(steps).where(
            steps.c.run_id == run_id, steps.c.status == "running").values(
            status=status, finished_at=at))


async def close_interrupted(db: AsyncEngine, integrations: Iterable[str]) -> list[dict]:
    """Runs of these integrations still ``running``: closed as ``interrupted``. Returns them
    (id, integration, started_at) so that the caller can say which."""
    names = sorted(set(integrations))
    if not names:
        return []
    at = now()
    async with db.begin() as conn:
        found = [dict(r) for r in (await conn.execute(
            select(runs.c.id, runs.c.integration, runs.c.started_at).where(
                runs.c.integration.in_(names), runs.c.status == "running")
            .order_by(runs.c.id))).mappings()]
        ids = [r["id"] for r in found]
        if ids:
            await conn.execute(update(runs).where(runs.c.id.in_(ids)).values(
                status="interrupted", message=INTERRUPTED, finished_at=at))
            await conn.execute(update(steps).where(
                steps.c.run_id.in_(ids), steps.c.status == "running").values(
                status="interrupted", finished_at=at))
    return found
