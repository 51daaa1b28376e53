"""Records a connector read ahead for a chunk's updates (``ReadsBeforeUpdate.will_update``).

A system without a partial update (or with an item list a write replaces whole) is written
from the record as it was read: an edit made there between that read and the write, to a
field accord does not send, is overwritten. Read one at a time, that window is one request
long; read ahead for a chunk, it is as long as the chunk's writes take. So a kept record
serves one update only, in the chunk it was read for, and only while it is younger than
``MAX_AGE``: a chunk paced slowly (a tight quota) reads its later records one by one again.
"""
from __future__ import annotations

import time
from typing import Callable, Generic, TypeVar

MAX_AGE = 5.0       # seconds a record read ahead may be written from

V = TypeVar("V")


class Kept(Generic[V]):
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_age: float = MAX_AGE) -> None:
        self.clock, self.max_age = clock, max_age
        self._kept: dict[str, tuple[float, V]] = {}
        self.expired = 0                # taken too late: read again (for tests and figures)

    def replace(self, values: dict[str, V]) -> None:
        """What a new chunk's read gave; what an earlier chunk kept is dropped."""
        at = self.clock()
        self._kept = {key: (at, value) for key, value in values.items()}

    def clear(self) -> None:
        self._kept = {}

    def take(self, key: str) -> V | None:
        """The value kept for ``key``, once; None when there is none or it is too old."""
        got = self._kept.pop(key, None)
        if got is None:
            return None
        if self.clock() - got[0] > self.max_age:
            self.expired += 1
            return None
        return got[1]

    def __len__(self) -> int:
        return len(self._kept)
