"""One HTTP client for every connector: the session, auth hook, retries, rate limit, and
the vendor's clock.

Retries (tenacity) are for transient faults only, and only where repeating cannot do a
second time what the first try may already have done:

- A request that provably never reached the server (connection refused, DNS failure, a TCP
  connect that timed out: ``ClientConnectorError`` / ``ConnectionTimeoutError``) and a 429
  (the server says it did not process it) are retried for every method.
- A timeout, a server disconnect or cut connection, a body cut short, or any 5xx answer may
  come after the server applied the request. Idempotent requests (GET, HEAD, OPTIONS, PUT,
  DELETE, or any request sent with ``idempotent=True``: a POST that is a read, an upsert by a
  key the client chose) are retried; POST and PATCH are not: they raise
  ``OutcomeUnknownError`` at once, so the engine resolves a create before making it again.

A 429 or 503 with ``Retry-After`` waits what the server asked (capped). Authentication
failures (401/403) and other 4xx are never retried: they become AuthError / RecordError with
the vendor's message. Messages name the system, the method and the path, never headers, so
secrets cannot leak through them.

``server_time()`` is the vendor's own clock: the ``Date`` header of the latest answer (any
status), moved on by the time elapsed here since it arrived.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, Mapping

import aiohttp
import orjson
from tenacity import (AsyncRetrying, retry_if_exception_type, stop_after_attempt,
                      wait_exponential_jitter)

from connectors.base import (AuthError, ConnectorError, NotFoundError, OutcomeUnknownError,
                             RecordError, UnavailableError)

AuthHook = Callable[[str, str, dict[str, str]], Awaitable[None] | None]
ErrorParser = Callable[[int, Any], tuple[str, tuple[str, ...]]]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# failures that prove the request never left: no connection was ever made
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# failures after the request may have been sent (and applied)
_MAYBE_SENT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


class TransientHTTPError(Exception):
    """A fault worth another try. ``maybe_applied``: the server may have acted on the request
    (a timeout, a cut connection, a 5xx), so only an idempotent request may be repeated."""

    def __init__(self, status: int, message: str, retry_after: float | None, *,
                 maybe_applied: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: Any


class SlidingWindowLimiter:
    """At most ``limit`` requests in any ``window`` seconds (client side)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self.clock()
                while self._sent and now - self._sent[0] >= self.window:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                await asyncio.sleep(self.window - (now - self._sent[0]))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def default_error_parser(status: int, body: Any) -> tuple[str, tuple[str, ...]]:
    """Pull a readable message (and the fields it names) out of a JSON error body."""
    if isinstance(body, dict):
        for key in ("message", "Message", "description", "Description", "error"):
            value = body.get(key)
            if isinstance(value, dict):  # OData: {"error": {"code", "message"}}
                return str(value.get("message") or value), tuple(
                    d.get("target") for d in value.get("details", []) if d.get("target"))
            if value:
                return str(value), ()
    if isinstance(body, str) and body:
        return body[:500], ()
    return f"HTTP {status}", ()


