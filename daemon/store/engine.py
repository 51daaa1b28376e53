"""Opening an engine on the state database: SQLite (a 0600 file, WAL) or PostgreSQL."""
from __future__ import annotations

import os

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from daemon.store import one_trip


def to_async_url(url: str) -> str:
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///"):]
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def private_sqlite_file(url: str) -> None:
    """Create a missing SQLite state file with mode 0600 before SQLite does (it would use
    the umask): links, cursors and the audit trail are business data. SQLite gives its
    -wal and -shm files the database file's mode. An existing file is left as it is; a
    file that cannot be made is left to the connect to report."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:
        pass


# SQLite's page cache per connection, in KiB (about SQLite's default of 2,000). A pool holds
# several connections, and each cache fills as the state grows past it. Measured with the
# engine alone on in-memory systems, a million records against 10,000 (the small size's
# memory the median of five runs): 1.15 to 1.18 times the memory for a first sync that
# creates, 1.18 to 1.23 times for one that matches every record by key (1.15 and 1.16 times
# with 1 MiB). The CPU a record of the matched one, whose key index a smaller cache reads
# more, varied more from run to run (1.08 to 1.38 times) than between the two sizes.
CACHE_KIB = 2048


def make_engine(url: str) -> AsyncEngine:
    url = to_async_url(url)
    if url.startswith("sqlite"):
        private_sqlite_file(url)
        engine = create_async_engine(url, connect_args={"timeout": 30}, module=one_trip.dbapi())

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL: the CLI reads while the daemon writes
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            cur.close()
        return engine
    return create_async_engine(url, pool_size=5, max_overflow=5)
