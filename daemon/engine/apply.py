"""Carrying out actions: the only place where the engine writes to a system.

One write path for creates and updates (a refusal naming some fields sends the rest without
them, and both refusals are reported if the second fails too), one link-row builder, audit
rows, intents. A write whose outcome is unknown is never repeated here: a create keeps its
intent (resolved next run by external id or natural key), an update is read again next run.
A conditional write refused because the record changed since it was read is decided again
next run by the flow's conflict policy, never overwritten.
"""
from __future__ import annotations

import asyncio
from typing import Any, Mapping

from connectors.base import (AuthError, ConflictError, NotFoundError, OutcomeUnknownError,
                             ReadsBeforeUpdate, Record, RecordError, UnavailableError)
from daemon.engine.actions import (Action, Create, Delete, DropHold, Fail, Hold, Link, Mark,
                                   Park, Recover, Recreate, Review, Skip, Tombstone, Unchanged,
                                   Unlink, Update, Write, tally)
from daemon.engine.chunk import UnitOfWork
from daemon.engine.context import StepContext
from daemon.engine.flow import mapped, value_hash
from connectors.pace import AdaptiveLimit
from daemon.engine.plan import owned_by
from daemon.engine.rules import Side, other
from daemon.engine.transforms import Context
from daemon.store.db import dumps, now

ABORTS = (AuthError, UnavailableError)
# actions that only change the state (links, errors, reviews...), never a system
BOOKKEEPING = (Unchanged, Skip, Park, Review, Fail, Hold, DropHold, Tombstone, Unlink)


def base_row(ctx: StepContext, side: Side, values: dict) -> dict[str, Any]:
    """A side's base as a link row keeps it: the values, their digest and how many fields
    it holds (every write of a base goes through here: the count must match the base)."""
    paths = ctx.flow.base_paths[side]
    base = mapped(paths, values)
    return {f"{side}_base": dumps(base), f"{side}_hash": value_hash(paths, base),
            f"{side}_fields": len(base)}


def after_write(before: dict, written: dict, stored: Record) -> dict:
    """The new base after a write: the system's stored value for the fields written, the
    values as read for the rest. Taking the whole response would absorb an edit made there
    meanwhile to a field we did not write, and lose it."""
    out = dict(before)
    for path, value in written.items():
        out[path] = stored.fields.get(path, value)
    return out


