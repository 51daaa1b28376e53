"""Records with no link: match by natural key, link, or create (with an intent first)."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from connectors.base import Record, RecordError
from daemon.engine.flow import create_default, holds, mapped
from daemon.engine.merge import Refusal, create_fields, merge
from daemon.engine.rules import Side, other
from daemon.engine.transforms import Context, normalize
from daemon.store import queries as q
from daemon.store.db import now

if TYPE_CHECKING:
    from daemon.engine.step import FlowStep
from daemon.engine.batch import (Batch, _aborts, _base_row, _dumps, _paths, _report,
                                 _update, after_write)


# --- unlinked records ------------------------------------------------------------------------
async def unlinked_chunk(step: "FlowStep", batch: Batch, side: Side, recs: list[dict],
                         ctx: Context) -> None:
    target = other(side)
    active = []
    for r in recs:
        if r["excluded"] or r["deleted"]:
            continue
        if not r["passes"]:
            step.c["filtered"] += 1
            continue
        active.append(r)
    if not active:
        return
    async with step.db.begin() as conn:
        parked = await q.parked_hashes(conn, step.integration, step.flow.name, side,
                                       [r["record_id"] for r in active])
    mark = {r["record_id"]: f"{r['hash']}:{step.fingerprint}" for r in active}
    quiet = {r["record_id"] for r in active if not r["pushed"]
             and parked.get(r["record_id"]) == mark[r["record_id"]]}
    step.c["unchanged"] += len(quiet)
    active = [r for r in active if r["record_id"] not in quiet]
    if not active:
        return
    candidates = await _candidates(step, side, active)
    # the other way round too: a partner that itself matches several records is ambiguous
    single = {rid: cs[0] for rid, cs in candidates.items() if len(cs) == 1}
    if single:
        back = await _candidates(step, target, list({c["record_id"]: c
                                                     for c in single.values()}.values()))
        for rid, cand in single.items():
            mirror = back.get(cand["record_id"], [])
            if len(mirror) > 1:
                candidates[rid] = [cand] + [m for m in mirror if m["record_id"] != rid]
    async with step.db.begin() as conn:
        all_ids = sorted({c["record_id"] for cs in candidates.values() for c in cs})
        linked = await q.links_by_side(conn, step.integration, step.flow.name, target, all_ids)
    claimed: set[str] = set()
    pending_ids = {r["record_id"] for r in recs}
    creates: list[tuple[dict, dict]] = []
    for r in active:
        cands = candidates.get(r["record_id"], [])
        if len(cands) == 1 and cands[0]["record_id"] not in linked \
                and cands[0]["record_id"] not in claimed:
            claimed.add(cands[0]["record_id"])
            await _guard(step, batch, side, r, _link_pair(step, batch, side, r, cands[0], ctx))
        elif cands:
            step.c["review"] += 1
            reason = ("matches a record that is already linked" if len(cands) == 1
                      else f"matches {len(cands)} records"
                      if all(c["record_id"] not in pending_ids for c in cands)
                      else "its partner matches several records")
            step.log.warning("match.ambiguous", side=side, record=r["record_id"], reason=reason,
                             candidates=[c["record_id"] for c in cands][:10])
            batch.reviews.append(dict(integration=step.integration, flow=step.flow.name,
                                      side=side, record_id=r["record_id"],
                                      candidates=_dumps([c["record_id"] for c in cands][:50]),
                                      reason=reason, updated_at=now()))
            batch.parked[side].append((r["record_id"], mark[r["record_id"]]))
        elif step.hold_deletes and step.listed_empty[target]:
            # a side that suddenly lists nothing gets no copies of everything; asked again
            # next run (not parked)
            step.c["create_held"] += 1
        elif _may_create(step, side, r):
            creates.append((r, {}))
        else:
            step.c["not_created"] += 1
            batch.parked[side].append((r["record_id"], mark[r["record_id"]]))
    if creates:
        await _create_many(step, batch, side, [c[0] for c in creates], ctx)


async def _guard(step, batch, side, r, coro) -> None:
    try:
        await coro
    except RecordError as exc:
        batch.error(side, r["record_id"], exc.message)
    except Exception as exc:  # noqa: BLE001
        if _aborts(exc):
            raise
        batch.error(side, r["record_id"], f"{type(exc).__name__}: {exc}")


def _may_create(step: "FlowStep", side: Side, r: dict) -> bool:
    target = other(side)
    rules = step.rules
    if rules.direction == ("right_to_left" if side == "left" else "left_to_right"):
        return False
    if not step.sides[target].capabilities.entities[rules.entity(target)].can_create:
        return False
    rule = rules.create.toward(target)
    if rule.mode == "never":
        return False
    if rule.mode == "push":
        return bool(r["pushed"])
    if rule.mode == "filter":
        return holds(rule.when, r["data"]) or bool(r["pushed"])
    return True


async def _candidates(step: "FlowStep", side: Side, recs: list[dict]) -> dict[str, list[dict]]:
    """Partners by natural key: among the other side's staged records, then by find()."""
    target = other(side)
    rules = step.rules
    out: dict[str, list[dict]] = {}
    pending = {r["record_id"]: r for r in recs}
    for i, key in enumerate(rules.match):
        if not pending:
            break
        wanted: dict[str, str] = {}
        for rid, r in pending.items():
            if side == "left" and not holds(key.when, r["data"]):
                continue
            value = normalize(key.normalize, r["data"].get(getattr(key, side)))
            if value is not None:
                wanted[rid] = value
        if not wanted:
            continue
        async with step.db.begin() as conn:
            hits = await q.staged_by_key(conn, step.run_id, step.flow.name, target, str(i),
                                         list(wanted.values()))
        if not step.complete[target]:
            missing = [rid for rid, v in wanted.items() if v not in hits]
            if missing:
                raw = list({pending[rid]["data"].get(getattr(key, side)) for rid in missing})
                found = await step.sides[target].find(rules.entity(target), getattr(key, target),
                                                      raw)
                for rec in found:
                    v = normalize(key.normalize, rec.fields.get(getattr(key, target)))
                    entry = {"record_id": rec.id,
                             "data": mapped(step.flow.read_paths[target], rec.fields),
                             "deleted": rec.deleted, "modified": None,
                             "passes": holds(rules.filter.get(target, []), rec.fields)}
                    entry["deleted"] = entry["deleted"] or (
                        bool(rules.soft_delete.get(target)) and all(
                            rec.fields.get(k) == val
                            for k, val in rules.soft_delete[target].items()))
                    if v is not None and all(e["record_id"] != rec.id for e in hits.get(v, [])):
                        hits.setdefault(v, []).append(entry)
        for rid, value in wanted.items():
            cands = [c for c in hits.get(value, []) if c["passes"] and not c["deleted"]
                     and not c.get("excluded")]
            if side == "right":
                cands = [c for c in cands if holds(key.when, c["data"])]
            if cands:
                out[rid] = cands
                pending.pop(rid)
    return out