class HttpClient:
    """A thin wrapper over one ``aiohttp.ClientSession``, opened at start, closed at stop."""

    def __init__(self, base_url: str, *, system: str, auth: AuthHook | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float = 30.0,
                 attempts: int = 5, max_wait: float = 30.0,
                 limiter: SlidingWindowLimiter | None = None,
                 error_parser: ErrorParser = default_error_parser,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.base_url = base_url.rstrip("/")
        self.system = system
        self.auth = auth
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.attempts = attempts
        self.max_wait = max_wait
        self.limiter = limiter
        self.error_parser = error_parser
        self.session: aiohttp.ClientSession | None = None
        self.requests = 0          # counters for metrics and benchmarks
        self.throttled = 0
        self._monotonic = monotonic
        self._date: tuple[datetime, float] | None = None   # (Date header, local monotonic)

    async def start(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                json_serialize=lambda o: orjson.dumps(o).decode())

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def server_time(self) -> datetime | None:
        """The vendor's current time (aware UTC) as its latest answer told it, or None before
        any answer. The ``Date`` header has whole seconds, cut down, so this is never ahead of
        the server's clock by more than our own clock's drift since that answer."""
        if self._date is None:
            return None
        date, seen = self._date
        return date + timedelta(seconds=max(0.0, self._monotonic() - seen))

    def _note_date(self, value: str | None) -> None:
        if not value:
            return
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return                              # a malformed Date tells nothing
        if when.tzinfo is None:                 # "-0000": UTC, source unknown (RFC 5322)
            when = when.replace(tzinfo=timezone.utc)
        self._date = (when.astimezone(timezone.utc), self._monotonic())

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      json: Any = None, query: str | None = None,
                      idempotent: bool | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        """Send one request with retries for transient faults; raise ConnectorError kinds.

        ``query`` is a pre-encoded query string (for APIs that sign it); else ``params``.
        ``headers``: extra headers for this request only (a paging mode).
        ``idempotent``: may the request be sent again after a fault that came after it may
        have reached the server? Default: by method (see the module docstring). A POST that
        only reads, or that creates-or-updates by a key the client chose, passes True; a
        non-idempotent request whose outcome is unknown raises OutcomeUnknownError.
        """
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS
        async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=self._wait, retry=retry_if_exception_type(TransientHTTPError),
                reraise=True):
            with attempt:
                try:
                    return await self._once(method, path, params, json, query, headers)
                except TransientHTTPError as exc:
                    if exc.maybe_applied and not idempotent:
                        raise OutcomeUnknownError(
                            f"{self.system}: {exc} (outcome unknown: the request may have "
                            "been applied, so it is not sent again)",
                            status=exc.status or None) from None
                    if attempt.retry_state.attempt_number >= self.attempts:
                        raise UnavailableError(
                            f"{self.system}: {exc} (gave up after {self.attempts} attempts)",
                            status=exc.status) from None
                    raise
        raise AssertionError("unreachable")

    def _wait(self, state) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientHTTPError) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_wait)
        return wait_exponential_jitter(multiplier=0.2, jitter=0.5, max=self.max_wait)(state)

    async def _once(self, method: str, path: str, params, json, query,
                    extra: Mapping[str, str] | None = None) -> Response:
        if self.session is None:
            raise ConnectorError(f"{self.system}: client used before start()")
        if self.limiter is not None:
            await self.limiter.acquire()
        url = self.base_url + path + (f"?{query}" if query else "")
        headers = {**self.headers, **(extra or {})}
        if self.auth is not None:
            maybe = self.auth(method, query or "", headers)
            if asyncio.iscoroutine(maybe):
                await maybe
        data = orjson.dumps(json) if json is not None else None
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        self.requests += 1
        try:
            async with self.session.request(method, url, params=None if query else params,
                                            data=data, headers=headers) as resp:
                self._note_date(resp.headers.get("Date"))
                raw = await resp.read()
                body = _decode(raw, resp.headers.get("Content-Type", ""))
                status = resp.status
                resp_headers = resp.headers
        except _NOT_SENT as exc:
            raise TransientHTTPError(0, f"{method} {path}: {_fault_name(exc)}", None,
                                     maybe_applied=False) from None
        except _MAYBE_SENT as exc:
            raise TransientHTTPError(0, f"{method} {path}: {_fault_name(exc)}", None) from None
        if status < 400:
            return Response(status, resp_headers, body)
        message, fields = self.error_parser(status, body)
        if status == 429 or status >= 500:
            if status == 429:
                self.throttled += 1
            raise TransientHTTPError(status, f"{method} {path}: {status} {message}",
                                     _retry_after(resp_headers.get("Retry-After")),
                                     maybe_applied=status != 429)
        if status in (401, 403):
            raise AuthError(f"{self.system}: credentials refused ({status}: {message})",
                            status=status)
        if status == 404:
            raise NotFoundError(f"{self.system}: not found: {message}", status=status)
        raise RecordError(f"{self.system}: {message}", status=status, fields=fields)


def _fault_name(exc: BaseException) -> str:
    """What went wrong, in a word: the exception's class (its text may carry a URL)."""
    if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, aiohttp.ClientError):
        return "timeout (no answer in time)"
    return type(exc).__name__


def _decode(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    if "json" in content_type or raw[:1] in (b"{", b"["):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return raw.decode("utf-8", "replace")
