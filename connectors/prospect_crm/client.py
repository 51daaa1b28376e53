"""Prospect CRM (prospect365) through its OData v4 API.

Entities (engine name -> entity set, key):
- ``companies`` -> ``Companies`` (``CompanyId``): ``Name``, ``Telephone``, ``Website``,
  ``AccountManagerId``, ``AccountManager.UserName`` (the manager's display name, read with
  ``$expand=AccountManager($select=UserName)``; writing it resolves the user by name),
  ``MainAddress.AddressLine1`` .. ``MainAddress.AddressLine5`` (3 = town, 4 = county),
  ``MainAddress.Postcode``, ``MainAddress.Country``, ``StatusFlag``, ``Created``,
  ``LastUpdatedTimestamp``.
- ``contacts`` -> ``Contacts`` (``ContactId``): ``CompanyId``, ``Title``, ``Forename``,
  ``Surname``, ``JobTitle``, ``Email``, ``PhoneNumber``, ``MobilePhoneNumber``, ``Fax``,
  ``StatusFlag``, ``Created``, ``LastUpdatedTimestamp``.

Changes are read by keyset on (``LastUpdatedTimestamp``, key): the first page filters
``LastUpdatedTimestamp ge <since>``, each next page
``LastUpdatedTimestamp gt T or (LastUpdatedTimestamp eq T and <key> gt K)`` where (T, K) is the
last record yielded, so a record edited while pages are read moves past the cursor and is
read later, and any number of records may share one timestamp. A server-capped page (a
``@odata.nextLink``) is continued the same way rather than by the link's ``$skip``. Deleted
records (``StatusFlag 'D'``, Prospect's soft delete) come back as tombstones; ``get`` and
``find`` leave them out. Other multi-page reads (users, get, find) follow ``@odata.nextLink``.

Requests, and why the count is what it is: a change listing is one ``GET`` per page of
``page_size`` records (200 by default, at most 5,000), the account manager's name coming in the
same request through ``$expand``: nothing is read per record. ``get`` asks up to 50 keys
(``max_get``) per request, one ``$filter`` of ``<key> eq 1 or ...``; ``find`` asks 25 values
per request the same way, several requests at once (``FIND_READS``, paced). A create is one
``POST`` and an update one ``PATCH``, both sent with ``Prefer: return=representation`` and the
``$expand``, so the answer is the stored record and nothing is read back; only a ``PATCH``
answered 204 (a service that ignores the preference) costs a second request, ``GET
/{set}({key})``. A delete is one ``DELETE``. ``check()``'s ``GET /Tenant`` proves the token and
is kept for ``identity()`` (no request of its own); a service without the singleton (404) costs
one more, ``GET /Companies?$top=1``. ``clock()`` asks that same cheap read only when nothing
was answered yet. ``options("users")`` reads ``/Users`` (one request per page; the engine asks
once per run) and keeps the list: writing ``AccountManager.UserName`` costs no request while the
name is in it. The first write of a run whose name is not in the list, or that finds no list
read yet, reads ``/Users``, so a user added since is found; writes at that moment wait for
that one read rather than each reading, and the rest of the run (later writes, and an
``options("users")`` asked after it) uses the list it read: a name still missing is refused
with no further request. ``check()`` forgets the list, so each run reads it afresh. The quota
is Prospect's published 1,200 requests per 10 minutes for the whole workspace, the defaults of
``requests_per_window`` and ``window_seconds``, kept by a sliding window.

Malformed answers: a body that is not the documented JSON (an HTML error page, a truncated
body, an object without ``value``) is an UnavailableError naming the request; a row that
cannot be read (a ``LastUpdatedTimestamp`` that is not a date...) comes back as a Record with
``error`` set, the rest of its page goes on, and the keyset goes on from the last row that
could be read (a page with none stops the run: there is no position to go on from); a row
without its key is left out and counted (``reader.skipped``). A write whose answer cannot be
read is OutcomeUnknownError.

A property the answer does not carry is left out of ``Record.fields`` (unknown, not empty);
a null one is None. ``MainAddress`` null means no address: every line None.
``AccountManager.UserName`` is there only when the answer carries ``AccountManager``.

``clock()``: the ``Date`` header of the latest answer (``HttpClient.server_time``).
``identity()``: ``prospect_crm:tenant/<TenantId>`` from the ``Tenant`` singleton; where the
service has none (404), ``prospect_crm:token/<first 16 hex of SHA-256 of the token>``: the
token is the only handle on the workspace then, and a hash of it is no secret.
Every POST is a create and is never repeated after a fault that may follow its arrival
(``OutcomeUnknownError``); no read here is a POST.

Optimistic concurrency: OData allows ETags with ``If-Match``, but Prospect CRM's documented
entities carry none, so ``conditional_writes`` is off: a PATCH sends only the fields that
changed, within a chunk of the read (seconds), and an edit made in between to those fields is
overwritten; an edit to other fields is kept and read next run.
"""
from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator, Sequence
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import (AuthError, Capabilities, ConnectorError, EntityInfo,
                             NotFoundError, Record, RecordError, UnavailableError, flatten,
                             unflatten)
