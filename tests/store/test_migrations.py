"""Alembic migrations of the state database, on SQLite and PostgreSQL (``state_url``).

- an empty database is upgraded to the head, and the migrated schema is exactly what
  daemon/store/tables.py declares (autogenerate finds nothing to do);
- a database at the first revision with rows in it is upgraded and keeps its rows;
- a database made before migrations (accord's tables, no revision) is behind, and migrate fixes it;
- the start policy: empty -> migrated, behind -> SchemaBehind (one line), unknown -> SchemaAhead.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, inspect, insert, select, table, text

from daemon.store import schema
from daemon.store.db import make_engine
from daemon.store.tables import T, metadata
from tests.dbs import OPEN

AT = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
# record_errors as revision 0001 made it (later revisions add columns)
ERRORS_0001 = table("record_errors", *[column(c) for c in (
    "integration", "flow", "side", "record_id", "message", "retry", "count", "run_id",
    "updated_at")])


# links as revision 0001 made it (0008 adds the counts of the bases' fields)
LINKS_0001 = table("links", *[column(c) for c in (
    "id", "integration", "flow", "left_id", "right_id", "left_base", "right_base", "left_hash",
    "right_hash", "left_version", "right_version", "state", "updated_at")])


def as_0001(name: str):
    return {"record_errors": ERRORS_0001, "links": LINKS_0001}.get(name, T[name])


def engine(url: str):
    db = make_engine(url)
    OPEN.append(db)
    return db


async def schema_diff(db) -> list:
    async with db.connect() as conn:
        return await conn.run_sync(lambda c: compare_metadata(
            MigrationContext.configure(c, opts={"compare_type": True}), metadata))


async def indexes(db, table: str) -> set[str]:
    async with db.connect() as conn:
        return await conn.run_sync(
            lambda c: {i["name"] for i in inspect(c).get_indexes(table)})


async def seed(db) -> None:
    """Rows as revision 0001 knows them: a link, a run with its step, an open error."""
    async with db.begin() as conn:
        run_id = (await conn.execute(insert(T["runs"]).values(
            integration="ul", trigger="schedule", status="errors", message="1 record error",
            started_at=AT, finished_at=AT))).inserted_primary_key[0]
        await conn.execute(insert(T["steps"]).values(
            run_id=run_id, flow="customers", status="errors", counts='{"created_right": 1}',
            started_at=AT, finished_at=AT))
        await conn.execute(insert(T["links"]).values(
            integration="ul", flow="customers", left_id="L1", right_id="R1",
            left_base='{"Name": "Acme"}', right_base='{"name": "Acme"}', left_hash="h1",
            right_hash="h2", updated_at=AT))
        await conn.execute(insert(ERRORS_0001).values(
            integration="ul", flow="customers", side="right", record_id="R2",
            message="422: Name is required", retry=True, count=2, run_id=run_id,
            updated_at=AT))


async def seeded_rows(db) -> dict[str, list[dict]]:
    async with db.connect() as conn:
        return {t: [dict(r) for r in (await conn.execute(select(as_0001(t)))).mappings()]
                for t in ("runs", "steps", "links", "record_errors")}


def as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# --- upgrade --------------------------------------------------------------------------------
async def test_an_empty_database_upgrades_to_exactly_what_tables_py_declares(state_url):
    db = engine(state_url)
    assert await schema.current(db) is None
    assert await schema.upgrade(db) == (None, schema.head())
    assert await schema.current(db) == schema.head() == schema.revisions()[-1]
    assert await schema_diff(db) == []
    assert "ix_record_errors_retry" in await indexes(db, "record_errors")
    assert await schema.upgrade(db) == (schema.head(), schema.head())     # idempotent


async def test_a_database_at_0001_with_rows_upgrades_and_keeps_them(state_url):
    db = engine(state_url)
    assert await schema.upgrade(db, "0001") == (None, "0001")
    assert await schema.current(db) == "0001"
    assert "ix_record_errors_retry" not in await indexes(db, "record_errors")
    await seed(db)
    before = await seeded_rows(db)
    assert await schema.upgrade(db) == ("0001", schema.head())
    after = await seeded_rows(db)
    assert after == before and all(after.values())
    assert as_utc(after["runs"][0]["started_at"]) == AT        # an aware UTC round trip
    assert after["record_errors"][0]["retry"] in (True, 1)
    assert "ix_record_errors_retry" in await indexes(db, "record_errors")
    assert await schema_diff(db) == []


async def test_a_database_made_before_migrations_is_behind_and_migrate_stamps_it(state_url):
    db = engine(state_url)
    await schema.upgrade(db, "0001")
    await seed(db)
    await schema.stamp(db, None)             # accord's tables, no alembic_version row
    assert await schema.current(db) is None
    with pytest.raises(schema.SchemaBehind, match="at no revision"):
        await schema.check(db)
    assert await schema.upgrade(db) == (None, schema.head())
    assert all((await seeded_rows(db)).values())
    assert await schema.check(db) == schema.head()


# --- the policy at start --------------------------------------------------------------------
async def test_check_migrates_a_brand_new_database(state_url):
    db = engine(state_url)
    assert await schema.check(db) == schema.head()
    assert await schema.current(db) == schema.head()
    assert await schema_diff(db) == []


async def test_check_refuses_a_database_behind_with_one_line(state_url):
    db = engine(state_url)
    await schema.upgrade(db, "0001")
    with pytest.raises(schema.SchemaBehind) as exc:
        await schema.check(db, config_path="/etc/accord/config.toml")
    line = str(exc.value)
    assert "\n" not in line
    assert line == (f"the state database at {schema.where(state_url)} is at revision 0001, "
                    f"this accord needs {schema.head()}: run "
                    f"`accord migrate --config /etc/accord/config.toml`")
    assert await schema.current(db) == "0001"         # refused, not touched


async def test_a_revision_this_accord_does_not_know_is_refused(state_url):
    db = engine(state_url)
    await schema.upgrade(db)
    async with db.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(schema.SchemaAhead, match="revision 9999, which this accord does not"):
        await schema.check(db)
    with pytest.raises(schema.SchemaAhead):
        await schema.upgrade(db)


async def test_other_tables_are_left_alone_and_half_of_accords_tables_are_refused(state_url):
    db = engine(state_url)
    async with db.begin() as conn:
        await conn.execute(text("CREATE TABLE someone_else (id INTEGER PRIMARY KEY)"))
    assert await schema.check(db) == schema.head()      # a shared database: accord's are added
    async with db.connect() as conn:
        assert "someone_else" in await conn.run_sync(lambda c: inspect(c).get_table_names())
    async with db.begin() as conn:
        await conn.execute(text("DROP TABLE alembic_version"))
        await conn.execute(text("DROP TABLE audit"))
    with pytest.raises(schema.SchemaError, match="is it accord's state database"):
        await schema.check(db)
    with pytest.raises(schema.SchemaError, match="is it accord's state database"):
        await schema.upgrade(db)


def test_where_hides_the_password_and_the_driver():
    assert schema.where("postgresql://accord:s3cret@db.example/accord") == \
        "postgresql://accord:***@db.example/accord"
    assert schema.where(make_engine("postgresql://u:pw@h/db")) == "postgresql://u:***@h/db"
    assert schema.where("sqlite:///state.db") == "sqlite:///state.db"


def test_the_migrations_ship_inside_the_package():
    """A non-editable install has them: they are package data of daemon.store.migrations."""
    from importlib import resources
    files = resources.files("daemon.store.migrations")
    assert files.joinpath("env.py").is_file() and files.joinpath("script.py.mako").is_file()
    names = {p.name for p in files.joinpath("versions").iterdir()}
    assert {"0001_initial.py", "0002_record_errors_retry_index.py",
            "0003_plan_gates_quarantine.py", "0004_pauses.py", "0005_perf_indexes.py",
            "0006_rereads.py", "0007_audit_one_row_a_write.py",
            "0008_link_base_fields.py"} <= names
    assert schema.revisions() == ["0001", "0002", "0003", "0004", "0005", "0006", "0007",
                                  "0008"]


# --- 0007: the audit, a row a write -----------------------------------------------------------
AUDIT_0006 = table("audit", *[column(c) for c in (
    "id", "run_id", "integration", "flow", "side", "record_id", "field", "old", "new", "rule",
    "at")])


async def test_audit_rows_of_a_field_each_become_rows_of_a_write_and_back(state_url):
    """Revision 0007: each audit row of 0006 (a field) becomes a row of one field, its old
    and new values the values themselves; new rows go on with new ids; a downgrade gives
    the rows of a field back."""
    from alembic import command

    from daemon.store import queries as q
    from daemon.store.db import dumps, loads
    db = engine(state_url)
    await schema.upgrade(db, "0006")
    old = [dict(id=1, run_id=1, integration="ul", flow="customers", side="right",
                record_id="R1", field="title", old="null", new='"Acme"', rule="create", at=AT),
           dict(id=2, run_id=2, integration="ul", flow="customers", side="right",
                record_id="R1", field="address", old='{"city":"Lyon"}', new='["a",1]',
                rule="left changed", at=AT)]
    async with db.begin() as conn:
        await conn.execute(insert(AUDIT_0006), old)
    assert await schema.upgrade(db) == ("0006", schema.head())
    async with db.begin() as conn:
        await q.add_audit(conn, [dict(run_id=3, integration="ul", flow="customers",
                                      side="left", record_id="L1", at=AT, fields=dumps(
                                          [{"field": "name", "old": "a", "new": "b",
                                            "rule": "right changed"}]))])
        rows = (await conn.execute(select(T["audit"]).order_by(T["audit"].c.id))).mappings()
        got = [(r["id"], r["run_id"], loads(r["fields"])) for r in rows]
    assert got == [
        (1, 1, [{"field": "title", "old": None, "new": "Acme", "rule": "create"}]),
        (2, 2, [{"field": "address", "old": {"city": "Lyon"}, "new": ["a", 1],
                 "rule": "left changed"}]),
        (3, 3, [{"field": "name", "old": "a", "new": "b", "rule": "right changed"}])]
    assert await schema_diff(db) == []
    async with db.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(
            schema.alembic_config(connection=c), "0006"))
        back = [dict(r) for r in (await conn.execute(
            select(AUDIT_0006).order_by(AUDIT_0006.c.id))).mappings()]
    assert [(r["field"], loads(r["old"]), loads(r["new"]), r["rule"]) for r in back] == [
        ("title", None, "Acme", "create"), ("address", {"city": "Lyon"}, ["a", 1],
                                            "left changed"),
        ("name", "a", "b", "right changed")]


# --- 0008: how many fields a link's base holds -----------------------------------------------
async def test_links_get_the_count_of_their_bases_fields(state_url):
    """Revision 0008 counts the fields of every existing base (an empty one holds none);
    the quiet-record look-up reads the count, -1 where a link has none."""
    from daemon.store import queries as q
    db = engine(state_url)
    await schema.upgrade(db, "0007")
    async with db.begin() as conn:
        await conn.execute(insert(LINKS_0001), [
            dict(integration="ul", flow="customers", left_id="L1", right_id="R1",
                 left_base='{"Name":"Acme","Phone":null}', right_base="{}", left_hash="h1",
                 right_hash="h2", state="ok", updated_at=AT)])
    await schema.upgrade(db)
    async with db.begin() as conn:
        row = (await conn.execute(select(T["links"]))).mappings().one()
        assert (row["left_fields"], row["right_fields"]) == (2, 0)
        assert await q.link_digests(conn, "ul", "customers", "left", ["L1"]) == {
            "L1": ("ok", "h1", 2)}
        await conn.execute(T["links"].update().values(right_fields=None))
        assert await q.link_digests(conn, "ul", "customers", "right", ["R1"]) == {
            "R1": ("ok", "h2", -1)}
    assert await schema_diff(db) == []
