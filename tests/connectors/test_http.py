"""HttpClient alone, with aioresponses: which faults are retried for which requests, and the
vendor's clock from the Date header. End to end through sockets: test_write_faults.py."""
from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import aiohttp
import pytest
from aioresponses import aioresponses as _aioresponses

from connectors.base import OutcomeUnknownError, UnavailableError
from connectors.http import HttpClient

BASE = "https://api.test"
URL = re.compile(r"^https://api\.test/Companies.*$")
SECRET = "s3cret-token"


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's ``stream_writer``."""

    def __init__(self, method, url, **kwargs):
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class aioresponses(_aioresponses):
    def add(self, url, method="GET", *args, **kwargs):
        kwargs.setdefault("response_class", _Response)
        return super().add(url, method, *args, **kwargs)


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client():
    def auth(method, query, headers):
        headers["Authorization"] = f"Bearer {SECRET}"

    c = HttpClient(BASE, system="crm", auth=auth, attempts=3, max_wait=0.01,
                   monotonic=Ticks())
    await c.start()
    yield c
    await c.close()


def calls(m: aioresponses) -> list[str]:
    return [method for (method, _url), sent in m.requests.items() for _ in sent]


def refused() -> aiohttp.ClientConnectorError:
    key = SimpleNamespace(host="api.test", port=443, ssl=True)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))


def no_such_host() -> aiohttp.ClientConnectorDNSError:
    key = SimpleNamespace(host="api.test", port=443, ssl=True)
    return aiohttp.ClientConnectorDNSError(key, OSError(-2, "Name or service not known"))


# --- writes that may have arrived are never sent twice --------------------------------------

async def test_post_stored_then_500_is_outcome_unknown_not_retried(client):
    with aioresponses() as m:
        m.post(URL, status=500, payload={"message": "An error has occurred."}, repeat=True)
        with pytest.raises(OutcomeUnknownError) as info:
            await client.request("POST", "/Companies", json={"Name": "A"})
        assert calls(m) == ["POST"]
    message = str(info.value)
    assert message.startswith("crm: POST /Companies: 500") and "not sent again" in message
    assert SECRET not in message and "Authorization" not in message
    assert info.value.status == 500


@pytest.mark.parametrize("fault", [asyncio.TimeoutError(), aiohttp.ServerDisconnectedError(),
                                   aiohttp.ClientOSError(104, "Connection reset by peer"),
                                   aiohttp.ClientPayloadError("Response payload is not completed")],
                         ids=["timeout", "server-disconnect", "reset", "body-cut-short"])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_post_and_patch_after_a_fault_past_sending_are_outcome_unknown_not_retried(
        client, method, fault):
    with aioresponses() as m:
        m.add(URL, method, exception=fault, repeat=True)
        with pytest.raises(OutcomeUnknownError) as info:
            await client.request(method, "/Companies(7)", json={"Name": "A"})
        assert calls(m) == [method]
    assert f"crm: {method} /Companies(7): " in str(info.value)
    assert SECRET not in str(info.value)


async def test_a_timeout_says_so_in_words(client):
    with aioresponses() as m:
        m.post(URL, exception=asyncio.TimeoutError())
        with pytest.raises(OutcomeUnknownError, match="timeout"):
            await client.request("POST", "/Companies", json={})


# --- faults that prove the request never arrived are retried for any method ------------------

@pytest.mark.parametrize("fault", [refused, no_such_host,
                                   lambda: aiohttp.ConnectionTimeoutError("connect timeout")],
                         ids=["connection-refused", "dns", "connect-timeout"])
async def test_post_that_never_reached_the_server_is_retried(client, fault):
    with aioresponses() as m:
        m.post(URL, exception=fault())
        m.post(URL, status=201, payload={"CompanyId": 1})
        response = await client.request("POST", "/Companies", json={"Name": "A"})
        assert calls(m) == ["POST", "POST"]
    assert response.status == 201 and response.body == {"CompanyId": 1}


async def test_post_that_never_arrives_gives_up_as_unavailable(client):
    with aioresponses() as m:
        m.post(URL, exception=refused(), repeat=True)
        with pytest.raises(UnavailableError, match="gave up after 3 attempts"):
            await client.request("POST", "/Companies", json={})
        assert calls(m) == ["POST"] * 3


async def test_post_answered_429_is_retried(client):
    with aioresponses() as m:
        m.post(URL, status=429, payload={"message": "slow down"}, headers={"Retry-After": "0"})
        m.post(URL, status=201, payload={"CompanyId": 2})
        response = await client.request("POST", "/Companies", json={"Name": "B"})
    assert response.status == 201 and client.throttled == 1


