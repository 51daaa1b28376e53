"""Tryton (trytond 8.2) through its JSON-RPC API.

Log in with ``common.db.login`` (``[login, {"password": ...}]`` -> ``[uid, key]``), then send
``Authorization: Session base64(login:uid:key)`` with every ``model.<model>.<method>`` call,
POSTed to ``/<database>/rpc/`` as ``{"id", "method", "params"}``. The last parameter of every
model call is the context: the user's preferences (``res.user.get_preferences``: company,
language...) plus ``active_test = False`` so archived records are read too. A refused session
(HTTP 401/403) logs in again once; a second refusal is an AuthError. Application errors come
back as HTTP 200 with an ``error`` member and become RecordError with Tryton's message.

Entities (engine name -> Tryton model):

- ``parties`` -> ``party.party``: ``name``, ``code`` (Tryton's customer code, from its
  sequence when not given), ``active`` (False: archived), ``email``, ``phone``, ``mobile``,
  ``fax``, ``website`` (the first contact mechanism of that type, by sequence; writing one
  updates it, creates it, or with an empty value deletes it), and the invoicing address
  (the first address marked *Invoice*, else the first address): ``invoice_address.street``
  (the whole street, lines joined by newlines), ``invoice_address.street1`` /
  ``invoice_address.street2`` (its first line / the rest), ``invoice_address.postal_code``,
  ``invoice_address.city``, ``invoice_address.country`` (the country's name; written by name
  or ISO code). Writing an address field of a party without one creates an invoicing address.
- ``contacts`` -> ``party.contact_mechanism`` of type ``email``: a person's e-mail on a party
  (how a small firm keeps "who to write to" at a customer): ``email`` (the value), ``name``
  (the person's name), ``first_name`` / ``last_name`` (the name split at its last space;
  written back joined), ``party`` (the party's id), ``active``.
- ``products`` -> ``product.product`` (read only): ``code``, ``name``, ``active``, ``type``,
  ``list_price`` (Decimal), ``uom``.
- ``invoices`` -> ``account.invoice`` of type ``out`` (customer invoices, read only):
  ``number``, ``reference``, ``description``, ``party`` (party id), ``invoice_date`` (date),
  ``state``, ``currency`` (code), ``untaxed_amount``, ``tax_amount``, ``total_amount``
  (Decimal).

Changes: ``search_read`` ordered by (``last_modified_at``, ``id``) with keyset paging: the
first page takes ``last_modified_at >= since``, each next one
``last_modified_at > T or (last_modified_at = T and id > K)`` for the last record (T, K)
read, so a record edited while pages are read moves past the cursor and is read again later.
A party also counts as changed when one of its addresses or contact mechanisms changed
(``addresses.last_modified_at >= since``); its ``modified`` is then the latest of the three.
Deletes: Tryton logs every delete made through the API in ``ir.model.log`` (event
``delete``). Reading a log's ``resource`` gives nothing once the record is gone, so the ids
are found by searching the logs with candidate ids (the ids missing from the model, in
halving groups): a few requests per deleted record, one ``search_count`` when nothing was
deleted. Deleted records come back as tombstones; archived ones (``active`` False) as
ordinary records (a preset treats them with ``soft_delete``).

Requests, and why the count is what it is (JSON-RPC calls, one HTTP ``POST`` each): a change
listing is one ``search_read`` per page of ``page_size`` records (200 by default, at most
5,000), the many2one names (``currency.code``, ``default_uom.name``) read in the same call; a
page of parties costs two more, one ``search_read`` of ``party.address`` and one of
``party.contact_mechanism`` for all of its parties (``party in ids``), since its fields and
their stamps live on those records; with a ``since``, the delete search above follows. ``get``
reads up to ``page_size`` ids (``max_get``) in one ``search_read``, ``find`` all the values in
one ``OR`` domain; parties again cost the two more. Every write is one ``create``, ``write``
(none when nothing differs) or ``delete`` call, and a create or update then reads the record
back with ``get`` (its new stamps, Tryton's computed ``code``): a party create is four calls; a
party update seven (a ``search`` that the party exists, its addresses and mechanisms as they
are now, the ``write``, the read-back); a contact create three (a ``search`` that its party
exists, the ``create``, the read-back), a contact update three (the contact as it is now, the
``write``, the read-back; four when it moves to another party): the first read is needed, as
Tryton's ``write`` takes no domain (the read is what refuses an id that is not an e-mail
mechanism) and ``first_name`` or ``last_name`` alone is joined with the other half as it is
now. The engine says which records a chunk updates (``will_update``): two or more parties
are checked and their addresses and mechanisms read in three calls for them all (``id in``,
``party in``), two or more contacts in one ``search_read``, each kept for its one update in
that chunk and for ``connectors/kept.py``'s ``MAX_AGE`` at most, so k party updates cost
4k + 3 calls and k contact updates 2k + 1; a record the read did not find is read on its own
by its update, as above (a party that does not exist is refused there). A country written by
name costs one ``country.country`` look-up; a delete is two (a
``search`` that the record exists, then ``delete``). ``check()`` is two calls, the login (which
proves the password) and ``res.user.get_preferences`` (the context every call carries, with the
user's company). ``identity()`` and ``options("account")`` share one ``company.company``
``search_read`` per run: the first of them reads every company (name, currency,
``create_date``) and the other uses it until the next ``check()``, which starts a run and
forgets it. ``options("countries")`` is one ``search_read`` each time it is asked (the engine
asks once per run). A ``UserError`` costs one ``ir.model.access.get_access`` to tell a missing
permission from a validation error. There is no quota: the connector keeps none (no limiter, no
``requests_per_second``); trytond limits only failed logins.

Versions: every record read (``changes``, ``get``, ``find``, and the one a write returns)
carries in ``version`` the ``_timestamp`` of each Tryton record its fields came from: the
party, the contact mechanism behind each of ``email``/``phone``/..., the invoicing address
(``stamps.py``). A mechanism's or an address's edit does not move the party's stamp, so the
party's alone would not protect them.

Writes: ``update(..., version=v)`` (``conditional_writes``) is one ``party.party.write`` with
nested ``contact_mechanisms`` / ``addresses`` actions, so it is one Tryton transaction: a
refusal leaves no half-write (one call per model would commit the party before a mechanism's
stamp is found stale). Its context carries ``_timestamp`` for exactly the records it writes,
each with its stamp from ``v`` (never fetched again before writing: a stamp read just before
the write would only cover the milliseconds in between): the party's when ``name``,
``code`` or ``active`` are written (an update of its phone alone does not refuse a rename made
meanwhile: the rename is not overwritten), each mechanism's own when its value is written or
cleared, the address's when it is written. A record changed since is refused by Tryton
(``ConcurrencyException``, HTTP 200 with an ``error`` member), which becomes ConflictError
naming the records, and nothing was written. A mechanism or an address to create has no
stamp to check: the party's mechanisms and addresses are read again within the update first,
and one that was added, removed, archived or replaced since ``v`` (the first phone is no
longer the one ``v`` names) is a ConflictError too, never a second phone. Without a version
the write carries no ``_timestamp`` at all: a stamp fetched just before writing would be a
lock that covers almost nothing, and no lock is better than a fake one. Every write returns
the record read back, with its new version. Contacts are written the same way with their own
stamp.

Permissions: Tryton refuses a model the user may not use with an ``AccessError``, a
``UserError`` on the wire; when ``ir.model.access.get_access`` confirms it (or, for the
delete log, the user's ``administrator`` preference is off) it becomes one AuthError line
naming the model, the permission and what grants it in trytond 8.2 (``access.py``), and the
run stops instead of failing record by record.

``clock()`` is the ``Date`` header of trytond's latest answer (its web server's clock, to the
second; ``common.server.version``, which needs no login, is asked when nothing was answered
yet). Tryton has no
call that returns the time: ``ir.date.today`` is a date, and reading a touched record's
``write_date`` would cost a write. ``identity()`` is the database name, the user's company
and that company's ``create_date`` (stable, and different for another database of the same
name); Tryton exposes no database uuid.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, AsyncIterator, Collection, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import (AuthError, Capabilities, ConflictError, ConnectorError,
                             EntityInfo, NotFoundError, Record, RecordError, UnavailableError,
                             utc)
from connectors.http import HttpClient
from connectors.kept import Kept
from connectors.tryton import access
from connectors.tryton.stamps import Stamps, VersionError, loads
from connectors.tryton.wire import decode, encode, error_message

MECHANISMS = ("email", "phone", "mobile", "fax", "website")
ADDRESS = "invoice_address."
MAX_PROBE_CHUNKS = 200             # ids above the highest one left: 100,000 at most
ADDRESS_FIELDS = ("street", "street1", "street2", "postal_code", "city", "country")
PARTY_OWN = ("name", "code", "active")     # fields of the party.party record itself


class _UserError(RecordError):
    """Tryton's ``UserError``: a validation error, or an AccessError (see ``access.py``)."""


