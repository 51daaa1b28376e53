"""A lease per integration, so that several daemons can share one PostgreSQL database and
exactly one of them runs a given integration at a time (DESIGN.md, "Scale").

The choice: PostgreSQL **session-level advisory locks**, not a ``leases`` table.

- The holder keeps one dedicated connection open (not from the engine's pool) and takes
  ``pg_try_advisory_lock(NAMESPACE, hashtext(integration))`` on it before a run. The lock is
  held by that database session, and only by it: it needs no renewal, and it is gone the moment
  the session ends. A daemon that is killed (SIGKILL, OOM, crash) has its socket closed by the
  kernel, PostgreSQL ends the session at once, and the next daemon to try takes over at its
  next scheduled tick -- no expiry to wait out, no clock to trust.
- A machine that dies or drops off the network closes nothing; the session is then ended by
  TCP keepalives, which we set on the lease session (idle 10 s, then 3 probes 5 s apart:
  about 25 s). So the takeover time is: immediate when a process dies, ~25 s when its machine
  does, plus at most one schedule interval until the other daemon's next tick.
- A table with an expiry would need a renewal loop, a lease time longer than any pause of the
  holder (GC, a slow run) and shorter than the takeover we want, and trust in clocks; and a
  holder that misses a renewal during a run does not notice. The advisory lock has none of
  this; what it needs is a direct connection (a transaction pooler such as PgBouncer in
  transaction mode would break session locks) -- say so in the docs.
- Once taken, a daemon keeps the lease of an integration while it lives (runs do not hand it
  back): one daemon does the integration's runs, the others stand by. Before each run the
  holder checks that the lease session still answers; if it was lost (PostgreSQL restarted,
  network), it logs ``lease.lost`` and must take the lock again like anyone else. A run under
  way when the session is lost keeps going, but its state writes go to the same database, so
  it fails there rather than racing the new holder for long; the engine's writes are
  idempotent (at-least-once) for the rest.
- The two-key form (a fixed first key) keeps our locks apart from other applications'
  one-key advisory locks in the same database; ``hashtext`` is 32 bits, so two integration
  names may share a lock: then one daemon runs both, which is safe.
- The holder id (``hostname:pid`` unless ``[daemon] lease_holder`` says otherwise) is the lease
  session's ``application_name``, so ``pg_stat_activity`` and the "lease held" log line show
  who holds it.

On SQLite the lease is a no-op: one file, one process.
"""
from __future__ import annotations

import asyncio
import os
import socket
from typing import Protocol

import structlog
from sqlalchemy.engine import make_url

log = structlog.get_logger("accord.lease")

NAMESPACE = 0x61636364          # b"accd": the first key of all our advisory locks
APP_PREFIX = "accord-lease "
TIMEOUT = 10.0                  # seconds for connecting and for each lease query
KEEPALIVE = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5",
             "tcp_keepalives_count": "3"}


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease(Protocol):
    holder: str

    async def acquire(self, integration: str) -> bool: ...
    async def holder_of(self, integration: str) -> str | None: ...
    async def release(self, integration: str) -> None: ...
    async def close(self) -> None: ...


class NoLease:
    """SQLite, or ``lease = false``: every acquire succeeds."""

    def __init__(self, holder: str | None = None) -> None:
        self.holder = holder or default_holder()

    async def acquire(self, integration: str) -> bool:
        return True

    async def holder_of(self, integration: str) -> str | None:
        return self.holder

    async def release(self, integration: str) -> None:
        pass

    async def close(self) -> None:
        pass


