"""An imitation of the Sage CRM SData 2.0 REST API (``/sdata/{install}j/sagecrm2/-/...``) for
tests, the demo and benchmarks.

What it serves, as documented: HTTP Basic auth (401 otherwise); the entities ``Company``,
``Person``, ``Address``, ``Phone`` and ``Email``; an entry ``Company('43')``; a feed
``Company?where=...&startIndex=1&count=50&orderBy=...`` answering ``$totalResults``,
``$startIndex``, ``$itemsPerPage`` and ``$resources`` (entries with ``$key``, ``$title``,
``$url`` and the fields); ``where=`` through a real parser (``where.py``); POST (creates),
PATCH and PUT (both a partial update), DELETE (empty body); soft deletes (``comp_deleted`` = 1)
that the API stops returning; custom fields as plain ``comp_...`` columns described by
``$prototypes/{entity}``.

Choices where the documentation is silent (uncertain in the vendor facts):

- ``startIndex`` is 1-based; ``count`` is capped at 100 per page (SData 1's cap);
- ``orderBy`` takes a comma list (``comp_updateddate asc, comp_companyid asc``); default
  order: by id;
- dates are answered as ISO 8601 UTC with microseconds and ``Z``; a where date literal is
  ``@...@`` or a quoted ISO date-time, UTC when it has no zone;
- field names are answered lower case and accepted in any case on writes (``Comp_Name``);
- the error body is ``{"$diagnoses": [{"$severity": "error", "$sdataCode": ..., "$message":
  ..., "$source": field}]}``; an unknown field or a missing required field is a 400;
- ``$prototypes/{entity}`` answers ``{"$name": entity, "fields": [{"name", "label", "type",
  "custom"}]}``;
- deleted rows are left out of feeds and entries (404), so a delete looks like disappearance;
- the Company custom fields the BOB 50 link adds: ``comp_bobsync`` (``Y`` or null, the
  "BobSync" box), ``comp_vatnumber`` (the VAT number as typed), ``comp_sector`` and
  ``comp_employees``; ``comp_type`` is ``Customer``, ``Prospect``, ``Supplier``... ;
- ``comp_updateddate`` moves on every write, through the API or by a user (``edit``).
"""
from __future__ import annotations

import base64
import random
from datetime import datetime
from typing import Any

from aiohttp import web

from connectors.sage_crm.where import WhereError, compile_where, parse, parse_order
from connectors.sandbox import Clock, Sandbox

MAX_COUNT = 100
USER, PASSWORD = "admin", "sandbox"

