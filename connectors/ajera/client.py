"""Deltek Ajera through its API (one JSON endpoint, ``POST {base_url}/AjeraAPI.ashx?{api_id}``).

Entities (engine name -> Ajera methods, key):
- ``projects`` -> ``ListProjects``/``GetProjects``/``UpdateProjects`` (v2), ``ProjectKey``:
  ``ID``, ``Description``, ``Status``, ``SyncToCRM``, ``CreateInCRM``, ``CRMFinalSync``,
  ``Location``, ``ProjectManager.EmployeeKey|FirstName|MiddleName|LastName``, ``CompanyKey``,
  and, read only, ``Totals.SpentLabor|SpentExpense|Billed|Received`` from
  ``GetProjectTotals`` (one call per page; not on an update's read back).
- ``clients``, ``contacts``, ``employees`` -> ``List/Get/UpdateClients`` ... (v1).
- ``time``, ``expenses``, ``invoices``, ``receipts`` (read only) -> ``ListProjectTransactions``
  with ``FilterByTransactionType``: ``ProjectKey`` (the project's id), ``Date``, ``Amount``,
  ``Status`` (an invoice is ``Final`` once finalised).

Sessions: one per API version (Ajera refuses one session for both), created on first use and
again when Ajera answers that it expired; ``close()`` ends them (``EndAPISession``).
Answers are the envelope ``{ResponseCode, Message, Errors, Content}``; a failure arrives as
HTTP 200 with a non-200 ``ResponseCode``, so that code, not HTTP's, decides: 401 on
``CreateAPISession`` is AuthError, 409 (the baseline no longer holds) ConflictError, 5xx
UnavailableError for a read and OutcomeUnknownError for an ``Update*``, any other a
RecordError carrying Ajera's ``Errors``. Every request is a POST: reads are sent as
idempotent (retried after a fault), ``Update*`` never again after a fault that may follow its
arrival.

Changes: ``List*`` with ``FilterByEarliestModifiedDate`` (closed bound, written in UTC in
Ajera's filter form), paged (``PageResults``), gives the keys and their ``LastModifiedDate``;
they are sorted by (date, key) and read with ``Get*`` in pages of ``page_size``, so ``changes``
yields in that order (``ordered``: a ``batch_size`` can stop after any record). A record's
``modified`` is the date the listing gave: one edited between the listing and the ``Get`` keeps
its place in the order and is read again next run, its new date being later. The keys of one
listing are held in memory (a few dozen bytes each). Dates are parsed from Ajera's non-ISO
form with its zone (``wire.py``).

Writes: ``Update*`` needs the changed fields **and** the unchanged baseline; the connector
reads the record (``Get*``), refuses with ConflictError when its ``LastModifiedDate`` is no
longer the ``version`` the engine decided on (``conditional_writes``), sends the change with
that baseline (Ajera refuses it with 409 if the record changes in between), and reads the
record back. A create is an ``Update*`` with the negative key -1; the answer's new key is
read back. Ajera has no delete through the API (``Status`` says inactive or closed):
``delete`` is refused.

Requests, and why the count is what it is: a change listing is one ``List*`` request per page of
``list_page_size`` keys (default 1,000; Ajera documents no maximum), then one ``Get*`` request per
``page_size`` keys (default 100, at most 1,000 here): ``Get*`` takes many keys at once, so no
record is read on its own. Projects add one ``GetProjectTotals`` per ``Get*`` (it takes the same
keys; ``GetProjects`` carries no totals); the transaction entities are the listing alone (its rows
are the records). An idle run is one ``List*`` per entity. ``count()`` is one ``List*`` asked for
in pages of one row: the answer's ``PageCount`` is the number of rows, so a backlog costs one
request of one row, not the listing again. ``get`` is one ``Get*`` (projects: and its
``GetProjectTotals``) per ``page_size`` ids, which is ``capabilities.max_get``. ``find`` by a
field Ajera filters on (projects' ``Description`` and ``ID``, clients' ``Description``) is one
filtered ``List*`` per value and the reads of what it lists; several values cost one request
more, the first page of the whole listing, which becomes a whole read when the filters would
not be cheaper. By any other field (no documented filter: contacts' and employees' ``Email``) it
lists and reads the whole entity, as a first ``changes`` does, and compares here. A create is
``Update*`` and a ``Get*`` of the new key, two requests (a project, three: the engine keeps the
whole created record as its base, totals included); an update, ``Get*`` for the baseline,
``Update*`` and ``Get*`` again, three, a project too: the engine takes from an update's answer
only the fields it wrote, and the totals are read only, so that read back leaves
``GetProjectTotals`` out (unless ``Totals`` fields were given). The read back is needed: Ajera's
answer carries keys only, not the new ``LastModifiedDate``. ``Update*`` takes many records, but the
engine writes one a call. Sessions cost one ``CreateAPISession`` per API version (1: clients,
contacts, employees, transactions; 2: projects), kept across runs; one found expired makes a call
three requests (refused, new session, again); ``close()`` sends one ``EndAPISession`` per session.
``check()`` ends the version 1 session an earlier run kept (``EndAPISession``, so sessions do not
pile up on the server) and starts a new one: that request proves the credentials and gives
``identity()`` its ``DatabaseID`` and ``clock()`` its ``Date``. There are no ``options(...)`` lists
(none is read). Pacing: ``requests_per_second``, default 9 in any second; Ajera publishes no limit,
but the typed client sbo-inc/ajera notes that "the API throttles at roughly 9 requests per second".

``clock()``: the ``Date`` header of the latest answer. ``identity()``: ``ajera:<DatabaseName>/
<DatabaseID>`` from the id blob and the session (``DatabaseID`` when Ajera gives one).
"""
from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Sequence

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.ajera.wire import error_text, format_date, parse_date
from connectors.base import (AuthError, Capabilities, ConflictError, ConnectorError,
                             EntityInfo, NotFoundError, OutcomeUnknownError, Record,
                             RecordError, UnavailableError, flatten, unflatten)
