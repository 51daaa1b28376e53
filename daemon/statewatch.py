"""Whether the state database works, as the daemon last found it.

The daemon cannot sync without its state, and a state database that failed once (a full
disk, a read-only remount, PostgreSQL restarting) must not stay failed in the daemon after
it came back. So:

- while the state is ``available``, readiness asks ``SELECT 1`` (cheap); a run that crashed
  asks whether the database still takes writes;
- a failed probe marks the state unavailable (``state.unavailable``, once) and disposes of
  the engine's pool: a SQLite connection opened while the file was read-only stays
  read-only for ever, a PostgreSQL connection may be dead; new ones are opened next time;
- while unavailable, every run and every readiness check first asks whether the database
  takes writes again (after disposing of the pool); the first that succeeds logs
  ``state.recovered``, once, and the runs go on.

``Service.state`` is this object: ``available``, ``error`` (one line, no secret: the
driver's message never holds the password) and ``since`` are what the web side shows.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.store import health

log = structlog.get_logger("accord.state")

READ_TIMEOUT = 5.0      # seconds for SELECT 1 (readiness)
WRITE_TIMEOUT = 35.0    # more than SQLite's busy timeout (30 s): a run's commit is not a failure


class StateWatch:
    def __init__(self, engine: Callable[[], AsyncEngine | None]) -> None:
        self._engine = engine
        self.available = True
        self.error: str | None = None
        self.since = datetime.now(timezone.utc)
        self._lock = asyncio.Lock()     # one probe at a time: one line per transition

    async def check(self) -> bool:
        """Readiness: does the state database answer (and, while it is known to be down,
        does it take writes again)?"""
        return await self._probe(write=not self.available)

    async def after_crash(self) -> bool:
        """A run crashed: was it the state database?"""
        return await self._probe(write=True)

    async def _probe(self, *, write: bool) -> bool:
        async with self._lock:
            db = self._engine()
            if db is None:              # starting, reloading or stopping: nothing to ask
                return self.available
            if not self.available:
                await _dispose(db)
            try:
                await asyncio.wait_for(health.writable(db) if write else health.answers(db),
                                       WRITE_TIMEOUT if write else READ_TIMEOUT)
            except Exception as exc:
                await _dispose(db)
                self._down(_one_line(exc))
                return False
            self._up()
            return True

    def _down(self, error: str) -> None:
        if self.available:
            self.available, self.since = False, datetime.now(timezone.utc)
            log.error("state.unavailable", error=error)
        self.error = error

    def _up(self) -> None:
        if not self.available:
            down_for = (datetime.now(timezone.utc) - self.since).total_seconds()
            self.available, self.error = True, None
            self.since = datetime.now(timezone.utc)
            log.info("state.recovered", unavailable_seconds=round(down_for, 1))


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    orig = getattr(exc, "orig", None)          # SQLAlchemy's wrapper: the driver's message
    text = str(orig if orig is not None else exc) or type(exc).__name__
    return text.splitlines()[0][:300]


async def _dispose(db: AsyncEngine) -> None:
    try:
        await db.dispose()
    except Exception:                   # a pool of dead connections: nothing left to close
        pass
