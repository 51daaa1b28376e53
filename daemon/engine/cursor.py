"""Change cursors with a signpost. Pure: no I/O, no clock of our own.

A cursor is ``(at, ids)``: every record stamped before ``at`` has been read and decided, and
so have the ``ids`` stamped exactly ``at`` (a closed lower bound, de-duplicated by id).

The **signpost** is the run's start as the vendor sees it (``Connector.clock()``, taken before
the read, minus an allowance for clock skew). A complete read moves the cursor to the signpost
and never past it, whatever the records say: a record stamped in the future (a workstation
whose clock is an hour fast) is read again, run after run, until the signpost passes it,
instead of dragging the cursor an hour ahead and hiding everything saved meanwhile with the
right time. Because an idle run moves the cursor to its signpost, the overlap window (re-read
before the cursor, for records that become visible late) hangs on the vendor's clock, not on
the newest record: an idle run after a first sync does not re-read what that sync wrote.

A read cut short by ``batch_size`` (ordered systems only) stops at the last record taken.
A system that cannot tell its time gives no signpost: the cursor is then the newest stamp read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping

MAX_IDS = 1000
FUTURE = timedelta(seconds=60)     # a stamp this far past the signpost is worth a log line


@dataclass(frozen=True)
class Cursor:
    at: datetime | None = None
    ids: frozenset[str] = frozenset()

    @classmethod
    def load(cls, value: Mapping[str, Any] | None) -> "Cursor":
        if not value or not value.get("at"):
            return cls()
        return cls(datetime.fromisoformat(value["at"]), frozenset(value.get("ids", [])))

    def dump(self) -> dict[str, Any] | None:
        if self.at is None:
            return None
        return {"at": self.at.isoformat(), "ids": sorted(self.ids)[:MAX_IDS]}

    def since(self, overlap_seconds: float) -> datetime | None:
        """Where the next read starts: the cursor, less the overlap window."""
        return None if self.at is None else self.at - timedelta(seconds=overlap_seconds)

    def seen(self, modified: datetime | None, record_id: str) -> bool:
        """Already taken by an earlier run (the closed bound's de-duplication)."""
        return modified is not None and modified == self.at and record_id in self.ids


@dataclass
class Progress:
    """What one read has seen so far; ``finish`` gives the cursor to store."""
    start: Cursor
    signpost: datetime | None
    newest: datetime | None = None
    newest_ids: set[str] = field(default_factory=set)
    last: tuple[datetime, str] | None = None     # the last record taken, in read order
    future: int = 0                              # records stamped past the signpost

    def observe(self, modified: datetime | None, record_id: str) -> None:
        if modified is None:
            return
        if self.signpost is not None and modified > self.signpost + FUTURE:
            self.future += 1
        if self.newest is None or modified > self.newest:
            self.newest, self.newest_ids = modified, {record_id}
        elif modified == self.newest:
            self.newest_ids.add(record_id)
        self.last = (modified, record_id)

    def finish(self, cut: bool) -> Cursor:
        """The cursor after this read. ``cut``: stopped at ``last`` by a batch size."""
        if cut and self.last is not None:
            at, rid = self.last
            if self.signpost is not None and at > self.signpost:
                return self._at_signpost()
            ids = {rid} | (set(self.start.ids) if at == self.start.at else set())
            ids |= {i for i in self.newest_ids if self.newest == at}
            return Cursor(at, frozenset(ids))
        if self.signpost is not None:
            return self._at_signpost()
        if self.newest is None:
            return self.start
        if self.start.at is not None and self.newest < self.start.at:
            return self.start
        ids = set(self.newest_ids) | (set(self.start.ids) if self.newest == self.start.at
                                      else set())
        return Cursor(self.newest, frozenset(ids))

    def _at_signpost(self) -> Cursor:
        assert self.signpost is not None
        if self.start.at is not None and self.signpost < self.start.at:
            return self.start               # a vendor clock that went back: never move back
        ids = set(self.newest_ids) if self.newest == self.signpost else set()
        if self.signpost == self.start.at:
            ids |= self.start.ids
        return Cursor(self.signpost, frozenset(ids))
