"""The record-level planner: pure functions from what was read to actions. No I/O.

``plan_pair``: a linked pair with at least one side read again (CHANGE-MATRIX.md, record level
and field level through ``merge``). ``plan_unlinked``: a record with no link and its match
candidates (CHANGE-MATRIX.md, records with no link). ``plan_create``: the record a create would
make. Staged records are dicts as ``daemon.store`` returns them: ``record_id``, ``data`` (the
mapped fields the vendor sent; a field it did not send is absent, and absent is unknown, never
empty), ``deleted``, ``passes``, ``hash``, ``version``, ``pushed``, ``modified``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

import orjson
from daemon.engine.actions import (Action, Create, Delete, DropHold, Fail, Hold, Link, Mark,
                                   Park, Recreate, Review, Skip, Tombstone, Unchanged, Unlink,
                                   Update, Write)
from daemon.engine.flow import Flow, create_default, holds, mapped
from daemon.engine.merge import Decision, carry, create_fields, merge, same
from daemon.engine.rules import Side, other
from daemon.engine.transforms import Context, FieldRefused, key_value


@dataclass(frozen=True)
class Situation:
    """What the step knows that the planner needs, besides the records."""
    enforce: Mapping[str, Side] = field(default_factory=dict)
    hold_deletes: bool = False                   # the circuit-breaker tripped this step
    held: Mapping[int, dict] = field(default_factory=dict)   # link id -> standing hold
    can_create: Mapping[Side, bool] = field(default_factory=lambda: {"left": True,
                                                                     "right": True})
    listed_empty: Mapping[Side, bool] = field(default_factory=lambda: {"left": False,
                                                                       "right": False})


def base_of(link: Mapping[str, Any], side: Side) -> dict[str, Any]:
    raw = link[f"{side}_base"]
    return (orjson.loads(raw) if isinstance(raw, (str, bytes)) else raw) or {}


# --- linked pairs -----------------------------------------------------------------------------
def plan_pair(flow: Flow, link: Mapping[str, Any], recs: Mapping[Side, dict | None],
              ctx: Context, sit: Situation) -> list[Action]:
    """``recs``: the staged record of each side, None where that side was not read again (or
    is excluded)."""
    if recs["left"] is None and recs["right"] is None:
        return []
    out: list[Action] = []
    hold = sit.held.get(link["id"])
    if hold is not None:
        target = recs[hold["target"]]
        seen = recs[other(hold["target"])]
        if target is not None and target["deleted"]:
            # the record the hold would delete was deleted there meanwhile: nothing is left
            # to hold, and its own deletion is planned below like any other (kept holding,
            # it went by unnoticed, and an approval would leave its partner behind)
            out.append(DropHold(hold["id"], target["record_id"], "deleted meanwhile"))
        elif seen is None or seen["deleted"]:
            return [Hold(link["id"], hold["target"], hold["record_id"], hold["action"],
                         new=False)]
        else:
            # the record the hold was about is there after all (a side that looked empty)
            out.append(DropHold(hold["id"], seen["record_id"]))
    seen_ids = tuple((s, r["record_id"]) for s, r in recs.items() if r is not None)
    if (not sit.enforce and link["state"] == "ok" and all(
            r is None or (not r["deleted"] and r["passes"] and r["hash"] == link[f"{s}_hash"])
            for s, r in recs.items())):
        return out + [Unchanged(seen_ids)]
    for s, r in recs.items():
        if r is not None and not r["deleted"] and not r["passes"]:
            if flow.rules.on_filter_exit == "unlink":
                out.append(Unlink(link["id"], _ids(link), "filtered"))
            return out
    ldel = recs["left"] is not None and recs["left"]["deleted"]
    rdel = recs["right"] is not None and recs["right"]["deleted"]
    if ldel and rdel:
        return out + [Unlink(link["id"], _ids(link), "both deleted")]
    if ldel or rdel:
        return out + plan_delete(flow, link, "left" if ldel else "right", recs, ctx, sit)
    return out + [plan_merge(flow, link, recs, ctx, sit)]


def _ids(link: Mapping[str, Any]) -> dict[Side, str]:
    return {"left": link["left_id"], "right": link["right_id"]}


def plan_merge(flow: Flow, link: Mapping[str, Any], recs: Mapping[Side, dict | None],
               ctx: Context, sit: Situation) -> Update:
    base = {s: base_of(link, s) for s in ("left", "right")}
    # a side not read again is as its base; a field a side did not send is as its base
    # (unknown: it neither flows nor moves the base)
    cur = {s: ({**base[s], **recs[s]["data"]} if recs[s] is not None else base[s])
           for s in ("left", "right")}
    state = link["state"]
    for s in ("left", "right"):
        if state == f"gone_{s}" and recs[s] is not None:
            state = "ok"          # an undelete (the soft-delete flag was cleared)
    mods = {s: _when(recs[s]["modified"]) if recs[s] is not None else None
            for s in ("left", "right")}
    d = merge(flow.fields_of(cur["left"], cur["right"]), flow.rules.conflict,
              base["left"], base["right"], cur["left"], cur["right"], ctx=ctx,
              link_key=str(link["id"]), lmod=mods["left"], rmod=mods["right"],
              enforce=sit.enforce,
              unread=frozenset(s for s in ("left", "right") if recs[s] is None))
    for s in ("left", "right"):
        if state == f"gone_{s}":
            d.writes(s).clear()
    ids = _ids(link)
    versions = {s: (recs[s].get("version") if recs[s] is not None else None)
                or link.get(f"{s}_version") for s in ("left", "right")}
    return Update(link["id"], ids, _writes(d, ids, cur, versions), cur, state,
                  tuple((s, r["record_id"]) for s, r in recs.items() if r is not None),
                  versions, tuple(d.conflicts), tuple(d.violations), tuple(d.refusals))


def _writes(d: Decision, ids: Mapping[Side, str], cur: Mapping[Side, dict],
            versions: Mapping[Side, str | None]) -> tuple[Write, ...]:
    out = []
    for target in ("left", "right"):
        values = d.writes(target)
        if values:
            out.append(Write(target, ids[target], dict(values), cur[target],
                             {p: d.why.get((target, p), "update") for p in values},
                             versions[target], (other(target), ids[other(target)])))
    return tuple(out)


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def plan_delete(flow: Flow, link: Mapping[str, Any], deleted: Side,
                recs: Mapping[Side, dict | None], ctx: Context, sit: Situation) -> list[Action]:
    target = other(deleted)
    rules = flow.rules
    if link["state"] == f"gone_{deleted}":
        return []
    survivor = recs[target]
    owner_values = survivor["data"] if survivor is not None else base_of(link, target)
    if flow.owns(target, owner_values):
        if rules.ownership == "revert":
            values = {**base_of(link, target), **owner_values}
            fields, _ = create_fields(flow.fields_for(values), target, values, ctx)
            return [Recreate(link["id"], deleted, link[f"{target}_id"], fields, values)]
        return [Tombstone(link["id"], deleted, link[f"{deleted}_id"], "ownership")]
    rule = rules.delete.toward(target)
    tid = link[f"{target}_id"]
    if rule.action in ("delete", "mark") and sit.hold_deletes:
        return [Hold(link["id"], target, tid, rule.action)]
    edited = survivor is not None and survivor["hash"] != link[f"{target}_hash"]
    gone = link[f"{deleted}_id"]
    if rule.action == "delete":
        return [Delete(link["id"], target, tid, gone, edited)]
    if rule.action == "mark":
        return [Mark(link["id"], target, tid, gone, dict(rule.mark), base_of(link, target))]
    if rule.action == "unlink":
        return [Unlink(link["id"], _ids(link), "deleted")]
    return [Tombstone(link["id"], deleted, link[f"{deleted}_id"], "ignore")]


def plan_approved(link: Mapping[str, Any], hold: Mapping[str, Any], mark: Mapping[str, Any]
                  ) -> Action:
    """A held delete someone approved: carried out as it was held."""
    target = hold["target"]
    gone = link[f"{other(target)}_id"]
    if hold["action"] == "mark":
        return Mark(link["id"], target, hold["record_id"], gone, dict(mark),
                    base_of(link, target))
    return Delete(link["id"], target, hold["record_id"], gone)


# --- records with no link ---------------------------------------------------------------------
def may_create(flow: Flow, side: Side, rec: Mapping[str, Any], sit: Situation) -> bool:
    target = other(side)
    rules = flow.rules
    if rules.direction not in ("both", "left_to_right" if side == "left" else "right_to_left"):
        return False
    if not sit.can_create.get(target, True):
        return False
    rule = rules.create.toward(target)
    if rule.mode == "never" or not flow.flows_from(side, rec["data"]):
        return False
    if rule.mode == "push":
        return bool(rec["pushed"])
    if rule.mode == "filter":
        return holds(rule.when, rec["data"]) or bool(rec["pushed"])
    return True


def plan_unlinked(flow: Flow, side: Side, rec: Mapping[str, Any], candidates: list[dict],
                  taken: set[str], mark: str, ctx: Context, sit: Situation,
                  partner_ambiguous: bool = False, partner_excluded: bool = False) -> Action:
    """``candidates``: the other side's records with the same natural key (already filtered
    for passing, not deleted, not excluded); ``taken``: those of them already linked or
    claimed by an earlier record of this step; ``partner_ambiguous``: the candidate itself
    matches several records of this side (they were added to ``candidates``);
    ``partner_excluded``: the only records with its key are excluded (no create, no link)."""
    target = other(side)
    rid = rec["record_id"]
    missing = unmet(flow, side, rec["data"])
    if missing is not None:
        return Review(side, rid, (), missing, mark)
    if partner_excluded and not candidates:
        return Skip(side, rid, "partner_excluded")
    if len(candidates) == 1 and candidates[0]["record_id"] not in taken:
        return plan_link(flow, side, rec, candidates[0], ctx)
    if candidates:
        reason = ("its partner matches several records" if partner_ambiguous
                  else "matches a record that is already linked" if len(candidates) == 1
                  else f"matches {len(candidates)} records")
        return Review(side, rid, tuple(c["record_id"] for c in candidates)[:50], reason, mark)
    if sit.hold_deletes and sit.listed_empty[target]:
        # a side that suddenly lists nothing gets no copies of everything; asked again next
        # run (not parked)
        return Skip(side, rid, "create_held")
    if may_create(flow, side, rec, sit):
        return plan_create(flow, side, rec, ctx)
    return Park(side, rid, mark, "not_created")


def unmet(flow: Flow, side: Side, values: Mapping[str, Any]) -> str | None:
    """The message of the first requirement of ``side`` a record does not meet, or None."""
    for req in flow.rules.require:
        if req.side == side and not holds(req.when, values):
            return req.message
    return None


def plan_link(flow: Flow, side: Side, rec: Mapping[str, Any], cand: Mapping[str, Any],
              ctx: Context) -> Link:
    recs = {side: rec, other(side): cand}
    left, right = recs["left"], recs["right"]
    rules = flow.rules
    d = merge(flow.fields_of(left["data"], right["data"]), rules.conflict, None, None,
              left["data"], right["data"], ctx=ctx,
              link_key=f"{left['record_id']}|{right['record_id']}",
              initial=rules.initial or rules.owner)
    ids = {"left": left["record_id"], "right": right["record_id"]}
    cur = {"left": left["data"], "right": right["data"]}
    versions = {s: recs[s].get("version") for s in ("left", "right")}
    pushed = tuple((s, recs[s]["record_id"]) for s in ("left", "right") if recs[s].get("pushed"))
    writes = with_marks(_writes(d, ids, cur, versions), rules.link_marks, ids, cur, versions)
    return Link(ids, writes, cur, versions, tuple(d.conflicts),
                tuple(d.violations), tuple(d.refusals), pushed)


def with_marks(writes: tuple[Write, ...], marks: Mapping[Side, Mapping[str, Any]],
               ids: Mapping[Side, str], cur: Mapping[Side, dict],
               versions: Mapping[Side, str | None]) -> tuple[Write, ...]:
    """A link's writes plus the flow's ``link_marks`` (AJ-2: a match turns sync on for the
    record), each only where the record does not carry it already, in the same write."""
    out = {w.side: w for w in writes}
    for side in ("left", "right"):
        wanted = {k: v for k, v in (marks.get(side) or {}).items() if cur[side].get(k) != v}
        if not wanted:
            continue
        w = out.get(side)
        if w is None:
            out[side] = Write(side, ids[side], dict(wanted), cur[side],
                              dict.fromkeys(wanted, "link_mark"), versions[side],
                              (other(side), ids[other(side)]))
        else:
            out[side] = Write(side, w.id, {**w.values, **wanted}, w.current,
                              {**w.why, **dict.fromkeys(wanted, "link_mark")}, w.version,
                              w.report_on)
    return tuple(out[s] for s in ("left", "right") if s in out)


def plan_create(flow: Flow, side: Side, rec: Mapping[str, Any], ctx: Context) -> Action:
    target = other(side)
    rules = flow.rules
    data = rec["data"]
    own = flow.fields_of(*((data, None) if side == "left" else (None, data)))
    ctx.pending = set()
    fields, refused = create_fields(own, side, data, ctx)
    refs = [x for x in refused if any(f.name == x.field and f.ref for f in flow.fields)]
    if refs:
        return Fail(side, rec["record_id"], "; ".join(x.message for x in refs))
    for k, v in rules.create_defaults.get(target, {}).items():
        if fields.get(k) in (None, ""):
            fields[k] = create_default(v, ctx.options)
    fields.update(rules.read_only_marker.get(target, {}))
    if target in rules.external_id:
        fields[rules.external_id[target]] = rec["record_id"]
    intent = {"ext": rules.external_id.get(target),
              "match": [[getattr(k, target), k.normalize, _sent(k, target, fields)]
                        for k in rules.match if key_value(k, target, fields)],
              "source_base": mapped(flow.base_paths[side], data),
              "sent": fields}
    # what a create usually stores is what it sent: the write-back it would then need
    revert = owned_by(flow, target, fields, data, ctx)
    return Create(side, rec["record_id"], target, fields, dict(data), intent,
                  bool(rec.get("pushed")), tuple(sorted(ctx.pending)),
                  tuple(x for x in refused if x not in refs), revert, rec.get("version"))


def _sent(key: Any, target: Side, fields: Mapping[str, Any]) -> Any:
    """The value a create sent for a match key: one value, or a list for a composite key."""
    paths = key.paths(target)
    return fields.get(paths[0]) if len(paths) == 1 else [fields.get(p) for p in paths]


def owned_by(flow: Flow, owner: Side, owner_values: Mapping[str, Any],
             source_values: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """After a create in ``owner``: one-way fields it owns whose value the source
    contradicts, with ``revert`` ownership, are written back to the source (the owner's value
    wins)."""
    source = other(owner)
    out: dict[str, Any] = {}
    sides = {owner: owner_values, source: source_values}
    ctx.records = dict(sides)
    for fld in flow.fields_of(sides["left"], sides["right"]):
        if fld.flows_from(source) or not fld.flows_from(owner) or fld.ownership != "revert":
            continue
        try:
            want = carry(fld, owner, owner_values.get(fld.path(owner)), ctx)
        except FieldRefused:
            continue
        if not same(want, source_values.get(fld.path(source))):
            out[fld.path(source)] = want
    return out