from connectors.http import HttpClient, SlidingWindowLimiter

PATH = "/AjeraAPI.ashx"
RECORDS = {"projects": ("Projects", "ProjectKey", 2), "clients": ("Clients", "ClientKey", 1),
           "contacts": ("Contacts", "ContactKey", 1),
           "employees": ("Employees", "EmployeeKey", 1)}
TRANSACTIONS = {"time": "Time", "expenses": "Expense", "invoices": "Invoice",
                "receipts": "Receipt"}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
TOTALS = ("SpentLabor", "SpentExpense", "Billed", "Received")
# the List filters Ajera documents that answer find(entity, field): one value each
FILTERS = {("projects", "Description"): "FilterByDescriptionEquals",
           ("projects", "ID"): "FilterByIDLike",
           ("clients", "Description"): "FilterByNameEquals"}


class AjeraConnector:
    """Projects, clients, contacts, employees and project transactions of one Ajera database."""

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        base_url: str = "https://ajera.com/V000000"     # the API URL before /AjeraAPI.ashx
        api_id: str                # the ``?...`` part of the API URL (Setup Integrations)
        username: str
        password: SecretStr
        page_size: int = Field(100, ge=1, le=1000)       # records per Get* call
        list_page_size: int = Field(1000, ge=1)          # keys per List* page
        requests_per_second: float = Field(9.0, gt=0)    # Ajera throttles at about 9/s
        timeout: float = Field(30.0, gt=0)
        attempts: int = Field(5, ge=1)
        max_wait: float = Field(30.0, ge=0)

    def __init__(self, name: str, settings: "AjeraConnector.Settings") -> None:
        self.name = name
        self.settings = settings
        records = {e: EntityInfo(e, incremental=True, ordered=True, can_delete=False)
                   for e in RECORDS}
        reads = {e: EntityInfo(e, incremental=True, ordered=True, can_create=False,
                               can_update=False, can_delete=False) for e in TRANSACTIONS}
        self.capabilities = Capabilities(entities={**records, **reads},
                                         max_get=settings.page_size,
                                         requests_per_second=settings.requests_per_second,
                                         conditional_writes=True)
        per_second = settings.requests_per_second
        self.http = HttpClient(settings.base_url, system=name, timeout=settings.timeout,
                               attempts=settings.attempts, max_wait=settings.max_wait,
                               headers={"Accept": "application/json"},
                               limiter=SlidingWindowLimiter(max(1, round(per_second)),
                                                            max(1, round(per_second))
                                                            / per_second))
        self._sessions: dict[int, str] = {}
        self._database_id: str | None = None

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        for version, token in list(self._sessions.items()):
            try:
                await self._post({"Method": "EndAPISession", "SessionToken": token}, read=True)
            except ConnectorError:
                pass
        self._sessions.clear()
        await self.http.close()

    async def check(self) -> None:
        """A run starts with a new version 1 session, which proves the credentials; the one
        an earlier run kept is ended first, so sessions do not pile up on the server."""
        old = self._sessions.pop(1, None)
        if old is not None:
            try:
                await self._post({"Method": "EndAPISession", "SessionToken": old}, read=True)
            except ConnectorError:
                pass                    # gone already, or Ajera down: the new session says
        await self._session(1)

    async def clock(self) -> datetime | None:
        if self.http.server_time() is None:
            try:
                await self._session(1)
            except ConnectorError:
                pass
        return self.http.server_time()

    async def identity(self) -> str | None:
        await self._session(1)
        return f"ajera:{self._database_name()}/{self._database_id or '-'}"

    async def options(self, name: str) -> Any:
        raise KeyError(name)

    # --- reading -------------------------------------------------------------------------
    async def changes(self, entity: str, since: datetime | None) -> AsyncIterator[list[Record]]:
        args = {"FilterByEarliestModifiedDate": format_date(since)} if since else {}
        if entity in TRANSACTIONS:
            rows = await self._list("ListProjectTransactions", "Transactions", 1,
                                    {**args, "FilterByTransactionType": [TRANSACTIONS[entity]]})
            records = sorted((self._transaction(r) for r in rows),
                             key=lambda r: (r.modified or _EPOCH, int(r.id)))
            for i in range(0, len(records), self.settings.page_size):
                yield records[i:i + self.settings.page_size]
            return
        noun, _, version = self._kind(entity)
        async for page in self._read(entity, await self._list(f"List{noun}", noun, version,
                                                               args)):
            yield page

    async def _read(self, entity: str, listed: list[dict]) -> AsyncIterator[list[Record]]:
        """The records of listed rows, read by ``Get*`` in pages of ``page_size``, in
        (``LastModifiedDate``, key) order; ``modified`` is the date the listing gave."""
        _, key, _ = self._kind(entity)
        order = sorted(((_date(r.get("LastModifiedDate")), r[key]) for r in listed),
                       key=lambda p: (p[0] or _EPOCH, p[1]))
        for i in range(0, len(order), self.settings.page_size):
            part = order[i:i + self.settings.page_size]
            got = {int(r.id): r for r in await self._get(entity, [k for _, k in part])}
            page = []
            for when, k in part:
                record = got.get(k)
                if record is not None:              # gone since it was listed
                    record.modified = when
                    page.append(record)
            if page:
                yield page

    async def count(self, entity: str, since: datetime | None) -> int:
        """How many records ``changes`` would yield: its listing alone (a batch's backlog),
        asked for in pages of one row, so that one answer's ``PageCount`` is the number of
        rows (one request, one row), not the listing repeated."""
        args = {"FilterByEarliestModifiedDate": format_date(since)} if since else {}
        if entity in TRANSACTIONS:
            method, noun, version = "ListProjectTransactions", "Transactions", 1
            args["FilterByTransactionType"] = [TRANSACTIONS[entity]]
        else:
            noun, _, version = self._kind(entity)
            method = f"List{noun}"
        rows, pages = await self._page(method, noun, version, args, 1, 1)
        if len(rows) == 1:
            return pages
        if pages <= 1:                  # none, or an answer that held them all
            return len(rows)
        return len(await self._list(method, noun, version, args))    # PageSize 1 not kept

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        if entity in TRANSACTIONS:
            raise KeyError(f"{self.name}: {entity} are read by changes() only")
        keys = [int(i) for i in dict.fromkeys(str(i) for i in ids) if _is_key(i)]
        out: list[Record] = []
        for i in range(0, len(keys), self.settings.page_size):
            out.extend(await self._get(entity, keys[i:i + self.settings.page_size]))
        return out

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        """Records whose ``field`` folds (case, white space) to one of ``values``, compared
        here. Ajera documents a List filter, of one value, for three such fields: projects'
        ``Description`` (``FilterByDescriptionEquals``) and ``ID`` (``FilterByIDLike``, a LIKE
        match: more rows, never fewer) and clients' ``Description``, their name
        (``FilterByNameEquals``). These are listed once per value and only the rows listed
        are read (``Get*``): at once for one value (never dearer than reading everything);
        for several, the first page of the whole listing tells the entity's size
        (``PageCount``) and serves a whole read instead when the filters would cost as many
        requests. An equals filter compares whole values as stored: a name stored with
        doubled or stray white space is found by a whole read only. Other fields (contacts'
        and employees' ``Email`` among them) and the transactions have no documented filter:
        the whole entity is listed and read, as a first ``changes`` does."""
        wanted = {_fold(v) for v in values if v is not None}
        argument = FILTERS.get((entity, field))
        if argument is None:
            out = []
            async for page in self.changes(entity, None):
                out.extend(r for r in page if _fold(r.fields.get(field)) in wanted)
            return out
        noun, key, version = self._kind(entity)
        method = f"List{noun}"
        # sent with its white space folded; a value that is no text, or blank, names no
        # record (these fields are text, never blank)
        terms = list(dict.fromkeys(" ".join(v.split()) for v in values
                                   if isinstance(v, str) and v.strip()))
        listed: list[dict] = []
        if len(terms) > 1:
            rows, pages = await self._page(method, noun, version, {}, 1,
                                           self.settings.list_page_size)
            size = len(rows) if pages <= 1 else (pages - 1) * self.settings.list_page_size + 1
            if len(terms) + self._reads(entity, len(terms)) >= \
                    pages - 1 + self._reads(entity, size):    # what the rest would cost
                if pages > 1:
                    rows += await self._list(method, noun, version, {}, start=2)
                listed, terms = rows, []
        seen: set[int] = set()
        for term in terms:
            for row in await self._list(method, noun, version, {argument: term}):
                if row[key] not in seen:
                    seen.add(row[key])
                    listed.append(row)
        return [r async for page in self._read(entity, listed) for r in page
                if _fold(r.fields.get(field)) in wanted]

    def _reads(self, entity: str, n: int) -> int:
        """The requests that read ``n`` listed records: a ``Get*`` per ``page_size``, and
        for projects their ``GetProjectTotals``."""
        gets = -(-n // self.settings.page_size)
        return 2 * gets if entity == "projects" else gets

    # --- writing -------------------------------------------------------------------------
    async def create(self, entity: str, fields: dict[str, Any]) -> Record:
        noun, key, version = self._kind(entity)
        content = await self._write(noun, version, [{key: -1, **self._payload(fields)}], [])
        new = next((r.get(key) for r in content.get(noun) or []
                    if r.get(f"Original{key}") == -1), None)
        if new is None:
            raise RecordError(f"{self.name}: Ajera created no {entity[:-1]} (no new key)")
        return await self._one(entity, new)

    async def update(self, entity: str, id: str, fields: dict[str, Any],
                     version: str | None = None) -> Record:
        noun, key, api = self._kind(entity)
        if not _is_key(id):
            raise NotFoundError(f"{self.name}: {entity} has no record {id!r}", status=404)
        bundle = await self._call(f"Get{noun}", api, {f"Requested{noun}": [int(id)]})
        current = [r for r in bundle.get(noun) or [] if r.get(key) == int(id)]
        if not current:
            raise NotFoundError(f"{self.name}: {entity} {id} does not exist", status=404)
        if version is not None and current[0].get("LastModifiedDate") != version:
            raise ConflictError(f"{self.name}: {entity} {id} changed since it was read "
                                f"(now {current[0].get('LastModifiedDate')})", status=409)
        baseline: Any = current
        if noun == "Projects":                   # v2: the complete GetProjects bundle
            baseline = {**bundle, "Projects": current}
        await self._write(noun, api, [{key: int(id), **self._payload(fields)}], baseline)
        # an update's answer serves for the fields written: the totals (read only, never
        # sent) are left out of its read back unless asked for
        return await self._one(entity, int(id),
                               with_totals=any(k.startswith("Totals.") for k in fields))

    async def delete(self, entity: str, id: str) -> None:
        raise RecordError(f"{self.name}: Ajera deletes nothing through its API; set the "
                          f"{entity[:-1]}'s Status instead")

    # --- helpers -------------------------------------------------------------------------
    def _kind(self, entity: str) -> tuple[str, str, int]:
        try:
            return RECORDS[entity]
        except KeyError:
            raise KeyError(f"{self.name}: unknown entity {entity!r} (known: "
                           f"{', '.join([*RECORDS, *TRANSACTIONS])})") from None

    def _database_name(self) -> str:
        try:
            raw = base64.b64decode(self.settings.api_id + "===")
            return str(orjson.loads(raw).get("DatabaseName") or "?")
        except (binascii.Error, ValueError, orjson.JSONDecodeError, AttributeError):
            return "?"

    async def _one(self, entity: str, key: int, *, with_totals: bool = True) -> Record:
        found = await self._get(entity, [key], with_totals=with_totals)
        if not found:
            raise NotFoundError(f"{self.name}: {entity} {key} is not there after the write")
        return found[0]

    async def _get(self, entity: str, keys: list[int], *, with_totals: bool = True
                   ) -> list[Record]:
        noun, key, version = self._kind(entity)
        if not keys:
            return []
        content = await self._call(f"Get{noun}", version, {f"Requested{noun}": keys})
        rows = content.get(noun) or []
        totals: dict[int, dict] = {}
        if entity == "projects" and rows and with_totals:
            got = await self._call("GetProjectTotals", 2, {"RequestedProjects": keys})
            totals = {t.get("ProjectKey"): t for t in got.get("ProjectTotals") or []}
        out = []
        for row in rows:
            row = dict(row)
            if entity == "projects" and row.get(key) in totals:
                row["Totals"] = {k: totals[row[key]].get(k) for k in TOTALS}
            out.append(self._record(key, row))
        return out

    def _record(self, key: str, row: dict) -> Record:
        stamp = row.pop("LastModifiedDate", None)
        fields = flatten(row)
        if isinstance(row.get(key), int):
            fields[key] = str(row[key])
        return Record(id=str(row.get(key)), fields=fields, modified=_date(stamp),
                      version=stamp)

    def _transaction(self, row: dict) -> Record:
        fields = dict(row)
        fields["ProjectKey"] = str(row.get("ProjectKey"))
        return Record(id=str(row.get("TransactionKey")), fields=fields,
                      modified=_date(fields.pop("LastModifiedDate", None)))

    def _payload(self, fields: dict[str, Any]) -> dict[str, Any]:
        body = unflatten({k: v for k, v in fields.items()
                          if not k.startswith("Totals.") and k != "LastModifiedDate"})
        for _, key, _ in RECORDS.values():
            body.pop(key, None)
        manager = body.get("ProjectManager")
        if isinstance(manager, dict) and isinstance(manager.get("EmployeeKey"), str) \
                and manager["EmployeeKey"].isdigit():
            manager["EmployeeKey"] = int(manager["EmployeeKey"])
        return body

    async def _list(self, method: str, noun: str, version: int, args: dict, *,
                    start: int = 1) -> list[dict]:
        """Every row of a listing, page by page (from page ``start``)."""
        rows: list[dict] = []
        number = start
        while True:
            got, count = await self._page(method, noun, version, args, number,
                                          self.settings.list_page_size)
            rows.extend(got)
            if number >= count:
                return rows
            number += 1

    async def _page(self, method: str, noun: str, version: int, args: dict, number: int,
                    size: int) -> tuple[list[dict], int]:
        """One page of a listing, and its ``PageCount`` (1 when Ajera gives none)."""
        content, paging = await self._call(
            method, version, args, paging={"PageResults": True, "PageNumber": number,
                                           "PageSize": size})
        return content.get(noun) or [], int(paging.get("PageCount") or 1)

    async def _write(self, noun: str, version: int, updated: list, unchanged: Any) -> dict:
        return await self._call(f"Update{noun}", version, {}, write={
            f"Updated{noun}": updated, f"Unchanged{noun}": unchanged})

    async def _session(self, version: int) -> str:
        token = self._sessions.get(version)
        if token:
            return token
        settings = self.settings
        body = await self._post({"Method": "CreateAPISession", "Username": settings.username,
                                 "Password": settings.password.get_secret_value(),
                                 "APIVersion": version, "UseSessionCookie": False}, read=True)
        if body.get("ResponseCode") == 401:
            raise AuthError(f"{self.name}: Ajera refused the API user {settings.username!r} "
                            f"({error_text(body)}); check Setup > Integrations > API "
                            "Settings", status=401)
        content = self._content(body, "CreateAPISession", read=True)
        token = content.get("SessionToken") if isinstance(content, dict) else None
        if not token:
            raise UnavailableError(f"{self.name}: Ajera answered CreateAPISession without a "
                                   "SessionToken")
        self._database_id = content.get("DatabaseID") or self._database_id
        self._sessions[version] = token
        return token

    async def _call(self, method: str, version: int, args: dict, *, paging: dict | None = None,
                    write: dict | None = None):
        for attempt in range(2):
            token = await self._session(version)
            body = {"Method": method, "SessionToken": token, "MethodArguments": args,
                    **(paging or {}), **(write or {})}
            answer = await self._post(body, read=write is None)
            if answer.get("ResponseCode") == 401 and attempt == 0:
                self._sessions.pop(version, None)      # expired: a new session, once
                continue
            content = self._content(answer, method, read=write is None)
            if paging is not None:
                return content, {k: answer.get(k) for k in ("PageSize", "PageNumber",
                                                             "PageCount")}
            return content
        raise AuthError(f"{self.name}: Ajera refused a new session for {method}", status=401)

    async def _post(self, body: dict, *, read: bool) -> dict:
        response = await self.http.request("POST", PATH, json=body, query=self.settings.api_id,
                                           idempotent=read)
        if not isinstance(response.body, dict) or "ResponseCode" not in response.body:
            raise UnavailableError(f"{self.name}: Ajera answered {body.get('Method')} without "
                                   "its envelope")
        return response.body

    def _content(self, answer: dict, method: str, *, read: bool) -> Any:
        code = answer.get("ResponseCode")
        if code == 200:
            content = answer.get("Content")
            return content if content is not None else {}
        text = f"{self.name}: {method}: {error_text(answer)}"
        if code == 401:
            raise AuthError(text, status=401)
        if code == 409:
            raise ConflictError(text, status=409)
        if code == 404:
            raise NotFoundError(text, status=404)
        if isinstance(code, int) and code >= 500:
            if read:
                raise UnavailableError(text, status=code)
            raise OutcomeUnknownError(f"{text} (outcome unknown: not sent again)", status=code)
        raise RecordError(text, status=code if isinstance(code, int) else None)


def _date(text: Any) -> datetime | None:
    """A date Ajera wrote; one it wrote in a form not known here is no date (the record is
    then read again each run rather than dropped)."""
    try:
        return parse_date(text)
    except ValueError:
        return None


def _is_key(value: Any) -> bool:
    return str(value).lstrip("-").isdigit() and int(str(value)) > 0


def _fold(value: Any) -> Any:
    return " ".join(value.split()).casefold() if isinstance(value, str) else value
