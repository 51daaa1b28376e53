"""An aiohttp imitation of the Prospect CRM (prospect365) OData v4 API, for tests and demos.

What the public documentation says (docs.prospect365.com, "Get started with the OData API",
"Query the OData API") and this sandbox does:

- Base URL ``https://crm-odata-v1.prospect365.com``; entity sets at the root (``/Contacts``).
- Auth: ``Authorization: Bearer <Personal Access Token>`` on every request. A missing or
  wrong token answers 401 with an OData error body and ``WWW-Authenticate: Bearer``.
- Rate limit: 1,200 requests per 10 minutes, sliding window, for the whole workspace (not
  per token); beyond it 429 and the request is not queued. The sandbox counts authenticated
  requests against ``self.clock`` (so tests step time instead of sleeping) and sends
  ``Retry-After`` (whole seconds until the oldest request leaves the window).
- Query options: ``$select``, ``$expand``, ``$filter``, ``$orderby``, ``$top``, ``$skip``,
  ``$count``. Filter subset: see ``odata.py`` (eq/ne/gt/ge/lt/le, and/or/not, in, brackets,
  tolower/toupper/trim/contains/startswith/endswith, paths such as ``MainAddress/Postcode``
  and ``AccountManager/UserName``, DateTimeOffset literals unquoted).
- Soft delete: records carry ``StatusFlag`` (``'A'`` active, ``'D'`` deleted); integrations
  filter ``StatusFlag ne 'D'``.

Routes::

    GET    /                         service document (entity sets, the Tenant singleton)
    GET    /Tenant                   the workspace: {"TenantId", "Name"} (see the choices)
    GET    /Companies | /Contacts | /Users            collection (query options above)
    GET    /Companies(1) | /Contacts(7) | /Users('AM') single entity ($select, $expand)
    POST   /Companies | /Contacts    create: 201 + entity + Location (Prefer return=minimal: 204)
    PATCH  /Companies(1) | /Contacts(7)                partial update (see Prefer below)
    DELETE /Companies(1) | /Contacts(7)                soft delete: StatusFlag 'D', 204

Choices where the documentation is silent:

- Model. The real service keeps a Company -> Division -> Contact hierarchy, the phone and
  website on the division/ledger and the address on an ``Addresses`` row. The sandbox folds
  one default division into its company: ``Companies`` carries ``Name``, ``Telephone``,
  ``Website``, ``AccountManagerId`` (a ``UserCode``), navigation ``AccountManager`` (a User,
  via ``$expand``) and a complex property ``MainAddress`` {``AddressLine1``..``AddressLine5``,
  ``Postcode``, ``Country``} (line 3 = town, line 4 = county, as Prospect tenants use them).
  ``Contacts`` carry ``CompanyId`` (the real ``DivisionId``), ``Title``, ``Forename``,
  ``Surname``, ``JobTitle``, ``Email``, ``PhoneNumber``, ``MobilePhoneNumber``, ``Fax``.
  ``Users`` (read only) carry ``UserCode``, ``UserName``, ``EmailAddress``. Every record has
  ``StatusFlag``, ``Created`` and ``LastUpdatedTimestamp`` (UTC, microseconds, set from
  ``self.clock`` on every write, serialised ``2024-05-01T10:00:00.000000Z``). Keys are
  integers from 1 (users: short codes).
- Paging: at most ``max_page_size`` (default 500) entities per response; when more remain and
  the client asked for more (or gave no ``$top``), ``@odata.nextLink`` carries ``$skip``
  (and the remaining ``$top``). Without ``$orderby`` results come in key order.
- PATCH answers 204; with ``Prefer: return=representation`` it answers 200 with the stored
  entity (query options ``$select``/``$expand`` on the PATCH/POST URL shape that body) and
  ``Preference-Applied``. Complex ``MainAddress`` is merged line by line (OData 4.01 rule).
- DELETE is a soft delete (``StatusFlag = 'D'`` and a new ``LastUpdatedTimestamp``), so
  deletions show up in a changed-since query. GET of a deleted key still answers (with
  ``StatusFlag 'D'``), PATCH or DELETE of one answers 404.
- Validation (400, OData error, ``details[].target`` = the property, ``/`` for nested):
  unknown properties; wrong types; ``Name`` required (companies); ``Surname`` and an existing
  active ``CompanyId`` required (contacts); ``AccountManagerId`` must be a user code;
  ``Website`` must look like a web address; ``Email`` like an e-mail address; text lengths
  (see ``schema.py``). Computed properties (keys, ``StatusFlag``, ``Created``,
  ``LastUpdatedTimestamp``) are ignored on write.
- Normalisation: text is trimmed, empty text becomes null, postcodes are upper-cased.
- Malformed query options answer 400 with code ``BadRequest``; unknown keys 404.
- Instance: the public documentation names no resource for "which workspace is this". The
  sandbox serves an OData singleton ``Tenant`` (``{"TenantId", "Name"}``), the shape OData
  services give to such per-tenant facts; ``TenantId`` is the sandbox's ``instance_id``, a
  random id made when the sandbox is built, so two generations (even with one seed) are two
  tenants. The connector falls back to a hash of the token where a service has no ``Tenant``.
- Faults (``connectors/sandbox.py``): every POST, PATCH and DELETE honours
  ``fail_after_commit`` and ``hang_after_commit``; ``drop_fields`` applies to collections,
  single entities and write answers; ``clock_ahead`` moves ``Created`` and
  ``LastUpdatedTimestamp``; the ``Date`` header follows ``self.clock``.
"""
from __future__ import annotations

