"""What the planner decides, as values: applying executes them, a plan shows them.

Every decision the engine takes about one record or one linked pair is one of these frozen
objects. ``plan.py`` makes them without I/O; ``apply.py`` carries them out; ``accord plan`` and
``sync --dry-run`` print the same list without carrying it out, so a preview is exactly what a
run will do. ``tally`` counts an action the same way for both.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Union

from daemon.engine.merge import Conflict, Refusal, Violation
from daemon.engine.rules import Side


@dataclass(frozen=True)
class Write:
    """A partial update of one record: ``values`` over ``current`` (the record as read)."""
    side: Side
    id: str
    values: dict[str, Any]
    current: dict[str, Any]
    why: dict[str, str]                          # path -> the rule that decided it
    version: str | None = None                   # as read, for a conditional write
    report_on: tuple[Side, str] | None = None    # where a refused value is reported


@dataclass(frozen=True)
class Update:
    """A linked pair merged: writes to either side, then both bases move."""
    link_id: int
    ids: dict[Side, str]
    writes: tuple[Write, ...]
    current: dict[Side, dict[str, Any]]          # each side's values (staged, or the base)
    state: str
    seen: tuple[tuple[Side, str], ...]           # the staged records it settles
    versions: dict[Side, str | None]             # as read (or as last written)
    conflicts: tuple[Conflict, ...] = ()
    violations: tuple[Violation, ...] = ()
    refusals: tuple[Refusal, ...] = ()


@dataclass(frozen=True)
class Link:
    """Two unlinked records matched by natural key: linked, their differences decided."""
    ids: dict[Side, str]
    writes: tuple[Write, ...]
    current: dict[Side, dict[str, Any]]
    versions: dict[Side, str | None]
    conflicts: tuple[Conflict, ...] = ()
    violations: tuple[Violation, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    pushed: tuple[tuple[Side, str], ...] = ()


@dataclass(frozen=True)
class Create:
    """A new record in ``target`` from an unlinked ``source`` record (an intent first)."""
    source: Side
    source_id: str
    target: Side
    fields: dict[str, Any]
    source_values: dict[str, Any]
    intent: dict[str, Any]                       # how to find it again if the answer is lost
    pushed: bool = False
    waits_for: tuple[str, ...] = ()              # records this run creates first (a plan)
    refusals: tuple[Refusal, ...] = ()           # fields left out, reported on the source
    revert: dict[str, Any] = field(default_factory=dict)   # the write-back it should need
    source_version: str | None = None


@dataclass(frozen=True)
class Recreate:
    """An owned record deleted on the other side, re-created there (ownership ``revert``)."""
    link_id: int
    target: Side                                 # where it is created again
    owner_id: str
    fields: dict[str, Any]
    owner_values: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    link_id: int
    target: Side
    target_id: str
    gone_id: str                                 # the record deleted on the other side
    edited: bool = False                         # the survivor was edited: the delete wins


@dataclass(frozen=True)
class Mark:
    """A delete carried over as a flag on the survivor (``delete = mark``)."""
    link_id: int
    target: Side
    target_id: str
    gone_id: str
    values: dict[str, Any]
    current: dict[str, Any]


@dataclass(frozen=True)
class Unlink:
    """Forget the pair, keep both records: ``delete = unlink``, a filter exit, both deleted."""
    link_id: int
    ids: dict[Side, str]
    reason: str                                  # deleted | filtered | both deleted


@dataclass(frozen=True)
class Tombstone:
    """Keep the pair, one side gone, nothing written (``delete = ignore``, or a delete of a
    record the other side owns under ``ownership = ignore``)."""
    link_id: int
    gone: Side
    gone_id: str
    reason: str


@dataclass(frozen=True)
class Hold:
    """A delete or mark the circuit-breaker holds until ``accord approve``."""
    link_id: int
    target: Side
    target_id: str
    action: str
    new: bool = True


@dataclass(frozen=True)
class DropHold:
    """A held delete whose record turned out to be there after all, or whose target was
    deleted meanwhile (nothing left to hold: the deletion is planned as any other)."""
    hold_id: int
    record_id: str
    reason: str = "seen again"


@dataclass(frozen=True)
class Review:
    """An ambiguous match: never merged; shown until a person resolves it. ``mark`` parks the
    record (not looked up again while it and the rules stay the same)."""
    side: Side
    id: str
    candidates: tuple[str, ...]
    reason: str
    mark: str = ""


@dataclass(frozen=True)
class Park:
    """No partner and no create: not looked up again while the record and the rules stay."""
    side: Side
    id: str
    mark: str
    reason: str


@dataclass(frozen=True)
class Unchanged:
    """A pair whose records equal their bases: nothing to write; open refusals still stand."""
    seen: tuple[tuple[Side, str], ...]


@dataclass(frozen=True)
class Fail:
    """A per-record error decided without writing (a value with no linked partner yet, a
    value no system can store)."""
    side: Side
    id: str
    message: str
    retry: bool = True


@dataclass(frozen=True)
class Skip:
    """Counted only: filtered, excluded, quarantined, a create held back."""
    side: Side
    id: str
    reason: str


@dataclass(frozen=True)
class Recover:
    """A create whose outcome was unknown, found again: linked, not created twice."""
    source: Side
    source_id: str
    target: Side
    found: str | None                            # the record found, or None: nothing was made
    candidates: tuple[str, ...] = ()             # several: a person decides
    reason: str = ""
    source_base: dict[str, Any] = field(default_factory=dict)   # as the create was decided
    unresolvable: bool = False                   # nothing to look it up by: kept, reviewed
    found_fields: dict[str, Any] = field(default_factory=dict)
    target_base: dict[str, Any] = field(default_factory=dict)
    revert: dict[str, Any] = field(default_factory=dict)
    source_gone: bool = False                    # deleted since: nothing to write back to


Action = Union[Update, Link, Create, Recreate, Delete, Mark, Unlink, Tombstone, Hold, DropHold,
               Review, Park, Unchanged, Fail, Skip, Recover]


def tally(action: Action, counts: Counter) -> None:
    """The step counts an action adds when it is carried out (or would be, in a plan)."""
    match action:
        case Update(writes=writes, conflicts=c, violations=v, refusals=r):
            for w in writes:
                counts[f"updated_{w.side}"] += 1
            counts["conflicts"] += len(c)
            counts["ownership"] += len(v)
            counts["errors"] += len(r)
        case Link(writes=writes, conflicts=c, violations=v, refusals=r):
            counts["matched"] += 1
            for w in writes:
                counts[f"updated_{w.side}"] += 1
            counts["conflicts"] += len(c)
            counts["ownership"] += len(v)
            counts["errors"] += len(r)
        case Create(target=target, refusals=r, revert=revert, source=source):
            counts[f"created_{target}"] += 1
            counts["errors"] += len(r)
            if revert:
                counts[f"updated_{source}"] += 1
        case Recreate():
            counts["ownership"] += 1
            counts["recreated"] += 1
        case Delete():
            counts["deleted"] += 1
        case Mark():
            counts["marked"] += 1
        case Unlink(reason=reason):
            counts["dropped" if reason == "both deleted" else "unlinked"] += 1
        case Tombstone(reason=reason):
            counts["ownership" if reason == "ownership" else "delete_ignored"] += 1
        case Hold():
            counts["held"] += 1
        case Review():
            counts["review"] += 1
        case Park(reason=reason):
            counts[reason] += 1
        case Unchanged():
            counts["unchanged"] += 1
        case Fail():
            counts["errors"] += 1
        case Skip(reason=reason):
            counts[reason] += 1
        case Recover(found=found, candidates=cands, unresolvable=unresolvable,
                     revert=revert, source=source):
            if found is not None:
                counts["recovered"] += 1
                if revert:
                    counts[f"updated_{source}"] += 1
            elif cands or unresolvable:
                counts["review"] += 1


def describe(action: Action) -> dict[str, Any] | None:
    """One row of a plan (``accord plan``), or None for what a plan does not list."""
    match action:
        case Update(writes=writes, link_id=link_id):
            if not writes:
                return None
            rows = [{"action": "update", "side": w.side, "id": w.id, "fields": w.values}
                    for w in writes]
            return rows[0] if len(rows) == 1 else {"action": "update", "link": link_id,
                                                    "writes": rows}
        case Link(ids=ids, writes=writes, current=current):
            # the linked data: both records as read, so a preview shows what is paired (BB-3)
            return {"action": "link", "left": ids["left"], "right": ids["right"],
                    "writes": [{"side": w.side, "id": w.id, "fields": w.values}
                               for w in writes],
                    "data": {s: dict(v) for s, v in current.items()}}
        case Create(target=t, source_id=src, fields=f, waits_for=w):
            row: dict[str, Any] = {"action": "create", "side": t, "from": src, "fields": f}
            if w:
                row["waits_for"] = list(w)
            return row
        case Recreate(target=t, owner_id=src, fields=f):
            return {"action": "recreate", "side": t, "from": src, "fields": f}
        case Delete(target=t, target_id=i):
            return {"action": "delete", "side": t, "id": i}
        case Mark(target=t, target_id=i, values=v):
            return {"action": "mark", "side": t, "id": i, "fields": v}
        case Unlink(ids=ids, reason=r):
            return {"action": "unlink", "left": ids["left"], "right": ids["right"], "why": r}
        case Hold(target=t, target_id=i, action=a, new=new):
            return {"action": "hold", "side": t, "id": i, "held": a, "new": new}
        case Review(side=s, id=i, reason=r, candidates=c):
            return {"action": "review", "side": s, "id": i, "why": r, "candidates": list(c)}
        case Fail(side=s, id=i, message=m):
            return {"action": "error", "side": s, "id": i, "why": m}
        case Recover(target=t, source_id=src, found=found):
            return {"action": "recover", "side": t, "from": src, "id": found}
    return None
