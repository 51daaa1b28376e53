"""An aiohttp imitation of ConnectWise Manage (PSA) REST API v3, for the resources DT needs.

Built from ConnectWise's Developer Guide (public copy) and the field lists of its OpenAPI
document (the models of ``connectwise-models.json``: every record this sandbox stores uses
those field names, and a test checks it). What the documents leave open is listed under
"Choices" below.

Routes (under ``/v4_6_release/apis/3.0``, the codebase ``GET /login/companyinfo/{company}``
names)
-------
- ``company/companies``, ``company/contacts``, ``procurement/catalog``,
  ``sales/opportunities``, ``project/projects``, ``project/tickets``,
  ``procurement/products``: ``GET`` (list), ``POST`` (create, 201 with the record),
  ``GET|PATCH|PUT|DELETE /{id}``.
- ``sales/opportunities/{id}/forecast``: ``GET`` the opportunity's forecast
  (``{"id", "forecastItems": [...]}``); ``POST`` one forecast item (the classic
  ForecastItem-shaped body) or a ``Forecast`` with ``forecastItems`` (both are accepted).
- ``sales/opportunities/statuses``, ``system/members``, ``project/boards``: ``GET``
  (reference data, seeded; ``statuses`` has ``wonFlag``/``lostFlag``/``closedFlag``).
- ``system/info``: ``{"version", "isCloud", "serverTimeZone"}`` (a cheap connection check).
- ``GET /login/companyinfo/{companyId}`` (no authentication): ``{"CompanyName", "Codebase",
  "VersionCode", "VersionNumber", "CompanyID", "IsCloud"}``.

Querying: ``conditions`` (``conditions.py``: a real parser, never eval), ``childConditions``
(on ``communicationItems`` of contacts: a record matches when one item does), ``orderBy``
(``field [asc|desc]``, default ``id``), ``page`` (from 1) and ``pageSize`` (default 25, at
most 1000; more is a 400). Navigable paging answers an RFC 5988 ``Link`` header with
``first``/``prev``/``next``/``last``; the last page has no ``next``. Forward-only paging:
request header ``pagination-type: forward-only`` and ``pageId`` (records with ``id > pageId``,
always by id, ``orderBy`` refused, ``page`` ignored); the ``Link`` header's ``next`` carries the
next ``pageId`` on every page that has records, the last one included (as the guide says: the
end is a short page, or an empty one).

Writes: ``PATCH`` takes a JSON-patch list ``[{"op": "replace", "path": "name", "value": ...}]``
(``path`` with or without a leading "/", case-sensitive; ``add`` and ``remove`` too); an
object is replaced whole. ``PUT`` replaces the record (fields not sent go back to their
defaults). References (``company``, ``status``, ``primarySalesRep``, ``catalogItem``,
``board``, ``project``, ``ticket``, ``opportunity``) are given by ``id`` or by their name
(``identifier`` for companies, members and catalog items, ``name`` for the others) and are
stored as ``{"id", "name"|"identifier", "_info"}``.

Errors: ``{"code", "message", "errors": [{"code", "message", "resource", "field"}]}``; a missing
required field is a 400 ``InvalidObject`` with ``MissingRequiredField``; a duplicate
``identifier`` (companies, catalog) a 400 with ``ObjectExists``; an unknown reference a 400
with ``InvalidReference``; an unknown id a 404 ``NotFound``; bad credentials a 401.
Every record carries ``_info.lastUpdated`` (``...Z``, whole seconds) and ``_info.updatedBy``.

Authentication: ``Authorization: Basic base64("{company}+{public}:{private}")`` and a
``clientId`` header on every request but ``companyinfo``.

Choices where the documents are silent
--------------------------------------
- A missing ``clientId`` is a 401 like bad keys (the guide only says it is required).
- Deletes are hard (a 204; the id then answers 404), companies included: the soft-delete
  flags (``deletedFlag``) are kept as fields but never set by this sandbox.
- Required fields: companies ``identifier``, ``name``; contacts ``firstName``; catalog
  ``identifier``, ``description``; opportunities ``name``, ``company``, ``primarySalesRep``
  (``status`` defaults to the status with ``defaultFlag``); projects ``name``, ``company``,
  ``board`` (``estimatedStart``/``estimatedEnd`` default to the creation time); project
  tickets ``summary``, ``project``; products ``catalogItem`` and one of ``opportunity``,
  ``project``, ``ticket``.
- A product with an ``opportunity`` adds a forecast item of type ``Product`` to that
  opportunity (revenue = price x quantity), kept in step with the product and removed with
  it (its ``forecastDetailId`` names the item), as Manage does when products are added to an
  opportunity. A ticket product also gets the ticket's project.
- ``lastUpdated`` in conditions is ``_info/lastUpdated``; text comparisons ignore case.
- A rate limit (``rate_limit`` requests in any ``rate_window`` seconds of the sandbox clock,
  default 1000 a minute, the guide's figure) answers 429 with ``Retry-After`` and the body
  ``{"error": "ConnectWiseAPI", "message": "Too many requests. ..."}``.
"""
from __future__ import annotations

