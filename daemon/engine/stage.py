"""Reading both sides into the ``staged`` table, page by page, and the cursor to keep.

Each side's changes since its cursor (less the overlap) are streamed in, with the records to
read again by id (failed writes, lifted exclusions, pushes). A complete listing also stages,
as deleted, every linked record it did not return. The signpost (the vendor's clock before the
read) bounds the cursor: see ``cursor.py``. A record the store or the other system could not
hold (a NUL character, text that is not valid Unicode) is not staged: it becomes a per-record
error and the step goes on. A record the connector could not read (``Record.error``) is a
per-record error too, and is staged as left out (``excluded``): nothing is planned from fields
it does not have, and a complete listing does not take its linked record for deleted (the
partner stays as it is). Each record fails at most once a step, though it may be read twice
(listed, then read again by id). A listed record equal to its linked base is staged quiet
(``q.OUTSIDE_CHUNKS``, see ``page``): in no chunk, decided only with a partner that
changed.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, TypeVar

from connectors.base import Record, system_clock, system_count, utc
from daemon.engine.actions import Fail
from daemon.engine.context import StepContext
from daemon.engine.cursor import Cursor, Progress
from daemon.engine.related import named_by_related
from daemon.engine.derive import Deriver
from daemon.engine.flow import holds, is_soft_deleted, iso, mapped, value_hash
from daemon.engine.rules import Side
from daemon.engine.seen import SeenIds
from daemon.engine.transforms import key_value
from daemon.store import queries as q
from daemon.store.db import dumps

T = TypeVar("T")
MAX_FAILS = 10_000      # per step: beyond this, bad records are counted, not listed
CHUNK_KEYS = 2_000      # quiet records whose keys are computed at once (``keys_ready``)


class Staging:
    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.seq = 0
        self.fails: list[Fail] = []
        self._failed: set[tuple[Side, str]] = set()
        # kept in each side's cursor besides (at, ids): the batch progress, related cursors
        self.notes: dict[Side, dict[str, Any]] = {}
        self.derivers: dict[Side, Deriver] = {
            side: Deriver(spec) for side, spec in ctx.flow.rules.derive.items()}
        self._seen: dict[Side, SeenIds] = {}        # ids staged so far, by side
        # a listing's page goes into the store while the side reads and parses the next
        # (``page(behind=True)``): each side has at most one page on its way in, in order
        self._writing: dict[Side, asyncio.Future] = {}
        # SQLite has one writer at a time: the two sides' pages take turns here rather than
        # in SQLite's busy handler, which sleeps in steps of milliseconds
        self._turn = asyncio.Lock() if ctx.db.dialect.name == "sqlite" else None
        # sides whose listing may stage a record equal to its linked base as quiet (see
        # ``_quiet_allowed``), and how many it staged so
        self._quiet_ok: dict[Side, bool] = {}
        self.quiet: dict[Side, int] = {"left": 0, "right": 0}
        # sides with quiet records whose match keys are not staged yet (``keys_ready``)
        self._keyless: dict[Side, bool] = {"left": False, "right": False}

    @staticmethod
    def _within(page: list[Record], start: Cursor, budget: int) -> list[Record]:
        """The head of an ordered page that fits the batch's budget of new records."""
        out = []
        for rec in page:
            if budget <= 0:
                break
            out.append(rec)
            if _new_ground(start, utc(rec.modified) if rec.modified else None, rec.id):
                budget -= 1
        return out

    @staticmethod
    async def _waiting(conn_, entity: str, since, staged: int, pages) -> int:
        """Records still waiting after a batch: counted by the system where it can say so
        cheaply, else by reading on (counting only, nothing staged)."""
        total = await system_count(conn_, entity, since)
        if total is not None:
            return max(0, total - staged)
        # the page cut short is not known here: count what the listing still yields
        waiting = 0
        async for page in pages:
            waiting += len(page)
        return waiting

    async def side(self, side: Side) -> Cursor | None:
        """Stage one side; the cursor to store after the step (None: keep the old one)."""
        ctx = self.ctx
        conn_ = ctx.sides[side]
        rules = ctx.flow.rules
        entity = rules.entity(side)
        info = conn_.capabilities.entities[entity]
        async with ctx.db.begin() as conn:
            stored = None if ctx.options.full else await q.get_cursor(
                conn, ctx.integration, ctx.flow.name, side)
            revisit = await q.revisit_ids(conn, ctx.integration, ctx.flow.name, side)
            pushed = await q.take_pushes(conn, ctx.integration, ctx.flow.name, side)
        if ctx.options.only is not None:
            ids = ctx.options.only.get(side, [])
            if ids:
                await self.by_id(side, entity, ids, pushed=set(pushed))
            return None
        start = Cursor.load(stored)
        since = start.since(rules.overlap_seconds) if info.incremental else None
        now = await system_clock(conn_)
        signpost = None if now is None else utc(now) - timedelta(seconds=rules.clock_skew_seconds)
        progress = Progress(start, signpost)
        limit = rules.batch_size if rules.batch_size and info.ordered and \
            rules.batch_on in (None, side) else None
        taken, staged, cut, seen_any, full_budget = 0, 0, False, False, False
        pages = conn_.changes(entity, since)
        if limit is None:               # a batch may stop early: no page asked for in vain
            pages = read_ahead(pages)
        self._quiet_ok[side] = await self._quiet_allowed()
        try:
            async for page in pages:
                if not page:
                    continue
                seen_any = True
                if limit is not None:
                    page = self._within(page, start, limit - taken)
                self.delivered(side, info.feed, page)
                await self.derived(side, page, set(), behind=True)
                staged += len(page)
                ctx.counts[f"read_{side}"] += len(page)
                for rec in page:
                    m = utc(rec.modified) if rec.modified else None
                    progress.observe(m, rec.id)
                    if _new_ground(start, m, rec.id):
                        taken += 1
                ctx.tick()
                if limit is not None and taken >= limit:
                    full_budget = True
                    break
        except BaseException:
            await self._let_go(side)
            raise
        finally:
            self._quiet_ok[side] = False    # reads by id are always decided
        await self._written(side)           # the listing's last page is in
        waiting = 0
        if full_budget:
            waiting = await self._waiting(conn_, entity, since, staged, pages)
            cut = waiting > 0
        notes = self.notes.setdefault(side, {})
        if cut:
            before = int(((stored or {}).get("batch") or {}).get("done", 0))
            notes["batch"] = {"done": before + taken}
            ctx.reading.batches[side] = (taken, waiting, before)
        elif stored and stored.get("batch"):
            ctx.reading.batches[side] = (taken, 0, int(stored["batch"].get("done", 0)))
        # a feed (a queue) never lists everything: what was acknowledged is not in it
        whole = (not full_budget and (since is None or not info.incremental)
                 and not info.feed)
        # a listing that returned nothing at all is not trusted to prove that no partner
        # exists (a wrong account, an outage answering 200): matching asks find() instead
        ctx.reading.complete[side] = whole and seen_any
        ctx.reading.listed_empty[side] = whole and not seen_any
        ctx.reading.cut = ctx.reading.cut or cut
        if progress.future:
            ctx.log.info("cursor.future_records", side=side, records=progress.future,
                         signpost=iso(signpost))
        named, notes["related"] = await named_by_related(
            conn_, rules, side, stored, signpost, catch_up=since is None)
        if not notes["related"]:
            notes.pop("related")
        ctx.reading.reread[side] = set(revisit)
        if named:                       # those the listing staged already are not read twice
            async with ctx.db.begin() as conn:
                there = await q.staged_ids(conn, ctx.run_id, ctx.flow.name, side, named)
            named = [i for i in named if i not in there]
        extra = list(dict.fromkeys(revisit + pushed + named))
        if extra:
            await self.by_id(side, entity, extra, pushed=set(pushed))
        if whole:
            await self.unseen(side)
        return progress.finish(cut)

    async def _quiet_allowed(self) -> bool:
        """Whether a listing may stage a record that equals its linked base as quiet: its
        pair is then decided only if the other side's record is one to decide, and is
        otherwise unchanged, as the planner would decide it (``plan_pair``'s ``Unchanged``).
        Not when a pair's plan could be anything else whatever its values: an enforced field,
        a held delete, or record errors to settle (an unchanged record settles its retried
        refusals)."""
        ctx = self.ctx
        if ctx.options.enforce or (await ctx.record_state()).may("errors"):
            return False
        async with ctx.db.begin() as conn:
            return not await q.held_links(conn, ctx.integration, ctx.flow.name)

    async def by_id(self, side: Side, entity: str, ids: list[str], pushed: set[str]) -> None:
        conn_ = self.ctx.sides[side]
        deriver = self.derivers.get(side)
        wanted = ids
        if deriver is not None:             # derived ids: their parents are read again
            wanted = deriver.parent_ids(ids)
        step = max(1, conn_.capabilities.max_get)
        for i in range(0, len(wanted), step):
            part = wanted[i:i + step]
            found = await conn_.get(entity, part)
            self.delivered(side, conn_.capabilities.entities[entity].feed, found)
            seen = {r.id for r in found}
            gone = [Record(id=x, fields={}, deleted=True) for x in part if x not in seen]
            if deriver is None:
                await self.page(side, found + gone, pushed)
            else:
                await self.derived(side, found + gone, pushed, asked=ids)

    def delivered(self, side: Side, feed: bool, page: list[Record]) -> None:
        """A feed's records read this step, with the version acknowledging them needs."""
        if feed:
            mine = self.ctx.reading.feed[side]
            for rec in page:
                if not rec.deleted or rec.id not in mine:
                    mine[rec.id] = rec.version

    async def derived(self, side: Side, page: list[Record], pushed: set[str],
                      asked: list[str] = (), behind: bool = False) -> None:
        """Stage ``page`` as it is, or what its records derive (derive.py): the derived
        records, and tombstones for the linked ones their parents no longer list."""
        deriver = self.derivers.get(side)
        if deriver is None:
            await self.page(side, page, pushed, behind)
            return
        ctx = self.ctx
        records, known = deriver.expand(page)
        made = {r.id for r in records}
        gone: list[str] = []
        if known:
            async with ctx.db.begin() as conn:
                gone = await q.derived_ids(conn, ctx.integration, ctx.flow.name, side, known)
        parents = set(known)
        gone += [x for x in asked if deriver.parent_ids([x])[0] in parents]
        gone = [x for x in dict.fromkeys(gone) if x not in made]
        await self.page(side, records + [Record(id=x, fields={}, deleted=True) for x in gone],
                        pushed, behind)

    async def page(self, side: Side, page: list[Record], pushed: set[str],
                   behind: bool = False) -> None:
        """Stage one page. ``behind``: its rows go into the store while the caller goes on
        (the next page is read and parsed meanwhile); ``_written`` waits for them. Else
        they are in when this returns."""
        ctx = self.ctx
        rules = ctx.flow.rules
        paths = ctx.flow.read_paths[side]
        base_paths = ctx.flow.base_paths[side]
        excluding = (await ctx.record_state()).may("exclusions")
        quiet_ok = behind and self._quiet_ok.get(side, False)
        ex: dict = {}
        bases: dict[str, tuple[str, str, int]] = {}
        if excluding or quiet_ok:
            async with ctx.db.begin() as conn:
                if excluding:
                    ex = await q.excluded(conn, ctx.integration, ctx.flow.name, side,
                                          [_safe(r.id) for r in page])
                if quiet_ok:
                    bases = await q.link_digests(conn, ctx.integration, ctx.flow.name, side,
                                                 [r.id for r in page if not r.error])
        rows, keys = [], []
        for rec in page:
            if rec.error:
                self.fail(side, rec.id, rec.error)
                self.seq += 1
                rows.append(dict(
                    run_id=ctx.run_id, flow=ctx.flow.name, side=side,
                    record_id=_safe(rec.id), seq=self.seq, modified=None, deleted=False,
                    passes=False, excluded=True, pushed=False, data=dumps({}),
                    hash=value_hash(base_paths, {}), version=None))
                continue
            data = mapped(paths, rec.fields)
            text, bad = _stored(data)
            if bad:
                self.fail(side, rec.id, bad)
                continue
            self.seq += 1
            deleted = rec.deleted or is_soft_deleted(rules, side, rec.fields)
            passes = holds(rules.filter.get(side, []), rec.fields)
            digest = value_hash(base_paths, rec.fields)
            seq = self.seq
            if (bases and bases.get(rec.id) == ("ok", digest, len(base_paths)) and passes
                    and not deleted and rec.id not in ex and rec.id not in pushed
                    and all(p in rec.fields for p in base_paths)):
                # equal to its base, field for field, both whole (a field one of them lacks
                # is unknown there, not empty): decided only with its partner
                seq = q.OUTSIDE_CHUNKS
                self.quiet[side] += 1
            rows.append(dict(
                run_id=ctx.run_id, flow=ctx.flow.name, side=side, record_id=rec.id,
                seq=seq, modified=iso(rec.modified), deleted=deleted, passes=passes,
                excluded=rec.id in ex, pushed=rec.id in pushed, data=text,
                hash=digest, version=rec.version))
            if rec.id in ex:
                ctx.counts["excluded"] += 1
            if seq == q.OUTSIDE_CHUNKS:     # its keys when matching needs them: ``keys_ready``
                self._keyless[side] = True
                continue
            keys += self._keys(side, rec.id, rec.fields)
        seen = self._seen.get(side)
        if seen is None:
            seen = self._seen[side] = SeenIds()
        replace = seen.add(r["record_id"] for r in rows)
        # the side's previous page first: a record read twice keeps its latest reading
        await self._written(side)
        self._writing[side] = asyncio.ensure_future(self._store(rows, keys, replace))
        if not behind:
            await self._written(side)

    def _keys(self, side: Side, record_id: str, values: dict[str, Any]) -> list[dict]:
        """The staged rows of a record's match keys (a key it has no value for has none)."""
        ctx = self.ctx
        return [dict(run_id=ctx.run_id, flow=ctx.flow.name, side=side, record_id=record_id,
                     key=str(i), value=value)
                for i, key in enumerate(ctx.flow.rules.match)
                if (value := key_value(key, side, values)) is not None]

    async def keys_ready(self) -> None:
        """The match keys of the quiet records, staged: matching needs them before it looks a
        record's partners up (a quiet record is a candidate, linked: a review, never a
        copy). A listing stages a quiet record without them, as most steps that read quiet
        records match nothing (a full read of a synced pair); the first look-up of the step
        computes them from the staged values, which hold every path a key reads."""
        ctx = self.ctx
        for side in ("left", "right"):
            if not self._keyless[side]:
                continue
            self._keyless[side] = False
            after = ""
            while True:
                async with ctx.db.begin() as conn:
                    rows = await q.staged_outside(conn, ctx.run_id, ctx.flow.name, side,
                                                  after, CHUNK_KEYS)
                if not rows:
                    break
                after = rows[-1][0]
                keys = [k for rid, data in rows for k in self._keys(side, rid, data)]
                async with ctx.db.begin() as conn:
                    await q.add_staged_keys(conn, keys)

    async def _store(self, rows: list[dict], keys: list[dict], replace: list[str]) -> None:
        if self._turn is None:
            async with self.ctx.db.begin() as conn:
                await q.stage(conn, rows, keys, replace=replace)
            return
        async with self._turn:
            async with self.ctx.db.begin() as conn:
                await q.stage(conn, rows, keys, replace=replace)

    async def _written(self, side: Side) -> None:
        """The side's page on its way into the store is in; its failure is raised here."""
        writing = self._writing.pop(side, None)
        if writing is not None:
            await writing

    async def _let_go(self, side: Side) -> None:
        """The side's reading failed or was cancelled: the page on its way in is let go (its
        transaction rolls back) and the reading's own fault stands."""
        writing = self._writing.pop(side, None)
        if writing is not None:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)

    def fail(self, side: Side, record_id: str, message: str) -> None:
        key = (side, _safe(record_id))
        if key in self._failed:         # read twice in this step: one error
            return
        if len(self.fails) < MAX_FAILS:
            self._failed.add(key)
            self.fails.append(Fail(side, key[1], message))
        else:
            self.ctx.counts["errors"] += 1

    async def unseen(self, side: Side) -> None:
        """A complete listing: linked records it did not return are gone from that side."""
        ctx = self.ctx
        after = 0
        while True:
            async with ctx.db.begin() as conn:
                rows = await q.unseen_links(conn, ctx.run_id, ctx.integration, ctx.flow.name,
                                            side, 500, after)
            if not rows:
                return
            after = rows[-1]["id"]
            await self.page(side, [Record(id=r[f"{side}_id"], fields={}, deleted=True)
                                   for r in rows], set())


