"""An in-memory system: the fake every engine test uses, with fault knobs.

It behaves like a well-built API: keyset paging on (modified, id), tombstones for deletes,
case-insensitive find, and partial updates that return the stored record. It is indexed like
one too, so that a benchmark of the engine over it measures the engine: the (modified, id)
order of live records and tombstones is kept sorted as records change (a page is a bisect and
a slice, not a sort of everything), and ``find`` answers from a per-field index of casefolded
values, built on a field's first look-up and kept up to date by every write. A test that sets
a row's ``modified`` directly moves it in the order as well. Faults:

- ``clock``: any callable returning an aware datetime; a coarse one makes many records share
  one timestamp;
- ``flaky_versions``: every read returns a new version string;
- ``fail_writes``: a list of "before" / "after" / "lost" / "refuse" / "crash" consumed by the
  next writes: the write fails before it is applied, is applied and then the system is
  unreachable, is applied and its answer is lost (``OutcomeUnknownError``: stored, then a
  500 or a timeout), is refused as a record error, or raises an unexpected ``RuntimeError``;
- ``drop_fields``: reads leave these fields out (a vendor answer without some fields);
- ``unreadable``: record id -> reason: reads return that record with ``error`` set, no fields
  and no modified time, as a connector does with a row it cannot read (a date that is not a
  date); listings still page by the stored time;
- ``conditional``: updates honour ``version=`` (optimistic concurrency, ConflictError);
- ``crash_after_create``: the next create is applied, then :class:`Crash` is raised (a process
  killed between the remote create and the local commit);
- ``empty``: listings return nothing (a wrong account, a vendor outage that answers 200);
- ``on_page``: called between pages, so a test can edit records while a listing is read;
- ``normalize``: text is stored trimmed (the vendor's own normalisation).
"""
from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable, Sequence

from pydantic import BaseModel
from sortedcontainers import SortedList

from connectors.base import (Capabilities, ConflictError, EntityInfo, NotFoundError,
                             OutcomeUnknownError, Record, RecordError, UnavailableError)


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, nothing catches it."""


class _Row(dict):
    """A stored record (``fields``, ``modified``, ``version``); setting ``modified`` moves it
    in its entity's listing order."""
    __slots__ = ("order", "id")

    def __setitem__(self, key: str, value: Any) -> None:
        order = getattr(self, "order", None)
        if key == "modified" and order is not None and key in self:
            order.discard((self["modified"], self.id))
            order.add((value, self.id))
        super().__setitem__(key, value)


def _folded(value: Any) -> str | None:
    return None if value is None else str(value).casefold()