class PostgresLease:
    """Advisory locks on one dedicated connection; see the module docstring."""

    def __init__(self, database: str, holder: str | None = None) -> None:
        url = make_url(database).set(drivername="postgresql")
        self.dsn = url.render_as_string(hide_password=False)
        self.where = url.render_as_string(hide_password=True)
        self.holder = holder or default_holder()
        self.held: set[str] = set()
        self._conn = None
        self._mutex = asyncio.Lock()    # one asyncpg connection: one query at a time

    async def acquire(self, integration: str) -> bool:
        """True when this daemon holds the lease of ``integration`` (taking it if free)."""
        import asyncpg
        async with self._mutex:
            try:
                if not await self._alive():
                    await self._connect()
                if integration in self.held:
                    return True
                got = await self._conn.fetchval(
                    "select pg_try_advisory_lock($1, hashtext($2))", NAMESPACE, integration,
                    timeout=TIMEOUT)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                log.warning("lease.unavailable", integration=integration, database=self.where,
                            error=str(exc) or type(exc).__name__)
                await self._drop()
                return False
            if got:
                self.held.add(integration)
                log.info("lease.acquired", integration=integration, holder=self.holder)
            return bool(got)

    async def holder_of(self, integration: str) -> str | None:
        """Who holds the lease (its holder id), when PostgreSQL lets us see it."""
        import asyncpg
        async with self._mutex:
            if self._conn is None:
                return None
            try:
                name = await self._conn.fetchval(
                    "select a.application_name from pg_locks l"
                    " join pg_stat_activity a on a.pid = l.pid"
                    " where l.locktype = 'advisory' and l.granted and l.objsubid = 2"
                    " and l.classid = $1::int4::oid and l.objid = hashtext($2)::oid"
                    " and l.database = (select oid from pg_database"
                    "                   where datname = current_database())",
                    NAMESPACE, integration, timeout=TIMEOUT)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError,
                    asyncpg.InterfaceError):
                return None
        if not name:
            return None
        return name[len(APP_PREFIX):] if name.startswith(APP_PREFIX) else name

    async def release(self, integration: str) -> None:
        async with self._mutex:
            if integration in self.held and self._conn is not None:
                self.held.discard(integration)
                try:
                    await self._conn.fetchval("select pg_advisory_unlock($1, hashtext($2))",
                                              NAMESPACE, integration, timeout=TIMEOUT)
                except Exception:       # the session is gone: so is the lock
                    await self._drop()

    async def close(self) -> None:
        """Ends the lease session: every lease it held is free at once."""
        async with self._mutex:
            if self.held:
                log.info("lease.released", integrations=sorted(self.held), holder=self.holder)
            self.held.clear()
            await self._drop()

    # --- the lease session ------------------------------------------------------------------
    async def _alive(self) -> bool:
        if self._conn is None or self._conn.is_closed():
            lost = bool(self.held)
        else:
            try:
                await self._conn.fetchval("select 1", timeout=TIMEOUT)
                return True
            except Exception:
                lost = bool(self.held)
        if lost:
            log.warning("lease.lost", integrations=sorted(self.held), holder=self.holder,
                        reason="the lease session to PostgreSQL ended")
        self.held.clear()
        await self._drop()
        return False

    async def _connect(self) -> None:
        import asyncpg
        self._conn = await asyncpg.connect(
            self.dsn, timeout=TIMEOUT,
            server_settings={"application_name": (APP_PREFIX + self.holder)[:63]})
        for key, value in KEEPALIVE.items():   # best effort: a proxy may refuse them
            try:
                await self._conn.execute(f"set {key} = {value}", timeout=TIMEOUT)
            except asyncpg.PostgresError as exc:
                log.warning("lease.keepalive_unset", setting=key, error=str(exc))

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), TIMEOUT)
            except Exception:
                conn.terminate()


def make_lease(database: str, enabled: bool = True, holder: str | None = None) -> Lease:
    """The lease for a state database: advisory locks on PostgreSQL, a no-op otherwise."""
    scheme = database.split(":", 1)[0].split("+", 1)[0]
    if enabled and scheme in ("postgresql", "postgres"):
        return PostgresLease(database.replace("postgres://", "postgresql://", 1)
                             if scheme == "postgres" else database, holder)
    return NoLease(holder)