async def read_ahead(pages: AsyncIterator[T]) -> AsyncIterator[T]:
    """The pages of a listing (or a step's chunks), each next one asked for while the caller
    works on the one it has: the system's (or the store's) answer time overlaps accord's own
    work. One ahead at most, so memory stays one page; an error reading one is raised where
    that one is wanted; leaving early cancels the one asked for."""
    listing = aiter(pages)

    async def following() -> list[Record]:
        return await anext(listing)

    ahead = asyncio.ensure_future(following())
    try:
        while True:
            try:
                page = await ahead
            except StopAsyncIteration:
                ahead = None
                return
            ahead = asyncio.ensure_future(following())
            yield page
    finally:
        if ahead is not None:           # left early: the page asked for is not wanted
            ahead.cancel()
            try:
                await ahead
            except (asyncio.CancelledError, Exception):
                pass
        close = getattr(listing, "aclose", None)
        if close is not None:
            await close()


def _new_ground(start: Cursor, modified, record_id: str) -> bool:
    """A record past the cursor: not one re-read from the overlap window or its boundary,
    so it counts toward a batch's budget."""
    if start.at is not None and modified is not None and modified < start.at:
        return False
    return not start.seen(modified, record_id)


def _stored(data: dict[str, Any]) -> tuple[str, str | None]:
    """The JSON text a record's values are staged as, and why they cannot be (``unstorable``)
    or None. The encoder refuses text that is not valid Unicode, and a NUL shows in its
    output: only then are the values looked at one by one."""
    try:
        text = dumps(data)
    except TypeError:                   # orjson's refusal of a lone surrogate
        bad = unstorable(data)
        if bad:
            return "", bad
        raise
    if "\\u0000" in text:
        bad = unstorable(data)
        if bad:
            return "", bad
    return text, None


def unstorable(data: dict[str, Any]) -> str | None:
    """Why a record's values cannot be kept or sent (NUL, text that is not Unicode), or None."""
    for path, value in data.items():
        if isinstance(value, str):
            if "\x00" in value:
                return f"{path} holds a NUL character, which no system here can store"
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{path} holds text that is not valid Unicode"
    return None


def _safe(record_id: str) -> str:
    """An id as the state can keep it."""
    return record_id.replace("\x00", "\\x00") if "\x00" in record_id else record_id
