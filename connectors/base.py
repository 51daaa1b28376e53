"""The contract between the engine and a system.

A connector speaks one vendor's API in that vendor's own field names (nested objects are
flattened to dotted paths, e.g. ``Address.City``). It knows nothing of flows, links or rules:
mapping between systems belongs to the engine's flows.

The engine reaches a connector only through this module; connectors never import the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Collection, Mapping, Protocol, Sequence, runtime_checkable


@dataclass(slots=True)
class Record:
    """One record as a system stores it.

    ``fields`` holds flattened vendor paths. ``modified`` is the system's own modification
    time (UTC, timezone-aware) and is what change cursors are made of. ``version`` is opaque
    (etag, row version); the engine never uses it to decide whether a record changed, because
    some systems bump it on every read. ``deleted`` marks a tombstone: a record the system
    reports as deleted (from a delete feed); soft-delete flags stay ordinary fields.

    ``error`` is set when the system answered this record in a shape the connector cannot
    read (its date is not a date, a field it needs is missing): ``fields`` is then empty and
    ``modified`` unknown, and the engine reports a record error for this id and goes on with
    the others rather than stopping the run or writing what it could not read. A record that
    comes without any id is not yielded at all (there is nothing to attach the error to); the
    connector logs and counts it instead.
    """

    id: str
    fields: dict[str, Any]
    modified: datetime | None = None
    version: str | None = None
    deleted: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EntityInfo:
    """What a system can do with one kind of record.

    incremental: ``changes(entity, since)`` honours ``since``; otherwise it lists everything
        every time, and the engine infers hard deletes from the ids it no longer sees.
    ordered: ``changes`` yields records in ascending ``(modified, id)`` order, so a partial
        read (``batch_size``) can advance the cursor to the last record taken.
    reports_deletes: deleted records come back from ``changes`` as tombstones.
    feed: the changes come from a queue of published messages, not a table (D-Tools SI): a
        listing never proves that a record is gone, ``since`` is ignored (what was not
        acknowledged is delivered again), and the connector's ``acknowledge`` is told which
        records the engine committed, so it may take them off the queue. ``Record.version``
        is what acknowledging needs (a publish stamp).
    """

    name: str
    incremental: bool = True
    ordered: bool = True
    reports_deletes: bool = False
    can_create: bool = True
    can_update: bool = True
    can_delete: bool = True
    feed: bool = False


@dataclass(frozen=True, slots=True)
class Capabilities:
    """``conditional_writes``: ``update(..., version=v)`` is refused with ConflictError when
    the record's version is no longer ``v`` (optimistic concurrency: Tryton's ``_timestamp``,
    an ETag, a publish stamp). Without it the engine passes no version."""
    entities: Mapping[str, EntityInfo]
    max_get: int = 100                 # ids per get() call the system accepts
    requests_per_second: float | None = None
    conditional_writes: bool = False


class ConnectorError(Exception):
    """Base of every error a connector raises. Its message never carries a secret."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class AuthError(ConnectorError):
    """The credentials were refused. The engine stops that integration's run at once."""


class UnavailableError(ConnectorError):
    """The system could not be reached, or kept failing after the retries for transient
    faults (network errors, 5xx, 429). The run stops; nothing is lost."""


class RecordError(ConnectorError):
    """The system refused one record (validation, conflict, not found...).

    ``fields`` names the vendor fields the refusal is about, when the vendor says so; the
    engine then sends the rest of the record without them (UL-7) and reports the refusal.
    """

    def __init__(self, message: str, *, status: int | None = None,
                 fields: Sequence[str] = ()) -> None:
        super().__init__(message, status=status)
        self.fields = tuple(fields)


class NotFoundError(RecordError):
    """The record does not exist (any more) on the system."""


class ConflictError(RecordError):
    """A conditional write was refused: the record changed since the version the engine
    decided on. Nothing was written; the next run reads it again and decides by the flow's
    conflict policy, never by overwriting."""


class OutcomeUnknownError(ConnectorError):
    """A write was sent and its answer never came: a timeout, a cut connection, a 5xx after
    the request went out. The system may or may not have applied it, so it is never repeated
    blindly: a create stays a pending intent and is resolved (external id, natural key)
    before anything is created again; an update is read again and decided again.
    The run goes on with the other records."""