async def _link_pair(step: "FlowStep", batch: Batch, side: Side, r: dict, cand: dict,
                     ctx: Context) -> None:
    recs = {side: r, other(side): cand}
    left, right = recs["left"], recs["right"]
    rules = step.rules
    d = merge(step.flow.fields_of(left["data"], right["data"]), rules.conflict, None, None,
              left["data"], right["data"],
              ctx=ctx, link_key=f"{left['record_id']}|{right['record_id']}",
              initial=rules.initial or rules.owner)
    ids = {"left": left["record_id"], "right": right["record_id"]}
    _report(step, batch, d, ids)
    row: dict[str, Any] = {"integration": step.integration, "flow": step.flow.name,
                           "left_id": ids["left"], "right_id": ids["right"], "state": "ok",
                           "updated_at": now(), "left_version": None, "right_version": None}
    for target in ("left", "right"):
        stored = recs[target]["data"]
        if d.writes(target):
            rec = await _update(step, batch, target, ids[target], d.writes(target), stored,
                                d.why, source_id=ids[other(target)])
            stored = after_write(recs[target]["data"], d.writes(target), rec)
        row.update(_base_row(step, target, stored))
    batch.inserts.append(row)
    step.c["matched"] += 1
    step.log.info("link.matched", left=ids["left"], right=ids["right"])
    batch.cleared["left"].append(ids["left"])
    batch.cleared["right"].append(ids["right"])


