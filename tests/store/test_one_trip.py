"""The SQLite engine makes one trip to aiosqlite's thread per statement, and what the
statement answers (rows, counts, the new row's id, errors) is what SQLAlchemy's own aiosqlite
adapter gives."""
from __future__ import annotations

import aiosqlite
import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import create_async_engine

from daemon.store.db import make_engine
from daemon.store.one_trip import OneTripConnection
from tests.dbs import OPEN


async def _statements(engine) -> list:
    """The same statements, and what each answered."""
    out = []
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
        r = await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
        out.append(("insert", r.rowcount, r.lastrowid))
        r = await conn.exec_driver_sql("INSERT INTO t (name) VALUES (?)", [("b",), ("c",)])
        out.append(("insert many", r.rowcount))
        r = await conn.execute(text("UPDATE t SET name = name || '!' WHERE id > 1"))
        out.append(("update", r.rowcount))
        r = await conn.execute(text("SELECT id, name FROM t ORDER BY id"))
        out.append(("select", list(r.keys()), [tuple(x) for x in r]))
        r = await conn.execute(text("SELECT id FROM t WHERE id < 0"))
        out.append(("empty select", list(r.keys()), r.all()))
        r = await conn.execute(text("DELETE FROM t WHERE id = 1 RETURNING name"))
        out.append(("returning", r.all()))
    with pytest.raises(exc.IntegrityError) as caught:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (name) VALUES ('b!')"))
    out.append(("error", type(caught.value.orig).__name__, str(caught.value.orig)))
    async with engine.connect() as conn:        # the failed transaction left nothing
        out.append(("after", (await conn.execute(text("SELECT count(*) FROM t"))).scalar()))
    return out


async def test_statements_answer_as_through_sqlalchemys_adapter(tmp_path):
    ours = make_engine(f"sqlite:///{tmp_path}/ours.db")
    theirs = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/theirs.db")
    OPEN.extend([ours, theirs])
    got, expected = await _statements(ours), await _statements(theirs)
    assert got == expected
    assert ("select", ["id", "name"], [(1, "a"), (2, "b!"), (3, "c!")]) in got
    async with ours.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.dbapi_connection, OneTripConnection)


async def test_a_statement_is_one_trip_to_the_sqlite_thread(tmp_path, monkeypatch):
    engine = make_engine(f"sqlite:///{tmp_path}/state.db")
    OPEN.append(engine)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
    trips = []
    real = aiosqlite.Connection._execute

    async def counted(self, fn, *args, **kwargs):
        trips.append(getattr(fn, "__name__", fn))
        return await real(self, fn, *args, **kwargs)
    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    async with engine.connect() as conn:
        await conn.execute(text("SELECT id, name FROM t"))
        assert len(trips) == 1                  # the adapter's own: cursor, execute, fetch, close
        await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
        await conn.exec_driver_sql("INSERT INTO t (name) VALUES (?)", [("b",), ("c",)])
        assert len(trips) == 3
        await conn.commit()
    assert (await _count(engine)) == 3


async def _count(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT count(*) FROM t"))).scalar()
