"""The ConnectWise Manage (PSA) connector: REST API v3, as ConnectWise's Developer Guide
describes it.

Entities (the resource paths, records flattened to dotted paths of their camelCase fields):
``companies`` (company/companies), ``contacts`` (company/contacts), ``catalog``
(procurement/catalog), ``opportunities`` (sales/opportunities), ``projects``
(project/projects), ``tickets`` (project/tickets), ``products`` (procurement/products: the
products of an opportunity, a project or a ticket; a product on an opportunity is also one
of its forecast lines). A reference reads as ``company.id``, ``company.identifier``,
``status.name`` ...; a write of ``status.name`` alone sends ``{"status": {"name": ...}}`` and
Manage resolves it (ids are sent as numbers). A contact's e-mail reads and writes as
``communicationItems.Email``: the value of its default communication item of type Email
(a write keeps its other items).

Reading: ``conditions=lastUpdated >= [since]`` with forward-only paging (``pageId``, by id;
the ``Link`` header says when there is more), so a record edited while the pages are read is
not skipped (ids do not move) and the cursor is bounded by the clock the run started with.
``find`` is ``conditions=field in (...)`` (``childConditions`` for e-mail).

Writes: POST to create (not repeated after a lost answer: the engine resolves it by its
natural key or ``integrationXRef``), PATCH as a JSON-patch list of whole top-level fields to
update, DELETE to delete. Manage offers no conditional write (no ETag, no If-Match; only
``_info.lastUpdated``), so ``conditional_writes`` is off: last writer wins.

Requests are paced to ``requests_per_window`` per ``window_seconds`` (default 1,000 a
minute: ConnectWise's Developer Guide warns that more will likely be rate limited), held
client-side, so a first load uses that budget without a 429.

Requests, and why the count is what it is: a change listing is one ``GET`` per page of up to
``page_size`` records (1,000 by default, Manage's maximum), filtered by Manage on
``lastUpdated``, until a page shorter than ``page_size`` (Manage's forward-only ``Link``
carries a ``next`` on the last page too, so only a full last page costs one more, empty,
request) or a ``Link`` without ``next``; nothing is read per record, the list answers
carrying whole records (a contact's e-mail items included).
``get`` puts all the ids of a call (``max_get``, 200) in one ``id in (...)`` and ``find`` all
its values in one ``in (...)``: one request per list, a list cut where its values pass 1,500
characters (``MAX_CONDITIONS``: the guide warns that URLs past about 2,000 characters fail),
so 200 ids of up to five digits are one request, of six, two. The guide's way past that limit,
``POST .../search`` with the conditions in the body, is documented for tickets only among
these resources, and with no paging parameter named: it is not used (two requests for 200
tickets of six-digit ids, against one that could not page reliably). A create is one ``POST``
and an update one ``PATCH``, each answering the whole record, which is not read back; a delete
is one ``DELETE``. An update that writes the e-mail needs the contact as it stands: a PATCH
replaces ``communicationItems`` whole and a record keeps only the e-mail, so the other items
are read to be sent back. The engine says which contacts a chunk updates and with which
fields (``will_update``); those writing the e-mail, two or more, are read together, ``id in
(...)`` as ``get`` does, and each kept for its one update in that chunk: k such updates cost
k PATCHes and one read per 200 or so ids (a copy serves for ``connectors/kept.py``'s
``MAX_AGE`` at most: a phone added meanwhile would be dropped by the PATCH). One alone, or
one the list did not carry, is a ``GET`` of the record first (an update with nothing to
write is one ``GET`` of the record).
``check()`` is one request, ``system/info`` (it proves the keys), and forgets companyinfo.
Companyinfo (``GET /login/companyinfo/{company}``, no keys) is read at most once per run, by
the run's first need of it: ``identity()`` (the engine asks it right after ``check()``), or
the connector's very first request, which needs the codebase unless it is set (that read
then serves the run's ``identity()`` too). So every run, the first included, costs two
requests before its reads; the codebase is kept for the connector's life (it only builds
URLs). ``options("members")`` (filtered by
Manage: ``inactiveFlag = False``) and ``options("opportunity_statuses")`` are one request per
page each, read at most once per run by the engine (``daemon/engine/reference.py``), not kept
by the connector. Its own requests go one after another (each ``pageId`` comes from the answer
before; lists are read in turn); the engine keeps several writes in flight, paced by
``connectors/pace.py`` under the quota above.

``check()``: ``GET system/info`` with the keys (DT-3); the connector's first also reads
companyinfo, for the codebase (unless ``codebase`` is set). ``clock()``: the Date header of
the latest answer.
``identity()``: ``connectwise:<CompanyID>/<CompanyName>`` from companyinfo (no secret), read
afresh in each run: an instance that changed behind the same URL is reported the next run.
``options("members")``: ``{"First Last": identifier}`` of the active members (DT-8);
``options("opportunity_statuses")``: ``{name: {wonFlag, lostFlag, closedFlag}}``.
"""
from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Any, AsyncIterator, Collection, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from yarl import URL

