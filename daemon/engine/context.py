"""What one step works with, handed explicitly to each phase (stage, match, plan, apply)."""
from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.base import Connector
from daemon.engine.flow import Flow
from daemon.engine.reference import ReferenceData
from daemon.engine.rules import Side
from daemon.store import queries as q


@dataclass
class StepOptions:
    full: bool = False                         # ignore cursors: a complete listing
    dry_run: bool = False                      # decide, write nothing (plan)
    enforce: dict[str, Side] = field(default_factory=dict)
    only: dict[Side, list[str]] | None = None  # a targeted run: just these records
    # a plan: what earlier flows of the same plan would link or create, by (flow, side)
    planned: dict[Any, dict[str, str]] = field(default_factory=dict)


@dataclass
class Reading:
    """What staging learnt about each side's listing this step."""
    complete: dict[Side, bool] = field(default_factory=lambda: {"left": False, "right": False})
    listed_empty: dict[Side, bool] = field(
        default_factory=lambda: {"left": False, "right": False})
    cut: bool = False                          # batch_size stopped a read: more to come
    # per side, a batch flow's (taken this run, still waiting, done by earlier batches)
    batches: dict[Side, tuple[int, int, int]] = field(default_factory=dict)
    # a feed's records read this step (id -> the version acknowledging needs), and the
    # records this step could not settle (errors, reviews): their parents are not acknowledged
    feed: dict[Side, dict[str, str | None]] = field(
        default_factory=lambda: {"left": {}, "right": {}})
    unsettled: set[tuple[Side, str]] = field(default_factory=set)
    first_error: str = ""                      # for the step's message column
    # records this step read by id because an answer had left a field out (not asked again)
    reread: dict[Side, set[str]] = field(default_factory=lambda: {"left": set(), "right": set()})


@dataclass
class RecordState:
    """Which of the flow's per-record tables hold rows (``q.record_state``: record errors,
    quarantined ones, reviews, parked records, exclusions), read once a step when a record
    first needs it: a chunk skips the look-ups and clean-ups of a table that holds none of
    the flow's rows. What the step itself writes there is added as it is written. An
    exclusion an operator adds while the step reads is honoured from the next run."""
    kinds: set[str] | None = None              # None: not read yet
    # the step's two sides ask at once: one reads, the other waits for its answer
    reading: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)

    def may(self, kind: str) -> bool:
        """The table may hold rows of the flow (or it was not read yet)."""
        return self.kinds is None or kind in self.kinds

    def add(self, *kinds: str) -> None:
        if self.kinds is not None:
            self.kinds.update(kinds)


@dataclass(frozen=True)
class StepContext:
    db: AsyncEngine
    integration: str
    flow: Flow
    sides: Mapping[Side, Connector]
    run_id: int
    options: StepOptions
    reference: ReferenceData
    log: Any
    counts: Counter
    reading: Reading
    fingerprint: str                           # of the flow's rules: parked records
    tick: Callable[[], None] = lambda: None
    # the step's write pacing (pace.AdaptiveLimit), made by the first chunk that writes, so
    # what it learnt carries over to the next chunks
    pace: dict[str, Any] = field(default_factory=dict)
    state: RecordState = field(default_factory=RecordState)

    async def record_state(self) -> RecordState:
        """``state``, read from the store the first time a step asks."""
        if self.state.kinds is None:
            async with self.state.reading:
                if self.state.kinds is None:
                    async with self.db.begin() as conn:
                        self.state.kinds = await q.record_state(conn, self.integration,
                                                                self.flow.name)
        return self.state
