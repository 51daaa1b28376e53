"""Read-only queries for what people look at: ``accord status``, the status page, /metrics.

Every function takes an open connection and returns plain dicts and tuples; JSON columns
come back decoded. Lists are ordered (PostgreSQL, unlike SQLite, keeps no order of its own).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.store.db import loads
from daemon.store.tables import T

runs, steps, links = T["runs"], T["steps"], T["links"]
errors, reviews, held, exclusions = (T["record_errors"], T["reviews"], T["held_deletes"],
                                     T["exclusions"])

# Runs whose steps read only the records they were given (targeted) or wrote nothing (plan):
# their reads say nothing about how far behind an integration is.
NOT_A_SYNC = ("plan", "push", "webhook")


async def ping(conn: AsyncConnection) -> None:
    """The cheapest statement: does the state database answer?"""
    await conn.execute(text("SELECT 1"))


# --- runs and steps ----------------------------------------------------------------------------
async def recent_runs(conn: AsyncConnection, integration: str, limit: int = 20) -> list[dict]:
    """The newest ``limit`` runs, newest first, each with its ``steps`` (in order)."""
    rows = [dict(r) for r in (await conn.execute(
        select(runs).where(runs.c.integration == integration)
        .order_by(runs.c.id.desc()).limit(limit))).mappings()]
    by_run = await steps_of(conn, [r["id"] for r in rows])
    for r in rows:
        r["steps"] = by_run.get(r["id"], [])
    return rows


async def steps_of(conn: AsyncConnection, run_ids: Sequence[int]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    if not run_ids:
        return out
    rows = await conn.execute(select(steps).where(steps.c.run_id.in_(list(run_ids)))
                              .order_by(steps.c.id))
    for r in rows.mappings():
        out.setdefault(r["run_id"], []).append({**r, "counts": loads(r["counts"]) or {}})
    return out


async def last_run_id(conn: AsyncConnection, integration: str) -> int:
    return (await conn.execute(select(func.max(runs.c.id)).where(
        runs.c.integration == integration))).scalar() or 0


# --- what waits for a person -------------------------------------------------------------------
async def _of(conn: AsyncConnection, table, integration: str, order: Iterable) -> list[dict]:
    rows = await conn.execute(select(table).where(table.c.integration == integration)
                              .order_by(*order))
    return [dict(r) for r in rows.mappings()]


async def record_errors(conn: AsyncConnection, integration: str) -> list[dict]:
    return await _of(conn, errors, integration, (errors.c.flow, errors.c.side,
                                                 errors.c.record_id))


async def reviews_of(conn: AsyncConnection, integration: str) -> list[dict]:
    rows = await _of(conn, reviews, integration, (reviews.c.flow, reviews.c.side,
                                                  reviews.c.record_id))
    return [{**r, "candidates": loads(r["candidates"])} for r in rows]


async def held_deletes(conn: AsyncConnection, integration: str) -> list[dict]:
    return await _of(conn, held, integration, (held.c.flow, held.c.id))


async def exclusions_of(conn: AsyncConnection, integration: str) -> list[dict]:
    return await _of(conn, exclusions, integration, (exclusions.c.flow, exclusions.c.side,
                                                     exclusions.c.record_id))


async def link_bases(conn: AsyncConnection, integration: str, flow: str, side: str,
                     ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The base values (``{path: value}``) a link keeps of each ``side`` record in ``ids``:
    where the page finds a record's name and key."""
    col = links.c.left_id if side == "left" else links.c.right_id
    base = links.c.left_base if side == "left" else links.c.right_base
    out: dict[str, dict[str, Any]] = {}
    ids = sorted(set(ids))
    for i in range(0, len(ids), 500):
        rows = await conn.execute(select(col, base).where(
            links.c.integration == integration, links.c.flow == flow, col.in_(ids[i:i + 500])))
        out.update({rid: loads(text) or {} for rid, text in rows.all()})
    return out


# --- metrics -----------------------------------------------------------------------------------
async def run_outcomes(conn: AsyncConnection) -> list[tuple[str, str, int]]:
    """(integration, final outcome, runs): runs under way are not counted (they have none)."""
    return [tuple(r) for r in (await conn.execute(
        select(runs.c.integration, runs.c.status, func.count())
        .where(runs.c.status != "running")
        .group_by(runs.c.integration, runs.c.status)
        .order_by(runs.c.integration, runs.c.status))).all()]


async def steps_after(conn: AsyncConnection, step_id: int) -> list[tuple]:
    """(step id, integration, flow, status, counts) of the steps after ``step_id``, in order."""
    rows = await conn.execute(
        select(steps.c.id, runs.c.integration, steps.c.flow, steps.c.status, steps.c.counts)
        .join(runs, runs.c.id == steps.c.run_id)
        .where(steps.c.id > step_id).order_by(steps.c.id))
    return [(sid, integ, flow, status, loads(counts) or {})
            for sid, integ, flow, status, counts in rows.all()]