from connectors.http import HttpClient, Response, SlidingWindowLimiter, default_error_parser
from connectors.pace import AdaptiveLimit, together
from connectors.prospect_crm.odata import format_datetime, literal, parse_datetime, query_string
from connectors.reading import RecordReader, date_field

MODIFIED = "LastUpdatedTimestamp"
FIND_TERMS = 25         # values per find() request: one $filter of "... eq ... or ..."
FIND_READS = 8          # find() requests in flight at most (paced below that by the answers)
MANAGER_FIELD = "AccountManager.UserName"
ADDRESS_LINES = ("AddressLine1", "AddressLine2", "AddressLine3", "AddressLine4",
                 "AddressLine5", "Postcode", "Country")


@dataclass(frozen=True)
class _Set:
    name: str
    key: str
    expand: str | None = None
    refs: tuple[str, ...] = ()      # integer keys, exposed as strings like Record.id


SETS = {"companies": _Set("Companies", "CompanyId", "AccountManager($select=UserName)",
                          refs=("CompanyId",)),
        "contacts": _Set("Contacts", "ContactId", refs=("ContactId", "CompanyId"))}


def _error_parser(status: int, body: Any) -> tuple[str, tuple[str, ...]]:
    """OData errors; nested targets (``MainAddress/Postcode``) become dotted field paths."""
    message, targets = default_error_parser(status, body)
    fields: list[str] = []
    for target in targets:
        fields.append(target.replace("/", "."))
        if target == "AccountManagerId":
            fields.append(MANAGER_FIELD)
    return message, tuple(fields)


