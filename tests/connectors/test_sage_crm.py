"""Sage CRM SData 2.0: the contract against the sandbox over loopback, keyset paging with
records sharing a timestamp, soft deletes, the where parser, prototypes, the error body."""
from __future__ import annotations

import base64
from datetime import datetime, timezone

import aiohttp
import pytest

from connectors.base import RecordError
from connectors.sage_crm import SageCrmConnector
from connectors.sage_crm.sandbox import PASSWORD, USER, SageCrmSandbox
from connectors.sage_crm.where import WhereError, compile_where, parse
from connectors.sandbox import Clock
from tests.connector_contract import ConnectorContract

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def make(url: str, password: str = PASSWORD, **kw) -> SageCrmConnector:
    return SageCrmConnector("crm", SageCrmConnector.Settings(
        base_url=url, username=USER, password=password, attempts=3, max_wait=0, **kw))


@pytest.fixture
async def sandbox():
    sb = SageCrmSandbox(seed=1, records=5, clock=Clock(T0))
    await sb.start()
    yield sb
    await sb.stop()


@pytest.fixture
async def connector(sandbox):
    c = make(sandbox.url)
    await c.start()
    yield c
    await c.close()


class TestSageCrmContract(ConnectorContract):
    entity = "Company"
    new_fields = {"comp_name": "Bakkerij Peeters BV", "comp_type": "Customer",
                  "comp_vatnumber": "BE0412345678", "comp_bobsync": "Y"}
    edit_fields = {"comp_website": "https://peeters.example.be"}
    invalid_fields = {"comp_name": ""}

    @pytest.fixture
    async def bad_connector(self, sandbox):
        c = make(sandbox.url, password="wrong-secret")
        await c.start()
        yield c
        await c.close()


async def test_pages_hold_every_record_even_when_many_share_a_timestamp(connector, sandbox):
    for i in range(250):
        sandbox.add("Company", comp_name=f"Same time {i}")
    got = [r.id async for page in connector.changes("Company", None) for r in page]
    assert len(got) == len(set(got)) == 255
    sandbox.clock.advance(60)
    sandbox.edit("Company", 3, comp_name="edited")
    since = sandbox.clock.now()
    assert [r.id async for page in connector.changes("Company", since) for r in page] == ["3"]


async def test_a_full_last_page_ends_the_listing_by_its_total(sandbox):
    """The answer's ``$totalResults`` says whether rows remain: a listing whose last page is
    full asks for no empty page after it."""
    for i in range(15):
        sandbox.add("Company", comp_name=f"Firm {i}")
    c = make(sandbox.url, page_size=10)             # 20 companies: two full pages
    await c.start()
    try:
        sandbox.reset_hits()
        got = [r.id async for page in c.changes("Company", None) for r in page]
        assert len(got) == 20
        assert sandbox.count("GET") == 2
    finally:
        await c.close()


async def test_a_delete_is_soft_and_the_api_stops_returning_the_record(connector, sandbox):
    await connector.delete("Company", "2")
    assert sandbox.data["Company"][2]["comp_deleted"] == 1
    assert await connector.get("Company", ["2"]) == []
    assert "2" not in [r.id async for page in connector.changes("Company", None) for r in page]


async def test_put_is_a_partial_update_too(sandbox):
    c = make(sandbox.url, update_method="PUT")
    await c.start()
    try:
        rec = await c.update("Company", "1", {"comp_sector": "Bouw"})
        assert rec.fields["comp_sector"] == "Bouw" and rec.fields["comp_name"]
    finally:
        await c.close()
    assert sandbox.count("PUT") == 1


async def test_a_vat_number_is_found_however_it_is_written(connector, sandbox):
    made = sandbox.add("Company", comp_name="X", comp_vatnumber="BE 0777.666.555")
    for asked in ("0777666555", "be0777.666.555"):
        found = await connector.find("Company", "comp_vatnumber", [asked])
        assert [r.id for r in found] == [str(made["comp_companyid"])]


async def test_prototypes_describe_the_custom_fields(connector):
    fields = {f.name: f for f in await connector.fields("Company")}
    assert fields["comp_sector"].custom and fields["comp_sector"].label == "Sector"
    assert not fields["comp_name"].custom


async def test_the_error_body_names_the_field(connector):
    with pytest.raises(RecordError) as info:
        await connector.create("Company", {"comp_name": "x", "comp_nope": 1})
    assert info.value.fields == ("comp_nope",)


async def test_the_sandbox_answers_an_sdata_feed_with_basic_auth(sandbox):
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{sandbox.url}/sdata/crmj/sagecrm2/-/Company",
                         params={"startIndex": "2", "count": "2",
                                 "where": "comp_companyid between 1 and 4"},
                         headers={"Authorization": f"Basic {auth}"}) as r:
            body = await r.json()
        assert body["$totalResults"] == 4 and body["$startIndex"] == 2
        assert [e["$key"] for e in body["$resources"]] == ["2", "3"]
        async with s.get(f"{sandbox.url}/sdata/crmj/sagecrm2/-/Company('1')",
                         headers={"Authorization": f"Basic {auth}"}) as r:
            assert (await r.json())["$key"] == "1"
        async with s.get(f"{sandbox.url}/sdata/crmj/sagecrm2/-/Company",
                         params={"where": "comp_name eq null"},
                         headers={"Authorization": f"Basic {auth}"}) as r:
            assert r.status == 400
            assert "$diagnoses" in await r.json()


@pytest.mark.parametrize("text,row,expected", [
    ("comp_name eq 'a''b'", {"comp_name": "A'B"}, True),
    ("comp_type in ('Customer', 'Prospect') and not comp_name like 'x%'",
     {"comp_type": "customer", "comp_name": "yz"}, True),
    ("comp_employees between 5 and 10 or comp_name eq 'q'", {"comp_employees": 11}, False),
    ("comp_updateddate gt '2025-01-01T00:00:00'",
     {"comp_updateddate": datetime(2025, 2, 1, tzinfo=timezone.utc)}, True),
    ("comp_updateddate le @2025-01-01@",
     {"comp_updateddate": datetime(2025, 2, 1, tzinfo=timezone.utc)}, False),
    ("(comp_name ne 'a')", {}, False),
])
def test_where_clauses(text, row, expected):
    known = {"comp_name", "comp_type", "comp_employees", "comp_updateddate"}
    assert compile_where(parse(text), known)(row) is expected


@pytest.mark.parametrize("text", ["comp_name eq", "comp_name = 'a'", "comp_name eq 'a' and",
                                  "nope eq 1", "comp_name eq true", "__import__('os')"])
def test_bad_where_clauses_are_refused(text):
    with pytest.raises(WhereError):
        compile_where(parse(text), {"comp_name"})
