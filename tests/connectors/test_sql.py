"""The generic SQL connector against a real SQLite file and, when ACCORD_TEST_POSTGRES_URL is
set, a real PostgreSQL database (the ``db`` fixture runs each test on both; see sql_db.py).
Clocks are injected (``connector.now`` and the test's own stamps); nothing sleeps."""
from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import make_url

from connectors.base import AuthError, NotFoundError, RecordError, UnavailableError
from connectors.sql import SqlConfigError, SqlConnector
from tests.connector_contract import ConnectorContract
from tests.connectors.sql_db import T0, db  # noqa: F401  (the fixture)
from tests.dbs import NO_PG, PG_URL


async def read(connector, entity, since=None):
    return [page async for page in connector.changes(entity, since)]


def flat(pages):
    return [r for p in pages for r in p]


@pytest.fixture
async def connector(db, tmp_path):
    c = db.connector(tmp_path)
    await c.start()
    yield c
    await c.close()


class TestSqlContract(ConnectorContract):
    entity = "customers"
    new_fields = {"NAME": "Tamar Marine", "PHONE": "01752 600100", "EMAIL": None}
    edit_fields = {"PHONE": "01752 600200"}
    invalid_fields = {"NAME": None}

    @pytest.fixture
    def sandbox(self, db):
        return db

    @pytest.fixture
    async def bad_connector(self, db, tmp_path):
        if db.backend == "sqlite":
            url = f"sqlite:///{tmp_path}/no-such-file.sqlite"
        else:
            url = make_url(db.url).set(username="accord_no_such_role",
                                       password="secret-pw").render_as_string(False)
        c = SqlConnector("erp", SqlConnector.Settings(url=url, entities={},
                                                      state_path=tmp_path / "bad.sqlite"))
        await c.start()
        yield c
        await c.close()

    async def test_check_refuses_bad_credentials_with_auth_error(self, bad_connector, db,
                                                                 tmp_path):
        # SQLite has no credentials: its "bad connector" is a missing file, which is
        # UnavailableError (and is not created). PostgreSQL: a role that does not exist.
        if db.backend == "sqlite":
            with pytest.raises(UnavailableError):
                await bad_connector.check()
            assert not (tmp_path / "no-such-file.sqlite").exists()
            return
        await super().test_check_refuses_bad_credentials_with_auth_error(bad_connector)

    async def test_transient_faults_are_retried(self):
        pytest.skip("no HTTP: a database connector has no transient HTTP faults to retry")

    async def test_429_honours_retry_after(self):
        pytest.skip("no HTTP: no rate limit")


# --- changes ---------------------------------------------------------------------------------

async def test_keyset_paging_on_one_shared_timestamp_and_an_edit_mid_read(db, tmp_path):
    rows = [{"CODE": f"K{i:03d}", "NAME": f"Co {i}", "UPDATED": db.local_now()}
            for i in range(23)]                        # all 23 share one modified value
    await db.insert_many("CUSTOMER", rows)
    c = db.connector(tmp_path, batch_size=5)
    await c.start()
    try:
        seen, edited = [], False
        async for page in c.changes("customers", None):
            assert len(page) <= 5
            seen.extend(r.id for r in page)
            if not edited:
                db.clock.advance(60)
                await db.update("CUSTOMER", "K001", PHONE="1")      # already read: read again
                await db.update("CUSTOMER", "K020", PHONE="2")      # not yet read: moves on
                edited = True
        assert set(seen) == {r["CODE"] for r in rows}
        assert seen.count("K001") == 2 and seen.count("K020") == 1
        assert seen[-2:] == ["K001", "K020"]
    finally:
        await c.close()


