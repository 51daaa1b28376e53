"""One HTTP client for every connector: the session, auth hook, retries, rate limit, and
the vendor's clock.

Retries (tenacity) are for transient faults only, and only where repeating cannot do a
second time what the first try may already have done:

- A request that provably never reached the server (connection refused, DNS failure, a TCP
  connect that timed out: ``ClientConnectorError`` / ``ConnectionTimeoutError``) and a 429
  (the server says it did not process it) are retried for every method.
- A timeout, a server disconnect or cut connection, or any 5xx answer may come after the
  server applied the request. Idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE, or any
  request sent with ``idempotent=True``: a POST that is a read, an upsert by a key the client
  chose) are retried; POST and PATCH are not: they raise ``OutcomeUnknownError`` at once, so
  the engine resolves a create before making it again.

A 429 or 503 with ``Retry-After`` waits what the server asked (capped). Authentication
failures (401/403) and other 4xx are never retried: they become AuthError / RecordError with
the vendor's message. Messages name the system, the method and the path, never headers, so
secrets cannot leak through them.

A successful answer that is not what the API documents (an HTML page, plain text, a body cut
short before its announced length, JSON that does not parse or of another shape) is not
retried and never pasted into a message: it is summarised in a few words (an error page by its
title). To a read it is ``UnavailableError`` (the run stops, nothing is lost); to a request
that is not idempotent it is ``OutcomeUnknownError``: the write was sent and may have been
applied, only its answer cannot be read.

``server_time()`` is the vendor's own clock: the ``Date`` header of the latest answer (any
status), moved on by the time elapsed here since it arrived.
"""
from __future__ import annotations

import asyncio
import html
import re
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
    """One answer. ``request`` ("GET /Customers/1", never the query string: it may carry a
    signature or a key) and ``system`` name it in the errors of the shape checks below."""
    status: int
    headers: Mapping[str, str]
    body: Any
    request: str = ""
    system: str = ""
    idempotent: bool = True

    def malformed(self, reason: str) -> ConnectorError:
        """The error for an answer that is not what the API documents, saying what came
        instead. To a read: UnavailableError, the run stops (nothing is lost: cursors move only
        after a step's last chunk); to a request that is not idempotent: OutcomeUnknownError
        (it was sent and may have been applied)."""
        return _unreadable_answer(f"{self.system}: {self.request}: {reason}", self.status,
                                  self.idempotent)

    def object(self) -> dict[str, Any]:
        """The body as a JSON object, else ``malformed``."""
        if isinstance(self.body, dict):
            return self.body
        raise self.malformed(f"expected a JSON object, got {kind_of(self.body)}")

    def rows(self, key: str | None = None) -> list[Any]:
        """The JSON list in the body (``key``: in that member of the body's object; a null
        member is an empty list, a missing one is malformed), else ``malformed``."""
        value = self.body
        if key is not None:
            body = self.object()
            if key not in body:
                raise self.malformed(f"the answer has no {key!r} list")
            value = body[key]
            if value is None:
                return []
        if isinstance(value, list):
            return value
        where = f" in {key!r}" if key is not None else ""
        raise self.malformed(f"expected a JSON list{where}, got {kind_of(value)}")


