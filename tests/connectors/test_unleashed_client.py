"""Unleashed client unit tests with aioresponses: request building and error handling only."""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from types import SimpleNamespace

import aiohttp
import pytest
from aioresponses import aioresponses as _aioresponses

from connectors.base import AuthError, NotFoundError, RecordError, UnavailableError
from connectors.unleashed import UnleashedConnector
from connectors.unleashed.client import parse_error
from connectors.unleashed.wire import decode_date, encode_date, format_since

BASE = "https://ul.test"
CUSTOMERS = re.compile(r"^https://ul\.test/Customers/1(\?.*)?$")
COMPANIES = re.compile(r"^https://ul\.test/Companies$")


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's ``stream_writer``."""

    def __init__(self, method, url, **kwargs):
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class aioresponses(_aioresponses):
    def add(self, url, method="GET", *args, **kwargs):
        kwargs.setdefault("response_class", _Response)
        return super().add(url, method, *args, **kwargs)


@pytest.fixture
async def connector():
    c = UnleashedConnector("ul", UnleashedConnector.Settings(
        base_url=BASE, api_id="my-id", api_key="my-key", timeout=5))
    c.http.attempts = 2
    await c.start()
    yield c
    await c.close()


def _only_call(m: aioresponses):
    calls = [call for calls in m.requests.values() for call in calls]
    assert len(calls) == 1
    return calls[0]


async def test_headers_and_signature_of_a_request(connector):
    with aioresponses() as m:
        m.get(CUSTOMERS, payload={"Pagination": {}, "Items": []})
        await connector.find("customers", "CustomerCode", ["A1"])
        (method, url), = m.requests.keys()
        headers = _only_call(m).kwargs["headers"]
    assert method == "GET" and sorted(url.raw_query_string.split("&")) == [
        "customerCode=A1", "includeObsolete=true", "pageSize=200"]
    sent = b"pageSize=200&includeObsolete=true&customerCode=A1"     # as the client built it
    expected = base64.b64encode(hmac.new(b"my-key", sent, hashlib.sha256).digest())
    assert headers["api-auth-signature"] == expected.decode()
    assert headers["api-auth-id"] == "my-id"
    assert headers["client-type"] == "accord/sync"
    assert headers["Accept"] == headers["Content-Type"] == "application/json"


async def test_signature_covers_the_encoded_query(connector):
    with aioresponses() as m:
        m.get(re.compile(r"^https://ul\.test/Customers/1\?.*$"), payload={"Items": []})
        await connector.find("customers", "CustomerName", ["Ben & Jerry's"])
        (_, url), = m.requests.keys()
        headers = _only_call(m).kwargs["headers"]
    assert url.query["customerName"] == "Ben & Jerry's"
    # aioresponses re-sorts the URL it records, so the signed string is spelt out here
    signed = "pageSize=200&includeObsolete=true&customerName=Ben+%26+Jerry's"
    assert headers["api-auth-signature"] == base64.b64encode(
        hmac.new(b"my-key", signed.encode(), hashlib.sha256).digest()).decode()


async def test_400_becomes_record_error_with_the_vendor_message_and_fields(connector):
    body = {"Description": "Validation failed", "DebugInformation": None,
            "Items": [{"Field": "Website", "Description": "Website 'x y' is not a valid URL."}]}
    with aioresponses() as m:
        m.get(f"{BASE}/Customers/0b0e2b8e-1111-4222-8333-444455556666", payload={
            "Guid": "0b0e2b8e-1111-4222-8333-444455556666", "CustomerCode": "A",
            "CustomerName": "A", "LastModifiedOn": "/Date(1700000000000)/"})
        m.post(f"{BASE}/Customers/0b0e2b8e-1111-4222-8333-444455556666", status=400,
               payload=body)
        with pytest.raises(RecordError) as info:
            await connector.update("customers", "0b0e2b8e-1111-4222-8333-444455556666",
                                   {"Website": "x y"})
    assert info.value.message == "unleashed: Website 'x y' is not a valid URL."
    assert info.value.fields == ("Website",) and info.value.status == 400


@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_become_auth_errors(connector, status):
    with aioresponses() as m:
        m.get(COMPANIES, status=status, payload={"Description": "Forbidden"})
        with pytest.raises(AuthError) as info:
            await connector.check()
    assert str(info.value) == f"unleashed: credentials refused ({status}: Forbidden)"
    assert "my-key" not in str(info.value)


async def test_404_becomes_not_found(connector):
    with aioresponses() as m:
        m.get(re.compile(r"^https://ul\.test/Customers/[0-9a-f-]{36}$"), status=404,
              payload={"Description": "Customer not found."})
        with pytest.raises(NotFoundError):
            await connector.update("customers", "0b0e2b8e-1111-4222-8333-444455556666",
                                   {"PhoneNumber": "1"})


async def test_500_is_retried_then_unavailable(connector):
    with aioresponses() as m:
        m.get(CUSTOMERS, status=500, payload={"Description": "boom"}, repeat=True)
        with pytest.raises(UnavailableError) as info:
            await connector.check()
        calls = [call for calls in m.requests.values() for call in calls]
    assert len(calls) == 2 and "gave up after 2 attempts" in str(info.value)


async def test_500_then_success_is_fine(connector):
    with aioresponses() as m:
        m.get(COMPANIES, status=503, payload={"Description": "busy"})
        m.get(COMPANIES, payload={"Items": []})
        await connector.check()


def test_error_parser_maps_salesperson_to_the_exposed_paths():
    message, fields = parse_error(400, {"Items": [{"Field": "SalesPerson",
                                                   "Description": "no such sales person"}]})
    assert message == "no such sales person"
    assert fields == ("SalesPerson.FullName", "SalesPerson.Guid")
    assert parse_error(403, {"Description": "Forbidden"}) == ("Forbidden", ())


def test_dates_round_trip_and_since_rounds_down():
    when = decode_date("/Date(1700000000123)/")
    assert when.isoformat() == "2023-11-14T22:13:20.123000+00:00"
    assert encode_date(when) == "/Date(1700000000123)/"
    assert decode_date("/Date(1700000000123+0000)/") == when
    assert format_since(when.replace(microsecond=123999)) == "2023-11-14T22:13:20.123"


def test_settings_refuse_unknown_keys_and_big_pages():
    with pytest.raises(ValueError):
        UnleashedConnector.Settings(api_id="a", api_key="b", page_size=1001)
    with pytest.raises(ValueError):
        UnleashedConnector.Settings(api_id="a", api_key="b", password="x")
    settings = UnleashedConnector.Settings(api_id="a", api_key="the-secret")
    assert "the-secret" not in repr(settings)