async def test_since_is_a_closed_bound_in_the_database_time_zone(db, connector):
    # 10:00 naive in the database is 09:00 UTC (Paris, winter)
    await db.insert("CUSTOMER", CODE="T1", NAME="Tz", UPDATED=datetime(2025, 3, 1, 10, 0))
    await db.insert("CUSTOMER", CODE="T2", NAME="Tz", UPDATED=datetime(2025, 3, 1, 10, 0, 1))
    got = {r.id: r for r in flat(await read(connector, "customers", T0))}
    assert set(got) == {"T1", "T2"}
    assert got["T1"].modified == T0
    assert got["T1"].fields["UPDATED"] == "2025-03-01T09:00:00+00:00"
    later = flat(await read(connector, "customers", T0 + timedelta(seconds=1)))
    assert [r.id for r in later] == ["T2"]
    # a write stamps local naive time from the connector's clock
    db.clock.set(datetime.fromisoformat("2025-07-01T12:00:00+00:00"))
    rec = await connector.update("customers", "T1", {"PHONE": "x"})
    assert (await db.row("CUSTOMER", "T1"))["UPDATED"] == datetime(2025, 7, 1, 14, 0)
    assert rec.modified == db.clock.now()
    with pytest.raises(RecordError) as info:      # the cursor column is the connector's
        await connector.update("customers", "T1", {"UPDATED": "2025-01-01T00:00:00Z"})
    assert info.value.fields == ("UPDATED",)


async def test_hash_mode_detects_changes_and_rereads_the_same(db, tmp_path):
    await db.insert_many("NOTE", [{"ID": i, "BODY": f"note {i}"} for i in range(1, 11)])
    c = db.connector(tmp_path, batch_size=3)
    await c.start()
    try:
        info = c.capabilities.entities["notes"]
        assert info.incremental and info.ordered and info.reports_deletes
        first = await read(c, "notes")
        assert sorted(int(r.id) for r in flat(first)) == list(range(1, 11))
        assert all(len(p) <= 3 for p in first) and all(r.modified == T0 for r in flat(first))
        db.clock.advance(60)
        t1 = db.clock.now()
        assert flat(await read(c, "notes", t1)) == []          # nothing changed: nothing new
        await db.update("NOTE", 4, BODY="edited")
        await db.insert("NOTE", ID=11, BODY="new")
        await db.delete("NOTE", 7)
        changed = flat(await read(c, "notes", t1))
        assert [(r.id, r.deleted) for r in changed] == [("11", False), ("4", False), ("7", True)]
        assert changed[1].fields["BODY"] == "edited" and changed[1].modified == t1
        db.clock.advance(60)
        again = flat(await read(c, "notes", t1))               # the engine read again
        assert [(r.id, r.deleted, r.modified) for r in again] == \
            [(r.id, r.deleted, r.modified) for r in changed]
        assert flat(await read(c, "notes", db.clock.now())) == []
        await db.insert("NOTE", ID=7, BODY="back")             # a deleted id comes back
        assert [(r.id, r.deleted) for r in flat(await read(c, "notes", db.clock.now()))] == \
            [("7", False)]
    finally:
        await c.close()


async def test_hash_state_is_compared_page_by_page(db, tmp_path):
    """Memory-safe: one state query per page, never a set of every id."""
    from connectors.sql.state import StateStore
    await db.insert_many("NOTE", [{"ID": i, "BODY": "x"} for i in range(1, 26)])
    c = db.connector(tmp_path, batch_size=4)
    calls = []
    original = StateStore.apply_page

    async def spy(self, entity, gen, now, seen):
        calls.append(len(seen))
        return await original(self, entity, gen, now, seen)

    StateStore.apply_page = spy
    await c.start()
    try:
        await read(c, "notes")
    finally:
        StateStore.apply_page = original
        await c.close()
    assert calls == [4] * 6 + [1]


async def test_hard_deletes_by_ids_come_back_as_tombstones(db, connector):
    await db.insert("CUSTOMER", CODE="P1", NAME="Parent")
    a = await connector.create("contacts", {"CUSTOMER_CODE": "P1", "NAME": "A"})
    b = await connector.create("contacts", {"CUSTOMER_CODE": "P1", "NAME": "B"})
    await read(connector, "contacts")                         # the first scan learns the ids
    db.clock.advance(60)
    since = db.clock.now()
    await db.delete("CONTACT", int(a.id))
    got = flat(await read(connector, "contacts", since))
    assert [(r.id, r.deleted, r.modified) for r in got] == [(a.id, True, since)]
    assert not connector.capabilities.entities["contacts"].ordered
    await connector.delete("contacts", b.id)
    with pytest.raises(NotFoundError):
        await connector.delete("contacts", b.id)
    assert await connector.get("contacts", [a.id, b.id]) == []


