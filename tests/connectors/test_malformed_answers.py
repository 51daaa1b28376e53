"""Malformed vendor answers: the three HTTP connectors turn each into a ConnectorError naming
the system, the request and a short reason (a whole answer: UnavailableError; one record: a
Record with ``error``, the others go on; a record without an id: left out and counted).

aioresponses for each case of each client; then the same faults through the sandboxes' knob
(``faults.garbage_next``) over loopback, where a truncated body really is cut short.
"""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import aiohttp
import pytest
from aioresponses import aioresponses as _aioresponses

from connectors.base import OutcomeUnknownError, UnavailableError
from connectors.http import HTML_SUMMARY, html_summary
from connectors.prospect_crm import ProspectCrmConnector
from connectors.prospect_crm.sandbox import ProspectSandbox
from connectors.sage_sales_management import SageSalesManagementConnector
from connectors.sage_sales_management.sandbox import SageSalesManagementSandbox
from connectors.sandbox import BAD_GATEWAY_PAGE
from connectors.unleashed import UnleashedConnector
from connectors.unleashed.sandbox import UnleashedSandbox
from tests.test_cli import logs  # noqa: F401  (every structlog event, as a fixture)


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's ``stream_writer``."""

    def __init__(self, method, url, **kwargs):
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class mocked(_aioresponses):
    def add(self, url, method="GET", *args, **kwargs):
        kwargs.setdefault("response_class", _Response)
        return super().add(url, method, *args, **kwargs)


G1, G2, G3 = ("0b0e2b8e-1111-4222-8333-44445555666" + d for d in "123")
UL_DATE = "/Date(1740819600000)/"
ISO = "2025-03-01T09:00:00.000000Z"


# --- the three clients, and how each lists a page of records -----------------------------------
class Unleashed:
    name = "unleashed"
    page_url = re.compile(r"^https://ul\.test/Customers/1(\?.*)?$")
    request = "GET /Customers/1"

    @staticmethod
    def make():
        c = UnleashedConnector("ul", UnleashedConnector.Settings(
            base_url="https://ul.test", api_id="my-id", api_key="my-secret-key", timeout=5))
        c.http.attempts = 2
        return c

    @staticmethod
    def login(m):
        pass

    entity = "customers"

    @staticmethod
    def row(i: int, **over):
        row = {"Guid": (G1, G2, G3)[i - 1], "CustomerCode": f"C{i}", "CustomerName": f"N{i}",
               "LastModifiedOn": UL_DATE, "Addresses": [], "SalesPerson": None}
        return {**row, **over}

    @staticmethod
    def page(rows):
        return {"Pagination": {"NumberOfPages": 1}, "Items": rows}

    id_key, date_key = "Guid", "LastModifiedOn"
    secrets = ("my-secret-key",)


class Prospect:
    name = "crm"
    page_url = re.compile(r"^https://crm\.test/Contacts(\?.*)?$")
    request = "GET /Contacts"

    @staticmethod
    def make():
        return ProspectCrmConnector("crm", ProspectCrmConnector.Settings(
            base_url="https://crm.test", token="pat-secret-123", attempts=2, max_wait=0.01))

    @staticmethod
    def login(m):
        pass

    entity = "contacts"

    @staticmethod
    def row(i: int, **over):
        row = {"ContactId": i, "CompanyId": 1, "Surname": f"S{i}", "StatusFlag": "A",
               "LastUpdatedTimestamp": ISO}
        return {**row, **over}

    @staticmethod
    def page(rows):
        return {"value": rows}

    id_key, date_key = "ContactId", "LastUpdatedTimestamp"
    secrets = ("pat-secret-123",)


class SalesManagement:
    name = "ssm"
    page_url = re.compile(r"^https://ssm\.test/api/v4/products(\?.*)?$")
    request = "GET /api/v4/products"

    @staticmethod
    def make():
        return SageSalesManagementConnector("ssm", SageSalesManagementConnector.Settings(
            base_url="https://ssm.test", public_key="pub-1", private_key="priv-secret-9",
            attempts=2, max_wait=0.01))

    @staticmethod
    def login(m):
        m.post("https://ssm.test/api/v4/login", payload={"token": "session-secret-5"})

    entity = "products"

    @staticmethod
    def row(i: int, **over):
        row = {"id": i, "model": f"ART{i}", "deleted": False, "dateCreated": ISO,
               "dateUpdated": None}
        return {**row, **over}

    @staticmethod
    def page(rows):
        return rows

    id_key, date_key = "id", "dateCreated"
    secrets = ("priv-secret-9", "session-secret-5")


