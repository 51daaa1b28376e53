"""Vendors' rows into Records, one malformed row at a time.

A page of records is read row by row: a row the connector cannot read (a date that is not a
date, a field it needs missing or of another type) must not stop the run nor hide the other
rows of its page. Such a row becomes a ``Record`` with empty ``fields`` and ``error`` set, so
the engine reports a record error for that id and goes on (see ``connectors.base.Record``).
A row without an id is left out with a warning, and counted (``RecordReader.skipped``):
there is nothing to attach an error to.

A write's answer is different: the write was applied, only its answer cannot be read, so the
connector raises ``OutcomeUnknownError`` (a create stays a pending intent, resolved by
external id or natural key before anything is created again; an update is read again next
run), never a ``RecordError`` (which would tell the engine that nothing was written).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterable

import structlog

from connectors.base import OutcomeUnknownError, Record

log = structlog.get_logger("accord.connector")
REASON = 160            # characters of a reason, at most
_VALUE = 40             # characters of an offending value quoted in a reason


class Malformed(ValueError):
    """A row the connector cannot read; the message says why in a few words."""


# what reading a row raises when the row is not what the API documents
ROW_ERRORS = (Malformed, KeyError, ValueError, TypeError, AttributeError, OverflowError)


def quoted(value: Any) -> str:
    """A short quotation of an offending value (its type when it is a container)."""
    if isinstance(value, (dict, list, tuple)):
        return f"a JSON {'object' if isinstance(value, dict) else 'list'}"
    text = repr(value)
    return text if len(text) <= _VALUE else text[:_VALUE - 1] + "…"


def date_field(row: dict, name: str, parse: Callable[[Any], datetime | None]
               ) -> datetime | None:
    """``parse(row[name])``; None when absent or empty; Malformed when it is not a date."""
    value = row.get(name)
    if value is None or value == "":
        return None
    try:
        return parse(value)
    except (ValueError, TypeError, AttributeError, OverflowError):
        raise Malformed(f"{name} is not a date: {quoted(value)}") from None


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        text = f"no {exc.args[0]!r}" if exc.args else "a field is missing"
    elif isinstance(exc, Malformed):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= REASON else text[:REASON - 1] + "…"


class RecordReader:
    """Reads the rows of one system's answers (one per connector: ``skipped`` counts the
    rows without an id it left out since the connector was made)."""

    def __init__(self, system: str) -> None:
        self.system = system
        self.skipped = 0

    def page(self, rows: Iterable[Any], parse: Callable[[Any], Record],
             ident: Callable[[dict], Any], request: str) -> list[Record]:
        """Each row through ``parse``; ``ident(row)`` is the row's id as the connector
        exposes it (None, "" or a container: no id)."""
        out: list[Record] = []
        for row in rows:
            rid = _id(row, ident)
            if rid is None:
                self.skip(request, "a record without an id" if isinstance(row, dict)
                          else f"{quoted(row)} where a record was expected")
                continue
            try:
                out.append(parse(row))
            except ROW_ERRORS as exc:
                out.append(Record(id=rid, fields={}, error=self.message(request, rid, exc)))
        return out

    def written(self, row: Any, parse: Callable[[Any], Record], request: str) -> Record:
        """The record a write answered; OutcomeUnknownError when it cannot be read."""
        try:
            if not isinstance(row, dict):
                raise Malformed(f"expected the record, got {quoted(row)}")
            return parse(row)
        except ROW_ERRORS as exc:
            raise OutcomeUnknownError(
                f"{self.system}: {request}: the write was sent but its answer cannot be "
                f"read: {reason_of(exc)}") from None

    def message(self, request: str, rid: str, exc: BaseException) -> str:
        return f"{self.system}: {request}: record {rid} cannot be read: {reason_of(exc)}"

    def skip(self, request: str, what: str) -> None:
        self.skipped += 1
        log.warning("record.skipped", system=self.system, request=request,
                    reason=f"{what}: left out", skipped=self.skipped)


def _id(row: Any, ident: Callable[[dict], Any]) -> str | None:
    if not isinstance(row, dict):
        return None
    try:
        value = ident(row)
    except ROW_ERRORS:
        return None
    if value is None or isinstance(value, (dict, list, tuple, bool)):
        return None
    text = str(value).strip()
    return text or None
