"""Unleashed: the connector contract and the vendor's own behaviour, over loopback HTTP."""
from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timezone

import aiohttp
import pytest

from connectors.base import AuthError, NotFoundError, RecordError, UnavailableError
from connectors.sandbox import Clock
from connectors.unleashed import UnleashedConnector
from connectors.unleashed.sandbox import UnleashedSandbox
from tests.connector_contract import ConnectorContract

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)
MANAGER = "Hana Tupai"


def independent_signature(key: str, query: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), query.encode(), hashlib.sha256)
                            .digest()).decode()


def make_sandbox(**kw) -> UnleashedSandbox:
    kw.setdefault("rate_limit_per_minute", 100_000)
    sb = UnleashedSandbox(clock=Clock(T0), **kw)
    sb.add_salesperson(MANAGER, "hana@sandbox.test")
    sb.add_salesperson("Old Timer", "old@sandbox.test", obsolete=True)
    return sb


def make_connector(sandbox, key: str = "sandbox-key", **kw) -> UnleashedConnector:
    return UnleashedConnector("unleashed", UnleashedConnector.Settings(
        base_url=sandbox.url, api_id="sandbox", api_key=key, timeout=5, **kw))


async def raw(sandbox, method: str, path: str, query: str = "", *, key="sandbox-key",
              api_id="sandbox", signature: str | None = None):
    headers = {"api-auth-id": api_id, "client-type": "accord/tests",
               "api-auth-signature": signature or independent_signature(key, query)}
    async with aiohttp.ClientSession() as session:
        url = sandbox.url + path + (f"?{query}" if query else "")
        async with session.request(method, url, headers=headers) as resp:
            return resp.status, resp.headers, await resp.json(content_type=None)


async def read_all(connector, entity="customers", since=None):
    out = []
    async for page in connector.changes(entity, since):
        out.extend(page)
    return out


@pytest.fixture
async def sandbox():
    sb = make_sandbox(seed=3, records=12)
    await sb.start()
    yield sb
    await sb.stop()


@pytest.fixture
async def connector(sandbox):
    c = make_connector(sandbox)
    await c.start()
    yield c
    await c.close()


@pytest.fixture
async def bad_connector(sandbox):
    c = make_connector(sandbox, key="not-the-key")
    await c.start()
    yield c
    await c.close()


class TestUnleashedContract(ConnectorContract):
    entity = "customers"
    new_fields = {"CustomerName": "Kea Outfitters Ltd", "PhoneNumber": "+64 9 555 0101",
                  "Website": "www.kea-outfitters.co.nz", "Address.City": "Auckland",
                  "Address.StreetAddress": "12 Queen Street", "SalesPerson.FullName": MANAGER}
    edit_fields = {"PhoneNumber": "+64 9 555 0202", "Address.Region": "Auckland"}
    invalid_fields = {"Website": "not a website!"}


# --- authentication ----------------------------------------------------------------------
async def test_signature_is_hmac_sha256_of_the_query_string(connector):
    headers: dict[str, str] = {}
    connector._sign("GET", "pageSize=1&includeObsolete=true", headers)
    assert headers["api-auth-id"] == "sandbox"
    assert headers["api-auth-signature"] == independent_signature(
        "sandbox-key", "pageSize=1&includeObsolete=true")
    empty: dict[str, str] = {}
    connector._sign("GET", "", empty)
    assert empty["api-auth-signature"] == independent_signature("sandbox-key", "")


async def test_requests_carry_the_documented_headers(connector, sandbox):
    await connector.check()
    assert sandbox.client_types == {"accord/sync"}


async def test_bad_signature_missing_headers_and_unknown_id_are_403(sandbox):
    status, _, body = await raw(sandbox, "GET", "/Customers/1", "pageSize=1", key="wrong")
    assert status == 403 and "signature" in body["Description"]
    status, _, body = await raw(sandbox, "GET", "/Customers/1", "pageSize=1", api_id="nobody")
    assert status == 403 and "unknown" in body["Description"]
    async with aiohttp.ClientSession() as session:
        async with session.get(sandbox.url + "/Customers/1") as resp:
            assert resp.status == 403
    status, _, _ = await raw(sandbox, "GET", "/Customers/1", "pageSize=1")
    assert status == 200


async def test_refused_credentials_give_one_clear_line_without_the_key(bad_connector):
    with pytest.raises(AuthError) as info:
        await bad_connector.check()
    text = str(info.value)
    assert text.startswith("unleashed: credentials refused (403: ")
    assert "not-the-key" not in text and "\n" not in text