class Applier:
    def __init__(self, ctx: StepContext, uow: UnitOfWork, tctx: Context) -> None:
        self.ctx, self.uow, self.tctx = ctx, uow, tctx

    async def run(self, actions: list[tuple[Action, dict]]) -> None:
        """Carry out a chunk's actions with bounded concurrency. ``actions`` pairs each
        action with the staged hashes of its records ({(side, id): hash}), for quarantine.
        Intents of the chunk's creates are committed before any create is sent. A fault that
        stops the step (credentials, an unreachable system) is raised after the others
        finished, so what was written is committed."""
        creates = [a for a, _ in actions if isinstance(a, Create)]
        if creates:
            await self._intents(creates)
        # bookkeeping only (no system is asked): done here, in order, without a task each
        remote = []
        for a, h in actions:
            if isinstance(a, BOOKKEEPING):
                await self._guarded(a, h)
            else:
                remote.append((a, h))
        actions = remote
        await self._will_update(actions)
        limit = self._pace()
        queue = iter(actions)
        faults: list[Exception] = []

        async def worker() -> None:
            # a few workers take the chunk's actions in turn, the limit deciding how many
            # write at once: a task and a wait an action cost the event loop more (about 5%
            # of a first sync's CPU) than the pacing needs
            for action, hashes in queue:
                started = await limit.acquire()
                ok = False
                try:
                    ok = await self._guarded(action, hashes)
                except Exception as exc:    # noqa: BLE001 - raised once all are done
                    faults.append(exc)      # (a cancellation is not held back)
                finally:
                    limit.release(started, ok)
        ended = await asyncio.gather(*(worker() for _ in range(min(len(actions),
                                                                    limit.ceiling))),
                                     return_exceptions=True)
        for r in ended:             # a cancellation (the exceptions are in ``faults``)
            if isinstance(r, BaseException):
                raise r
        if faults:
            raise faults[0]

    async def _will_update(self, actions: list[tuple[Action, dict]]) -> None:
        """Tell each side that reads a record before updating it which of its records this
        chunk updates, so that it can read them together (``ReadsBeforeUpdate``)."""
        c = self.ctx
        ids: dict[Side, dict[str, set[str]]] = {"left": {}, "right": {}}
        for a, _ in actions:
            if isinstance(a, (Update, Link)):
                for w in a.writes:
                    ids[w.side].setdefault(w.id, set()).update(w.values)
            elif isinstance(a, Mark):
                ids[a.target].setdefault(a.target_id, set()).update(a.values)
        for side, some in ids.items():
            conn = c.sides[side]
            if not isinstance(conn, ReadsBeforeUpdate):
                continue
            try:
                await conn.will_update(c.flow.rules.entity(side), some)
            except ABORTS:
                raise
            except Exception as exc:  # noqa: BLE001 - the updates then read one by one
                c.log.warning("will_update.failed", side=side, error=f"{type(exc).__name__}: "
                              f"{exc}")

    def _pace(self) -> AdaptiveLimit:
        """The step's write pacing: at most the flow's ``concurrency``, and no more than the
        slowest side's rate limit keeps busy."""
        c = self.ctx
        if "writes" not in c.pace:
            rates = [conn.capabilities.requests_per_second for conn in c.sides.values()
                     if getattr(conn.capabilities, "requests_per_second", None)]
            c.pace["writes"] = AdaptiveLimit(c.flow.rules.concurrency,
                                             min(rates) if rates else None)
        return c.pace["writes"]

    async def _intents(self, creates: list[Create]) -> None:
        from daemon.store import queries as q
        c = self.ctx
        rows = [dict(integration=c.integration, flow=c.flow.name, target=a.target,
                     source_id=a.source_id, keys=dumps(a.intent), created_at=now())
                for a in creates]
        async with c.db.begin() as conn:
            for target in ("left", "right"):
                await q.drop_intents(conn, c.integration, c.flow.name, target,
                                     [a.source_id for a in creates if a.target == target])
            await q.add_intents(conn, rows)

    async def _guarded(self, action: Action, hashes: dict) -> bool:
        """Apply one action; False when the system did not cope (no answer in time), for
        the pacing."""
        try:
            await self.apply(action)
        except ABORTS:
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except ConflictError as exc:
            self.ctx.counts["stale"] += 1
            self._fail(action, hashes, f"changed since it was read, decided again next run: "
                                       f"{exc.message}")
        except OutcomeUnknownError as exc:
            self._fail(action, hashes, f"{exc.message}; looked up next run, not repeated")
            return False
        except NotFoundError as exc:
            self._fail(action, hashes, f"record gone during the write: {exc.message}")
            for side, rid in _written(action):  # read by id next run: its deletion is seen
                self.uow.rereads.append((side, rid))
        except RecordError as exc:
            self._fail(action, hashes, exc.message)
        except Exception as exc:  # noqa: BLE001 - one record must never stop the others
            self.ctx.log.exception("record.crashed", action=type(action).__name__,
                                   records=[f"{s}:{i}" for s, i in _records(action)])
            self._fail(action, hashes, f"crashed: {type(exc).__name__}: {exc}")
        return True

    def _left_out(self, ids: Mapping[Side, str], values: Mapping[Side, Mapping]) -> None:
        """A field that flows from a side whose answers left it out, while the other side's
        value is known: that side is read again by id next run (once: not if this step
        already did), so the value is decided from both sides instead of staying unsynced
        until the record happens to change."""
        c = self.ctx
        for s in ("left", "right"):
            o = other(s)
            if ids[s] in c.reading.reread[s]:
                continue
            if any(f.flows_from(s) and f.path(s) not in values[s] and f.path(o) in values[o]
                   for f in c.flow.fields):
                self.uow.rereads.append((s, ids[s]))

    def _fail(self, action: Action, hashes: dict, message: str) -> None:
        for side, rid in _records(action):
            self.uow.error(side, rid, message, hash=hashes.get((side, rid)))

    # --- one action -----------------------------------------------------------------------
    async def apply(self, a: Action) -> None:
        c, u = self.ctx, self.uow
        match a:
            case Update():
                await self._update(a)
            case Link():
                await self._link(a)
            case Create():
                await self._create(a)
            case Recreate():
                await self._recreate(a)
            case Delete():
                await self._delete(a)
            case Mark():
                await self._mark(a)
            case Unlink(link_id=link_id, ids=ids, reason=reason):
                u.deletes.append(link_id)
                tally(a, c.counts)
                if reason == "filtered":
                    c.log.info("link.filtered_out", left=ids["left"], right=ids["right"])
                if reason == "deleted":
                    u.cleared["left"].append(ids["left"])
                    u.cleared["right"].append(ids["right"])
            case Tombstone(link_id=link_id, gone=gone, gone_id=gone_id, reason=reason):
                if reason == "ownership":
                    c.log.info("ownership.violation", field="*", side=gone, record=gone_id,
                               action=c.flow.rules.ownership,
                               what="delete of a record it does not own")
                u.updates.append({"id": link_id, "state": f"gone_{gone}", "updated_at": now()})
                u.cleared[gone].append(gone_id)
                tally(a, c.counts)
            case Hold(new=new):
                if new:
                    u.holds.append(dict(integration=c.integration, flow=c.flow.name,
                                        link_id=a.link_id, target=a.target,
                                        record_id=a.target_id, action=a.action,
                                        run_id=c.run_id, approved=False, created_at=now()))
                tally(a, c.counts)
            case DropHold(hold_id=hold_id, record_id=rid, reason=why):
                u.dropped_holds.append(hold_id)
                c.log.info("delete.hold_dropped", record=rid, reason=why)
            case Review(side=side, id=rid, candidates=cands, reason=reason, mark=mark):
                c.log.warning("match.ambiguous" if cands else "record.review", side=side,
                              record=rid, reason=reason, candidates=list(cands)[:10])
                if mark:
                    u.parked[side].append((rid, mark))
                u.reviews.append(dict(integration=c.integration, flow=c.flow.name, side=side,
                                      record_id=rid, candidates=dumps(list(cands)),
                                      reason=reason, updated_at=now()))
                tally(a, c.counts)
            case Park(side=side, id=rid, mark=mark):
                u.parked[side].append((rid, mark))
                tally(a, c.counts)
            case Unchanged(seen=seen):
                for side, rid in seen:      # a refusal still stands while the values stand
                    u.settled[side].append(rid)
                tally(a, c.counts)
            case Fail(side=side, id=rid, message=message, retry=retry):
                u.error(side, rid, message, retry=retry)
            case Skip():
                tally(a, c.counts)
            case Recover():
                await self._recover(a)

    # --- the write path -------------------------------------------------------------------
    async def write(self, w: Write) -> tuple[Record, dict[str, Any]]:
        """A partial update; a refusal naming some fields sends the rest without them.
        Returns the stored record and the values actually written."""
        c = self.ctx
        conn = c.sides[w.side]
        entity = c.flow.rules.entity(w.side)
        kw = {"version": w.version} if (conn.capabilities.conditional_writes
                                         and w.version is not None) else {}
        values = dict(w.values)
        try:
            stored = await conn.update(entity, w.id, values, **kw)
        except (NotFoundError, ConflictError):
            raise
        except RecordError as exc:
            bad = [k for k in exc.fields if k in values]
            if not bad or len(bad) == len(values):
                raise
            rest = {k: v for k, v in values.items() if k not in bad}
            try:
                stored = await conn.update(entity, w.id, rest, **kw)
            except RecordError as again:
                raise type(again)(_both(exc, bad, again), status=again.status,
                                  fields=again.fields) from None
            # reported on the record whose value was refused, so it clears when that one
            # is fixed
            where = w.report_on or (w.side, w.id)
            self.uow.error(*where, f"{', '.join(bad)} not written to {w.side}: {exc.message}",
                           retry=False)
            values = rest
        self.uow.audit_write(w.side, w.id, ((path, w.current.get(path),
                                             stored.fields.get(path, new),
                                             w.why.get(path, "update"))
                                            for path, new in values.items()))
        c.counts[f"updated_{w.side}"] += 1
        return stored, values

    async def _create_record(self, target: Side, fields: dict, source_id: str) -> Record:
        """Create one record (its intent is committed); a refusal naming some fields sends
        the rest without them."""
        c = self.ctx
        conn = c.sides[target]
        entity = c.flow.rules.entity(target)
        try:
            return await conn.create(entity, fields)
        except RecordError as exc:
            bad = [k for k in exc.fields if k in fields]
            if not bad or len(bad) == len(fields):
                raise
            try:
                rec = await conn.create(entity, {k: v for k, v in fields.items()
                                                 if k not in bad})
            except RecordError as again:
                raise type(again)(_both(exc, bad, again), status=again.status,
                                  fields=again.fields) from None
            self.uow.error(other(target), source_id,
                           f"not written: {', '.join(bad)}: {exc.message}", retry=False)
            return rec

    # --- pairs ----------------------------------------------------------------------------
    def _report(self, a: Update | Link) -> None:
        c = self.ctx
        for x in a.conflicts:
            c.counts["conflicts"] += 1
            c.log.warning("conflict", field=x.field, left=x.left, right=x.right,
                          winner=x.winner, policy=x.policy, left_id=a.ids["left"],
                          right_id=a.ids["right"])
        for v in a.violations:
            c.counts["ownership"] += 1
            c.log.info("ownership.violation", field=v.field, side=v.side, value=v.value,
                       action=v.action, record=a.ids[v.side])
        for r in a.refusals:
            source = other(r.target)
            self.uow.error(source, a.ids[source],
                           f"{r.field} not written to {r.target}: {r.message}", retry=False)

    async def _update(self, a: Update) -> None:
        self._report(a)
        row: dict[str, Any] = {"id": a.link_id, "state": a.state, "updated_at": now(),
                               "left_version": a.versions["left"],
                               "right_version": a.versions["right"]}
        stored = dict(a.current)
        for w in a.writes:
            rec, written = await self.write(w)
            stored[w.side] = after_write(a.current[w.side], written, rec)
            row[f"{w.side}_version"] = rec.version
        for side in ("left", "right"):
            row.update(base_row(self.ctx, side, stored[side]))
        self.uow.updates.append(row)
        self._left_out(a.ids, stored)
        if not a.refusals:
            for side, rid in a.seen:
                self.uow.cleared[side].append(rid)

    async def _link(self, a: Link) -> None:
        c, u = self.ctx, self.uow
        self._report(a)
        row: dict[str, Any] = {"integration": c.integration, "flow": c.flow.name,
                               "left_id": a.ids["left"], "right_id": a.ids["right"],
                               "state": "ok", "updated_at": now(),
                               "left_version": a.versions["left"],
                               "right_version": a.versions["right"]}
        stored = dict(a.current)
        for w in a.writes:
            rec, written = await self.write(w)
            stored[w.side] = after_write(a.current[w.side], written, rec)
            row[f"{w.side}_version"] = rec.version
        for side in ("left", "right"):
            row.update(base_row(c, side, stored[side]))
        u.inserts.append(row)
        self._left_out(a.ids, stored)
        c.counts["matched"] += 1
        c.log.info("link.matched", left=a.ids["left"], right=a.ids["right"])
        u.cleared["left"].append(a.ids["left"])
        u.cleared["right"].append(a.ids["right"])
        for side, rid in a.pushed:
            u.done_pushes[side].append(rid)

    async def _create(self, a: Create) -> None:
        c, u = self.ctx, self.uow
        for x in a.refusals:
            u.error(a.source, a.source_id, f"{x.field} not written to {a.target}: {x.message}",
                    retry=False)
        try:
            rec = await self._create_record(a.target, a.fields, a.source_id)
        except RecordError:
            # the system refused it: nothing was created, the intent goes
            u.done_intents[a.target].append(a.source_id)
            raise
        u.done_intents[a.target].append(a.source_id)
        c.counts[f"created_{a.target}"] += 1
        c.log.info("record.created", side=a.target, record=rec.id, source=a.source_id)
        at, why = now(), f"create from {a.source} {a.source_id}"
        u.audit_write(a.target, rec.id, ((path, None, rec.fields.get(path, value), why)
                                         for path, value in a.fields.items()), at)
        revert = owned_by(c.flow, a.target, rec.fields, a.source_values, self.tctx)
        # the link first: whatever happens to the write-back, the new record is linked;
        # its base already says "reverted", so a failed write-back is retried next run
        row = {"integration": c.integration, "flow": c.flow.name,
               f"{a.source}_id": a.source_id, f"{a.target}_id": rec.id, "state": "ok",
               "updated_at": at, f"{a.target}_version": rec.version,
               f"{a.source}_version": a.source_version,
               **base_row(c, a.source, {**a.source_values, **revert}),
               **base_row(c, a.target, rec.fields)}
        u.inserts.append(row)
        self._left_out({a.source: a.source_id, a.target: rec.id},
                       {a.source: {**a.source_values, **revert}, a.target: rec.fields})
        if revert:
            await self._write_back(a.source, a.source_id, a.source_values, revert, a.target,
                                   row)
        u.cleared[a.source].append(a.source_id)
        if a.pushed:
            u.done_pushes[a.source].append(a.source_id)

    async def _write_back(self, side: Side, rid: str, values: dict, revert: dict,
                          owner: Side, row: dict) -> None:
        w = Write(side, rid, revert, values, {k: f"revert: owned by {owner}" for k in revert})
        try:
            done, written = await self.write(w)
            row.update(base_row(self.ctx, side, after_write(values, written, done)))
        except (RecordError, OutcomeUnknownError) as exc:
            self.uow.error(side, rid, exc.message, retry=False)

    async def _recreate(self, a: Recreate) -> None:
        c, u = self.ctx, self.uow
        owner = other(a.target)
        c.counts["ownership"] += 1
        c.log.info("ownership.violation", field="*", side=a.target, action="revert",
                   record=a.owner_id, what="delete of a record it does not own")
        rec = await self._create_record(a.target, a.fields, a.owner_id)
        at, why = now(), f"re-create: owned by {owner}"
        u.audit_write(a.target, rec.id, ((path, None, rec.fields.get(path, value), why)
                                         for path, value in a.fields.items()), at)
        u.updates.append({"id": a.link_id, f"{a.target}_id": rec.id, "state": "ok",
                          "updated_at": at, **base_row(c, a.target, rec.fields),
                          **base_row(c, owner, a.owner_values)})
        c.counts["recreated"] += 1

    async def _delete(self, a: Delete) -> None:
        c, u = self.ctx, self.uow
        deleted = other(a.target)
        if a.edited:
            c.log.info("delete.wins_over_edit", side=a.target, record=a.target_id)
        try:
            await c.sides[a.target].delete(c.flow.rules.entity(a.target), a.target_id)
        except NotFoundError:
            pass
        u.deletes.append(a.link_id)
        u.removed[a.target].append(a.target_id)
        u.audit_write(a.target, a.target_id, [("*", None, None, f"{deleted} deleted: delete")])
        u.cleared[deleted].append(a.gone_id)
        c.counts["deleted"] += 1

    async def _mark(self, a: Mark) -> None:
        c, u = self.ctx, self.uow
        deleted = other(a.target)
        w = Write(a.target, a.target_id, a.values, a.current,
                  {k: f"{deleted} deleted: mark" for k in a.values})
        rec, written = await self.write(w)
        c.counts[f"updated_{a.target}"] -= 1
        c.counts["marked"] += 1
        u.updates.append({"id": a.link_id, "state": f"gone_{deleted}", "updated_at": now(),
                          **base_row(c, a.target, after_write(a.current, written, rec))})
        u.removed[a.target].append(a.target_id)
        u.cleared[deleted].append(a.gone_id)

    async def _recover(self, a: Recover) -> None:
        """A create whose answer was lost, looked up again (``intents.lookup``)."""
        c, u = self.ctx, self.uow
        if a.unresolvable:          # kept: the record is not created again until a person says
            u.reviews.append(dict(integration=c.integration, flow=c.flow.name, side=a.source,
                                  record_id=a.source_id, candidates=dumps([]),
                                  reason=a.reason, updated_at=now()))
            c.counts["review"] += 1
            return
        u.done_intents[a.target].append(a.source_id)
        if a.found is None:
            if a.candidates:
                u.reviews.append(dict(integration=c.integration, flow=c.flow.name,
                                      side=a.source, record_id=a.source_id,
                                      candidates=dumps(list(a.candidates)[:50]),
                                      reason=a.reason, updated_at=now()))
                c.counts["review"] += 1
            else:
                c.log.info("intent.dropped", side=a.target, source=a.source_id,
                           reason=a.reason or "nothing was created")
            return
        source_values = dict(a.source_base)
        revert = {} if a.source_gone else owned_by(c.flow, a.target, a.found_fields,
                                                  source_values, self.tctx)
        row = {"integration": c.integration, "flow": c.flow.name,
               f"{a.source}_id": a.source_id, f"{a.target}_id": a.found, "state": "ok",
               "updated_at": now(), "left_version": None, "right_version": None,
               **base_row(c, a.source, {**source_values, **revert}),
               **base_row(c, a.target, a.target_base)}
        u.inserts.append(row)
        if revert:      # what the create would have done next, had it not been cut off
            await self._write_back(a.source, a.source_id, source_values, revert, a.target,
                                   row)
        c.counts["recovered"] += 1
        c.log.info("intent.resolved", side=a.target, record=a.found, source=a.source_id)


