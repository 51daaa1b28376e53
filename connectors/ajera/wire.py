"""Ajera's wire formats: its dates and its answer envelope.

``LastModifiedDate`` is not ISO: ``"2023-09-27 09:57:49.607 GMT-04:00 (Eastern Daylight
Time)"`` on records, ``"2015-03-11 16:22:54.229 GMT-0700"`` in the documented filter
examples, and a bare ``"2015-03-11"`` in the project filter examples. ``parse_date`` reads all
three (a bare date is midnight UTC); ``format_date`` writes the filter form, in UTC.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

_DATE = re.compile(
    r"^\s*(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
    r"\s*(?:GMT|UTC)?\s*(?:([+-])(\d{2}):?(\d{2}))?\s*(?:\([^)]*\))?\s*$")

_ZONE_NAMES = {"EDT": "Eastern Daylight Time", "EST": "Eastern Standard Time",
               "CDT": "Central Daylight Time", "CST": "Central Standard Time",
               "MDT": "Mountain Daylight Time", "MST": "Mountain Standard Time",
               "PDT": "Pacific Daylight Time", "PST": "Pacific Standard Time",
               "UTC": "Coordinated Universal Time"}


def parse_date(text: Any) -> datetime | None:
    """An Ajera date string as an aware UTC datetime; None for None or ""; ValueError for
    anything else that is not one of the three forms."""
    if text is None or text == "":
        return None
    m = _DATE.match(str(text))
    if not m:
        raise ValueError(f"not an Ajera date: {text!r}")
    day, hh, mm, ss, frac, sign, oh, om = m.groups()
    y, mo, d = (int(x) for x in day.split("-"))
    micro = int((frac or "0").ljust(6, "0")[:6])
    naive = datetime(y, mo, d, int(hh or 0), int(mm or 0), int(ss or 0), micro)
    offset = timedelta(0)
    if sign:
        offset = timedelta(hours=int(oh), minutes=int(om)) * (1 if sign == "+" else -1)
    return (naive - offset).replace(tzinfo=timezone.utc)


def format_date(when: datetime) -> str:
    """The filter form, in UTC: ``2024-06-03 09:00:00.000 GMT+0000``."""
    u = when.astimezone(timezone.utc)
    return u.strftime("%Y-%m-%d %H:%M:%S.") + f"{u.microsecond // 1000:03d} GMT+0000"


def render_date(when: datetime, zone) -> str:
    """The record form in ``zone`` (a tzinfo): ``2023-09-27 09:57:49.607 GMT-04:00 (Eastern
    Daylight Time)``; milliseconds, as Ajera keeps them."""
    local = when.astimezone(zone)
    off = local.utcoffset() or timedelta(0)
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    name = local.tzname() or "UTC"
    return (local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d} "
            f"GMT{sign}{minutes // 60:02d}:{minutes % 60:02d} ({_ZONE_NAMES.get(name, name)})")


def millis(when: datetime) -> datetime:
    """A time cut to the millisecond Ajera keeps."""
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def envelope(content: Any = None, *, code: int = 200, message: str = "Success",
             errors: list[str] | None = None) -> dict[str, Any]:
    """Every Ajera answer, failures included (they still come with HTTP 200)."""
    return {"ResponseCode": code, "Message": message,
            "Errors": [{"ErrorID": i + 1, "ErrorMessage": e} for i, e in
                       enumerate(errors or [])],
            "Content": content, "UsageKey": "sandbox"}


def error_text(body: Any) -> str:
    """The failure an envelope reports, in one line."""
    if not isinstance(body, dict):
        return str(body)[:300]
    errors = [e.get("ErrorMessage") if isinstance(e, dict) else str(e)
              for e in body.get("Errors") or []]
    text = "; ".join(e for e in errors if e)
    return text or str(body.get("Message") or f"ResponseCode {body.get('ResponseCode')}")