# --- paging and the change feed ----------------------------------------------------------
async def test_paging_covers_every_customer_exactly_once():
    sb = make_sandbox(seed=5, records=23)
    await sb.start()
    c = make_connector(sb, page_size=5)
    await c.start()
    try:
        ids = [r.id for r in await read_all(c)]
        assert sorted(ids) == sorted(sb.customers) and len(ids) == len(set(ids))
        assert sb.count("GET", "/Customers/") >= 5
        modified = [r.modified for r in await read_all(c)]
        assert modified == sorted(modified) and all(m.tzinfo for m in modified)
    finally:
        await c.close()
        await sb.stop()


async def test_modified_since_leaves_older_customers_out(connector, sandbox):
    sandbox.clock.advance(3600)
    since = sandbox.clock.now()
    touched = sorted(sandbox.customers)[:2]
    for guid in touched:
        await connector.update("customers", guid, {"PhoneNumber": "+64 4 000 0000"})
    records = await read_all(connector, since=since)
    assert sorted(r.id for r in records) == touched
    assert all(r.modified >= since for r in records)
    assert any("modifiedSince=2024-05-01T10:00:00.000" in h.query for h in sandbox.hits)


async def test_obsolete_customers_only_with_include_obsolete(connector, sandbox):
    guid = sorted(sandbox.customers)[0]
    stored = await connector.update("customers", guid, {"Obsolete": True})
    assert stored.fields["Obsolete"] is True
    _, _, hidden = await raw(sandbox, "GET", "/Customers/1", "pageSize=1000")
    assert guid not in {c["Guid"] for c in hidden["Items"]}
    _, _, shown = await raw(sandbox, "GET", "/Customers/1", "includeObsolete=true&pageSize=1000")
    assert guid in {c["Guid"] for c in shown["Items"]}
    listed = {r.id: r for r in await read_all(connector)}
    assert listed[guid].fields["Obsolete"] is True


async def test_customer_edited_between_pages_is_not_lost():
    sb = make_sandbox(seed=9, records=20)
    await sb.start()
    c = make_connector(sb, page_size=5)
    await c.start()
    try:
        pages = c.changes("customers", None)
        first = await pages.__anext__()
        seen = {r.id for r in first}
        # a user edits a customer that sits on a later page: it moves to the end of the order
        later = sorted(sb.customers.values(), key=lambda x: (x["LastModifiedOn"], x["Guid"]))[7]
        sb.clock.advance(5)
        later["PhoneNumber"], later["LastModifiedOn"] = "+64 9 111 1111", sb.clock.now()
        async for page in pages:
            seen |= {r.id for r in page}
        assert seen == set(sb.customers)
    finally:
        await c.close()
        await sb.stop()


async def test_page_size_over_1000_is_refused(sandbox):
    status, _, body = await raw(sandbox, "GET", "/Customers/1", "pageSize=1001")
    assert status == 400 and body["Items"][0]["Field"] == "pageSize"


# --- customers' own rules ----------------------------------------------------------------
async def test_create_generates_guid_and_customer_code(connector, sandbox):
    created = await connector.create("customers", {"CustomerName": "Tui Brewing"})
    assert created.fields["CustomerCode"].startswith("TUIBREWI-")
    assert sandbox.customers[created.id]["CustomerCode"] == created.fields["CustomerCode"]


async def test_create_answered_500_after_commit_makes_no_duplicate(connector, sandbox):
    before = len(sandbox.customers)
    sandbox.faults.fail_after_commit(1)
    created = await connector.create("customers", {"CustomerName": "Weka Wholesale"})
    assert len(sandbox.customers) == before + 1 and created.id in sandbox.customers


async def test_customers_cannot_be_deleted(connector, sandbox):
    with pytest.raises(RecordError, match="set Obsolete"):
        await connector.delete("customers", sorted(sandbox.customers)[0])


async def test_salesperson_is_resolved_by_name_and_unknown_names_refused(connector, sandbox):
    guid = sorted(sandbox.customers)[0]
    stored = await connector.update("customers", guid, {"SalesPerson.FullName": MANAGER})
    assert stored.fields["SalesPerson.FullName"] == MANAGER
    assert sandbox.customers[guid]["SalesPerson"]["FullName"] == MANAGER
    with pytest.raises(RecordError) as info:
        await connector.update("customers", guid, {"SalesPerson.FullName": "Nobody Atall"})
    assert info.value.fields == ("SalesPerson.FullName",)
    names = await connector.options("salespersons")
    assert MANAGER in names and "Old Timer" not in names


