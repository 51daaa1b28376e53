"""The D-Tools SI connector: the "Subscribe" projects API, a queue of published projects.

SI runs on the dealer's PC; its API is a queue D-Tools hosts. Each publish of a project by
an SI user queues a message (a full copy); this connector subscribes. So the one entity,
``projects``, is a *feed* (``EntityInfo.feed``): ``changes`` returns the messages not yet
marked imported (whatever ``since`` says: SI has no modified-since filter), and
``acknowledge`` marks them imported once the engine committed what it did with them.

- ``changes("projects", since)``: ``GET /Subscribe/Projects?includeDeleted=true`` page by
  page (1-based ``pageNumber`` until ``TotalCount`` is reached or a page is empty), the
  newest ``PublishedOnUnixTimeMs`` of each project ``Id`` winning (a project published twice
  is one record), then ``GET /Subscribe/Projects/{id}?aggregateBy=Location`` for each (what
  that costs: below). A deleted project comes back as a tombstone (``Record.deleted``).
  ``Record.version`` is the publish stamp (``PublishedOnUnixTimeMs``), ``modified`` the same
  instant; archived projects are left out (the API's default).
- Fields: the project's properties in PascalCase (the live API's case; camelCase answers,
  as the published YAML writes them, are read the same), nested objects flattened
  (``SiteAddress.City``), lists kept as lists of PascalCase objects: ``Items`` (with their
  ``LocationId``), ``Locations`` (nested through ``ParentId``; ``FullName`` names the path),
  ``Contacts``, ``Resources``. ``Owner.Name`` is the name of the resource with ``IsOwner``
  (None when the export has no resources, or no owner): resources are only in the detail.
- ``get("projects", ids)``: the detail of each (imported or not); unknown ids left out.
- ``find``: none (the queue has no search by field): an empty list.
- ``acknowledge("projects", [(id, stamp)])``: ``PUT /Subscribe/Projects/MarkAsImported?id=
  &publishedOnUnixTimeMs=stamp``: the stamp is an optimistic lock; a project published again
  since it was read answers 409 (the sandbox's choice; the status is not documented) and is
  counted stale: left on the queue, read again next run, never marked. Marking is
  destructive for any other reader of the same key (it hides the messages from all of them).
- Writes: the subscribe API is read-only here (create, update, delete are refused).
- Requests are paced to ``requests_per_window`` per ``window_seconds`` (default 120 a
  minute, the quota D-Tools publishes for its Cloud API; none is published for SI), held
  client-side so a long queue is read without a 429.
- ``clock()``: the Date header of the latest answer. ``identity()``: None: the API names no
  dealer or instance (the key is per dealer and integration, and a secret).

Requests, and why the count is what it is: a change listing is one request per page of
``page_size`` messages (50 by default, the API's own default; at most 500 here, D-Tools
publishing no maximum), every page read before any detail; it counts messages, not projects
(a project published twice is listed twice). Then each live project costs one detail ``GET``:
the list's ``ProjectInfo`` has no ``Items``, ``Locations``, ``Contacts`` or ``Resources``, and
the API has no read of several projects at once (``/Subscribe/Projects/{id}`` and
``GetProjectByMessageId`` answer one each). A deleted project costs none (its tombstone is the
list row), nor does a publish already read: details are kept in a bounded cache
(``detail_cache``, 1,000 projects) keyed by id and ``PublishedOnUnixTimeMs``, since a message
never changes; and the queue listing itself is read once a run, by ``check()`` (DT-3: it
proves the key), and kept for every flow of that run: an idle run is one request per page of
the queue, one in all for a short queue.
Detail reads go as many at a time as the answers and the quota allow, at most ``concurrency``
(16): ``connectors/pace.py``. ``get`` is one detail ``GET`` per id, the ids of a call
(``max_get``, 50) read together, never from the cache (without the listed stamp a cached copy
may not be the newest publish). ``find``, ``options`` and the refused writes make no request.
``acknowledge`` is one ``MarkAsImported`` PUT per project, tombstones included, paced as the
detail reads: the endpoint takes one id (``MarkAsImportedByMessageId`` one message) and there
is no bulk mark. ``clock()`` and ``identity()`` cost none. A first run over 1,000 projects
published once is thus 20 pages, 1,000 details and 1,000 marks: 2,020 requests, over a
quarter of an hour at 120 a minute.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Sequence

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from yarl import URL

from connectors.base import (Capabilities, EntityInfo, NotFoundError, Record, RecordError,
                             flatten)
from connectors.http import HttpClient, SlidingWindowLimiter
from connectors.pace import AdaptiveLimit

ENTITY = "projects"


def pascal(obj: Any) -> Any:
    """Keys in PascalCase, recursively (``totalCount`` -> ``TotalCount``; ``ID`` stays)."""
    if isinstance(obj, dict):
        return {(k[:1].upper() + k[1:] if isinstance(k, str) else k): pascal(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [pascal(v) for v in obj]
    return obj


def _stamp(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def to_record(project: dict, *, deleted: bool = False) -> Record:
    p = pascal(project)
    ms = _stamp(p.get("PublishedOnUnixTimeMs"))
    resources = p.get("Resources")
    lists = {k: v for k, v in p.items() if isinstance(v, list)}
    fields = flatten({k: v for k, v in p.items() if not isinstance(v, list)})
    fields.update(lists)
    owner = next((r for r in resources or [] if isinstance(r, dict) and r.get("IsOwner")),
                 None)
    fields["Owner.Name"] = owner.get("Name") if owner else None
    modified = None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc)
    return Record(id=str(p["Id"]), fields=fields, modified=modified,
                  version=None if ms is None else str(ms), deleted=deleted)


class DToolsSiConnector:
    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        base_url: str = "https://api.d-tools.com/SI"
        api_key: SecretStr
        page_size: int = Field(50, ge=1, le=500)
        concurrency: int = Field(16, ge=1, le=32)      # the most reads in flight (pace.py)
        detail_cache: int = Field(1000, ge=0)    # projects kept (by publish), 0: none
        requests_per_window: int = Field(120, ge=1)     # D-Tools' published 120 a minute
        window_seconds: float = Field(60.0, gt=0)
        timeout: float = 30.0

    def __init__(self, name: str, settings: "DToolsSiConnector.Settings | dict") -> None:
        if not isinstance(settings, DToolsSiConnector.Settings):
            settings = DToolsSiConnector.Settings.model_validate(settings)
        self.name, self.settings = name, settings
        self.capabilities = Capabilities(entities={
            ENTITY: EntityInfo(ENTITY, incremental=True, ordered=False, reports_deletes=True,
                               can_create=False, can_update=False, can_delete=False,
                               feed=True)}, max_get=50,
            requests_per_second=settings.requests_per_window / settings.window_seconds)
        self.http = HttpClient(settings.base_url, system="dtools_si", auth=self._auth,
                               timeout=settings.timeout,
                               headers={"Accept": "application/json"},
                               limiter=SlidingWindowLimiter(settings.requests_per_window,
                                                            settings.window_seconds))
        self._cache: OrderedDict[tuple[str, str], dict] = OrderedDict()
        self._run_queue: list[dict] | None = None       # the queue this run's check() read
        # detail reads and marks in flight: adapted to the latency and the quota, at most
        # ``concurrency``; kept across runs, so each run starts from what the last one learnt
        self.pace = AdaptiveLimit(settings.concurrency,
                                  self.capabilities.requests_per_second)

    def _auth(self, method: str, query: str, headers: dict[str, str]) -> None:
        headers["X-DTSI-ApiKey"] = self.settings.api_key.get_secret_value()

    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()

    async def _get(self, path: str, params: dict | None = None) -> Any:
        query = URL("/").with_query(params).raw_query_string if params else None
        return (await self.http.request("GET", path, query=query)).body

    async def check(self) -> None:
        """A run starts here: the queue listing proves the key (DT-3) and is kept for the
        run, so every flow reads the same queue without asking for it again."""
        self._run_queue = None
        self._run_queue = await self._read_queue()

    async def clock(self) -> datetime | None:
        return self.http.server_time()

    async def identity(self) -> str | None:
        return None

    async def queue(self) -> list[dict]:
        """The queued messages, one per project (the newest publish), oldest first: as this
        run's ``check()`` read them (a project published since stays queued, unmarked, for
        the next run), or read now when no check came first."""
        if self._run_queue is not None:
            return self._run_queue
        return await self._read_queue()

    async def _read_queue(self) -> list[dict]:
        newest: dict[str, dict] = {}
        page, seen = 1, 0
        while True:
            body = pascal(await self._get("/Subscribe/Projects", {
                "includeDeleted": "true", "pageNumber": page,
                "pageSize": self.settings.page_size}) or {})
            rows = [r for r in body.get("Projects") or [] if isinstance(r, dict)]
            for r in rows:
                ms = _stamp(r.get("PublishedOnUnixTimeMs")) or 0
                old = newest.get(str(r.get("Id")))
                if old is None or ms >= (_stamp(old.get("PublishedOnUnixTimeMs")) or 0):
                    newest[str(r.get("Id"))] = r
            seen += len(rows)
            total = _stamp(body.get("TotalCount")) or 0
            if not rows or seen >= total:
                break
            page += 1
        return sorted(newest.values(), key=lambda r: _stamp(r.get("PublishedOnUnixTimeMs"))
                      or 0)

    async def _details(self, ids: Sequence[str],
                       stamps: dict[str, Any] | None = None) -> dict[str, dict]:
        """Each project's detail. With the stamps the queue listed, a copy already read of
        that very publish is taken from the cache (a message never changes: every flow of a
        run reads the same projects, and asks once)."""
        stamps = stamps or {}

        async def one(pid: str) -> tuple[str, dict | None]:
            key = (pid, str(stamps.get(pid)))
            if pid in stamps and key in self._cache:
                self._cache.move_to_end(key)
                return pid, self._cache[key]
            pid_, body = await fetch(pid)
            if body is not None and pid in stamps and self.settings.detail_cache:
                self._cache[key] = body
                while len(self._cache) > self.settings.detail_cache:
                    self._cache.popitem(last=False)
            return pid_, body

        async def fetch(pid: str) -> tuple[str, dict | None]:
            async with self.pace.slot():
                try:
                    body = await self._get(f"/Subscribe/Projects/{URL.build(path=pid)}",
                                           {"aggregateBy": "Location"})
                except NotFoundError:
                    return pid, None
                return pid, body if isinstance(body, dict) else None
        return {pid: body for pid, body in await asyncio.gather(*(one(i) for i in ids))
                if body is not None}

    async def changes(self, entity: str, since: datetime | None
                      ) -> AsyncIterator[list[Record]]:
        infos = await self.queue()
        size = self.settings.page_size
        for i in range(0, len(infos), size):
            part = infos[i:i + size]
            live = [str(r["Id"]) for r in part if not r.get("Deleted")]
            details = await self._details(live, {str(r["Id"]): r.get("PublishedOnUnixTimeMs")
                                                 for r in part})
            page: list[Record] = []
            for info in part:
                pid = str(info["Id"])
                if info.get("Deleted"):
                    page.append(to_record({"Id": pid, "PublishedOnUnixTimeMs":
                                           info.get("PublishedOnUnixTimeMs")}, deleted=True))
                elif pid in details:
                    rec = to_record(details[pid])
                    if rec.version is None:
                        rec.version = str(info.get("PublishedOnUnixTimeMs"))
                    page.append(rec)
            yield page

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        details = await self._details(list(dict.fromkeys(ids)))
        return [to_record(details[i]) for i in ids if i in details]

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        return []

    async def acknowledge(self, entity: str, records: Sequence[tuple[str, str | None]]
                          ) -> tuple[int, int]:
        async def one(pid: str, stamp: str | None) -> bool:
            params = {"id": pid}
            if stamp is not None:
                params["publishedOnUnixTimeMs"] = stamp
            async with self.pace.slot():
                try:
                    await self.http.request(
                        "PUT", "/Subscribe/Projects/MarkAsImported",
                        query=URL("/").with_query(params).raw_query_string)
                except NotFoundError:
                    return False
                except RecordError as exc:
                    if exc.status == 409:
                        return False
                    raise
            return True
        done = await asyncio.gather(*(one(i, v) for i, v in records))
        return sum(done), len(done) - sum(done)

    async def create(self, entity: str, fields: dict[str, Any]) -> Record:
        raise RecordError("dtools_si: the subscribe API does not take projects back")

    async def update(self, entity: str, id: str, fields: dict[str, Any],
                     version: str | None = None) -> Record:
        raise RecordError("dtools_si: the subscribe API does not take projects back")

    async def delete(self, entity: str, id: str) -> None:
        raise RecordError("dtools_si: the subscribe API does not take projects back")

    async def options(self, name: str) -> Any:
        raise KeyError(name)