# entity -> (prefix, id field, fields: name -> (label, type, custom, required))
ENTITIES: dict[str, tuple[str, str, dict[str, tuple[str, str, bool, bool]]]] = {
    "Company": ("comp", "comp_companyid", {
        "comp_name": ("Company Name", "string", False, True),
        "comp_type": ("Type", "selection", False, False),
        "comp_status": ("Status", "selection", False, False),
        "comp_website": ("Website", "string", False, False),
        "comp_primaryaddressid": ("Primary Address", "integer", False, False),
        "comp_vatnumber": ("VAT Number", "string", True, False),
        "comp_bobsync": ("BobSync", "checkbox", True, False),
        "comp_sector": ("Sector", "string", True, False),
        "comp_employees": ("Employees", "integer", True, False),
    }),
    "Person": ("pers", "pers_personid", {
        "pers_companyid": ("Company", "integer", False, False),
        "pers_firstname": ("First Name", "string", False, False),
        "pers_lastname": ("Last Name", "string", False, True),
        "pers_title": ("Title", "string", False, False),
    }),
    "Address": ("addr", "addr_addressid", {
        "addr_companyid": ("Company", "integer", False, False),
        "addr_address1": ("Address 1", "string", False, False),
        "addr_postcode": ("Zip Code", "string", False, False),
        "addr_city": ("City", "string", False, False),
        "addr_country": ("Country", "string", False, False),
    }),
    "Phone": ("phon", "phon_phoneid", {
        "phon_companyid": ("Company", "integer", False, False),
        "phon_type": ("Type", "string", False, False),
        "phon_number": ("Number", "string", False, True),
    }),
    "Email": ("emai", "emai_emailid", {
        "emai_companyid": ("Company", "integer", False, False),
        "emai_type": ("Type", "string", False, False),
        "emai_emailaddress": ("E-mail", "string", False, True),
    }),
}
_NAMES = ["Peeters", "Janssens", "Maes", "Jacobs", "Dubois", "Lambert", "Dupont", "Willems"]


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SageCrmSandbox(Sandbox):
    system = "sage_crm"
    url_setting = "base_url"

    def __init__(self, *, seed: int = 0, records: int = 0, clock: Clock | None = None,
                 install: str = "crm") -> None:
        self.install = install
        self.data: dict[str, dict[int, dict]] = {e: {} for e in ENTITIES}
        self._next = {e: 1 for e in ENTITIES}
        super().__init__(seed=seed, records=records, clock=clock)

    @property
    def base(self) -> str:
        return f"/sdata/{self.install}j/sagecrm2/-/"

    def routes(self) -> list[web.RouteDef]:
        path = "/sdata/{install}/sagecrm2/-/{rest:.*}"
        return [web.route(m, path, self._handle) for m in ("GET", "POST", "PATCH", "PUT",
                                                            "DELETE")]

    def records_in(self, body: Any) -> list[dict]:
        if isinstance(body, dict) and isinstance(body.get("$resources"), list):
            return body["$resources"]
        return super().records_in(body)

    # --- data, as users and tests see it -------------------------------------------------
    def add(self, entity: str, **fields: Any) -> dict:
        prefix, key, _ = ENTITIES[entity]
        rid = self._next[entity]
        self._next[entity] += 1
        now = self.stamp()
        row = {k.lower(): v for k, v in fields.items()}
        row.update({key: rid, f"{prefix}_createddate": now, f"{prefix}_updateddate": now,
                    f"{prefix}_deleted": None})
        self.data[entity][rid] = row
        return row

    def edit(self, entity: str, rid: int, **fields: Any) -> dict:
        prefix = ENTITIES[entity][0]
        row = self.data[entity][int(rid)]
        row.update({k.lower(): v for k, v in fields.items()})
        row[f"{prefix}_updateddate"] = self.stamp()
        return row

    def remove(self, entity: str, rid: int) -> None:
        """A user's delete: the soft delete flag."""
        self.edit(entity, rid, **{f"{ENTITIES[entity][0]}_deleted": 1})

    def live(self, entity: str = "Company") -> list[dict]:
        prefix = ENTITIES[entity][0]
        return [r for r in self.data[entity].values() if not r.get(f"{prefix}_deleted")]

    def seed(self, n: int, rng: random.Random) -> None:
        for i in range(n):
            name = f"{rng.choice(_NAMES)} {rng.choice(('BV', 'NV', 'SRL'))} {i + 1}"
            kind = rng.choice(("Customer", "Customer", "Prospect", "Supplier"))
            c = self.add("Company", comp_name=name, comp_type=kind, comp_status="Active",
                         comp_website=None, comp_bobsync="Y" if kind == "Customer" else None,
                         comp_vatnumber=f"BE0{rng.randrange(10**8, 10**9)}",
                         comp_sector=rng.choice(("Bouw", "Retail", None)))
            self.add("Person", pers_companyid=c["comp_companyid"], pers_firstname="An",
                     pers_lastname=rng.choice(_NAMES))

    def touch(self, rng: random.Random) -> str:
        live = self.live()
        if not live:
            return "nothing"
        c = rng.choice(live)
        self.edit("Company", c["comp_companyid"], comp_website=f"https://www.c{rng.randrange(999)}.be")
        return f"changed the website of company {c['comp_companyid']}"

    # --- the API -------------------------------------------------------------------------
    def _auth_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, pwd = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return (user, pwd) == (USER, PASSWORD)

    @staticmethod
    def _error(status: int, code: str, message: str, source: str | None = None
               ) -> web.Response:
        diag = {"$severity": "error", "$sdataCode": code, "$message": message}
        if source:
            diag["$source"] = source
        return web.json_response({"$diagnoses": [diag]}, status=status)

    def _entry(self, entity: str, row: dict) -> dict:
        prefix, key, fields = ENTITIES[entity]
        out = {"$key": str(row[key]), "$title": str(row.get(f"{prefix}_name") or
                                                  row.get("pers_lastname") or row[key]),
               "$url": f"{self.url}{self.base}{entity}('{row[key]}')"}
        for k, v in row.items():
            if k != f"{prefix}_deleted":
                out[k] = _iso(v) if isinstance(v, datetime) else v
        return out

    def _known(self, entity: str) -> set[str]:
        prefix, key, fields = ENTITIES[entity]
        return set(fields) | {key, f"{prefix}_createddate", f"{prefix}_updateddate"}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self._auth_ok(request):
            return self._error(401, "AuthenticationFailed", "invalid user name or password")
        if request.match_info["install"] != f"{self.install}j":
            return self._error(404, "ResourceNotFound", "unknown installation")
        rest = request.match_info["rest"]
        if rest.startswith("$prototypes/"):
            return self._prototype(rest.split("/", 1)[1])
        entity, _, key = rest.partition("(")
        if entity not in ENTITIES:
            return self._error(404, "ResourceKindNotFound", f"unknown resource kind {entity!r}")
        rid: int | None = None
        if key:
            raw = key.rstrip(")").strip("'")
            if not raw.isdigit():
                return self._error(400, "BadUrlSyntax", f"bad key {key!r}")
            rid = int(raw)
        try:
            if request.method == "GET":
                return self._get(request, entity, rid)
            if request.method == "POST" and rid is None:
                return await self._write(request, entity, None)
            if request.method in ("PATCH", "PUT") and rid is not None:
                return await self._write(request, entity, rid)
            if request.method == "DELETE" and rid is not None:
                return await self._delete(entity, rid)
        except WhereError as exc:
            return self._error(400, "BadWhereSyntax", str(exc))
        return self._error(405, "MethodNotAllowed", f"{request.method} {rest}")

    def _prototype(self, entity: str) -> web.Response:
        if entity not in ENTITIES:
            return self._error(404, "ResourceKindNotFound", f"unknown resource kind {entity!r}")
        prefix, key, fields = ENTITIES[entity]
        out = [{"name": key, "label": "Id", "type": "integer", "custom": False}]
        out += [{"name": n, "label": lab, "type": t, "custom": c}
                for n, (lab, t, c, _) in fields.items()]
        return web.json_response({"$name": entity, "fields": out})

    def _live_row(self, entity: str, rid: int) -> dict | None:
        row = self.data[entity].get(rid)
        if row is None or row.get(f"{ENTITIES[entity][0]}_deleted"):
            return None
        return row

    def _get(self, request: web.Request, entity: str, rid: int | None) -> web.Response:
        if rid is not None:
            row = self._live_row(entity, rid)
            if row is None:
                return self._error(404, "ResourceNotFound", f"{entity}('{rid}') not found")
            return web.json_response(self._entry(entity, row))
        q = request.query
        known = self._known(entity)
        rows = self.live(entity)
        if q.get("where"):
            test = compile_where(parse(q["where"]), known)
            rows = [r for r in rows if test(r)]
        order = parse_order(q["orderBy"], known) if q.get("orderBy") else \
            [(ENTITIES[entity][1], False)]
        for name, desc in reversed(order):
            rows.sort(key=lambda r: (r.get(name) is not None, r.get(name)), reverse=desc)
        try:
            start = int(q.get("startIndex", "1"))
            count = int(q.get("count", str(MAX_COUNT)))
        except ValueError:
            return self._error(400, "BadQueryParameter", "startIndex and count are integers")
        if start < 1 or count < 0:
            return self._error(400, "BadQueryParameter", "startIndex starts at 1")
        count = min(count, MAX_COUNT)
        page = rows[start - 1:start - 1 + count]
        return web.json_response({"$totalResults": len(rows), "$startIndex": start,
                                  "$itemsPerPage": len(page),
                                  "$resources": [self._entry(entity, r) for r in page]})

    async def _write(self, request: web.Request, entity: str, rid: int | None
                     ) -> web.Response:
        prefix, key, fields = ENTITIES[entity]
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "BadPayload", "the body is not JSON")
        if not isinstance(body, dict):
            return self._error(400, "BadPayload", "the body is not an object")
        values = {k.lower(): v for k, v in body.items()}
        for k in values:
            if k not in fields:
                return self._error(400, "UnknownField", f"{k} is not a writable field of "
                                   f"{entity}", k)
        row = None
        if rid is not None:
            row = self._live_row(entity, rid)
            if row is None:
                return self._error(404, "ResourceNotFound", f"{entity}('{rid}') not found")
        merged = {**(row or {}), **values}
        for name, (label, _, _, required) in fields.items():
            if required and not merged.get(name):
                return self._error(400, "MissingRequiredField", f"{label} is required", name)
        if row is None:
            row = self.add(entity, **values)
            status = 201
        else:
            row = self.edit(entity, rid, **values)
            status = 200
        if await self.after_commit():
            return self._error(500, "InternalError", "the server failed after saving")
        return web.json_response(self._entry(entity, row), status=status)

    async def _delete(self, entity: str, rid: int) -> web.Response:
        if self._live_row(entity, rid) is None:
            return self._error(404, "ResourceNotFound", f"{entity}('{rid}') not found")
        self.remove(entity, rid)
        if await self.after_commit():
            return self._error(500, "InternalError", "the server failed after deleting")
        return web.Response(status=204)
