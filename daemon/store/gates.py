"""Gates (what stops an integration until a person approves it), the identity of the systems
each integration reached, and the fingerprint of each flow's mapped fields."""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.store.db import dumps, loads, now
from daemon.store.tables import T

gates, instances, flow_state = T["gates"], T["instances"], T["flow_state"]
links, cursors, held = T["links"], T["cursors"], T["held_deletes"]


# --- gates ----------------------------------------------------------------------------------
async def open_gates(conn: AsyncConnection, integration: str | None = None) -> list[dict]:
    cond = [] if integration is None else [gates.c.integration == integration]
    rows = await conn.execute(select(gates).where(*cond).order_by(gates.c.id))
    return [{**r, "detail": loads(r["detail"])} for r in rows.mappings()]


async def gate(conn: AsyncConnection, integration: str, kind: str, flow: str = ""
               ) -> dict | None:
    row = (await conn.execute(select(gates).where(
        gates.c.integration == integration, gates.c.kind == kind, gates.c.flow == flow)
        .order_by(gates.c.id.desc()))).mappings().first()
    return None if row is None else {**row, "detail": loads(row["detail"])}


async def set_gate(conn: AsyncConnection, integration: str, kind: str, message: str,
                   detail: dict[str, Any], flow: str = "") -> None:
    """Open (or refresh, unapproved) the gate of that kind."""
    await close_gate(conn, integration, kind, flow)
    await conn.execute(insert(gates).values(
        integration=integration, flow=flow, kind=kind, message=message[:2000],
        detail=dumps(detail), approved=False, created_at=now()))


async def close_gate(conn: AsyncConnection, integration: str, kind: str, flow: str = ""
                     ) -> None:
    await conn.execute(delete(gates).where(
        gates.c.integration == integration, gates.c.kind == kind, gates.c.flow == flow))


async def approve(conn: AsyncConnection, integration: str, flow: str | None = None
                  ) -> dict[str, int]:
    """Approve what holds the integration (or one flow): its gates and its held deletes."""
    gcond = [gates.c.integration == integration, gates.c.approved.is_(False)]
    hcond = [held.c.integration == integration, held.c.approved.is_(False)]
    if flow is not None:
        gcond.append(gates.c.flow.in_((flow, "")))
        hcond.append(held.c.flow == flow)
    g = (await conn.execute(update(gates).where(*gcond).values(
        approved=True, approved_at=now()))).rowcount
    h = (await conn.execute(update(held).where(*hcond).values(approved=True))).rowcount
    return {"gates": g or 0, "held_deletes": h or 0}


async def approve_gate(conn: AsyncConnection, integration: str, kind: str, flow: str = ""
                       ) -> int:
    """Approve one gate (e.g. only the first run's plan: BB-9's confirmation)."""
    return (await conn.execute(update(gates).where(
        gates.c.integration == integration, gates.c.kind == kind, gates.c.flow == flow)
        .values(approved=True, approved_at=now()))).rowcount or 0


# --- the identity of each side's system -----------------------------------------------------
async def instance(conn: AsyncConnection, integration: str, side: str) -> str | None:
    row = (await conn.execute(select(instances.c.identity).where(
        instances.c.integration == integration, instances.c.side == side))).first()
    return None if row is None else row[0]


async def set_instance(conn: AsyncConnection, integration: str, side: str, identity: str
                       ) -> None:
    await conn.execute(delete(instances).where(instances.c.integration == integration,
                                               instances.c.side == side))
    await conn.execute(insert(instances).values(integration=integration, side=side,
                                                identity=identity, updated_at=now()))


async def has_state(conn: AsyncConnection, integration: str) -> bool:
    """Whether the integration has synchronised anything yet (links or cursors)."""
    for table in (links, cursors):
        n = (await conn.execute(select(func.count()).select_from(table).where(
            table.c.integration == integration))).scalar_one()
        if n:
            return True
    return False


# --- the fingerprint of each flow's fields --------------------------------------------------
async def flow_fields(conn: AsyncConnection, integration: str, flow: str) -> dict | None:
    row = (await conn.execute(select(flow_state).where(
        flow_state.c.integration == integration, flow_state.c.flow == flow))).mappings().first()
    return None if row is None else {"fingerprint": row["fingerprint"],
                                     "fields": loads(row["fields"])}


async def set_flow_fields(conn: AsyncConnection, integration: str, flow: str,
                          fingerprint: str, fields: list) -> None:
    await conn.execute(delete(flow_state).where(flow_state.c.integration == integration,
                                                flow_state.c.flow == flow))
    await conn.execute(insert(flow_state).values(integration=integration, flow=flow,
                                                 fields=dumps(fields), fingerprint=fingerprint,
                                                 updated_at=now()))