# --- idempotent requests -----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
async def test_idempotent_methods_are_retried_after_500_and_timeouts(client, method):
    with aioresponses() as m:
        m.add(URL, method, status=503, payload={"message": "busy"})
        m.add(URL, method, exception=asyncio.TimeoutError())
        m.add(URL, method, status=200, payload={"ok": True})
        response = await client.request(method, "/Companies(1)")
        assert calls(m) == [method] * 3
    assert response.status == 200


async def test_a_post_that_is_a_read_is_retried_when_marked_idempotent(client):
    with aioresponses() as m:
        m.post(URL, status=500, payload={"message": "boom"})
        m.post(URL, exception=aiohttp.ServerDisconnectedError())
        m.post(URL, status=200, payload={"value": []})
        response = await client.request("POST", "/Companies/$query", json={"top": 1},
                                        idempotent=True)
        assert calls(m) == ["POST"] * 3
    assert response.body == {"value": []}


async def test_a_get_marked_not_idempotent_is_not_retried(client):
    with aioresponses() as m:
        m.get(URL, status=502, payload={"message": "bad gateway"}, repeat=True)
        with pytest.raises(OutcomeUnknownError):
            await client.request("GET", "/Companies/run-report", idempotent=False)
        assert calls(m) == ["GET"]


async def test_idempotent_retries_still_end_as_unavailable(client):
    with aioresponses() as m:
        m.get(URL, status=500, payload={"message": "boom"}, repeat=True)
        with pytest.raises(UnavailableError, match="gave up after 3 attempts"):
            await client.request("GET", "/Companies")


# --- the vendor's clock ------------------------------------------------------------------------

async def test_server_time_is_none_before_any_answer(client):
    assert client.server_time() is None


async def test_server_time_is_the_latest_date_header_moved_on_by_local_time(client):
    with aioresponses() as m:
        m.get(URL, payload={}, headers={"Date": "Sat, 01 Mar 2025 09:00:00 GMT"})
        m.get(URL, status=401, payload={"message": "no"},
              headers={"Date": "Sat, 01 Mar 2025 09:30:05 GMT"})
        await client.request("GET", "/Companies")
        assert client.server_time() == datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
        with pytest.raises(Exception):
            await client.request("GET", "/Companies")      # an error answer has a Date too
    when = client.server_time()
    assert when == datetime(2025, 3, 1, 9, 30, 5, tzinfo=timezone.utc)
    assert when.utcoffset() == timedelta(0)
    client._monotonic.now += 42.5                           # time passes here, not there
    assert client.server_time() == datetime(2025, 3, 1, 9, 30, 47, 500000,
                                            tzinfo=timezone.utc)


@pytest.mark.parametrize("header, expected", [
    ("Sat, 01 Mar 2025 10:00:00 +0100", datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)),
    ("Sat, 01 Mar 2025 09:00:00 -0000", datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)),
])
async def test_server_time_is_aware_utc_whatever_the_zone_written(client, header, expected):
    with aioresponses() as m:
        m.get(URL, payload={}, headers={"Date": header})
        await client.request("GET", "/Companies")
    assert client.server_time() == expected and client.server_time().tzinfo is not None


async def test_a_malformed_date_header_is_ignored(client):
    with aioresponses() as m:
        m.get(URL, payload={}, headers={"Date": "Sat, 01 Mar 2025 09:00:00 GMT"})
        m.get(URL, payload={}, headers={"Date": "yesterday-ish"})
        await client.request("GET", "/Companies")
        await client.request("GET", "/Companies")
    assert client.server_time() == datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


# --- the client-side rate limit --------------------------------------------------------------

class _HandClock:
    """A clock moved by hand; ``sleep`` moves it instead of waiting."""

    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.t += seconds


async def test_the_limiter_counts_a_request_until_its_answer_came():
    """The vendor counts a request when it arrives: our window counts it from the answer, so
    a slot is never free here before it is free there (no 429 at a window's turn)."""
    from connectors.http import SlidingWindowLimiter
    clock = _HandClock()
    limiter = SlidingWindowLimiter(2, 10.0, clock=clock, sleep=clock.sleep)
    slow, fast = await limiter.acquire(), await limiter.acquire()
    assert clock.slept == [] and limiter.used() == 2          # a burst up to the limit
    clock.t = 0.5
    limiter.answered(fast)
    clock.t = 3.0
    limiter.answered(slow)                                    # answered 3 s after sending
    clock.t = 10.2
    await limiter.acquire()
    assert clock.slept == [2.8]                 # until 10 s after the slow one's answer
    assert clock.t == 13.0 and limiter.used() == 1


async def test_the_limiter_uses_the_whole_quota_of_each_window():
    from connectors.http import SlidingWindowLimiter
    clock = _HandClock()
    limiter = SlidingWindowLimiter(5, 60.0, clock=clock, sleep=clock.sleep)
    for _ in range(20):                 # answers in no time: 5 at each window's turn
        limiter.answered(await limiter.acquire())
    assert clock.t == 180.0 and clock.slept == [60.0, 60.0, 60.0]
