"""Opening the state database: SQLite by default, PostgreSQL when the URL says so."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

# opening an engine lives in engine.py (schema.py needs it without needing this module)
from daemon.store.engine import make_engine, private_sqlite_file, to_async_url  # noqa: F401


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
