"""Prospect CRM connector: the contract, keyset paging, validation, rate limit, users.

Everything runs over real loopback HTTP against ProspectSandbox, except the aioresponses
unit tests at the end (request building and error handling of the client alone).
"""
from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from aioresponses import aioresponses

from connectors.base import (AuthError, NotFoundError, OutcomeUnknownError, RecordError,
                             UnavailableError)
from connectors.prospect_crm import ProspectCrmConnector
from connectors.prospect_crm.sandbox import ProspectSandbox
from connectors.sandbox import Clock
from tests.connector_contract import ConnectorContract

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def make(url: str, token: str = "sandbox-token", **extra) -> ProspectCrmConnector:
    settings = ProspectCrmConnector.Settings(base_url=url, token=token,
                                             **{"attempts": 3, "max_wait": 0.05, **extra})
    return ProspectCrmConnector("crm", settings)


@pytest.fixture
async def sandbox():
    sb = ProspectSandbox(seed=4, records=4)
    await sb.start()
    yield sb
    await sb.stop()


@pytest.fixture
async def connector(sandbox):
    c = make(sandbox.url)
    await c.start()
    yield c
    await c.close()


@pytest.fixture
async def bad_connector(sandbox):
    c = make(sandbox.url, token="not-the-token")
    await c.start()
    yield c
    await c.close()


async def read_all(connector, entity, since=None):
    out = []
    async for page in connector.changes(entity, since):
        out.append(page)
    return out


class TestProspectContract(ConnectorContract):
    entity = "companies"
    new_fields = {"Name": "Tamar Marine Ltd", "Telephone": "01752 600100",
                  "Website": "https://www.tamarmarine.example.co.uk",
                  "AccountManager.UserName": "Ben Turner",
                  "MainAddress.AddressLine1": "4 Quay Road", "MainAddress.AddressLine3": "Plymouth",
                  "MainAddress.AddressLine4": "Devon", "MainAddress.Postcode": "PL1 2AB",
                  "MainAddress.Country": "United Kingdom"}
    edit_fields = {"Telephone": "01752 600200", "AccountManager.UserName": "Chloe King",
                   "MainAddress.Postcode": "PL4 9ZZ"}
    invalid_fields = {"Website": "not a web address"}


# --- auth, paging, changes ---------------------------------------------------------------------

