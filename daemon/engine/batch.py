"""A chunk's store changes (committed in one transaction) and the write helpers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connectors.base import NotFoundError, Record, RecordError
from daemon.engine.flow import mapped, value_hash
from daemon.engine.merge import Decision
from daemon.engine.rules import Side, other
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
    return step.flow.base_paths[side]


def after_write(before: dict, written: dict, stored: Record) -> dict:
    """The new base after a partial write: the system's stored value for the fields written,
    the values decided on for the rest. Taking the whole response would absorb an edit made
    there meanwhile to a field we did not write, and lose it."""
    out = dict(before)
    for path, value in written.items():
        out[path] = stored.fields.get(path, value)
    return out


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


def _aborts(exc: BaseException) -> bool:
    from connectors.base import AuthError, UnavailableError
    return isinstance(exc, (AuthError, UnavailableError))


def _dumps(v) -> str:
    from daemon.store.db import dumps
    return dumps(v)