async def open_counts(conn: AsyncConnection, table: str) -> list[tuple[str, str, str, int]]:
    """(integration, flow, side, rows) of ``record_errors``, ``reviews`` or ``exclusions``
    (exclusions: the ones in force, not those lifted and waiting to be read again)."""
    t = T[table]
    cond = [t.c.mode.in_(("never", "skip_once"))] if table == "exclusions" else []
    return [tuple(r) for r in (await conn.execute(
        select(t.c.integration, t.c.flow, t.c.side, func.count()).where(*cond)
        .group_by(t.c.integration, t.c.flow, t.c.side))).all()]


async def held_waiting(conn: AsyncConnection) -> list[tuple[str, str, int]]:
    """(integration, flow, deletes held and not yet approved)."""
    return [tuple(r) for r in (await conn.execute(
        select(held.c.integration, held.c.flow, func.count())
        .where(held.c.approved.is_(False))
        .group_by(held.c.integration, held.c.flow))).all()]


async def last_finished_runs(conn: AsyncConnection) -> list[tuple]:
    """(integration, started_at, finished_at) of each integration's newest finished run."""
    newest = select(func.max(runs.c.id)).where(runs.c.finished_at.is_not(None)) \
        .group_by(runs.c.integration)
    return [tuple(r) for r in (await conn.execute(
        select(runs.c.integration, runs.c.started_at, runs.c.finished_at)
        .where(runs.c.id.in_(newest)))).all()]


async def last_reads(conn: AsyncConnection) -> list[tuple]:
    """(integration, flow, finished_at) of the newest step of each flow that read both sides
    and finished (ok or with record errors), in a run that synced (not a plan, a push or a
    webhook's targeted run). A failed step may have stopped before or after its reads: it
    does not count."""
    return [tuple(r) for r in (await conn.execute(
        select(runs.c.integration, steps.c.flow, func.max(steps.c.finished_at))
        .join(runs, runs.c.id == steps.c.run_id)
        .where(steps.c.status.in_(("ok", "errors")), steps.c.finished_at.is_not(None),
               runs.c.trigger.not_in(NOT_A_SYNC))
        .group_by(runs.c.integration, steps.c.flow))).all()]


LOG_RUNS = 20


def iso(value: Any) -> str | None:
    """A stored time as ISO text, to the second, UTC when the database gave it naive."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat(timespec="seconds")
    return str(value)


async def integration_log(conn, name: str, runs_kept: int = LOG_RUNS) -> list[dict]:
    """AJ-5: the integration log, newest first: every run of the last ``runs_kept`` with its
    status and message, and each step's (batches, "Sync Completed", held flows, errors)."""
    runs, steps = T["runs"], T["steps"]
    rows = (await conn.execute(select(runs).where(runs.c.integration == name)
                               .order_by(runs.c.id.desc()).limit(runs_kept))).mappings().all()
    if not rows:
        return []
    by_run: dict[int, list] = {}
    for s in (await conn.execute(select(steps).where(steps.c.run_id.in_([r["id"] for r in rows]))
                                 .order_by(steps.c.id))).mappings():
        by_run.setdefault(s["run_id"], []).append(
            {"flow": s["flow"], "status": s["status"], "message": s["message"],
             "counts": {k: v for k, v in (loads(s["counts"]) or {}).items() if v}})
    return [{"run": r["id"], "trigger": r["trigger"], "status": r["status"],
             "started_at": iso(r["started_at"]), "finished_at": iso(r["finished_at"]),
             "message": r["message"], "steps": by_run.get(r["id"], [])} for r in rows]


async def history(conn, integration: str, record_id: str) -> list[dict]:
    """The audit trail of one record and of its partners (``accord history``), oldest first."""
    audit, links = T["audit"], T["links"]
    ids = {record_id}
    for row in (await conn.execute(select(links.c.left_id, links.c.right_id).where(
            links.c.integration == integration,
            (links.c.left_id == record_id) | (links.c.right_id == record_id)))):
        ids.update(row)
    rows = (await conn.execute(select(audit).where(
        audit.c.integration == integration, audit.c.record_id.in_(sorted(ids)))
        .order_by(audit.c.at, audit.c.id))).mappings().all()
    # a row a write, field by field (revision 0007)
    return [{"at": iso(r["at"]), "run": r["run_id"], "flow": r["flow"], "side": r["side"],
             "record": r["record_id"], "field": f["field"], "old": f["old"], "new": f["new"],
             "rule": f["rule"]} for r in rows for f in loads(r["fields"])]


async def record_outcome(conn, integration: str, flow: str, side: str, record_id: str
                         ) -> tuple[dict | None, dict | None]:
    """One record's link and open error (what ``accord push`` reports)."""
    links, errors = T["links"], T["record_errors"]
    link = (await conn.execute(select(links).where(
        links.c.integration == integration, links.c.flow == flow,
        links.c[f"{side}_id"] == record_id))).mappings().first()
    err = (await conn.execute(select(errors).where(
        errors.c.integration == integration, errors.c.flow == flow, errors.c.side == side,
        errors.c.record_id == record_id))).mappings().first()
    return (dict(link) if link else None), (dict(err) if err else None)
