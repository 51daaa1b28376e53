"""Sage Sales Management sandbox: the where parser, seed/touch, soft delete, the wire."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import aiohttp
import pytest

from connectors.sage_sales_management.sandbox import SageSalesManagementSandbox, fmt
from connectors.sage_sales_management.where import (WhereError, compile_where, key_range,
                                                     parse, parse_order)
from connectors.sandbox import Clock

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
NAMES = {"id", "name", "city", "deleted", "dateUpdated", "dateCreated", "price"}


def where(text: str, row: dict) -> bool:
    return compile_where(parse(text), NAMES)(row)


# --- the where parser ----------------------------------------------------------------------

def test_and_binds_tighter_than_or_and_parentheses_override():
    row = {"id": 1, "name": "Acme", "city": "Lyon"}
    assert where("name = 'x' AND city = 'x' OR id = 1", row)        # (F and F) or T
    assert not where("name = 'x' AND (city = 'x' OR id = 1)", row)
    assert where("id = 2 OR name = 'acme' AND city = 'LYON'", row)   # text: case-insensitive
    assert not where("NOT (id = 1)", row)
    assert where("((id = 1))", row)


def test_quoting_operators_and_null():
    row = {"id": 5, "name": "L'Atelier", "city": None, "price": 12.5, "deleted": False}
    assert where("name = 'L''Atelier'", row)
    assert where('name = "L\'Atelier"', row)
    assert where("name LIKE 'l%r' AND name NOT LIKE '%x%'", row)
    assert where("name LIKE 'L_Atelier'", row)
    assert where("id IN (1, 5, 7) AND id NOT IN (2)", row)
    assert where("id >= 5 AND id <= 5 AND id > 4 AND id < 6 AND id <> 4 AND id != 3", row)
    assert where("price > 12 AND price = 12.5", row)
    assert where("city IS NULL AND name IS NOT NULL", row)
    assert not where("city = 'Lyon' OR city <> 'Lyon'", row)      # NULL compares false
    assert where("deleted = false AND deleted = 0", row)
    assert where("id = '5'", row)                                   # implicit conversion


def test_dates_compare_as_date_times_and_coalesce_falls_back():
    row = {"id": 1, "dateCreated": T0, "dateUpdated": None}
    assert where(f"COALESCE(dateUpdated, dateCreated) >= '{fmt(T0)}'", row)
    assert where("dateCreated = '2025-03-01 09:00:00'", row)
    assert not where("dateUpdated >= '2000-01-01'", row)
    with pytest.raises(WhereError):
        where("dateCreated > 'yesterday'", row)


@pytest.mark.parametrize("bad", ["", "name =", "name = 'open", "(id = 1", "id = 1)",
                                 "id == 1", "nosuch = 1", "id = 1 AND", "id IN ()",
                                 "id = 1; DROP TABLE accounts", "name LIKE"])
def test_bad_where_is_refused(bad):
    with pytest.raises(WhereError):
        compile_where(parse(bad), NAMES)


def test_order_defaults_to_descending():
    (a, desc_a), (b, desc_b) = parse_order("COALESCE(dateUpdated,dateCreated) ASC, id")
    assert not desc_a and desc_b
    with pytest.raises(WhereError):
        parse_order("id sideways")


def test_keyset_where_is_an_exact_range():
    node = parse(f"COALESCE(dateUpdated,dateCreated) > '{fmt(T0)}' OR "
                 f"(COALESCE(dateUpdated,dateCreated) = '{fmt(T0)}' AND id > 7)")
    lo, hi, exact = key_range(node, lambda n: getattr(n, "args", None) is not None)
    assert lo == (T0, 7) and hi is None and exact
    lo, hi, exact = key_range(parse("name = 'x'"), lambda n: False)
    assert (lo, hi, exact) == (None, None, False)


# --- over HTTP -------------------------------------------------------------------------------

@pytest.fixture
async def sandbox():
    sb = SageSalesManagementSandbox(seed=3, records=10, clock=Clock(T0))
    await sb.start()
    yield sb
    await sb.stop()


async def session(sb) -> aiohttp.ClientSession:
    s = aiohttp.ClientSession()
    async with s.post(sb.url + "/api/v4/login",
                      json={"username": sb.public_key, "password": sb.private_key}) as r:
        token = (await r.json())["token"]
    s.headers["X-Session-Key"] = token
    return s


async def test_bad_where_is_400_with_fm_error_901(sandbox):
    async with await session(sandbox) as s:
        async with s.get(sandbox.url + "/api/v4/accounts",
                         params={"where": "name = 'unterminated"}) as r:
            assert r.status == 400 and (await r.json())["code"] == 901
        async with s.get(sandbox.url + "/api/v4/accounts", params={"order": "colour"}) as r:
            assert r.status == 400 and (await r.json())["code"] == 901
        async with s.get(sandbox.url + "/api/v4/accounts",
                         params={"where": "city = 'Lyon' OR city = 'Lille'",
                                 "order": "name ASC"}) as r:
            rows = await r.json()
            assert r.status == 200 and all(x["city"] in ("Lyon", "Lille") for x in rows)
            assert [x["name"].casefold() for x in rows] == sorted(
                x["name"].casefold() for x in rows)


async def test_auth_and_session_errors(sandbox):
    async with aiohttp.ClientSession() as s:
        async with s.post(sandbox.url + "/api/v4/login",
                          json={"username": "x", "password": "y"}) as r:
            assert r.status == 401 and "y" not in (await r.json())["message"].split()
        async with s.get(sandbox.url + "/api/v4/accounts") as r:
            assert r.status == 401
    s = await session(sandbox)
    async with s:
        async with s.get(sandbox.url + "/api/v4/accounts/1") as r:
            body = await r.json()
            assert body["typeId"]["value"] in ("Client", "Prospect", "Competitor")
            assert body["dateCreated"] == "2025-03-01T09:00:00.000Z"
        sandbox.clock.advance(30 * 60)
        async with s.get(sandbox.url + "/api/v4/accounts/1") as r:
            assert r.status == 401


async def test_soft_delete_semantics_over_http(sandbox):
    async with await session(sandbox) as s:
        async with s.post(sandbox.url + "/api/v4/accounts",
                          json={"name": "Tmp", "extId": "T-1", "typeId": 2}) as r:
            new_id = (await r.json())["id"]
        sandbox.clock.advance(5)
        async with s.delete(f"{sandbox.url}/api/v4/accounts/{new_id}") as r:
            assert r.status == 200 and (await r.json())["Message"] == "entity deleted"
        async with s.get(f"{sandbox.url}/api/v4/accounts/{new_id}") as r:
            row = await r.json()
            assert row["deleted"] is True and row["dateDeleted"] == row["dateUpdated"]
        for method in ("DELETE", "PUT"):
            async with s.request(method, f"{sandbox.url}/api/v4/accounts/{new_id}",
                                 json={"name": "x"}) as r:
                assert r.status == 400 and (await r.json())["code"] == 910
        async with s.post(sandbox.url + "/api/v4/contacts",
                          json={"lastName": "Orphan", "accountId": new_id}) as r:
            assert r.status == 400 and (await r.json())["fields"] == ["accountId"]
        async with s.get(sandbox.url + "/api/v4/accounts",
                         params={"where": "extId = 't-1'"}) as r:
            assert [x["id"] for x in await r.json()] == [new_id]
        async with s.delete(f"{sandbox.url}/api/v4/users/1") as r:
            assert r.status == 405


# --- seed, touch, helpers ----------------------------------------------------------------------

def test_seed_is_deterministic_and_plausible():
    a = SageSalesManagementSandbox(seed=9, records=40, clock=Clock(T0))
    b = SageSalesManagementSandbox(seed=9, records=40, clock=Clock(T0))
    assert a.records("accounts") == b.records("accounts")
    accounts = a.records("accounts")
    assert len(accounts) == 40 and len(a.records("products")) == 20
    assert 40 <= len(a.records("contacts")) <= 120
    types = {a.account_types[x["typeId"]]["descriptionEN"] for x in accounts}
    assert {"Client", "Prospect"} <= types
    assert any(x["salesRepId"] is None for x in accounts)
    assert any(x["salesRepId"] is not None for x in accounts)
    assert all(x["readOnly"] for x in accounts if x["typeId"] == a.type_id("Client"))
    admins = [u for u in a.records("users") if u["level"] == 5 and u["isActive"]]
    assert admins and admins[0]["id"] == 1
    assert all(x["dateUpdated"] is None for x in accounts)
    assert a.touch(a.rng) == b.touch(b.rng)


def test_touch_never_edits_a_read_only_record():
    sb = SageSalesManagementSandbox(seed=2, records=15, clock=Clock(T0))
    frozen = {(e, r["id"]): dict(r) for e in ("accounts", "contacts")
              for r in sb.records(e) if r["readOnly"]}
    for _ in range(40):
        sb.clock.advance(1)
        sb.touch(sb.rng)
    for (e, rid), before in frozen.items():
        assert sb.data[e][rid] == before
    assert any(r["dateUpdated"] for r in sb.records("accounts"))


def test_helpers_act_as_a_user_would():
    sb = SageSalesManagementSandbox(clock=Clock(T0))
    row = sb.add("accounts", name="Helper", extId="H-1", typeId=sb.type_id("Prospect"))
    assert sb.by_ext("accounts", "h-1") is row and row["dateUpdated"] is None
    sb.clock.advance(10)
    sb.edit("accounts", row["id"], readOnly=True)
    assert row["dateUpdated"] == T0 + timedelta(seconds=10)
    with pytest.raises(ValueError):
        sb.edit("accounts", row["id"], phone="1")
    sb.edit("accounts", row["id"], force=True, phone="1")
    sb.remove("accounts", row["id"])
    assert row["deleted"] and sb.by_ext("accounts", "H-1") is None
    assert row in sb.records("accounts")


async def test_many_records_page_fast():
    sb = SageSalesManagementSandbox(clock=Clock(T0), requests_per_minute=10**6)
    for i in range(20000):
        if i and i % 1000 == 0:
            sb.clock.advance(1)                  # ids 1..1000 at T0, 1001..2000 at T0+1s...
        sb.add("accounts", name=f"Co {i}", extId=f"E{i}")
    await sb.start()
    try:
        async with await session(sb) as s:
            t = fmt(T0 + timedelta(seconds=10))
            params = {"order": "COALESCE(dateUpdated,dateCreated) ASC,id ASC",
                      "where": f"COALESCE(dateUpdated,dateCreated) > '{t}' OR "
                               f"(COALESCE(dateUpdated,dateCreated) = '{t}' AND id > 10500)"}
            async with s.get(sb.url + "/api/v4/accounts", params=params,
                             headers={"Count": "500"}) as r:
                rows = await r.json()
                assert rows[0]["id"] == 10501 and len(rows) == 500
                assert r.headers["X-FM-Entity-Count"] == str(20000 - 10500)
    finally:
        await sb.stop()
