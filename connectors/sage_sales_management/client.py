"""Sage Sales Management (formerly ForceManager) through its API v4.

Auth: ``POST /api/v4/login`` with the public key as ``username`` and the private key as
``password`` gives a session token, sent as ``X-Session-Key``. Sessions expire: a 401 on any
other request logs in again once and repeats the request; a refused login is an AuthError.

Entities (engine name -> path), each record flattened, references ``{"id", "value"}`` as
``<ref>.id`` (a string, like Record.id) and ``<ref>.value``:

- ``accounts`` -> ``/api/v4/accounts``: ``name``, ``extId``, ``typeId.id``, ``typeId.value``
  (Client, Prospect...), ``readOnly``, ``salesRepId.id``, ``salesRepId.value``, ``address1``,
  ``address2``, ``postcode``, ``city``, ``region``, ``country``, ``phone``, ``phone2``,
  ``fax``, ``email``, ``web``, ``vatNumber``, ``comment``, plus the computed
  ``salesRep.fullName`` (the sales rep user's first and last name, from the users list).
- ``contacts`` -> ``/api/v4/contacts``: ``firstName``, ``lastName``, ``accountId.id``,
  ``accountId.value``, ``salesRepId.id``, ``salesRepId.value``, ``email``, ``phone1``,
  ``phone2``, ``cellPhone``, ``position``, ``extId``, ``readOnly``, ``comment``, plus the
  computed ``account.typeId.value`` (one batched accounts request per page of contacts).
- ``products`` -> ``/api/v4/products``: ``model``, ``description``, ``extId``, ``price``,
  ``cost``, ``stock`` (text: a quantity or ``-``), ``notAvailable``, ``image`` (base64),
  ``readOnly``.
- ``users`` -> ``/api/v4/users`` (read only): ``firstName``, ``lastName``, ``email``,
  ``isActive``, ``level``, ``extId``, ``phone``.
- ``invoices`` -> ``invoices_path`` (a tenant custom entity, default ``/api/v4/invoices``):
  ``extId``, ``number``, ``accountId.id``, ``accountId.value``, ``date``, ``dueDate``,
  ``totalExclTax``, ``totalInclTax``, ``status``, ``sage50InvoiceId``, ``synced``,
  ``readOnly``.

Every entity also has ``deleted``, ``dateDeleted``, ``dateCreated``, ``dateUpdated``.

Changes are read by keyset on (``COALESCE(dateUpdated, dateCreated)``, id), because the API
leaves ``dateUpdated`` null until a record's first edit: the first page filters
``M >= 'since'``, each next page ``M > 'T' OR (M = 'T' AND id > K)`` with
``order=M ASC,id ASC``, always ``page=0``, so a record edited while pages are read moves past
the cursor and is read later, and any number of records may share one timestamp. Deleted
records (FM's soft delete, ``deleted = true``) come back as tombstones; ``get`` and ``find``
leave them out. Writes: references are sent as plain integer ids; ``typeId.value`` is
resolved to the type's id (the run's account types, see below); the other
``.value`` paths and the computed fields are not sent. A create or update answers only the
id, so the record is read back: the read-backs of writes made together go as one
``where=id IN (...)`` request after ``read_back_window`` seconds (``readback.py``; 0: one
``GET /{id}`` each).

Requests, and why the count is what it is: a change listing is one ``GET`` per page of
``page_size`` records (the ``Count`` header: 50 by default, at most 500). A page of contacts
costs one more, the accounts request above (a reference carries only its id and name and the
API has no expansion). ``get`` asks up to 100 ids (``max_get``) per ``id IN (...)`` request,
with a page as large as the ids asked (``Count``), so 100 ids are one request; ``find`` asks
25 values per request, ``(f = v1 OR f = v2 ...)``. A create is its ``POST`` and an update its
``PUT`` (none when only computed or ``.value`` paths changed), each plus its share of the
read-back above: a write alone is two requests (a contact three, with its account's type), N
written together N plus one read-back (contacts: two) per batch of up to 100. A delete is one
``DELETE``, nothing read back. ``check()`` logs in (the ``POST`` proves the keys;
``identity()`` reads the session key it gives, no request) and reads one user (``Count: 1``)
to prove the session; any answer's ``Date`` serves ``clock()``. Reference data is read on its
first use in a run and kept for the run only (a run starts with ``check()``, which drops it,
so an edit in the vendor is seen the next run; concurrent first uses share one read). The
users list (one request per 500 users) serves ``options("users")``, ``options("admin")`` and
the accounts' ``salesRep.fullName``: one read for all of them, except that reads of accounts
read it again once it is older than ``users_ttl`` (a long run). The account types (one
request per 500) serve every ``find`` by ``typeId.value``, ``options("account_types")`` and
the writes of ``typeId.value``: one read, plus one more for a write whose name is missing
from a list read before that write began (a type added since; ``find`` does not read again,
an unknown name finds nothing; a name still missing after that second read is refused
without reading again for the rest of the run, whatever number of records name it). The
quota is 900 requests per 60 s (``requests_per_window``, ``window_seconds``), the
connector's own default: Sage publishes no rate limit for the API.

Malformed answers: a body that is not the documented JSON (an HTML error page, a truncated
body, an object where a list is documented) is an UnavailableError naming the request; a
record that cannot be read (a ``dateUpdated`` that is not a date...) comes back as a Record
with ``error`` set, the rest of its page goes on, and the keyset goes on from the last record
that could be read (a page with none stops the run); a record without its ``id`` is left out
and counted (``reader.skipped``). A write whose answer or read-back cannot be read (no id, a
malformed record) is OutcomeUnknownError: the write was sent, what it stored is not known.

An attribute the answer does not carry is left out of ``Record.fields`` (unknown, not
empty); so is a computed field whose basis is missing (``salesRep.fullName`` without
``salesRepId``, ``account.typeId.value`` without ``accountId`` or without the account's
``typeId``). A null reference gives None for both ``.id`` and ``.value``.

The login is the one POST that creates no record: it is retried like a read. A create POST
is never sent again after a fault that may follow its arrival (``OutcomeUnknownError``).

``clock()``: the ``Date`` header of the latest answer (``HttpClient.server_time``).
``identity()``: ``sage_sales_management:implementation/<ImplementationId>``, read from the
session key (the documented login example is base64 of ``<time>|<base64 of {"ImplementationId",
"UserId", "TimeInit"...}>|<signature>``); when a key does not have that shape,
``sage_sales_management:key/<first 16 hex of SHA-256 of the public key>``. Never a key.

Optimistic concurrency: the API documents no version or ``If-Match``, so ``conditional_writes``
is off: an update sends only the fields that changed, seconds after the read of its page.
"""
from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator, Sequence

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import (AuthError, Capabilities, ConnectorError, EntityInfo,
                             NotFoundError, OutcomeUnknownError, Record, RecordError,
                             UnavailableError, utc)