@pytest.mark.parametrize("skew_hours", [-24, 24])
async def test_tombstones_are_dated_in_the_databases_time_not_this_machines(
        db, connector, skew_hours):
    """The database's clock (a Sage 50 workstation's) is a day away from ours: a tombstone
    dated by our clock would push the engine's cursor past edits still to come (ahead), or
    fall before ``since`` and never be read (behind)."""
    from datetime import timedelta
    await db.insert("CUSTOMER", CODE="P1", NAME="Parent")
    await db.insert("CONTACT", CUSTOMER_CODE="P1", NAME="A")
    await db.insert("CONTACT", CUSTOMER_CODE="P1", NAME="B")
    connector.now = lambda: db.clock.now() + timedelta(hours=skew_hours)
    first = flat(await read(connector, "contacts"))            # the first scan learns the ids
    since = max(r.modified for r in first)
    db.clock.advance(60)
    await db.update("CONTACT", int(first[1].id), NAME="B2")    # the table's latest: now
    await db.delete("CONTACT", int(first[0].id))
    got = {r.id: r for r in flat(await read(connector, "contacts", since))}
    assert got[first[0].id].deleted and got[first[0].id].modified == db.clock.now()
    again = {r.id for r in flat(await read(connector, "contacts", since))}
    assert first[0].id in again                                  # a re-read loses nothing


async def test_soft_deleted_rows_are_tombstones_and_left_out_of_get_and_find(db, connector):
    rec = await connector.create("customers", {"NAME": "Soft Ltd"})
    db.clock.advance(10)
    await connector.delete("customers", rec.id)
    with pytest.raises(NotFoundError):
        await connector.delete("customers", rec.id)
    with pytest.raises(NotFoundError):
        await connector.update("customers", rec.id, {"PHONE": "1"})
    tomb = [r for r in flat(await read(connector, "customers", db.clock.now()))]
    assert [(r.id, r.deleted, r.fields["DELETED"]) for r in tomb] == [(rec.id, True, 1)]
    assert await connector.get("customers", [rec.id]) == []
    assert await connector.find("customers", "NAME", ["soft ltd"]) == []


# --- writes ----------------------------------------------------------------------------------

async def test_key_generation_follows_the_greatest_code_even_when_concurrent(db, connector):
    await db.insert("CUSTOMER", CODE="C000123", NAME="Existing")
    await db.insert("CUSTOMER", CODE="CX", NAME="Other shape")
    await db.insert("CUSTOMER", CODE="D999999", NAME="Other prefix")
    rec = await connector.create("customers", {"NAME": "Next"})
    assert rec.id == rec.fields["CODE"] == "C000124" and rec.fields["TYPE"] == "C"
    many = await asyncio.gather(*[connector.create("customers", {"NAME": f"N{i}"})
                                  for i in range(2)])
    assert sorted(r.id for r in many) == ["C000125", "C000126"]
    given = await connector.create("customers", {"CODE": "MANUAL", "NAME": "Given"})
    assert given.id == "MANUAL"


async def test_integrity_errors_are_record_errors_with_fields(db, connector):
    await connector.create("customers", {"NAME": "One", "EMAIL": "a@example.com"})
    cases = [({"NAME": None}, ("NAME",)),
             ({"NAME": "Two", "EMAIL": "a@example.com"}, ("EMAIL",)),
             ({"NAME": "x" * 41}, ("NAME",)),
             ({"NAME": "Three", "BALANCE": "lots"}, ("BALANCE",))]
    for fields, expected in cases:
        with pytest.raises(RecordError) as info:
            await connector.create("customers", fields)
        assert info.value.fields == expected, fields
        assert "[SQL" not in info.value.message and "parameters" not in info.value.message
    with pytest.raises(RecordError) as info:
        await connector.create("contacts", {"CUSTOMER_CODE": "NOPE", "NAME": "Orphan"})
    assert info.value.fields == ("CUSTOMER_CODE",)
    with pytest.raises(RecordError) as info:
        await connector.create("customers", {"NAME": "X", "SHOE_SIZE": 42, "COLOUR": "red"})
    assert info.value.fields == ("SHOE_SIZE", "COLOUR") and "SHOE_SIZE" in info.value.message
    with pytest.raises(RecordError) as info:
        await connector.create("contacts", {"CUSTOMER_CODE": "C000001", "CUSTOMER_TYPE": "P"})
    assert info.value.fields == ("CUSTOMER_TYPE",)          # joined: read-only