async def _create_many(step: "FlowStep", batch: Batch, side: Side, recs: list[dict],
                       ctx: Context) -> None:
    target = other(side)
    rules = step.rules
    plans = []
    for r in recs:
        own = step.flow.fields_of(*((r["data"], None) if side == "left" else (None, r["data"])))
        fields, refused = create_fields(own, side, r["data"], ctx)
        refs = [x for x in refused if _is_ref(step, x)]
        if refs:
            batch.error(side, r["record_id"], "; ".join(x.message for x in refs))
            continue
        for x in refused:
            batch.error(side, r["record_id"], f"{x.field} not written to {target}: {x.message}",
                        retry=False)
        for k, v in rules.create_defaults.get(target, {}).items():
            if fields.get(k) in (None, ""):
                fields[k] = create_default(v, ctx.options)
        fields.update(rules.read_only_marker.get(target, {}))
        if target in rules.external_id:
            fields[rules.external_id[target]] = r["record_id"]
        plans.append((r, fields))
    if not plans:
        return
    if not step.opt.dry_run:
        intents = []
        for r, fields in plans:
            keys = {"ext": rules.external_id.get(target),
                    "match": [[getattr(k, target), k.normalize, fields.get(getattr(k, target))]
                              for k in rules.match if fields.get(getattr(k, target))],
                    "source_base": mapped(_paths(step, side), r["data"]),
                    "sent": fields}
            intents.append(dict(integration=step.integration, flow=step.flow.name,
                                target=target, source_id=r["record_id"], keys=_dumps(keys),
                                created_at=now()))
        async with step.db.begin() as conn:
            await q.drop_intents(conn, step.integration, step.flow.name, target,
                                 [i["source_id"] for i in intents])
            await q.add_intents(conn, intents)
    sem = asyncio.Semaphore(rules.concurrency)

    async def one(r, fields):
        async with sem:
            rec = await _create(step, batch, target, fields, r["record_id"], r["data"])
            if rec is None:
                return
            source_values = r["data"]
            revert = _owned_by(step, target, rec.fields, source_values, ctx)
            # the link first: whatever happens to the write-back, the new record is linked;
            # its base already says "reverted", so a failed write-back is retried next run
            row = {"integration": step.integration, "flow": step.flow.name,
                   f"{side}_id": r["record_id"], f"{target}_id": rec.id, "state": "ok",
                   "updated_at": now(), f"{target}_version": rec.version,
                   f"{side}_version": None, **_base_row(step, side, {**source_values, **revert}),
                   **_base_row(step, target, rec.fields)}
            batch.inserts.append(row)
            if revert:
                try:
                    done = await _update(step, batch, side, r["record_id"], revert,
                                         source_values, {(side, k): f"revert: owned by {target}"
                                                         for k in revert})
                    row.update(_base_row(step, side, after_write(source_values, revert, done)))
                except RecordError as exc:
                    batch.error(side, r["record_id"], exc.message, retry=False)
            batch.cleared[side].append(r["record_id"])
            if r["pushed"]:
                batch.done_pushes[side].append(r["record_id"])
    results = await asyncio.gather(*(one(r, f) for r, f in plans), return_exceptions=True)
    for res in results:
        if isinstance(res, BaseException) and not isinstance(res, Exception):
            raise res
    for res in results:
        if isinstance(res, Exception):
            raise res


def _owned_by(step: "FlowStep", owner: Side, owner_values: dict, source_values: dict,
              ctx: Context) -> dict[str, Any]:
    """After a create in ``owner``: one-way fields it owns whose value the source contradicts,
    with ``revert`` ownership, are written back to the source (the owner's value wins)."""
    from daemon.engine.merge import carry, same
    from daemon.engine.transforms import FieldRefused
    source = other(owner)
    out: dict[str, Any] = {}
    sides = {owner: owner_values, source: source_values}
    ctx.records = dict(sides)
    for fld in step.flow.fields_of(sides["left"], sides["right"]):
        if fld.flows_from(source) or not fld.flows_from(owner) or fld.ownership != "revert":
            continue
        try:
            want = carry(fld, owner, owner_values.get(fld.path(owner)), ctx)
        except FieldRefused:
            continue
        if not same(want, source_values.get(fld.path(source))):
            out[fld.path(source)] = want
    return out


def _is_ref(step: "FlowStep", refusal: Refusal) -> bool:
    return any(f.name == refusal.field and f.ref for f in step.flow.fields)


