"""How many requests are kept in flight (a step's writes, a connector's detail reads):
adapted to the system's latency and rate limit, not a fixed number. It lives with the
connectors, which use it for their own concurrent reads; the engine paces its writes with it.

An AIMD controller (additive increase, multiplicative decrease, as TCP paces a link):

- at first (slow start, as TCP's), every write that answers in about the best latency seen
  lets one more be in flight, so the limit doubles each round trip until the other side
  shows a queue; from then on, one more every ``limit`` such answers;
- a write that failed as unavailable or timed out, or answers that take more than ``SLOW``
  times the best latency and ``QUEUE`` more than it (a queue building up on the other side),
  cut the limit by ``CUT``, at most once per ``limit`` answers. A latency is measured in
  this process, so it holds the daemon's own work too (its event loop busy with other
  answers, a chunk's commit): against a system answering in a millisecond, that alone is
  several times the best latency, and read as the system's queue it held the writes to a
  handful in flight. A queue shorter than ``QUEUE`` is taken for the daemon's own;
- by Little's law a system allowed ``rate`` requests a second, answering in ``latency``
  seconds, is kept busy by ``rate x latency`` writes in flight: more only wait in the rate
  limiter, so the limit never goes above that (with some headroom), nor above ``ceiling``
  (the flow's ``concurrency``, a connector's own setting).

The clock is injected: tests drive it by hand, nothing sleeps.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

from connectors.base import OutcomeUnknownError, UnavailableError

START = 4           # in flight at the start of a step
SLOW = 2.0          # latency above SLOW x the best seen: the other side is queueing
QUEUE = 0.020       # ... and QUEUE seconds above it (less: the daemon's own event loop)
CUT = 0.7           # the multiplicative decrease
SMOOTH = 0.2        # weight of a new latency in the running average
HEADROOM = 1.5      # above rate x latency, for the spread of latencies


class AdaptiveLimit:
    """An asyncio semaphore whose size follows the answers (see the module docstring)."""

    def __init__(self, ceiling: int, rate: float | None = None, *, start: int = START,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = max(1, ceiling)
        self.rate = rate
        self.clock = clock
        self.limit = float(min(start, self.ceiling))
        self.best: float | None = None      # the best latency seen (drifts up slowly)
        self.average: float | None = None
        self.active = 0
        self.peak = 0                       # the most in flight at once (benchmarks)
        self._since_change = 0
        self._slow_start = True
        self._waiting: deque[asyncio.Future] = deque()

    async def acquire(self) -> float:
        """Wait for a slot; returns the start time to hand back to ``release``."""
        while self.active >= int(self.limit):
            fut = asyncio.get_running_loop().create_future()
            self._waiting.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut in self._waiting:
                    self._waiting.remove(fut)
                raise
        self.active += 1
        self.peak = max(self.peak, self.active)
        return self.clock()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One request in flight. The system did not cope when the request found it
        unavailable or got no answer in time (``UnavailableError``, ``OutcomeUnknownError``,
        a timeout); any other outcome, a refusal included, is an answer."""
        started = await self.acquire()
        ok = True
        try:
            yield
        except (UnavailableError, OutcomeUnknownError, asyncio.TimeoutError):
            ok = False
            raise
        finally:
            self.release(started, ok)

    def release(self, started: float, ok: bool = True) -> None:
        self.active -= 1
        self.observe(self.clock() - started, ok)
        self._wake()

    def observe(self, latency: float, ok: bool = True) -> None:
        """One answer: its latency and whether the system coped."""
        latency = max(latency, 1e-6)
        self.average = latency if self.average is None else (
            (1 - SMOOTH) * self.average + SMOOTH * latency)
        # the best latency drifts up a little with every answer, so a system that got slower
        # for good is not judged against a moment long gone
        self.best = latency if self.best is None else min(self.best * 1.001, latency)
        self._since_change += 1
        congested = not ok or (self.average > SLOW * self.best
                               and self.average - self.best > QUEUE)
        if congested:
            self._slow_start = False
            if self._since_change >= self.limit or not ok:
                self.limit = max(1.0, self.limit * CUT)
                self._since_change = 0
        elif self._slow_start:
            self.limit += 1
            self._since_change = 0
        elif self._since_change >= int(self.limit):
            self.limit += 1
            self._since_change = 0
        self.limit = min(self.limit, self.cap())

    def cap(self) -> float:
        """The most that can usefully be in flight: the ceiling, and ``rate x latency``."""
        if self.rate is None or self.average is None:
            return float(self.ceiling)
        return float(min(self.ceiling, max(1, math.ceil(self.rate * self.average * HEADROOM))))

    def _wake(self) -> None:
        """Wake as many waiters as there are free slots; each checks again on waking."""
        free = int(self.limit) - self.active
        while free > 0 and self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1


async def together(awaitables: Iterable[Awaitable[Any]]) -> list[Any]:
    """Run ``awaitables`` at once and return their results in order. The first fault stops
    the others (they are cancelled and awaited) and is raised: a read that cannot go on does
    not leave requests running behind it."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