from connectors.base import (Capabilities, EntityInfo, NotFoundError, Record, RecordError,
                             flatten, unflatten, utc)
from connectors.connectwise.conditions import quote
from connectors.http import HttpClient, SlidingWindowLimiter
from connectors.kept import Kept

PATHS = {"companies": "company/companies", "contacts": "company/contacts",
         "catalog": "procurement/catalog", "opportunities": "sales/opportunities",
         "projects": "project/projects", "tickets": "project/tickets",
         "products": "procurement/products"}
EMAIL = "communicationItems.Email"


def parse_error(status: int, body: Any) -> tuple[str, tuple[str, ...]]:
    """Manage's ``{"code", "message", "errors": [{"code", "message", "field"}]}``."""
    if isinstance(body, dict):
        errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
        if errors:
            message = "; ".join(f"{e.get('field') or ''}: {e.get('message') or e.get('code')}"
                                .lstrip(": ") for e in errors)
            return message, tuple(e["field"] for e in errors if e.get("field"))
        if body.get("message"):
            return str(body["message"]), ()
    return f"HTTP {status}", ()


def _to_record(raw: dict) -> Record:
    body = dict(raw)
    items = body.pop("communicationItems", None)
    fields = flatten(body)
    if items is not None:
        email = [i for i in items if (i.get("communicationType")
                                      or (i.get("type") or {}).get("name")) == "Email"]
        best = next((i for i in email if i.get("defaultFlag")), email[0] if email else None)
        fields[EMAIL] = best.get("value") if best else None
    stamp = fields.get("_info.lastUpdated")
    modified = utc(datetime.fromisoformat(stamp.replace("Z", "+00:00"))) if stamp else None
    return Record(id=str(raw["id"]), fields=fields, modified=modified,
                  version=stamp)


def _body(fields: dict[str, Any]) -> dict[str, Any]:
    """Flattened fields -> the JSON Manage takes; reference ids as numbers."""
    plain = {k: v for k, v in fields.items() if k != EMAIL}
    out = unflatten(plain)
    for value in out.values():
        if isinstance(value, dict) and isinstance(value.get("id"), str) and \
                value["id"].isdigit():
            value["id"] = int(value["id"])
    return out