import functools
import math
import random
import re
from collections import deque
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from connectors.prospect_crm import schema
from connectors.prospect_crm.odata import (ODataError, compile_filter, format_datetime,
                                           hint_of, parse_orderby)
from connectors.sandbox import Clock, Sandbox, json_answer
from connectors.sandbox_index import Row, Table, first

MODIFIED = "LastUpdatedTimestamp"
_PATH = re.compile(r"^/(Companies|Contacts|Users)(?:\((.*)\))?/?$")
_EXPAND = re.compile(r"^(\w+)(?:\(\$select=([\w,]+)\))?$")


@functools.lru_cache(maxsize=256)
def _read_options(name: str, select_text: str, expand_text: str
                  ) -> tuple[list[str], dict[str, list[str]]]:
    """``$select`` and ``$expand`` of the entity set ``name`` read, or ODataError. Every
    create and read of an entity set asks the same few: read once each (the reading was a
    tenth of a create). Keyed by the set's name: an ``EntitySet`` holds dicts, no hash."""
    es = schema.SETS[name]
    select = [s.strip() for s in select_text.split(",") if s.strip()]
    for prop in select:
        if prop not in ProspectSandbox._props(es):
            raise ODataError(f"Could not find a property named '{prop}' on "
                             f"'{es.type_name}'.")
    expand: dict[str, list[str]] = {}
    for part in filter(None, re.split(r",(?![^(]*\))", expand_text)):
        m = _EXPAND.match(part.strip())
        if not m or m.group(1) != "AccountManager" or es is not schema.COMPANIES:
            raise ODataError(f"Cannot expand '{part}' on '{es.type_name}'.")
        expand["AccountManager"] = (m.group(2) or "").split(",") if m.group(2) else []
    return select, expand


def _place(candidates: tuple) -> tuple:
    """Where ("since", stamp, key) starts in the modified-at order, to compare two."""
    _, stamp, key = candidates
    return (stamp,) if key is None else (stamp, _key_order(key))


def _key_order(key: Any) -> tuple:
    return (0, key) if isinstance(key, int) else (1, str(key))


def _error(status: int, code: str, message: str, target: str | None = None,
           headers: dict | None = None) -> web.Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if target:
        err["target"] = target
        err["details"] = [{"code": code, "message": message, "target": target}]
    return json_answer({"error": err}, status, headers)


