"""The correspondence table (BB-6, BB-7): a flow's linked pairs with their exclusions, and
setting or lifting "no sync" (``never``) and "not this time" (``skip_once``) on a pair, on
both of its records, so neither side's edits flow while it is set."""
from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.store.db import loads, now
from daemon.store.tables import T

links, exclusions = T["links"], T["exclusions"]
MODES = ("never", "skip_once")


async def pairs(conn: AsyncConnection, integration: str, flow: str, *, after: int = 0,
                before: int | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Linked pairs by link id, each with both bases and each side's exclusion mode: the
    ``limit`` first after the link id ``after`` or, given ``before``, the ``limit`` last before
    that one (a keyset page back), in id order either way."""
    cond = [links.c.integration == integration, links.c.flow == flow]
    if before is not None:
        rows = list(reversed((await conn.execute(select(links).where(
            *cond, links.c.id < before).order_by(links.c.id.desc()).limit(limit)))
            .mappings().all()))
    else:
        rows = (await conn.execute(select(links).where(*cond, links.c.id > after)
                                   .order_by(links.c.id).limit(limit))).mappings().all()
    ex = await _modes(conn, integration, flow,
                      [r["left_id"] for r in rows], [r["right_id"] for r in rows])
    return [{"id": r["id"], "left_id": r["left_id"], "right_id": r["right_id"],
             "left": loads(r["left_base"]) or {}, "right": loads(r["right_base"]) or {},
             "left_excluded": ex.get(("left", r["left_id"])),
             "right_excluded": ex.get(("right", r["right_id"]))} for r in rows]


async def count(conn: AsyncConnection, integration: str, flow: str, *,
                below: int | None = None) -> int:
    """How many pairs the flow has (with ``below``: with a smaller link id than that)."""
    cond = [links.c.integration == integration, links.c.flow == flow]
    if below is not None:
        cond.append(links.c.id < below)
    return (await conn.execute(select(func.count()).select_from(links).where(*cond))
            ).scalar_one()


async def unlinked_exclusions(conn: AsyncConnection, integration: str, flow: str
                              ) -> list[dict[str, Any]]:
    """Excluded records that have no link (set before the first sync, from the preview)."""
    out = []
    for side in ("left", "right"):
        col = links.c[f"{side}_id"]
        rows = await conn.execute(select(exclusions).select_from(exclusions.outerjoin(
            links, and_(links.c.integration == exclusions.c.integration,
                        links.c.flow == exclusions.c.flow, col == exclusions.c.record_id)))
            .where(exclusions.c.integration == integration, exclusions.c.flow == flow,
                   exclusions.c.side == side, exclusions.c.mode.in_(MODES), links.c.id.is_(None)))
        out += [{"side": side, "record_id": r["record_id"], "mode": r["mode"],
                 "reason": r["reason"]} for r in rows.mappings()]
    return out


async def _modes(conn, integration: str, flow: str, left: list[str], right: list[str]
                 ) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for side, ids in (("left", left), ("right", right)):
        for i in range(0, len(ids), 500):
            rows = await conn.execute(select(exclusions.c.record_id, exclusions.c.mode).where(
                exclusions.c.integration == integration, exclusions.c.flow == flow,
                exclusions.c.side == side, exclusions.c.record_id.in_(ids[i:i + 500]),
                exclusions.c.mode.in_(MODES)))
            out.update({(side, rid): mode for rid, mode in rows})
    return out


async def pair_ids(conn: AsyncConnection, integration: str, flow: str, side: str,
                   record_id: str) -> dict[str, str]:
    """The record and, when linked, its partner: {side: id}."""
    row = (await conn.execute(select(links.c.left_id, links.c.right_id).where(
        links.c.integration == integration, links.c.flow == flow,
        links.c[f"{side}_id"] == record_id))).first()
    return {side: record_id} if row is None else {"left": row[0], "right": row[1]}


async def set_mode(conn: AsyncConnection, integration: str, flow: str, side: str,
                   record_id: str, mode: str | None, reason: str = "") -> dict[str, str]:
    """Set "no sync" / "not this time" on a record and its partner, or lift it (None: the
    records are read again next run). Returns the records touched."""
    ids = await pair_ids(conn, integration, flow, side, record_id)
    for s, rid in ids.items():
        key = [exclusions.c.integration == integration, exclusions.c.flow == flow,
               exclusions.c.side == s, exclusions.c.record_id == rid]
        was = (await conn.execute(delete(exclusions).where(*key, exclusions.c.mode.in_(MODES))
                                  )).rowcount
        if mode is not None or was:
            await conn.execute(delete(exclusions).where(*key))
            await conn.execute(insert(exclusions).values(
                integration=integration, flow=flow, side=s, record_id=rid,
                mode=mode or "revisit", reason=reason if mode else "included again",
                created_at=now()))
    return ids