class ProspectCrmConnector:
    """Companies and contacts of one Prospect CRM workspace (see the module docstring)."""

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        base_url: str = "https://crm-odata-v1.prospect365.com"
        token: SecretStr                          # a Personal Access Token
        page_size: int = Field(200, ge=1, le=5000)
        requests_per_window: int = Field(1200, ge=1)
        window_seconds: float = Field(600.0, gt=0)
        timeout: float = Field(30.0, gt=0)
        attempts: int = Field(5, ge=1)             # tries per request for transient faults
        max_wait: float = Field(30.0, ge=0)        # cap on one Retry-After / backoff wait

    def __init__(self, name: str, settings: "ProspectCrmConnector.Settings") -> None:
        self.name = name
        self.settings = settings
        self.capabilities = Capabilities(
            entities={e: EntityInfo(e, incremental=True, ordered=True, reports_deletes=True)
                      for e in SETS},
            max_get=50,
            requests_per_second=settings.requests_per_window / settings.window_seconds)
        self.http = HttpClient(
            settings.base_url, system=name, auth=self._auth, timeout=settings.timeout,
            attempts=settings.attempts, max_wait=settings.max_wait,
            headers={"Accept": "application/json", "OData-Version": "4.0",
                     "OData-MaxVersion": "4.0", "Prefer": "return=representation"},
            limiter=SlidingWindowLimiter(settings.requests_per_window, settings.window_seconds),
            error_parser=_error_parser)
        self._users: dict[str, str] | None = None       # UserCode -> UserName, per run
        self._users_reread = False      # a write read /Users this run (at most once)
        self._users_lock = asyncio.Lock()       # that read, shared by concurrent writes
        self._tenant: Any = None        # the Tenant check() read (False: none), for identity
        self.reader = RecordReader(name)
        # find()'s requests in flight (each a filter of FIND_TERMS values), paced
        self.pace = AdaptiveLimit(FIND_READS, self.capabilities.requests_per_second)

    def _auth(self, method: str, query: str, headers: dict[str, str]) -> None:
        headers["Authorization"] = f"Bearer {self.settings.token.get_secret_value()}"

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()

    async def check(self) -> None:
        """A run starts with check(): fresh user list, and ``GET /Tenant`` proves the token
        and is kept for the run's ``identity()`` (one request for both); a service without
        the singleton is checked with the cheapest collection read instead."""
        self._users = None
        self._users_reread = False
        self._tenant = None
        try:
            try:
                self._tenant = (await self._request("GET", "/Tenant")).body
            except NotFoundError:
                self._tenant = False
                await self._request("GET", "/Companies", {"$top": 1, "$select": "CompanyId"})
        except AuthError as exc:
            raise AuthError(f"{self.name}: Prospect CRM refused the access token "
                            f"(HTTP {exc.status}); generate a new Personal Access Token under "
                            "Integrations > Custom API Integration > My Tokens",
                            status=exc.status) from None

    async def clock(self) -> datetime | None:
        if self.http.server_time() is None:
            try:                                # the cheapest request; any answer has a Date
                await self._request("GET", "/Companies", {"$top": 1, "$select": "CompanyId"})
            except ConnectorError:
                pass
        return self.http.server_time()

    async def identity(self) -> str | None:
        body, self._tenant = self._tenant, None         # this run's check() read it
        try:
            if body is None:
                body = (await self._request("GET", "/Tenant")).body
            if body is False:
                raise NotFoundError("no Tenant")
        except NotFoundError:
            token = self.settings.token.get_secret_value().encode()
            return f"prospect_crm:token/{hashlib.sha256(token).hexdigest()[:16]}"
        tenant = body.get("TenantId") if isinstance(body, dict) else None
        return f"prospect_crm:tenant/{tenant}" if tenant else None

    # --- reading -----------------------------------------------------------------------------
    async def changes(self, entity: str, since: datetime | None) -> AsyncIterator[list[Record]]:
        es = self._set(entity)
        size = self.settings.page_size
        cursor: tuple[datetime, int] | None = None
        boundary = ""              # the last timestamp exactly as the server wrote it
        unreadable: set[str] = set()      # rows already yielded with an error
        while True:
            if cursor is None:
                where = f"{MODIFIED} ge {format_datetime(since)}" if since else None
            else:
                t = boundary
                where = f"{MODIFIED} gt {t} or ({MODIFIED} eq {t} and {es.key} gt {cursor[1]})"
            response = await self._request("GET", f"/{es.name}", {
                "$filter": where, "$orderby": f"{MODIFIED},{es.key}", "$top": size,
                "$expand": es.expand})
            rows = response.rows("value")
            records = self._records(es, rows, response.request)
            if not rows:
                return
            readable = [r for r in records if not r.error and r.modified is not None]
            if not readable:
                raise response.malformed(f"no row of this page of {es.name} can be read, so "
                                         "its changes cannot be paged past it")
            last = readable[-1]
            position = (last.modified, int(last.id))
            if cursor is not None and position <= cursor:
                raise UnavailableError(f"{self.name}: {es.name} paging did not advance past "
                                       f"{boundary}/{cursor[1]}; stopped")
            fresh = [r for r in records if r.id not in unreadable]
            unreadable |= {r.id for r in records if r.error}
            if fresh:
                yield fresh
            cursor = position
            boundary = str(next(row[MODIFIED] for row in reversed(rows)
                                if isinstance(row, dict) and str(row.get(es.key)) == last.id))
            if len(rows) < size and not response.body.get("@odata.nextLink"):
                return

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        es = self._set(entity)
        keys = [int(i) for i in dict.fromkeys(str(i) for i in ids) if i.isdigit()]
        out: list[Record] = []
        for start in range(0, len(keys), 50):
            chunk = keys[start:start + 50]
            where = " or ".join(f"{es.key} eq {k}" for k in chunk)
            out.extend(await self._query(es, f"({where}) and StatusFlag ne 'D'"))
        return out

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        es = self._set(entity)
        path = field.replace(".", "/")
        wanted = list(dict.fromkeys(values))

        async def one(part: list[Any]) -> list[Record]:
            terms = []
            for value in part:
                if field in es.refs and value is not None:
                    terms.append(f"{path} eq {self._ref(field, value)}")
                elif isinstance(value, str):
                    terms.append(f"tolower({path}) eq {literal(value.strip().lower())}")
                else:
                    terms.append(f"{path} eq {literal(value)}")
            async with self.pace.slot():
                return await self._query(es, f"({' or '.join(terms)}) and StatusFlag ne 'D'")
        found = await together(one(wanted[i:i + FIND_TERMS])
                               for i in range(0, len(wanted), FIND_TERMS))
        out: dict[str, Record] = {}
        for records in found:           # in the requests' order, each record once
            for record in records:
                out[record.id] = record
        return list(out.values())

    async def options(self, name: str) -> Any:
        if name == "users":         # a write's read of /Users this run serves as well
            users = self._users if self._users_reread and self._users is not None \
                else await self._load_users()
            return sorted(users.values())
        raise KeyError(name)

    # --- writing -----------------------------------------------------------------------------
    async def create(self, entity: str, fields: dict[str, Any]) -> Record:
        es = self._set(entity)
        body = await self._payload(es, fields)
        created = await self._request("POST", f"/{es.name}", {"$expand": es.expand}, body)
        return self.reader.written(created.body, lambda row: self._record(es, row),
                                   created.request)

    async def update(self, entity: str, id: str, fields: dict[str, Any],
                     version: str | None = None) -> Record:
        es = self._set(entity)
        key = self._key(es, id)
        body = await self._payload(es, fields)
        stored = await self._request("PATCH", f"/{es.name}({key})", {"$expand": es.expand},
                                     body)
        if not isinstance(stored.body, dict) or es.key not in stored.body:  # 204: read back
            stored = await self._request("GET", f"/{es.name}({key})", {"$expand": es.expand})
        return self.reader.written(stored.body, lambda row: self._record(es, row),
                                   stored.request)

    async def delete(self, entity: str, id: str) -> None:
        es = self._set(entity)
        await self._request("DELETE", f"/{es.name}({self._key(es, id)})")

    # --- helpers -----------------------------------------------------------------------------
    def _set(self, entity: str) -> _Set:
        try:
            return SETS[entity]
        except KeyError:
            raise KeyError(f"{self.name}: unknown entity {entity!r} "
                           f"(known: {', '.join(SETS)})") from None

    def _key(self, es: _Set, id: str) -> int:
        if not str(id).isdigit():
            raise NotFoundError(f"{self.name}: {es.name} has no record {id!r}", status=404)
        return int(id)

    async def _request(self, method: str, path: str, params: dict | None = None,
                       body: Any = None) -> Response:
        query = query_string(params or {}) or None
        return await self.http.request(method, path, json=body, query=query)

    async def _query(self, es: _Set, where: str) -> list[Record]:
        """Every record matching ``where``, following ``@odata.nextLink``."""
        out: list[Record] = []
        async for rows, request in self._rows(f"/{es.name}", {
                "$filter": where, "$expand": es.expand, "$top": self.settings.page_size}):
            out.extend(self._records(es, rows, request))
        return out

    def _records(self, es: _Set, rows: list, request: str) -> list[Record]:
        return self.reader.page(rows, lambda row: self._record(es, row),
                                lambda row: row.get(es.key), request)

    async def _rows(self, path: str, params: dict) -> AsyncIterator[tuple[list, str]]:
        """Pages of rows (with the request that read them), following ``@odata.nextLink``."""
        query: str | None = query_string(params)
        seen: set[str] = set()
        while True:
            response = await self.http.request("GET", path, query=query)
            yield response.rows("value"), response.request
            link = response.body.get("@odata.nextLink")
            if link is not None and not isinstance(link, str):
                raise response.malformed("its @odata.nextLink is not a link")
            if not link or link in seen:
                return
            seen.add(link)
            path, query = self._relative(link)

    def _relative(self, link: str) -> tuple[str, str]:
        parts = urlsplit(link)
        prefix = urlsplit(self.http.base_url).path.rstrip("/")
        path = parts.path[len(prefix):] if prefix and parts.path.startswith(prefix) \
            else parts.path
        return path, parts.query

    async def _load_users(self) -> dict[str, str]:
        users: dict[str, str] = {}
        async for rows, _ in self._rows("/Users", {"$select": "UserCode,UserName",
                                                   "$top": self.settings.page_size}):
            for row in rows:
                code = row.get("UserCode") if isinstance(row, dict) else None
                if not isinstance(code, str) or not code:
                    continue            # not a user this connector can name
                name = row.get("UserName")
                users[code] = name if isinstance(name, str) and name else code
        self._users = users
        return users

    async def _reread_users(self) -> dict[str, str]:
        """The user list as read for writes this run: the first caller reads ``/Users``
        (concurrent callers wait for that one read), later ones get the same list. A read
        that fails is tried again by the next caller."""
        async with self._users_lock:
            users = self._users
            if users is None or not self._users_reread:
                users = await self._load_users()
                self._users_reread = True
            return users

    async def _user_code(self, name: Any) -> str | None:
        if name is None or (isinstance(name, str) and not name.strip()):
            return None
        wanted = str(name).strip().casefold()
        users = self._users
        codes = [c for c, n in (users or {}).items() if n.strip().casefold() == wanted]
        if not codes and (users is None or not self._users_reread):
            # not in the list yet (or none read): read it again, once per run
            users = await self._reread_users()
            codes = [c for c, n in users.items() if n.strip().casefold() == wanted]
        if len(codes) == 1:
            return codes[0]
        if len(codes) > 1:
            raise RecordError(f"{self.name}: several CRM users are named {name!r}; "
                              "cannot choose the account manager", fields=(MANAGER_FIELD,))
        raise RecordError(f"{self.name}: no CRM user is named {name!r}, so it cannot be the "
                          "account manager", fields=(MANAGER_FIELD,))

    async def _payload(self, es: _Set, fields: dict[str, Any]) -> dict[str, Any]:
        fields = dict(fields)
        if es.name == "Companies" and MANAGER_FIELD in fields:
            fields["AccountManagerId"] = await self._user_code(fields.pop(MANAGER_FIELD))
        fields.pop(es.key, None)
        for ref in es.refs:
            if fields.get(ref) is not None:
                fields[ref] = self._ref(ref, fields[ref])
        return unflatten(fields)

    @staticmethod
    def _ref(field: str, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        raise RecordError(f"{field} must be a Prospect CRM record key, not {value!r}",
                          fields=(field,))

    def _record(self, es: _Set, row: dict[str, Any]) -> Record:
        has_manager = "AccountManager" in row
        manager = row.get("AccountManager")
        if has_manager or row.get("MainAddress", ()) is None or \
                any(k.startswith("@odata.") for k in row):
            row = {k: v for k, v in row.items()
                   if k != "AccountManager" and not k.startswith("@odata.")}
            if "MainAddress" in row and row["MainAddress"] is None:
                row["MainAddress"] = dict.fromkeys(ADDRESS_LINES)
        fields = flatten(row)
        for ref in es.refs:
            if fields.get(ref) is not None:
                fields[ref] = str(fields[ref])
        if es.expand and has_manager:
            if manager is None:                 # no account manager
                fields[MANAGER_FIELD] = None
            elif isinstance(manager, dict) and "UserName" in manager:
                fields[MANAGER_FIELD] = manager["UserName"]
        return Record(id=str(int(row[es.key])), fields=fields,
                      modified=date_field(row, MODIFIED, parse_datetime),
                      deleted=row.get("StatusFlag") == "D")
