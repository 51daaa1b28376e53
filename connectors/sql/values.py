"""Column values <-> record field values.

- binary columns (BLOB, BYTEA, VARBINARY): base64 strings both ways;
- exact numerics (NUMERIC/DECIMAL): floats out; written as Decimal(str(value));
- dates: ``YYYY-MM-DD``; datetimes: ISO strings in UTC (``2025-03-01T08:00:00+00:00``); a naive
  database datetime is local time in the connector's ``timezone``; a naive ISO string written
  is taken as UTC;
- booleans: bool only for a Boolean column; 0/1 integer flags stay ints;
- everything else as the driver gives it.
"""
from __future__ import annotations

import base64
import binascii
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import types as sqltypes


class BadValue(ValueError):
    """A field value the column cannot hold (the message names no secret)."""


def is_text(coltype: sqltypes.TypeEngine) -> bool:
    return isinstance(coltype, sqltypes.String)


def is_datetime(coltype: sqltypes.TypeEngine) -> bool:
    return isinstance(coltype, sqltypes.DateTime)


def is_integer(coltype: sqltypes.TypeEngine) -> bool:
    return isinstance(coltype, sqltypes.Integer)


def aware_utc(value: datetime, zone: ZoneInfo) -> datetime:
    """A database datetime as aware UTC (naive ones are local times in ``zone``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(timezone.utc)


def db_datetime(value: datetime, zone: ZoneInfo, naive: bool) -> datetime:
    """An aware (or naive = UTC) datetime as the database keeps it."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(zone)
    return value.replace(tzinfo=None) if naive else value


def parse_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    raise BadValue(f"{value!r} is not an ISO date-time")


def to_field(value: Any, coltype: sqltypes.TypeEngine, zone: ZoneInfo) -> Any:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime):
        return aware_utc(value, zone).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, str) and is_datetime(coltype):     # SQLite text the type did not parse
        return aware_utc(parse_datetime(value), zone).isoformat()
    return value


def to_column(value: Any, coltype: sqltypes.TypeEngine, zone: ZoneInfo) -> Any:
    """A field value as the column takes it; BadValue when it cannot."""
    if value is None:
        return None
    if isinstance(coltype, sqltypes._Binary):
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        try:
            return base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise BadValue("is not base64") from None
    if isinstance(coltype, sqltypes.DateTime):
        naive = not getattr(coltype, "timezone", False)
        return db_datetime(parse_datetime(value), zone, naive)
    if isinstance(coltype, sqltypes.Date):
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value).strip()[:10])
        except ValueError:
            raise BadValue(f"{value!r} is not an ISO date") from None
    if isinstance(coltype, sqltypes.Boolean):
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "y"):
                return True
            if lowered in ("0", "false", "no", "n", ""):
                return False
            raise BadValue(f"{value!r} is not a boolean")
        return bool(value)
    if isinstance(coltype, sqltypes.Integer):
        if isinstance(value, bool):
            return int(value)
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise BadValue(f"{value!r} is not an integer") from None
        if number != number.to_integral_value():
            raise BadValue(f"{value!r} is not an integer")
        return int(number)
    if isinstance(coltype, sqltypes.Float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise BadValue(f"{value!r} is not a number") from None
    if isinstance(coltype, sqltypes.Numeric):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise BadValue(f"{value!r} is not a number") from None
        return number if coltype.asdecimal else float(number)
    if isinstance(coltype, sqltypes.String):
        if not isinstance(value, str):
            value = str(value)
        length = getattr(coltype, "length", None)
        if length is not None and len(value) > length:
            raise BadValue(f"is longer than {length} characters")
        return value
    return value
