"""Deciding and applying one chunk of a step, and committing it as one transaction."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connectors.base import NotFoundError, Record, RecordError
from daemon.engine.flow import holds, mapped, value_hash
from daemon.engine.merge import Decision, Refusal, create_fields, merge
from daemon.engine.rules import Side, other
from daemon.engine.transforms import Context, normalize
from daemon.store import queries as q
from daemon.store.db import now

if TYPE_CHECKING:
    from daemon.engine.step import FlowStep


@dataclass
class Batch:
    """What one chunk changes in the store; ``commit()`` writes it in one transaction."""
    step: "FlowStep"
    inserts: list[dict] = field(default_factory=list)
    updates: list[dict] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)
    audit: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    cleared: dict[Side, list[str]] = field(default_factory=lambda: {"left": [], "right": []})
    settled: dict[Side, list[str]] = field(default_factory=lambda: {"left": [], "right": []})
    reviews: list[dict] = field(default_factory=list)
    holds: list[dict] = field(default_factory=list)
    done_intents: dict[Side, list[str]] = field(default_factory=lambda: {"left": [], "right": []})
    done_pushes: dict[Side, list[str]] = field(default_factory=lambda: {"left": [], "right": []})
    dropped_holds: list[int] = field(default_factory=list)
    handled: dict[Side, list[str]] = field(default_factory=lambda: {"left": [], "right": []})
    parked: dict[Side, list[tuple[str, str]]] = field(
        default_factory=lambda: {"left": [], "right": []})

    async def commit(self) -> None:
        s = self.step
        i, f = s.integration, s.flow.name
        if s.opt.dry_run:
            async with s.db.begin() as conn:
                for side in ("left", "right"):
                    await q.unstage(conn, s.run_id, f, side, self.handled[side])
            return
        async with s.db.begin() as conn:
            for side in ("left", "right"):
                # decided as part of a pair: not to be taken for a new record afterwards
                await q.unstage(conn, s.run_id, f, side, self.handled[side])
            await q.delete_links(conn, self.deletes)
            await q.update_links(conn, self.updates)
            await q.insert_links(conn, self.inserts)
            await q.add_audit(conn, self.audit)
            for side in ("left", "right"):
                await q.clear_errors(conn, i, f, side, self.cleared[side])
                await q.clear_errors(conn, i, f, side, self.settled[side], only_retry=True)
                await q.clear_reviews(conn, i, f, side, self.cleared[side])
                await q.unpark(conn, i, f, side, self.cleared[side])
                await q.park(conn, i, f, side, self.parked[side])
                await q.drop_intents(conn, i, f, side, self.done_intents[side])
                await q.drop_pushes(conn, i, f, side, self.done_pushes[side])
            await q.record_errors(conn, self.errors)
            await q.set_reviews(conn, self.reviews)
            if self.holds:
                s.c["held"] += await q.hold(conn, self.holds)
            await q.drop_holds(conn, self.dropped_holds)

    def error(self, side: Side, record_id: str, message: str, retry: bool = True) -> None:
        s = self.step
        s.c["errors"] += 1
        s.log.error("record.error", side=side, record=record_id, error=message)
        self.errors.append(dict(integration=s.integration, flow=s.flow.name, side=side,
                                record_id=record_id, message=message[:2000], retry=retry,
                                run_id=s.run_id, updated_at=now()))


def _paths(step: "FlowStep", side: Side) -> list[str]:
    return [f.path(side) for f in step.flow.fields]


def _base_row(step: "FlowStep", side: Side, values: dict) -> dict:
    paths = _paths(step, side)
    base = mapped(paths, values)
    from daemon.store.db import dumps
    return {f"{side}_base": dumps(base), f"{side}_hash": value_hash(paths, base)}


async def _update(step: "FlowStep", batch: Batch, target: Side, record_id: str,
                  values: dict[str, Any], current: dict[str, Any], why: dict,
                  source_id: str | None = None) -> Record:
    """Write a partial update; a refusal naming some fields sends the rest without them."""
    conn = step.sides[target]
    entity = step.rules.entity(target)
    if step.opt.dry_run:
        step.result.planned.append({"action": "update", "side": target, "id": record_id,
                                    "fields": values})
        return Record(record_id, {**current, **values})
    try:
        stored = await conn.update(entity, record_id, values)
    except NotFoundError:
        raise
    except RecordError as exc:
        bad = [k for k in exc.fields if k in values]
        if not bad or len(bad) == len(values):
            raise
        rest = {k: v for k, v in values.items() if k not in bad}
        stored = await conn.update(entity, record_id, rest)
        # reported on the record whose value was refused, so it clears when that one is fixed
        where = (other(target), source_id) if source_id else (target, record_id)
        batch.error(*where, f"{', '.join(bad)} not written to {target}: {exc.message}",
                    retry=False)
        values = rest
    for path, new in values.items():
        batch.audit.append(dict(run_id=step.run_id, integration=step.integration,
                                flow=step.flow.name, side=target, record_id=record_id,
                                field=path, old=current.get(path),
                                new=stored.fields.get(path, new),
                                rule=why.get((target, path), "update"), at=now()))
    step.c[f"updated_{target}"] += 1
    return stored


def _report(step: "FlowStep", batch: Batch, d: Decision, ids: dict[Side, str]) -> bool:
    for c in d.conflicts:
        step.c["conflicts"] += 1
        step.log.warning("conflict", field=c.field, left=c.left, right=c.right,
                         winner=c.winner, policy=c.policy, left_id=ids["left"],
                         right_id=ids["right"])
    for v in d.violations:
        step.c["ownership"] += 1
        step.log.info("ownership.violation", field=v.field, side=v.side, value=v.value,
                      action=v.action, record=ids[v.side])
    for r in d.refusals:
        source = other(r.target)
        batch.error(source, ids[source], f"{r.field} not written to {r.target}: {r.message}",
                    retry=False)
    return not d.refusals


# --- linked pairs ----------------------------------------------------------------------------
async def linked_unit(step: "FlowStep", batch: Batch, unit: dict, ctx: Context) -> None:
    link = unit["link"]
    recs: dict[Side, dict | None] = {
        s: (unit[s] if unit[s] is not None and not unit[s]["excluded"] else None)
        for s in ("left", "right")}
    if recs["left"] is None and recs["right"] is None:
        return
    hold = step.held.get(link["id"])
    if hold is not None:
        seen = recs[other(hold["target"])]
        if seen is None or seen["deleted"]:
            step.c["held"] += 1
            return
        # the record the hold was about is there after all (a side that looked empty)
        batch.dropped_holds.append(hold["id"])
        step.log.info("delete.hold_dropped", record=seen["record_id"], reason="seen again")
    for s, r in recs.items():
        if r is not None:
            batch.handled[s].append(r["record_id"])
    if (not step.opt.enforce and link["state"] == "ok" and all(
            r is None or (not r["deleted"] and r["passes"] and r["hash"] == link[f"{s}_hash"])
            for s, r in recs.items())):
        step.c["unchanged"] += 1
        for s, r in recs.items():
            if r is not None:      # a refusal still stands while the values stand
                batch.settled[s].append(r["record_id"])
        return
    for s, r in recs.items():
        if r is not None and not r["deleted"] and not r["passes"]:
            if step.rules.on_filter_exit == "unlink":
                batch.deletes.append(link["id"])
                step.c["unlinked"] += 1
                step.log.info("link.filtered_out", side=s, record=r["record_id"])
            return
    ldel = recs["left"] is not None and recs["left"]["deleted"]
    rdel = recs["right"] is not None and recs["right"]["deleted"]
    try:
        if ldel and rdel:
            batch.deletes.append(link["id"])
            step.c["dropped"] += 1
        elif ldel or rdel:
            await on_delete(step, batch, link, "left" if ldel else "right", recs, ctx)
        else:
            await merge_pair(step, batch, link, recs, ctx)
    except NotFoundError as exc:
        gone = exc.args[1] if len(exc.args) > 1 else None
        _pair_error(batch, recs, link, f"record gone during the write: {exc.message}")
        del gone
    except RecordError as exc:
        _pair_error(batch, recs, link, exc.message)
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - one record must never stop the others
        if _aborts(exc):
            raise
        _pair_error(batch, recs, link, f"{type(exc).__name__}: {exc}")


def _aborts(exc: BaseException) -> bool:
    from connectors.base import AuthError, UnavailableError
    return isinstance(exc, (AuthError, UnavailableError))


def _pair_error(batch: Batch, recs: dict, link: dict, message: str) -> None:
    staged = [(s, r["record_id"]) for s, r in recs.items() if r is not None]
    for side, rid in staged or [("left", link["left_id"])]:
        batch.error(side, rid, message)


async def merge_pair(step: "FlowStep", batch: Batch, link: dict, recs: dict, ctx: Context) -> None:
    base = {s: q.decode_base(link, s) for s in ("left", "right")}
    cur = {s: (recs[s]["data"] if recs[s] is not None else base[s]) for s in ("left", "right")}
    state = link["state"]
    for s in ("left", "right"):
        if state == f"gone_{s}" and recs[s] is not None:
            state = "ok"          # an undelete (the soft-delete flag was cleared)
    mods = {s: (recs[s]["modified"] if recs[s] is not None else None) for s in recs}
    from datetime import datetime
    d = merge(step.flow.fields, step.rules.conflict, base["left"], base["right"],
              cur["left"], cur["right"], ctx=ctx, link_key=str(link["id"]),
              lmod=datetime.fromisoformat(mods["left"]) if mods["left"] else None,
              rmod=datetime.fromisoformat(mods["right"]) if mods["right"] else None,
              enforce=step.opt.enforce)
    for s in ("left", "right"):
        if state == f"gone_{s}":
            d.writes(s).clear()
    ids = {"left": link["left_id"], "right": link["right_id"]}
    clean = _report(step, batch, d, ids)
    row: dict[str, Any] = {"id": link["id"], "state": state, "updated_at": now()}
    for target in ("left", "right"):
        values = d.writes(target)
        stored = cur[target]
        if values:
            rec = await _update(step, batch, target, ids[target], values, cur[target], d.why,
                                source_id=ids[other(target)])
            stored = rec.fields
            row[f"{target}_version"] = rec.version
        row.update(_base_row(step, target, stored))
    batch.updates.append(row)
    if clean:
        for s, r in recs.items():
            if r is not None:
                batch.cleared[s].append(r["record_id"])


async def on_delete(step: "FlowStep", batch: Batch, link: dict, deleted: Side,
                    recs: dict, ctx: Context) -> None:
    target = other(deleted)
    rules = step.rules
    if link["state"] == f"gone_{deleted}":
        return
    if rules.owner == target:
        step.c["ownership"] += 1
        step.log.info("ownership.violation", field="*", side=deleted, action=rules.ownership,
                      record=link[f"{deleted}_id"], what="delete of a record it does not own")
        if rules.ownership == "revert":
            await _recreate(step, batch, link, deleted, recs, ctx)
        else:
            batch.updates.append({"id": link["id"], "state": f"gone_{deleted}",
                                  "updated_at": now()})
        return
    rule = rules.delete.toward(target)
    if rule.action in ("delete", "mark") and step.hold_deletes:
        batch.holds.append(dict(integration=step.integration, flow=step.flow.name,
                                link_id=link["id"], target=target,
                                record_id=link[f"{target}_id"], action=rule.action,
                                run_id=step.run_id, approved=False, created_at=now()))
        return
    survivor = recs[target]
    if survivor is not None and survivor["hash"] != link[f"{target}_hash"] and \
            rule.action in ("delete", "mark"):
        step.log.info("delete.wins_over_edit", side=target, record=link[f"{target}_id"])
    await apply_delete(step, batch, link, target, rule.action, rule.mark)
    batch.cleared[deleted].append(link[f"{deleted}_id"])


async def apply_delete(step: "FlowStep", batch: Batch, link: dict, target: Side, action: str,
                       mark: dict) -> None:
    conn = step.sides[target]
    entity = step.rules.entity(target)
    tid = link[f"{target}_id"]
    deleted = other(target)
    if step.opt.dry_run:
        step.result.planned.append({"action": action, "side": target, "id": tid})
        return
    if action == "delete":
        try:
            await conn.delete(entity, tid)
        except NotFoundError:
            pass
        batch.deletes.append(link["id"])
        batch.audit.append(dict(run_id=step.run_id, integration=step.integration,
                                flow=step.flow.name, side=target, record_id=tid, field="*",
                                old=None, new=None, rule=f"{deleted} deleted: delete",
                                at=now()))
        step.c["deleted"] += 1
    elif action == "mark":
        current = q.decode_base(link, target)
        rec = await _update(step, batch, target, tid, dict(mark), current,
                            {(target, k): f"{deleted} deleted: mark" for k in mark})
        batch.updates.append({"id": link["id"], "state": f"gone_{deleted}",
                              "updated_at": now(), **_base_row(step, target, rec.fields)})
        step.c[f"updated_{target}"] -= 1
        step.c["marked"] += 1
    elif action == "unlink":
        batch.deletes.append(link["id"])
        step.c["unlinked"] += 1
    else:
        batch.updates.append({"id": link["id"], "state": f"gone_{deleted}", "updated_at": now()})
        step.c["delete_ignored"] += 1


async def _recreate(step: "FlowStep", batch: Batch, link: dict, deleted: Side, recs: dict,
                    ctx: Context) -> None:
    owner = other(deleted)
    values = recs[owner]["data"] if recs[owner] is not None else q.decode_base(link, owner)
    fields, refused = create_fields(step.flow.fields, owner, values, ctx)
    rec = await _create(step, batch, deleted, fields, link[f"{owner}_id"], values)
    if rec is None:
        return
    batch.updates.append({"id": link["id"], f"{deleted}_id": rec.id, "state": "ok",
                          "updated_at": now(), **_base_row(step, deleted, rec.fields),
                          **_base_row(step, owner, values)})
    step.c["recreated"] += 1


async def approved_delete(step: "FlowStep", batch: Batch, held: dict) -> None:
    from sqlalchemy import select
    async with step.db.begin() as conn:
        row = (await conn.execute(select(q.links).where(q.links.c.id == held["link_id"])
                                  )).mappings().first()
    batch.dropped_holds.append(held["id"])
    if row is None:
        return
    rule = step.rules.delete.toward(held["target"])
    await apply_delete(step, batch, dict(row), held["target"], held["action"], rule.mark)


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
        elif _may_create(step, side, r):
            creates.append((r, {}))
        else:
            step.c["not_created"] += 1
            batch.parked[side].append((r["record_id"], mark[r["record_id"]]))
    if creates:
        await _create_many(step, batch, side, [c[0] for c in creates], ctx)


def _dumps(v) -> str:
    from daemon.store.db import dumps
    return dumps(v)


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
    d = merge(step.flow.fields, rules.conflict, None, None, left["data"], right["data"],
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
            stored = rec.fields
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
        fields, refused = create_fields(step.flow.fields, side, r["data"], ctx)
        refs = [x for x in refused if _is_ref(step, x)]
        if refs:
            batch.error(side, r["record_id"], "; ".join(x.message for x in refs))
            continue
        for x in refused:
            batch.error(side, r["record_id"], f"{x.field} not written to {target}: {x.message}",
                        retry=False)
        for k, v in rules.create_defaults.get(target, {}).items():
            if fields.get(k) in (None, ""):
                fields[k] = v
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
            if revert:
                try:
                    done = await _update(step, batch, side, r["record_id"], revert,
                                         source_values, {(side, k): f"revert: owned by {target}"
                                                         for k in revert})
                    source_values = done.fields
                except RecordError as exc:
                    batch.error(side, r["record_id"], exc.message, retry=False)
            row = {"integration": step.integration, "flow": step.flow.name,
                   f"{side}_id": r["record_id"], f"{target}_id": rec.id, "state": "ok",
                   "updated_at": now(), f"{target}_version": rec.version,
                   f"{side}_version": None,
                   **_base_row(step, side, source_values), **_base_row(step, target, rec.fields)}
            batch.inserts.append(row)
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
    for fld in step.flow.fields:
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
                source_values = done.fields
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
