"""What an operator does to the state by hand: retry, exclude, include, approve, pause, resume.

The status page's buttons (daemon/web.py) and the command line call these, so a button and
its command do the same thing. Each takes an open connection; the caller owns the
transaction. Nothing here talks to a system: the next run does the work.
"""
from __future__ import annotations

from typing import Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.store.db import now
from daemon.store.tables import T

errors, exclusions, held, pauses = (T["record_errors"], T["exclusions"], T["held_deletes"],
                                    T["pauses"])
intents, reviews = T["intents"], T["reviews"]


def _key(table, integration: str, flow: str | None = None, side: str | None = None,
         ids: Sequence[str] | None = None) -> list:
    cond = [table.c.integration == integration]
    if flow is not None:
        cond.append(table.c.flow == flow)
    if side is not None:
        cond.append(table.c.side == side)
    if ids is not None:
        cond.append(table.c.record_id.in_(list(ids)))
    return cond


async def retry(conn: AsyncConnection, integration: str, flow: str | None = None,
                side: str | None = None, ids: Sequence[str] | None = None) -> int:
    """Mark record errors to be read again by id in the next run (``retry = True``), out of
    quarantine, their run counter back to 0; and let a create whose answer was lost, and that
    could not be looked up by any key, be made (the operator looked). ``flow``/``side``/``ids``
    narrow it down (all of a flow: ``ids=None``). Returns how many were marked."""
    done = (await conn.execute(update(errors).where(*_key(errors, integration, flow, side, ids))
                               .values(retry=True, count=0, quarantined=False))).rowcount
    icond = [intents.c.integration == integration]
    if flow:
        icond.append(intents.c.flow == flow)
    if ids is not None:
        icond.append(intents.c.source_id.in_(list(ids)))
    unresolved = select(reviews.c.record_id).where(
        reviews.c.integration == intents.c.integration, reviews.c.flow == intents.c.flow,
        reviews.c.record_id == intents.c.source_id).exists()
    stuck = (await conn.execute(select(intents.c.flow, intents.c.source_id).where(
        *icond, unresolved))).all()
    for f, sid in stuck:
        await conn.execute(delete(intents).where(
            intents.c.integration == integration, intents.c.flow == f,
            intents.c.source_id == sid))
        await conn.execute(delete(reviews).where(
            reviews.c.integration == integration, reviews.c.flow == f,
            reviews.c.record_id == sid))
    return (done or 0) + len(stuck)


async def exclude(conn: AsyncConnection, integration: str, flow: str, side: str,
                  record_id: str, *, once: bool = False, reason: str = "") -> None:
    """Leave a record out of the sync (BB-6): for good, or for the next run only (``once``).

    Its open record error goes with it: the operator has decided about that record, and the
    exclusion (with ``reason``, by default the error's message) is what the status page shows.
    """
    key = _key(exclusions, integration, flow, side, [record_id])
    if not reason:
        reason = (await conn.execute(select(errors.c.message).where(
            *_key(errors, integration, flow, side, [record_id])))).scalar() or ""
    await conn.execute(delete(exclusions).where(*key))
    await conn.execute(insert(exclusions).values(
        integration=integration, flow=flow, side=side, record_id=record_id,
        mode="skip_once" if once else "never", reason=reason, created_at=now()))
    await conn.execute(delete(errors).where(*_key(errors, integration, flow, side,
                                                  [record_id])))


async def include(conn: AsyncConnection, integration: str, flow: str, side: str,
                  record_id: str) -> bool:
    """Lift an exclusion: the record is read again by id in the next run (mode ``revisit``).
    False when the record was not excluded."""
    key = _key(exclusions, integration, flow, side, [record_id])
    gone = (await conn.execute(delete(exclusions).where(
        *key, exclusions.c.mode.in_(("never", "skip_once"))))).rowcount
    if not gone:
        return False
    await conn.execute(delete(exclusions).where(*key))
    await conn.execute(insert(exclusions).values(
        integration=integration, flow=flow, side=side, record_id=record_id, mode="revisit",
        reason="included again", created_at=now()))
    return True


async def push(conn: AsyncConnection, integration: str, flow: str, side: str,
               record_id: str) -> None:
    """An explicit push of one record (UL-3), taken by the next run of its flow."""
    pushes = T["pushes"]
    await conn.execute(delete(pushes).where(*_key(pushes, integration, flow, side, [record_id])))
    await conn.execute(insert(pushes).values(integration=integration, flow=flow, side=side,
                                             record_id=record_id, created_at=now()))


async def approve(conn: AsyncConnection, integration: str, flow: str | None = None
                  ) -> dict[str, int]:
    """Let the next run go past what holds the integration: the deletes the circuit-breaker
    held (of one flow, or all), its gates (a first run's plan, a changed system). Returns how
    many of each were approved."""
    from daemon.store import gates
    return await gates.approve(conn, integration, flow)


async def pause(conn: AsyncConnection, integration: str, reason: str = "") -> bool:
    """Pause an integration's scheduled runs (kept across restarts). False when it already
    was paused."""
    if await is_paused(conn, integration):
        return False
    await conn.execute(insert(pauses).values(integration=integration, reason=reason,
                                             paused_at=now()))
    return True


async def resume(conn: AsyncConnection, integration: str) -> bool:
    """Undo ``pause``. False when the integration was not paused."""
    return (await conn.execute(delete(pauses).where(
        pauses.c.integration == integration))).rowcount > 0


async def is_paused(conn: AsyncConnection, integration: str) -> bool:
    return (await conn.execute(select(pauses.c.integration).where(
        pauses.c.integration == integration))).first() is not None


async def paused(conn: AsyncConnection) -> dict[str, dict]:
    """Every paused integration: ``{name: {"reason", "paused_at"}}``."""
    rows = await conn.execute(select(pauses).order_by(pauses.c.integration))
    return {r["integration"]: {"reason": r["reason"], "paused_at": r["paused_at"]}
            for r in rows.mappings()}