async def test_website_refusal_names_the_field_with_the_vendor_message(connector, sandbox):
    guid = sorted(sandbox.customers)[0]
    with pytest.raises(RecordError) as info:
        await connector.update("customers", guid, {"Website": "http://bad site"})
    assert info.value.fields == ("Website",)
    assert "is not a valid URL" in info.value.message
    ok = await connector.update("customers", guid, {"Website": "https://kea.example.com/shop"})
    assert ok.fields["Website"] == "https://kea.example.com/shop"


async def test_find_customers_by_name_and_code(connector, sandbox):
    one = sandbox.customers[sorted(sandbox.customers)[0]]
    by_name = await connector.find("customers", "CustomerName", [one["CustomerName"].upper()])
    assert one["Guid"] in {r.id for r in by_name}
    by_code = await connector.find("customers", "CustomerCode", [one["CustomerCode"]])
    assert [r.id for r in by_code] == [one["Guid"]]


async def test_account_options_reflect_operating_companies_and_ledgers():
    sb = make_sandbox(operating_companies=3, advanced_ledgers=True)
    await sb.start()
    c = make_connector(sb)
    await c.start()
    try:
        assert await c.options("account") == {"operating_companies": 3,
                                              "advanced_ledgers": True}
        with pytest.raises(KeyError):
            await c.options("nonsense")
    finally:
        await c.close()
        await sb.stop()


# --- contacts -----------------------------------------------------------------------------
async def test_contacts_create_update_delete(connector, sandbox):
    customer = sorted(sandbox.customers)[0]
    created = await connector.create("contacts", {
        "CustomerGuid": customer, "FirstName": "Mere", "LastName": "Parata",
        "EmailAddress": "mere@example.com", "MobilePhone": "+64 21 555 0000"})
    assert created.fields["CustomerGuid"] == customer
    assert created.id in sandbox.contacts[customer]
    updated = await connector.update("contacts", created.id, {"PhoneNumber": "+64 9 555 1"})
    assert updated.fields["PhoneNumber"] == "+64 9 555 1"
    assert updated.fields["EmailAddress"] == "mere@example.com"
    fresh = make_connector(sandbox)          # no cache: falls back to scanning customers
    await fresh.start()
    try:
        assert [r.id for r in await fresh.get("contacts", [created.id])] == [created.id]
    finally:
        await fresh.close()
    await connector.delete("contacts", created.id)
    assert created.id not in sandbox.contacts[customer]
    with pytest.raises(NotFoundError):
        await connector.delete("contacts", created.id)
    with pytest.raises(RecordError) as info:
        await connector.create("contacts", {"FirstName": "No", "LastName": "Customer"})
    assert info.value.fields == ("CustomerGuid",)


async def test_contact_changes_are_derived_from_modified_customers(connector, sandbox):
    everything = await read_all(connector, "contacts")
    assert len(everything) == sum(len(v) for v in sandbox.contacts.values())
    sandbox.clock.advance(600)
    since = sandbox.clock.now()
    customer = sorted(sandbox.customers)[1]
    created = await connector.create("contacts", {"CustomerGuid": customer,
                                                  "FirstName": "Nikau", "LastName": "Hill"})
    changed = await read_all(connector, "contacts", since)
    assert [r.id for r in changed] == [created.id]
    assert sandbox.customers[customer]["LastModifiedOn"] >= since


async def test_find_contacts_by_email(connector, sandbox):
    customer = sorted(sandbox.customers)[2]
    created = await connector.create("contacts", {"CustomerGuid": customer, "FirstName": "Ana",
                                                  "EmailAddress": "Ana.Kahu@example.org"})
    found = await connector.find("contacts", "EmailAddress", ["ana.kahu@example.org"])
    assert [r.id for r in found] == [created.id]


async def test_invalid_contact_email_is_refused(connector, sandbox):
    with pytest.raises(RecordError) as info:
        await connector.create("contacts", {"CustomerGuid": sorted(sandbox.customers)[0],
                                            "FirstName": "X", "EmailAddress": "not-an-email"})
    assert info.value.fields == ("EmailAddress",)