import base64
import random
from collections import deque
from datetime import datetime, timezone
from typing import Any

import orjson
from aiohttp import web

from connectors.connectwise.conditions import ConditionError, matches, parse
from connectors.sandbox import Clock, Sandbox

ROOT = "/v4_6_release/apis/3.0"
MAX_PAGE = 1000
MEMBERS = [("jsmith", "John", "Smith"), ("akumar", "Anita", "Kumar"),
           ("mlopez", "Maria", "Lopez"), ("tnguyen", "Tom", "Nguyen"),
           ("admin", "Admin", "User")]
STATUSES = [("Open", dict(defaultFlag=True)), ("Won", dict(wonFlag=True, closedFlag=True)),
            ("Lost", dict(lostFlag=True, closedFlag=True)), ("No Decision", {})]
BOARDS = ["Professional Services", "Installations"]
COMPANY_WORDS = ["Harbor", "Summit", "Cedar", "Lumen", "Northgate", "Riverside", "Atlas",
                 "Beacon", "Crescent", "Granite"]

# resource path -> (table, record kind in connectwise-models.json)
RESOURCES = {
    "company/companies": ("companies", "Company"),
    "company/contacts": ("contacts", "Contact"),
    "procurement/catalog": ("catalog", "CatalogItem"),
    "sales/opportunities": ("opportunities", "Opportunity"),
    "project/projects": ("projects", "Project"),
    "project/tickets": ("tickets", "ProjectTicket"),
    "procurement/products": ("products", "ProductItem"),
}
REQUIRED = {
    "companies": ("identifier", "name"), "contacts": ("firstName",),
    "catalog": ("identifier", "description"),
    "opportunities": ("name", "company", "primarySalesRep"),
    "projects": ("name", "company", "board"), "tickets": ("summary", "project"),
    "products": ("catalogItem",),
}
UNIQUE = {"companies": "identifier", "catalog": "identifier"}
# reference field -> (table it points at, the name key)
REFS = {
    "company": ("companies", "identifier"), "status": ("statuses", "name"),
    "primarySalesRep": ("members", "identifier"), "manager": ("members", "identifier"),
    "catalogItem": ("catalog", "identifier"), "board": ("boards", "name"),
    "project": ("projects", "name"), "ticket": ("tickets", "summary"),
    "opportunity": ("opportunities", "name"),
}