async def test_update_is_partial_and_keeps_the_key(db, connector):
    rec = await connector.create("customers", {"NAME": "Keep", "PHONE": "1"})
    same = await connector.update("customers", rec.id, {"CODE": rec.id, "PHONE": "2"})
    assert same.fields["NAME"] == "Keep" and same.fields["PHONE"] == "2"
    with pytest.raises(RecordError) as info:
        await connector.update("customers", rec.id, {"CODE": "OTHER"})
    assert info.value.fields == ("CODE",)


async def test_binary_dates_and_decimals_round_trip(db, connector):
    png = bytes(range(256)) * 3
    rec = await connector.create("customers", {
        "NAME": "Bin", "PHOTO": base64.b64encode(png).decode(), "BORN": "1990-05-17",
        "BALANCE": 1234.5})
    assert base64.b64decode(rec.fields["PHOTO"]) == png
    assert rec.fields["BORN"] == "1990-05-17" and rec.fields["BALANCE"] == 1234.5
    stored = await db.row("CUSTOMER", rec.id)
    assert stored["PHOTO"] == png and str(stored["BALANCE"]) == "1234.50"
    with pytest.raises(RecordError) as info:
        await connector.update("customers", rec.id, {"PHOTO": "not base64!"})
    assert info.value.fields == ("PHOTO",)


async def test_find_is_case_insensitive_for_text_and_exact_otherwise(db, connector):
    a = await connector.create("customers", {"NAME": "Dupont SARL", "EMAIL": "Info@Dupont.fr"})
    await connector.create("customers", {"NAME": "Durand"})
    assert [r.id for r in await connector.find("customers", "EMAIL", ["INFO@dupont.FR"])] \
        == [a.id]
    c = await connector.create("contacts", {"CUSTOMER_CODE": a.id, "NAME": "Jean"})
    assert [r.id for r in await connector.find("contacts", "ID", [c.id, "x"])] == [c.id]
    assert [r.id for r in await connector.find("contacts", "CUSTOMER_TYPE", ["c"])] == [c.id]
    assert [r.id for r in await connector.get("contacts", [c.id, "999", "abc"])] == [c.id]


# --- join ------------------------------------------------------------------------------------

async def test_a_parent_change_makes_the_child_count_as_changed(db, connector):
    await db.insert("CUSTOMER", CODE="P1", NAME="Prospect", TYPE="P")
    child = await connector.create("contacts", {"CUSTOMER_CODE": "P1", "NAME": "Ann"})
    assert child.fields["CUSTOMER_TYPE"] == "P" and child.modified == T0
    db.clock.advance(3600)
    since = db.clock.now()
    assert flat(await read(connector, "contacts", since)) == []
    await db.update("CUSTOMER", "P1", TYPE="C")              # the prospect converts
    got = flat(await read(connector, "contacts", since))
    assert [(r.id, r.fields["CUSTOMER_TYPE"], r.modified) for r in got] == \
        [(child.id, "C", since)]
    assert got[0].fields["UPDATED"] == T0.isoformat()        # its own column is unchanged


# --- configuration and reachability ------------------------------------------------------------

async def test_a_missing_table_or_column_is_a_clear_error(db, tmp_path):
    cases = [({"x": {"table": "NO_TABLE", "key": "ID"}}, ["'x'", "entities.x.table",
                                                          "NO_TABLE"]),
             ({"x": {"table": "NOTE", "key": "ID", "columns": ["ID", "TITLE"]}},
              ["'x'", "entities.x.columns", "TITLE"]),
             ({"x": {"table": "NOTE", "key": "ID", "modified": "CHANGED"}},
              ["entities.x.modified", "CHANGED"]),
             ({"x": {"table": "CONTACT", "key": "ID",
                     "join": {"table": "CUSTOMER", "on": {"CUSTOMER_CODE": "CODE"},
                              "columns": {"T": "KIND"}}}},
              ["entities.x.join.columns.T", "KIND", "CUSTOMER"])]
    for entities, words in cases:
        c = db.connector(tmp_path, entities=entities)
        with pytest.raises(SqlConfigError) as info:
            await c.start()
        await c.close()
        for word in words:
            assert word in str(info.value), (word, str(info.value))


