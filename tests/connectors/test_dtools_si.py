"""The D-Tools SI connector against its sandbox over loopback, and both against D-Tools'
published OpenAPI document of the Subscribe Projects API (so neither drifts from it)."""
from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
import pytest

from connectors.base import AuthError, RecordError, system_acknowledge
from connectors.dtools_si import DToolsSiConnector
from connectors.dtools_si.client import pascal, to_record
from connectors.dtools_si.sandbox import DToolsSiSandbox
from tests.connectors.openapi_check import Spec

SPEC = Spec(Path(__file__).parent / "vendor_docs" / "d-tools-subscribeprojects-api-openapi.yml")


@pytest.fixture
async def sandbox():
    sb = DToolsSiSandbox(seed=3, records=4, items=5, locations=3)
    await sb.start(0)
    yield sb
    await sb.stop()


@pytest.fixture
async def connector(sandbox):
    c = DToolsSiConnector("si", {"api_key": "sandbox-key", "base_url": sandbox.url,
                                 "page_size": 3})
    await c.start()
    yield c
    await c.close()


async def _all(connector) -> list:
    out = []
    async for page in connector.changes("projects", None):
        out += page
    return out


async def test_the_clients_requests_are_in_the_vendors_document(connector, sandbox):
    await connector.check()
    records = await _all(connector)
    await connector.get("projects", [records[0].id, "no-such-project"])
    await connector.acknowledge("projects", [(records[0].id, records[0].version)])
    assert sandbox.hits
    for hit in sandbox.hits:
        SPEC.check_request(hit.method, hit.path.removeprefix("/SI"), hit.query)


async def test_the_sandboxs_answers_are_in_the_vendors_document(sandbox):
    headers = {"X-DTSI-ApiKey": "sandbox-key"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sandbox.url}/Subscribe/Projects",
                            params={"includeDeleted": "true"}, headers=headers) as resp:
            listing = orjson.loads(await resp.read())
        SPEC.check_body(SPEC.response_schema("GET", "/Subscribe/Projects"), listing)
        pid = listing["Projects"][0]["Id"]
        async with http.get(f"{sandbox.url}/Subscribe/Projects/{pid}",
                            params={"aggregateBy": "Location"}, headers=headers) as resp:
            detail = orjson.loads(await resp.read())
    SPEC.check_body(SPEC.response_schema("GET", f"/Subscribe/Projects/{pid}"), detail)
    assert detail["Items"] and detail["Locations"] and detail["Resources"]


async def test_the_newest_publish_of_a_project_wins_and_deletes_are_tombstones(
        connector, sandbox):
    first = sandbox.messages[0]
    again = sandbox.project(first["Id"])
    again["Name"] = "Renamed in SI"
    sandbox.clock.advance(60)
    sandbox.publish(again)
    gone = sandbox.project(sandbox.messages[1]["Id"])
    sandbox.publish(gone, deleted=True)
    records = {r.id: r for r in await _all(connector)}
    assert len(records) == 4                         # one record per project
    assert records[first["Id"]].fields["Name"] == "Renamed in SI"
    assert records[first["Id"]].version == str(sandbox.messages[-2]["PublishedOnUnixTimeMs"])
    assert records[gone["Id"]].deleted
    owner = next(r["Name"] for r in first["Resources"] if r["IsOwner"])
    assert records[first["Id"]].fields["Owner.Name"] == owner
    assert isinstance(records[first["Id"]].fields["Items"], list)


async def test_marking_imported_drains_the_queue_and_a_stale_stamp_marks_nothing(
        connector, sandbox):
    records = await _all(connector)
    target = records[0]
    newer = sandbox.project(target.id)
    sandbox.clock.advance(60)
    sandbox.publish(newer)                           # published again after the read
    acked, stale = await system_acknowledge(
        connector, "projects", [(r.id, r.version) for r in records])
    assert (acked, stale) == (3, 1)
    left = sandbox.unimported()
    assert {m["Id"] for m in left} == {target.id} and len(left) == 2
    assert {r.id for r in await _all(connector)} == {target.id}


def test_camel_case_answers_as_the_document_writes_them_are_read_the_same():
    camel = {"id": "p1", "name": "Villa", "publishedOnUnixTimeMs": 1700000000000,
             "items": [{"id": "i1", "model": "ARC", "locationId": "l1"}],
             "resources": [{"name": "Anita Kumar", "isOwner": True}]}
    rec = to_record(camel)
    assert rec.id == "p1" and rec.fields["Name"] == "Villa" and rec.version == "1700000000000"
    assert rec.fields["Items"] == [{"Id": "i1", "Model": "ARC", "LocationId": "l1"}]
    assert rec.fields["Owner.Name"] == "Anita Kumar"
    assert pascal({"totalCount": 1}) == {"TotalCount": 1}


async def test_a_wrong_key_is_an_auth_error_without_the_key(sandbox):
    c = DToolsSiConnector("si", {"api_key": "wrong-key-123", "base_url": sandbox.url})
    await c.start()
    try:
        with pytest.raises(AuthError) as info:
            await c.check()
        assert "wrong-key-123" not in str(info.value)
    finally:
        await c.close()


async def test_the_queue_is_read_only(connector):
    with pytest.raises(RecordError):
        await connector.create("projects", {"Name": "x"})
    assert await connector.find("projects", "Name", ["x"]) == []
