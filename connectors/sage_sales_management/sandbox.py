"""An aiohttp imitation of the Sage Sales Management (formerly ForceManager) API v4.

What the public documentation says (developer.forcemanager.com, and the per-endpoint pages
mirrored as "Sage Sales Management" knowledge pages on withone.ai) and this sandbox does:

- Base URL ``https://api.forcemanager.com``, resources under ``/api/v4``; JSON everywhere.
- Auth: ``POST /api/v4/login`` with ``{"username": <public key>, "password": <private
  key>}`` answers ``{"token": ...}``; every other request sends that token in the
  ``X-Session-Key`` header.
- Verbs: GET reads, POST creates (answers ``{"Message": "entity created", "id": N}``), PUT is
  a partial update (``{"Message": "entity updated", "id": N}``), DELETE deletes
  (``{"Message": "entity deleted"}``). A missing record answers 400, not 404.
- Lists: a JSON array, 50 records by default; ``page`` (0-based) query parameter; the page
  size is a request header; ``where`` (SQL-like: ``=``, ``>``, ``LIKE``, ``AND``, ``OR``),
  ``order`` (the docs: "sorts results in descending order by the attribute"), ``lang``.
- Records: camelCase; references are objects ``{"id": 12, "value": "ACME"}``; ``extId`` is
  the id in a third-party system; ``readOnly``; soft-delete columns ``deleted``,
  ``dateDeleted``; ``dateCreated``; ``dateUpdated`` stays null until the first edit (see the
  examples); lists include deleted records (the examples show ``deleted: true`` rows).
- Account types: ``GET /api/v4/accountTypes`` (``id``, ``descriptionEN``... ``deleted``).
- Error codes: 900 connection error, 901 internal data error (the SQL is not generated
  correctly, e.g. a bad ``where``), 910 resource does not exist.

Routes::

    POST   /api/v4/login
    GET    /api/v4/accountTypes
    GET    /api/v4/{accounts|contacts|products|users|invoices}          list
    GET    /api/v4/{entity}/{id}                                         one (also deleted)
    POST   /api/v4/{accounts|contacts|products|invoices}                 create
    PUT    /api/v4/{entity}/{id}                                         partial update
    DELETE /api/v4/{entity}/{id}                                         soft delete

Choices where the documentation is silent:

- Page size: the docs name the request header both ``Count`` and ``X-FM-Entity-Count``; the
  sandbox reads either (``Count`` first), default 50, capped at ``max_page_size`` (500).
  Responses carry ``X-FM-Entity-Count`` (how many records match the where, all pages) and,
  when another page follows, ``X-FM-Next-Page`` (its number); no header on the last page.
- ``where`` grammar (see ``where.py``): also ``>=``, ``<``, ``<=``, ``<>``, ``NOT``,
  ``IN (...)``, ``IS [NOT] NULL`` and ``COALESCE(a, b)`` (the API hands the where to SQL
  Server, which has them). Text comparisons and LIKE are case-insensitive (SQL Server's
  default collation). References compare by id (``accountId = 12``). A where or order that
  does not parse or names an unknown attribute: 400, FM error 901.
- ``order``: comma-separated attributes (or ``COALESCE(...)``), each with an optional
  ``ASC``/``DESC``; without a direction descending, as the docs say. Without ``order``:
  ascending id. Changed-since reads use ``order=COALESCE(dateUpdated,dateCreated) ASC,id ASC``
  with a keyset where; the sandbox keeps that order as an index, so a page is a bisect.
- Timestamps are UTC, kept to the millisecond and written ``2024-05-01T10:00:00.123Z`` (so
  what a client reads is exactly what it can compare with in a where).
- Sessions last ``session_minutes`` of the sandbox clock (default 30). An unknown or expired
  key, or refused login keys: 401 ``{"statusCode": 401, "code": 401, "message": ...}``.
- Error bodies: ``{"statusCode", "code", "message", "fields"}``; ``fields`` lists the
  offending attributes. Codes beyond the documented ones: 920 validation error, 930
  session error, 940 too many requests, 405 method not allowed.
- Rate limit: none is documented; the sandbox allows ``requests_per_minute`` (default 1000)
  requests per sliding minute of its clock, then 429 with ``Retry-After`` (whole seconds).
- Writes of references: a plain integer id (as the create examples show: ``"accountId": 1``)
  or ``{"id": n}``; null clears. Reads give ``{"id", "value"}``: the account type's English
  description, the user's "first last" name, the account's name.
- Field names the integration needs, where the real tenant differs: accounts carry one
  ``salesRepId`` (the real API has ``salesRepId1``..``salesRepId5``) and a text ``country``
  and ``region`` (the real API has ``countryId``); no ``branchId`` is required. Users carry
  ``firstName`` (the real API calls it ``name``).
- Users: read only through the API. ``level`` is the permission level, 1..5, 5 the highest
  (the docs: "5 is the highest level of permission"); the seeded admin is level 5.
- Invoices: the documented API has no invoice resource (``/api/v4/sales`` has only account,
  date, extId and total; ``/api/v4/salesorders`` are orders). Sage's own Sage 50
  integration shows invoices read-only in Sales Management with a field of their own for
  the Sage 50 invoice id, i.e. a tenant custom entity (real custom fields are ``Z_``
  prefixed). The sandbox serves it at ``/api/v4/invoices`` with natural names: ``extId``,
  ``number``, ``accountId``, ``date``, ``dueDate`` (``YYYY-MM-DD``), ``totalExclTax``,
  ``totalInclTax``, ``status``, ``sage50InvoiceId``, ``synced``, ``readOnly``.
- Validation (400, code 920, ``fields``): unknown attributes; wrong types; accounts need
  ``name``; contacts need ``firstName`` or ``lastName`` and an existing, not deleted
  ``accountId``; products need ``model`` (the product code; ``description`` is free text);
  invoices need ``accountId`` (existing, not deleted) and ``number``; ``salesRepId`` and
  ``typeId`` must exist; e-mails must look like e-mails; ``stock`` is text: a number or
  ``-`` (stock does not apply); ``image`` is base64 of a PNG, JPEG or GIF (magic bytes) of at
  most 1 MB; ``extId`` is unique per entity among records not deleted (case-insensitively).
  Read-only attributes (``id``, ``dateCreated``, ``dateUpdated``, ``dateDeleted``,
  ``deleted``) are ignored on write.
- ``readOnly`` stops users of the app, not the API: the Sage 50 integration itself updates
  read-only accounts. ``touch()`` (a user) never edits a read-only record; ``edit()``
  refuses one unless ``force=True``.
- ``GET /{entity}/{id}`` answers deleted records too (with ``deleted: true``), like lists.
- Instance: the API has no "which implementation is this" resource, but its session key
  says: the documented login example decodes to ``<time>|<base64 of {"ImplementationId",
  "UserId", "TimeInit"}>|<signature>``. The sandbox's keys have that shape, the
  ``ImplementationId`` being its ``instance_id`` (random, made when the sandbox is built,
  not from the seed), so two generations are two implementations.
- Faults (``connectors/sandbox.py``): POST, PUT and DELETE of records honour
  ``fail_after_commit`` and ``hang_after_commit``; ``drop_fields`` applies to lists and
  single records (not to the login or the ``{"Message", "id"}`` acknowledgements);
  ``clock_ahead`` moves ``dateCreated``, ``dateUpdated`` and ``dateDeleted``; the ``Date``
  header follows the sandbox clock.

And on the connector's side (``client.py``):

- Changed-since reads: keyset on (``COALESCE(dateUpdated,dateCreated)``, ``id``), always
  ``page=0``, ``order=COALESCE(dateUpdated,dateCreated) ASC,id ASC``; the next page is
  asked while ``X-FM-Next-Page`` is present. ``Record.modified`` = ``dateUpdated`` or else
  ``dateCreated``. Other lists (get, find, users, types) follow ``X-FM-Next-Page``.
- Page size sent as the ``Count`` header (settings ``page_size``, 50 by default, at most
  500). ``get`` asks ``id IN (...) AND deleted = false`` in chunks of ``max_get`` (100);
  ``find`` asks ``(f = v1 OR f = v2 ...) AND deleted = false`` in chunks of 25 values
  (case-insensitive for text, by the server's collation); ``find`` by ``<ref>.id`` compares
  the reference id. Deleted records never come back from ``get``/``find``.
- A session 401 logs in again once (one login shared by concurrent requests) and repeats
  the request; a second 401, or a refused login, is an AuthError naming neither key.
- FM error 910 (resource does not exist) becomes NotFoundError; other 4xx RecordError with
  the vendor's message and its ``fields`` mapped to flattened paths.
- Writes: references as plain integer ids; ``typeId.value`` is resolved by name
  (case-insensitively, the account types read once per run and read again once on a miss;
  an unknown name is a RecordError on ``typeId.value``, nothing sent); when both
  ``typeId.value`` and ``typeId.id`` are given, the name wins. Other ``.value`` paths,
  the computed fields and the read-only attributes are not sent.
- Computed fields: ``salesRep.fullName`` (accounts) from the users list (read once per
  run, shared with ``options("users")`` and ``options("admin")``, and read again once older
  than ``users_ttl``; unknown user: None); ``account.typeId.value`` (contacts) from one
  ``id IN (...)`` accounts request per page of contacts.
- ``options("admin")``: the lowest-id active user whose ``level`` is ``admin_level`` (5).
- Rate limit: the connector's sliding window defaults to 900 requests per 60 s, under the
  sandbox's 1000; HttpClient honours ``Retry-After`` on a 429.
- DELETE is FM's soft delete: ``deleted = true``, ``dateDeleted`` and ``dateUpdated`` set
  (so changed-since reads see it). DELETE or PUT of an unknown or deleted id: 400, code 910.
"""
from __future__ import annotations