# --- rate limit ---------------------------------------------------------------------------
async def test_rate_limit_answers_429_with_retry_after():
    sb = make_sandbox(rate_limit_per_minute=3)
    await sb.start()
    c = make_connector(sb)
    await c.start()
    c.http.attempts, c.http.max_wait = 2, 0.0
    try:
        for _ in range(3):
            await c.check()
        status, headers, body = await raw(sb, "GET", "/Customers/1", "pageSize=1")
        assert status == 429 and int(headers["Retry-After"]) == 60
        assert "rate limit" in body["Description"]
        with pytest.raises(UnavailableError):
            await c.check()
        assert c.http.throttled == 2
        sb.clock.advance(61)
        await c.check()
    finally:
        await c.close()
        await sb.stop()


async def test_injected_429_with_retry_after_is_honoured(connector, sandbox):
    sandbox.faults.fail_next(1, 429, retry_after=0)
    await connector.check()
    assert connector.http.throttled == 1
    assert sandbox.count("GET", "/Companies") == 2      # check() reads the company


async def test_awkward_query_values_are_signed_as_sent(connector, sandbox):
    guid = sorted(sandbox.customers)[0]
    await connector.update("customers", guid, {"CustomerName": "Ben & Jerry's + Co/ü"})
    found = await connector.find("customers", "CustomerName", ["ben & jerry's + co/ü"])
    assert [r.id for r in found] == [guid]


async def test_contact_changes_come_embedded_in_the_customer_pages(connector, sandbox):
    """``includeAllContacts=true`` embeds every contact in its customer: a change listing of
    contacts is one request per page of customers, not one more per customer."""
    sandbox.reset_hits()
    everything = await read_all(connector, "contacts")
    assert {c.id for c in everything} == {k for v in sandbox.contacts.values() for k in v}
    assert all(c.fields["CustomerGuid"] in sandbox.customers for c in everything)
    assert [(h.method, h.path) for h in sandbox.hits] == [("GET", "/Customers/1")]
    assert "includeAllContacts=true" in sandbox.hits[0].query


async def test_a_customer_answered_without_its_contacts_has_them_read_on_their_own(
        connector, sandbox):
    """A customer item without ``Contacts`` (a server that ignores the parameter, an answer
    cut short) is not taken to have none: its contacts are read by its own route."""
    sandbox.faults.drop_fields(1, "Contacts")
    sandbox.reset_hits()
    everything = await read_all(connector, "contacts")
    assert {c.id for c in everything} == {k for v in sandbox.contacts.values() for k in v}
    per_customer = [h.path for h in sandbox.hits if h.path.endswith("/Contacts")]
    assert sorted(per_customer) == sorted(f"/Customers/{g}/Contacts" for g in sandbox.customers)


# --- updates read together (no partial update: a customer is read before it is written) ---

def _reads(sandbox) -> tuple[int, int]:
    """(reads of one customer by id, pages of the whole listing)."""
    by_id = sum(1 for h in sandbox.hits if h.method == "GET" and h.path.count("/") == 2
                and not h.path.split("/")[-1].isdigit())
    listing = sum(1 for h in sandbox.hits if h.method == "GET"
                  and h.path.split("/")[-1].isdigit() and "modifiedSince" not in h.query)
    return by_id, listing


async def test_a_chunks_updates_take_their_customers_from_one_listing_page(connector, sandbox):
    """Five updates in a chunk of twelve customers: one page of the listing instead of five
    reads by id, and each POST still carries what it did not change (address, sales person)."""
    guids = sorted(sandbox.customers)[:5]
    before = {g: dict(sandbox.customers[g]) for g in guids}
    sandbox.reset_hits()
    await connector.will_update("customers", {g: {"PhoneNumber"} for g in guids})
    for n, guid in enumerate(guids):
        await connector.update("customers", guid, {"PhoneNumber": f"+64 9 555 010{n}"})
    assert _reads(sandbox) == (0, 1)
    assert sandbox.count("POST") == 5
    for n, guid in enumerate(guids):
        after = sandbox.customers[guid]
        assert after["PhoneNumber"] == f"+64 9 555 010{n}"
        assert after["CustomerName"] == before[guid]["CustomerName"]
        assert after["Addresses"] == before[guid]["Addresses"]
        assert after["SalesPerson"] == before[guid]["SalesPerson"]


