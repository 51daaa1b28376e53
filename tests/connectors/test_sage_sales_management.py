"""Sage Sales Management connector: the contract, sessions, keyset paging, writes, lookups.

Everything runs over real loopback HTTP against SageSalesManagementSandbox.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from connectors.base import AuthError, NotFoundError, RecordError, UnavailableError
from connectors.sage_sales_management import SageSalesManagementConnector
from connectors.sage_sales_management.sandbox import PNG_1PX, SageSalesManagementSandbox
from connectors.sandbox import Clock
from tests.connector_contract import ConnectorContract

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
PUBLIC, PRIVATE = "pub-4f1c9e", "priv-secret-77ad"


def make(url: str, public: str = PUBLIC, private: str = PRIVATE, **extra):
    settings = SageSalesManagementConnector.Settings(
        base_url=url, public_key=public, private_key=private,
        **{"attempts": 3, "max_wait": 0.05, **extra})
    return SageSalesManagementConnector("ssm", settings)


async def started(sb, **extra):
    if sb.port is None:
        await sb.start()
    c = make(sb.url, **extra)
    await c.start()
    return c


@pytest.fixture
async def sandbox():
    sb = SageSalesManagementSandbox(seed=4, records=4, clock=Clock(T0),
                                    public_key=PUBLIC, private_key=PRIVATE)
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
    c = make(sandbox.url, private="not-the-secret-key")
    await c.start()
    yield c
    await c.close()


async def read_all(connector, entity, since=None):
    pages = []
    async for page in connector.changes(entity, since):
        pages.append(page)
    return pages


def flat(pages):
    return [r for p in pages for r in p]


class TestSageSalesManagementContract(ConnectorContract):
    entity = "accounts"
    new_fields = {"name": "Menuiserie Arnaud", "typeId.value": "Prospect",
                  "salesRepId.id": "2", "address1": "12 rue des Lilas", "postcode": "69003",
                  "city": "Lyon", "region": "Auvergne-Rhone-Alpes", "country": "France",
                  "phone": "04 78 00 11 22", "email": "contact@arnaud.example.fr",
                  "web": "www.arnaud.example.fr"}
    edit_fields = {"phone": "04 78 99 88 77", "typeId.value": "Client", "readOnly": True}
    invalid_fields = {"email": "not an e-mail"}


# --- sessions ------------------------------------------------------------------------------

async def test_login_sends_the_keys_and_requests_carry_the_session_key(connector, sandbox):
    await connector.check()
    assert sandbox.logins == 1 and len(sandbox.sessions) == 1
    token = next(iter(sandbox.sessions))
    assert connector._token == token
    assert sandbox.count("POST", "/api/v4/login") == 1
    await connector.get("accounts", ["1"])
    assert sandbox.logins == 1


async def test_an_expired_session_logs_in_again_once_and_the_request_succeeds(connector,
                                                                              sandbox):
    await connector.check()
    sandbox.clock.advance(31 * 60)                  # past the 30-minute session lifetime
    got = await connector.get("accounts", ["1", "2"])
    assert sorted(r.id for r in got) == ["1", "2"]
    assert sandbox.logins == 2 and connector.logins == 2
    assert sandbox.count("GET", "/api/v4/accounts") == 2     # the refused one and its retry


async def test_bad_keys_are_one_auth_error_after_one_login_without_the_keys(bad_connector,
                                                                            sandbox):
    with pytest.raises(AuthError) as info:
        await bad_connector.get("accounts", ["1"])
    text = str(info.value)
    assert sandbox.logins == 1
    assert "\n" not in text and "not-the-secret-key" not in text and PUBLIC not in text
    assert "API keys" in text


def test_secrets_are_not_in_the_repr_of_settings():
    s = SageSalesManagementConnector.Settings(public_key=PUBLIC, private_key=PRIVATE)
    assert PUBLIC not in repr(s) and PRIVATE not in repr(s) and PRIVATE not in str(s)
    with pytest.raises(ValueError):
        SageSalesManagementConnector.Settings(public_key="a", private_key="b", token="c")


# --- paging and changes ----------------------------------------------------------------------

async def test_pages_follow_the_fm_headers(sandbox):
    for i in range(25):
        sandbox.add("products", model=f"M{i:03d}", description="x")
    c = await started(sandbox, page_size=4)
    try:
        products = await c._query(c.entities["products"], "deleted = false")
        assert len(products) == len(sandbox.records("products"))
        listed = [h for h in sandbox.hits if h.path == "/api/v4/products"]
        assert len(listed) == -(-len(products) // 4)
    finally:
        await c.close()
    import aiohttp
    async with aiohttp.ClientSession() as s:
        async with s.post(sandbox.url + "/api/v4/login",
                          json={"username": PUBLIC, "password": PRIVATE}) as r:
            token = (await r.json())["token"]
        h = {"X-Session-Key": token, "Count": "10"}
        async with s.get(sandbox.url + "/api/v4/products?page=1", headers=h) as r:
            assert r.headers["X-FM-Entity-Count"] == str(len(sandbox.records("products")))
            assert r.headers["X-FM-Next-Page"] == "2" and len(await r.json()) == 10
        async with s.get(sandbox.url + "/api/v4/products?page=2", headers=h) as r:
            assert "X-FM-Next-Page" not in r.headers and len(await r.json()) == 7


async def test_keyset_covers_many_records_sharing_one_timestamp():
    sb = SageSalesManagementSandbox(seed=1, records=30, clock=Clock(T0))
    c = await started(sb, page_size=7, public=sb.public_key, private=sb.private_key)
    try:
        pages = await read_all(c, "accounts")
        ids = [r.id for r in flat(pages)]
        assert sorted(ids, key=int) == [str(r["id"]) for r in sb.records("accounts")]
        assert len(ids) == len(set(ids)) == 30 and all(len(p) <= 7 for p in pages)
        assert all(r.modified == T0 for r in flat(pages))
        contacts = flat(await read_all(c, "contacts"))
        assert len(contacts) == len(sb.records("contacts"))
    finally:
        await c.close()
        await sb.stop()


async def test_a_record_edited_between_pages_is_not_lost():
    clock = Clock(T0)
    sb = SageSalesManagementSandbox(clock=clock)
    for i in range(12):
        clock.advance(1)
        sb.add("accounts", name=f"Co {i}")
    c = await started(sb, page_size=5, public=sb.public_key, private=sb.private_key)
    try:
        seen: list[str] = []
        edited = False
        async for page in c.changes("accounts", None):
            seen.extend(r.id for r in page)
            if not edited:
                clock.advance(100)
                sb.edit("accounts", 1, phone="01")     # already read: read again
                sb.edit("accounts", 6, phone="06")     # not yet read: an offset pager skips it
                edited = True
        assert set(seen) == {str(k) for k in range(1, 13)}
        assert seen.count("1") == 2
    finally:
        await c.close()
        await sb.stop()


async def test_changes_since_is_a_closed_bound_on_updated_or_created(connector, sandbox):
    a = sandbox.add("accounts", name="Old Ltd")
    sandbox.clock.advance(60)
    since = sandbox.clock.now()
    b = sandbox.add("accounts", name="New Ltd")                 # dateUpdated null
    sandbox.clock.advance(60)
    sandbox.edit("accounts", a["id"], phone="02")               # edited after since
    records = {r.id: r for r in flat(await read_all(connector, "accounts", since))}
    assert set(records) == {str(a["id"]), str(b["id"])}
    assert records[str(b["id"])].fields["dateUpdated"] is None
    assert records[str(b["id"])].modified == since              # falls back to dateCreated
    assert records[str(a["id"])].modified == since + timedelta(seconds=60)
    later = flat(await read_all(connector, "accounts", since + timedelta(seconds=1)))
    assert [r.id for r in later] == [str(a["id"])]


async def test_deleted_records_are_tombstones_and_get_find_leave_them_out(connector,
                                                                         sandbox):
    rec = await connector.create("accounts", {"name": "Short Lived", "extId": "GONE-1"})
    await connector.delete("accounts", rec.id)
    with pytest.raises(NotFoundError):
        await connector.delete("accounts", rec.id)
    with pytest.raises(NotFoundError):
        await connector.update("accounts", rec.id, {"phone": "0"})
    with pytest.raises(NotFoundError):
        await connector.delete("accounts", "99999")
    assert await connector.get("accounts", [rec.id]) == []
    assert await connector.find("accounts", "extId", ["GONE-1"]) == []
    tomb = [r for r in flat(await read_all(connector, "accounts")) if r.id == rec.id]
    assert tomb[0].deleted and tomb[0].fields["deleted"] is True
    assert tomb[0].fields["dateDeleted"] is not None
    row = sandbox.data["accounts"][int(rec.id)]
    assert row["deleted"] and row["dateUpdated"] == row["dateDeleted"]
    again = await connector.create("accounts", {"name": "Reborn", "extId": "GONE-1"})
    assert again.id != rec.id                      # a deleted record's extId is free again


# --- writes ------------------------------------------------------------------------------------

async def test_validation_is_a_record_error_with_the_vendor_message_and_fields(connector):
    with pytest.raises(RecordError) as info:
        await connector.create("accounts", {"name": "X", "email": "nope"})
    assert "e-mail" in info.value.message and info.value.fields == ("email",)
    with pytest.raises(RecordError) as info:
        await connector.create("accounts", {"phone": "1"})
    assert info.value.fields == ("name",)
    with pytest.raises(RecordError) as info:
        await connector.create("accounts", {"name": "X", "colour": "red"})
    assert info.value.fields == ("colour",) and "colour" in info.value.message
    with pytest.raises(RecordError) as info:
        await connector.create("contacts", {"firstName": "Ana", "accountId.id": "9999"})
    assert info.value.fields == ("accountId",)
    with pytest.raises(RecordError) as info:
        await connector.create("products", {"model": "P1", "image": "aGVsbG8="})
    assert info.value.fields == ("image",)
    with pytest.raises(RecordError) as info:
        await connector.create("products", {"model": "P1", "stock": "lots"})
    assert info.value.fields == ("stock",)


async def test_a_duplicate_ext_id_is_refused(connector):
    await connector.create("accounts", {"name": "First", "extId": "C90001"})
    with pytest.raises(RecordError) as info:
        await connector.create("accounts", {"name": "Second", "extId": "c90001"})
    assert info.value.fields == ("extId",) and "c90001" in info.value.message


async def test_type_is_written_by_name_and_unknown_types_are_refused(connector, sandbox):
    rec = await connector.create("accounts", {"name": "Typed", "typeId.value": "client"})
    assert rec.fields["typeId.value"] == "Client"
    assert rec.fields["typeId.id"] == str(sandbox.type_id("Client"))
    writes = sandbox.writes()
    with pytest.raises(RecordError) as info:
        await connector.update("accounts", rec.id, {"typeId.value": "Distributor"})
    assert info.value.fields == ("typeId.value",) and sandbox.writes() == writes
    sandbox.add_account_type("Distributor")
    with pytest.raises(RecordError):    # read again once this run: not once per record
        await connector.update("accounts", rec.id, {"typeId.value": "Distributor"})
    await connector.check()             # the next run reads the types anew
    rec = await connector.update("accounts", rec.id, {"typeId.value": "Distributor"})
    assert rec.fields["typeId.value"] == "Distributor"
    rec = await connector.update("accounts", rec.id, {"typeId.id": str(sandbox.type_id(
        "Prospect"))})
    assert rec.fields["typeId.value"] == "Prospect"
    assert "Competitor" in await connector.options("account_types")


async def test_sales_rep_full_name_is_computed_and_never_written(connector, sandbox):
    rec = await connector.create("accounts", {"name": "Repped", "salesRepId.id": "2",
                                              "salesRep.fullName": "Ignored Name"})
    assert rec.fields["salesRepId.id"] == "2"
    assert rec.fields["salesRep.fullName"] == "Bruno Lefevre"
    rec = await connector.update("accounts", rec.id, {"salesRepId.id": None})
    assert rec.fields["salesRep.fullName"] is None and rec.fields["salesRepId.id"] is None
    sandbox.edit("accounts", int(rec.id), salesRepId=3)
    users_before = sandbox.count("GET", "/api/v4/users")
    listed = {r.id: r for r in flat(await read_all(connector, "accounts"))}
    assert listed[rec.id].fields["salesRep.fullName"] == "Chloe Dubois"
    # the list the read-backs read serves the listing too (users_ttl): not read again
    assert sandbox.count("GET", "/api/v4/users") == users_before


async def test_contacts_carry_their_account_type_with_one_request_per_page(sandbox):
    c = await started(sandbox, page_size=3)
    try:
        before = sandbox.count("GET", "/api/v4/accounts")
        pages = await read_all(c, "contacts")
        assert sandbox.count("GET", "/api/v4/accounts") - before == len(pages) > 1
        accounts = {a["id"]: a for a in sandbox.records("accounts")}
        types = {t["id"]: t["descriptionEN"] for t in sandbox.account_types.values()}
        for r in flat(pages):
            account = accounts[int(r.fields["accountId.id"])]
            assert r.fields["account.typeId.value"] == types[account["typeId"]]
            assert r.fields["accountId.value"] == account["name"]
        rec = await c.create("contacts", {"accountId.id": str(next(iter(accounts))),
                                          "lastName": "Durand", "email": "d@x.example.fr",
                                          "account.typeId.value": "ignored"})
        assert rec.fields["account.typeId.value"] in types.values()
        assert sandbox.data["contacts"][int(rec.id)]["accountId"] == next(iter(accounts))
        found = await c.find("contacts", "accountId.id", [rec.fields["accountId.id"]])
        assert rec.id in {r.id for r in found}
    finally:
        await c.close()


async def test_get_is_batched_and_find_is_case_insensitive(connector, sandbox):
    ids = [str(a["id"]) for a in sandbox.records("accounts")] + ["999", "abc"]
    got = await connector.get("accounts", ids)
    assert sorted(r.id for r in got) == sorted(ids[:-2])
    name = sandbox.data["accounts"][2]["name"]
    found = await connector.find("accounts", "name", [name.upper(), "nobody"])
    assert "2" in [r.id for r in found]
    assert all(r.fields["name"].casefold() == name.casefold() for r in found)


async def test_get_asks_a_page_as_large_as_its_ids_one_request_per_batch():
    sb = SageSalesManagementSandbox(seed=4, records=30, clock=Clock(T0),
                                    public_key=PUBLIC, private_key=PRIVATE)
    await sb.start()
    c = make(sb.url, page_size=5)
    await c.start()
    try:
        ids = [str(a["id"]) for a in sb.records("accounts")]
        assert len(ids) >= 20
        await c.check()
        sb.reset_hits()
        got = await c.get("accounts", ids)
        assert sorted(r.id for r in got) == sorted(ids)
        assert sb.count("GET", "/api/v4/accounts") == 1      # not one per five ids
    finally:
        await c.close()
        await sb.stop()


async def test_products_invoices_and_users(connector, sandbox):
    rec = await connector.create("products", {"model": "ART-NEW", "description": "Vis 4 mm",
                                              "price": 1.5, "stock": "-", "image": PNG_1PX,
                                              "notAvailable": True})
    assert rec.fields["stock"] == "-" and rec.fields["image"] == PNG_1PX
    assert rec.fields["price"] == 1.5 and rec.fields["notAvailable"] is True
    account = sandbox.records("accounts")[0]
    inv = await connector.create("invoices", {
        "extId": "FA-1", "number": "FA-1", "accountId.id": str(account["id"]),
        "date": "2025-02-01", "dueDate": "2025-03-01", "totalExclTax": 100.0,
        "totalInclTax": 120.0, "status": "Open", "sage50InvoiceId": "5001", "synced": True,
        "readOnly": True})
    assert inv.fields["accountId.value"] == account["name"]
    assert inv.fields["sage50InvoiceId"] == "5001" and inv.fields["date"] == "2025-02-01"
    with pytest.raises(RecordError) as info:
        await connector.create("invoices", {"number": "FA-2"})
    assert info.value.fields == ("accountId",)
    assert not connector.capabilities.entities["users"].can_create
    users = flat(await read_all(connector, "users"))
    assert {"firstName", "lastName", "email", "isActive", "level", "extId"} <= set(
        users[0].fields)
    with pytest.raises(RecordError):
        await connector.create("users", {"firstName": "X"})


async def test_options(connector, sandbox):
    users = await connector.options("users")
    assert users[0] == {"id": "1", "firstName": "Alice", "lastName": "Martin",
                        "fullName": "Alice Martin", "email": "alice.martin@sales.example.com",
                        "level": 5, "isActive": True}
    assert await connector.options("admin") == "1"
    assert {"Client", "Prospect", "Competitor"} <= set(await connector.options(
        "account_types"))
    with pytest.raises(KeyError):
        await connector.options("warehouses")


async def test_429_with_retry_after_is_honoured(connector, sandbox):
    await connector.check()
    sandbox.faults.fail_next(1, 429, retry_after=0)
    assert [r.id for r in await connector.get("accounts", ["1"])] == ["1"]
    assert connector.http.throttled == 1


async def test_the_sandbox_rate_limit_answers_429_with_retry_after():
    clock = Clock(T0)
    sb = SageSalesManagementSandbox(clock=clock, requests_per_minute=3)
    c = await started(sb, public=sb.public_key, private=sb.private_key)
    try:
        await c.check()                                   # login + one request
        clock.advance(20)
        await c.get("accounts", ["1"])                    # the third in the minute
        with pytest.raises(UnavailableError) as info:
            await c.get("accounts", ["1"])                # 429, Retry-After 40 (capped wait)
        assert "429" in str(info.value)
        assert sb.rejected == 3 and c.http.throttled == 3
        clock.advance(40)                                 # the first two leave the window
        assert [r.id for r in await c.get("accounts", ["1"])] == []
    finally:
        await c.close()
        await sb.stop()


async def test_find_by_reference_id_and_type_name(connector, sandbox):
    prospects = {str(a["id"]) for a in sandbox.records("accounts")
                 if a["typeId"] == sandbox.type_id("Prospect") and not a["deleted"]}
    found = await connector.find("accounts", "typeId.value", ["PROSPECT", "Nonexistent"])
    assert {r.id for r in found} == prospects
    assert await connector.find("accounts", "typeId.value", ["Nonexistent"]) == []
    with pytest.raises(KeyError):
        await connector.find("accounts", "salesRep.fullName", ["Alice Martin"])


async def test_an_update_of_computed_fields_only_sends_nothing(connector, sandbox):
    rec = await connector.create("accounts", {"name": "Quiet", "salesRepId.id": "1"})
    writes = sandbox.writes()
    again = await connector.update("accounts", rec.id, {"salesRep.fullName": "X Y",
                                                        "salesRepId.value": "X Y"})
    assert sandbox.writes() == writes and again.fields == rec.fields
    await connector.delete("accounts", rec.id)
    with pytest.raises(NotFoundError):
        await connector.update("accounts", rec.id, {"salesRep.fullName": "X Y"})



# --- reference data: read once per run ----------------------------------------------------------
TYPES, USERS = "/api/v4/accountTypes", "/api/v4/users"


async def test_finds_by_account_type_read_the_types_once_per_run(connector, sandbox):
    await connector.check()
    sandbox.reset_hits()
    prospects = await connector.find("accounts", "typeId.value", ["Prospect"])
    clients = await connector.find("accounts", "typeId.value", ["client", "Nonexistent"])
    assert {r.id for r in prospects} == {str(a["id"]) for a in sandbox.records("accounts")
                                         if a["typeId"] == sandbox.type_id("Prospect")}
    assert all(r.fields["typeId.value"] == "Client" for r in clients)
    assert sandbox.count("GET", TYPES) == 1                     # not one per find
    assert sandbox.count("GET", "/api/v4/accounts") == 2       # one per find
    assert sandbox.count("GET", USERS) == 1 and len(sandbox.hits) == 4   # the rep names
    assert "Client" in await connector.options("account_types")
    assert sandbox.count("GET", TYPES) == 1                     # the same run's list
    sandbox.add_account_type("Distributor")                     # an edit in the vendor
    acc = sandbox.add("accounts", name="Dist Co", typeId=sandbox.type_id("Distributor"))
    assert await connector.find("accounts", "typeId.value", ["Distributor"]) == []
    await connector.check()                                     # a new run reads it again
    sandbox.reset_hits()
    found = await connector.find("accounts", "typeId.value", ["Distributor"])
    found += await connector.find("accounts", "typeId.value", ["Distributor"])
    assert [r.id for r in found] == [str(acc["id"])] * 2
    assert sandbox.count("GET", TYPES) == 1 and sandbox.count("GET", USERS) == 1
    assert len(sandbox.hits) == 4                               # and the two finds


async def test_user_options_read_the_users_once_per_run(connector, sandbox):
    await connector.check()
    sandbox.reset_hits()
    users = await connector.options("users")
    assert await connector.options("admin") == "1"
    assert {u["id"] for u in users} == {str(u["id"]) for u in sandbox.records("users")}
    assert sandbox.count("GET", USERS) == 1 and len(sandbox.hits) == 1
    accounts = flat(await read_all(connector, "accounts"))      # the sales rep names too
    assert any(r.fields.get("salesRep.fullName") for r in accounts)
    assert sandbox.count("GET", USERS) == 1
    sandbox.edit("users", 1, lastName="Renamed")                # an edit in the vendor
    sandbox.edit("users", 2, level=5)
    await connector.check()                                     # a new run reads them again
    sandbox.reset_hits()
    users = await connector.options("users")
    assert users[0]["fullName"] == "Alice Renamed"
    sandbox.edit("users", 1, isActive=False)                    # not seen in this run
    assert await connector.options("admin") == "1"
    assert sandbox.count("GET", USERS) == 1 and len(sandbox.hits) == 1
    await connector.check()
    assert await connector.options("admin") == "2"


async def test_concurrent_first_uses_in_a_run_share_one_read(connector, sandbox):
    import asyncio
    await connector.check()
    sandbox.reset_hits()
    await asyncio.gather(connector.options("users"), connector.options("admin"),
                         connector.options("account_types"),
                         connector.find("accounts", "typeId.value", ["Client"]),
                         connector.find("accounts", "typeId.value", ["Prospect"]))
    assert sandbox.count("GET", USERS) == 1 and sandbox.count("GET", TYPES) == 1


async def test_a_type_name_missing_from_a_fresh_list_is_not_read_again(connector, sandbox):
    await connector.check()
    sandbox.reset_hits()
    with pytest.raises(RecordError) as info:                    # the list it just read
        await connector.create("accounts", {"name": "X", "typeId.value": "Distributor"})
    assert info.value.fields == ("typeId.value",)
    assert sandbox.count("GET", TYPES) == 1 and sandbox.writes() == 0
    sandbox.add_account_type("Distributor")                     # a list read before: again
    rec = await connector.create("accounts", {"name": "X", "typeId.value": "Distributor"})
    assert rec.fields["typeId.value"] == "Distributor"
    assert sandbox.count("GET", TYPES) == 2


async def test_an_unknown_type_name_is_read_again_once_a_run_not_once_a_record(connector,
                                                                            sandbox):
    await connector.check()
    assert "Client" in await connector.options("account_types")     # the run's list
    sandbox.reset_hits()
    for i in range(5):                  # five records naming a type the tenant lacks
        with pytest.raises(RecordError) as info:
            await connector.create("accounts", {"name": f"X{i}", "typeId.value": "Reseller"})
        assert info.value.fields == ("typeId.value",) and "Reseller" in info.value.message
    assert sandbox.count("GET", TYPES) == 1 and sandbox.writes() == 0   # one read, not five
    with pytest.raises(RecordError):    # another missing name: its own one read
        await connector.create("accounts", {"name": "Y", "typeId.value": "Wholesaler"})
    assert sandbox.count("GET", TYPES) == 2
    sandbox.add_account_type("Reseller")
    await connector.check()             # the next run reads the list, and finds it
    rec = await connector.create("accounts", {"name": "Z", "typeId.value": "reseller"})
    assert rec.fields["typeId.value"] == "Reseller"


# --- read-backs of concurrent writes ------------------------------------------------------------
async def test_concurrent_creates_read_their_records_back_in_one_request(sandbox):
    import asyncio
    c = await started(sandbox, read_back_window=0.05)
    try:
        sandbox.reset_hits()
        made = await asyncio.gather(*(c.create("accounts", {"name": f"Batch {i}"})
                                      for i in range(12)))
        assert sorted(r.fields["name"] for r in made) == sorted(f"Batch {i}" for i in range(12))
        assert all(r.fields["dateCreated"] for r in made)
        posts = sandbox.count("POST", "/api/v4/accounts")
        gets = sandbox.count("GET", "/api/v4/accounts")
        assert posts == 12 and gets == 1                 # one list request for the twelve
    finally:
        await c.close()


async def test_a_record_gone_before_its_read_back_is_not_found_and_a_lone_write_still_works(
        sandbox):
    c = await started(sandbox, read_back_window=0.01)
    try:
        acc = await c.create("accounts", {"name": "Alone"})
        assert acc.fields["name"] == "Alone"
        fetch = c._fetch_many

        async def vanished(es, keys):                    # deleted for good in between
            return {k: r for k, r in (await fetch(es, keys)).items() if k != int(acc.id)}
        c._read_backs.fetch = vanished
        with pytest.raises(NotFoundError):
            await c.update("accounts", acc.id, {"phone": "1"})
    finally:
        await c.close()


async def test_without_a_window_each_write_reads_its_record_back_by_id(sandbox):
    c = await started(sandbox, read_back_window=0)
    try:
        sandbox.reset_hits()
        acc = await c.create("accounts", {"name": "By id"})
        assert sandbox.count("GET", f"/api/v4/accounts/{acc.id}") == 1
    finally:
        await c.close()
