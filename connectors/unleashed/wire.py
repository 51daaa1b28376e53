"""What the Unleashed client and its sandbox share: the signature and the date formats.

- ``sign(key, query)``: base64(HMAC-SHA256(key=API key, message=query string without '?')).
  The message is the query string exactly as sent (already URL-encoded), "" when there is none.
- Dates in Unleashed JSON are Microsoft JSON dates, ``"/Date(1700000000000)/"`` (milliseconds
  since the epoch, UTC); an offset suffix (``/Date(1700000000000+0000)/``) is accepted too.
- The ``modifiedSince`` filter takes an ISO 8601 date-time without zone, read as UTC:
  ``2024-01-31T09:30:00.123`` (we send milliseconds, the precision Unleashed stores).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def sign(api_key: str, query: str) -> str:
    query = query[1:] if query.startswith("?") else query
    digest = hmac.new(api_key.encode(), query.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def to_ms(dt: datetime) -> int:
    """Whole milliseconds since the epoch, rounded down."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt.astimezone(timezone.utc) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def encode_date(dt: datetime | None) -> str | None:
    return None if dt is None else f"/Date({to_ms(dt)})/"


def decode_date(value) -> datetime | None:
    """``"/Date(ms)/"`` (or an ISO string, as the XML flavour and some proxies send) -> UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    match = _MS_DATE.match(str(value))
    if match:
        return from_ms(int(match.group(1)))
    return parse_iso(str(value))


def format_since(dt: datetime) -> str:
    """The ``modifiedSince`` value: UTC, milliseconds, rounded down (so ``>=`` never misses)."""
    dt = from_ms(to_ms(dt))
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def parse_iso(value: str) -> datetime:
    """An ISO date or date-time; naive values are UTC. Raises ValueError."""
    text = value.strip().replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