CLIENTS = [Unleashed, Prospect, SalesManagement]


@pytest.fixture(params=CLIENTS, ids=lambda k: k.__name__)
async def client(request):
    kind = request.param
    c = kind.make()
    await c.start()
    yield kind, c
    await c.close()


async def read(connector, entity):
    return [r for page in [p async for p in connector.changes(entity, None)] for r in page]


def assert_short_and_clean(kind, message: str) -> None:
    assert message.startswith(f"{kind.name}: ") and kind.request in message
    assert "?" not in message                     # the query string (signatures) stays out
    assert "<" not in message and "upstream server" not in message
    assert len(message) < 300
    for secret in kind.secrets:
        assert secret not in message


# --- whole answers -------------------------------------------------------------------------
async def test_a_text_body_where_json_is_expected_is_unavailable(client):
    kind, c = client
    with mocked() as m:
        kind.login(m)
        m.get(kind.page_url, body="Service temporarily in maintenance mode.",
              content_type="text/plain")
        with pytest.raises(UnavailableError) as info:
            await read(c, kind.entity)
    assert_short_and_clean(kind, info.value.message)
    assert "answered text (40 bytes) instead of JSON" in info.value.message


async def test_a_truncated_json_body_is_unavailable(client):
    kind, c = client
    whole = json.dumps(kind.page([kind.row(1), kind.row(2)]))
    with mocked() as m:
        kind.login(m)
        m.get(kind.page_url, body=whole[: len(whole) // 2], content_type="application/json")
        with pytest.raises(UnavailableError) as info:
            await read(c, kind.entity)
    assert_short_and_clean(kind, info.value.message)
    assert "a truncated JSON body" in info.value.message


async def test_an_html_502_page_is_retried_then_summarised_by_its_title(client):
    kind, c = client
    with mocked() as m:
        kind.login(m)
        m.get(kind.page_url, status=502, body=BAD_GATEWAY_PAGE, content_type="text/html",
              repeat=True)
        with pytest.raises(UnavailableError) as info:
            await read(c, kind.entity)
        calls = sum(len(v) for (method, _), v in m.requests.items() if method == "GET")
    assert calls == 2                               # a 5xx is still retried
    assert_short_and_clean(kind, info.value.message)
    assert 'an HTML page "502 Bad Gateway"' in info.value.message


async def test_json_of_another_shape_is_unavailable(client):
    kind, c = client
    with mocked() as m:
        kind.login(m)
        m.get(kind.page_url, payload={"items": "not a list"} if kind is not Unleashed
              else {"Items": {"not": "a list"}})
        with pytest.raises(UnavailableError) as info:
            await read(c, kind.entity)
    assert_short_and_clean(kind, info.value.message)
    assert "expected a JSON" in info.value.message or "has no" in info.value.message


# --- one record --------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [12345, "yesterday", True, {"at": 1}])
async def test_a_wrongly_typed_date_is_an_error_record_and_the_others_go_on(client, bad):
    kind, c = client
    rows = [kind.row(1), kind.row(2, **{kind.date_key: bad}), kind.row(3)]
    with mocked() as m:
        kind.login(m)
        m.get(kind.page_url, payload=kind.page(rows))
        records = await read(c, kind.entity)
    assert len(records) == 3
    good = [r for r in records if r.error is None]
    bad_rec, = [r for r in records if r.error is not None]
    assert len(good) == 2 and all(r.fields and r.modified for r in good)
    assert bad_rec.fields == {} and bad_rec.modified is None
    assert bad_rec.id == str(rows[1][kind.id_key]).lower()
    assert bad_rec.error.startswith(f"{kind.name}: {kind.request}: record {bad_rec.id}")
    assert f"{kind.date_key} is not a date" in bad_rec.error


async def test_a_record_without_its_id_is_left_out_counted_and_logged(client, logs):
    kind, c = client
    nameless = kind.row(2)
    del nameless[kind.id_key]
    rows = [kind.row(1), nameless, "not a record", kind.row(3)]
    with mocked() as m:
        kind.login(m)
        m.get(kind.page_url, payload=kind.page(rows))
        records = await read(c, kind.entity)
    assert [r.error for r in records] == [None, None]
    assert c.reader.skipped == 2
    warned = [e for e in logs if e["event"] == "record.skipped"]
    assert [e["log_level"] for e in warned] == ["warning", "warning"]
    assert warned[0]["system"] == kind.name and warned[0]["request"] == kind.request
    assert "without an id" in warned[0]["reason"] and warned[1]["skipped"] == 2


async def test_a_record_missing_a_field_it_needs_is_an_error_record():
    c = Prospect.make()
    await c.start()
    try:
        with mocked() as m:
            m.get(Prospect.page_url, payload={"value": [Prospect.row(1), {"ContactId": "x7"}]})
            records = await read(c, "contacts")
    finally:
        await c.close()
    assert records[0].error is None
    assert records[1].id == "x7" and "record x7 cannot be read" in records[1].error


async def test_a_write_whose_answer_cannot_be_read_has_an_unknown_outcome():
    c = Prospect.make()
    await c.start()
    try:
        with mocked() as m:
            m.post(re.compile(r"^https://crm\.test/Contacts(\?.*)?$"), status=201,
                   payload=Prospect.row(9, LastUpdatedTimestamp=[1, 2]))
            with pytest.raises(OutcomeUnknownError) as info:
                await c.create("contacts", {"CompanyId": "1", "Surname": "S"})
    finally:
        await c.close()
    assert info.value.message.startswith("crm: POST /Contacts: the write was sent")
    assert "LastUpdatedTimestamp is not a date" in info.value.message


async def test_ssm_a_create_answered_without_an_id_has_an_unknown_outcome():
    c = SalesManagement.make()
    await c.start()
    try:
        with mocked() as m:
            SalesManagement.login(m)
            m.post(re.compile(r"^https://ssm\.test/api/v4/products(\?.*)?$"),
                   payload={"Message": "entity created"})
            with pytest.raises(OutcomeUnknownError) as info:
                await c.create("products", {"model": "ART9"})
    finally:
        await c.close()
    assert "POST /api/v4/products" in info.value.message and "no id" in info.value.message


async def test_a_malformed_answer_to_a_request_that_is_not_idempotent_has_an_unknown_outcome():
    """A write was sent and may have been applied: its unreadable answer is never a plain
    UnavailableError (which would tell the engine nothing was written), nor sent again."""
    from connectors.http import HttpClient, Response
    http = HttpClient("https://x.test", system="x", attempts=3, max_wait=0.01)
    await http.start()
    try:
        with mocked() as m:
            m.post("https://x.test/w", body="Service temporarily in maintenance mode.",
                   content_type="text/plain", repeat=True)
            with pytest.raises(OutcomeUnknownError,
                               match=r"x: POST /w: answered text \(40 bytes\) instead of JSON "
                                     r"\(outcome unknown"):
                await http.request("POST", "/w", json={})
            assert http.requests == 1
            with pytest.raises(UnavailableError) as info:   # a POST that reads: unavailable
                await http.request("POST", "/w", json={}, idempotent=True)
            assert http.requests == 2
    finally:
        await http.close()
    assert "outcome unknown" not in info.value.message
    written = Response(200, {}, ["not", "a", "record"], "POST /w", "x", idempotent=False)
    with pytest.raises(OutcomeUnknownError, match="x: POST /w: expected a JSON object"):
        written.object()
    read = Response(200, {}, ["not", "a", "record"], "GET /r", "x")
    with pytest.raises(UnavailableError, match="x: GET /r: expected a JSON object"):
        read.object()


async def test_a_create_whose_answer_is_cut_short_is_stored_once_with_an_unknown_outcome():
    sb = ProspectSandbox(seed=2, records=0)
    await sb.start()
    c = ProspectCrmConnector("crm", ProspectCrmConnector.Settings(
        base_url=sb.url, token="sandbox-token", attempts=3, max_wait=0.01))
    await c.start()
    try:
        sb.faults.garbage_next(1, "truncated")
        with pytest.raises(OutcomeUnknownError) as info:
            await c.create("companies", {"Name": "Cut Ltd"})
    finally:
        await c.close()
        await sb.stop()
    assert info.value.message.startswith("crm: POST /Companies: answered a body cut short")
    assert [v["Name"] for v in sb.data["Companies"].values()] == ["Cut Ltd"]
    assert sb.writes() == 1


def test_an_html_page_is_named_by_its_title_or_first_heading_and_kept_short():
    assert html_summary(BAD_GATEWAY_PAGE) == 'an HTML page "502 Bad Gateway"'
    assert html_summary("<html><body><H2 class=x>Service <b>Unavailable</b></H2>") \
        == 'an HTML page "Service Unavailable"'
    assert html_summary("<html><body><p>nothing to name it by</p></body></html>") \
        == "an HTML page"
    long = html_summary("<title>" + "Gateway &amp; timeout " * 20 + "</title>")
    words = long.removeprefix('an HTML page "').removesuffix('"')
    assert len(words) == HTML_SUMMARY and words.endswith("…") and "&amp;" not in words


# --- through the sandboxes' fault knob, over loopback --------------------------------------------
def _loopback(kind):
    if kind == "ul":
        sb = UnleashedSandbox(seed=1, records=3)
        return sb, lambda url: UnleashedConnector("ul", UnleashedConnector.Settings(
            base_url=url, api_id="sandbox", api_key="sandbox-key", timeout=5)), "customers"
    if kind == "crm":
        sb = ProspectSandbox(seed=2, records=3)
        return sb, lambda url: ProspectCrmConnector("crm", ProspectCrmConnector.Settings(
            base_url=url, token="sandbox-token", attempts=1)), "companies"
    sb = SageSalesManagementSandbox(seed=4, records=3)
    return sb, lambda url: SageSalesManagementConnector(
        "ssm", SageSalesManagementConnector.Settings(
            base_url=url, public_key="sandbox-public", private_key="sandbox-private",
            attempts=1)), "products"


@pytest.mark.parametrize("system", ["ul", "crm", "ssm"])
@pytest.mark.parametrize("garbage,reason", [
    ("html502", 'an HTML page "502 Bad Gateway"'), ("not_json", "answered text"),
    ("truncated", "a body cut short")])
async def test_the_sandbox_knob_answers_garbage_once_and_the_next_read_is_whole(
        system, garbage, reason):
    sb, make, entity = _loopback(system)
    await sb.start()
    c = make(sb.url)
    c.http.attempts = 1
    await c.start()
    try:
        whole = await read(c, entity)
        assert whole and all(r.error is None for r in whole)
        sb.faults.garbage_next(1, garbage)
        with pytest.raises(UnavailableError) as info:
            await read(c, entity)
        assert reason in info.value.message and "<" not in info.value.message
        assert info.value.message.startswith(f"{c.http.system}: GET /")
        assert [r.id for r in await read(c, entity)] == [r.id for r in whole]
    finally:
        await c.close()
        await sb.stop()


def test_the_knob_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="html502"):
        UnleashedSandbox().faults.garbage_next(1, "gibberish")


# --- end to end: `accord sync` against sandboxes that answer garbage ------------------------------
@pytest.mark.parametrize("side,garbage,reason", [
    ("unleashed", "truncated", "a body cut short"),
    ("prospect", "html502", 'an HTML page "502 Bad Gateway"'),
    ("prospect", "not_json", "answered text")])
async def test_a_sync_that_meets_garbage_fails_in_one_line_and_the_next_one_syncs(
        tmp_path, capsys, side, garbage, reason):
    from tests.test_cli import INTEG, accord, log_lines, write_config
    ul, crm = UnleashedSandbox(seed=1, records=3), ProspectSandbox(seed=2, records=2)
    await ul.start()
    await crm.start()
    try:
        path = write_config(tmp_path, ul_url=ul.url, crm_url=crm.url,
                            token='token = "sandbox-token"\nattempts = 1')
        {"unleashed": ul, "prospect": crm}[side].faults.garbage_next(1, garbage)
        code, out, err = await accord(capsys, "sync", INTEG, "--config", path)
        assert code == 2 and "Traceback" not in out + err
        errors = [e for e in log_lines(out) if e["level"] == "error"]
        assert [e["event"] for e in errors] == ["run.end"]
        message = errors[0]["message"]
        assert f"{side}: GET /" in message and reason in message
        assert "<" not in message and "upstream" not in message and "sandbox-" not in message
        code, out, _ = await accord(capsys, "status", "--json", "--config", path)
        last = json.loads(out)["integrations"][INTEG]["last_run"]
        assert last["status"] == "failed" and last["finished_at"]   # not left "running"
        assert crm.writes() == 0
        code, out, _ = await accord(capsys, "sync", INTEG, "--config", path)
        assert code == 0 and crm.writes() > 0
    finally:
        await ul.stop()
        await crm.stop()


async def test_the_client_tells_json_html_and_text_apart():
    from connectors.http import HttpClient
    http = HttpClient("https://x.test", system="x", attempts=1)
    await http.start()
    try:
        with mocked() as m:
            m.get("https://x.test/a", body='{"message": "<html><title>t</title></html>"}',
                  content_type="application/json")
            m.get("https://x.test/b", body=BAD_GATEWAY_PAGE, content_type="application/json")
            m.get("https://x.test/c", body='{"a": 1} trailing', content_type="application/json")
            m.get("https://x.test/d", status=204, body="")
            assert (await http.request("GET", "/a")).body == {
                "message": "<html><title>t</title></html>"}
            with pytest.raises(UnavailableError, match='"502 Bad Gateway" instead of JSON'):
                await http.request("GET", "/b")             # a proxy's page, labelled JSON
            with pytest.raises(UnavailableError, match="x: GET /c: answered a body that is "
                                                        "not valid JSON"):
                await http.request("GET", "/c")
            assert (await http.request("GET", "/d")).body is None
    finally:
        await http.close()


async def test_a_record_that_cannot_be_read_is_a_record_error_and_its_partner_is_left_alone(
        tmp_path, capsys, monkeypatch):
    """Through the engine: the other side is not blanked from fields the record does not
    have, nor is the record taken for deleted; once readable again its error clears."""
    from tests.test_cli import INTEG, accord, log_lines, write_config
    ul, crm = UnleashedSandbox(seed=1, records=3), ProspectSandbox(seed=2, records=0)
    await ul.start()
    await crm.start()
    try:
        path = write_config(tmp_path, ul_url=ul.url, crm_url=crm.url)
        assert (await accord(capsys, "sync", INTEG, "--config", path))[0] == 0
        before = {k: dict(v) for k, v in crm.data["Companies"].items()}
        guid = sorted(ul.customers)[0]
        ul.customers[guid]["LastModifiedOn"] = ul.clock.now()
        render = ul.render_customer

        def unreadable(c):
            out = render(c)
            return {**out, "LastModifiedOn": "yesterday"} if c["Guid"] == guid else out
        monkeypatch.setattr(ul, "render_customer", unreadable)
        for _ in range(2):                      # the next run reads it again by id
            code, out, _ = await accord(capsys, "sync", INTEG, "--full", "--config", path)
            assert code == 1
            errors = [e for e in log_lines(out) if e["event"] == "record.error"]
            assert [e["record"] for e in errors] == [guid]
            assert "LastModifiedOn is not a date: 'yesterday'" in errors[0]["error"]
            assert {k: dict(v) for k, v in crm.data["Companies"].items()} == before
        monkeypatch.setattr(ul, "render_customer", render)
        assert (await accord(capsys, "sync", INTEG, "--config", path))[0] == 0
        code, out, _ = await accord(capsys, "status", "--json", "--config", path)
        assert json.loads(out)["integrations"][INTEG]["record_errors"] == []
    finally:
        await ul.stop()
        await crm.stop()
