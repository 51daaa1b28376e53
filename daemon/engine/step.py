"""One step: one flow of one run. Stage -> decide -> apply -> commit.

1. Pending create intents left by a crash are resolved (by external id, then natural key).
2. Both sides' changes since their cursors are streamed into the ``staged`` table, page by
   page, with the records that must be read again by id (failed writes, lifted exclusions,
   pushes). A complete listing also stages, as deleted, every linked record it did not see.
3. The delete circuit-breaker counts the deletes this step would make.
4. Linked pairs with a staged side are merged in chunks; unlinked records are matched by
   natural key, linked, or created. Each chunk's link changes, audit rows and record errors
   commit in one transaction; cursors commit after the last chunk.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.base import (AuthError, Connector, Record, UnavailableError, utc)
from daemon.engine import create, pairs
from daemon.engine.batch import Batch
from daemon.engine.flow import Flow, holds, is_soft_deleted, iso, mapped, value_hash
from daemon.engine.rules import Side
from daemon.engine.transforms import Context, normalize
from daemon.store import queries as q
from daemon.store.db import dumps

log = structlog.get_logger("accord.step")
CHUNK = 500


class StepAborted(Exception):
    """The step cannot go on (authentication, unreachable system): the run stops."""


@dataclass
class StepOptions:
    full: bool = False                         # ignore cursors: a complete listing
    dry_run: bool = False                      # decide, write nothing (plan)
    enforce: dict[str, Side] = field(default_factory=dict)
    only: dict[Side, list[str]] | None = None  # a targeted run: just these records


@dataclass
class StepResult:
    flow: str
    status: str = "ok"
    counts: Counter = field(default_factory=Counter)
    message: str = ""
    more: bool = False                          # batch_size cut the step short
    planned: list[dict] = field(default_factory=list)


class FlowStep:
    def __init__(self, db: AsyncEngine, integration: str, flow: Flow,
                 sides: Mapping[Side, Connector], run_id: int, options: StepOptions,
                 reference: Mapping[Side, Mapping[str, Any]],
                 progress: Callable[[str, Counter], None] | None = None) -> None:
        self.db, self.integration, self.flow, self.sides = db, integration, flow, sides
        self.rules = flow.rules
        self.run_id, self.opt = run_id, options
        self.reference = reference
        self.result = StepResult(flow.name)
        self.c = self.result.counts
        self.complete: dict[Side, bool] = {"left": False, "right": False}
        self.seen_any: dict[Side, bool] = {"left": False, "right": False}
        self.listed_empty: dict[Side, bool] = {"left": False, "right": False}
        self.hold_deletes = False
        self.held: dict[int, dict] = {}
        self.unreadable: dict[Side, set[str]] = {"left": set(), "right": set()}
        self.progress = progress
        self.log = log.bind(integration=integration, flow=flow.name, run=run_id)
        # parked records are looked at again when the flow's rules change
        self.fingerprint = value_hash(["r"], {"r": flow.rules.model_dump_json()})[:12]

    # ------------------------------------------------------------------------------------
    async def run(self) -> StepResult:
        try:
            async with self.db.begin() as conn:
                await q.clear_staged(conn, flow=self.flow.name)
            if not self.opt.dry_run:
                await self._resolve_intents()
                await self._approved_holds()
            cursors = {}
            for side in ("left", "right"):
                cursors[side] = await self._stage_side(side)
            await self._check_breaker()
            await self._linked()
            for side in ("left", "right"):
                await self._unlinked(side)
            if not self.opt.dry_run:
                async with self.db.begin() as conn:
                    for side, value in cursors.items():
                        if value is not None and self.opt.only is None:
                            await q.set_cursor(conn, self.integration, self.flow.name, side,
                                               value)
                    await q.after_step_exclusions(conn, self.integration, self.flow.name)
        except AuthError as exc:
            raise StepAborted(exc.message) from None
        except UnavailableError as exc:
            raise StepAborted(exc.message) from None
        finally:
            async with self.db.begin() as conn:
                await q.clear_staged(conn, run_id=self.run_id, flow=self.flow.name)
        if self.c["errors"]:
            self.result.status = "errors"
        return self.result

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress(self.flow.name, self.c)

    # --- staging --------------------------------------------------------------------------
    async def _stage_side(self, side: Side) -> dict | None:
        conn_ = self.sides[side]
        entity = self.rules.entity(side)
        info = conn_.capabilities.entities[entity]
        async with self.db.begin() as conn:
            cursor = None if self.opt.full else await q.get_cursor(
                conn, self.integration, self.flow.name, side)
            revisit = await q.revisit_ids(conn, self.integration, self.flow.name, side)
            pushed = await q.take_pushes(conn, self.integration, self.flow.name, side)
        seq = 0
        if self.opt.only is not None:
            ids = self.opt.only.get(side, [])
            if ids:
                seq = await self._stage_by_id(side, entity, ids, seq, pushed=set(pushed))
            return None
        since = None
        if cursor is not None and info.incremental:
            since = datetime.fromisoformat(cursor["at"]) - timedelta(
                seconds=self.rules.overlap_seconds)
        at = cursor["at"] if cursor else None
        at_ids = set(cursor.get("ids", [])) if cursor else set()
        taken, cut = 0, False
        async for page in conn_.changes(entity, since):
            if not page:
                continue
            self.seen_any[side] = True
            seq = await self._stage_page(side, page, seq, set())
            self.c[f"read_{side}"] += len(page)
            for rec in page:
                m = iso(utc(rec.modified)) if rec.modified else None
                if m is not None and (at is None or m > at):
                    at, at_ids = m, {rec.id}
                elif m is not None and m == at:
                    at_ids.add(rec.id)
                if not (cursor and m == cursor["at"] and rec.id in cursor.get("ids", [])):
                    taken += 1
            self._tick()
            if self.rules.batch_size and info.ordered and taken >= self.rules.batch_size:
                cut = True
                break
        # a listing that returned nothing at all is not trusted to prove that no partner
        # exists (a wrong account, an outage answering 200): matching asks find() instead
        self.complete[side] = (not cut and (since is None or not info.incremental)
                               and self.seen_any[side])
        self.listed_empty[side] = not cut and (since is None or not info.incremental) \
            and not self.seen_any[side]
        if cut:
            self.result.more = True
        extra = [i for i in dict.fromkeys(revisit + pushed)]
        if extra:
            seq = await self._stage_by_id(side, entity, extra, seq, pushed=set(pushed))
        if self.complete[side] or self.listed_empty[side]:
            await self._stage_unseen(side, seq)
        if at is None:
            return None
        return {"at": at, "ids": sorted(at_ids)[:1000]}

    async def _stage_by_id(self, side: Side, entity: str, ids: list[str], seq: int,
                           pushed: set[str]) -> int:
        conn_ = self.sides[side]
        step = max(1, conn_.capabilities.max_get)
        for i in range(0, len(ids), step):
            part = ids[i:i + step]
            found = await conn_.get(entity, part)
            seen = {r.id for r in found}
            gone = [Record(id=x, fields={}, deleted=True) for x in part if x not in seen]
            seq = await self._stage_page(side, found + gone, seq, pushed)
        return seq

    async def _stage_page(self, side: Side, page: list[Record], seq: int,
                          pushed: set[str]) -> int:
        paths = self.flow.read_paths[side]
        mapped_paths = self.flow.base_paths[side]
        async with self.db.begin() as conn:
            ex = await q.excluded(conn, self.integration, self.flow.name, side,
                                  [r.id for r in page])
            rows, keys = [], []
            unreadable: list[Record] = []
            for rec in page:
                seq += 1
                if rec.error is not None:
                    # a record the connector could not read (Record.error): staged as left
                    # out, so it is neither merged from fields it does not have nor taken for
                    # deleted by a complete listing; a record error, read again next run
                    unreadable.append(rec)
                    rows.append(dict(
                        run_id=self.run_id, flow=self.flow.name, side=side, record_id=rec.id,
                        seq=seq, modified=None, deleted=False, passes=False, excluded=True,
                        pushed=False, data=dumps({}), hash=value_hash(mapped_paths, {})))
                    continue
                data = mapped(paths, rec.fields)
                deleted = rec.deleted or is_soft_deleted(self.rules, side, rec.fields)
                rows.append(dict(
                    run_id=self.run_id, flow=self.flow.name, side=side, record_id=rec.id,
                    seq=seq, modified=iso(rec.modified), deleted=deleted,
                    passes=holds(self.rules.filter.get(side, []), rec.fields),
                    excluded=rec.id in ex, pushed=rec.id in pushed, data=dumps(data),
                    hash=value_hash(mapped_paths, rec.fields)))
                if rec.id in ex:
                    self.c["excluded"] += 1
                for i, key in enumerate(self.rules.match):
                    value = normalize(key.normalize, rec.fields.get(getattr(key, side)))
                    if value is not None:
                        keys.append(dict(run_id=self.run_id, flow=self.flow.name, side=side,
                                         record_id=rec.id, key=str(i), value=value))
            await q.stage(conn, rows, keys)
        fresh = [r for r in unreadable if r.id not in self.unreadable[side]]
        if fresh:                       # once per step (a record may be staged twice)
            batch = Batch(self)
            for rec in fresh:
                self.unreadable[side].add(rec.id)
                batch.error(side, rec.id, rec.error or "")
            await batch.commit()
        return seq

    async def _stage_unseen(self, side: Side, seq: int) -> None:
        """A complete listing: linked records it did not return are gone from that side."""
        after = 0
        while True:
            async with self.db.begin() as conn:
                rows = await q.unseen_links(conn, self.run_id, self.integration,
                                            self.flow.name, side, 500, after)
            if not rows:
                return
            after = rows[-1]["id"]
            ids = [r[f"{side}_id"] for r in rows]
            seq = await self._stage_page(side, [Record(id=i, fields={}, deleted=True)
                                                for i in ids], seq, set())

    # --- the circuit-breaker --------------------------------------------------------------
    async def _check_breaker(self) -> None:
        async with self.db.begin() as conn:
            total = await q.count_links(conn, self.integration, self.flow.name)
            deletes = await q.count_staged_deletes(conn, self.run_id, self.integration,
                                                   self.flow.name)
            self.held = await q.held_links(conn, self.integration, self.flow.name)
        empty = [s for s in ("left", "right") if self.listed_empty[s]]
        limit = max(self.rules.delete_threshold_min, self.rules.delete_threshold * total)
        if total and (empty or deletes > limit):
            self.hold_deletes = True
            why = (f"the {' and '.join(empty)} side listed no records at all" if empty else
                   f"{deletes} of {total} links would be deleted or marked "
                   f"(threshold {self.rules.delete_threshold:.0%})")
            self.result.message = f"deletes held: {why}; run `accord approve` to let them go"
            self.log.warning("deletes.held", reason=why, deletes=deletes, links=total)

    # --- decisions ------------------------------------------------------------------------
    async def _linked(self) -> None:
        for side in ("left", "right"):     # a pair met from the left is unstaged on commit
            await self._linked_side(side)

    async def _linked_side(self, side: Side) -> None:
        after = 0
        while True:
            async with self.db.begin() as conn:
                units = await q.staged_linked_chunk(conn, self.run_id, self.integration,
                                                    self.flow.name, side, after, CHUNK)
            if not units:
                return
            after = units[-1]["seq"]
            batch = Batch(self)
            ctx = await self._context(units)
            sem = asyncio.Semaphore(self.rules.concurrency)

            async def one(unit):
                async with sem:
                    await pairs.linked_unit(self, batch, unit, ctx)
            results = await asyncio.gather(*(one(u) for u in units), return_exceptions=True)
            crash = [r for r in results if isinstance(r, BaseException)
                     and not isinstance(r, Exception)]
            if crash:
                raise crash[0]
            await batch.commit()
            self._tick()
            for r in results:
                if isinstance(r, Exception):
                    raise r

    async def _unlinked(self, side: Side) -> None:
        after = 0
        while True:
            async with self.db.begin() as conn:
                recs = await q.staged_unlinked_chunk(conn, self.run_id, self.integration,
                                                     self.flow.name, side, after, CHUNK)
            if not recs:
                return
            after = recs[-1]["seq"]
            batch = Batch(self)
            ctx = await self._context([{side: r} for r in recs])
            try:
                await create.unlinked_chunk(self, batch, side, recs, ctx)
            except Exception:
                await batch.commit()    # keep what was created before the fault
                raise
            await batch.commit()
            self._tick()

    async def _context(self, units: list[dict]) -> Context:
        """Reference lists, and the link maps that translate this chunk's reference fields."""
        ctx = Context(options={})
        for side in ("left", "right"):
            ctx.options.update(self.reference.get(side, {}))
        for fld in self.flow.fields:
            if not fld.ref:
                continue
            for side in ("left", "right"):
                values = [u[side]["data"].get(fld.path(side)) for u in units
                          if u.get(side) and u[side]["data"].get(fld.path(side))]
                values += [q.decode_base(u["link"], side).get(fld.path(side)) for u in units
                           if "link" in u]
                values = [v for v in values if v]
                async with self.db.begin() as conn:
                    ctx.options[(fld.ref, side)] = await q.link_map(
                        conn, self.integration, fld.ref, side, values)
        return ctx

    # --- crash recovery -------------------------------------------------------------------
    async def _resolve_intents(self) -> None:
        async with self.db.begin() as conn:
            pending = await q.pending_intents(conn, self.integration, self.flow.name)
        if pending:
            batch = Batch(self)
            for intent in pending:
                await create.resolve_intent(self, batch, intent)
            await batch.commit()

    async def _approved_holds(self) -> None:
        async with self.db.begin() as conn:
            rows = await q.approved_holds(conn, self.integration, self.flow.name)
        if rows:
            batch = Batch(self)
            for row in rows:
                await pairs.approved_delete(self, batch, row)
            await batch.commit()
