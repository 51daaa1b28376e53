"""State databases for tests: a SQLite file, or a fresh PostgreSQL database per test.

PostgreSQL is found through ``ACCORD_TEST_POSTGRES_URL`` (``.ci/run`` sets it), e.g.
``postgresql://postgres@127.0.0.1:5432/test``. From that connection each test creates its own
database (``accord_t_<unix time>_<random>``, from template0 so that nobody else's session on
template1 is in the way) and drops it afterwards, so tests never see each other's rows, and
tests of other checkouts running at the same time neither. Databases that a killed test run
left behind are dropped by the next run once they are an hour old and nobody is connected.

``state_url`` is the fixture: parametrized ["sqlite", "postgres"]; the postgres one is skipped,
with the reason, when the variable is absent.
"""
from __future__ import annotations

import os
import time
import uuid

import pytest
from sqlalchemy import make_url

PG_ENV = "ACCORD_TEST_POSTGRES_URL"
NO_PG = (f"PostgreSQL tests need {PG_ENV}, e.g. postgresql://postgres@127.0.0.1:5432/test "
         f"(.ci/run sets it)")
PG_URL = os.environ.get(PG_ENV) or None
needs_pg = pytest.mark.skipif(PG_URL is None, reason=NO_PG)

OPEN: list = []      # engines a test opened: disposed before its database is dropped
STALE_AFTER = 3600   # seconds
_swept = False


def _admin_dsn() -> str:
    assert PG_URL is not None
    u = make_url(PG_URL)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


async def create_pg_database() -> str:
    """A new empty database; returns its postgresql:// URL."""
    import asyncpg
    global _swept
    name = f"accord_t_{int(time.time())}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_admin_dsn())
    try:
        if not _swept:
            _swept = True
            await _drop_stale(conn)
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await conn.close()
    return make_url(_admin_dsn()).set(database=name).render_as_string(hide_password=False)


async def _drop_stale(conn) -> None:
    rows = await conn.fetch(
        "SELECT datname FROM pg_database d WHERE datname LIKE 'accord\\_t\\_%' AND NOT EXISTS "
        "(SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)")
    for (name,) in rows:
        stamp = name.split("_")[2]
        if stamp.isdigit() and time.time() - int(stamp) > STALE_AFTER:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def drop_pg_database(url: str) -> None:
    import asyncpg
    name = make_url(url).database
    assert name and name.startswith("accord_t_")
    conn = await asyncpg.connect(_admin_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def dispose_open() -> None:
    while OPEN:
        await OPEN.pop().dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def state_url(request, tmp_path):
    """The URL of an empty state database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state.db"
        await dispose_open()
        return
    if PG_URL is None:
        pytest.skip(NO_PG)
    url = await create_pg_database()
    try:
        yield url
    finally:
        await dispose_open()
        await drop_pg_database(url)