async def test_bad_token_is_401_with_an_odata_error(sandbox):
    async with aiohttp.ClientSession() as s:
        async with s.get(sandbox.url + "/Companies") as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "Unauthorized"
        async with s.get(sandbox.url + "/Companies",
                         headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401


async def test_auth_error_is_one_clear_line_without_the_token(bad_connector):
    with pytest.raises(AuthError) as info:
        await bad_connector.check()
    text = str(info.value)
    assert "\n" not in text and "not-the-token" not in text and "401" in text


async def test_keyset_paging_covers_every_record_once_even_on_one_shared_timestamp():
    sb = ProspectSandbox(seed=1, records=30, clock=Clock(T0))   # all share one timestamp
    await sb.start()
    c = make(sb.url, page_size=7)
    await c.start()
    try:
        pages = await read_all(c, "companies")
        ids = [r.id for p in pages for r in p]
        assert sorted(ids, key=int) == [str(k) for k in sorted(sb.data["Companies"])]
        assert len(ids) == len(set(ids)) == 30
        assert all(len(p) <= 7 for p in pages)
        contacts = [r for p in await read_all(c, "contacts") for r in p]
        assert len(contacts) == len(sb.data["Contacts"])
    finally:
        await c.close()
        await sb.stop()


async def test_a_record_edited_between_pages_is_not_lost():
    clock = Clock(T0)
    sb = ProspectSandbox(seed=2, clock=clock)
    for _ in range(12):
        clock.advance(1)
        sb.insert("Companies", {"Name": f"Co {_}"})
    await sb.start()
    c = make(sb.url, page_size=5)
    await c.start()
    try:
        seen: list[str] = []
        edited = False
        async for page in c.changes("companies", None):
            seen.extend(r.id for r in page)
            if not edited:
                # an offset pager would now skip a record: move record 1 (already read) to
                # the end and record 6 (not yet read) too
                clock.advance(100)
                sb.modify("Companies", 1, {"Telephone": "01392 000001"})
                sb.modify("Companies", 6, {"Telephone": "01392 000006"})
                edited = True
        assert set(seen) == {str(k) for k in range(1, 13)}
        assert seen.count("1") == 2           # read again after its edit: fine (idempotent)
    finally:
        await c.close()
        await sb.stop()


async def test_changes_since_is_a_closed_bound_and_filters_on_last_updated(connector, sandbox):
    sandbox.clock.set(T0)
    a = await connector.create("companies", {"Name": "Bound Ltd"})
    sandbox.clock.set(T0 + timedelta(seconds=5))
    b = await connector.create("companies", {"Name": "Later Ltd"})
    ids = {r.id for p in await read_all(connector, "companies", T0) for r in p}
    assert {a.id, b.id} <= ids
    ids = {r.id for p in await read_all(connector, "companies", T0 + timedelta(seconds=1))
           for r in p}
    assert b.id in ids and a.id not in ids
    assert any("LastUpdatedTimestamp%20ge%202025-03-01T09:00:00.000000Z" in h.query
               or "LastUpdatedTimestamp ge 2025-03-01T09:00:00.000000Z" in h.query
               for h in sandbox.hits)
    assert a.modified == T0


async def test_server_capped_pages_with_next_link_are_continued():
    sb = ProspectSandbox(seed=3, records=25, max_page_size=4)
    await sb.start()
    c = make(sb.url, page_size=50)          # more than the server gives: it answers nextLink
    await c.start()
    try:
        ids = [r.id for p in await read_all(c, "companies") for r in p]
        assert sorted(ids, key=int) == [str(k) for k in range(1, 26)]
        for i in range(6):
            sb.add_user(f"U{i}", f"Extra User {i}")
        users = await c.options("users")     # /Users follows @odata.nextLink
        assert len(users) == 11 and "Extra User 5" in users
        assert sb.count("GET", "/Users") == 3
    finally:
        await c.close()
        await sb.stop()


async def test_next_link_from_the_sandbox(sandbox):
    sandbox.max_page_size = 2
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sandbox-token"}) as s:
        async with s.get(sandbox.url + "/Companies?$top=3&$count=true") as r:
            body = await r.json()
    assert len(body["value"]) == 2 and body["@odata.count"] == 4
    assert re.search(r"\$skip=2", body["@odata.nextLink"])
    assert "$top=1" in body["@odata.nextLink"]


async def test_deleted_records_come_back_as_tombstones_and_get_leaves_them_out(connector):
    c = await connector.create("companies", {"Name": "Short Lived Ltd"})
    await connector.delete("companies", c.id)
    with pytest.raises(NotFoundError):
        await connector.delete("companies", c.id)
    with pytest.raises(NotFoundError):
        await connector.update("companies", c.id, {"Telephone": "0"})
    assert await connector.get("companies", [c.id]) == []
    tomb = [r for p in await read_all(connector, "companies") for r in p if r.id == c.id]
    assert tomb[0].deleted and tomb[0].fields["StatusFlag"] == "D"


# --- get / find / writes -----------------------------------------------------------------------

async def test_get_is_batched_and_find_is_case_insensitive(connector, sandbox):
    ids = [str(k) for k in sandbox.data["Companies"]] + ["999", "abc"]
    got = await connector.get("companies", ids)
    assert sorted(r.id for r in got) == sorted(ids[:-2])
    name = sandbox.data["Companies"][2]["Name"]
    found = await connector.find("companies", "Name", [name.upper(), "nobody"])
    assert [r.id for r in found] == ["2"]
    code = sandbox.data["Companies"][2]["AccountManagerId"]
    if code:
        manager = sandbox.data["Users"][code]["UserName"]
        found = await connector.find("companies", "AccountManager.UserName", [manager.lower()])
        assert "2" in {r.id for r in found}


async def test_find_sends_its_requests_at_once_and_answers_each_record_once():
    """About 200 values are 8 requests of 25, sent several at a time (paced); a record
    found by two values (in two requests) is answered once."""
    sb = ProspectSandbox(seed=4, records=60)
    await sb.start()
    c = make(sb.url)
    await c.start()
    try:
        rows = sorted(sb.data["Companies"].values(), key=lambda r: r["CompanyId"])
        names = [r["Name"] for r in rows if r["StatusFlag"] != "D"]
        values = [f"nobody {i}" for i in range(140)] + names[::-1] + names[:5]
        sb.reset_hits()
        found = await c.find("companies", "Name", values)
        assert len([h for h in sb.hits if h.path == "/Companies"]) == -(-len(
            dict.fromkeys(values)) // 25)
        assert c.pace.peak > 1                      # not one request after the other
        by_name = {}
        for r in rows:
            by_name.setdefault(r["Name"].strip().lower(), []).append(str(r["CompanyId"]))
        expected = list(dict.fromkeys(
            i for n in names[::-1] for i in by_name[n.strip().lower()]
            if sb.data["Companies"][int(i)]["StatusFlag"] != "D"))
        assert sorted(r.id for r in found) == sorted(expected)
        assert len(found) == len({r.id for r in found})
    finally:
        await c.close()
        await sb.stop()


async def test_validation_is_a_record_error_with_vendor_message_and_field(connector):
    with pytest.raises(RecordError) as info:
        await connector.create("companies", {"Name": "X Ltd", "Website": "bad site"})
    assert "Website" in info.value.message and info.value.fields == ("Website",)
    with pytest.raises(RecordError) as info:
        await connector.create("companies", {"Telephone": "1"})
    assert info.value.fields == ("Name",)
    with pytest.raises(RecordError) as info:
        await connector.create("companies", {"Name": "Y Ltd", "MainAddress.Postcode": "P" * 20})
    assert info.value.fields == ("MainAddress.Postcode",)


async def test_server_normalises_and_the_write_returns_what_was_stored(connector):
    rec = await connector.create("companies", {"Name": "  Padded Ltd ",
                                               "MainAddress.Postcode": "ex1 1aa"})
    assert rec.fields["Name"] == "Padded Ltd"
    assert rec.fields["MainAddress.Postcode"] == "EX1 1AA"
    rec = await connector.update("companies", rec.id, {"Website": " www.padded.example.com "})
    assert rec.fields["Website"] == "www.padded.example.com"
    assert rec.fields["Name"] == "Padded Ltd"


async def test_account_manager_is_written_by_name_and_unknown_names_are_refused(connector,
                                                                                 sandbox):
    assert "Dev Lal" in await connector.options("users")
    rec = await connector.create("companies", {"Name": "Managed Ltd",
                                               "AccountManager.UserName": "dev lal"})
    assert rec.fields["AccountManagerId"] == "DL"
    assert rec.fields["AccountManager.UserName"] == "Dev Lal"
    writes = sandbox.writes()
    with pytest.raises(RecordError) as info:
        await connector.update("companies", rec.id, {"AccountManager.UserName": "Nobody Here"})
    assert info.value.fields == ("AccountManager.UserName",)
    assert "Nobody Here" in info.value.message
    assert sandbox.writes() == writes
    sandbox.add_user("ZZ", "New Starter")            # found in the next run's user list
    await connector.check()
    rec = await connector.update("companies", rec.id, {"AccountManager.UserName": "New Starter"})
    assert rec.fields["AccountManagerId"] == "ZZ"
    rec = await connector.update("companies", rec.id, {"AccountManager.UserName": None})
    assert rec.fields["AccountManager.UserName"] is None
    with pytest.raises(KeyError):
        await connector.options("warehouses")


def users_read(sandbox) -> int:
    return sandbox.count("GET", "/Users")


async def test_concurrent_writes_naming_an_unknown_user_read_the_users_once(connector, sandbox):
    await connector.check()
    assert "Dev Lal" in await connector.options("users")
    sandbox.reset_hits()
    results = await asyncio.gather(*(
        connector.create("companies", {"Name": f"Orphan {i} Ltd",
                                       "AccountManager.UserName": "Nobody Here"})
        for i in range(5)), return_exceptions=True)
    assert users_read(sandbox) == 1 and sandbox.writes() == 0
    for error in results:               # each record refused as before
        assert isinstance(error, RecordError)
        assert error.fields == ("AccountManager.UserName",)
        assert error.message == ("crm: no CRM user is named 'Nobody Here', so it cannot be "
                                 "the account manager")
    with pytest.raises(RecordError):    # later writes of the run use that list
        await connector.create("companies", {"Name": "Late Ltd",
                                             "AccountManager.UserName": "Someone Else"})
    assert users_read(sandbox) == 1


async def test_a_user_added_since_the_list_was_read_is_found_with_one_read(connector, sandbox):
    await connector.check()
    await connector.options("users")
    sandbox.add_user("ZZ", "New Starter")
    sandbox.reset_hits()
    created = await asyncio.gather(*(
        connector.create("companies", {"Name": f"Started {i} Ltd",
                                       "AccountManager.UserName": "new starter"})
        for i in range(5)))
    assert [r.fields["AccountManagerId"] for r in created] == ["ZZ"] * 5
    assert users_read(sandbox) == 1 and sandbox.count("POST") == 5


async def test_writes_before_any_user_list_read_it_once_and_options_reuses_it(connector,
                                                                               sandbox):
    await connector.check()
    sandbox.reset_hits()
    created = await asyncio.gather(*(
        connector.create("companies", {"Name": f"Dev {i} Ltd", "AccountManager.UserName": name})
        for i, name in enumerate(["Dev Lal"] * 4 + ["Nobody Here"])), return_exceptions=True)
    assert [getattr(r, "fields", {}).get("AccountManagerId") for r in created[:4]] == ["DL"] * 4
    assert isinstance(created[4], RecordError)
    assert users_read(sandbox) == 1
    assert "Dev Lal" in await connector.options("users")       # this run's list, no request
    assert users_read(sandbox) == 1


async def test_a_new_run_reads_the_users_again_for_an_unknown_name(connector, sandbox):
    await connector.check()
    sandbox.reset_hits()
    with pytest.raises(RecordError):
        await connector.create("companies", {"Name": "Early Ltd",
                                             "AccountManager.UserName": "New Starter"})
    assert users_read(sandbox) == 1
    sandbox.add_user("ZZ", "New Starter")
    with pytest.raises(RecordError):    # still this run: the list it read is used
        await connector.create("companies", {"Name": "Early Ltd",
                                             "AccountManager.UserName": "New Starter"})
    assert users_read(sandbox) == 1
    await connector.check()
    rec = await connector.create("companies", {"Name": "Next Run Ltd",
                                               "AccountManager.UserName": "New Starter"})
    assert rec.fields["AccountManagerId"] == "ZZ" and users_read(sandbox) == 2


async def test_contacts_carry_their_company_id(connector, sandbox):
    company = await connector.create("companies", {"Name": "Parent Ltd"})
    contact = await connector.create("contacts", {
        "CompanyId": company.id, "Forename": "Ava", "Surname": "Patel",
        "Email": "ava.patel@parent.example.com", "PhoneNumber": "01392 111222",
        "MobilePhoneNumber": "07700 900123", "Fax": "01392 111223"})
    assert contact.fields["CompanyId"] == company.id      # a key, as a string like Record.id
    assert sandbox.data["Contacts"][int(contact.id)]["CompanyId"] == int(company.id)
    assert contact.fields["Fax"] == "01392 111223"
    for value in (company.id, int(company.id)):
        found = await connector.find("contacts", "CompanyId", [value])
        assert [r.id for r in found] == [contact.id]
    writes = sandbox.writes()
    with pytest.raises(RecordError) as info:
        await connector.create("contacts", {"CompanyId": "ACME", "Surname": "Nokey"})
    assert info.value.fields == ("CompanyId",) and sandbox.writes() == writes
    found = await connector.find("contacts", "Email", ["AVA.PATEL@parent.example.com"])
    assert [r.id for r in found] == [contact.id]
    with pytest.raises(RecordError) as info:
        await connector.create("contacts", {"CompanyId": 999, "Surname": "Orphan"})
    assert info.value.fields == ("CompanyId",)
    with pytest.raises(RecordError) as info:
        await connector.update("contacts", contact.id, {"Email": "no-at-sign"})
    assert info.value.fields == ("Email",)


async def test_a_write_answered_500_after_commit_is_applied_and_not_sent_again(connector,
                                                                              sandbox):
    rec = await connector.create("companies", {"Name": "Committed Ltd"})
    sandbox.faults.fail_after_commit(3)
    sandbox.reset_hits()
    with pytest.raises(OutcomeUnknownError):
        await connector.update("companies", rec.id, {"Telephone": "01000 000000"})
    assert sandbox.data["Companies"][int(rec.id)]["Telephone"] == "01000 000000"
    assert sandbox.count("PATCH") == 1


def test_seed_and_touch_are_deterministic():
    a, b = ProspectSandbox(seed=9, records=10), ProspectSandbox(seed=9, records=10)
    strip = lambda sb: [{k: v for k, v in c.items() if k not in ("Created", "LastUpdatedTimestamp")}
                        for c in sb.data["Companies"].values()]
    assert strip(a) == strip(b) and len(a.data["Companies"]) == 10
    assert a.touch(a.rng) == b.touch(b.rng)


# --- rate limit ----------------------------------------------------------------------------

async def test_sandbox_sliding_window_answers_429_with_retry_after():
    clock = Clock(T0)
    sb = ProspectSandbox(clock=clock, rate_limit=3, rate_window=60)
    await sb.start()
    try:
        async with aiohttp.ClientSession(
                headers={"Authorization": "Bearer sandbox-token"}) as s:
            for i in range(3):
                async with s.get(sb.url + "/Users") as r:
                    assert r.status == 200
                clock.advance(10)
            async with s.get(sb.url + "/Users") as r:
                assert r.status == 429
                assert r.headers["Retry-After"] == "30"
                assert (await r.json())["error"]["code"] == "TooManyRequests"
            clock.advance(30)                    # the first request leaves the window
            async with s.get(sb.url + "/Users") as r:
                assert r.status == 200
    finally:
        await sb.stop()


async def test_client_side_limiter_keeps_the_connector_under_the_limit():
    sb = ProspectSandbox(clock=Clock(T0), rate_limit=4, rate_window=600)
    await sb.start()
    c = make(sb.url, requests_per_window=4, window_seconds=600)
    await c.start()
    try:
        for _ in range(4):
            await c.check()
        with pytest.raises(asyncio.TimeoutError):    # the 5th waits for the window instead
            await asyncio.wait_for(c.check(), 0.2)
        assert sb.rejected == 0 and c.http.throttled == 0 and len(sb.hits) == 4
    finally:
        await c.close()
        await sb.stop()


# --- client unit tests (aioresponses) ------------------------------------------------------

BASE = "https://crm.test"


class _Written:
    output_size = 0


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument."""

    def __init__(self, method, url, **kwargs):
        kwargs.setdefault("stream_writer", _Written())
        super().__init__(method, url, **kwargs)


class mocked(aioresponses):
    def add(self, url, method="GET", *args, **kwargs):
        kwargs.setdefault("response_class", _Response)
        return super().add(url, method, *args, **kwargs)


@pytest.fixture
async def unit():
    c = make(BASE, token="pat-123", attempts=2)
    await c.start()
    yield c
    await c.close()


async def test_unit_bearer_header_and_query(unit):
    """check() reads the Tenant singleton, which identity() then reuses (one request for
    both); a service without it is checked with the cheapest collection read."""
    with mocked() as m:
        m.get("https://crm.test/Tenant", payload={"TenantId": "t-1", "Name": "W"})
        await unit.check()
        assert await unit.identity() == "prospect_crm:tenant/t-1"
        ((method, url), calls), = m.requests.items()
        assert calls[0].kwargs["headers"]["Authorization"] == "Bearer pat-123"
        assert len(calls) == 1 and str(url) == "https://crm.test/Tenant"
    with mocked() as m:
        m.get("https://crm.test/Tenant", status=404, payload={"error": {"message": "no"}})
        m.get(re.compile(r"https://crm\.test/Companies\?.*"), payload={"value": []})
        await unit.check()
        assert (await unit.identity()).startswith("prospect_crm:token/")
        urls = [str(url) for (_, url) in m.requests]
        assert len(urls) == 2 and "$top=1" in urls[1] and "$select=CompanyId" in urls[1]


async def test_unit_odata_error_becomes_record_error_with_fields(unit):
    error = {"error": {"code": "ValidationFailed", "message": "The Name field is required.",
                       "details": [{"target": "Name"}, {"target": "MainAddress/Postcode"}]}}
    with mocked() as m:
        m.post(re.compile(r"https://crm\.test/Companies.*"), status=400, payload=error)
        with pytest.raises(RecordError) as info:
            await unit.create("companies", {"Telephone": "1"})
    assert "The Name field is required." in info.value.message
    assert info.value.fields == ("Name", "MainAddress.Postcode")


async def test_unit_401_is_auth_error(unit):
    with mocked() as m:
        m.get(re.compile(r"https://crm\.test/Tenant.*"), status=401,
              payload={"error": {"code": "Unauthorized", "message": "Denied."}})
        with pytest.raises(AuthError) as info:
            await unit.check()
    assert "pat-123" not in str(info.value)


async def test_unit_500_is_retried_then_unavailable(unit):
    with mocked() as m:
        url = re.compile(r"https://crm\.test/Companies.*")
        m.get(url, status=500, payload={"error": {"code": "E", "message": "boom"}})
        m.get(url, status=500, payload={"error": {"code": "E", "message": "boom"}})
        with pytest.raises(UnavailableError) as info:
            await unit.get("companies", ["1"])
    assert "2 attempts" in str(info.value)


async def test_unit_patch_without_a_body_reads_back(unit):
    row = {"CompanyId": 5, "Name": "A", "StatusFlag": "A",
           "LastUpdatedTimestamp": "2025-03-01T09:00:00.000000Z", "AccountManager": None}
    with mocked() as m:
        m.patch(re.compile(r"https://crm\.test/Companies\(5\).*"), status=204)
        m.get(re.compile(r"https://crm\.test/Companies\(5\).*"), payload=row)
        rec = await unit.update("companies", "5", {"Name": "A"})
    assert rec.id == "5" and rec.modified == T0 and rec.fields["AccountManager.UserName"] is None


async def test_unit_keyset_uses_the_server_timestamp_verbatim_and_guards_loops(unit):
    unit.settings.page_size = 1
    row = {"CompanyId": 3, "Name": "A", "StatusFlag": "A", "AccountManager": None,
           "LastUpdatedTimestamp": "2025-03-01T09:00:00.1234567Z"}
    url = re.compile(r"https://crm\.test/Companies\?.*")
    pages = []
    with mocked() as m:
        m.get(url, payload={"value": [row]})
        m.get(url, payload={"value": [row]})         # a server that repeats the page
        with pytest.raises(UnavailableError) as info:
            async for page in unit.changes("companies", None):
                pages.append(page)
        urls = [str(u) for (_method, u) in m.requests]
    assert len(pages) == 1 and "did not advance" in str(info.value)
    assert len(urls) == 2 and "$filter" not in urls[0]
    assert "gt+2025-03-01T09:00:00.1234567Z" in urls[1].replace("%20", "+")


async def test_unit_identity_without_a_tenant_singleton_is_a_hash_of_the_token(unit):
    with mocked() as m:
        m.get(re.compile(r"https://crm\.test/Tenant.*"), status=404,
              payload={"error": {"code": "NotFound", "message": "No resource."}})
        identity = await unit.identity()
    assert identity.startswith("prospect_crm:token/") and len(identity) == 35
    assert "pat-123" not in identity
