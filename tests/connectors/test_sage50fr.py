"""Sage 50 FR: the default layout against the generated SQLite sandbox (a real file under
tmp_path), layout overrides, and the sandbox's own helpers and generator."""
from __future__ import annotations

import base64
import random
import sqlite3
from datetime import datetime, timezone

import pytest

from connectors.base import RecordError, UnavailableError
from connectors.sage50fr import Sage50FrConnector
from connectors.sage50fr.layout import DEFAULT
from connectors.sage50fr.sandbox import Sage50FrSandbox
from connectors.sandbox import Clock
from connectors.sql import SqlConfigError
from tests.connector_contract import ConnectorContract

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def make(url: str, tmp_path, clock: Clock | None = None, **extra) -> Sage50FrConnector:
    c = Sage50FrConnector("sage50", Sage50FrConnector.Settings(
        url=url, state_path=tmp_path / "sage-state.sqlite", **extra))
    if clock is not None:
        c.now = clock.now
    return c


async def read(connector, entity, since=None):
    return [r async for page in connector.changes(entity, since) for r in page]


@pytest.fixture
async def sandbox(tmp_path):
    sb = Sage50FrSandbox(seed=3, records=12, clock=Clock(T0), path=tmp_path / "sage.sqlite")
    await sb.start()
    yield sb
    await sb.stop()


@pytest.fixture
async def connector(sandbox, tmp_path):
    c = make(sandbox.url, tmp_path, sandbox.clock)
    await c.start()
    yield c
    await c.close()


class TestSage50FrContract(ConnectorContract):
    entity = "third_parties"
    new_fields = {"TYPE": "C", "NAME": "Boulangerie Martin SARL", "CITY": "Dijon",
                  "POSTCODE": "21000", "PHONE": "03 80 00 00 00", "SALES_REP": "Claire Fontaine"}
    edit_fields = {"PHONE": "03 80 11 11 11", "TYPE": "C"}
    invalid_fields = {"TYPE": "X"}                 # CHECK (TYPE IN ('C', 'P'))

    @pytest.fixture
    async def bad_connector(self, tmp_path):
        c = make(f"sqlite:///{tmp_path}/missing.sqlite", tmp_path)
        await c.start()
        yield c
        await c.close()

    async def test_check_refuses_bad_credentials_with_auth_error(self, bad_connector):
        # a SQLite company file has no credentials: a missing file is UnavailableError
        # (AuthError for a refused login is tested against PostgreSQL in test_sql.py)
        with pytest.raises(UnavailableError):
            await bad_connector.check()

    async def test_transient_faults_are_retried(self):
        pytest.skip("no HTTP: a database connector has no transient HTTP faults to retry")

    async def test_429_honours_retry_after(self):
        pytest.skip("no HTTP: no rate limit")


async def test_every_entity_reads_with_the_logical_names(connector, sandbox):
    for entity, table in DEFAULT.items():
        records = await read(connector, entity)
        assert len(records) == sandbox.count(entity) > 0, entity
        assert set(records[0].fields) >= set(table.columns), entity
    contact = (await read(connector, "contacts"))[0]
    parent = sandbox.row("third_parties", contact.fields["ACCOUNT_CODE"])
    assert contact.fields["ACCOUNT_TYPE"] == parent["TYPE"]
    assert contact.modified == T0 and contact.fields["MODIFIED_AT"] == T0.isoformat()
    info = connector.capabilities.entities
    assert all(i.reports_deletes and i.incremental for i in info.values())


async def test_a_created_customer_gets_the_next_code_and_local_times(connector, sandbox):
    sandbox.clock.set(datetime(2025, 7, 1, 8, 0, tzinfo=timezone.utc))
    rec = await connector.create("third_parties", {"TYPE": "C", "NAME": "Nouveau Client SAS"})
    codes = [r["ACCOUNT_CODE"] for r in sandbox.rows("third_parties")]
    assert rec.id == max(codes) == "C000013"
    stored = sandbox.row("third_parties", rec.id)
    assert stored["CREATED_AT"] == stored["MODIFIED_AT"] == "2025-07-01 10:00:00.000000"
    assert rec.fields["CREATED_AT"] == "2025-07-01T08:00:00+00:00"
    contact = await connector.create("contacts", {"ACCOUNT_CODE": rec.id, "LAST_NAME": "Petit",
                                                  "FIRST_NAME": "Léa"})
    assert contact.fields["IS_CONTACT"] == 1 and contact.fields["ACCOUNT_TYPE"] == "C"
    with pytest.raises(RecordError) as info:
        await connector.create("contacts", {"ACCOUNT_CODE": "NOPE", "LAST_NAME": "X"})
    assert info.value.fields == ("ACCOUNT_CODE",)


