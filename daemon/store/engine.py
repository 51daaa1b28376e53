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


# SQLite's page cache per connection, in KiB (its default is 2,000). A pool holds several
# connections, and each cache fills as the state grows past it: at a million records the
# engine's memory was 1.31 to 1.34 times its memory at 10,000 with the default, 1.17 to 1.22
# times with 1 MiB (the operating system's file cache serves what the page cache does not
# hold). The price: a first sync that matches every record by key reads the key index more,
# 1.13 to 1.27 times its CPU per record at 10,000, against 1.01 to 1.17 with the default.
CACHE_KIB = 1024


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
