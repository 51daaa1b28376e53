"""Linked pairs: merge, deletes, the circuit-breaker's holds."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from connectors.base import NotFoundError, RecordError
from daemon.engine.merge import create_fields, merge
from daemon.engine.rules import Side, other
from daemon.engine.transforms import Context
from daemon.store import queries as q
from daemon.store.db import now

if TYPE_CHECKING:
    from daemon.engine.step import FlowStep
from daemon.engine.batch import Batch, _aborts, _base_row, _report, _update, after_write
from daemon.engine.create import _create


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
    d = merge(step.flow.fields_of(cur["left"], cur["right"]), step.rules.conflict,
              base["left"], base["right"],
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
            stored = after_write(cur[target], values, rec)
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
    owner_values = recs[target]["data"] if recs[target] is not None \
        else q.decode_base(link, target)
    if step.flow.owns(target, owner_values):
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
                              "updated_at": now(),
                              **_base_row(step, target, after_write(current, mark, rec))})
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
    fields, refused = create_fields(step.flow.fields_for(values), owner, values, ctx)
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