async def test_a_converted_prospect_brings_its_contacts_into_changes(connector, sandbox):
    prospect = sandbox.insert("third_parties", TYPE="P", NAME="Prospect Durand")
    contact = sandbox.insert("contacts", ACCOUNT_CODE=prospect["ACCOUNT_CODE"],
                             LAST_NAME="Durand", IS_CONTACT=1)
    sandbox.clock.advance(900)
    since = sandbox.clock.now()
    assert await read(connector, "contacts", since) == []
    sandbox.update("third_parties", prospect["ACCOUNT_CODE"], TYPE="C")
    got = await read(connector, "contacts", since)
    assert [(r.id, r.fields["ACCOUNT_TYPE"]) for r in got] == \
        [(str(contact["CONTACT_ID"]), "C")]


async def test_hard_deletes_in_sage_come_back_as_tombstones(connector, sandbox):
    await read(connector, "invoices")
    sandbox.clock.advance(60)
    since = sandbox.clock.now()
    gone = sandbox.rows("invoices")[0]["INVOICE_ID"]
    sandbox.delete("invoices", gone)
    got = await read(connector, "invoices", since)
    assert [(r.id, r.deleted) for r in got] == [(str(gone), True)]


async def test_another_database_is_not_taken_for_deletes(connector, sandbox, tmp_path):
    await read(connector, "invoices")                   # the state learns these ids
    other = Sage50FrSandbox(seed=9, records=2, clock=sandbox.clock, path=tmp_path / "o.sqlite")
    await other.start()
    c = make(other.url, tmp_path, sandbox.clock)        # the same state file
    await c.start()
    try:
        got = await read(c, "invoices")
        assert got and not any(r.deleted for r in got)
        assert len(got) == other.count("invoices")
    finally:
        await c.close()
        await other.stop()


async def test_item_images_are_base64_pngs(connector, sandbox):
    items = await read(connector, "items")
    pictures = [base64.b64decode(r.fields["IMAGE"]) for r in items if r.fields["IMAGE"]]
    assert pictures and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pictures)
    assert all(100 < len(p) < 1000 for p in pictures)


async def test_layout_overrides_rename_tables_and_columns(sandbox, tmp_path):
    db = sqlite3.connect(sandbox.path)
    db.executescript("""
        ALTER TABLE THIRD_PARTY RENAME TO F_COMPTET;
        ALTER TABLE F_COMPTET RENAME COLUMN ACCOUNT_CODE TO CT_Num;
        ALTER TABLE F_COMPTET RENAME COLUMN NAME TO CT_Intitule;
        ALTER TABLE F_COMPTET RENAME COLUMN MODIFIED_AT TO cbModification;
        ALTER TABLE CONTACT RENAME COLUMN LAST_NAME TO CT_Nom;
    """)
    db.close()
    c = make(sandbox.url, tmp_path, sandbox.clock, layout={
        "third_parties": {"table": "F_COMPTET", "columns": {
            "ACCOUNT_CODE": "CT_Num", "NAME": "CT_Intitule", "MODIFIED_AT": "cbModification"}},
        "contacts": {"columns": {"LAST_NAME": "CT_Nom"}}})
    await c.start()
    try:
        parties = await read(c, "third_parties")
        assert len(parties) == 12 and {"ACCOUNT_CODE", "NAME"} <= set(parties[0].fields)
        assert "CT_Num" not in parties[0].fields
        found = await c.find("third_parties", "NAME", [parties[0].fields["NAME"].upper()])
        assert parties[0].id in {r.id for r in found}
        contacts = await read(c, "contacts")
        assert contacts and contacts[0].fields["LAST_NAME"] and "ACCOUNT_TYPE" in \
            contacts[0].fields
        rec = await c.create("third_parties", {"NAME": "Renommée SARL", "TYPE": "P"})
        assert rec.id == "C000013" and rec.fields["NAME"] == "Renommée SARL"
    finally:
        await c.close()
    broken = make(sandbox.url, tmp_path)                   # the default names are gone now
    with pytest.raises(SqlConfigError) as info:
        await broken.start()
    await broken.close()
    assert "THIRD_PARTY" in str(info.value) and "third_parties" in str(info.value)