class CwError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 errors: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def _z(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConnectWiseSandbox(Sandbox):
    system = "connectwise"

    def __init__(self, *, seed: int = 0, records: int = 0, clock: Clock | None = None,
                 company_id: str = "sandbox", public_key: str = "sandbox-public",
                 private_key: str = "sandbox-private",
                 client_id: str = "00000000-0000-0000-0000-00000000c11e",
                 rate_limit: int = 1000, rate_window: float = 60.0) -> None:
        self.company_id, self.public_key = company_id, public_key
        self.private_key, self.client_id = private_key, client_id
        self.rate_limit, self.rate_window = rate_limit, rate_window
        self._calls: deque[datetime] = deque()
        self.data: dict[str, dict[int, dict]] = {t: {} for t, _ in RESOURCES.values()}
        self.data.update(statuses={}, members={}, boards={})
        self.forecasts: dict[int, list[dict]] = {}      # opportunity id -> forecast items
        self._next = 100
        super().__init__(seed=seed, records=0, clock=clock)
        self._reference()
        if records:
            self.seed(records, self.rng)

    # --- data ------------------------------------------------------------------------------
    def _id(self) -> int:
        self._next += 1
        return self._next

    def _info(self, rec: dict) -> None:
        rec["_info"] = {"lastUpdated": _z(self.stamp()), "updatedBy": "accord"}

    def _reference(self) -> None:
        for ident, first, last in MEMBERS:
            rec = {"id": self._id(), "identifier": ident, "firstName": first,
                   "lastName": last, "inactiveFlag": False,
                   "primaryEmail": f"{ident}@sandbox.test"}
            self._info(rec)
            self.data["members"][rec["id"]] = rec
        for name, flags in STATUSES:
            rec = {"id": self._id(), "name": name, "wonFlag": False, "lostFlag": False,
                   "closedFlag": False, "defaultFlag": False, "inactiveFlag": False, **flags}
            self._info(rec)
            self.data["statuses"][rec["id"]] = rec
        for name in BOARDS:
            rec = {"id": self._id(), "name": name}
            self._info(rec)
            self.data["boards"][rec["id"]] = rec

    def seed(self, n: int, rng: random.Random) -> None:
        """``n`` companies of Manage's own, each with a contact (some of them the same
        clients D-Tools SI has: matching must find them, DT-4)."""
        for i in range(n):
            word = COMPANY_WORDS[i % len(COMPANY_WORDS)]
            name = f"{word} {rng.choice(['Dental', 'Homes', 'Realty', 'Partners', 'Clinic'])}"
            try:
                company = self.insert("companies", {
                    "identifier": f"{word.upper()[:8]}{i}", "name": name,
                    "phoneNumber": f"555-01{i:02d}"})
            except CwError:
                continue
            self.insert("contacts", {
                "firstName": rng.choice(["Sam", "Lee", "Kim", "Ana"]),
                "lastName": word, "company": {"id": company["id"]},
                "communicationItems": [{"type": {"id": 1, "name": "Email"},
                                        "communicationType": "Email", "defaultFlag": True,
                                        "value": f"office{i}@{word.lower()}.example"}]})

    def touch(self, rng: random.Random) -> str:
        if not self.data["companies"]:
            return "nothing"
        rec = self.data["companies"][rng.choice(sorted(self.data["companies"]))]
        rec["phoneNumber"] = f"555-{rng.randint(1000, 9999)}"
        self._info(rec)
        return f"changed the phone of company {rec['name']}"

    def table(self, name: str) -> dict[int, dict]:
        return self.data[name]

    def find_one(self, table: str, **where: Any) -> dict | None:
        return next((r for r in self.data[table].values()
                     if all(r.get(k) == v for k, v in where.items())), None)

    # --- validation and references -----------------------------------------------------------
    def _ref(self, field: str, value: Any) -> dict:
        table, key = REFS[field]
        if not isinstance(value, dict):
            raise self._invalid(field, "InvalidReference", f"{field} must be an object")
        rec = None
        if value.get("id") not in (None, ""):
            try:
                rec = self.data[table].get(int(value["id"]))
            except (TypeError, ValueError):
                rec = None
        else:
            wanted = value.get(key, value.get("name"))
            if wanted not in (None, ""):
                rec = next((r for r in self.data[table].values()
                            if str(r.get(key, "")).casefold() == str(wanted).casefold()), None)
        if rec is None:
            raise self._invalid(field, "InvalidReference", f"{field} was not found")
        out = {"id": rec["id"], key: rec.get(key)}
        if key != "name" and "name" in rec:
            out["name"] = rec["name"]
        out["_info"] = {f"{field}_href": f"{ROOT}/{table}/{rec['id']}"}
        return out

    def _invalid(self, field: str, code: str, message: str, resource: str = "") -> CwError:
        return CwError(400, "InvalidObject", f"{resource or 'record'} object is invalid",
                       [{"code": code, "message": message, "resource": resource or "record",
                         "field": field}])

    def _clean(self, table: str, body: dict, current: dict | None = None) -> dict:
        rec = dict(current or {})
        for key, value in body.items():
            if key in ("id", "_info"):
                continue
            if key in REFS and value is not None:
                value = self._ref(key, value)
            if isinstance(value, str):
                value = value.strip()
            rec[key] = value
        for key in REQUIRED.get(table, ()):
            if rec.get(key) in (None, ""):
                raise self._invalid(key, "MissingRequiredField", f"{key} is required", table)
        if table == "products" and not any(rec.get(k) for k in ("opportunity", "project",
                                                                 "ticket")):
            raise self._invalid("opportunity", "MissingRequiredField",
                                "a product needs an opportunity, a project or a ticket",
                                table)
        key = UNIQUE.get(table)
        if key:
            for other in self.data[table].values():
                if other["id"] != rec.get("id") and \
                        str(other.get(key, "")).casefold() == str(rec[key]).casefold():
                    raise self._invalid(key, "ObjectExists",
                                        f"The {key} {rec[key]!r} is already in use.", table)
        return rec

    def insert(self, table: str, body: dict) -> dict:
        rec = self._clean(table, body)
        if table == "opportunities" and not rec.get("status"):
            default = next(s for s in self.data["statuses"].values() if s["defaultFlag"])
            rec["status"] = self._ref("status", {"id": default["id"]})
        if table == "projects":
            now = _z(self.clock.now())
            rec.setdefault("estimatedStart", now)
            rec.setdefault("estimatedEnd", now)
        if table == "tickets" and rec.get("project"):
            rec.setdefault("company", self.data["projects"][rec["project"]["id"]]["company"])
        rec["id"] = self._id()
        self._info(rec)
        self.data[table][rec["id"]] = rec
        self._after_write(table, rec)
        return rec

    def modify(self, table: str, rid: int, body: dict, *, replace: bool = False) -> dict:
        current = self.data[table].get(rid)
        if current is None:
            raise CwError(404, "NotFound", f"{table} with id {rid} was not found")
        base = {"id": rid} if replace else current
        rec = self._clean(table, body, base)
        rec["id"] = rid
        self._info(rec)
        self.data[table][rid] = rec
        self._after_write(table, rec)
        return rec

    def remove(self, table: str, rid: int) -> None:
        rec = self.data[table].pop(rid, None)
        if rec is None:
            raise CwError(404, "NotFound", f"{table} with id {rid} was not found")
        if table == "products" and rec.get("opportunity"):
            items = self.forecasts.get(rec["opportunity"]["id"], [])
            self.forecasts[rec["opportunity"]["id"]] = [
                i for i in items if i["id"] != rec.get("forecastDetailId")]

    def _after_write(self, table: str, rec: dict) -> None:
        """A product on an opportunity is a forecast line of it (see the choices)."""
        if table == "products" and rec.get("ticket") and not rec.get("project"):
            ticket = self.data["tickets"].get(rec["ticket"]["id"])
            if ticket is not None:
                rec["project"] = ticket["project"]
        if table != "products" or not rec.get("opportunity"):
            return
        items = self.forecasts.setdefault(rec["opportunity"]["id"], [])
        item = next((i for i in items if i["id"] == rec.get("forecastDetailId")), None)
        if item is None:
            item = {"id": self._id(), "forecastType": "Product", "includeFlag": True,
                    "opportunity": {"id": rec["opportunity"]["id"]}}
            items.append(item)
            rec["forecastDetailId"] = item["id"]
        qty = float(rec.get("quantity") or 0)
        item.update(catalogItem={"id": rec["catalogItem"]["id"],
                                 "identifier": rec["catalogItem"].get("identifier")},
                    quantity=qty, revenue=round(qty * float(rec.get("price") or 0), 2),
                    cost=round(qty * float(rec.get("cost") or 0), 2),
                    productDescription=rec.get("description"))

    # --- serving -----------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        r = [web.get("/login/companyinfo/{company}", self._companyinfo),
             web.get(f"{ROOT}/system/info", self._system_info),
             web.get(f"{ROOT}/sales/opportunities/statuses", self._reference_list("statuses")),
             web.get(f"{ROOT}/system/members", self._reference_list("members")),
             web.get(f"{ROOT}/project/boards", self._reference_list("boards")),
             web.get(f"{ROOT}/sales/opportunities/{{id:\\d+}}/forecast", self._get_forecast),
             web.post(f"{ROOT}/sales/opportunities/{{id:\\d+}}/forecast",
                      self._post_forecast)]
        for path, (table, _) in RESOURCES.items():
            r += [web.get(f"{ROOT}/{path}", self._list(table)),
                  web.post(f"{ROOT}/{path}", self._create(table)),
                  web.get(f"{ROOT}/{path}/{{id:\\d+}}", self._get(table)),
                  web.patch(f"{ROOT}/{path}/{{id:\\d+}}", self._patch(table)),
                  web.put(f"{ROOT}/{path}/{{id:\\d+}}", self._put(table)),
                  web.delete(f"{ROOT}/{path}/{{id:\\d+}}", self._delete(table))]
        return r

    def records_in(self, body: Any) -> list[dict]:
        return super().records_in(body)

    def _authorized(self, request: web.Request) -> None:
        want = "Basic " + base64.b64encode(
            f"{self.company_id}+{self.public_key}:{self.private_key}".encode()).decode()
        if request.headers.get("Authorization") != want or \
                request.headers.get("clientId") != self.client_id:
            raise CwError(401, "Unauthorized", "Authentication failed: check the API "
                          "member's keys, the company id and the clientId header")

    def _throttled(self) -> web.Response | None:
        now = self.clock.now()
        while self._calls and (now - self._calls[0]).total_seconds() >= self.rate_window:
            self._calls.popleft()
        if len(self._calls) >= self.rate_limit:
            wait = self.rate_window - (now - self._calls[0]).total_seconds()
            return web.json_response(
                {"error": "ConnectWiseAPI",
                 "message": f"Too many requests. Please try again in {int(wait) + 1} seconds."},
                status=429, headers={"Retry-After": str(int(wait) + 1)})
        self._calls.append(now)
        return None

    def _guard(self, handler):
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                self._authorized(request)
                throttled = self._throttled()
                if throttled is not None:
                    return throttled
                return await handler(request)
            except CwError as exc:
                return web.json_response({"code": exc.code, "message": exc.message,
                                          "errors": exc.errors}, status=exc.status)
        return wrapped

    async def _companyinfo(self, request: web.Request) -> web.Response:
        return web.json_response({
            "CompanyName": f"Sandbox {request.match_info['company']} "
                           f"({self.instance_id[:8]})",
            "Codebase": "v4_6_release/", "VersionCode": "v2025.1",
            "VersionNumber": "v2025.1.0", "CompanyID": request.match_info["company"],
            "IsCloud": True})

    async def _system_info(self, request: web.Request) -> web.StreamResponse:
        async def handler(_):
            return web.json_response({"version": "v2025.1.0", "isCloud": True,
                                      "serverTimeZone": "Eastern Standard Time"})
        return await self._guard(handler)(request)

    def _reference_list(self, table: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._guard(lambda req: self._page(req, table))(request)
        return handler

    def _list(self, table: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._guard(lambda req: self._page(req, table))(request)
        return handler

    async def _page(self, request: web.Request, table: str) -> web.Response:
        q = request.query
        try:
            size = int(q.get("pageSize", 25))
            page = int(q.get("page", 1))
        except ValueError:
            raise CwError(400, "InvalidObject", "page and pageSize must be numbers") from None
        if size < 1 or size > MAX_PAGE:
            raise CwError(400, "InvalidObject", f"pageSize must be 1..{MAX_PAGE}")
        rows = list(self.data[table].values())
        try:
            if q.get("conditions"):
                expr = parse(q["conditions"])
                rows = [r for r in rows if matches(expr, _view(r))]
            if q.get("childConditions"):
                expr = parse(q["childConditions"])
                rows = [r for r in rows if _child_match(expr, r)]
        except ConditionError as exc:
            raise CwError(400, "InvalidObject", f"conditions: {exc}") from None
        forward = request.headers.get("pagination-type", "").lower() == "forward-only"
        links: list[str] = []
        base = request.url.with_query({k: v for k, v in q.items()
                                       if k not in ("page", "pageId")})
        if forward:
            if q.get("orderBy"):
                raise CwError(400, "InvalidObject", "orderBy is not allowed with "
                              "forward-only pagination")
            after = int(q.get("pageId", 0) or 0)
            rows = sorted((r for r in rows if r["id"] > after), key=lambda r: r["id"])
            chunk = rows[:size]
            if chunk:
                links.append(f'<{base.update_query(pageId=chunk[-1]["id"])}>; rel="next"')
        else:
            rows = _order(rows, q.get("orderBy", "id"))
            last = max(1, -(-len(rows) // size))
            chunk = rows[(page - 1) * size: page * size]
            links.append(f'<{base.update_query(page=1)}>; rel="first"')
            if page > 1:
                links.append(f'<{base.update_query(page=page - 1)}>; rel="prev"')
            if page < last:
                links.append(f'<{base.update_query(page=page + 1)}>; rel="next"')
            links.append(f'<{base.update_query(page=last)}>; rel="last"')
        return web.json_response([_copy(r) for r in chunk], headers={"Link": ", ".join(links)})

    def _create(self, table: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            async def inner(req):
                body = await _json(req)
                if not isinstance(body, dict):
                    raise CwError(400, "InvalidObject", "the body must be a JSON object")
                rec = self.insert(table, body)
                if await self.after_commit():
                    return web.json_response({"code": "Error", "message": "injected"},
                                             status=500)
                return web.json_response(_copy(rec), status=201)
            return await self._guard(inner)(request)
        return handler

    def _get(self, table: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            async def inner(req):
                rec = self.data[table].get(int(req.match_info["id"]))
                if rec is None:
                    raise CwError(404, "NotFound", f"{table} was not found")
                return web.json_response(_copy(rec))
            return await self._guard(inner)(request)
        return handler

    def _patch(self, table: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            async def inner(req):
                ops = await _json(req)
                if not isinstance(ops, list):
                    raise CwError(400, "InvalidObject", "PATCH takes a JSON-patch list of "
                                  "operations")
                body: dict[str, Any] = {}
                for op in ops:
                    if not isinstance(op, dict) or op.get("op") not in ("replace", "add",
                                                                          "remove"):
                        raise CwError(400, "InvalidObject", f"unsupported operation {op!r}")
                    path = str(op.get("path", "")).lstrip("/")
                    if not path or "/" in path:
                        raise CwError(400, "InvalidObject", f"unsupported path {path!r}: "
                                      "objects are replaced whole")
                    body[path] = None if op["op"] == "remove" else op.get("value")
                rec = self.modify(table, int(req.match_info["id"]), body)
                if await self.after_commit():
                    return web.json_response({"code": "Error", "message": "injected"},
                                             status=500)
                return web.json_response(_copy(rec))
            return await self._guard(inner)(request)
        return handler

    def _put(self, table: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            async def inner(req):
                body = await _json(req)
                rec = self.modify(table, int(req.match_info["id"]), body, replace=True)
                return web.json_response(_copy(rec))
            return await self._guard(inner)(request)
        return handler

    def _delete(self, table: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            async def inner(req):
                self.remove(table, int(req.match_info["id"]))
                return web.Response(status=204)
            return await self._guard(inner)(request)
        return handler

    async def _get_forecast(self, request: web.Request) -> web.StreamResponse:
        async def inner(req):
            oid = int(req.match_info["id"])
            if oid not in self.data["opportunities"]:
                raise CwError(404, "NotFound", "opportunity was not found")
            return web.json_response({"id": oid, "forecastItems": [
                dict(i) for i in self.forecasts.get(oid, [])]})
        return await self._guard(inner)(request)

    async def _post_forecast(self, request: web.Request) -> web.StreamResponse:
        async def inner(req):
            oid = int(req.match_info["id"])
            if oid not in self.data["opportunities"]:
                raise CwError(404, "NotFound", "opportunity was not found")
            body = await _json(req)
            items = body.get("forecastItems") if isinstance(body, dict) and \
                "forecastItems" in body else [body]
            made = []
            for item in items:
                if not isinstance(item, dict) or not item.get("forecastType"):
                    raise self._invalid("forecastType", "MissingRequiredField",
                                        "forecastType is required", "forecast")
                rec = {**item, "id": self._id(), "opportunity": {"id": oid}}
                self.forecasts.setdefault(oid, []).append(rec)
                made.append(rec)
            return web.json_response(made[0] if len(made) == 1 else
                                     {"id": oid, "forecastItems": made}, status=201)
        return await self._guard(inner)(request)


def _copy(rec: dict) -> dict:
    return orjson.loads(orjson.dumps(rec))


def _view(rec: dict) -> dict:
    """What conditions see: the record, and ``lastUpdated`` for ``_info/lastUpdated``."""
    return {**rec, "lastUpdated": rec.get("_info", {}).get("lastUpdated")}


def _child_match(expr: Any, rec: dict) -> bool:
    """childConditions: one element of a list field satisfies the whole expression."""
    items = rec.get("communicationItems") or []
    for item in items:
        view = {"communicationItems": {**item, "communicationType":
                                       item.get("communicationType")
                                       or (item.get("type") or {}).get("name")}}
        if matches(expr, view):
            return True
    return False


def _order(rows: list[dict], spec: str) -> list[dict]:
    parts = spec.split()
    field = parts[0] if parts else "id"
    desc = len(parts) > 1 and parts[1].lower() == "desc"
    path = ("_info", "lastUpdated") if field in ("lastUpdated", "_info/lastUpdated") \
        else tuple(field.split("/"))

    def key(r: dict) -> tuple:
        node: Any = r
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        return (node is None, str(node) if not isinstance(node, (int, float)) else node,
                r["id"])
    return sorted(rows, key=key, reverse=desc)


async def _json(request: web.Request) -> Any:
    try:
        return await request.json(loads=orjson.loads)
    except Exception:  # noqa: BLE001
        raise CwError(400, "InvalidObject", "the body is not valid JSON") from None
