"""The ConnectWise Manage connector against its sandbox over loopback (the contract every
connector passes), the sandbox's behaviour the Developer Guide describes, and its records
against the field names of ConnectWise's published models."""
from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from connectors.base import RecordError
from connectors.connectwise import ConnectWiseConnector
from connectors.connectwise.conditions import ConditionError, matches, parse
from connectors.connectwise.sandbox import ROOT, RESOURCES, ConnectWiseSandbox
from tests.connector_contract import ConnectorContract

MODELS = json.loads((Path(__file__).parent / "vendor_docs" / "connectwise-models.json")
                    .read_text())["models"]
SETTINGS = {"company_id": "sandbox", "public_key": "sandbox-public",
            "private_key": "sandbox-private",
            "client_id": "00000000-0000-0000-0000-00000000c11e", "timeout": 5}


@pytest.fixture
async def sandbox():
    sb = ConnectWiseSandbox(seed=5, records=4)
    await sb.start(0)
    yield sb
    await sb.stop()


async def _connector(sandbox, **over):
    c = ConnectWiseConnector("cw", {**SETTINGS, "base_url": sandbox.url, **over})
    await c.start()
    return c


@pytest.fixture
async def connector(sandbox):
    c = await _connector(sandbox, page_size=2)
    yield c
    await c.close()


@pytest.fixture
async def bad_connector(sandbox):
    c = await _connector(sandbox, private_key="not-the-secret")
    yield c
    await c.close()


class TestContract(ConnectorContract):
    entity = "contacts"
    new_fields = {"firstName": "Ada", "lastName": "Lovelace",
                  "communicationItems.Email": "ada@example.com"}
    edit_fields = {"lastName": "King"}
    invalid_fields = {"firstName": ""}


def test_conditions_are_parsed_never_evaluated_as_code():
    expr = parse('lastUpdated >= [2024-06-03T09:00:00Z] AND (name like "Har*" OR '
                 'company/id in (1, 2)) AND not inactiveFlag = True')
    rec = {"lastUpdated": "2024-06-03T09:00:00Z", "name": "harbor", "company": {"id": 9},
           "inactiveFlag": False}
    assert matches(expr, rec)
    assert not matches(expr, {**rec, "lastUpdated": "2024-06-03T08:59:59Z"})
    for bad in ('__import__("os").system("x")', "name = ", 'name ~ "x"', "(name = 1"):
        with pytest.raises(ConditionError):
            parse(bad)


async def test_paging_is_forward_only_by_id_with_the_link_header(connector, sandbox):
    for i in range(5):
        sandbox.insert("catalog", {"identifier": f"M-{i}", "description": "x"})
    pages = [page async for page in connector.changes("catalog", None)]
    assert [len(p) for p in pages] == [2, 2, 1]
    ids = [int(r.id) for p in pages for r in p]
    assert ids == sorted(ids)
    hits = [h for h in sandbox.hits if h.path.endswith("procurement/catalog")]
    assert "pageId" not in hits[0].query and all("pageId" in h.query for h in hits[1:])


async def test_navigable_paging_answers_first_next_last(sandbox):
    auth = ConnectWiseConnector("cw", {**SETTINGS, "base_url": sandbox.url})
    headers = {"clientId": SETTINGS["client_id"]}
    auth._auth("GET", "", headers)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sandbox.url}{ROOT}/company/companies",
                            params={"pageSize": 1, "page": 2}, headers=headers) as resp:
            link = resp.headers["Link"]
            assert len(await resp.json()) == 1
        async with http.get(f"{sandbox.url}{ROOT}/company/companies",
                            params={"pageSize": 1001}, headers=headers) as resp:
            assert resp.status == 400
    assert 'rel="next"' in link and 'rel="prev"' in link and 'rel="last"' in link


async def test_a_duplicate_identifier_is_refused_with_the_vendors_error(connector):
    await connector.create("companies", {"identifier": "DUP1", "name": "One"})
    with pytest.raises(RecordError) as info:
        await connector.create("companies", {"identifier": "dup1", "name": "Two"})
    assert "already in use" in info.value.message and info.value.fields == ("identifier",)


