"""A chunk's unit of work: the store changes its actions made, committed in one transaction.

A dry run commits only the staging bookkeeping (what was decided is not decided twice); a
real run also writes links, audit rows, record errors, reviews, holds and intents.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Iterable
from typing import Any

from daemon.engine.context import StepContext
from daemon.engine.rules import Side
from daemon.store import queries as q
from daemon.store.db import dumps, now


def _sides() -> dict[Side, list]:
    return {"left": [], "right": []}


@dataclass
class UnitOfWork:
    ctx: StepContext
    inserts: list[dict] = field(default_factory=list)
    updates: list[dict] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)
    audit: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    cleared: dict[Side, list[str]] = field(default_factory=_sides)
    settled: dict[Side, list[str]] = field(default_factory=_sides)
    reviews: list[dict] = field(default_factory=list)
    holds: list[dict] = field(default_factory=list)
    done_intents: dict[Side, list[str]] = field(default_factory=_sides)
    done_pushes: dict[Side, list[str]] = field(default_factory=_sides)
    dropped_holds: list[int] = field(default_factory=list)
    handled: dict[Side, list[str]] = field(default_factory=_sides)
    removed: dict[Side, list[str]] = field(default_factory=_sides)     # deleted or marked
    parked: dict[Side, list[tuple[str, str]]] = field(default_factory=_sides)
    rereads: list[tuple[Side, str]] = field(default_factory=list)

    async def commit(self) -> None:
        c = self.ctx
        i, f = c.integration, c.flow.name
        state = None if c.options.dry_run else await c.record_state()
        async with c.db.begin() as conn:
            for side in ("left", "right"):
                # decided in this chunk: not to be met again by a later chunk of this step
                await q.unstage(conn, c.run_id, f, side, self.handled[side])
                await q.drop_staged(conn, c.run_id, f, side, self.removed[side])
            if c.options.dry_run:
                return
            await q.delete_links(conn, self.deletes)
            await q.update_links(conn, self.updates)
            await q.insert_links(conn, self.inserts)
            await q.add_audit(conn, self.audit)
            await q.add_rereads(conn, i, f, self.rereads)
            assert state is not None
            if self.errors:
                state.add("errors", "quarantined")
            if self.reviews:
                state.add("reviews")
            if any(self.parked.values()):
                state.add("parked")
            for side in ("left", "right"):
                if state.may("errors"):
                    await q.clear_errors(conn, i, f, side, self.cleared[side])
                    await q.clear_errors(conn, i, f, side, self.settled[side],
                                         only_retry=True)
                if state.may("reviews"):
                    await q.clear_reviews(conn, i, f, side, self.cleared[side])
                if state.may("parked"):
                    await q.unpark(conn, i, f, side, self.cleared[side])
                await q.park(conn, i, f, side, self.parked[side])
                await q.drop_intents(conn, i, f, side, self.done_intents[side])
                await q.drop_pushes(conn, i, f, side, self.done_pushes[side])
            await q.record_errors(conn, self.errors, c.flow.rules.quarantine_after)
            await q.set_reviews(conn, self.reviews)
            await q.hold(conn, self.holds)
            await q.drop_holds(conn, self.dropped_holds)

    def error(self, side: Side, record_id: str, message: str, retry: bool = True,
              hash: str | None = None) -> None:
        c = self.ctx
        c.counts["errors"] += 1
        c.reading.unsettled.add((side, record_id))
        if not c.reading.first_error:
            c.reading.first_error = f"{side} {record_id}: {message}"[:300]
        c.log.error("record.error", side=side, record=record_id, error=message)
        self.errors.append(dict(integration=c.integration, flow=c.flow.name, side=side,
                                record_id=record_id, message=message[:2000], retry=retry,
                                run_id=c.run_id, updated_at=now(), hash=hash))

    def audit_write(self, side: Side, record_id: str,
                    fields: Iterable[tuple[str, Any, Any, str]],
                    at: datetime | None = None) -> None:
        """The audit row of one write: each field it wrote as (path, old value, new value,
        rule); ``at``: the time of the write, now if not given."""
        c = self.ctx
        self.audit.append(dict(
            run_id=c.run_id, integration=c.integration, flow=c.flow.name, side=side,
            record_id=record_id, at=at or now(),
            fields=dumps([{"field": p, "old": o, "new": n, "rule": r} for p, o, n, r in fields])))
