"""One step: one flow of one run. Orchestration only: stage -> match -> plan -> apply -> commit.

1. Creates whose outcome was unknown are looked up (``intents``) before anything is created;
   held deletes someone approved are carried out.
2. Both sides are read into the staging table, at the same time (``stage``).
3. The delete circuit-breaker counts the deletes and marks the plan would make.
4. Linked pairs, then unlinked records, chunk by chunk: ``match`` finds candidates, ``plan``
   decides, ``apply`` carries the actions out (a dry run lists them instead), and each chunk's
   store changes commit in one transaction (``chunk``). Cursors commit after the last chunk.
   A record equal to its linked base (quiet) is in no chunk: its pair is decided with its
   partner's chunk, or is unchanged. A decided record leaves the chunks but stays staged,
   a candidate for matching until the step ends.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.base import AuthError, Connector, ConnectorError, UnavailableError
from connectors.pace import together
from daemon.engine import intents, match
from daemon.engine.actions import (Action, Create, Delete, Link, Mark, Recover, Review, Skip,
                                   Unchanged, Unlink, describe, tally)
from daemon.engine.apply import Applier, base_row
from daemon.engine.backlog import Batch
from daemon.engine.chunk import UnitOfWork
from daemon.engine.context import Reading, StepContext, StepOptions
from daemon.engine.cursor import Cursor
from daemon.engine.flow import Flow, value_hash
from daemon.engine.plan import (Situation, base_of, plan_approved, plan_pair,
                                plan_unlinked)
from daemon.engine.merge import news_to_both
from daemon.engine.reference import ReferenceData, ReferenceUnavailable
from daemon.engine.rules import Side, other
from daemon.engine.stage import Staging, read_ahead
from daemon.engine.transforms import UNREAD, Context, NeedsReference
from daemon.store import queries as q

__all__ = ["StepAborted", "StepOptions", "StepResult", "run_step"]

log = structlog.get_logger("accord.step")
CHUNK = 500
T = TypeVar("T")
UNSETTLED = ("quarantined", "unresolved_create", "create_held")


class StepAborted(Exception):
    """The step cannot go on (authentication, unreachable system): the run stops."""


@dataclass
class StepResult:
    flow: str
    status: str = "ok"
    counts: Counter = field(default_factory=Counter)
    message: str = ""
    more: bool = False                          # batch_size cut the step short
    backlog: int = 0                            # records still waiting for later batches
    planned: list[dict] = field(default_factory=list)      # a dry run: what it would do
    actions: list[Action] = field(default_factory=list)    # a dry run: the same, as actions
    # a dry run: partners this step would give records, for the plan of later flows
    planned_links: dict[Side, dict[str, str]] = field(
        default_factory=lambda: {"left": {}, "right": {}})
    # feed records this step read and settled (id -> version): the runner acknowledges
    # those every step reading the feed settled
    settled_feed: dict[Side, dict[str, str | None]] = field(
        default_factory=lambda: {"left": {}, "right": {}})


async def run_step(db: AsyncEngine, integration: str, flow: Flow,
                   sides: Mapping[Side, Connector], run_id: int, options: StepOptions,
                   reference: ReferenceData,
                   progress: Callable[[str, Counter], None] | None = None,
                   keep_actions: bool = False) -> StepResult:
    result = StepResult(flow.name)
    fingerprint = value_hash(["r"], {"r": flow.rules.model_dump_json()})[:12]
    ctx = StepContext(db, integration, flow, sides, run_id, options, reference,
                      log.bind(integration=integration, flow=flow.name, run=run_id),
                      result.counts, Reading(), fingerprint,
                      (lambda: progress(flow.name, result.counts)) if progress else
                      (lambda: None))
    step = _Step(ctx, result, keep_actions or options.dry_run)
    try:
        await step.run()
    except (AuthError, UnavailableError) as exc:
        raise StepAborted(exc.message) from None
    except ReferenceUnavailable as exc:
        raise StepAborted(str(exc)) from None
    except ConnectorError as exc:       # a read the system answered in a way we cannot use
        raise StepAborted(f"{exc.message}") from None
    finally:
        if step.staging.seq:                # rows of this step's own: none when idle
            async with db.begin() as conn:
                await q.clear_staged(conn, run_id=run_id, flow=flow.name)
    if result.counts["errors"]:
        result.status = "errors"
        if ctx.reading.first_error:     # the step's message column says what went wrong
            n = result.counts["errors"]
            note = (f"{n} record error{'s' if n > 1 else ''} (see accord status), first: "
                    f"{ctx.reading.first_error}")
            result.message = f"{result.message}; {note}" if result.message else note
    result.settled_feed = step.settled_feed()
    return result


class _Step:
    def __init__(self, ctx: StepContext, result: StepResult, keep: bool) -> None:
        self.ctx, self.result, self.keep = ctx, result, keep
        self.dry = ctx.options.dry_run
        self.sit = Situation(enforce=ctx.options.enforce)
        self.claimed: dict[Side, set[str]] = {"left": set(), "right": set()}
        # records this step's deletes remove, and ids whose link its deletes or unlinks drop
        # (``_gone``): a plan matches as the run will after them, reviews naming them wake
        self.gone: dict[Side, set[str]] = {"left": set(), "right": set()}
        self.freed: dict[Side, set[str]] = {"left": set(), "right": set()}
        # records in review because of a record this step deleted or unlinked: decided again
        self.woken: dict[Side, set[str]] = {"left": set(), "right": set()}
        self._woke_for: dict[Side, set[str]] = {"left": set(), "right": set()}
        self.blocked: dict[Side, set[str]] = {"left": set(), "right": set()}
        self.staging = Staging(ctx)
        # a plan: links the run would have made before reading (creates found again)
        self.virtual: list[dict] = []

    async def run(self) -> None:
        c = self.ctx
        async with c.db.begin() as conn:
            if c.run_id > 0:
                await q.clear_left_behind(conn, c.integration, c.flow.name, c.run_id)
            else:       # a plan: its scratch id is random; a killed plan may have drawn it
                await q.clear_staged(conn, run_id=c.run_id, flow=c.flow.name)
        await self._intents()
        await self._approved()
        cursors = await self._stage_both()
        if any(self.staging.quiet.values()):     # pairs equal to their bases on every side
            async with c.db.begin() as conn:     # read: unchanged, without being planned
                c.counts["unchanged"] += await q.quiet_pairs(conn, c.run_id, c.integration,
                                                             c.flow.name)
        await self._wake()          # approved deletes (above) may have freed a review's reason
        if self.staging.seq >= q.STATS_AFTER:
            async with c.db.begin() as conn:
                await q.refresh_statistics(conn, self.staging.seq)
        self.result.more = c.reading.cut
        if self.staging.fails:
            await self._do([(a, {}) for a in self.staging.fails], Context())
        if self.staging.seq or self.virtual:    # an idle step staged nothing to plan
            await self._breaker()
            for side in ("left", "right"):  # a pair met from the left is unstaged on commit
                await self._linked(side)
            await self._wake()
            for side in ("left", "right"):
                await self._unlinked(side)
        if not self.dry:
            async with c.db.begin() as conn:
                for side, cur in cursors.items():
                    value = cur.dump() if cur is not None else None
                    if value is not None:
                        value.update(self.staging.notes.get(side, {}))
                    if value is not None and c.options.only is None:
                        await q.set_cursor(conn, c.integration, c.flow.name, side, value)
                await q.after_step_exclusions(conn, c.integration, c.flow.name)
                for side, ids in c.reading.reread.items():
                    await q.drop_rereads(conn, c.integration, c.flow.name, side, sorted(ids))
        self._batches()
        held = self.result.counts["held"]
        if held:
            why = self._breaker_reason or "earlier runs held them"
            self.result.message = (f"deletes held: {held} ({why}); run `accord approve "
                                   f"{c.integration}` to let them go")
            c.log.warning("deletes.held", held=held, reason=why)

    async def _stage_both(self) -> dict[Side, Cursor | None]:
        """Both sides staged at once: one side's reading (its system's answers, their
        parsing) overlaps the other's staging. A fault on one side stops the other."""
        sides: tuple[Side, Side] = ("left", "right")
        return dict(zip(sides, await together(self.staging.side(s) for s in sides)))

    def _batches(self) -> None:
        """AJ-4: a batch flow says how many records still wait and how many more runs that
        takes, or "Sync Completed" when its last batch is done."""
        c = self.ctx
        rules = c.flow.rules
        lines = []
        for side, (taken, waiting, before) in c.reading.batches.items():
            label = rules.batch_label or rules.entity(side)
            batch = Batch(rules.batch_size or 1, label, taken, waiting, before)
            self.result.backlog += waiting
            lines.append(batch.message())
            c.log.info("batch.progress" if waiting else "batch.completed", side=side,
                       done=batch.done, waiting=waiting, runs_left=batch.runs_left)
        if lines:
            self.result.message = "; ".join(lines)

    # --- carrying out (or listing) a chunk's actions --------------------------------------
    async def _do(self, actions: list[tuple[Action, dict]], tctx: Context,
                  uow: UnitOfWork | None = None) -> None:
        await self._carry_out(actions, tctx, uow or UnitOfWork(self.ctx))

    async def _carry_out(self, actions: list[tuple[Action, dict]], tctx: Context,
                         uow: UnitOfWork, later: bool = False) -> asyncio.Task | None:
        """Carry out (or, planning, list) a chunk's actions and commit what they did.
        ``later``: when every write answered, the commit is started and handed back as a
        task, for the caller to await before the next chunk's writes (a fault that stops the
        step is raised after the commit, as always)."""
        for a, _ in actions:
            self._gone(a)
        if self.dry:
            for a, _ in actions:
                tally(a, self.ctx.counts)
                row = describe(a)
                if row is not None:
                    self.result.planned.append(row)
                self._plan_links(a)
            if self.keep:
                self.result.actions.extend(a for a, _ in actions)
            await uow.commit()
            return None
        if self.keep:
            self.result.actions.extend(a for a, _ in actions)
        for a, _ in actions:            # left for later: not acknowledged to a feed
            if isinstance(a, Review) or (isinstance(a, Skip) and a.reason in UNSETTLED):
                self.ctx.reading.unsettled.add((a.side, a.id))
        if self.ctx.flow.revert_lists and any(v is UNREAD for v in tctx.options.values()) \
                and any(isinstance(a, (Create, Recover)) for a, _ in actions):
            # a create decides its write-back from what the system stored, after the write:
            # the lists it may consult are read first, so a list that cannot be read stops
            # the step before the write, not after it
            await self._read_reference(tctx)
        try:
            await Applier(self.ctx, uow, tctx).run(actions)
        except BaseException:
            await uow.commit()      # keep what was written before a fault
            raise
        if later:
            return asyncio.ensure_future(uow.commit())
        await uow.commit()
        self.ctx.tick()
        return None

    def settled_feed(self) -> dict[Side, dict[str, str | None]]:
        """The feed records read this step whose every record (or derived record) was
        settled: no error, no review, nothing held back."""
        reading = self.ctx.reading
        out: dict[Side, dict[str, str | None]] = {"left": {}, "right": {}}
        for side in ("left", "right"):
            read = reading.feed[side]
            if not read:
                continue
            deriver = self.staging.derivers.get(side)
            bad: set[str] = set()
            for s, rid in reading.unsettled:
                if s == side:
                    bad |= deriver.parents_of(rid) if deriver is not None else {rid}
            out[side] = {i: v for i, v in read.items() if i not in bad}
        return out

    def _gone(self, a: Action) -> None:
        """The records a delete or an unlink of this step removes, or frees of their link:
        a plan matches as the run would after them (``_after_plan``), and reviews that named
        them are decided again (``_wake``)."""
        if isinstance(a, Delete):
            self.gone[a.target].add(a.target_id)
            self.freed[a.target].add(a.target_id)
            self.freed[other(a.target)].add(a.gone_id)
        elif isinstance(a, Unlink):
            for side in ("left", "right"):
                self.freed[side].add(a.ids[side])

    async def _wake(self) -> None:
        """Records parked in review because a candidate was already linked, when this step
        deleted that candidate or dropped its link: read again by id and decided in this
        step's unlinked pass, not left parked until they change (the reason they waited
        for is gone, and nothing else would read them again)."""
        c = self.ctx
        freed = {s: self.freed[s] - self._woke_for[s] for s in ("left", "right")}
        if not any(freed.values()) or not (await c.record_state()).may("reviews"):
            return
        for s in ("left", "right"):
            self._woke_for[s] |= freed[s]
        async with c.db.begin() as conn:
            named = await q.reviews_naming(conn, c.integration, c.flow.name, freed)
        for side in ("left", "right"):
            ids = [rid for s, rid in named if s == side]
            if ids:
                self.woken[side].update(ids)
                await self.staging.by_id(side, c.flow.rules.entity(side), ids, set())

    def _after_plan(self, target: Side, found: match.Candidates) -> None:
        """A plan's candidates as the run meets them once the plan's deletes and unlinks are
        done: a record it deletes is no candidate (the system's search no longer returns
        it), and one whose link it drops is not taken."""
        gone = self.gone[target]
        if gone:
            for rid, cands in list(found.by_record.items()):
                kept = [c for c in cands if c["record_id"] not in gone]
                if kept:
                    found.by_record[rid] = kept
                else:
                    del found.by_record[rid]
        found.linked -= self.freed[target]

    def _plan_links(self, a: Action) -> None:
        links = self.result.planned_links
        if isinstance(a, Link):
            links["left"][a.ids["left"]] = a.ids["right"]
            links["right"][a.ids["right"]] = a.ids["left"]
        elif isinstance(a, Create):
            links[a.source][a.source_id] = (f"(new {self.ctx.flow.name} record from "
                                            f"{a.source} {a.source_id})")
        elif isinstance(a, Recover) and a.found:
            links[a.source][a.source_id] = a.found

    # --- before reading -------------------------------------------------------------------
    async def _intents(self) -> None:
        c = self.ctx
        async with c.db.begin() as conn:
            pending = await q.pending_intents(conn, c.integration, c.flow.name)
        if pending:
            actions = [(await intents.lookup(c, i), {}) for i in pending]
            await self._do(actions, Context())
            for a, _ in actions:
                if isinstance(a, Recover) and a.unresolvable:
                    self.blocked[a.source].add(a.source_id)
                elif isinstance(a, Recover) and a.found and self.dry:
                    self.virtual.append(self._virtual_link(a))

    def _virtual_link(self, a: Recover) -> dict:
        """The link a found create makes, as the run would store it (a plan only)."""
        c = self.ctx
        return {"id": -len(self.virtual) - 1, "revert": (a.source, a.revert),
                f"{a.source}_id": a.source_id,
                f"{a.target}_id": a.found, "state": "ok", "left_version": None,
                "right_version": None,
                **base_row(c, a.source, {**a.source_base, **a.revert}),
                **base_row(c, a.target, a.target_base)}

    async def _approved(self) -> None:
        c = self.ctx
        async with c.db.begin() as conn:
            rows = await q.approved_holds(conn, c.integration, c.flow.name)
            found = await q.links_by_id(conn, [r["link_id"] for r in rows])
        if not rows:
            return
        uow = UnitOfWork(c)
        actions = []
        for hold in rows:
            uow.dropped_holds.append(hold["id"])
            link = found.get(hold["link_id"])
            if link is not None:
                mark = c.flow.rules.delete.toward(hold["target"]).mark
                actions.append((plan_approved(link, hold, mark), {}))
        await self._do(actions, Context(), uow)

    # --- the circuit-breaker --------------------------------------------------------------
    _breaker_reason: str = ""

    async def _breaker(self) -> None:
        """Trips when the deletes and marks this step would make exceed the threshold, or a
        side listed nothing at all. Counted exactly: the planner's own decisions."""
        c = self.ctx
        async with c.db.begin() as conn:
            total = await q.count_links(conn, c.integration, c.flow.name)
            held = await q.held_links(conn, c.integration, c.flow.name)
        self.sit = Situation(enforce=c.options.enforce, held=held,
                             can_create=self._can_create(),
                             listed_empty=dict(c.reading.listed_empty))
        if not total:
            return
        deletes = 0
        for side in ("left", "right"):
            async for units in self._linked_chunks(side, deleted_only=True):
                tctx = await self._context(units)
                for u in units:
                    recs = self._recs(u)
                    planned = await self._decided(tctx, plan_pair, c.flow, u["link"], recs,
                                                  tctx, self.sit)
                    deletes += sum(isinstance(a, (Delete, Mark)) for a in planned)
        empty = [s for s in ("left", "right") if c.reading.listed_empty[s]]
        limit = max(c.flow.rules.delete_threshold_min, c.flow.rules.delete_threshold * total)
        if empty or deletes > limit:
            self._breaker_reason = (
                f"the {' and '.join(empty)} side listed no records at all" if empty else
                f"{deletes} of {total} links would be deleted or marked "
                f"(threshold {c.flow.rules.delete_threshold:.0%})")
            self.sit = Situation(enforce=c.options.enforce, held=held, hold_deletes=True,
                                 can_create=self.sit.can_create,
                                 listed_empty=self.sit.listed_empty)

    def _can_create(self) -> dict[Side, bool]:
        c = self.ctx
        return {s: c.sides[s].capabilities.entities[c.flow.rules.entity(s)].can_create
                for s in ("left", "right")}

    # --- linked pairs ---------------------------------------------------------------------
    @staticmethod
    def _recs(unit: dict) -> dict[Side, dict | None]:
        return {s: (unit[s] if unit[s] is not None and not unit[s]["excluded"] else None)
                for s in ("left", "right")}

    async def _virtual_pairs(self) -> None:
        """A plan: the pairs a found create links are planned as the run plans them."""
        c = self.ctx
        uow = UnitOfWork(c)
        async with c.db.begin() as conn:
            found = {s: await q.staged_records(conn, c.run_id, c.flow.name, s,
                                               [v[f"{s}_id"] for v in self.virtual])
                     for s in ("left", "right")}
        tctx = Context(planned=c.options.planned)
        actions: list[tuple[Action, dict]] = []
        for link in self.virtual:
            recs = {s: found[s].get(link[f"{s}_id"]) for s in ("left", "right")}
            recs = {s: (r if r is not None and not r["excluded"] else None)
                    for s, r in recs.items()}
            source, revert = link["revert"]
            if revert and recs[source] is not None:     # read after the run's write-back
                data = {**recs[source]["data"], **revert}
                recs[source] = {**recs[source], "data": data,
                                "hash": value_hash(c.flow.base_paths[source], data)}
            for s in ("left", "right"):
                uow.handled[s].append(link[f"{s}_id"])
            actions += [(a, {}) for a in plan_pair(c.flow, link, recs, tctx, self.sit)]
        self.virtual = []
        await self._do(actions, tctx, uow)

    async def _linked(self, side: Side) -> None:
        """The pairs with a staged record on ``side``, chunk by chunk. The next chunk is read
        while this one is decided and committed (``read_ahead``): its window of the staging
        order comes after this one's, and a link pairs one record on each side, so nothing
        this chunk's commit changes (its records and their partners, unstaged) is in it."""
        c = self.ctx
        if self.virtual:
            await self._virtual_pairs()
        async for units in read_ahead(self._linked_chunks(side, raw=True)):
            if not units:
                continue
            quiet = {id(u) for u in units if self._quiet(u)}
            for u in units:             # the rest are planned from their values
                if id(u) not in quiet:
                    for s in ("left", "right"):
                        if u[s] is not None:
                            q.decode_staged(u[s])
            planned = [u for u in units if id(u) not in quiet]
            await self._complete(side, planned)
            uow = UnitOfWork(c)
            tctx = await self._context(planned) if planned else Context(
                options={}, planned=c.options.planned)
            stuck = await self._quarantined([r for u in units for r in self._recs(u).values()
                                             if r is not None])
            actions: list[tuple[Action, dict]] = []
            for u in units:
                recs = self._recs(u)
                for s, r in recs.items():
                    if u[s] is not None:
                        uow.handled[s].append(u[s]["record_id"])
                hashes = {(s, r["record_id"]): r["hash"] for s, r in recs.items()
                          if r is not None}
                if any(k in stuck for k in hashes):
                    k = next(k for k in hashes if k in stuck)
                    actions.append((Skip(k[0], k[1], "quarantined"), {}))
                elif id(u) in quiet:
                    actions.append((Unchanged(tuple(hashes)), hashes))
                else:
                    for a in await self._decided(tctx, plan_pair, c.flow, u["link"], recs,
                                                 tctx, self.sit):
                        actions.append((a, hashes))
            await self._do(actions, tctx, uow)

    async def _linked_chunks(self, side: Side, **kw: Any) -> AsyncIterator[q.Chunk]:
        """The chunks of pairs with a staged record on ``side``, in the staging order
        (``q.staged_linked_chunk``'s options: ``raw``, ``deleted_only``)."""
        c = self.ctx
        after = 0
        while True:
            async with c.db.begin() as conn:
                units = await q.staged_linked_chunk(conn, c.run_id, c.integration,
                                                    c.flow.name, side, after, CHUNK, **kw)
            if units.last is None:
                return
            after = units.last
            yield units

    def _quiet(self, unit: dict) -> bool:
        """A pair read on both sides whose records both equal their bases, with nothing
        standing on it: its plan is ``Unchanged`` (``plan_pair`` decides the same action),
        known without decoding its values."""
        if self.sit.enforce:
            return False
        link = unit["link"]
        if link["state"] != "ok" or link["id"] in self.sit.held:
            return False
        for s in ("left", "right"):
            r = unit[s]
            if (r is None or r["excluded"] or r["deleted"] or not r["passes"]
                    or r["hash"] != link[f"{s}_hash"]):
                return False
        return True

    async def _complete(self, side: Side, units: list[dict]) -> None:
        """A pair read on one side only, whose record sends a mapped field that neither
        side's base knows (an earlier answer left it out): the other side is read now, by
        id, so the field is decided in this run from both values instead of being taken for
        an edit of the side that sent it."""
        c = self.ctx
        o = other(side)
        need: dict[str, dict] = {}
        for u in units:
            mine = u[side]
            if mine is None or u[o] is not None or mine["deleted"]:
                continue
            if news_to_both(c.flow.fields, side, mine["data"], base_of(u["link"], side),
                            base_of(u["link"], o)):
                need[u["link"][f"{o}_id"]] = u
        if not need:
            return
        await self.staging.by_id(o, c.flow.rules.entity(o), list(need), set())
        async with c.db.begin() as conn:
            found = await q.staged_records(conn, c.run_id, c.flow.name, o, list(need))
        for rid, u in need.items():
            u[o] = found.get(rid)

    # --- records with no link -------------------------------------------------------------
    async def _unlinked(self, side: Side) -> None:
        """The unlinked records of ``side``, chunk by chunk. A chunk's commit goes into the
        store while the next chunk is read and decided (the store's work overlaps the
        planner's); the next chunk's writes wait for it. Until its links are in, the
        partners they name (linked or created) are claimed: no later record takes one
        (``found.linked`` answers for them once committed). Not where a field of the flow
        refers to the flow itself: its next chunk translates references through those
        links."""
        c = self.ctx
        target = other(side)
        overlap = not self.dry and all(f.ref != c.flow.name for f in c.flow.fields)
        landing: tuple[asyncio.Task, UnitOfWork] | None = None
        after = 0
        try:
            while True:
                async with c.db.begin() as conn:
                    recs = await q.staged_unlinked_chunk(conn, c.run_id, c.integration,
                                                         c.flow.name, side, after, CHUNK)
                if recs.last is None:
                    return
                after = recs.last
                if not recs:
                    continue
                uow = UnitOfWork(c)
                tctx = await self._context([{side: r} for r in recs])
                actions = await self._plan_unlinked(side, recs, tctx, uow)
                await self._landed(landing, target)
                landing = None
                task = await self._carry_out(actions, tctx, uow, later=overlap)
                if task is None:
                    self._unclaim(target, uow)
                else:
                    self.claimed[target].update(r[f"{target}_id"] for r in uow.inserts)
                    landing = (task, uow)
        finally:
            await self._landed(landing, target)

    async def _landed(self, landing: tuple[asyncio.Task, UnitOfWork] | None,
                      target: Side) -> None:
        """The previous chunk's commit is in; its fault, if any, is raised here."""
        if landing is None:
            return
        task, uow = landing
        await task
        self._unclaim(target, uow)
        self.ctx.tick()

    def _unclaim(self, target: Side, uow: UnitOfWork) -> None:
        """A committed link now answers for its partner (``found.linked``)."""
        if not self.dry:
            self.claimed[target].difference_update(r[f"{target}_id"] for r in uow.inserts)

    async def _plan_unlinked(self, side: Side, recs: list[dict], tctx: Context,
                             uow: UnitOfWork) -> list[tuple[Action, dict]]:
        c = self.ctx
        target = other(side)
        out: list[tuple[Action, dict]] = []
        active = []
        for r in recs:
            if r["excluded"] or r["deleted"]:
                continue
            if not r["passes"]:
                out.append((Skip(side, r["record_id"], "filtered"), {}))
            elif r["record_id"] in self.claimed[side]:
                continue            # linked by a record of the other side in this plan
            elif r["record_id"] in self.blocked[side]:
                out.append((Skip(side, r["record_id"], "unresolved_create"), {}))
            else:
                active.append(r)
        if not active:
            return out
        parked: dict[str, str] = {}
        if (await c.record_state()).may("parked"):
            async with c.db.begin() as conn:
                parked = await q.parked_hashes(conn, c.integration, c.flow.name, side,
                                               [r["record_id"] for r in active])
        mark = {r["record_id"]: f"{r['hash']}:{c.fingerprint}" for r in active}
        quiet = {r["record_id"] for r in active if not r["pushed"]
                 and parked.get(r["record_id"]) == mark[r["record_id"]]
                 and r["record_id"] not in self.woken[side]}
        c.counts["unchanged"] += len(quiet)
        active = [r for r in active if r["record_id"] not in quiet]
        stuck = await self._quarantined(active, side)
        for r in active:
            if (side, r["record_id"]) in stuck:
                out.append((Skip(side, r["record_id"], "quarantined"), {}))
        active = [r for r in active if (side, r["record_id"]) not in stuck]
        if not active:
            return out
        await self.staging.keys_ready()     # quiet records are candidates too
        found = await match.candidates(c, side, active)
        if self.dry:
            self._after_plan(target, found)
        taken = found.linked | self.claimed[target]         # a new set, this chunk's own
        for r in active:
            cands = found.by_record.get(r["record_id"], [])
            a = await self._decided(tctx, plan_unlinked, c.flow, side, r, cands, taken,
                                    mark[r["record_id"]], tctx, self.sit,
                                    r["record_id"] in found.partner_ambiguous,
                                    r["record_id"] in found.partner_excluded)
            if isinstance(a, Link):
                partner = a.ids[target]
                taken.add(partner)
                self.claimed[target].add(partner)
                uow.handled[target].append(partner)
            out.append((a, {(side, r["record_id"]): r["hash"]}))
        return out

    async def _quarantined(self, recs: list[dict], side: Side | None = None
                           ) -> set[tuple[Side, str]]:
        """Records whose error is quarantined and that did not change since it was."""
        c = self.ctx
        if not recs or not (await c.record_state()).may("quarantined"):
            return set()
        by_side: dict[Side, dict[str, str]] = {"left": {}, "right": {}}
        for r in recs:
            s = side or r.get("side")
            if s:
                by_side[s][r["record_id"]] = r["hash"]
        out: set[tuple[Side, str]] = set()
        for s, hashes in by_side.items():
            if not hashes:
                continue
            async with c.db.begin() as conn:
                stuck = await q.quarantined(conn, c.integration, c.flow.name, s, list(hashes))
            out |= {(s, rid) for rid, h in stuck.items() if h == hashes[rid]}
        return out

    async def _decided(self, tctx: Context, plan: Callable[..., T], *args: Any) -> T:
        """``plan(*args)``; when a value it decides needs a reference list the run has not
        read yet, the lists are read and the record decided again (plans are pure)."""
        try:
            return plan(*args)
        except NeedsReference:
            await self._read_reference(tctx)
            return plan(*args)

    async def _read_reference(self, tctx: Context) -> None:
        for lists in (await self.ctx.reference.lists()).values():
            tctx.options.update(lists)

    async def _context(self, units: list[dict]) -> Context:
        """Reference lists, and the link maps that translate this chunk's reference fields."""
        c = self.ctx
        tctx = Context(options={})
        c.reference.fill(tctx.options)      # read once per run, when a value needs them
        tctx.planned = c.options.planned
        for fld in c.flow.fields:
            if not fld.ref:
                continue
            for side in ("left", "right"):
                values = [u[side]["data"].get(fld.path(side)) for u in units
                          if u.get(side) and u[side]["data"].get(fld.path(side))]
                values += [q.decode_base(u["link"], side).get(fld.path(side)) for u in units
                           if "link" in u]
                values = [v for v in values if v]
                async with c.db.begin() as conn:
                    tctx.options[(fld.ref, side)] = await q.link_map(
                        conn, c.integration, fld.ref, side, values)
        return tctx