async def test_the_url_password_never_shows(tmp_path):
    if PG_URL is None:
        pytest.skip(NO_PG)
    url = make_url(PG_URL).set(username="accord_no_such_role", password="s3cr3t-pw")
    c = SqlConnector("erp", SqlConnector.Settings(url=url.render_as_string(False), entities={},
                                                  state_path=tmp_path / "s.sqlite"))
    await c.start()
    try:
        with pytest.raises(AuthError) as info:
            await c.check()
    finally:
        await c.close()
    assert "s3cr3t-pw" not in str(info.value) and "accord_no_such_role" in str(info.value)
    assert "***" in str(info.value)
    assert "s3cr3t-pw" not in repr(c.settings)


async def test_a_database_gone_is_unavailable(tmp_path):
    c = SqlConnector("erp", SqlConnector.Settings(
        url=f"sqlite:///{tmp_path}/missing.sqlite", state_path=tmp_path / "s.sqlite",
        entities={"notes": {"table": "NOTE", "key": "ID"}}))
    await c.start()                      # unreachable at start: check() says so
    try:
        with pytest.raises(UnavailableError):
            await c.check()
        with pytest.raises(UnavailableError):
            await c.get("notes", ["1"])
    finally:
        await c.close()
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    c = SqlConnector("erp", SqlConnector.Settings(url=f"sqlite:///{tmp_path}/junk.sqlite",
                                                  entities={}))
    await c.start()
    try:
        with pytest.raises(UnavailableError):
            await c.check()
    finally:
        await c.close()


def test_settings_refuse_contradictions():
    with pytest.raises(ValueError):
        SqlConnector.Settings(url="sqlite:///x", entities={"x": {
            "table": "T", "key": "ID", "soft_delete": {"column": "D"}, "deletes": "ids"}})
    with pytest.raises(ValueError):
        SqlConnector.Settings(url="sqlite:///x", timezone="Mars/Olympus", entities={})
    with pytest.raises(ValueError):
        SqlConnector.Settings(url="sqlite:///x", entities={}, colour="red")


# --- the database's clock and identity ---------------------------------------------------------

async def test_clock_is_the_databases_own_time_in_utc(connector):
    """A database server's CURRENT_TIMESTAMP, not the connector's injected clock (at T0); a
    SQLite file has no server: its time is the one that stamps its rows (``now``)."""
    now = await connector.clock()
    assert now.utcoffset() == timedelta(0)
    if connector._sqlite:
        assert now == connector.now()
    else:
        assert abs(now - datetime.now(timezone.utc)) < timedelta(seconds=5)


async def test_clock_is_none_when_the_database_cannot_be_reached(tmp_path):
    c = SqlConnector("erp", SqlConnector.Settings(
        url=f"sqlite:///{tmp_path}/gone.sqlite", entities={}, state_path=tmp_path / "s.sqlite"))
    await c.start()
    try:
        assert await c.clock() is None
        with pytest.raises(UnavailableError):
            await c.identity()
    finally:
        await c.close()


async def test_identity_names_the_database_and_never_its_credentials(connector, db, tmp_path):
    identity = await connector.identity()
    assert identity == await connector.identity()
    if db.backend == "sqlite":
        assert identity == f"sqlite:///{(tmp_path / 'erp.sqlite').resolve()}"
        return
    url = make_url(db.url)
    assert identity.startswith(f"postgresql://{url.host}:{url.port or 5432}/{url.database} "
                               "(oid ") or identity.startswith(
        f"postgresql://{url.host}/{url.database} (oid ")
    assert (url.username or "@") not in identity.split("//", 1)[1].split("/", 1)[0]
    if url.password:
        assert url.password not in identity


async def test_identity_marker_tells_a_database_made_again_in_the_same_place(db, tmp_path):
    await db.insert("NOTE", ID=1, BODY="file-0001")
    c = db.connector(tmp_path, identity_marker={"table": "NOTE", "column": "BODY"})
    await c.start()
    try:
        first = await c.identity()
        assert first.endswith(" (NOTE.BODY file-0001)")
        await db.delete("NOTE", 1)                     # the "same" database, made again
        await db.insert("NOTE", ID=1, BODY="file-0002")
        assert await c.identity() != first
    finally:
        await c.close()


async def test_a_named_identity_marker_that_does_not_exist_is_a_config_error(db, tmp_path):
    c = db.connector(tmp_path, identity_marker={"table": "COMPANY", "column": "GUID"})
    await c.start()
    try:
        with pytest.raises(SqlConfigError, match="identity_marker: COMPANY.GUID"):
            await c.identity()
    finally:
        await c.close()
