"""Database exceptions -> connector errors, with the database's own words and no secrets.

SQLAlchemy's ``str(exc)`` carries the statement and every bound parameter; it is never used.
The message is the driver's (PostgreSQL's primary message, plus its detail only for unique and
foreign-key violations, whose detail names just the offending key).
"""
from __future__ import annotations

import re
from typing import Callable, Iterable

from sqlalchemy import exc as sa_exc

from connectors.base import AuthError, ConnectorError, RecordError, UnavailableError

_AUTH_STATES = ("28000", "28P01")       # invalid authorization / invalid password
_KEY_DETAIL = re.compile(r"Key \((?P<cols>[^)]*)\)")
_SQLITE_COLS = re.compile(r"constraint failed: (?P<cols>[\w.\", ]+)")


class SqlConfigError(ConnectorError, ValueError):
    """The settings name a table or column the database does not have."""


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _sqlstate(exc: BaseException) -> str | None:
    for e in _chain(exc):
        for attr in ("sqlstate", "pgcode"):
            state = getattr(e, attr, None)
            if isinstance(state, str):
                return state
    return None


def _pg_error(exc: BaseException):
    for e in _chain(exc):
        if getattr(e, "sqlstate", None) and hasattr(e, "detail"):
            return e
    return None


def driver_message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    pg = _pg_error(exc)
    if pg is not None:
        message = str(getattr(pg, "message", None) or (pg.args[0] if pg.args else pg))
        if pg.sqlstate in ("23505", "23503") and getattr(pg, "detail", None):
            message += f" ({pg.detail})"
        return message
    text = str(orig.args[0]) if getattr(orig, "args", None) else str(orig)
    return re.sub(r"^<class '[^']*'>: ", "", text).strip() or type(orig).__name__


def error_columns(exc: BaseException) -> list[str]:
    pg = _pg_error(exc)
    if pg is not None:
        if getattr(pg, "column_name", None):
            return [pg.column_name]
        match = _KEY_DETAIL.search(getattr(pg, "detail", None) or "")
        if match:
            return [c.strip().strip('"') for c in match["cols"].split(",")]
        return []
    match = _SQLITE_COLS.search(driver_message(exc))
    if match:
        return [c.strip().strip('"').rsplit(".", 1)[-1] for c in match["cols"].split(",")]
    return []


def translate(exc: BaseException, where: str, field_of: Callable[[str], str | None],
              fk_fields: Callable[[], list[str]] = lambda: []) -> ConnectorError:
    """``where``: ``<system>: <entity>`` (or the database, rendered without password)."""
    if isinstance(exc, ConnectorError):
        return exc
    message = driver_message(exc)
    state = _sqlstate(exc)
    if state in _AUTH_STATES or (state is None and any(s in message for s in _AUTH_STATES)):
        return AuthError(f"{where}: the database refused the credentials: {message}")
    if isinstance(exc, (sa_exc.IntegrityError, sa_exc.DataError)):
        fields = [f for f in (field_of(c) for c in error_columns(exc)) if f]
        if not fields and "FOREIGN KEY" in message.upper():
            fields = fk_fields()
        return RecordError(f"{where}: {message}", fields=fields)
    return UnavailableError(f"{where}: {message}")