def test_layout_settings_refuse_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown logical column"):
        Sage50FrConnector.Settings(url="sqlite:///x", layout={
            "third_parties": {"columns": {"CT_Num": "ACCOUNT_CODE"}}})
    with pytest.raises(ValueError, match="unknown entity"):
        Sage50FrConnector.Settings(url="sqlite:///x", layout={"orders": {"table": "F_DOC"}})
    assert Sage50FrConnector.Settings(url="sqlite:///x").timezone == "Europe/Paris"


# --- the sandbox -------------------------------------------------------------------------------

async def test_sandbox_helpers_act_as_a_sage_user(tmp_path):
    clock = Clock(T0)
    sb = Sage50FrSandbox(clock=clock, path=tmp_path / "s.sqlite")
    assert Sage50FrSandbox.url_setting == "url"
    url = await sb.start()
    try:
        assert url == sb.url == f"sqlite:///{tmp_path / 's.sqlite'}" and sb.count("items") == 0
        party = sb.insert("third_parties", NAME="Garage Moreau", TYPE="P")
        assert party["ACCOUNT_CODE"] == "C000001"
        assert party["MODIFIED_AT"] == "2025-03-01 10:00:00.000000"     # Paris, naive
        clock.advance(60)
        sb.update("third_parties", "C000001", TYPE="C")
        assert sb.row("third_parties", "C000001")["MODIFIED_AT"] == "2025-03-01 10:01:00.000000"
        contact = sb.insert("contacts", ACCOUNT_CODE="C000001", LAST_NAME="Moreau")
        assert contact["CONTACT_ID"] == 1 and contact["IS_CONTACT"] == 1
        sb.delete("contacts", 1)
        assert sb.row("contacts", 1) is None and sb.rows("contacts") == []
        with pytest.raises(KeyError):
            sb.delete("contacts", 1)
        with pytest.raises(sqlite3.IntegrityError):
            sb.insert("contacts", ACCOUNT_CODE="NOPE", LAST_NAME="X")
    finally:
        await sb.stop()


async def test_sandbox_generates_plausible_data_at_small_scale(tmp_path):
    sb = Sage50FrSandbox(seed=5, records=200, clock=Clock(T0), path=tmp_path / "g.sqlite",
                         invoices_per_account=3)
    await sb.start()
    try:
        parties = sb.rows("third_parties")
        customers = [p for p in parties if p["TYPE"] == "C"]
        assert len(parties) == 200 and 0.55 < len(customers) / 200 < 0.85
        assert any(p["SALES_REP"] for p in parties) and not all(p["SALES_REP"] for p in parties)
        contacts = sb.rows("contacts")
        assert 300 < len(contacts) < 500
        assert 0.6 < sum(c["IS_CONTACT"] for c in contacts) / len(contacts) < 0.9
        items = sb.rows("items")
        assert len(items) == 100
        assert any(i["STOCK_TYPE"] == "N" for i in items) and any(i["ACTIVE"] == 0 for i in items)
        assert all(i["STOCK_QTY"] is None for i in items if i["STOCK_TYPE"] == "N")
        assert len({i["IMAGE"] for i in items if i["IMAGE"]}) > 3
        assert sb.count("invoices") == 3 * len(customers)
        assert all(i["NUMBER"].startswith("FA") for i in sb.rows("invoices"))
        done = {sb.touch(random.Random(k)).split(" ")[0] for k in range(25)}
        assert len(done) >= 4
        before = sb.count("third_parties")
    finally:
        await sb.stop()
    again = Sage50FrSandbox(seed=5, records=200, clock=Clock(T0), path=tmp_path / "g.sqlite")
    await again.start()                      # an existing file is kept, not seeded again
    assert again.count("third_parties") == before
    await again.stop()


