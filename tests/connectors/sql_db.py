"""A small ERP schema in a real database for the SQL connector's tests: a SQLite file under
tmp_path, or a fresh PostgreSQL database (tests/dbs.py) when ACCORD_TEST_POSTGRES_URL is set.

``Db`` acts as a user of that ERP would, straight in the tables (Core statements); its clock
stamps ``UPDATED`` as naive local time in ``zone``.
"""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import (Column, Date, DateTime, ForeignKey, Integer, LargeBinary, MetaData,
                        Numeric, String, Table, delete, insert, select, update)
from sqlalchemy.ext.asyncio import create_async_engine

from connectors.sandbox import Clock
from connectors.sql import SqlConnector
from connectors.sql.client import to_async_url
from tests.dbs import NO_PG, PG_URL, create_pg_database, drop_pg_database

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
PARIS = ZoneInfo("Europe/Paris")

meta = MetaData()
CUSTOMER = Table(
    "CUSTOMER", meta,
    Column("CODE", String(10), primary_key=True),
    Column("NAME", String(40), nullable=False),
    Column("EMAIL", String(80), unique=True),
    Column("PHONE", String(20)),
    Column("TYPE", String(1)),
    Column("BALANCE", Numeric(12, 2)),
    Column("PHOTO", LargeBinary),
    Column("BORN", Date),
    Column("UPDATED", DateTime),
    Column("DELETED", Integer, nullable=False, server_default="0"))
CONTACT = Table(
    "CONTACT", meta,
    Column("ID", Integer, primary_key=True, autoincrement=True),
    Column("CUSTOMER_CODE", String(10), ForeignKey("CUSTOMER.CODE"), nullable=False),
    Column("NAME", String(40)),
    Column("UPDATED", DateTime),
    sqlite_autoincrement=True)
NOTE = Table(
    "NOTE", meta,
    Column("ID", Integer, primary_key=True, autoincrement=False),
    Column("BODY", String(200)))
TABLES = {"CUSTOMER": CUSTOMER, "CONTACT": CONTACT, "NOTE": NOTE}

ENTITIES = {
    "customers": {"table": "CUSTOMER", "key": "CODE", "modified": "UPDATED",
                  "soft_delete": {"column": "DELETED", "value": 1},
                  "key_generation": {"prefix": "C", "width": 6},
                  "read_only": ["TYPE"], "defaults": {"TYPE": "C"}},
    "contacts": {"table": "CONTACT", "key": "ID", "modified": "UPDATED", "deletes": "ids",
                 "join": {"table": "CUSTOMER", "on": {"CUSTOMER_CODE": "CODE"},
                          "columns": {"CUSTOMER_TYPE": "TYPE"}, "modified": "UPDATED"}},
    "notes": {"table": "NOTE", "key": "ID", "deletes": "ids"},
}


class Db:
    def __init__(self, backend: str, url: str, clock: Clock, zone: ZoneInfo = PARIS) -> None:
        self.backend, self.url, self.clock, self.zone = backend, url, clock, zone
        # the test's own engine may create the SQLite file (the connector's never does)
        self.engine = create_async_engine(url.replace("sqlite:", "sqlite+aiosqlite:", 1)
                                          if backend == "sqlite" else to_async_url(url))

    def local_now(self) -> datetime:
        return self.clock.now().astimezone(self.zone).replace(tzinfo=None)

    async def create_all(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(meta.create_all)

    async def insert(self, table: str, **cols) -> None:
        if "UPDATED" in TABLES[table].c:
            cols.setdefault("UPDATED", self.local_now())
        async with self.engine.begin() as conn:
            await conn.execute(insert(TABLES[table]).values(**cols))

    async def insert_many(self, table: str, rows: list[dict]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(TABLES[table]), rows)

    async def update(self, table: str, key, **cols) -> None:
        t = TABLES[table]
        if "UPDATED" in t.c:
            cols.setdefault("UPDATED", self.local_now())
        pk = list(t.primary_key.columns)[0]
        async with self.engine.begin() as conn:
            await conn.execute(update(t).where(pk == key).values(**cols))

    async def delete(self, table: str, key) -> None:
        t = TABLES[table]
        pk = list(t.primary_key.columns)[0]
        async with self.engine.begin() as conn:
            await conn.execute(delete(t).where(pk == key))

    async def row(self, table: str, key) -> dict | None:
        t = TABLES[table]
        pk = list(t.primary_key.columns)[0]
        async with self.engine.connect() as conn:
            found = (await conn.execute(select(t).where(pk == key))).first()
        return dict(found._mapping) if found else None

    def connector(self, tmp_path, entities: dict | None = None, **extra) -> SqlConnector:
        settings = SqlConnector.Settings.model_validate({
            "url": self.url, "timezone": "Europe/Paris",
            "state_path": str(tmp_path / f"state-{self.backend}.sqlite"),
            "entities": ENTITIES if entities is None else entities, **extra})
        c = SqlConnector("erp", settings)
        c.now = self.clock.now
        return c


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request, tmp_path):
    """The ERP schema, empty, on SQLite or PostgreSQL; its clock starts at T0."""
    clock = Clock(T0)
    if request.param == "sqlite":
        d = Db("sqlite", f"sqlite:///{tmp_path}/erp.sqlite", clock)
        await d.create_all()
        yield d
        await d.engine.dispose()
        return
    if PG_URL is None:
        pytest.skip(NO_PG)
    url = await create_pg_database()
    d = Db("postgres", url, clock)
    try:
        await d.create_all()
        yield d
    finally:
        await d.engine.dispose()
        await drop_pg_database(url)
