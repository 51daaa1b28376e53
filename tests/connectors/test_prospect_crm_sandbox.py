"""The Prospect CRM sandbox on its own: the OData subset, routes, writes, errors."""
from __future__ import annotations

from datetime import datetime, timezone

import aiohttp
import pytest

from connectors.prospect_crm.odata import ODataError, compile_filter, parse_orderby
from connectors.prospect_crm.sandbox import ProspectSandbox
from connectors.sandbox import Clock

AUTH = {"Authorization": "Bearer sandbox-token"}


@pytest.fixture
async def api():
    sb = ProspectSandbox(seed=5, records=6, clock=Clock(datetime(2025, 1, 1, tzinfo=timezone.utc)))
    await sb.start()
    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def call(method, path, json=None, headers=None):
            async with session.request(method, sb.url + path, json=json,
                                       headers=headers) as r:
                body = await r.json() if r.content_type == "application/json" else None
                return r.status, body, r.headers

        call.sb = sb
        yield call
    await sb.stop()


def test_filter_parser_subset():
    get = lambda e, p: e.get(p)
    row = {"Name": "O'Brien Ltd", "Id": 4, "When": datetime(2025, 1, 1, tzinfo=timezone.utc),
           "Gone": None}
    assert compile_filter("tolower(Name) eq 'o''brien ltd'", get)(row)
    assert compile_filter("Id in (1, 4) and not (Gone ne null)", get)(row)
    assert compile_filter("When ge 2025-01-01T00:00:00Z and When lt 2025-01-01T00:00:01.5Z",
                          get)(row)
    assert compile_filter("contains(Name,'Brien') or Id gt 10", get)(row)
    assert not compile_filter("startswith(toupper(Name), 'X')", get)(row)
    for bad in ("Name eq", "Name eq 'x' and", "(Id eq 1", "Id eq 1 2", "Name ~ 'x'"):
        with pytest.raises(ODataError):
            compile_filter(bad, get)(row)
    assert parse_orderby("A desc, B") == [("A", True), ("B", False)]
    with pytest.raises(ODataError):
        parse_orderby("A sideways")


async def test_query_options(api):
    status, body, _ = await api("GET", "/")
    assert status == 200 and {e["name"] for e in body["value"] if e["kind"] == "EntitySet"} \
        == {"Companies", "Contacts", "Users"}
    assert [e["name"] for e in body["value"] if e["kind"] == "Singleton"] == ["Tenant"]
    name = api.sb.data["Companies"][3]["Name"]
    status, body, _ = await api(
        "GET", f"/Companies?$filter=tolower(Name) eq '{name.lower()}'&$select=CompanyId,Name"
               "&$expand=AccountManager($select=UserName)")
    assert status == 200 and [r["CompanyId"] for r in body["value"]] == [3]
    assert set(body["value"][0]) - {"AccountManager"} == {"CompanyId", "Name"}
    status, body, _ = await api("GET", "/Companies?$orderby=CompanyId desc&$top=2&$skip=1")
    assert [r["CompanyId"] for r in body["value"]] == [5, 4]
    status, body, _ = await api("GET", "/Companies?$filter=MainAddress/Country eq 'United "
                                       "Kingdom'&$count=true&$top=0")
    assert body["@odata.count"] == 6 and body["value"] == []
    for bad in ("/Companies?$filter=Nope eq 1", "/Companies?$select=Nope",
                "/Companies?$orderby=Nope", "/Companies?$filter=Name eq", "/Companies?$top=x",
                "/Contacts?$expand=AccountManager", "/Companies(abc)"):
        status, body, _ = await api("GET", bad)
        assert status == 400 and body["error"]["code"] == "BadRequest", bad


async def test_single_entities_and_errors(api):
    status, body, _ = await api("GET", "/Users('AM')")
    assert status == 200 and body["UserName"] == "Alice Morgan"
    status, body, _ = await api("GET", "/Companies(999)")
    assert status == 404 and body["error"]["message"]
    status, _, _ = await api("PUT", "/Companies(1)", json={})
    assert status == 405
    status, body, _ = await api("POST", "/Companies", json={"Name": "A", "Colour": "red"})
    assert status == 400 and body["error"]["details"][0]["target"] == "Colour"
    status, body, _ = await api("POST", "/Companies", json={"Name": "A",
                                                             "AccountManagerId": "QQ"})
    assert body["error"]["details"][0]["target"] == "AccountManagerId"


async def test_writes_prefer_and_soft_delete(api):
    sb = api.sb
    status, _, headers = await api("POST", "/Companies", json={"Name": " Min Ltd "},
                                   headers={"Prefer": "return=minimal"})
    assert status == 204 and headers["Location"].endswith("/Companies(7)")
    assert sb.data["Companies"][7]["Name"] == "Min Ltd"
    status, body, _ = await api("PATCH", "/Companies(7)", json={"Telephone": "1"})
    assert status == 204 and body is None
    status, body, headers = await api("PATCH", "/Companies(7)?$expand=AccountManager",
                                      json={"AccountManagerId": "EW",
                                            "MainAddress": {"Postcode": "tr1 1aa"}},
                                      headers={"Prefer": "return=representation"})
    assert status == 200 and body["Telephone"] == "1"
    assert body["AccountManager"]["UserName"] == "Emma Wright"
    assert body["MainAddress"]["Postcode"] == "TR1 1AA"
    sb.faults.fail_after_commit(1)
    status, _, _ = await api("POST", "/Contacts", json={"CompanyId": 7, "Surname": "Kept"})
    assert status == 500 and any(c["Surname"] == "Kept" for c in sb.data["Contacts"].values())
    status, _, _ = await api("DELETE", "/Companies(7)")
    assert status == 204
    status, body, _ = await api("GET", "/Companies(7)")
    assert status == 200 and body["StatusFlag"] == "D"
    status, _, _ = await api("PATCH", "/Companies(7)", json={"Telephone": "2"})
    assert status == 404
    status, body, _ = await api("POST", "/Contacts", json={"CompanyId": 7, "Surname": "Late"})
    assert status == 400 and body["error"]["details"][0]["target"] == "CompanyId"