import base64
import binascii
import bisect
import math
import random
import re
import secrets
from collections import deque
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson
from aiohttp import web

from connectors.sage_sales_management.where import (Coalesce, Name, WhereError,
                                                     compile_operand, compile_where,
                                                     id_candidates, key_range, parse,
                                                     parse_order)
from connectors.sandbox import Clock, Sandbox

API = "/api/v4"
ENTITIES = ("accounts", "contacts", "products", "users", "invoices")
WRITABLE = ("accounts", "contacts", "products", "invoices")
COMPUTED = ("id", "dateCreated", "dateUpdated", "dateDeleted", "deleted")
MAX_IMAGE = 1024 * 1024
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_STOCK = re.compile(r"^(-|-?\d+(\.\d+)?)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# attribute -> kind: text, email, bool, number, int, date, stock, image, ref:<target>
SCHEMA: dict[str, dict[str, str]] = {
    "accounts": {"name": "text", "extId": "text", "typeId": "ref:accountTypes",
                 "readOnly": "bool", "salesRepId": "ref:users", "address1": "text",
                 "address2": "text", "postcode": "text", "city": "text", "region": "text",
                 "country": "text", "phone": "text", "phone2": "text", "fax": "text",
                 "email": "email", "web": "text", "vatNumber": "text", "comment": "text"},
    "contacts": {"firstName": "text", "lastName": "text", "accountId": "ref:accounts",
                 "salesRepId": "ref:users", "email": "email", "phone1": "text",
                 "phone2": "text", "cellPhone": "text", "position": "text", "extId": "text",
                 "readOnly": "bool", "comment": "text"},
    "products": {"model": "text", "description": "text", "extId": "text", "price": "number",
                 "cost": "number", "stock": "stock", "notAvailable": "bool",
                 "image": "image", "readOnly": "bool"},
    "users": {"firstName": "text", "lastName": "text", "email": "email", "isActive": "bool",
              "level": "int", "extId": "text", "phone": "text"},
    "invoices": {"extId": "text", "number": "text", "accountId": "ref:accounts",
                 "date": "date", "dueDate": "date", "totalExclTax": "number",
                 "totalInclTax": "number", "status": "text", "sage50InvoiceId": "text",
                 "synced": "bool", "readOnly": "bool"},
}
DEFAULT_TYPES = ("Client", "Prospect", "Competitor", "Partner", "Supplier")
USERS = (("Alice", "Martin", 5), ("Bruno", "Lefevre", 3), ("Chloe", "Dubois", 2),
         ("David", "Moreau", 2), ("Emma", "Garnier", 1))
_COMPANY = ("Atelier", "Boulangerie", "Cabinet", "Garage", "Hotel", "Imprimerie", "Studio",
            "Transports", "Menuiserie", "Pharmacie")
_NAMES = ("Bernard", "Petit", "Durand", "Leroy", "Roux", "Fournier", "Girard", "Bonnet",
          "Lambert", "Fontaine", "Rousseau", "Vincent", "Muller", "Faure", "Andre")
_FIRST = ("Julie", "Thomas", "Camille", "Lucas", "Manon", "Hugo", "Lea", "Louis", "Sarah",
          "Nathan", "Ines", "Paul")
_CITIES = (("Lyon", "Auvergne-Rhone-Alpes", "69"), ("Nantes", "Pays de la Loire", "44"),
           ("Lille", "Hauts-de-France", "59"), ("Bordeaux", "Nouvelle-Aquitaine", "33"),
           ("Rennes", "Bretagne", "35"), ("Dijon", "Bourgogne-Franche-Comte", "21"))
PNG_1PX = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()


class Invalid(Exception):
    def __init__(self, field: str | None, message: str, code: int = 920) -> None:
        super().__init__(message)
        self.field, self.message, self.code = field, message, code


def _ms(dt: datetime) -> datetime:
    dt = dt.astimezone(timezone.utc)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def fmt(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _dumps(o: Any) -> str:
    return orjson.dumps(o).decode()


def _error(status: int, code: int, message: str, fields: tuple[str, ...] = (),
           headers: dict | None = None) -> web.Response:
    return web.json_response({"statusCode": status, "code": code, "message": message,
                              "fields": list(fields)}, status=status, headers=headers,
                             dumps=_dumps)


def _is_key(node) -> bool:
    """``COALESCE(dateUpdated, dateCreated)``: the changed-since order the sandbox indexes."""
    return isinstance(node, Coalesce) and [getattr(a, "name", None) for a in node.args] \
        == ["dateUpdated", "dateCreated"]


class SageSalesManagementSandbox(Sandbox):
    system = "sage_sales_management"
    persisted = ("data", "account_types", "_ext", "_ext_all", "_index", "_next")  # keep_in()

    def __init__(self, *, seed: int = 0, records: int = 0, clock: Clock | None = None,
                 public_key: str = "sandbox-public", private_key: str = "sandbox-private",
                 session_minutes: float = 30, requests_per_minute: int = 1000,
                 max_page_size: int = 500, **_ignored: Any) -> None:
        self.public_key, self.private_key = public_key, private_key
        self.session_minutes = session_minutes
        self.requests_per_minute = requests_per_minute
        self.max_page_size = max_page_size
        self.sessions: dict[str, datetime] = {}     # token -> expiry
        self.logins = 0                             # successful + refused login calls
        self.rejected = 0                           # 429s answered
        self._calls: deque[float] = deque()
        self.data: dict[str, dict[int, dict]] = {e: {} for e in ENTITIES}
        self.account_types: dict[int, dict] = {}
        self._ext: dict[str, dict[str, int]] = {e: {} for e in ENTITIES}     # live only
        self._ext_all: dict[str, dict[str, set[int]]] = {e: {} for e in ENTITIES}
        self._index: dict[str, list[tuple[datetime, int]]] = {e: [] for e in ENTITIES}
        self._next = {e: 1 for e in ENTITIES}
        self.clock = clock or Clock()
        for name in DEFAULT_TYPES:
            self.add_account_type(name)
        for first, last, level in USERS:
            self.add_user(first, last, level=level)
        super().__init__(seed=seed, records=records, clock=self.clock)

    # --- data helpers (also what tests use to act as a user of the app) ----------------------
    def now(self) -> datetime:
        """A record stamp: the sandbox clock (plus ``faults.clock_ahead``), to the ms."""
        return _ms(self.stamp())

    def add_account_type(self, name: str) -> dict:
        tid = len(self.account_types) + 1
        now = self.now()
        row = {"id": tid, "descriptionEN": name, "descriptionFR": None, "deleted": False,
               "dateCreated": now, "dateUpdated": None, "dateDeleted": None,
               "internal": False, "order": tid}
        self.account_types[tid] = row
        return row

    def type_id(self, name: str) -> int:
        for tid, row in self.account_types.items():
            if row["descriptionEN"].casefold() == name.casefold() and not row["deleted"]:
                return tid
        raise KeyError(name)

    def add_user(self, first: str, last: str, *, level: int = 1, active: bool = True,
                 email: str | None = None) -> dict:
        return self.insert("users", {
            "firstName": first, "lastName": last, "level": level, "isActive": active,
            "email": email or f"{first.lower()}.{last.lower()}@sales.example.com",
            "extId": f"U{self._next['users']:03d}"})

    def insert(self, entity: str, body: dict) -> dict:
        """Validate and store a new record (as POST does); raises Invalid."""
        changes = self._clean(entity, body, None)
        rid = self._next[entity]
        self._next[entity] += 1
        row = {"id": rid, **{f: None for f in SCHEMA[entity]}, **changes,
               "deleted": False, "dateCreated": self.now(), "dateUpdated": None,
               "dateDeleted": None}
        for flag in ("readOnly", "notAvailable", "synced", "isActive"):
            if flag in SCHEMA[entity] and row.get(flag) is None:
                row[flag] = flag == "isActive"
        self.data[entity][rid] = row
        if row.get("extId"):
            self._ext[entity][row["extId"].casefold()] = rid
            self._ext_all[entity].setdefault(row["extId"].casefold(), set()).add(rid)
        bisect.insort(self._index[entity], (row["dateCreated"], rid))
        return row

    def modify(self, entity: str, rid: int, body: dict) -> dict:
        """Validate and apply a partial update (as PUT does); raises Invalid."""
        row = self._live(entity, rid)
        changes = self._clean(entity, body, row)
        old_ext = row.get("extId")
        self._reindex(entity, row, lambda: row.update(changes))
        if old_ext != row.get("extId"):
            if old_ext:
                self._ext[entity].pop(old_ext.casefold(), None)
                self._ext_all[entity].get(old_ext.casefold(), set()).discard(rid)
            if row.get("extId"):
                self._ext[entity][row["extId"].casefold()] = rid
                self._ext_all[entity].setdefault(row["extId"].casefold(), set()).add(rid)
        return row

    def soft_delete(self, entity: str, rid: int) -> dict:
        row = self._live(entity, rid)

        def apply():
            row["deleted"], row["dateDeleted"] = True, self.now()
        self._reindex(entity, row, apply)
        if row.get("extId"):
            self._ext[entity].pop(row["extId"].casefold(), None)
        return row

    def _reindex(self, entity: str, row: dict, apply) -> None:
        index = self._index[entity]
        old = (row["dateUpdated"] or row["dateCreated"], row["id"])
        apply()
        row["dateUpdated"] = self.now()
        pos = bisect.bisect_left(index, old)
        if pos < len(index) and index[pos] == old:
            del index[pos]
        bisect.insort(index, (row["dateUpdated"], row["id"]))

    def _live(self, entity: str, rid: Any) -> dict:
        row = self.data[entity].get(rid) if isinstance(rid, int) else None
        if row is None or row["deleted"]:
            raise Invalid(None, f"The resource {entity}/{rid} does not exist.", code=910)
        return row

    # public helpers: act as a user of the app would (times from the sandbox clock)
    def add(self, entity: str, **fields: Any) -> dict:
        return self.insert(entity, fields)

    def edit(self, entity: str, id: int, *, force: bool = False, **fields: Any) -> dict:
        row = self._live(entity, int(id))
        if row.get("readOnly") and not force:
            raise ValueError(f"{entity}/{id} is read-only in the app")
        return self.modify(entity, int(id), fields)

    def remove(self, entity: str, id: int) -> dict:
        return self.soft_delete(entity, int(id))

    def records(self, entity: str) -> list[dict]:
        return list(self.data[entity].values())

    def by_ext(self, entity: str, ext_id: str) -> dict | None:
        rid = self._ext[entity].get(ext_id.casefold())
        return None if rid is None else self.data[entity][rid]

    def expire_sessions(self) -> None:
        self.sessions.clear()

    # --- validation --------------------------------------------------------------------------
    def _clean(self, entity: str, body: Any, row: dict | None) -> dict:
        if not isinstance(body, dict):
            raise Invalid(None, "The request body must be a JSON object.")
        schema = SCHEMA[entity]
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key in COMPUTED:
                continue
            kind = schema.get(key)
            if kind is None:
                raise Invalid(key, f"The field '{key}' does not exist in {entity}.")
            out[key] = self._value(entity, key, kind, value)
        merged = {**(row or {}), **out}
        if entity == "accounts" and not (merged.get("name") or "").strip():
            raise Invalid("name", "The field 'name' is required.")
        if entity == "contacts":
            if not (merged.get("firstName") or merged.get("lastName")):
                raise Invalid("firstName", "A contact needs a 'firstName' or a 'lastName'.")
        if entity == "products" and not (merged.get("model") or "").strip():
            raise Invalid("model", "The field 'model' is required.")
        if entity == "invoices" and not (merged.get("number") or "").strip():
            raise Invalid("number", "The field 'number' is required.")
        if entity in ("contacts", "invoices") and merged.get("accountId") is None:
            raise Invalid("accountId", "The field 'accountId' is required.")
        ext = out.get("extId")
        if ext:
            other = self._ext[entity].get(ext.casefold())
            if other is not None and (row is None or other != row["id"]):
                raise Invalid("extId", f"The extId '{ext}' is already used by {entity} "
                                       f"{other}.")
        return out

    def _value(self, entity: str, key: str, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind.startswith("ref:"):
            target = kind[4:]
            if isinstance(value, dict):
                value = value.get("id")
            if isinstance(value, bool) or not isinstance(value, int):
                raise Invalid(key, f"The field '{key}' must be an integer id.")
            table = self.account_types if target == "accountTypes" else self.data[target]
            ref = table.get(value)
            if ref is None or ref["deleted"]:
                raise Invalid(key, f"The {key} {value} does not exist.")
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise Invalid(key, f"The field '{key}' must be true or false.")
            return value
        if kind in ("number", "int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or (kind == "int" and not isinstance(value, int)):
                raise Invalid(key, f"The field '{key}' must be a number.")
            return value
        if not isinstance(value, str):
            raise Invalid(key, f"The field '{key}' must be text.")
        value = value.strip()
        if kind == "email" and value and not _EMAIL.match(value):
            raise Invalid(key, f"'{value}' is not a valid e-mail address.")
        if kind == "stock" and value and not _STOCK.match(value):
            raise Invalid(key, f"The stock '{value}' must be a quantity or '-'.")
        if kind == "date" and value:
            try:
                if not _DATE.match(value):
                    raise ValueError
                date.fromisoformat(value)
            except ValueError:
                raise Invalid(key, f"The field '{key}' must be a date YYYY-MM-DD.") from None
        if kind == "image" and value:
            self._check_image(key, value)
        if key == "extId" and len(value) > 30:
            raise Invalid(key, "The field 'extId' is longer than 30 characters.")
        return value or None

    @staticmethod
    def _check_image(key: str, value: str) -> None:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise Invalid(key, "The image is not valid base64.") from None
        if len(raw) > MAX_IMAGE:
            raise Invalid(key, "The image is larger than 1 MB.")
        if not (raw.startswith(b"\x89PNG\r\n\x1a\n") or raw.startswith(b"\xff\xd8\xff")
                or raw.startswith(b"GIF87a") or raw.startswith(b"GIF89a")):
            raise Invalid(key, "The image must be a PNG, JPEG or GIF.")

    # --- seed / touch ------------------------------------------------------------------------
    def seed(self, n: int, rng: random.Random) -> None:
        users = [u["id"] for u in self.data["users"].values() if u["isActive"]]
        client, prospect = self.type_id("Client"), self.type_id("Prospect")
        competitor = self.type_id("Competitor")
        for _ in range(n):
            roll = rng.random()
            kind = client if roll < 0.55 else prospect if roll < 0.93 else competitor
            account = self.insert("accounts", self._account_body(rng, kind, users))
            for _ in range(rng.choice((1, 2, 2, 3))):
                self.insert("contacts", self._contact_body(rng, account))
            if kind == client and rng.random() < 0.5:
                self.insert("invoices", self._invoice_body(rng, account))
        for _ in range(n // 2):
            self.insert("products", self._product_body(rng))

    def _account_body(self, rng: random.Random, type_id: int, users: list[int]) -> dict:
        city, region, dept = rng.choice(_CITIES)
        name = f"{rng.choice(_COMPANY)} {rng.choice(_NAMES)}"
        slug = re.sub(r"\W+", "", name.lower())
        n = self._next["accounts"]
        is_client = type_id == self.type_id("Client")
        return {"name": name, "typeId": type_id,
                "extId": f"C{n:05d}" if is_client else None,
                "readOnly": is_client,
                "salesRepId": rng.choice(users) if rng.random() < 0.85 else None,
                "address1": f"{rng.randint(1, 120)} rue {rng.choice(_NAMES)}",
                "postcode": f"{dept}{rng.randint(0, 999):03d}", "city": city,
                "region": region, "country": "France",
                "phone": f"0{rng.randint(1, 5)} {rng.randint(10, 99)} {rng.randint(10, 99)} "
                         f"{rng.randint(10, 99)} {rng.randint(10, 99)}",
                "email": f"contact@{slug}.example.fr", "web": f"www.{slug}.example.fr",
                "vatNumber": f"FR{rng.randint(10, 99)}{rng.randint(100000000, 999999999)}"
                if is_client else None}

    def _contact_body(self, rng: random.Random, account: dict) -> dict:
        first, last = rng.choice(_FIRST), rng.choice(_NAMES)
        domain = (account.get("email") or "@mail.example.fr").split("@")[1]
        return {"accountId": account["id"], "firstName": first, "lastName": last,
                "email": f"{first.lower()}.{last.lower()}@{domain}",
                "phone1": account.get("phone"),
                "cellPhone": f"06 {rng.randint(10, 99)} {rng.randint(10, 99)} "
                             f"{rng.randint(10, 99)} {rng.randint(10, 99)}",
                "position": rng.choice(("Gerant", "Acheteur", "Comptable", "Directeur")),
                "readOnly": bool(account.get("readOnly"))}

    def _invoice_body(self, rng: random.Random, account: dict) -> dict:
        n = self._next["invoices"]
        day = date(2025, 1, 1) + timedelta(days=rng.randint(0, 300))
        excl = round(rng.uniform(50, 5000), 2)
        return {"extId": f"FA{n:06d}", "number": f"FA{n:06d}", "accountId": account["id"],
                "date": day.isoformat(), "dueDate": (day + timedelta(days=30)).isoformat(),
                "totalExclTax": excl, "totalInclTax": round(excl * 1.2, 2),
                "status": rng.choice(("Open", "Paid", "Overdue")),
                "sage50InvoiceId": str(1000 + n), "synced": True, "readOnly": True}

    def _product_body(self, rng: random.Random) -> dict:
        n = self._next["products"]
        stocked = rng.random() < 0.8
        return {"model": f"ART{n:05d}",
                "description": f"{rng.choice(('Vis', 'Ecrou', 'Panneau', 'Cable'))} "
                               f"{rng.randint(2, 40)} mm",
                "extId": f"ART{n:05d}", "price": round(rng.uniform(1, 500), 2),
                "stock": str(rng.randint(0, 200)) if stocked else "-",
                "notAvailable": rng.random() < 0.1, "readOnly": True}

    def touch(self, rng: random.Random) -> str:
        accounts = [a for a in self.data["accounts"].values()
                    if not a["deleted"] and not a["readOnly"]]
        contacts = [c for c in self.data["contacts"].values()
                    if not c["deleted"] and not c["readOnly"]]
        choice = rng.randrange(4)
        if choice == 0 or not accounts:
            users = [u["id"] for u in self.data["users"].values() if u["isActive"]]
            row = self.insert("accounts", self._account_body(
                rng, self.type_id("Prospect"), users))
            return f"accounts/{row['id']}: created prospect {row['name']!r}"
        if choice == 1:
            a = rng.choice(accounts)
            self.modify("accounts", a["id"], {"phone": f"0{rng.randint(1, 5)} "
                                              f"{rng.randint(10000000, 99999999)}"})
            return f"accounts/{a['id']}: phone -> {a['phone']}"
        if choice == 2 or not contacts:
            a = rng.choice(accounts)
            row = self.insert("contacts", self._contact_body(rng, a))
            return f"contacts/{row['id']}: created for account {a['id']}"
        c = rng.choice(contacts)
        self.modify("contacts", c["id"], {"position": rng.choice(
            ("Gerant", "Acheteur", "Comptable", "Directeur", "Assistant"))})
        return f"contacts/{c['id']}: position -> {c['position']}"

    # --- wire ------------------------------------------------------------------------------------
    def _ref_value(self, kind: str, rid: int | None) -> dict | None:
        if rid is None:
            return None
        target = kind[4:]
        if target == "accountTypes":
            t = self.account_types.get(rid)
            return {"id": rid, "value": t["descriptionEN"] if t else None}
        row = self.data[target].get(rid)
        if row is None:
            return {"id": rid, "value": None}
        if target == "users":
            return {"id": rid, "value": f"{row['firstName']} {row['lastName']}".strip()}
        return {"id": rid, "value": row.get("name")}

    def shape(self, entity: str, row: dict) -> dict:
        out: dict[str, Any] = {}
        schema = SCHEMA[entity]
        for key, value in row.items():
            kind = schema.get(key, "")
            if kind.startswith("ref:"):
                out[key] = self._ref_value(kind, value)
            elif isinstance(value, datetime):
                out[key] = fmt(value)
            else:
                out[key] = value
        return out

    def session_key(self) -> str:
        """A new session key in the shape of the documented login example: base64 of
        ``<unix time>|<base64 of the session JSON>|<signature>``, the JSON carrying the
        ``ImplementationId`` (here the sandbox's ``instance_id``), ``UserId`` and ``TimeInit``."""
        init = int(self.clock.now().timestamp())
        claims = base64.urlsafe_b64encode(orjson.dumps(
            {"ImplementationId": self.instance_id, "UserId": "1", "TimeInit": init})).decode()
        raw = f"{init}|{claims}|{secrets.token_urlsafe(24)}"
        return base64.urlsafe_b64encode(raw.encode()).decode()

    def records_in(self, body: Any) -> list[dict]:
        """A list of records or one record; the login and write acknowledgements carry none."""
        if isinstance(body, dict) and ("token" in body or "Message" in body):
            return []
        return super().records_in(body)

    # --- serving -----------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.post(f"{API}/login", self._login),
                web.get(f"{API}/accountTypes", self._account_types),
                web.route("*", API + "/{entity}", self._collection),
                web.route("*", API + "/{entity}/{id}", self._one)]

    def _throttle(self) -> web.Response | None:
        now = self.clock.now().timestamp()
        while self._calls and now - self._calls[0] >= 60:
            self._calls.popleft()
        if len(self._calls) >= self.requests_per_minute:
            self.rejected += 1
            wait = max(1, math.ceil(60 - (now - self._calls[0])))
            return _error(429, 940, f"Too many requests: at most {self.requests_per_minute} "
                                    "per minute.", headers={"Retry-After": str(wait)})
        self._calls.append(now)
        return None

    def _guard(self, request: web.Request) -> web.Response | None:
        throttled = self._throttle()
        if throttled is not None:
            return throttled
        token = request.headers.get("X-Session-Key", "")
        expiry = self.sessions.get(token)
        if expiry is None or self.clock.now() >= expiry:
            self.sessions.pop(token, None)
            return _error(401, 930, "The session key is not valid or has expired; "
                                    "log in again.")
        return None

    async def _login(self, request: web.Request) -> web.Response:
        throttled = self._throttle()
        if throttled is not None:
            return throttled
        self.logins += 1
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or body.get("username") != self.public_key \
                or body.get("password") != self.private_key:
            return _error(401, 930, "Login refused: the public or private API key is wrong.")
        token = self.session_key()
        self.sessions[token] = self.clock.now() + timedelta(minutes=self.session_minutes)
        return web.json_response({"token": token}, dumps=_dumps)

    async def _account_types(self, request: web.Request) -> web.Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        rows = [{k: fmt(v) if isinstance(v, datetime) else v for k, v in r.items()}
                for r in self.account_types.values()]
        try:
            return self._page(request, rows)
        except Invalid as exc:
            return self._invalid(exc)

    def _page(self, request: web.Request, rows: list) -> web.Response:
        size, page = self._paging(request)
        chunk = rows[page * size:(page + 1) * size]
        headers = {"X-FM-Entity-Count": str(len(rows))}
        if (page + 1) * size < len(rows):
            headers["X-FM-Next-Page"] = str(page + 1)
        return web.json_response(chunk, headers=headers, dumps=_dumps)

    def _paging(self, request: web.Request) -> tuple[int, int]:
        raw = request.headers.get("Count") or request.headers.get("X-FM-Entity-Count") or "50"
        try:
            size = int(raw)
            page = int(request.query.get("page", "0"))
        except ValueError:
            raise Invalid(None, "Count and page must be integers.", code=901) from None
        if size < 1 or page < 0:
            raise Invalid(None, "Count must be positive and page at least 0.", code=901)
        return min(size, self.max_page_size), page

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        refused = self._guard(request)
        if refused is not None:
            return refused
        entity = request.match_info["entity"]
        if entity not in ENTITIES:
            return _error(404, 910, f"The resource '{entity}' does not exist.")
        try:
            if request.method == "GET":
                return self._list(request, entity)
            if request.method == "POST" and entity in WRITABLE:
                row = self.insert(entity, await self._body(request))
                if await self.after_commit():
                    return _error(500, 900, "An error has occurred.")
                return web.json_response({"Message": "entity created", "id": row["id"]},
                                         dumps=_dumps)
            return _error(405, 405, f"{request.method} is not allowed on {entity}.")
        except (Invalid, WhereError) as exc:
            return self._invalid(exc)

    async def _one(self, request: web.Request) -> web.StreamResponse:
        refused = self._guard(request)
        if refused is not None:
            return refused
        entity, raw = request.match_info["entity"], request.match_info["id"]
        if entity not in ENTITIES:
            return _error(404, 910, f"The resource '{entity}' does not exist.")
        try:
            rid = int(raw) if raw.isdigit() else None
            if request.method == "GET":
                row = self.data[entity].get(rid) if rid is not None else None
                if row is None:
                    raise Invalid(None, f"The resource {entity}/{raw} does not exist.", 910)
                return web.json_response(self.shape(entity, row), dumps=_dumps)
            if entity not in WRITABLE or request.method not in ("PUT", "DELETE"):
                return _error(405, 405, f"{request.method} is not allowed on {entity}.")
            if request.method == "DELETE":
                self.soft_delete(entity, rid)
                if await self.after_commit():
                    return _error(500, 900, "An error has occurred.")
                return web.json_response({"Message": "entity deleted"}, dumps=_dumps)
            body = await self._body(request)
            self._live(entity, rid)
            self.modify(entity, rid, body)
            if await self.after_commit():
                return _error(500, 900, "An error has occurred.")
            return web.json_response({"Message": "entity updated", "id": rid}, dumps=_dumps)
        except (Invalid, WhereError) as exc:
            return self._invalid(exc)

    @staticmethod
    def _invalid(exc: Exception) -> web.Response:
        if isinstance(exc, WhereError):
            return _error(400, 901, f"The SQL is not generated correctly: {exc}")
        assert isinstance(exc, Invalid)
        return _error(400, exc.code, exc.message, (exc.field,) if exc.field else ())

    @staticmethod
    async def _body(request: web.Request) -> Any:
        try:
            return orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise Invalid(None, "The request body is not valid JSON.") from None

    def _list(self, request: web.Request, entity: str) -> web.Response:
        q = request.query
        size, page = self._paging(request)
        names = {"id", *SCHEMA[entity], *COMPUTED}
        node = parse(q["where"]) if q.get("where", "").strip() else None
        pred = compile_where(node, names) if node is not None else None
        order = parse_order(q["order"]) if q.get("order", "").strip() else None
        sort_keys = [(compile_operand(operand, names), desc) for operand, desc in order or []]
        data = self.data[entity]
        keyset = order is not None and len(order) == 2 and _is_key(order[0][0]) \
            and not order[0][1] and isinstance(order[1][0], Name) \
            and order[1][0].name == "id" and not order[1][1]
        start = page * size
        if keyset:
            index = self._index[entity]
            lo, hi, exact = key_range(node, _is_key) if node is not None \
                else (None, None, True)
            i = 0 if lo is None else bisect.bisect_right(index, lo)
            j = len(index) if hi is None else bisect.bisect_right(index, hi)
            if exact:
                total = max(0, j - i)
                rows = [data[k[1]] for k in index[i + start:min(j, i + start + size)]]
            else:
                matched = [data[k[1]] for k in index[i:j] if pred is None or pred(data[k[1]])]
                total, rows = len(matched), matched[start:start + size]
        else:
            candidates = id_candidates(node) if node is not None else None
            if candidates is not None:
                source = [data[c] for c in sorted(x for x in candidates
                                                  if isinstance(x, int) and x in data)]
            else:
                ext = id_candidates(node, "extId") if node is not None else None
                if ext is not None:
                    ids = set().union(*(self._ext_all[entity].get(str(x).casefold(), set())
                                        for x in ext if x is not None))
                    source = [data[i] for i in sorted(ids)]
                else:
                    source = list(data.values())
            matched = [r for r in source if pred is None or pred(r)]
            for get, desc in reversed(sort_keys):
                matched.sort(key=lambda r, get=get: _sort_key(get(r)), reverse=desc)
            total, rows = len(matched), matched[start:start + size]
        headers = {"X-FM-Entity-Count": str(total)}
        if start + size < total:
            headers["X-FM-Next-Page"] = str(page + 1)
        return web.json_response([self.shape(entity, r) for r in rows], headers=headers,
                                 dumps=_dumps)


def _sort_key(value: Any) -> tuple:
    """Nulls first (ascending), text case-insensitively, as SQL Server sorts."""
    if value is None:
        return (0, 0)
    return (1, value.casefold() if isinstance(value, str) else value)