class ProspectSandbox(Sandbox):
    system = "prospect_crm"
    persisted = ("data", "_next_key")                                    # keep_in()

    def __init__(self, *, seed: int = 0, records: int = 0, clock: Clock | None = None,
                 token: str = "sandbox-token", rate_limit: int = 1200,
                 rate_window: float = 600.0, max_page_size: int = 500) -> None:
        self.token = token
        self.rate_limit, self.rate_window = rate_limit, rate_window
        self.max_page_size = max_page_size
        self._calls: deque[float] = deque()
        self.rejected = 0                       # 429s answered
        self.data: dict[str, dict[Any, dict]] = {"Companies": Table(MODIFIED),
                                                 "Contacts": Table(MODIFIED),
                                                 "Users": {}}
        self._next_key = {"Companies": 1, "Contacts": 1}
        for code, name in schema.DEFAULT_USERS:
            self.add_user(code, name)
        super().__init__(seed=seed, records=records, clock=clock)

    # --- data ------------------------------------------------------------------------------
    def add_user(self, code: str, name: str) -> None:
        self.data["Users"][code] = {"UserCode": code, "UserName": name,
                                    "EmailAddress": f"{name.split()[0].lower()}@crm.example"}

    def insert(self, set_name: str, body: dict) -> dict:
        """Validate and store a new entity (as POST does); raises schema.Invalid."""
        es = schema.SETS[set_name]
        changes = schema.clean(es, body, None)
        self._check_refs(set_name, changes)
        key = self._next_key[set_name]
        self._next_key[set_name] += 1
        now = self.stamp()
        entity = {es.key: key, **{p: None for p in es.text}, **changes, "StatusFlag": "A",
                  "Created": now, "LastUpdatedTimestamp": now}
        if set_name == "Companies":
            entity.setdefault("MainAddress", {k: None for k in schema.ADDRESS_FIELDS})
            entity["MainAddress"] = entity["MainAddress"] or {k: None for k in
                                                              schema.ADDRESS_FIELDS}
        self.data[set_name][key] = Row(entity)
        return self.data[set_name][key]

    def modify(self, set_name: str, key: Any, body: dict) -> dict:
        """Validate and apply a partial update (as PATCH does); raises schema.Invalid."""
        entity = self.data[set_name][key]
        changes = schema.clean(schema.SETS[set_name], body, entity)
        self._check_refs(set_name, changes)
        entity.update(changes)
        entity["LastUpdatedTimestamp"] = self.stamp()
        return entity

    def _check_refs(self, set_name: str, changes: dict) -> None:
        manager = changes.get("AccountManagerId")
        if manager is not None and manager not in self.data["Users"]:
            raise schema.Invalid("AccountManagerId",
                                 f"The account manager '{manager}' is not a user of this CRM.")
        if set_name == "Contacts" and "CompanyId" in changes:
            company = self.data["Companies"].get(changes["CompanyId"])
            if company is None or company["StatusFlag"] == "D":
                raise schema.Invalid("CompanyId",
                                     f"The company {changes['CompanyId']} does not exist.")

    def seed(self, n: int, rng: random.Random) -> None:
        users = list(self.data["Users"])
        for _ in range(n):
            company = self.insert("Companies", schema.company_body(rng, users))
            for _ in range(rng.randint(0, 3)):
                self.insert("Contacts", schema.contact_body(rng, company["CompanyId"],
                                                            company["Website"]))

    def touch(self, rng: random.Random) -> str:
        companies = [c for c in self.data["Companies"].values() if c["StatusFlag"] == "A"]
        contacts = [c for c in self.data["Contacts"].values() if c["StatusFlag"] == "A"]
        if not companies:
            self.seed(1, rng)
            return "created a company"
        choice = rng.randrange(4) if contacts else rng.randrange(2)
        if choice == 0:
            c = rng.choice(companies)
            self.modify("Companies", c["CompanyId"], {"Telephone": schema.phone(rng)})
            return f"Companies({c['CompanyId']}): Telephone -> {c['Telephone']}"
        if choice == 1:
            c = rng.choice(companies)
            self.modify("Companies", c["CompanyId"],
                        {"AccountManagerId": rng.choice(list(self.data["Users"]))})
            return f"Companies({c['CompanyId']}): AccountManagerId -> {c['AccountManagerId']}"
        p = rng.choice(contacts)
        if choice == 2:
            self.modify("Contacts", p["ContactId"], {"MobilePhoneNumber": schema.mobile(rng)})
            return f"Contacts({p['ContactId']}): MobilePhoneNumber -> {p['MobilePhoneNumber']}"
        self.modify("Contacts", p["ContactId"], {"JobTitle": rng.choice(
            ["Director", "Buyer", "Office Manager", "Finance Manager"])})
        return f"Contacts({p['ContactId']}): JobTitle -> {p['JobTitle']}"

    def restored(self) -> None:
        """Records read back from a file: indexed again."""
        for name in ("Companies", "Contacts"):
            self.data[name] = Table(MODIFIED, rows=(
                (k, Row(v)) for k, v in self.data[name].items()))

    # --- serving ---------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/", self._service_document),
                web.get("/Tenant", self._tenant),
                web.route("*", "/{tail:.+}", self._dispatch)]

    async def _service_document(self, request: web.Request) -> web.Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        return web.json_response({"@odata.context": f"{self._base(request)}/$metadata",
                                  "value": [{"name": n, "kind": "EntitySet", "url": n}
                                            for n in schema.SETS]
                                  + [{"name": "Tenant", "kind": "Singleton", "url": "Tenant"}]})

    async def _tenant(self, request: web.Request) -> web.Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        return self._json(request, {"@odata.context": f"{self._base(request)}/$metadata#Tenant",
                                    "TenantId": self.instance_id,
                                    "Name": "Sandbox workspace"})

    def _guard(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            return _error(401, "Unauthorized",
                          "Authorization has been denied for this request.",
                          headers={"WWW-Authenticate": "Bearer"})
        now = self.clock.now().timestamp()
        while self._calls and now - self._calls[0] >= self.rate_window:
            self._calls.popleft()
        if len(self._calls) >= self.rate_limit:
            self.rejected += 1
            wait = max(1, math.ceil(self.rate_window - (now - self._calls[0])))
            return _error(429, "TooManyRequests",
                          f"Rate limit of {self.rate_limit} requests per "
                          f"{self.rate_window:g} seconds exceeded.",
                          headers={"Retry-After": str(wait)})
        self._calls.append(now)
        return None

    @staticmethod
    def _base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        refused = self._guard(request)
        if refused is not None:
            return refused
        m = _PATH.match(request.path)
        if not m:
            return _error(404, "NotFound", f"No resource matches '{request.path}'.")
        set_name, raw_key = m.group(1), m.group(2)
        es = schema.SETS[set_name]
        method = request.method
        try:
            if raw_key is None:
                if method == "GET":
                    return self._collection(request, es)
                if method == "POST" and es is not schema.USERS:
                    return await self._create(request, es)
                return _error(405, "MethodNotAllowed", f"{method} is not allowed here.")
            key = self._key(es, raw_key)
            entity = self.data[set_name].get(key)
            if entity is None:
                return _error(404, "NotFound",
                              f"No {es.type_name} with key {raw_key} was found.")
            if method == "GET":
                return self._json(request, self._shape(request, es, entity))
            if es is schema.USERS or method not in ("PATCH", "DELETE"):
                return _error(405, "MethodNotAllowed", f"{method} is not allowed here.")
            if entity["StatusFlag"] == "D":
                return _error(404, "NotFound", f"{es.type_name} {raw_key} has been deleted.")
            if method == "DELETE":
                entity["StatusFlag"] = "D"
                entity["LastUpdatedTimestamp"] = self.stamp()
                if await self.after_commit():
                    return _error(500, "InternalServerError", "An error has occurred.")
                return web.Response(status=204)
            return await self._update(request, es, key)
        except ODataError as exc:
            return _error(400, "BadRequest", str(exc))
        except schema.Invalid as exc:
            return _error(400, "ValidationFailed", exc.message, target=exc.target or None)

    @staticmethod
    def _key(es: schema.EntitySet, raw: str) -> Any:
        if es.key_type is int:
            if not re.fullmatch(r"\d+", raw):
                raise ODataError(f"The key value '{raw}' is not a valid Edm.Int32.")
            return int(raw)
        if not (len(raw) >= 2 and raw[0] == raw[-1] == "'"):
            raise ODataError(f"The key value {raw} is not a valid Edm.String.")
        return raw[1:-1].replace("''", "'")

    async def _body(self, request: web.Request) -> Any:
        try:
            return orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise schema.Invalid("", "The request body is not valid JSON.") from None

    async def _create(self, request: web.Request, es: schema.EntitySet) -> web.Response:
        self._shape(request, es, None)          # refuse bad query options before writing
        entity = self.insert(es.name, await self._body(request))
        if await self.after_commit():
            return _error(500, "InternalServerError", "An error has occurred.")
        location = f"{self._base(request)}/{es.name}({entity[es.key]})"
        if "return=minimal" in request.headers.get("Prefer", ""):
            return web.Response(status=204, headers={"Location": location,
                                                     "OData-EntityId": location,
                                                     "Preference-Applied": "return=minimal"})
        return self._json(request, self._shape(request, es, entity), status=201,
                          headers={"Location": location})

    async def _update(self, request: web.Request, es: schema.EntitySet, key: Any):
        self._shape(request, es, None)
        entity = self.modify(es.name, key, await self._body(request))
        if await self.after_commit():
            return _error(500, "InternalServerError", "An error has occurred.")
        if "return=representation" in request.headers.get("Prefer", ""):
            return self._json(request, self._shape(request, es, entity),
                              headers={"Preference-Applied": "return=representation"})
        return web.Response(status=204)

    # --- querying --------------------------------------------------------------------------
    def _get(self, es: schema.EntitySet, entity: dict, path: str) -> Any:
        head, _, rest = path.partition("/")
        if head == "AccountManager" and es is schema.COMPANIES:
            user = self.data["Users"].get(entity.get("AccountManagerId"))
            if not rest:
                raise ODataError("Navigation property 'AccountManager' needs a property path.")
            if rest not in ("UserCode", "UserName", "EmailAddress"):
                raise ODataError(f"Could not find a property named '{rest}' on "
                                 "'Prospect.User'.")
            return None if user is None else user[rest]
        if head == "MainAddress" and es is schema.COMPANIES and rest:
            if rest not in schema.ADDRESS_FIELDS:
                raise ODataError(f"Could not find a property named '{rest}' on "
                                 "'Prospect.Address'.")
            return (entity.get("MainAddress") or {}).get(rest)
        if rest or (head not in entity and head not in self._props(es)):
            raise ODataError(f"Could not find a property named '{path}' on '{es.type_name}'.")
        return entity.get(head)

    @staticmethod
    def _props(es: schema.EntitySet) -> set[str]:
        if es is schema.USERS:
            return {"UserCode", "UserName", "EmailAddress"}
        return {*es.text, *es.other, *es.computed}

    def _shape(self, request: web.Request, es: schema.EntitySet, entity: dict | None):
        """The entity as JSON-ready dict after $select/$expand (validated even if None)."""
        q = request.query
        select, expand = _read_options(es.name, q.get("$select", ""), q.get("$expand", ""))
        if entity is None:
            return None
        out = {k: (format_datetime(v) if isinstance(v, datetime) else
                   dict(v) if isinstance(v, dict) else v)
               for k, v in entity.items() if not select or k in select}
        if "AccountManager" in expand:
            user = self.data["Users"].get(entity.get("AccountManagerId"))
            fields = expand["AccountManager"]
            out["AccountManager"] = None if user is None else {
                k: v for k, v in user.items() if not fields or k in fields}
        return out

    def _collection(self, request: web.Request, es: schema.EntitySet) -> web.Response:
        q = request.query
        table = self.data[es.name]
        pred = (compile_filter(q["$filter"], lambda e, p: self._get(es, e, p))
                if q.get("$filter") else None)
        order = parse_orderby(q["$orderby"]) if q.get("$orderby") else [(es.key, False)]
        for path, _ in order:
            self._get(es, {}, path)             # refuses unknown properties
        try:
            top = int(q["$top"]) if "$top" in q else None
            skip = int(q.get("$skip", "0"))
        except ValueError:
            raise ODataError("$top and $skip must be non-negative integers.") from None
        if (top is not None and top < 0) or skip < 0:
            raise ODataError("$top and $skip must be non-negative integers.")
        self._shape(request, es, None)
        found = self._candidates(es, hint_of(pred)) if pred is not None else None
        if (isinstance(table, Table) and found is not None and found[0] == "since"
                and order == [(MODIFIED, False), (es.key, False)]
                and q.get("$count") != "true"):
            # a changes page: walk the modified-at index from the stamp, stop once the page
            # and one more row are found (the one more says whether a next page exists)
            limit = skip + min(self.max_page_size if top is None else top,
                               self.max_page_size) + 1
            rows = first(table.since(found[1], found[2]), table, pred, limit)
            total = len(rows) if len(rows) < limit else math.inf
        else:
            if found is not None and found[0] == "keys":
                rows = [table[k] for k in sorted(found[1], key=_key_order) if k in table]
            else:
                rows = list(table.values())
            if pred is not None:
                rows = [r for r in rows if pred(r)]
            for path, desc in reversed(order):
                rows.sort(key=lambda r: ((0, 0) if (v := self._get(es, r, path)) is None
                                         else (1, v)), reverse=desc)
            total = len(rows)
        want = total - skip if top is None else top
        take = min(want, self.max_page_size)
        page = rows[skip:skip + take]
        body: dict[str, Any] = {"@odata.context": f"{self._base(request)}/$metadata#{es.name}"}
        if q.get("$count") == "true":
            body["@odata.count"] = total
        body["value"] = [self._shape(request, es, r) for r in page]
        if want > take and skip + take < total:
            params = {k: v for k, v in q.items() if k not in ("$skip", "$top")}
            params["$skip"] = str(skip + take)
            if top is not None:
                params["$top"] = str(top - take)
            body["@odata.nextLink"] = f"{self._base(request)}/{es.name}?" + "&".join(
                f"{k}={quote(v, safe=chr(36) + ',()/:' + chr(39))}" for k, v in params.items())
        return self._json(request, body)

    def _candidates(self, es: schema.EntitySet, hint: Any) -> tuple | None:
        """What the indexes can say about a filter: ("keys", a superset of the matching keys),
        ("since", stamp, key) (every matching row is at or after that place in the
        modified-at order: ``Table.since``), or None (test every row)."""
        table = self.data[es.name]
        if hint is None or not isinstance(table, Table):
            return None
        kind = hint[0]
        if kind in ("eq", "ieq", "ge", "gt"):
            _, path, value = hint
            if path == MODIFIED and isinstance(value, datetime):
                if kind == "ieq":
                    return None
                # later than a stamp: at or after the next one (a stamp's finest step)
                return ("since", value + timedelta(microseconds=1) if kind == "gt" else value,
                        None)
            if kind in ("ge", "gt") or "/" in path or path not in self._props(es):
                return None
            if kind == "eq" and path == es.key:
                return ("keys", {value})
            return ("keys", table.matching(path, value))
        parts = [self._candidates(es, h) for h in hint[1]]
        if kind == "or":
            if any(p is None for p in parts):
                return None
            if all(p[0] == "keys" for p in parts):
                return ("keys", set().union(*(p[1] for p in parts)))
            if all(p[0] == "since" for p in parts):
                return min(parts, key=_place)
            return None
        known = [p for p in parts if p is not None]                 # and: the narrowest
        keys = [p for p in known if p[0] == "keys"]
        if keys:
            return min(keys, key=lambda p: len(p[1]))
        at = {h[2] for h in hint[1] if h[0] == "eq" and h[1] == MODIFIED
              and isinstance(h[2], datetime)}
        after = [h[2] for h in hint[1] if h[0] in ("ge", "gt") and h[1] == es.key
                 and isinstance(h[2], int)]
        if len(at) == 1 and after:
            # a keyset's "at this stamp, from this key on" (the key itself is tested too)
            known.append(("since", at.pop(), max(after)))
        return max(known, key=_place) if known else None

    @staticmethod
    def _json(request: web.Request, body: Any, status: int = 200,
              headers: dict | None = None) -> web.Response:
        return json_answer(body, status, {"OData-Version": "4.0", **(headers or {})})