class ConnectWiseConnector:
    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        base_url: str = "https://api-na.myconnectwise.net"
        codebase: str | None = None          # e.g. "v4_6_release/"; None: from companyinfo
        company_id: str
        public_key: str
        private_key: SecretStr
        client_id: str
        page_size: int = Field(1000, ge=1, le=1000)
        requests_per_window: int = Field(1000, ge=1)    # the guide's 1,000 a minute
        window_seconds: float = Field(60.0, gt=0)
        timeout: float = 30.0

    def __init__(self, name: str, settings: "ConnectWiseConnector.Settings | dict") -> None:
        if not isinstance(settings, ConnectWiseConnector.Settings):
            settings = ConnectWiseConnector.Settings.model_validate(settings)
        self.name, self.settings = name, settings
        self.capabilities = Capabilities(entities={
            e: EntityInfo(e, incremental=True, ordered=False, reports_deletes=False)
            for e in PATHS}, max_get=200,
            requests_per_second=settings.requests_per_window / settings.window_seconds)
        self.http = HttpClient(settings.base_url, system="connectwise", auth=self._auth,
                               timeout=settings.timeout, error_parser=parse_error,
                               limiter=SlidingWindowLimiter(settings.requests_per_window,
                                                            settings.window_seconds),
                               headers={"Accept": "application/vnd.connectwise.com+json; "
                                                  "version=2025.1",
                                        "clientId": settings.client_id})
        self._root: str | None = None
        self._company: dict | None = None
        self.ahead: Kept[dict] = Kept()     # records read for the chunk's e-mail updates

    def _auth(self, method: str, query: str, headers: dict[str, str]) -> None:
        s = self.settings
        token = f"{s.company_id}+{s.public_key}:{s.private_key.get_secret_value()}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()

    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()

    async def _base(self) -> str:
        if self._root is None:
            codebase = self.settings.codebase
            if codebase is None:
                info = await self._companyinfo()
                codebase = str(info.get("Codebase") or "v4_6_release/")
            self._root = "/" + codebase.strip("/") + "/apis/3.0/"
        return self._root

    async def _companyinfo(self) -> dict:
        """``GET /login/companyinfo/{company}``, at most once per run (``check()`` forgets
        it): it names the instance (``identity()``) and, once for the connector's life, the
        codebase, which only builds URLs."""
        if self._company is None:
            resp = await self.http.request(
                "GET", f"/login/companyinfo/{URL.build(path=self.settings.company_id)}")
            self._company = resp.body if isinstance(resp.body, dict) else {}
        return self._company

    async def _call(self, method: str, path: str, params: dict | None = None,
                    body: Any = None) -> Any:
        root = await self._base()
        query = URL("/").with_query(params).raw_query_string if params else None
        resp = await self.http.request(method, root + path, query=query, json=body)
        return resp

    # --- the contract ----------------------------------------------------------------------
    async def check(self) -> None:
        """A run starts here: companyinfo read in an earlier run is forgotten, so the run's
        ``identity()`` reads it afresh (an instance moved behind the same URL is seen at
        the next run, not at a restart); ``system/info`` proves the keys."""
        self._company = None
        self.ahead.clear()
        await self._call("GET", "system/info")

    async def clock(self) -> datetime | None:
        return self.http.server_time()

    async def identity(self) -> str | None:
        info = await self._companyinfo()
        return f"connectwise:{info.get('CompanyID')}/{info.get('CompanyName')}"

    async def _pages(self, path: str, conditions: str | None = None,
                     child: str | None = None) -> AsyncIterator[list[dict]]:
        """Forward-only paging: by id, ``pageId`` from the ``Link`` header's next. Manage
        sends a next link on the last page too: a page shorter than ``pageSize`` (Manage
        never answers fewer than asked while more remain) or an empty one is the end."""
        page_id = 0
        seen: set[int] = set()
        while True:
            params: dict[str, Any] = {"pageSize": self.settings.page_size}
            if page_id:
                params["pageId"] = page_id
            if conditions:
                params["conditions"] = conditions
            if child:
                params["childConditions"] = child
            root = await self._base()
            query = URL("/").with_query(params).raw_query_string
            resp = await self.http.request("GET", root + path, query=query,
                                           headers={"pagination-type": "forward-only"})
            rows = resp.body if isinstance(resp.body, list) else []
            yield rows
            nxt = _next_page_id(resp.headers.get("Link", ""))
            if len(rows) < self.settings.page_size or nxt is None or nxt in seen:
                return
            seen.add(nxt)
            page_id = nxt

    async def changes(self, entity: str, since: datetime | None
                      ) -> AsyncIterator[list[Record]]:
        cond = None if since is None else f"lastUpdated >= {quote(since)}"
        async for rows in self._pages_fwd(PATHS[entity], cond):
            yield [_to_record(r) for r in rows]

    def _pages_fwd(self, path: str, conditions: str | None,
                   child: str | None = None) -> AsyncIterator[list[dict]]:
        return self._pages(path, conditions, child)

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        nums = [i for i in ids if str(i).isdigit()]
        if not nums:
            return []
        out: list[Record] = []
        for listed in _lists(nums):
            async for rows in self._pages_fwd(PATHS[entity], f"id in ({listed})"):
                out += [_to_record(r) for r in rows]
        return out

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        values = [v for v in values if v not in (None, "")]
        if not values:
            return []
        out: list[Record] = []
        for listed in _lists([quote(int(v) if field.endswith("id") and str(v).isdigit()
                                    else v) for v in values]):
            if field == EMAIL:
                pages = self._pages_fwd(PATHS[entity], None,
                                        f"communicationItems/value in ({listed})")
            else:
                pages = self._pages_fwd(PATHS[entity],
                                        f"{field.replace('.', '/')} in ({listed})")
            async for rows in pages:
                out += [_to_record(r) for r in rows]
        return out

    async def create(self, entity: str, fields: dict[str, Any]) -> Record:
        body = _body(fields)
        if EMAIL in fields:
            body["communicationItems"] = _with_email([], fields[EMAIL])
        resp = await self._call("POST", PATHS[entity], body=body)
        return _to_record(resp.body)

    async def will_update(self, entity: str, updates: Mapping[str, Collection[str]]) -> None:
        """The records of a chunk's updates that write the e-mail, two or more, read together
        and kept for those updates (see the module docstring)."""
        self.ahead.clear()
        nums = [i for i, paths in updates.items() if EMAIL in paths and str(i).isdigit()]
        if entity not in PATHS or len(nums) < 2:
            return
        read: dict[str, dict] = {}
        try:
            for listed in _lists(nums):
                async for rows in self._pages_fwd(PATHS[entity], f"id in ({listed})"):
                    # a row without its items is not kept: sending [] would blank them
                    read.update((str(r["id"]), r) for r in rows if isinstance(r, dict)
                                and "id" in r and "communicationItems" in r)
        except RecordError:
            pass                        # what was not read is read by each update
        self.ahead.replace(read)

    async def update(self, entity: str, id: str, fields: dict[str, Any],
                     version: str | None = None) -> Record:
        body = _body(fields)
        if EMAIL in fields:
            current = self.ahead.take(str(id))
            if current is None:
                current = (await self._call("GET", f"{PATHS[entity]}/{id}")).body
            body["communicationItems"] = _with_email(
                current.get("communicationItems") or [], fields[EMAIL])
        if not body:
            current = await self._call("GET", f"{PATHS[entity]}/{id}")
            return _to_record(current.body)
        ops = [{"op": "replace", "path": k, "value": v} for k, v in body.items()]
        resp = await self._call("PATCH", f"{PATHS[entity]}/{id}", body=ops)
        return _to_record(resp.body)

    async def delete(self, entity: str, id: str) -> None:
        await self._call("DELETE", f"{PATHS[entity]}/{id}")

    async def options(self, name: str) -> Any:
        if name == "members":
            out: dict[str, str] = {}
            async for rows in self._pages_fwd("system/members", "inactiveFlag = False"):
                for m in rows:
                    full = " ".join(x for x in (m.get("firstName"), m.get("lastName")) if x)
                    out[full] = m["identifier"]
            return out
        if name == "opportunity_statuses":
            statuses: dict[str, dict] = {}
            async for rows in self._pages_fwd("sales/opportunities/statuses", None):
                for s in rows:
                    statuses[s["name"]] = {k: s.get(k) for k in ("wonFlag", "lostFlag",
                                                                 "closedFlag")}
            return statuses
        raise KeyError(name)

    async def forecast(self, opportunity_id: str) -> list[dict]:
        """The forecast lines of one opportunity (for people and tests: not a sync entity)."""
        resp = await self._call("GET", f"sales/opportunities/{opportunity_id}/forecast")
        return list((resp.body or {}).get("forecastItems") or [])