from connectors.http import HttpClient, Response, SlidingWindowLimiter
from connectors.reading import RecordReader, date_field
from connectors.sage_sales_management.readback import ReadBacks

API = "/api/v4"
MODIFIED = "COALESCE(dateUpdated,dateCreated)"
SALES_REP_NAME = "salesRep.fullName"
ACCOUNT_TYPE = "account.typeId.value"
READ_ONLY_FIELDS = frozenset({"id", "deleted", "dateDeleted", "dateCreated", "dateUpdated"})
_PAGE_SIZE: contextvars.ContextVar[int | None] = contextvars.ContextVar("fm_page_size",
                                                                      default=None)
_FM_CODE = re.compile(r"\(FM error (\d+)\)$")


@dataclass(frozen=True)
class _Entity:
    name: str
    path: str
    refs: tuple[str, ...] = ()
    computed: tuple[str, ...] = ()
    writable: bool = True


def _error_parser(status: int, body: Any) -> tuple[str, tuple[str, ...]]:
    """FM errors: ``{"statusCode", "code", "message", "fields"}`` (also ``Message``)."""
    if isinstance(body, dict):
        message = body.get("message") or body.get("Message") or body.get("error") \
            or f"HTTP {status}"
        code = body.get("code")
        fields = tuple(str(f) for f in body.get("fields") or () if f)
        return (f"{message} (FM error {code})" if code else str(message)), fields
    if isinstance(body, str) and body:
        return body[:500], ()
    return f"HTTP {status}", ()


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def _quote(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class SageSalesManagementConnector:
    """Accounts, contacts, products, users and invoices of one Sage Sales Management tenant."""

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        base_url: str = "https://api.forcemanager.com"
        public_key: SecretStr
        private_key: SecretStr
        page_size: int = Field(50, ge=1, le=500)
        requests_per_window: int = Field(900, ge=1)
        window_seconds: float = Field(60.0, gt=0)
        timeout: float = Field(30.0, gt=0)
        attempts: int = Field(5, ge=1)             # tries per request for transient faults
        max_wait: float = Field(30.0, ge=0)        # cap on one Retry-After / backoff wait
        users_ttl: float = Field(60.0, ge=0)       # seconds the users list is reused
        admin_level: int = Field(5, ge=1, le=5)    # the permission level of admins
        invoices_path: str = "/api/v4/invoices"    # the tenant's invoices custom entity
        # concurrent writes read their records back in one request after this many seconds
        # (0: one GET per write)
        read_back_window: float = Field(0.0005, ge=0, le=1)

    def __init__(self, name: str, settings: "SageSalesManagementConnector.Settings") -> None:
        self.name = name
        self.settings = settings
        self.entities = {
            "accounts": _Entity("accounts", f"{API}/accounts", ("typeId", "salesRepId"),
                                (SALES_REP_NAME,)),
            "contacts": _Entity("contacts", f"{API}/contacts", ("accountId", "salesRepId"),
                                (ACCOUNT_TYPE,)),
            "products": _Entity("products", f"{API}/products"),
            "users": _Entity("users", f"{API}/users", writable=False),
            "invoices": _Entity("invoices", settings.invoices_path.rstrip("/"),
                                ("accountId",)),
        }
        self.capabilities = Capabilities(
            entities={e.name: EntityInfo(e.name, incremental=True, ordered=True,
                                         reports_deletes=True, can_create=e.writable,
                                         can_update=e.writable, can_delete=e.writable)
                      for e in self.entities.values()},
            max_get=100,
            requests_per_second=settings.requests_per_window / settings.window_seconds)
        self.http = HttpClient(
            settings.base_url, system=name, auth=self._auth, timeout=settings.timeout,
            attempts=settings.attempts, max_wait=settings.max_wait,
            headers={"Accept": "application/json"},
            limiter=SlidingWindowLimiter(settings.requests_per_window, settings.window_seconds),
            error_parser=_error_parser)
        self._token: str | None = None
        self._generation = 0                      # bumped by each login
        self._login_lock = asyncio.Lock()
        self.logins = 0
        # reference data, read at most once per run (check() starts a run and drops it)
        self._users: dict[str, dict] | None = None
        self._users_at = 0.0
        self._types: dict[str, int] | None = None  # casefolded name -> id
        self._type_names: list[str] = []
        self._types_reads = 0                      # reads of the account types so far
        self._missed: set[str] = set()             # names a list read again still lacked
        self._users_lock = asyncio.Lock()          # concurrent first uses share one read
        self._types_lock = asyncio.Lock()
        self._read_backs = ReadBacks(self._fetch_many, window=settings.read_back_window,
                                     size=self.capabilities.max_get)
        self.reader = RecordReader(name)

    def _auth(self, method: str, query: str, headers: dict[str, str]) -> None:
        if self._token:
            headers["X-Session-Key"] = self._token
        count = _PAGE_SIZE.get()
        if count:
            headers["Count"] = str(count)        # the documented page-size request header

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self._read_backs.close()
        await self.http.close()

    async def check(self) -> None:
        self._users = None                      # a new run: its reference data is read anew
        self._types = None
        self._missed = set()
        await self._login(self._generation)
        await self._request("GET", f"{API}/users", {"page": 0}, count=1)

    async def clock(self) -> datetime | None:
        if self.http.server_time() is None:
            try:                                # the cheapest request; any answer has a Date
                await self._request("GET", f"{API}/users", {"page": 0}, count=1)
            except ConnectorError:
                pass
        return self.http.server_time()

    async def identity(self) -> str | None:
        if self._token is None:
            await self._login(self._generation)
        implementation = _implementation_of(self._token or "")
        if implementation:
            return f"sage_sales_management:implementation/{implementation}"
        key = self.settings.public_key.get_secret_value().encode()
        return f"sage_sales_management:key/{hashlib.sha256(key).hexdigest()[:16]}"

    # --- session -----------------------------------------------------------------------------
    async def _login(self, seen: int) -> None:
        """Log in unless another task already did since generation ``seen``."""
        async with self._login_lock:
            if self._generation != seen and self._token:
                return
            self._token = None
            self.logins += 1
            try:
                resp = await self.http.request("POST", f"{API}/login", json={
                    "username": self.settings.public_key.get_secret_value(),
                    "password": self.settings.private_key.get_secret_value()},
                    idempotent=True)               # a session, no record: safe to repeat
            except AuthError as exc:
                raise AuthError(
                    f"{self.name}: Sage Sales Management refused the API keys (HTTP "
                    f"{exc.status}); check the public and private API keys under Settings > "
                    "Integrations > API key", status=exc.status) from None
            except RecordError as exc:
                raise AuthError(f"{self.name}: Sage Sales Management login failed (HTTP "
                                f"{exc.status})", status=exc.status) from None
            token = resp.body.get("token") if isinstance(resp.body, dict) else None
            if not token:
                raise UnavailableError(f"{self.name}: the login answer had no session token")
            self._token = str(token)
            self._generation += 1

    async def _request(self, method: str, path: str, params: dict | None = None,
                       body: Any = None, *, count: int | None = None) -> Response:
        if self._token is None:
            await self._login(self._generation)
        for attempt in range(2):
            seen = self._generation
            try:
                return await self._send(method, path, params, body, count)
            except AuthError:
                if attempt == 1:
                    raise AuthError(f"{self.name}: Sage Sales Management refused a fresh "
                                    "session key (HTTP 401)", status=401) from None
                await self._login(seen)            # the session expired: log in once again
            except RecordError as exc:
                m = _FM_CODE.search(exc.message)
                if m and m.group(1) == "910" and not isinstance(exc, NotFoundError):
                    raise NotFoundError(exc.message, status=exc.status) from None
                raise
        raise AssertionError("unreachable")

    async def _send(self, method, path, params, body, count) -> Response:
        token = _PAGE_SIZE.set(count)       # the auth hook adds it as the Count header
        try:
            return await self.http.request(method, path, params=params, json=body)
        finally:
            _PAGE_SIZE.reset(token)

    # --- reading -----------------------------------------------------------------------------
    async def changes(self, entity: str, since: datetime | None) -> AsyncIterator[list[Record]]:
        es = self._entity(entity)
        size = self.settings.page_size
        cursor: tuple[datetime, int] | None = None
        boundary = ""
        unreadable: set[str] = set()      # records already yielded with an error
        while True:
            if cursor is None:
                where = f"{MODIFIED} >= {_quote(_format(since))}" if since else None
            else:
                t = _quote(boundary)
                where = f"{MODIFIED} > {t} OR ({MODIFIED} = {t} AND id > {cursor[1]})"
            params = {"page": 0, "order": f"{MODIFIED} ASC,id ASC"}
            if where:
                params["where"] = where
            resp = await self._request("GET", es.path, params, count=size)
            rows = resp.rows()
            if not rows:
                return
            records = await self._records(es, rows, resp.request)
            readable = [r for r in records
                        if not r.error and r.modified is not None and r.id.isdigit()]
            if not readable:
                raise resp.malformed(f"no record of this page of {entity} can be read, so "
                                     "its changes cannot be paged past it")
            last = readable[-1]
            position = (last.modified, int(last.id))
            if cursor is not None and position <= cursor:
                raise UnavailableError(f"{self.name}: {entity} paging did not advance past "
                                       f"{boundary}/{cursor[1]}; stopped")
            fresh = [r for r in records if r.id not in unreadable]
            unreadable |= {r.id for r in records if r.error}
            if fresh:
                yield fresh
            cursor = position
            row = next(r for r in reversed(rows)
                       if isinstance(r, dict) and str(r.get("id")) == last.id)
            boundary = str(row.get("dateUpdated") or row.get("dateCreated"))
            if "X-FM-Next-Page" not in resp.headers:
                return

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        es = self._entity(entity)
        keys = [int(i) for i in dict.fromkeys(str(i).strip() for i in ids) if i.isdigit()]
        out: list[Record] = []
        step = self.capabilities.max_get
        for start in range(0, len(keys), step):
            chunk = keys[start:start + step]
            out.extend(await self._query(       # one page: as many asked as ids given
                es, f"id IN ({', '.join(map(str, chunk))}) AND deleted = false",
                count=len(chunk)))
        return out

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        es = self._entity(entity)
        wanted = [v for v in dict.fromkeys(values) if v is not None and v != ""]
        attr = field
        if field.endswith(".id") and field[:-3] in es.refs:
            attr = field[:-3]
            wanted = [self._ref(field, v) for v in wanted]
        elif field == "typeId.value" and "typeId" in es.refs:
            types = await self._run_types()
            attr = "typeId"
            wanted = list(dict.fromkeys(types[k] for k in (str(v).strip().casefold()
                                                           for v in wanted) if k in types))
            if not wanted:
                return []
        elif "." in field or field in es.computed:
            raise KeyError(f"{self.name}: cannot search {entity} by {field!r}")
        out: dict[str, Record] = {}
        for start in range(0, len(wanted), 25):
            terms = " OR ".join(f"{attr} = {_quote(v.strip() if isinstance(v, str) else v)}"
                                for v in wanted[start:start + 25])
            for record in await self._query(es, f"({terms}) AND deleted = false"):
                out[record.id] = record
        return list(out.values())

    async def options(self, name: str) -> Any:
        if name == "users":
            users = await self._run_users()
            return [{"id": uid, "firstName": u.get("firstName"), "lastName": u.get("lastName"),
                     "fullName": _full_name(u), "email": u.get("email"),
                     "level": u.get("level"), "isActive": u.get("isActive")}
                    for uid, u in users.items()]
        if name == "account_types":
            await self._run_types()
            return list(self._type_names)
        if name == "admin":
            users = await self._run_users()
            for uid, u in sorted(users.items(), key=lambda kv: int(kv[0])):
                if u.get("isActive") and not u.get("deleted") \
                        and u.get("level") == self.settings.admin_level:
                    return uid
            return None
        raise KeyError(name)

    # --- writing -----------------------------------------------------------------------------
    async def create(self, entity: str, fields: dict[str, Any]) -> Record:
        es = self._writable(entity)
        body = await self._payload(es, fields)
        resp = await self._request("POST", es.path, body=body)
        new_id = resp.body.get("id") if isinstance(resp.body, dict) else None
        if isinstance(new_id, str) and new_id.strip().isdigit():
            new_id = int(new_id)
        if not isinstance(new_id, int) or isinstance(new_id, bool):
            raise OutcomeUnknownError(f"{self.name}: {resp.request}: the create was sent but "
                                      "its answer has no id")
        return await self._read_back(es, new_id)

    async def update(self, entity: str, id: str, fields: dict[str, Any],
                     version: str | None = None) -> Record:
        es = self._writable(entity)
        key = self._key(es, id)
        body = await self._payload(es, fields)
        if not body:          # only computed or .value paths: nothing to send, no echo bump
            record = await self._read_back(es, key)
            if record.deleted:
                raise NotFoundError(f"{self.name}: {entity} {key} has been deleted",
                                    status=400)
            return record
        await self._request("PUT", f"{es.path}/{key}", body=body)
        return await self._read_back(es, key)

    async def delete(self, entity: str, id: str) -> None:
        es = self._writable(entity)
        await self._request("DELETE", f"{es.path}/{self._key(es, id)}")

    # --- helpers -----------------------------------------------------------------------------
    def _entity(self, entity: str) -> _Entity:
        try:
            return self.entities[entity]
        except KeyError:
            raise KeyError(f"{self.name}: unknown entity {entity!r} "
                           f"(known: {', '.join(self.entities)})") from None

    def _writable(self, entity: str) -> _Entity:
        es = self._entity(entity)
        if not es.writable:
            raise RecordError(f"{self.name}: {entity} are read only through the API")
        return es

    def _key(self, es: _Entity, id: str) -> int:
        if not str(id).strip().isdigit():
            raise NotFoundError(f"{self.name}: {es.name} has no record {id!r}", status=400)
        return int(str(id).strip())

    async def _read_back(self, es: _Entity, key: int) -> Record:
        if self.settings.read_back_window <= 0:
            resp = await self._request("GET", f"{es.path}/{key}")
            request = resp.request
            found = await self._records(es, [resp.object()], request)
            record = found[0] if found else Record(str(key), {}, error=f"{self.name}: "
                                                   f"{request}: the answer has no id")
        else:
            request = f"GET {es.path} (read-back of {key})"
            try:
                record = await self._read_backs.get(es.name, es, key)
            except KeyError:
                raise NotFoundError(f"{self.name}: {es.name} {key} does not exist",
                                    status=400) from None
        if record.error:
            raise OutcomeUnknownError(f"{self.name}: {request}: the write was sent but what "
                                      f"it stored cannot be read: {record.error}")
        return record

    async def _fetch_many(self, es: _Entity, keys: Sequence[int]) -> dict[int, Record]:
        """Records by id, deleted ones included, in one list request (see readback.py)."""
        where = f"id IN ({','.join(str(k) for k in keys)})"
        return {int(r.id): r for r in await self._query(es, where, count=len(keys))
                if r.id.isdigit()}

    async def _query(self, es: _Entity, where: str, count: int | None = None) -> list[Record]:
        """Every record matching ``where``, page by page."""
        out: list[Record] = []
        page = 0
        while True:
            resp = await self._request("GET", es.path, {"where": where, "page": page},
                                       count=max(count or 0, self.settings.page_size))
            rows = resp.rows()
            out.extend(await self._records(es, rows, resp.request))
            nxt = resp.headers.get("X-FM-Next-Page")
            if not rows or not nxt or not nxt.isdigit() or int(nxt) <= page:
                return out
            page = int(nxt)

    async def _rows(self, path: str, where: str | None = None) -> list[dict]:
        rows: list[dict] = []
        page = 0
        while True:
            params: dict[str, Any] = {"page": page}
            if where:
                params["where"] = where
            resp = await self._request("GET", path, params, count=500)
            chunk = resp.rows()
            rows.extend(r for r in chunk if isinstance(r, dict) and _int_id(r) is not None)
            nxt = resp.headers.get("X-FM-Next-Page")
            if not chunk or not nxt or not nxt.isdigit() or int(nxt) <= page:
                return rows
            page = int(nxt)

    async def _load_users(self) -> dict[str, dict]:
        users = {str(_int_id(u)): u for u in await self._rows(f"{API}/users")}
        self._users, self._users_at = users, time.monotonic()
        return users

    async def _run_users(self) -> dict[str, dict]:
        """The run's users list: read on its first use in the run, then reused."""
        async with self._users_lock:
            if self._users is None:
                return await self._load_users()
            return self._users

    async def _users_cached(self) -> dict[str, dict]:
        """The run's users list for the accounts' sales rep names, read again once it is
        older than ``users_ttl``."""
        async with self._users_lock:
            if self._users is None \
                    or time.monotonic() - self._users_at > self.settings.users_ttl:
                return await self._load_users()
            return self._users

    async def _load_types(self) -> dict[str, int]:
        rows = await self._rows(f"{API}/accountTypes")
        live = [r for r in rows if not r.get("deleted") and isinstance(r.get("descriptionEN"), str)
                and r["descriptionEN"].strip()]
        self._types = {str(r["descriptionEN"]).strip().casefold(): _int_id(r) for r in live}
        self._type_names = [str(r["descriptionEN"]).strip() for r in live]
        self._types_reads += 1
        return self._types

    async def _run_types(self) -> dict[str, int]:
        """The run's account types: read on their first use in the run, then reused."""
        async with self._types_lock:
            if self._types is None:
                return await self._load_types()
            return self._types

    async def _types_since(self, reads: int) -> dict[str, int]:
        """The account types read after the ``reads``-th read: read again unless a
        concurrent caller already did."""
        async with self._types_lock:
            if self._types is None or self._types_reads == reads:
                return await self._load_types()
            return self._types

    async def _type_id(self, value: Any) -> int | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        wanted = str(value).strip().casefold()
        reads = self._types_reads
        types = await self._run_types()
        if wanted not in types and self._types_reads == reads and wanted not in self._missed:
            # a miss in a list read before this write: read it again, once (a type added in
            # the vendor since); a list this write just read is not read twice, and a name
            # that list still lacked is not read again for every record naming it this run
            types = await self._types_since(reads)
            if wanted not in types:
                self._missed.add(wanted)
        if wanted in types:
            return types[wanted]
        raise RecordError(f"{self.name}: {value!r} is not an account type of this Sage Sales "
                          "Management tenant", fields=("typeId.value",))

    async def _payload(self, es: _Entity, fields: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        refs: dict[str, Any] = {}
        for path, value in fields.items():
            if path in es.computed or path in READ_ONLY_FIELDS:
                continue
            head, dot, tail = path.partition(".")
            if dot and head in es.refs:
                if tail == "id":
                    refs.setdefault(head, ("id", value))
                elif tail == "value" and head == "typeId":
                    refs[head] = ("value", value)          # the name wins over an id
                continue                                   # other .value paths: not sent
            body[path] = value
        for head, (kind, value) in refs.items():
            if kind == "value":
                body[head] = await self._type_id(value)
            else:
                body[head] = None if value is None or value == "" \
                    else self._ref(f"{head}.id", value)
        return body

    @staticmethod
    def _ref(field: str, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        raise RecordError(f"{field} must be a Sage Sales Management record id, not {value!r}",
                          fields=(field,))

    async def _records(self, es: _Entity, rows: list, request: str) -> list[Record]:
        records = self.reader.page(rows, lambda row: self._record(es, row),
                                   lambda row: row.get("id"), request)
        readable = [r for r in records if not r.error]
        if es.name == "accounts" and readable:
            users = await self._users_cached()
            for r in readable:
                if "salesRepId.id" in r.fields:         # else unknown: left out
                    rep = r.fields["salesRepId.id"]
                    r.fields[SALES_REP_NAME] = _full_name(users[rep]) if rep in users else None
        if es.name == "contacts" and readable:
            wanted = sorted({int(r.fields["accountId.id"]) for r in readable
                             if str(r.fields.get("accountId.id") or "").isdigit()})
            types: dict[str, Any] = {}
            unknown: set[str] = set()       # accounts answered without their typeId
            if wanted:               # one batched request per page of contacts
                resp = await self._request(
                    "GET", self.entities["accounts"].path,
                    {"where": f"id IN ({', '.join(map(str, wanted))})", "page": 0},
                    count=len(wanted))
                for row in resp.rows():
                    rid = _int_id(row) if isinstance(row, dict) else None
                    if rid is None:
                        continue
                    if "typeId" not in row:
                        unknown.add(str(rid))
                        continue
                    t = row["typeId"]
                    types[str(rid)] = t.get("value") if isinstance(t, dict) else None
            for r in readable:
                if "accountId.id" in r.fields and r.fields["accountId.id"] not in unknown:
                    r.fields[ACCOUNT_TYPE] = types.get(r.fields["accountId.id"])
        return records

    def _record(self, es: _Entity, row: dict[str, Any]) -> Record:
        fields: dict[str, Any] = {}
        for key, value in row.items():
            if key == "id":
                continue
            if key in es.refs:
                # {"id", "value"}; a bare id carries no value (left out); null: no reference
                ref = value if isinstance(value, dict) else (
                    {"id": value} if value is not None else {"id": None, "value": None})
                if "id" in ref:
                    fields[f"{key}.id"] = None if ref["id"] is None else str(ref["id"])
                if "value" in ref:
                    fields[f"{key}.value"] = ref["value"]
            elif isinstance(value, dict):
                for sub, v in value.items():
                    fields[f"{key}.{sub}"] = v
            else:
                fields[key] = value
        modified = date_field(row, "dateUpdated", _parse_time) \
            or date_field(row, "dateCreated", _parse_time)
        return Record(id=str(row["id"]), fields=fields, modified=modified,
                      deleted=bool(row.get("deleted")))


def _int_id(row: dict) -> int | None:
    """A row's integer ``id`` (the API's ids are integers), or None."""
    value = row.get("id")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _implementation_of(token: str) -> str | None:
    """The ``ImplementationId`` a session key carries (see the module docstring), or None
    when the key does not have that shape. Only that id is kept, never the key."""
    try:
        outer = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        claims = outer.split(b"|")[1]
        inner = base64.urlsafe_b64decode(claims + b"=" * (-len(claims) % 4))
        payload = orjson.loads(inner[inner.index(b"{"):inner.rindex(b"}") + 1])
        value = payload.get("ImplementationId") if isinstance(payload, dict) else None
    except (ValueError, IndexError):    # binascii.Error and JSONDecodeError are ValueErrors
        return None
    return str(value) if value not in (None, "") else None


def _full_name(user: dict) -> str | None:
    name = " ".join(p for p in (user.get("firstName"), user.get("lastName")) if p)
    return name or None


def _format(dt: datetime) -> str:
    dt = utc(dt)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