async def test_patch_is_a_json_patch_list_and_references_resolve_by_name(connector, sandbox):
    company = await connector.create("companies", {"identifier": "REF1", "name": "Ref Co"})
    opp = await connector.create("opportunities", {
        "name": "Deal", "company.id": company.id, "primarySalesRep.identifier": "akumar"})
    assert opp.fields["status.name"] == "Open"
    won = await connector.update("opportunities", opp.id, {"status.name": "Won"})
    assert won.fields["status.name"] == "Won" and won.fields["name"] == "Deal"
    patch = [h for h in sandbox.hits if h.method == "PATCH"]
    assert len(patch) == 1


async def test_members_by_name_for_the_sales_rep_rule(connector):
    members = await connector.options("members")
    assert members["Anita Kumar"] == "akumar"
    statuses = await connector.options("opportunity_statuses")
    assert statuses["Won"]["wonFlag"] is True


async def test_find_by_email_uses_child_conditions(connector):
    found = await connector.find("contacts", "communicationItems.Email",
                                 ["OFFICE0@harbor.example"])
    assert [r.fields["communicationItems.Email"] for r in found] == ["office0@harbor.example"]


def test_sandbox_records_keep_the_field_names_of_the_published_models():
    sb = ConnectWiseSandbox(seed=1, records=2)
    company = next(iter(sb.data["companies"].values()))
    catalog = sb.insert("catalog", {"identifier": "X1", "description": "d", "cost": 1.0,
                                    "price": 2.0, "manufacturerPartNumber": "X1"})
    opp = sb.insert("opportunities", {"name": "o", "company": {"id": company["id"]},
                                      "primarySalesRep": {"identifier": "jsmith"}})
    project = sb.insert("projects", {"name": "p", "company": {"id": company["id"]},
                                     "board": {"name": "Installations"},
                                     "opportunity": {"id": opp["id"]}})
    ticket = sb.insert("tickets", {"summary": "Kitchen", "project": {"id": project["id"]}})
    sb.insert("products", {"catalogItem": {"id": catalog["id"]}, "quantity": 2, "price": 3,
                           "opportunity": {"id": opp["id"]}, "integrationXRef": "a/b"})
    sb.insert("products", {"catalogItem": {"id": catalog["id"]}, "ticket": {"id": ticket["id"]},
                           "integrationXRef": "a/c/b"})
    for table, kind in RESOURCES.values():
        for rec in sb.data[table].values():
            unknown = set(rec) - set(MODELS[kind])
            assert not unknown, (kind, unknown)
    for rec in sb.data["statuses"].values():
        assert not set(rec) - set(MODELS["OpportunityStatus"])
    for rec in sb.data["members"].values():
        assert not set(rec) - set(MODELS["Member"])
    for items in sb.forecasts.values():
        for item in items:
            assert not set(item) - set(MODELS["ForecastItem"])


# --- forward-only paging: the Link header and the last page --------------------------------
async def _listed(connector, entity: str) -> list:
    out = []
    async for page in connector.changes(entity, None):
        out += page
    return out


async def test_get_and_find_read_every_page_though_the_next_link_holds_commas():
    """The next link repeats the request's ``id in (a, b, ...)`` condition: the header is
    split on its targets' angle brackets, not on commas, so later pages are not lost."""
    sandbox = ConnectWiseSandbox(seed=5, records=7)
    await sandbox.start(0)
    c = await _connector(sandbox, page_size=2)
    try:
        every = await _listed(c, "contacts")
        assert len(every) >= 5
        ids = [r.id for r in every]
        got = await c.get("contacts", ids)
        assert sorted(r.id for r in got) == sorted(ids)
        names = sorted({r.fields["lastName"] for r in every if r.fields.get("lastName")})
        found = await c.find("contacts", "lastName", names)
        assert {r.id for r in every if r.fields.get("lastName") in names} <= {
            r.id for r in found}
    finally:
        await c.close()
        await sandbox.stop()