@runtime_checkable
class Connector(Protocol):
    """A system, seen through its documented API.

    Lifecycle: ``start()`` opens the one HTTP session, ``close()`` closes it.
    Every write returns the record as the system stored it (from the response or a
    read-back), so the engine keeps as base exactly what the system saved (no echo).
    """

    name: str
    capabilities: Capabilities

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None:
        """Reach the system and prove the credentials; raise AuthError / UnavailableError."""

    async def clock(self) -> datetime | None:
        """The system's own current time (the ``Date`` header of its latest answer, the
        database's ``CURRENT_TIMESTAMP``), or None when it cannot tell. A change cursor never
        moves past it: the vendor's clock is the only clock for its cursor."""

    async def identity(self) -> str | None:
        """A stable name of the instance reached (account, tenant, database file), never a
        secret, or None when the system cannot tell. The engine keeps it with its state and
        stops when a later run reaches a different instance."""

    def changes(self, entity: str, since: datetime | None) -> AsyncIterator[list[Record]]:
        """Pages of records created, changed (or, with reports_deletes, deleted) at or after
        ``since`` (a closed bound; None: everything). Must not lose a record edited while the
        pages are being read (use keyset paging on (modified, id) where the API allows)."""

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        """The records with these ids; ids that do not exist are left out."""

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        """Records whose ``field`` equals one of ``values`` (case-insensitively for text
        where the system allows). The engine normalises and compares again itself."""

    async def create(self, entity: str, fields: dict[str, Any]) -> Record: ...

    async def update(self, entity: str, id: str, fields: dict[str, Any],
                     version: str | None = None) -> Record:
        """Partial update: only ``fields`` change. Raises NotFoundError if the record is gone.
        With ``capabilities.conditional_writes``, ``version`` is the record's version as read
        when the engine decided; a record that changed since raises ConflictError."""

    async def delete(self, entity: str, id: str) -> None:
        """Delete (or the system's own equivalent); NotFoundError if already gone."""

    async def options(self, name: str) -> Any:
        """Reference data a flow or a preset checks against, by name: e.g. ``"salespersons"``
        (a list of names) or ``"account"`` (facts about the account). KeyError if unknown."""


@runtime_checkable
class ReadsBeforeUpdate(Protocol):
    """A connector whose update has to read the record first (a system without a partial
    update) and can read many records together for fewer requests than one each."""

    async def will_update(self, entity: str, updates: Mapping[str, Collection[str]]) -> None:
        """The records of ``entity`` the engine updates next, by id, each with the field paths
        it writes (one chunk's updates; none, when this chunk updates none of them). The
        connector may read them now, together, and keep each for its one update in this
        chunk; what it kept from an earlier call it drops. Raises AuthError /
        UnavailableError like any read; any other failure is its own to absorb (the updates
        then read one by one)."""


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One field of an entity as its system describes it (field discovery): ``name`` as the
    connector exposes it, the ``label`` people see, a ``type`` in the vendor's words, and
    whether it is a ``custom`` field the customer added ("persoonlijke velden")."""

    name: str
    label: str
    type: str = "text"
    custom: bool = False


async def system_fields(conn: Any, entity: str) -> list[FieldInfo] | None:
    """``conn.fields(entity)``: an optional method; None when the connector cannot describe
    its fields."""
    fn = getattr(conn, "fields", None)
    return None if fn is None else await fn(entity)
async def system_acknowledge(conn: Any, entity: str,
                             records: Sequence[tuple[str, str | None]]) -> tuple[int, int]:
    """``conn.acknowledge(entity, [(id, version)])`` for a feed entity: the records the engine
    committed, which the system may now take off its queue. Returns (acknowledged, stale):
    a record published again since the version read is left on the queue (it is delivered
    again, and decided again). A connector without a feed acknowledges nothing."""
    fn = getattr(conn, "acknowledge", None)
    return (0, 0) if fn is None or not records else await fn(entity, records)


async def system_clock(conn: Any) -> datetime | None:
    """``conn.clock()``, for connectors written before it was part of the contract."""
    fn = getattr(conn, "clock", None)
    return None if fn is None else await fn()


async def system_identity(conn: Any) -> str | None:
    """``conn.identity()``, for connectors written before it was part of the contract."""
    fn = getattr(conn, "identity", None)
    return None if fn is None else await fn()


async def system_count(conn: Any, entity: str, since: datetime | None) -> int | None:
    """``conn.count(entity, since)``: how many records ``changes(entity, since)`` would yield,
    where the system can say so cheaply (a key listing); None where it cannot. Optional:
    the engine counts a batch's backlog with it instead of reading the rest."""
    fn = getattr(conn, "count", None)
    return None if fn is None else await fn(entity, since)


def utc(dt: datetime) -> datetime:
    """An aware UTC datetime (naive values are taken as UTC)."""
    if dt.tzinfo is timezone.utc:
        return dt
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


_PLAIN = (str, int, float, list, type(None))     # JSON values that are no mapping (fast path)


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"Address": {"City": "X"}}`` -> ``{"Address.City": "X"}``. Lists stay values."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if type(value) is dict or (not isinstance(value, _PLAIN) and isinstance(value, Mapping)):
            out.update(flatten(value, f"{prefix}{key}."))
        elif prefix or type(key) is not str:
            out[f"{prefix}{key}"] = value
        else:                           # a top-level field: its name is its path
            out[key] = value
    return out


def unflatten(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten`."""
    out: dict[str, Any] = {}
    for path, value in fields.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


@dataclass
class ConnectorConfig:
    """What the daemon hands a connector's constructor: the system's name and its
    validated settings (secrets already resolved; never log them)."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
