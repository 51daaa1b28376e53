"""The sandboxes answer from indexes exactly what testing every row answers.

Each test runs the same requests, over real HTTP, against two sandboxes built from one seed:
one indexed (as shipped), one whose tables were made plain dicts (every row tested, as before
the indexes). Both must answer the same, also after writes through the API, a stamp set
directly on a row (as tests do), rows added by hand (not indexed: "loose") and deletes."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import aiohttp
import orjson
import pytest

from connectors.prospect_crm.odata import format_datetime
from connectors.prospect_crm.sandbox import ProspectSandbox
from connectors.sandbox import Clock
from connectors.sandbox_index import Row, Table
from connectors.unleashed.sandbox import UnleashedSandbox
from connectors.unleashed.wire import sign

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def test_a_table_follows_its_rows():
    t = Table("at")
    for i in range(5):
        t[i] = Row(at=T0 + timedelta(minutes=i), name=f"N{i}")
    assert list(t.since(T0 + timedelta(minutes=3))) == [3, 4]
    t[1]["at"] = T0 + timedelta(hours=1)                # a stamp set directly moves the row
    t[0].update(at=T0 + timedelta(minutes=30))
    assert list(t.since(T0 + timedelta(minutes=3))) == [3, 4, 0, 1]
    assert t.matching("name", "n2") == {2}
    t[2]["name"] = "Other"                              # value indexes follow too
    assert t.matching("name", "n2") == set() and t.matching("name", "OTHER") == {2}
    t[9] = {"at": T0 + timedelta(minutes=4), "name": "n2"}       # by hand: loose, still found
    assert list(t.since(T0 + timedelta(minutes=4))) == [4, 9, 0, 1]
    assert t.matching("name", "N2") == {9} and t.count_since(None) == 6
    del t[4]
    t.pop(9)
    assert list(t.since(None)) == [2, 3, 0, 1] and t.count_since(T0) == 4
    assert t.matching("name", "n2") == set()


def test_a_keyset_starts_at_its_key_among_rows_sharing_a_stamp():
    t = Table("at")
    for i in range(6):
        t[i] = Row(at=T0 if i < 4 else T0 + timedelta(minutes=1))
    t[9] = {"at": T0}                                   # loose: merged in at its place
    assert list(t.since(T0, 2)) == [2, 3, 9, 4, 5]
    assert list(t.since(T0 + timedelta(minutes=1), 5)) == [5]
    assert list(t.since(T0, None)) == [0, 1, 2, 3, 9, 4, 5]
    assert list(t.since(T0, skip=3)) == [3, 9, 4, 5] and list(t.since(None, skip=9)) == []
    del t[9]                                            # no loose row: straight to the place
    assert list(t.since(T0, skip=3)) == [3, 4, 5] and list(t.since(T0, 1, skip=2)) == [3, 4, 5]


async def test_prospect_keyset_page_walks_from_its_place_not_from_the_stamp():
    """A first sync stamps thousands of rows within one clock tick: the connector's keyset
    filter ("after this stamp, or at it after this key") is answered from the place in the
    modified-at index, so a page costs the same at the thousandth row as at the first."""
    sb = ProspectSandbox(seed=3, records=0, clock=Clock(T0))
    for _ in range(30):
        sb.insert("Companies", {"Name": "Same Tick Ltd"})
    table, asked = sb.data["Companies"], []
    walk = table.since
    table.since = lambda stamp, key=None: asked.append((stamp, key)) or walk(stamp, key)
    await sb.start()
    try:
        async with aiohttp.ClientSession(
                headers={"Authorization": "Bearer sandbox-token"}) as session:
            async with session.get(sb.url + _changes("Companies", "CompanyId", T0,
                                                     (T0, 20))) as r:
                body = await r.json()
    finally:
        await sb.stop()
    assert [c["CompanyId"] for c in body["value"]] == [21, 22, 23, 24, 25]
    assert asked == [(T0, 20)]


async def _pair(make):
    a, b = make(), make()
    await a.start()
    await b.start()
    return a, b


@pytest.fixture
async def prospect():
    clock = Clock(T0)
    a, b = await _pair(lambda: ProspectSandbox(seed=9, records=60, clock=clock,
                                               max_page_size=7))
    for name in ("Companies", "Contacts"):
        b.data[name] = dict(b.data[name])            # plain: every row tested
    async with aiohttp.ClientSession(
            headers={"Authorization": "Bearer sandbox-token"}) as session:

        async def both(path: str, method: str = "GET", json=None):
            out = []
            for sb in (a, b):
                async with session.request(method, sb.url + path, json=json) as r:
                    text = (await r.text()).replace(sb.url, "")     # links name the port
                    out.append((r.status, orjson.loads(text) if text else None))
            assert out[0] == out[1], path
            return out[0]

        both.sandboxes = (a, b)
        yield both
    await a.stop()
    await b.stop()


def _changes(es: str, key: str, since: datetime, last: tuple | None = None) -> str:
    t = format_datetime(since)
    where = (f"LastUpdatedTimestamp ge {t}" if last is None else
             f"LastUpdatedTimestamp gt {format_datetime(last[0])} or (LastUpdatedTimestamp eq "
             f"{format_datetime(last[0])} and {key} gt {last[1]})")
    return f"/{es}?$filter={where}&$orderby=LastUpdatedTimestamp,{key}&$top=5"


async def test_prospect_filters_answered_from_indexes(prospect):
    a, b = prospect.sandboxes
    names = [c["Name"] for c in list(a.data["Companies"].values())[:5]]
    terms = " or ".join(f"tolower(Name) eq '{n.lower()}'" for n in names)
    queries = [
        f"/Companies?$filter=({terms}) and StatusFlag ne 'D'",
        "/Companies?$filter=(CompanyId eq 3 or CompanyId eq 40 or CompanyId eq 999) and "
        "StatusFlag ne 'D'",
        "/Contacts?$filter=CompanyId eq 4", "/Contacts?$filter=CompanyId in (4, 5, 6)",
        f"/Companies?$filter=Name eq '{names[0].upper()}'",          # eq: case kept
        "/Companies?$filter=LastUpdatedTimestamp ge 2024-12-20T00:00:00Z&$count=true",
        "/Companies?$filter=LastUpdatedTimestamp ge 2024-12-20T00:00:00Z&$orderby=Name",
        "/Companies?$filter=not (CompanyId eq 3)&$top=3&$skip=2",
        "/Companies?$filter=MainAddress/Country eq 'United Kingdom' or CompanyId eq 2",
    ]
    for q in queries:
        await prospect(q)
    for sb in (a, b):                         # the same edits on both sides
        sb.clock.advance(60)
    await prospect("/Companies(5)", "PATCH", {"Name": "Renamed Ltd"})
    await prospect("/Companies(6)", "DELETE")
    for sb in (a, b):
        sb.data["Companies"][7]["LastUpdatedTimestamp"] = T0 + timedelta(days=1)
        sb.data["Companies"][7]["Name"] = "Moved By Hand"
        sb.data["Companies"][500] = {**sb.data["Companies"][8], "CompanyId": 500,
                                     "Name": "Loose Ltd"}
    for q in queries + ["/Companies?$filter=tolower(Name) eq 'renamed ltd'",
                        "/Companies?$filter=tolower(Name) eq 'moved by hand'",
                        "/Companies?$filter=tolower(Name) eq 'loose ltd'"]:
        await prospect(q)
    for es, key in (("Companies", "CompanyId"), ("Contacts", "ContactId")):
        since, last, seen = T0 - timedelta(days=40), None, []
        while True:                           # the connector's keyset, page by page
            _, body = await prospect(_changes(es, key, since, last))
            if not body["value"]:
                break
            seen += [r[key] for r in body["value"]]
            row = body["value"][-1]
            last = (datetime.fromisoformat(row["LastUpdatedTimestamp"].replace("Z", "+00:00")),
                    row[key])
        assert len(seen) == len(set(seen)) == len(a.data[es])


async def test_unleashed_listing_answered_from_the_index():
    clock = Clock(T0)
    a, b = await _pair(lambda: UnleashedSandbox(seed=4, records=40, clock=clock,
                                                rate_limit_per_minute=10**6))
    b.customers = dict(b.customers)
    try:
        async with aiohttp.ClientSession() as session:
            async def both(path: str, params: dict):
                from yarl import URL
                query = URL("/").with_query(params).raw_query_string
                out = []
                for sb in (a, b):
                    headers = {"api-auth-id": "sandbox", "Accept": "application/json",
                               "api-auth-signature": sign("sandbox-key", query)}
                    async with session.get(f"{sb.url}{path}?{query}", headers=headers) as r:
                        out.append((r.status, await r.json()))
                assert out[0] == out[1], (path, params)
                return out[0][1]

            listing = {"pageSize": 7, "includeObsolete": "true", "orderBy": "LastModifiedOn"}
            since = (T0 - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%S")
            for page in (1, 2, 6, 7):
                await both(f"/Customers/{page}", listing)
                await both(f"/Customers/{page}", {**listing, "modifiedSince": since})
            await both("/Customers/1", {"pageSize": 5})                 # by code
            await both("/Customers/1", {**listing, "includeObsolete": "false"})
            code = next(iter(a.customers.values()))["CustomerCode"]
            await both("/Customers/1", {**listing, "customerCode": code[:4]})
            for sb in (a, b):
                first = sorted(sb.customers)[3]
                sb.customers[first]["LastModifiedOn"] = T0 + timedelta(hours=2)
            body = await both("/Customers/1", {**listing, "modifiedSince": "2025-01-01T01:00:00"})
            assert [c["Guid"] for c in body["Items"]] == [sorted(a.customers)[3]]
    finally:
        await a.stop()
        await b.stop()