def _both(first: RecordError, bad: list[str], again: RecordError) -> str:
    return (f"{first.message}; sent again without {', '.join(bad)}: {again.message}")


def _written(a: Action) -> list[tuple[Side, str]]:
    """The records an action writes to (not creates). One found gone during the write was
    deleted there after the run read its side (or before, past the cursor: a deletion the
    listing did not report); read again by id next run, it is staged as deleted and its
    pair planned as a deletion, instead of the write failing again every run until the error
    is quarantined and the deletion never carried over."""
    match a:
        case Update(writes=writes) | Link(writes=writes):
            return [(w.side, w.id) for w in writes]
        case Mark(target=t, target_id=i):
            return [(t, i)]
    return []


def _records(a: Action) -> list[tuple[Side, str]]:
    """The records an action's error is reported on."""
    match a:
        case Update(seen=seen, ids=ids):
            return list(seen) or [("left", ids["left"])]
        case Link(ids=ids):
            return [("left", ids["left"]), ("right", ids["right"])]
        case Create(source=s, source_id=i):
            return [(s, i)]
        case Recreate(target=t, owner_id=i):
            return [(other(t), i)]
        case Delete(target=t, gone_id=i) | Mark(target=t, gone_id=i):
            return [(other(t), i)]
        case Recover(source=s, source_id=i):
            return [(s, i)]
    return []