@dataclass(frozen=True)
class _Model:
    name: str                      # Tryton model
    read: tuple[str, ...]          # fields read with search_read
    domain: tuple = ()             # always ANDed (e.g. customer invoices only)
    writable: bool = False
    refs: tuple[str, ...] = ()     # many2one ids exposed as strings
    rename: dict[str, str] = field(default_factory=dict)   # Tryton "x.y" -> engine name


MODELS = {
    "parties": _Model("party.party", ("name", "code", "active", "last_modified_at"),
                      writable=True),
    "contacts": _Model("party.contact_mechanism",
                       ("name", "value", "party", "active", "last_modified_at"),
                       domain=(("type", "=", "email"),), writable=True, refs=("party",)),
    "products": _Model("product.product",
                       ("code", "name", "active", "type", "list_price_used", "default_uom.name",
                        "last_modified_at"),
                       rename={"default_uom.name": "uom", "list_price_used": "list_price"}),
    "invoices": _Model("account.invoice",
                       ("number", "reference", "description", "party", "invoice_date",
                        "state", "currency.code", "untaxed_amount", "tax_amount",
                        "total_amount", "last_modified_at"),
                       domain=(("type", "=", "out"),), refs=("party",),
                       rename={"currency.code": "currency"}),
}


class TrytonConnector:
    """Parties, products and customer invoices of one Tryton database (module docstring)."""

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        base_url: str                              # e.g. https://erp.example.com:8000
        database: str
        login: str = "admin"
        password: SecretStr
        page_size: int = Field(200, ge=1, le=5000)
        timeout: float = Field(60.0, gt=0)
        attempts: int = Field(5, ge=1)
        max_wait: float = Field(30.0, ge=0)
        context: dict[str, Any] = Field(default_factory=dict)   # extra Tryton context

    def __init__(self, name: str, settings: "TrytonConnector.Settings | dict") -> None:
        if not isinstance(settings, TrytonConnector.Settings):
            settings = TrytonConnector.Settings.model_validate(settings)
        self.name = name
        self.settings = settings
        ro = dict(can_create=False, can_update=False, can_delete=False)
        self.capabilities = Capabilities(
            entities={
                "parties": EntityInfo("parties", incremental=True, ordered=True,
                                      reports_deletes=True),
                "contacts": EntityInfo("contacts", incremental=True, ordered=True,
                                       reports_deletes=True),
                "products": EntityInfo("products", reports_deletes=True, **ro),
                "invoices": EntityInfo("invoices", reports_deletes=True, **ro)},
            max_get=settings.page_size, conditional_writes=True)
        self.http = HttpClient(settings.base_url, system=name, auth=self._auth,
                               timeout=settings.timeout, attempts=settings.attempts,
                               max_wait=settings.max_wait,
                               headers={"Accept": "application/json"})
        self._session: str | None = None
        self._context: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._login_lock = asyncio.Lock()
        self._server_date: datetime | None = None      # the Date of trytond's latest answer
        self._companies: list[dict] | None = None      # company.company, read once per run
        self.ahead: Kept[Any] = Kept()      # records read for the chunk's updates, by id
        self.logins = 0

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()

    async def check(self) -> None:
        """A run starts here: log in again (proving the password) and forget what the last
        run kept (the ``company.company`` read that ``identity()`` and ``options("account")``
        share)."""
        self._session = None
        self._companies = None
        self.ahead.clear()
        await self._login()

    async def _company_list(self) -> list[dict]:
        """Every company (``party.name``, ``currency.code``, ``create_date``): one
        ``search_read``, kept until the next ``check()`` for ``identity()`` and
        ``options("account")``."""
        if self._companies is None:
            self._companies = await self.call(
                "company.company", "search_read", [], 0, None, [["id", "ASC"]],
                ["party.name", "currency.code", "create_date"])
        return self._companies

    # --- the RPC layer -------------------------------------------------------------------
    def _auth(self, method: str, query: str, headers: dict[str, str]) -> None:
        if self._session:
            headers["Authorization"] = f"Session {self._session}"

    @property
    def _path(self) -> str:
        return f"/{self.settings.database}/rpc/"

    async def _post(self, method: str, params: list, path: str | None = None) -> Any:
        """One JSON-RPC call; application errors are RecordError with Tryton's message.
        JSON-RPC sends reads as POSTs too: those are retried on a transient fault; a write
        (create, write, delete) whose answer is lost is never sent again."""
        writes = method.rsplit(".", 1)[-1] in {"create", "write", "delete"}
        response = await self.http.request("POST", path or self._path, json={
            "id": next(self._ids), "method": method, "params": encode(params)},
            idempotent=not writes)
        self._server_date = _http_date(response.headers.get("Date")) or self._server_date
        body = response.body
        if not isinstance(body, dict):
            raise UnavailableError(f"{self.name}: {method}: not a JSON-RPC answer")
        if body.get("error") is not None:
            kind, message = error_message(body["error"])
            if kind in ("TimeoutException",):
                raise UnavailableError(f"{self.name}: {method}: {message}")
            if kind == "ConcurrencyException":
                raise ConflictError(f"{self.name}: {message}", status=409)
            if kind == "UserError":
                raise _UserError(f"{self.name}: {message}")
            raise RecordError(f"{self.name}: {message}")
        return decode(body.get("result"))

    async def _login(self) -> None:
        s = self.settings
        self._session = None
        try:
            result = await self._post("common.db.login",
                                      [s.login, {"password": s.password.get_secret_value()}])
        except AuthError as exc:
            raise AuthError(f"{self.name}: Tryton refused the login {s.login!r} on database "
                            f"{s.database!r} (HTTP {exc.status}); check login and password",
                            status=exc.status) from None
        except NotFoundError:
            raise UnavailableError(f"{self.name}: Tryton has no database "
                                   f"{s.database!r}") from None
        except RecordError as exc:
            raise AuthError(f"{self.name}: Tryton refused the login: {exc.message}") from None
        if not isinstance(result, list) or len(result) < 2:
            raise AuthError(f"{self.name}: Tryton refused the login {s.login!r}")
        uid, key = result[0], result[1]
        self._session = base64.b64encode(f"{s.login}:{uid}:{key}".encode()).decode()
        self.logins += 1
        prefs = await self._post("model.res.user.get_preferences", [True, {}])
        context = dict(prefs or {}) if isinstance(prefs, dict) else {}
        context.update(s.context)
        context["active_test"] = False
        self._context = context

    async def _logged_in(self) -> None:
        if self._session is None:
            async with self._login_lock:            # concurrent calls share one new login
                if self._session is None:
                    await self._login()

    async def call(self, model: str, method: str, *args: Any,
                   context: dict[str, Any] | None = None) -> Any:
        """``model.<model>.<method>(*args, context)``, logging in (again) when refused; a
        model this user may not use is an AuthError (``access.py``)."""
        for attempt in (1, 2):
            await self._logged_in()
            session = self._session
            try:
                return await self._post(f"model.{model}.{method}",
                                        [*args, {**self._context, **(context or {})}])
            except AuthError as exc:
                if self._session == session:
                    self._session = None
                if attempt == 2:
                    raise AuthError(f"{self.name}: Tryton refused the session twice "
                                    f"(HTTP {exc.status})", status=exc.status) from None
            except _UserError:
                refusal = await self._refusal(model, method)
                if refusal:
                    raise AuthError(refusal, status=403) from None
                raise
        raise AssertionError("unreachable")

    async def _refusal(self, model: str, method: str) -> str | None:
        """Why Tryton refused ``model.method`` to this user, if a permission is why."""
        perm = access.permission(method)
        if perm is None:
            return None
        login = self.settings.login
        if model == access.DELETE_LOG:
            # open to Administrators only, whatever ir.model.access says (access.py)
            if perm == "read" and not self._context.get("administrator"):
                return access.delete_log_refused(self.name, login)
            return None
        models = [model, *access.NESTED.get(model, ())] if perm != "read" else [model]
        try:
            allowed = await self._post("model.ir.model.access.get_access",
                                       [models, self._context])
        except ConnectorError:
            return None                             # cannot tell: Tryton's own message
        if not isinstance(allowed, dict):
            return None
        for name in models:
            perms = allowed.get(name) or {}
            # a nested model is written, created and deleted through its parent's write
            needed = [perm] if name == model else ["write", "create", "delete"]
            for p in needed:
                if p in perms and not perms[p]:
                    return access.refused(self.name, login, name, p)
        return None

    # --- reading -------------------------------------------------------------------------
    async def changes(self, entity: str, since: datetime | None) -> AsyncIterator[list[Record]]:
        m = self._model(entity)
        size = self.settings.page_size
        changed: list = []
        if since is not None:
            changed = [("last_modified_at", ">=", since)]
            if entity == "parties":
                changed = ["OR", changed[0], ("addresses.last_modified_at", ">=", since),
                           ("contact_mechanisms.last_modified_at", ">=", since)]
        cursor: tuple[datetime, int] | None = None
        while True:
            domain: list = [*m.domain]
            if changed:
                domain.append(changed)
            if cursor is not None:
                t, k = cursor
                domain.append(["OR", ("last_modified_at", ">", t),
                               [("last_modified_at", "=", t), ("id", ">", k)]])
            rows = await self.call(m.name, "search_read", domain, 0, size,
                                   [["last_modified_at", "ASC"], ["id", "ASC"]], _read(m))
            if not rows:
                break
            last = rows[-1]
            position = (last["last_modified_at"], last["id"])
            if cursor is not None and position <= cursor:
                raise UnavailableError(f"{self.name}: {m.name} paging did not advance; stopped")
            yield await self._records(entity, rows)
            cursor = position
            if len(rows) < size:
                break
        if since is not None:
            gone = await self._deleted(m, since)
            for start in range(0, len(gone), size):
                yield gone[start:start + size]

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        m = self._model(entity)
        keys = [int(i) for i in dict.fromkeys(str(i) for i in ids) if str(i).isdigit()]
        out: list[Record] = []
        for start in range(0, len(keys), self.settings.page_size):
            chunk = keys[start:start + self.settings.page_size]
            rows = await self.call(m.name, "search_read", [*m.domain, ("id", "in", chunk)],
                                   0, None, [["id", "ASC"]], _read(m))
            out.extend(await self._records(entity, rows))
        return out

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        m = self._model(entity)
        wanted = [v for v in dict.fromkeys(values) if v is not None]
        if not wanted:
            return []
        if entity == "parties" and field in MECHANISMS:
            path = "contact_mechanisms.value"
            extra: list = [("contact_mechanisms.type", "=", field)]
        elif entity == "parties" and field.startswith(ADDRESS):
            leaf = field[len(ADDRESS):]
            leaf = {"street1": "street", "street2": "street", "country": "country.name"}.get(
                leaf, leaf)
            path, extra = f"addresses.{leaf}", []
        elif entity == "contacts":
            path = {"email": "value", "first_name": "name", "last_name": "name"}.get(
                field, field)
            extra = []
        else:
            reverse = {v: k for k, v in m.rename.items()}
            path, extra = reverse.get(field, field), []
        terms: list = ["OR"]
        for value in wanted:
            if isinstance(value, str):
                terms.append((path, "ilike", value.strip().replace("\\", "\\\\")
                              .replace("%", "\\%").replace("_", "\\_")))
            elif field in m.refs and str(value).isdigit():
                terms.append((path, "=", int(value)))
            else:
                terms.append((path, "=", value))
        rows = await self.call(m.name, "search_read", [*m.domain, *extra, terms], 0, None,
                               [["id", "ASC"]], _read(m))
        return await self._records(entity, rows)

    async def options(self, name: str) -> Any:
        if name == "countries":
            rows = await self.call("country.country", "search_read", [], 0, None,
                                   [["name", "ASC"]], ["name"])
            return [r["name"] for r in rows]
        if name == "account":
            companies = await self._company_list()
            return {"database": self.settings.database, "companies": len(companies),
                    "company": self._context.get("company"),
                    "company_names": [(c.get("party.") or {}).get("name") for c in companies]}
        raise KeyError(name)

    # --- writing -------------------------------------------------------------------------
    async def create(self, entity: str, fields: dict[str, Any]) -> Record:
        m = self._writable(entity)
        if entity == "contacts":
            values = {"type": "email", **await self._contact_values(fields, None)}
            if "party" not in values or "value" not in values:
                raise RecordError(f"{self.name}: a contact needs an e-mail and its party",
                                  fields=tuple(k for k in ("email", "party")
                                               if k not in fields))
        else:
            values = await self._party_values(fields, None)
        ids = await self.call(m.name, "create", [values])
        got = await self.get(entity, [str(ids[0])])
        if not got:
            raise RecordError(f"{self.name}: the created {m.name} {ids[0]} cannot be read back")
        return got[0]

    async def update(self, entity: str, id: str, fields: dict[str, Any],
                     version: str | None = None) -> Record:
        """One ``write`` of the record (with its party's mechanisms and address), locked by
        the stamps of ``version`` when given (module docstring, "Writes").

        A contact is read first, and that read is needed: Tryton's ``write`` takes no domain,
        so the read (of e-mail mechanisms only) is what keeps the id of a phone or website
        mechanism from being written as a contact (NotFoundError, nothing written), and
        ``first_name`` or ``last_name`` alone is written back joined with the other half as
        it is now, which neither the fields nor the version hold (else it would be blanked).
        """
        m = self._writable(entity)
        stamps = self._stamps(m, id, version)
        ahead = self.ahead.take(f"{entity}/{id}")
        if entity == "contacts":
            # needed: the type (e-mail) and the current name (see the docstring)
            old = [ahead] if ahead is not None else await self.get(entity, [id])
            if not old:
                raise NotFoundError(f"{self.name}: {m.name} {id} does not exist", status=404)
            values = await self._contact_values(fields, old[0])
            locks = {} if stamps is None else {f"{m.name},{int(id)}": stamps.main}
        else:
            current = ahead if ahead is not None else await self._party_state(id)
            values = await self._party_values(fields, current)
            locks = {} if stamps is None else self._party_locks(id, stamps, current, values)
        if values:
            try:
                await self.call(m.name, "write", [int(id)], values,
                                context={"_timestamp": locks} if locks else None)
            except ConflictError as exc:
                names = " or ".join(k.replace(",", " ") for k in locks) or f"{m.name} {id}"
                raise ConflictError(
                    f"{self.name}: {names} changed in Tryton since it was read; nothing was "
                    f"written ({exc.message.removeprefix(self.name + ': ')})",
                    status=409) from None
        got = await self.get(entity, [id])
        if not got:
            raise NotFoundError(f"{self.name}: {m.name} {id} is gone", status=404)
        return got[0]

    async def delete(self, entity: str, id: str) -> None:
        m = self._writable(entity)
        await self._exists(m, id)
        await self.call(m.name, "delete", [int(id)])

    # --- the system itself ---------------------------------------------------------------
    async def clock(self) -> datetime | None:
        """The ``Date`` of trytond's latest answer (module docstring); None if it sends
        none (a proxy that strips it)."""
        if self._server_date is None:          # the server's own path: no session needed
            await self._post("common.server.version", [], path="/rpc/")
        return self._server_date

    async def identity(self) -> str | None:
        """Database, company and the company's creation time (module docstring)."""
        await self._logged_in()
        name = f"database {self.settings.database!r}"
        company = self._context.get("company")
        if not isinstance(company, int):
            return name
        row = next((c for c in await self._company_list() if c.get("id") == company), None)
        created = row.get("create_date") if row else None
        if not isinstance(created, datetime):
            return f"{name}, company {company}"
        return f"{name}, company {company} created {utc(created).isoformat()}"

    # --- helpers -------------------------------------------------------------------------
    def _model(self, entity: str) -> _Model:
        try:
            return MODELS[entity]
        except KeyError:
            raise KeyError(f"{self.name}: unknown entity {entity!r} "
                           f"(known: {', '.join(MODELS)})") from None

    def _writable(self, entity: str) -> _Model:
        m = self._model(entity)
        if not m.writable:
            raise RecordError(f"{self.name}: {entity} are read only through accord")
        return m

    async def _records(self, entity: str, rows: list[dict]) -> list[Record]:
        m = self._model(entity)
        if entity == "parties":
            return await self._parties(rows)
        if entity == "contacts":
            return [self._contact(row) for row in rows]
        out = []
        for row in rows:
            fields: dict[str, Any] = {}
            for name in m.read:
                if name == "last_modified_at":
                    continue
                if "." in name:
                    head, leaf = name.split(".", 1)
                    value = (row.get(head + ".") or {}).get(leaf)
                else:
                    value = row.get(name)
                if name in m.refs and value is not None:
                    value = str(value)
                if name == "active":
                    value = bool(value)
                fields[m.rename.get(name, name)] = value
            out.append(Record(id=str(row["id"]), fields=fields,
                              modified=row.get("last_modified_at"),
                              version=Stamps(row.get("_timestamp")).dumps()))
        return out

    async def _parties(self, rows: list[dict]) -> list[Record]:
        if not rows:
            return []
        by_party = await self._party_states(
            [r["id"] for r in rows],
            ["street", "postal_code", "city", "country.name", "invoice", "active",
             "last_modified_at", "_timestamp"],
            ["type", "value", "active", "last_modified_at", "_timestamp"])
        out = []
        for row in rows:
            extra = by_party[row["id"]]
            out.append(self._party(row, extra["addresses"], extra["mechanisms"]))
        return out

    @staticmethod
    def _invoice_address(addresses: list[dict]) -> dict | None:
        active = [a for a in addresses if a.get("active", True)]
        return next((a for a in active if a.get("invoice")), active[0] if active else None)

    def _party(self, row: dict, addresses: list[dict], mechanisms: list[dict]) -> Record:
        fields: dict[str, Any] = {"name": row.get("name"), "code": row.get("code"),
                                  "active": bool(row.get("active"))}
        used: dict[str, tuple[int, str | None]] = {}
        for kind in MECHANISMS:
            first = _first(mechanisms, kind)
            fields[kind] = first["value"] if first else None
            if first:
                used[kind] = (first["id"], first.get("_timestamp"))
        address = self._invoice_address(addresses)
        version = Stamps(row.get("_timestamp"), used,
                         (address["id"], address.get("_timestamp")) if address else None)
        street = (address or {}).get("street") or None
        lines = street.split("\n", 1) if street else []
        fields.update({
            ADDRESS + "street": street,
            ADDRESS + "street1": lines[0].strip() or None if lines else None,
            ADDRESS + "street2": lines[1].strip() or None if len(lines) > 1 else None,
            ADDRESS + "postal_code": (address or {}).get("postal_code") or None,
            ADDRESS + "city": (address or {}).get("city") or None,
            ADDRESS + "country": ((address or {}).get("country.") or {}).get("name"),
        })
        for key in ("name", "code", *MECHANISMS):
            if fields[key] == "":
                fields[key] = None
        modified = max([row["last_modified_at"]] +
                       [x["last_modified_at"] for x in addresses + mechanisms
                        if x.get("last_modified_at")])
        return Record(id=str(row["id"]), fields=fields, modified=modified,
                      version=version.dumps())

    @staticmethod
    def _contact(row: dict) -> Record:
        name = (row.get("name") or "").strip()
        first, _, last = name.rpartition(" ")
        return Record(id=str(row["id"]), modified=row.get("last_modified_at"),
                      version=Stamps(row.get("_timestamp")).dumps(), fields={
            "name": name or None, "first_name": first.strip() or None,
            "last_name": last.strip() or None, "email": row.get("value") or None,
            "party": str(row["party"]) if row.get("party") is not None else None,
            "active": bool(row.get("active"))})

    async def _contact_values(self, fields: dict[str, Any], current: Record | None) -> dict:
        allowed = ("name", "first_name", "last_name", "email", "party", "active")
        unknown = [k for k in fields if k not in allowed]
        if unknown:
            raise RecordError(f"{self.name}: contacts have no field(s) {', '.join(unknown)}",
                              fields=unknown)
        values: dict[str, Any] = {}
        if "first_name" in fields or "last_name" in fields:
            old = current.fields if current else {}
            first = fields.get("first_name", old.get("first_name")) or ""
            last = fields.get("last_name", old.get("last_name")) or ""
            values["name"] = " ".join(x.strip() for x in (first, last) if x and x.strip())
        if "name" in fields:
            values["name"] = (fields["name"] or "").strip()
        if "email" in fields:
            email = (fields["email"] or "").strip()
            if not email:
                raise RecordError(f"{self.name}: an e-mail contact needs an address",
                                  fields=("email",))
            values["value"] = email
        if "party" in fields:
            party = fields["party"]
            if party is None or not str(party).strip().isdigit():
                raise RecordError(f"{self.name}: a contact needs its party (a Tryton party "
                                  f"id), not {party!r}", fields=("party",))
            values["party"] = int(party)
            # PostgreSQL's foreign key would refuse a missing party; SQLite-backed trytond
            # does not, so check it here and refuse the same way on both
            if not await self.call("party.party", "search", [("id", "=", values["party"])],
                                   0, 1, None):
                raise RecordError(f"{self.name}: Tryton has no party {party!r} for this "
                                  "contact", fields=("party",))
        if "active" in fields:
            values["active"] = bool(fields["active"])
        return values

    async def will_update(self, entity: str, updates: Mapping[str, Collection[str]]) -> None:
        """What each of a chunk's updates reads first, read for two or more together and kept
        for those updates (see the module docstring, "Requests")."""
        self.ahead.clear()
        keys = sorted({int(i) for i in updates if str(i).isdigit()})
        if len(keys) < 2 or entity not in ("parties", "contacts"):
            return
        try:
            if entity == "contacts":
                self.ahead.replace({f"contacts/{r.id}": r for r in await self.get(entity, keys)})
                return
            m = MODELS["parties"]
            found = await self.call(m.name, "search", [*m.domain, ("id", "in", keys)], 0, None,
                                    None)
            if found:
                self.ahead.replace({f"parties/{k}": v for k, v in
                                    (await self._party_states(found)).items()})
        except RecordError:
            self.ahead.clear()       # each update reads its own, as without this

    async def _party_state(self, id: str) -> dict:
        """The party's addresses and contact mechanisms as they are now (no stamps: those
        come from the version); NotFoundError if the party does not exist."""
        await self._exists(MODELS["parties"], id)
        return (await self._party_states([int(id)]))[int(id)]

    async def _party_states(self, keys: Sequence[int],
                            addresses: Sequence[str] = ("street", "invoice", "active"),
                            mechanisms: Sequence[str] = ("type", "value", "active")
                            ) -> dict[int, dict]:
        """The addresses and contact mechanisms of these parties (those fields of them) as
        they are now, each party's in its own order: two calls for them all."""
        state = {int(k): {"addresses": [], "mechanisms": []} for k in keys}
        for part, model, read in (("addresses", "party.address", addresses),
                                  ("mechanisms", "party.contact_mechanism", mechanisms)):
            rows = await self.call(model, "search_read", [("party", "in", sorted(state))], 0,
                                   None, [["sequence", "ASC"], ["id", "ASC"]], [*read, "party"])
            for row in rows:
                party = row.pop("party")
                if party in state:
                    state[party][part].append(row)
        return state

    async def _exists(self, m: _Model, id: str) -> None:
        """NotFoundError unless the record exists."""
        if not str(id).isdigit():
            raise NotFoundError(f"{self.name}: {m.name} has no record {id!r}", status=404)
        if not await self.call(m.name, "search", [*m.domain, ("id", "=", int(id))], 0, 1,
                               None):
            raise NotFoundError(f"{self.name}: {m.name} {id} does not exist", status=404)

    def _stamps(self, m: _Model, id: str, version: str | None) -> Stamps | None:
        if version is None:
            return None
        try:
            return loads(version)
        except VersionError as exc:
            raise RecordError(f"{self.name}: {m.name} {id}: {exc}; nothing was written") \
                from None

    def _party_locks(self, id: str, stamps: Stamps, current: dict,
                     values: dict) -> dict[str, str | None]:
        """``_timestamp`` for exactly the records ``values`` writes, from the version; a
        mechanism or address written, cleared or created that is not the one the version
        was read from (added, removed, archived or replaced since) is a ConflictError."""
        locks: dict[str, str | None] = {}
        if any(k in values for k in PARTY_OWN):
            locks[f"party.party,{int(id)}"] = stamps.main
        kinds = {c["id"]: c["type"] for c in current["mechanisms"]}
        for action in values.get("contact_mechanisms", []):
            if action[0] == "create":
                touched = [(v["type"], None) for v in action[1]]
            else:
                touched = [(kinds[key], key) for key in action[1]]
            for kind, key in touched:
                then = stamps.mechanisms.get(kind)
                if (then[0] if then else None) != key:
                    raise self._moved(id, f"its {kind} was added, removed or replaced")
                if then is not None:
                    locks[f"party.contact_mechanism,{key}"] = then[1]
        for action in values.get("addresses", []):
            key = action[1][0] if action[0] == "write" else None
            then = stamps.address
            if (then[0] if then else None) != key:
                raise self._moved(id, "its invoicing address was added, removed or replaced")
            if then is not None:
                locks[f"party.address,{key}"] = then[1]
        return locks

    def _moved(self, id: str, what: str) -> ConflictError:
        return ConflictError(f"{self.name}: party.party {id} changed in Tryton since it was "
                             f"read ({what}); nothing was written", status=409)

    async def _country(self, value: Any) -> int | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = str(value).strip()
        rows = await self.call("country.country", "search_read",
                               ["OR", ("name", "ilike", text), ("code", "=", text.upper())],
                               0, 2, [["id", "ASC"]], ["name"])
        if len(rows) != 1:
            raise RecordError(f"{self.name}: Tryton has no country {text!r}",
                              fields=(ADDRESS + "country",))
        return rows[0]["id"]

    async def _party_values(self, fields: dict[str, Any], current: dict | None) -> dict:
        """Engine fields -> one ``party.party`` create/write value dict (with x2many actions)."""
        unknown = [k for k in fields if k not in ("name", "code", "active", *MECHANISMS)
                   and not (k.startswith(ADDRESS) and k[len(ADDRESS):] in ADDRESS_FIELDS)]
        if unknown:
            raise RecordError(f"{self.name}: parties have no field(s) {', '.join(unknown)}",
                              fields=unknown)
        values: dict[str, Any] = {}
        for key in ("name", "code"):
            if key in fields:
                v = fields[key]
                values[key] = v.strip() if isinstance(v, str) else v
        if "name" in values and not values["name"]:
            raise RecordError(f"{self.name}: a party needs a name", fields=("name",))
        if "active" in fields:
            values["active"] = bool(fields["active"])
        # contact mechanisms
        actions: list = []
        existing = (current or {}).get("mechanisms", [])
        creates = []
        for kind in MECHANISMS:
            if kind not in fields:
                continue
            v = fields[kind]
            v = v.strip() if isinstance(v, str) else v
            first = _first(existing, kind)
            if not v:
                if first is not None:
                    actions.append(["delete", [first["id"]]])
            elif first is None:
                creates.append({"type": kind, "value": v})
            elif first["value"] != v:
                actions.append(["write", [first["id"]], {"value": v}])
        if creates:
            actions.append(["create", creates])
        if actions:
            values["contact_mechanisms"] = actions
        # the invoicing address
        given = {k[len(ADDRESS):]: v for k, v in fields.items() if k.startswith(ADDRESS)}
        if given:
            address: dict[str, Any] = {}
            old = self._invoice_address((current or {}).get("addresses", []))
            old_lines = ((old or {}).get("street") or "").split("\n", 1)
            line1 = old_lines[0] if old_lines else ""
            line2 = old_lines[1] if len(old_lines) > 1 else ""
            if "street1" in given or "street2" in given:
                line1 = (given.get("street1", line1) or "").strip()
                line2 = (given.get("street2", line2) or "").strip()
                address["street"] = "\n".join(x for x in (line1, line2) if x)
            if "street" in given:
                address["street"] = (given["street"] or "").strip()
            for key in ("postal_code", "city"):
                if key in given:
                    address[key] = (given[key] or "").strip()
            if "country" in given:
                address["country"] = await self._country(given["country"])
            if old is None:
                values["addresses"] = [["create", [{**address, "invoice": True}]]]
            else:
                values["addresses"] = [["write", [old["id"]], address]]
        return values

    async def _deleted(self, m: _Model, since: datetime) -> list[Record]:
        """Tombstones of the records of ``m`` deleted at or after ``since`` (ir.model.log)."""
        prefix = f"{m.name},"
        window = [("event", "=", "delete"), ("resource", "like", prefix + "%"),
                  ("create_date", ">=", since)]
        total = await self.call("ir.model.log", "search_count", window)
        if not total:
            return []
        existing = set(await self.call(m.name, "search", [], 0, None, [["id", "ASC"]]))
        top = max(existing, default=0)
        found: dict[int, datetime] = {}

        async def probe(ids: list[int]) -> None:
            if not ids or len(found) >= total:
                return
            domain = [*window, ("resource", "in", [f"{prefix}{i}" for i in ids])]
            if len(ids) == 1:
                logs = await self.call("ir.model.log", "search_read", domain, 0, 1,
                                       [["create_date", "DESC"]], ["create_date"])
                if logs:
                    found[ids[0]] = logs[0]["create_date"]
                return
            if not await self.call("ir.model.log", "search_count", domain):
                return
            half = len(ids) // 2
            await probe(ids[:half])
            await probe(ids[half:])

        missing = [i for i in range(1, top + 1) if i not in existing]
        for start in range(0, len(missing), 500):
            await probe(missing[start:start + 500])
        low = top + 1                   # ids above the highest left (the newest deleted)
        for _ in range(MAX_PROBE_CHUNKS):
            if len(found) >= total:
                break
            await probe(list(range(low, low + 500)))
            low += 500
        return [Record(id=str(i), fields={}, modified=at, deleted=True)
                for i, at in sorted(found.items(), key=lambda kv: (kv[1], kv[0]))]


def _read(m: _Model) -> list[str]:
    """The fields read for ``m``, with Tryton's optimistic-lock stamp."""
    return [*m.read, "_timestamp"]


def _first(mechanisms: list[dict], kind: str) -> dict | None:
    """The mechanism behind a party's ``kind`` field: the first active one, by sequence."""
    return next((c for c in mechanisms if c["type"] == kind and c.get("active", True)), None)


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError):
        return None
