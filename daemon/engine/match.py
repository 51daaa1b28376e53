"""Match candidates of unlinked records by natural key: the other side's staged records
first (one query per key per chunk), then the connector's ``find()`` when that side's listing
was not complete. Reads only; the planner decides what a candidate list means."""
from __future__ import annotations

from dataclasses import dataclass, field

from daemon.engine.context import StepContext
from daemon.engine.flow import holds, is_soft_deleted, mapped
from daemon.engine.rules import Side, other
from daemon.engine.transforms import find_path, key_value
from daemon.store import queries as q


@dataclass
class Candidates:
    by_record: dict[str, list[dict]] = field(default_factory=dict)
    partner_ambiguous: set[str] = field(default_factory=set)
    linked: set[str] = field(default_factory=set)     # candidates that already have a link
    # records whose only partner is excluded ("no sync", "not this time"): they must not be
    # created on the other side, which would make the excluded record's duplicate
    partner_excluded: set[str] = field(default_factory=set)


async def candidates(ctx: StepContext, side: Side, recs: list[dict]) -> Candidates:
    """Partners of ``recs`` (staged records of ``side``), both ways: a partner that itself
    matches several records of ``side`` makes the match ambiguous."""
    target = other(side)
    excluded: set[str] = set()
    out = Candidates(await _lookup(ctx, side, recs, excluded))
    out.partner_excluded = excluded - set(out.by_record)
    single = {rid: cs[0] for rid, cs in out.by_record.items() if len(cs) == 1}
    if single:
        back = await _lookup(ctx, target, list({c["record_id"]: c
                                                for c in single.values()}.values()))
        for rid, cand in single.items():
            mirror = back.get(cand["record_id"], [])
            if len(mirror) > 1:
                out.by_record[rid] = [cand] + [m for m in mirror if m["record_id"] != rid]
                out.partner_ambiguous.add(rid)
    ids = sorted({c["record_id"] for cs in out.by_record.values() for c in cs})
    async with ctx.db.begin() as conn:
        out.linked = set(await q.links_by_side(conn, ctx.integration, ctx.flow.name, target,
                                               ids))
    return out


async def _lookup(ctx: StepContext, side: Side, recs: list[dict],
                  excluded: set[str] | None = None) -> dict[str, list[dict]]:
    target = other(side)
    rules = ctx.flow.rules
    out: dict[str, list[dict]] = {}
    pending = {r["record_id"]: r for r in recs}
    for i, key in enumerate(rules.match):
        if not pending:
            break
        wanted: dict[str, str] = {}
        for rid, r in pending.items():
            if side == "left" and not holds(key.when, r["data"]):
                continue
            value = key_value(key, side, r["data"])
            if value is not None:
                wanted[rid] = value
        if not wanted:
            continue
        async with ctx.db.begin() as conn:
            hits = await q.staged_by_key(conn, ctx.run_id, ctx.flow.name, target, str(i),
                                         list(wanted.values()))
        if not ctx.reading.complete[target]:
            missing = [rid for rid, v in wanted.items() if v not in hits]
            if missing:
                raw = list({pending[rid]["data"].get(find_path(key, side)) for rid in missing})
                found = await ctx.sides[target].find(rules.entity(target),
                                                     find_path(key, target), raw)
                for rec in found:
                    v = key_value(key, target, rec.fields)
                    entry = {"record_id": rec.id,
                             "data": mapped(ctx.flow.read_paths[target], rec.fields),
                             "deleted": rec.deleted or is_soft_deleted(rules, target,
                                                                       rec.fields),
                             "modified": None, "version": rec.version, "pushed": False,
                             "passes": holds(rules.filter.get(target, []), rec.fields)}
                    if v is not None and all(e["record_id"] != rec.id
                                             for e in hits.get(v, [])):
                        hits.setdefault(v, []).append(entry)
        for rid, value in wanted.items():
            cands = [c for c in hits.get(value, []) if c["passes"] and not c["deleted"]
                     and not c.get("excluded")]
            if side == "right":
                cands = [c for c in cands if holds(key.when, c["data"])]
            if excluded is not None and any(c.get("excluded") and not c["deleted"]
                                            for c in hits.get(value, [])):
                excluded.add(rid)
            if cands:
                out[rid] = cands
                pending.pop(rid)
    return out