class SlidingWindowLimiter:
    """At most ``limit`` requests in any ``window`` seconds (client side), the vendor's
    published quota used in full without a 429.

    The vendor counts a request when it arrives, which is after we sent it; a window counted
    from our send times would free a slot a little before the vendor's does, and a load that
    uses the whole quota would meet a 429 at every window's turn. So a slot is held from the
    send until the answer came (``answered``): the vendor's count of it is over by the time
    ours is. Requests are not spread out within the window: a burst up to the limit, then one
    request each time one leaves the window, which is the most the quota allows at any
    moment."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.limit, self.window, self.clock, self.sleep = limit, window, clock, sleep
        self._sent: deque[list[float]] = deque()     # [time counted from], oldest first
        self._lock = asyncio.Lock()

    async def acquire(self) -> list[float]:
        """Wait for a slot; returns it, to hand to ``answered`` when the answer arrives."""
        async with self._lock:
            while True:
                now = self.clock()
                while self._sent and now - self._sent[0][0] >= self.window:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    slot = [now]
                    self._sent.append(slot)
                    return slot
                await self.sleep(self.window - (now - self._sent[0][0]))

    def answered(self, slot: list[float]) -> None:
        """The answer to the request of ``slot`` arrived: the window counts it from now."""
        slot[0] = max(slot[0], self.clock())

    def used(self) -> int:
        """Requests in the current window."""
        now = self.clock()
        return sum(1 for s in self._sent if now - s[0] < self.window)


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
        self._date_text: str | None = None                 # the last Date header, parsed:
        self._date_value: datetime | None = None

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
        if value != self._date_text:            # one parse per second of the server's clock
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return                          # a malformed Date tells nothing
            if when.tzinfo is None:             # "-0000": UTC, source unknown (RFC 5322)
                when = when.replace(tzinfo=timezone.utc)
            self._date_text, self._date_value = value, when.astimezone(timezone.utc)
        self._date = (self._date_value, self._monotonic())

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
        try:                    # the common case, one answer: no retry machinery built for it
            return await self._once(method, path, params, json, query, idempotent, headers)
        except TransientHTTPError as exc:
            failed: TransientHTTPError | None = exc
        async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=self._wait, retry=retry_if_exception_type(TransientHTTPError),
                reraise=True):
            with attempt:
                try:
                    if failed is not None:      # attempt 1 is the one made above
                        exc, failed = failed, None
                        raise exc
                    return await self._once(method, path, params, json, query, idempotent,
                                            headers)
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
                    idempotent: bool = True,
                    extra: Mapping[str, str] | None = None) -> Response:
        if self.session is None:
            raise ConnectorError(f"{self.system}: client used before start()")
        slot = await self.limiter.acquire() if self.limiter is not None else None
        try:
            return await self._send(method, path, params, json, query, idempotent, extra)
        finally:
            if slot is not None:
                self.limiter.answered(slot)

    async def _send(self, method: str, path: str, params, json, query,
                    idempotent: bool, extra: Mapping[str, str] | None = None) -> Response:
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
                status = resp.status
                resp_headers = resp.headers
                try:
                    raw = await resp.read()
                except aiohttp.ClientPayloadError:
                    body: Any = Unreadable("a body cut short (the connection closed before "
                                           "its announced length)")
                else:
                    body = _decode(raw, resp.headers.get("Content-Type", ""))
        except _NOT_SENT as exc:
            raise TransientHTTPError(0, f"{method} {path}: {_fault_name(exc)}", None,
                                     maybe_applied=False) from None
        except _MAYBE_SENT as exc:
            raise TransientHTTPError(0, f"{method} {path}: {_fault_name(exc)}", None) from None
        except aiohttp.ClientError as exc:      # not HTTP at all, or a body that never ends
            raise _unreadable_answer(
                f"{self.system}: {method} {path}: an answer that cannot be read "
                f"({type(exc).__name__})", None, idempotent) from None
        if status < 400:
            if isinstance(body, (Unreadable, Text)):
                what = body if isinstance(body, Unreadable) else _not_json(body)
                raise _unreadable_answer(f"{self.system}: {method} {path}: answered {what} "
                                         "instead of JSON", status, idempotent)
            return Response(status, resp_headers, body, f"{method} {path}", self.system,
                            idempotent)
        if isinstance(body, Unreadable):
            body = Text(str(body))
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


def _unreadable_answer(message: str, status: int | None, idempotent: bool) -> ConnectorError:
    """An answer that cannot be read: to a read, UnavailableError; to a request that is not
    idempotent, OutcomeUnknownError (it was sent and may have been applied, so it is not sent
    again and the engine resolves it before doing it again)."""
    if idempotent:
        return UnavailableError(message, status=status)
    return OutcomeUnknownError(f"{message} (outcome unknown: the request may have been "
                               "applied, so it is not sent again)", status=status)


def _fault_name(exc: BaseException) -> str:
    """What went wrong, in a word: the exception's class (its text may carry a URL)."""
    if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, aiohttp.ClientError):
        return "timeout (no answer in time)"
    return type(exc).__name__


# --- decoding answers ------------------------------------------------------------------------
# Every API behind this client answers JSON. What else can come (a proxy's HTML error page, a
# body cut short, plain text) is never pasted into a message: it is summarised in a few words,
# an HTML page by its title or first heading.

HTML_SUMMARY = 120          # characters of an HTML page's title or heading, at most


class Text(str):
    """A body that is text, not JSON (kept for the error parsers of 4xx/5xx answers)."""


@dataclass(frozen=True)
class Unreadable:
    """A body that cannot be read as what it says it is; ``reason`` in a few words."""
    reason: str

    def __str__(self) -> str:
        return self.reason


def kind_of(value: Any) -> str:
    """What a JSON value is, for messages ("a JSON list", "nothing"), never its content."""
    if value is None:
        return "nothing"
    if isinstance(value, Text):
        return _not_json(value)
    names = {dict: "a JSON object", list: "a JSON list", str: "a JSON string",
             bool: "a JSON boolean", int: "a JSON number", float: "a JSON number"}
    return names.get(type(value), type(value).__name__)


_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_HEADING = re.compile(r"<h[1-6][^>]*>(.*?)</h[1-6]\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def html_summary(text: str) -> str:
    """An HTML page in a few words: its ``<title>``, else its first heading, at most
    HTML_SUMMARY characters, tags and entities resolved; "an HTML page" when it has neither."""
    for pattern in (_TITLE, _HEADING):
        m = pattern.search(text)
        if m:
            words = " ".join(html.unescape(_TAG.sub(" ", m.group(1))).split())
            if words:
                if len(words) > HTML_SUMMARY:
                    words = words[:HTML_SUMMARY - 1].rstrip() + "…"
                return f'an HTML page "{words}"'
    return "an HTML page"


def _looks_html(text: str) -> bool:
    head = text[:512].lstrip().lower()
    return head.startswith("<") and any(tag in head for tag in (
        "<!doctype html", "<html", "<head", "<body", "<title", "<h1"))


def _not_json(text: str) -> str:
    return f"text ({len(text.encode())} bytes)"


def _decode(raw: bytes, content_type: str) -> Any:
    """The JSON value of a body; ``Text`` for a text body that does not claim to be JSON;
    ``Unreadable`` for a JSON body that does not parse (truncated or not JSON) or an HTML
    page. Empty bodies (204) are None."""
    if not raw.strip():
        return None
    ctype = content_type.split(";", 1)[0].strip().lower()
    if "json" in ctype or raw.lstrip()[:1] in (b"{", b"["):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            text = raw.decode("utf-8", "replace")
            if _looks_html(text):               # a proxy's page, labelled JSON
                return Unreadable(html_summary(text))
            if "unexpected end of data" in str(exc):
                return Unreadable(f"a truncated JSON body ({len(raw)} bytes)")
            return Unreadable(f"a body that is not valid JSON ({len(raw)} bytes, at "
                              f"character {exc.pos})")
    text = raw.decode("utf-8", "replace")
    if "html" in ctype or _looks_html(text):
        return Unreadable(html_summary(text))
    return Text(text)