class MemoryConnector:
    class Settings(BaseModel):
        entities: list[str] = ["items"]
        page_size: int = 50
        reports_deletes: bool = True
        conditional: bool = False

    def __init__(self, name: str, settings: "MemoryConnector.Settings | None" = None, *,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.name = name
        self.settings = settings or self.Settings()
        self.capabilities = Capabilities(entities={
            e: EntityInfo(e, reports_deletes=self.settings.reports_deletes)
            for e in self.settings.entities}, max_get=100,
            conditional_writes=self.settings.conditional)
        self.now = clock or (lambda: datetime.now(timezone.utc))
        self.data: dict[str, dict[str, dict]] = {e: {} for e in self.settings.entities}
        self.tombstones: dict[str, dict[str, datetime]] = {e: {} for e in self.settings.entities}
        # (modified, id) of live records and tombstones, in listing order
        self._order: dict[str, SortedList] = {e: SortedList() for e in self.settings.entities}
        # entity -> field -> casefolded value -> ids (fields looked up by find so far)
        self._by_value: dict[str, dict[str, dict[str, set[str]]]] = {
            e: {} for e in self.settings.entities}
        self._born: dict[str, dict[str, int]] = {e: {} for e in self.settings.entities}
        self._births = itertools.count()
        self.flaky_versions = False
        self.fail_writes: list[str] = []
        self.crash_after_create = False
        self.empty = False
        self.normalize = False
        self.drop_fields: set[str] = set()
        self.unreadable: dict[str, str] = {}
        self.on_page: Callable[[], None] | None = None
        self.writes = 0
        self.change_queries = 0
        self.options_data: dict[str, Any] = {}
        self._seq = itertools.count(1)
        self._versions = itertools.count(1)
        self.auth_ok = True
        self.instance: str | None = f"memory:{name}"

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def check(self) -> None:
        from connectors.base import AuthError
        if not self.auth_ok:
            raise AuthError(f"{self.name}: credentials refused (401: bad token)", status=401)

    async def options(self, name: str) -> Any:
        return self.options_data[name]

    async def clock(self) -> datetime | None:
        return self.now()

    async def identity(self) -> str | None:
        return self.instance

    # --- direct access for tests (no write counting, no faults) ----------------------------
    def put(self, entity: str, fields: dict[str, Any], id: str | None = None) -> str:
        id = id or f"{self.name[:1]}{next(self._seq)}"
        self._forget(entity, id, keep_place=True)
        row = _Row(fields=dict(fields), modified=self.now(),
                   version=f"v{next(self._versions)}")
        self._keep(entity, id, row)
        return id

    def edit(self, entity: str, id: str, fields: dict[str, Any]) -> None:
        row = self.data[entity][id]
        self._unindex(entity, id, row["fields"])
        row["fields"].update(fields)
        self._index(entity, id, row["fields"])
        row["modified"] = self.now()
        row["version"] = f"v{next(self._versions)}"

    def remove(self, entity: str, id: str) -> None:
        if id not in self.data[entity]:
            raise KeyError(id)
        self._forget(entity, id)
        when = self.now()
        self.tombstones[entity][id] = when
        self._order[entity].add((when, id))

    # --- the indexes ------------------------------------------------------------------------
    def _keep(self, entity: str, id: str, row: _Row) -> None:
        order = self._order[entity]
        self.data[entity][id] = row
        self._born[entity].setdefault(id, next(self._births))
        order.add((row["modified"], id))
        row.order, row.id = order, id
        self._index(entity, id, row["fields"])

    def _forget(self, entity: str, id: str, keep_place: bool = False) -> None:
        """Take ``id`` out of the indexes (a live record or a tombstone); ``keep_place``: a
        record about to be stored again keeps its place in ``data`` (a dict's order)."""
        row = self.data[entity].get(id) if keep_place else self.data[entity].pop(id, None)
        if not keep_place:
            self._born[entity].pop(id, None)
        if row is not None:
            row.order = None
            self._order[entity].discard((row["modified"], id))
            self._unindex(entity, id, row["fields"])
        dead = self.tombstones[entity].pop(id, None)
        if dead is not None:
            self._order[entity].discard((dead, id))

    def _index(self, entity: str, id: str, fields: dict[str, Any]) -> None:
        for field, values in self._by_value[entity].items():
            key = _folded(fields.get(field))
            if key is not None:
                values.setdefault(key, set()).add(id)

    def _unindex(self, entity: str, id: str, fields: dict[str, Any]) -> None:
        for field, values in self._by_value[entity].items():
            key = _folded(fields.get(field))
            if key is not None and key in values:
                values[key].discard(id)
                if not values[key]:
                    del values[key]

    def _values_of(self, entity: str, field: str) -> dict[str, set[str]]:
        index = self._by_value[entity].get(field)
        if index is None:
            index = {}
            for id, row in self.data[entity].items():
                key = _folded(row["fields"].get(field))
                if key is not None:
                    index.setdefault(key, set()).add(id)
            self._by_value[entity][field] = index
        return index

    def values(self, entity: str) -> dict[str, dict]:
        return {k: dict(v["fields"]) for k, v in self.data[entity].items()}

    # --- the Connector protocol -----------------------------------------------------------
    def _record(self, entity: str, id: str) -> Record:
        row = self.data[entity][id]
        if id in self.unreadable:
            return Record(id, {}, error=f"{self.name}: record {id} cannot be read: "
                                        f"{self.unreadable[id]}")
        version = uuid.uuid4().hex if self.flaky_versions else row["version"]
        fields = {k: v for k, v in row["fields"].items() if k not in self.drop_fields}
        return Record(id, fields, row["modified"], version)

    async def changes(self, entity: str, since: datetime | None) -> AsyncIterator[list[Record]]:
        self.change_queries += 1
        if self.empty:
            return
        after: tuple[datetime, str] | None = None
        order, live, dead = self._order[entity], self.data[entity], self.tombstones[entity]
        size = self.settings.page_size
        while True:
            # keyset: the first key after the last one yielded (or at ``since``)
            at = (order.bisect_right(after) if after is not None
                  else order.bisect_left((since, "")) if since is not None else 0)
            page: list[tuple[datetime, str]] = []
            for key in order.islice(at):
                if key[1] in live or self.settings.reports_deletes:
                    page.append(key)
                    if len(page) == size:
                        break
            if not page:
                return
            after = page[-1]
            yield [self._record(entity, i) if i in live else Record(i, {}, m, None, True)
                   for m, i in page if i in live or i in dead]
            if self.on_page is not None:
                self.on_page()

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        return [self._record(entity, i) for i in ids if i in self.data[entity]]

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        index = self._values_of(entity, field)
        ids: set[str] = set()
        for v in {str(v).casefold() for v in values if v is not None}:
            ids |= index.get(v, set())
        born = self._born[entity]
        return [self._record(entity, i) for i in sorted(ids, key=born.__getitem__)]

    def _fault(self) -> str | None:
        self.writes += 1
        return self.fail_writes.pop(0) if self.fail_writes else None

    def _clean(self, fields: dict[str, Any]) -> dict[str, Any]:
        if not self.normalize:
            return dict(fields)
        return {k: (v.strip() if isinstance(v, str) else v) for k, v in fields.items()}

    async def create(self, entity: str, fields: dict[str, Any]) -> Record:
        fault = self._fault()
        if fault == "before":
            raise UnavailableError(f"{self.name}: 503 before the write")
        if fault == "refuse":
            raise RecordError(f"{self.name}: refused by validation", status=400)
        if fault == "crash":
            raise RuntimeError("an unexpected bug")
        id = self.put(entity, self._clean(fields))
        if fault == "after":
            raise UnavailableError(f"{self.name}: timeout after the write")
        if fault == "lost":
            raise OutcomeUnknownError(f"{self.name}: POST /{entity}: 500 after the write")
        if self.crash_after_create:
            self.crash_after_create = False
            raise Crash()
        return self._record(entity, id)

    async def update(self, entity: str, id: str, fields: dict[str, Any],
                     version: str | None = None) -> Record:
        fault = self._fault()
        if fault == "before":
            raise UnavailableError(f"{self.name}: 503 before the write")
        if fault == "refuse":
            raise RecordError(f"{self.name}: refused by validation", status=400)
        if fault == "crash":
            raise RuntimeError("an unexpected bug")
        if id not in self.data[entity]:
            raise NotFoundError(f"{self.name}: {entity} {id} not found", status=404)
        if (self.settings.conditional and version is not None
                and self.data[entity][id]["version"] != version):
            raise ConflictError(f"{self.name}: {entity} {id} was changed since version "
                                f"{version}", status=409)
        self.edit(entity, id, self._clean(fields))
        if fault == "after":
            raise UnavailableError(f"{self.name}: timeout after the write")
        if fault == "lost":
            raise OutcomeUnknownError(f"{self.name}: PATCH /{entity}/{id}: timed out")
        return self._record(entity, id)

    async def delete(self, entity: str, id: str) -> None:
        fault = self._fault()
        if fault == "before":
            raise UnavailableError(f"{self.name}: 503 before the write")
        if id not in self.data[entity]:
            raise NotFoundError(f"{self.name}: {entity} {id} not found", status=404)
        self.remove(entity, id)
        if fault == "after":
            raise UnavailableError(f"{self.name}: timeout after the write")