async def _create(step: "FlowStep", batch: Batch, target: Side, fields: dict, source_id: str,
                  source_values: dict) -> Record | None:
    """Create one record; the intent was committed before this call."""
    source = other(target)
    conn = step.sides[target]
    entity = step.rules.entity(target)
    if step.opt.dry_run:
        step.result.planned.append({"action": "create", "side": target, "from": source_id,
                                    "fields": fields})
        step.c[f"created_{target}"] += 1
        return None
    try:
        try:
            rec = await conn.create(entity, fields)
        except RecordError as exc:
            bad = [k for k in exc.fields if k in fields]
            if not bad or len(bad) == len(fields):
                raise
            rec = await conn.create(entity, {k: v for k, v in fields.items() if k not in bad})
            batch.error(source, source_id, f"not written: {', '.join(bad)}: {exc.message}",
                        retry=False)
    except RecordError as exc:
        # the system refused it: nothing was created, the intent goes
        batch.done_intents[target].append(source_id)
        batch.error(source, source_id, exc.message)
        return None
    except Exception as exc:  # noqa: BLE001 - the intent stays and is resolved next run
        if _aborts(exc):
            raise
        batch.error(source, source_id, f"create interrupted: {type(exc).__name__}: {exc}")
        return None
    batch.done_intents[target].append(source_id)
    step.c[f"created_{target}"] += 1
    step.log.info("record.created", side=target, record=rec.id, source=source_id)
    for path, value in fields.items():
        batch.audit.append(dict(run_id=step.run_id, integration=step.integration,
                                flow=step.flow.name, side=target, record_id=rec.id, field=path,
                                old=None, new=rec.fields.get(path, value),
                                rule=f"create from {source} {source_id}", at=now()))
    return rec


async def resolve_intent(step: "FlowStep", batch: Batch, intent: dict) -> None:
    """A create whose outcome is unknown (crash, timeout): find it before creating again."""
    target = intent["target"]
    source = other(target)
    conn = step.sides[target]
    entity = step.rules.entity(target)
    keys = intent["keys"]
    found: list[Record] = []
    if keys.get("ext"):
        found = [r for r in await conn.find(entity, keys["ext"], [intent["source_id"]])
                 if r.fields.get(keys["ext"]) == intent["source_id"]]
    for path, norm, value in ([] if found else keys.get("match", [])):
        want = normalize(norm, value)
        found = [r for r in await conn.find(entity, path, [value])
                 if normalize(norm, r.fields.get(path)) == want and not r.deleted]
        if found:
            break
    async with step.db.begin() as c:
        linked = await q.links_by_side(c, step.integration, step.flow.name, target,
                                       [r.id for r in found])
    found = [r for r in found if r.id not in linked]
    batch.done_intents[target].append(intent["source_id"])
    if len(found) == 1:
        rec = found[0]
        source_values = keys.get("source_base", {})
        revert = _owned_by(step, target, rec.fields, source_values, Context())
        if revert:           # what the create would have done next, had it not been cut off
            try:
                done = await _update(step, batch, source, intent["source_id"], revert,
                                     source_values, {(source, k): f"revert: owned by {target}"
                                                     for k in revert})
                source_values = after_write(source_values, revert, done)
            except RecordError as exc:
                batch.error(source, intent["source_id"], exc.message, retry=False)
        # the target's base is what the create sent, where the record no longer shows it:
        # an edit made there since the interrupted create is a change, not the base
        from daemon.engine.merge import same
        sent = keys.get("sent", {})
        target_base = {p: (rec.fields.get(p) if same(rec.fields.get(p), sent.get(p))
                           else sent.get(p)) for p in _paths(step, target)}
        batch.inserts.append({"integration": step.integration, "flow": step.flow.name,
                              f"{source}_id": intent["source_id"], f"{target}_id": rec.id,
                              "state": "ok", "updated_at": now(), "left_version": None,
                              "right_version": None,
                              **_base_row(step, source, source_values),
                              **_base_row(step, target, target_base)})
        step.c["recovered"] += 1
        step.log.info("intent.resolved", side=target, record=rec.id, source=intent["source_id"])
    elif len(found) > 1:
        batch.reviews.append(dict(integration=step.integration, flow=step.flow.name,
                                  side=source, record_id=intent["source_id"],
                                  candidates=_dumps([r.id for r in found][:50]),
                                  reason="an interrupted create matches several records",
                                  updated_at=now()))
    else:
        step.log.info("intent.dropped", side=target, source=intent["source_id"])