async def test_a_customer_read_ahead_serves_one_update_only(connector, sandbox):
    """What the listing gave is used once: a second update of the same customer, or an
    update in a later chunk, reads the customer again (never a stale copy)."""
    a, b = sorted(sandbox.customers)[:2]
    await connector.will_update("customers", {a: {"PhoneNumber"}, b: {"PhoneNumber"}})
    await connector.update("customers", a, {"PhoneNumber": "+64 9 555 0301"})
    sandbox.reset_hits()
    await connector.update("customers", a, {"Website": "example.org"})
    assert _reads(sandbox) == (1, 0)
    await connector.will_update("customers", {})       # the next chunk updates nothing here
    sandbox.reset_hits()
    await connector.update("customers", b, {"PhoneNumber": "+64 9 555 0302"})
    assert _reads(sandbox) == (1, 0)
    assert sandbox.customers[a]["PhoneNumber"] == "+64 9 555 0301"
    assert sandbox.customers[a]["Website"] == "example.org"


async def test_one_update_alone_is_read_by_id(connector, sandbox):
    guid = sorted(sandbox.customers)[0]
    sandbox.reset_hits()
    await connector.will_update("customers", {guid: {"PhoneNumber"}})
    await connector.update("customers", guid, {"PhoneNumber": "+64 9 555 0401"})
    assert _reads(sandbox) == (1, 0)


async def test_a_refused_listing_falls_back_to_reads_by_id(connector, sandbox):
    """A listing the server refuses (a 400, say a smaller page limit) costs one request; the
    updates then read their customers one by one and are written."""
    guids = sorted(sandbox.customers)[:3]
    sandbox.faults.fail_next(1, 400)
    sandbox.reset_hits()
    await connector.will_update("customers", {g: {"PhoneNumber"} for g in guids})
    for guid in guids:
        await connector.update("customers", guid, {"PhoneNumber": "+64 9 555 0501"})
    assert _reads(sandbox) == (3, 1)
    assert all(sandbox.customers[g]["PhoneNumber"] == "+64 9 555 0501" for g in guids)


async def test_the_listing_is_read_only_while_it_is_fewer_requests():
    """2,500 customers are three pages of 1,000. Two updates: the first page is read (the
    count is not known yet) and the customers it did not carry are read by id; the next
    chunk of two knows the listing is three pages and reads by id at once. ``get`` of six
    customers, two on the first page and four on the last, reads the three pages."""
    sb = make_sandbox(seed=5, records=2500)
    await sb.start()
    c = make_connector(sb)
    await c.start()
    try:
        ordered = sorted(sb.customers.values(), key=lambda r: (r["LastModifiedOn"], r["Guid"]))
        late = [r["Guid"].lower() for r in ordered[-4:]]         # on the last page
        sb.reset_hits()
        await c.will_update("customers", dict.fromkeys(late[:2], {"PhoneNumber"}))
        for guid in late[:2]:
            await c.update("customers", guid, {"PhoneNumber": "+64 9 555 0601"})
        assert _reads(sb) == (2, 1)
        sb.reset_hits()
        await c.will_update("customers", dict.fromkeys(late[2:], {"PhoneNumber"}))
        for guid in late[2:]:
            await c.update("customers", guid, {"PhoneNumber": "+64 9 555 0602"})
        assert _reads(sb) == (2, 0)
        sb.reset_hits()
        wanted = [r["Guid"].lower() for r in ordered[:2]] + late
        got = await c.get("customers", wanted)
        assert sorted(r.id for r in got) == sorted(wanted)
        assert _reads(sb) == (0, 3)
    finally:
        await c.close()
        await sb.stop()


async def test_a_customer_read_ahead_too_long_ago_is_read_again(connector, sandbox):
    """A POST sends every property as read, so a copy from the listing serves only while it
    is young (``connectors/kept.py``): a chunk paced slowly reads its later customers again,
    and an edit made in Unleashed meanwhile to a property accord does not send survives."""
    now = [100.0]
    connector.ahead.clock = lambda: now[0]
    a, b = sorted(sandbox.customers)[:2]
    await connector.will_update("customers", {a: {"PhoneNumber"}, b: {"PhoneNumber"}})
    await connector.update("customers", a, {"PhoneNumber": "+64 9 555 0701"})
    now[0] += connector.ahead.max_age + 1
    sandbox.customers[b]["Notes"] = "typed in Unleashed after the listing was read"
    sandbox.reset_hits()
    await connector.update("customers", b, {"PhoneNumber": "+64 9 555 0702"})
    assert _reads(sandbox) == (1, 0) and connector.ahead.expired == 1
    assert sandbox.customers[b]["Notes"] == "typed in Unleashed after the listing was read"
    assert sandbox.customers[b]["PhoneNumber"] == "+64 9 555 0702"
