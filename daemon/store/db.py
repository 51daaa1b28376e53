"""Opening the state database: SQLite by default, PostgreSQL when the URL says so."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


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


def make_engine(url: str) -> AsyncEngine:
    url = to_async_url(url)
    if url.startswith("sqlite"):
        private_sqlite_file(url)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL: the CLI reads while the daemon writes
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
        return engine
    return create_async_engine(url, pool_size=5, max_overflow=5)


async def create_schema(engine: AsyncEngine) -> None:
    """Bring a database to the head revision by running the migrations (tests, tools);
    the daemon and the commands go through ``daemon.store.schema.check`` instead."""
    from daemon.store.schema import upgrade
    await upgrade(engine)


def now() -> datetime:
    return datetime.now(timezone.utc)


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)