def _with_email(items: list[dict], email: Any) -> list[dict]:
    rest = [i for i in items if (i.get("communicationType")
                                 or (i.get("type") or {}).get("name")) != "Email"
            or not i.get("defaultFlag")]
    if email in (None, ""):
        return rest
    return rest + [{"type": {"name": "Email"}, "communicationType": "Email",
                    "defaultFlag": True, "value": email}]


MAX_CONDITIONS = 1500      # characters: the guide warns URLs past ~2000 characters fail


def _lists(quoted: list[str]) -> list[str]:
    """Values for ``in (...)``, cut so that each query stays short enough for a URL."""
    out: list[str] = []
    part: list[str] = []
    size = 0
    for q in quoted:
        if part and size + len(q) + 2 > MAX_CONDITIONS:
            out.append(", ".join(part))
            part, size = [], 0
        part.append(q)
        size += len(q) + 2
    if part:
        out.append(", ".join(part))
    return out


_LINK = re.compile(r"<([^>]*)>([^<]*)")        # RFC 8288: <target>; params, ...


def _next_page_id(link: str) -> int | None:
    """The ``pageId`` of the ``Link`` header's next target. Targets are split on their angle
    brackets, not on commas: a next URL repeats the request's conditions, whose ``in (a, b)``
    lists hold commas."""
    for target, params in _LINK.findall(link):
        if re.search(r'rel\s*=\s*"?next"?', params):
            value = URL(target).query.get("pageId")
            return int(value) if value and value.isdigit() else None
    return None


__all__ = ["ConnectWiseConnector", "RecordError", "NotFoundError"]
