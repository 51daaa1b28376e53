"""Sage BOB 50: the default layout against the generated SQLite sandbox (a real file under
tmp_path), personal fields and their description, VAT look-ups written any way, renames."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest

from connectors.base import UnavailableError
from connectors.bob50 import Bob50Connector
from connectors.bob50.sandbox import Bob50Sandbox, spell, vat
from connectors.sandbox import Clock
from tests.connector_contract import ConnectorContract

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def make(url: str, tmp_path, clock: Clock | None = None, **extra) -> Bob50Connector:
    c = Bob50Connector("bob", Bob50Connector.Settings(
        url=url, state_path=tmp_path / "bob-state.sqlite", **extra))
    if clock is not None:
        c.now = clock.now
    return c


@pytest.fixture
async def sandbox(tmp_path):
    sb = Bob50Sandbox(seed=3, records=12, clock=Clock(T0), path=tmp_path / "bob.sqlite")
    await sb.start()
    yield sb
    await sb.stop()


@pytest.fixture
async def connector(sandbox, tmp_path):
    c = make(sandbox.url, tmp_path, sandbox.clock)
    await c.start()
    yield c
    await c.close()


class TestBob50Contract(ConnectorContract):
    entity = "third_parties"
    new_fields = {"TP_TYPE": "C", "NAME": "Bakkerij Peeters BV", "CITY": "Gent",
                  "VAT_NUMBER": "BE 0412.345.678", "BOBSYNC": 1, "PF_SECTOR": "Horeca"}
    edit_fields = {"PHONE": "09 222 33 44", "PF_EMPLOYEES": 12}
    invalid_fields = {"TP_TYPE": "X"}              # CHECK (TP_TYPE IN ('C', 'S'))

    @pytest.fixture
    async def bad_connector(self, tmp_path):
        c = make(f"sqlite:///{tmp_path}/missing.sqlite", tmp_path)
        await c.start()
        yield c
        await c.close()

    async def test_check_refuses_bad_credentials_with_auth_error(self, bad_connector):
        # a SQLite accounting file has no credentials: a missing file is UnavailableError
        with pytest.raises(UnavailableError):
            await bad_connector.check()

    async def test_transient_faults_are_retried(self):
        pytest.skip("no HTTP: a database connector has no transient HTTP faults to retry")

    async def test_429_honours_retry_after(self):
        pytest.skip("no HTTP: no rate limit")


async def test_personal_fields_are_fields_described_as_custom(connector):
    fields = {f.name: f for f in await connector.fields("third_parties")}
    assert fields["PF_SECTOR"].custom and fields["PF_SECTOR"].label == "Sector"
    assert fields["PF_EMPLOYEES"].type == "number"
    assert not fields["NAME"].custom and fields["NAME"].label == "Naam"
    rec = (await connector.get("third_parties", ["C00001"]))[0]
    assert "PF_SECTOR" in rec.fields and "PF_INTERNAL" in rec.fields


async def test_a_vat_number_is_found_however_it_is_written(connector, sandbox):
    sandbox.insert("third_parties", TP_ID="C09001", NAME="X", VAT_NUMBER="BE 0999.888.777")
    for asked in ("0999888777", "be0999.888.777", "BE-0999 888 777"):
        found = await connector.find("third_parties", "VAT_NUMBER", [asked])
        assert [r.id for r in found] == ["C09001"], asked
    assert await connector.find("third_parties", "VAT_NUMBER", ["0999888778"]) == []


async def test_generated_vat_numbers_are_written_in_several_ways(sandbox):
    numbers = [r["VAT_NUMBER"] for r in sandbox.rows("third_parties") if r["VAT_NUMBER"]]
    assert len({n[:2] for n in numbers}) > 1
    assert spell(vat(5), 0) == f"BE {vat(5)[:4]}.{vat(5)[4:7]}.{vat(5)[7:]}"


async def test_tables_and_columns_can_be_renamed(tmp_path):
    path = tmp_path / "renamed.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE TIERS (T_CODE VARCHAR(10) PRIMARY KEY, TP_TYPE VARCHAR(1), NAME TEXT,
            T_TVA TEXT, BOBSYNC INTEGER, ADDRESS TEXT, POSTCODE TEXT, CITY TEXT, COUNTRY TEXT,
            PHONE TEXT, EMAIL TEXT, WEBSITE TEXT, LANGUAGE TEXT, CREATED_AT DATETIME,
            MODIFIED_AT DATETIME, CRM_ID TEXT, PF_COLOUR TEXT);
        CREATE TABLE CONTACT (CONTACT_ID INTEGER PRIMARY KEY, TP_ID TEXT, FIRST_NAME TEXT,
            LAST_NAME TEXT, FUNCTION TEXT, PHONE TEXT, EMAIL TEXT, MODIFIED_AT DATETIME);
        CREATE TABLE CHAMPS (CODE TEXT, LIBELLE TEXT, GENRE TEXT);
        INSERT INTO CHAMPS VALUES ('PF_COLOUR', 'Kleur', 'text');
        INSERT INTO TIERS (T_CODE, TP_TYPE, NAME, T_TVA, PF_COLOUR)
            VALUES ('K1', 'C', 'Renamed BV', 'BE0123456789', 'blauw');
    """)
    db.commit()
    db.close()
    c = make(f"sqlite:///{path}", tmp_path, layout={
        "third_parties": {"table": "TIERS", "columns": {"TP_ID": "T_CODE",
                                                       "VAT_NUMBER": "T_TVA"}},
        "personal_fields": {"table": "CHAMPS", "columns": {"NAME": "CODE", "LABEL": "LIBELLE",
                                                          "TYPE": "GENRE"}}},
        identity_marker=None)
    await c.start()
    try:
        (rec,) = await c.get("third_parties", ["K1"])
        assert rec.fields["VAT_NUMBER"] == "BE0123456789" and rec.fields["PF_COLOUR"] == "blauw"
        assert [f.label for f in await c.fields("third_parties") if f.custom] == ["Kleur"]
    finally:
        await c.close()


def test_an_unknown_layout_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown logical column"):
        Bob50Connector.Settings(url="sqlite:///x", layout={"third_parties": {"columns": {
            "NOPE": "X"}}})
