"""An in-memory system: the fake every engine test uses, with fault knobs.

It behaves like a well-built API: keyset paging on (modified, id), tombstones for deletes,
case-insensitive find, and partial updates that return the stored record. Faults:

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

from connectors.base import (Capabilities, ConflictError, EntityInfo, NotFoundError,
                             OutcomeUnknownError, Record, RecordError, UnavailableError)


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, nothing catches it."""


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
        self.data[entity][id] = {"fields": dict(fields), "modified": self.now(),
                                 "version": f"v{next(self._versions)}"}
        self.tombstones[entity].pop(id, None)
        return id

    def edit(self, entity: str, id: str, fields: dict[str, Any]) -> None:
        row = self.data[entity][id]
        row["fields"].update(fields)
        row["modified"] = self.now()
        row["version"] = f"v{next(self._versions)}"

    def remove(self, entity: str, id: str) -> None:
        self.data[entity].pop(id)
        self.tombstones[entity][id] = self.now()

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
        while True:
            rows = [(r["modified"], i, False) for i, r in self.data[entity].items()]
            if self.settings.reports_deletes:
                rows += [(m, i, True) for i, m in self.tombstones[entity].items()]
            rows = sorted(x for x in rows if (since is None or x[0] >= since)
                          and (after is None or (x[0], x[1]) > after))
            page = rows[: self.settings.page_size]
            if not page:
                return
            after = (page[-1][0], page[-1][1])
            yield [Record(i, {}, m, None, True) if dead else self._record(entity, i)
                   for m, i, dead in page]
            if self.on_page is not None:
                self.on_page()

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        return [self._record(entity, i) for i in ids if i in self.data[entity]]

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        wanted = {str(v).casefold() for v in values if v is not None}
        return [self._record(entity, i) for i, r in self.data[entity].items()
                if r["fields"].get(field) is not None
                and str(r["fields"][field]).casefold() in wanted]

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
