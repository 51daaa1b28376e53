"""Which database this is, and what time it is there: the SQL connector's ``identity()`` and
``clock()``.

Identity: the database's location without user or password (``sqlite:///<absolute path>``,
``postgresql://host:port/name``), then, on PostgreSQL, the database's oid (a database
dropped and created again under the same name gets a new one), then the ``identity_marker``
value when the settings name one (``COMPANY_FILE.FILE_ID <value>``). A marker table that
does not exist is an error when the settings name it, and is left out when it only comes
from a connector's defaults (a layout's usual marker that this database lacks); an empty
marker table is left out.

Clock: the database's own current time in UTC: ``strftime('%Y-%m-%d %H:%M:%f', 'now')`` on
SQLite (which has no server: that is the clock of the machine that opens the file),
``SYSUTCDATETIME()`` on SQL Server, ``CURRENT_TIMESTAMP`` elsewhere (a naive answer is read
in the connector's ``timezone``).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import column, func, inspect, select, table, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.sql import values as V
from connectors.sql.spec import Marker


def location(url: URL) -> str:
    """The database's place, never its credentials."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        if database.startswith("file:"):
            database = database[5:]
        if database and database != ":memory:":
            database = str(Path(database).resolve())
        return f"sqlite:///{database}"
    port = f":{url.port}" if url.port else ""
    return f"{backend}://{url.host or ''}{port}/{url.database or ''}"


async def database_oid(engine: AsyncEngine) -> str | None:
    """PostgreSQL: the oid of the current database; other backends have none to offer."""
    if engine.url.get_backend_name() != "postgresql":
        return None
    async with engine.connect() as conn:
        oid = (await conn.execute(text(
            "SELECT oid FROM pg_database WHERE datname = current_database()"))).scalar()
    return None if oid is None else str(oid)


class NoMarker(LookupError):
    """The marker's table or column is not in the database."""


async def marker_value(engine: AsyncEngine, marker: Marker, schema: str | None) -> str | None:
    """The smallest non-null value of the marker column (one row in practice; ordered, so
    the answer is stable). NoMarker when the table or the column does not exist."""
    def names(sync_conn) -> tuple[str, str] | None:
        found = inspect(sync_conn)
        tables = [t for t in found.get_table_names(schema=schema)
                  if t.lower() == marker.table.lower()]
        if not tables:
            return None
        cols = [c["name"] for c in found.get_columns(tables[0], schema=schema)
                if c["name"].lower() == marker.column.lower()]
        return (tables[0], cols[0]) if cols else None

    async with engine.connect() as conn:
        real = await conn.run_sync(names)
        if real is None:
            raise NoMarker(f"{marker.table}.{marker.column}")
        col = column(real[1])
        stmt = select(col).select_from(table(real[0], col, schema=schema)) \
            .where(col.is_not(None)).order_by(col).limit(1)
        value = (await conn.execute(stmt)).scalar()
    return None if value is None else str(value)


async def database_now(engine: AsyncEngine, zone: ZoneInfo) -> datetime:
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        stmt, naive_zone = select(func.strftime("%Y-%m-%d %H:%M:%f", "now")), timezone.utc
    elif backend == "mssql":
        stmt, naive_zone = select(func.sysutcdatetime()), timezone.utc
    else:
        stmt, naive_zone = select(func.current_timestamp()), zone
    async with engine.connect() as conn:
        raw = (await conn.execute(stmt)).scalar()
    value = V.parse_datetime(raw)
    if value.tzinfo is None:
        value = value.replace(tzinfo=naive_zone)
    return value.astimezone(timezone.utc)