async def test_a_temporary_file_when_no_path_is_given():
    sb = Sage50FrSandbox(seed=1, records=3, products=2, contacts_per_account=0)
    url = await sb.start()
    try:
        assert url.startswith("sqlite:///") and sb.path.exists()
        assert sb.count("third_parties") == 3 and sb.count("items") == 2
        assert sb.count("contacts") == 0
    finally:
        await sb.stop()


async def test_the_daemon_starts_a_generated_database_for_a_sql_system(tmp_path):
    """``type = "sql"`` with a ``sandbox`` table: the daemon makes the database file and points
    the connector's ``url`` at it (its entities name the Sage 50 default layout's tables)."""
    from daemon.app import App
    from daemon.config import load
    path = tmp_path / "accord.toml"
    path.write_text(f"""
[daemon]
database = "sqlite:///{tmp_path / 'state.db'}"

[systems.erp]
type = "sql"
state_path = "{tmp_path / 'ids.sqlite'}"
sandbox = {{ records = 3, seed = 1, options = {{ path = "{tmp_path / 'erp.sqlite'}" }} }}

[systems.erp.entities.customers]
table = "THIRD_PARTY"
key = "ACCOUNT_CODE"
columns = ["ACCOUNT_CODE", "NAME", "TYPE", "MODIFIED_AT"]
modified = "MODIFIED_AT"
deletes = "ids"

[systems.crm]
type = "memory"
entities = ["companies"]

[integrations.t]
left = "erp"
right = "crm"

[[integrations.t.flows]]
name = "customers"
left_entity = "customers"
right_entity = "companies"
direction = "left_to_right"
fields = [{{ left = "ACCOUNT_CODE", right = "code" }}, {{ left = "NAME", right = "name" }}]
match = [{{ left = "ACCOUNT_CODE", right = "code" }}]
""")
    from daemon.engine.runner import run
    app = await App(load(path)).start(activity=False)
    try:
        erp = app.connectors["erp"]
        await erp.check()
        records = await read(erp, "customers")
        assert len(records) == 3 and all(r.id.startswith("C") for r in records)
        assert (tmp_path / "erp.sqlite").exists()
        result = await run(app.db, app.integration("t"))
        assert result.status == "ok"
        assert len(app.connectors["crm"].data["companies"]) == 3
    finally:
        await app.close()


# --- identity ------------------------------------------------------------------------------------

async def test_identity_is_the_file_and_its_company_file_id(connector, sandbox):
    identity = await connector.identity()
    assert identity == await connector.identity()
    assert identity == (f"sqlite:///{sandbox.path.resolve()} "
                        f"(COMPANY_FILE.FILE_ID {sandbox.instance_id})")


async def test_a_file_generated_again_at_the_same_path_is_another_instance(tmp_path):
    path = tmp_path / "regen.sqlite"
    ids = []
    for _ in range(2):
        sb = Sage50FrSandbox(seed=7, records=2, clock=Clock(T0), path=path)
        await sb.start()
        c = make(sb.url, tmp_path)
        await c.start()
        try:
            ids.append(await c.identity())
        finally:
            await c.close()
            await sb.stop()
        path.unlink()
    assert ids[0] != ids[1] and all(str(path.resolve()) in i for i in ids)


async def test_a_database_without_the_default_marker_is_named_by_its_location(tmp_path):
    path = tmp_path / "plain.sqlite"
    sb = Sage50FrSandbox(seed=7, records=1, clock=Clock(T0), path=path)
    await sb.start()
    await sb.stop()
    with sqlite3.connect(path) as db:           # a Sage version without that table
        db.execute("DROP TABLE COMPANY_FILE")
    c = make(f"sqlite:///{path}", tmp_path)
    await c.start()
    try:
        assert await c.identity() == f"sqlite:///{path.resolve()}"
    finally:
        await c.close()
