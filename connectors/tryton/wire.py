"""Tryton's JSON-RPC on the wire: typed values and errors.

Tryton encodes values JSON has no type for as objects with a ``__class__`` member:
``{"__class__": "datetime", "year", "month", "day", "hour", "minute", "second",
"microsecond"}`` (naive, UTC on the server), ``{"__class__": "date", ...}``,
``{"__class__": "time", ...}``, ``{"__class__": "timedelta", "seconds"}``,
``{"__class__": "Decimal", "decimal": "12.50"}`` and ``{"__class__": "bytes", "base64"}``.

Application errors come back as HTTP 200 with an ``error`` member instead of ``result``:
``["UserError", [message, description, domain]]``, ``["UserWarning", [name, message,
description]]``, ``["ConcurrencyException", message]``, ``["LoginException", [...]]``, or, for
an unexpected server exception, ``[str(exception), traceback]``.
"""
from __future__ import annotations

import base64
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any



def encode(value: Any) -> Any:
    """Python values -> Tryton's JSON (aware datetimes are sent as naive UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return {"__class__": "datetime", "year": value.year, "month": value.month,
                "day": value.day, "hour": value.hour, "minute": value.minute,
                "second": value.second, "microsecond": value.microsecond}
    if isinstance(value, date):
        return {"__class__": "date", "year": value.year, "month": value.month,
                "day": value.day}
    if isinstance(value, time):
        return {"__class__": "time", "hour": value.hour, "minute": value.minute,
                "second": value.second, "microsecond": value.microsecond}
    if isinstance(value, timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"__class__": "bytes", "base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """Tryton's JSON -> Python values (datetimes come back aware, in UTC)."""
    if isinstance(value, dict):
        kind = value.get("__class__")
        if kind == "datetime":
            return datetime(value["year"], value["month"], value["day"], value["hour"],
                            value["minute"], value["second"], value.get("microsecond", 0),
                            tzinfo=timezone.utc)
        if kind == "date":
            return date(value["year"], value["month"], value["day"])
        if kind == "time":
            return time(value["hour"], value["minute"], value["second"],
                        value.get("microsecond", 0))
        if kind == "timedelta":
            return timedelta(seconds=value["seconds"])
        if kind == "Decimal":
            return Decimal(value["decimal"])
        if kind == "bytes":
            return base64.b64decode(value["base64"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def error_message(error: Any) -> tuple[str, str]:
    """(kind, readable message) of a JSON-RPC ``error`` member."""
    if isinstance(error, (list, tuple)) and error:
        kind = str(error[0])
        args = error[1] if len(error) > 1 else None
        if kind == "UserError" and isinstance(args, (list, tuple)) and args:
            message, description = str(args[0]), str(args[1] or "") if len(args) > 1 else ""
            return kind, f"{message} {description}".strip()
        if kind == "UserWarning" and isinstance(args, (list, tuple)) and len(args) > 1:
            return kind, " ".join(str(a) for a in args[1:3] if a).strip()
        if kind in ("ConcurrencyException", "LoginException", "RateLimitException",
                    "TimeoutException", "MissingDependenciesException"):
            if isinstance(args, (list, tuple)):
                args = " ".join(str(a) for a in args if a)
            return kind, str(args or kind)
        # an unexpected server exception: [str(exception), traceback]
        return "ServerError", kind[:500]
    return "ServerError", str(error)[:500]

