"""Opening the state database: SQLite by default, PostgreSQL when the URL says so."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine



def to_async_url(url: str) -> str:
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///"):]
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> AsyncEngine:
    url = to_async_url(url)
    if url.startswith("sqlite"):
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