async def test_a_short_page_ends_a_listing_without_asking_for_an_empty_one(sandbox):
    """Manage's forward-only ``Link`` carries a next target on the last page too: a page
    shorter than ``pageSize`` is the end; only a full last page costs one more request."""
    c = await _connector(sandbox, page_size=3)
    try:
        await c.check()
        n = len(await _listed(c, "contacts"))
        assert n % 3, "the sample should end on a short page"
        sandbox.reset_hits()
        assert len(await _listed(c, "contacts")) == n
        assert sandbox.count("GET", "/v4_6_release/apis/3.0/company/contacts") == -(-n // 3)
    finally:
        await c.close()


# --- requests per run: companyinfo, and ids past the URL's length -------------------------
COMPANYINFO = "/login/companyinfo/"


async def test_companyinfo_is_read_once_per_run_and_afresh_after_the_next_check(sandbox):
    """A run (``check()``, the engine's ``identity()``, reads, ``identity()`` again) reads
    companyinfo once; the next run's ``check()`` forgets it, so it is read again."""
    c = await _connector(sandbox, page_size=3)
    try:
        for run in range(3):
            sandbox.reset_hits()
            await c.check()
            first = await c.identity()
            await _listed(c, "companies")
            assert await c.identity() == first
            assert sandbox.count("GET", COMPANYINFO) == 1, run
            assert sandbox.count("GET", f"{ROOT}/system/info") == 1, run
    finally:
        await c.close()


async def test_an_instance_changed_between_runs_is_reported_by_the_next_runs_identity(sandbox):
    c = await _connector(sandbox)
    try:
        await c.check()
        before = await c.identity()
        sandbox.instance_id = "0f0f0f0f-another-instance"       # the URL now reaches another
        assert await c.identity() == before                   # within the run: as it began
        await c.check()                                       # the next run
        after = await c.identity()
        assert after != before and "0f0f0f0f" in after
        assert "sandbox-private" not in after and SETTINGS["client_id"] not in after
    finally:
        await c.close()


# --- e-mail updates read together (a PATCH replaces communicationItems whole) -------------

def _phone(i: int) -> dict:
    return {"type": {"id": 2, "name": "Direct"}, "communicationType": "Phone",
            "defaultFlag": True, "value": f"555-02{i:02d}"}


async def test_a_chunks_email_updates_read_their_contacts_in_one_request(connector, sandbox):
    """Three contacts, each with a phone item beside its e-mail, get a new e-mail: one
    ``id in (...)`` read for the three, three PATCHes, and every phone item kept. A fourth
    update that writes no e-mail reads nothing."""
    contacts = sandbox.data["contacts"]
    ids = sorted(contacts)[:4]
    for n, i in enumerate(ids):
        contacts[i]["communicationItems"].append(_phone(n))
    c = await _connector(sandbox)               # pages of 1,000: the read is one request
    try:
        sandbox.reset_hits()
        await c.will_update("contacts", {**{str(i): {"communicationItems.Email", "lastName"}
                                            for i in ids[:3]}, str(ids[3]): {"lastName"}})
        for n, i in enumerate(ids[:3]):
            await c.update("contacts", str(i), {"communicationItems.Email": f"new{n}@x.test"})
        await c.update("contacts", str(ids[3]), {"lastName": "Quay"})
        gets = [h for h in sandbox.hits if h.method == "GET" and "/apis/" in h.path]
        assert len(gets) == 1 and f"id in ({ids[0]}, {ids[1]}, {ids[2]})" in gets[0].query
        assert sandbox.count("PATCH") == 4
        for n, i in enumerate(ids[:3]):
            items = contacts[i]["communicationItems"]
            assert [x["value"] for x in items if x["communicationType"] == "Email"] == [
                f"new{n}@x.test"]
            assert [x["value"] for x in items if x["communicationType"] == "Phone"] == [
                f"555-02{n:02d}"]
        # what was read serves its one update only: the same contact again reads it again
        sandbox.reset_hits()
        await c.update("contacts", str(ids[0]), {"communicationItems.Email": "again@x.test"})
        assert [h.path.rsplit("/", 1)[-1] for h in sandbox.hits if h.method == "GET"
                and "/apis/" in h.path] == [str(ids[0])]
    finally:
        await c.close()


async def test_one_email_update_alone_reads_its_contact_by_id(connector, sandbox):
    i = sorted(sandbox.data["contacts"])[0]
    sandbox.reset_hits()
    await connector.will_update("contacts", {str(i): {"communicationItems.Email"}})
    await connector.update("contacts", str(i), {"communicationItems.Email": "solo@x.test"})
    assert [(h.method, h.path.rsplit("/", 1)[-1]) for h in sandbox.hits
            if "/apis/" in h.path] == [("GET", str(i)), ("PATCH", str(i))]
