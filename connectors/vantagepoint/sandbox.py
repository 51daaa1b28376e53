"""An aiohttp imitation of the Deltek Vantagepoint REST API, for tests, demos and benchmarks.

What the public documentation says (api.deltek.com/Product/DeltekPS/1.1: GetanAccessToken,
Requests, Pagination) and this sandbox does:

- ``POST /api/token``, form-encoded: ``Username``, ``Password``, ``grant_type=password``,
  ``Integrated``, ``database``, ``Client_Id``, ``client_secret`` -> ``{access_token,
  token_type: "bearer", expires_in: 1799, refresh_token}``; ``grant_type=refresh_token`` with
  ``refresh_token`` gives a new one. Requests carry ``Authorization: Bearer ...``.
- ``GET /api/{hub}`` lists, ``GET /api/{hub}/{key}`` reads one, ``POST`` creates, ``PUT``
  updates, ``DELETE`` deletes; **PUT and POST behave as PATCH** (only the fields sent change).
- Paging ``pageSize`` (or ``limit``) and ``page`` (1-based); the end is a page shorter than
  ``pageSize``. ``fieldFilter=Col1,Col2`` limits the columns (the key is always there);
  ``order=Column`` ascending, ``order=Column_D`` descending.
- Hubs: ``project`` (``WBS1``; ``Name`` the short name, ``LongName``, ``Status`` A/D/I,
  ``AjeraSync`` Y/N, the Ajera totals), ``firm`` (``ClientID``), ``contact`` (``ContactID``),
  ``employee`` (``Employee``).

Choices where the documentation is silent (uncertain):

- No modified-since filter is documented. Every record carries ``ModDate`` (the standard
  Vantagepoint column, UTC here, ``2024-06-03T09:00:00.123Z``) and ``order=ModDate`` sorts by
  it (ties by key). The connector finds changes by listing only key and ``ModDate``
  (``fieldFilter``, 1,000 a page), newest first (``order=ModDate_D``) down to its cursor, then
  reading the changed records: an idle run costs one small listing per hub. A saved-search mechanism may exist but
  is not documented.
- Tokens last ``expires_in`` seconds of the sandbox clock (1799); an expired or unknown token
  answers 401 ``{"Message": "Authorization has been denied for this request."}``. Refused
  credentials: 400 ``{"error": "invalid_grant", "error_description": ...}`` (OAuth's form).
- Errors: ``{"Message": ...}`` with 400 (validation: unknown fields; ``Name`` required, at most
  40 characters, ``LongName`` at most 255 (projects); ``Name`` required (firms); ``LastName``
  required (contacts, employees); ``Status`` one of A, D, I; ``AjeraSync`` Y or N; a key that
  already exists), 404 (unknown key).
- Keys: a project created without ``WBS1`` is numbered ``P0001``...; firm, contact and employee
  keys are made by the sandbox (``F0001``, ``C0001``, ``E0001``) unless given.
- Project Ajera totals: ``AjeraSpentLabor``, ``AjeraSpentExpense``, ``AjeraBilled``,
  ``AjeraReceived`` (the PR table's Ajera columns; exact names not confirmed).
- Instance: Vantagepoint names an instance by its ``database`` (the token request); the
  sandbox's is ``database`` (default ``Vantagepoint``).
- Faults (``connectors/sandbox.py``): POST, PUT and DELETE honour ``fail_after_commit`` and
  ``hang_after_commit``; ``drop_fields`` applies to lists, single records and write answers;
  ``clock_ahead`` moves ``ModDate``.
"""
from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from aiohttp import web

from connectors.sandbox import Clock, Sandbox, json_answer


@dataclass(frozen=True)
class Hub:
    key: str
    prefix: str
    fields: tuple[str, ...]
    required: tuple[str, ...]


HUBS = {
    "project": Hub("WBS1", "P", ("Name", "LongName", "Status", "AjeraSync", "ChargeType",
                                 "ClientID", "ProjMgr", "AjeraSpentLabor", "AjeraSpentExpense",
                                 "AjeraBilled", "AjeraReceived"), ("Name",)),
    "firm": Hub("ClientID", "F", ("Name", "Status", "ClientInd", "Phone", "WebSite"), ("Name",)),
    "contact": Hub("ContactID", "C", ("FirstName", "LastName", "Title", "Email", "Phone",
                                      "FirmName"), ("LastName",)),
    "employee": Hub("Employee", "E", ("FirstName", "LastName", "Title", "Email", "Status"),
                    ("LastName",)),
}
_NAMES = ["Riverside Library", "Harbor Clinic", "Maple School", "Summit Office Tower",
          "Cedar Fire Station", "Lakeview Museum", "Granite Bridge", "Oak Community Center"]


def _mod(when: datetime) -> str:
    u = when.astimezone(timezone.utc)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"Message": message}, status=status)


class VantagepointSandbox(Sandbox):
    system = "vantagepoint"

    def __init__(self, *, seed: int = 0, records: int = 0, clock: Clock | None = None,
                 username: str = "sandbox", password: str = "sandbox-password",
                 database: str = "Vantagepoint", client_id: str = "sandbox-client",
                 client_secret: str = "sandbox-secret", expires_in: int = 1799) -> None:
        self.username, self.password, self.database = username, password, database
        self.client_id, self.client_secret = client_id, client_secret
        self.expires_in = expires_in
        self.data: dict[str, dict[str, dict]] = {h: {} for h in HUBS}
        self.tokens: dict[str, datetime] = {}
        self.refresh: dict[str, str] = {}
        self._next = {h: 1 for h in HUBS}
        super().__init__(seed=seed, records=records, clock=clock)

    @property
    def url(self) -> str:
        """The API base (``.../api``), as Vantagepoint's base URLs end."""
        return f"http://127.0.0.1:{self.port}/api"

    # --- data --------------------------------------------------------------------------
    def add(self, hub: str, **fields: Any) -> dict:
        h = HUBS[hub]
        key = fields.pop(h.key, None) or self._new_key(hub)
        record = {h.key: key, **{f: None for f in h.fields}, **fields,
                  "ModDate": _mod(self.stamp())}
        self.data[hub][key] = record
        return record

    def edit(self, hub: str, key: str, **fields: Any) -> dict:
        record = self.data[hub][key]
        record.update(fields)
        record["ModDate"] = _mod(self.stamp())
        return record

    def _new_key(self, hub: str) -> str:
        while True:
            key = f"{HUBS[hub].prefix}{self._next[hub]:04d}"
            self._next[hub] += 1
            if key not in self.data[hub]:
                return key

    def seed(self, n: int, rng: random.Random) -> None:
        for i in range(n):
            name = f"{rng.choice(_NAMES)} {100 + i}"
            self.add("project", Name=name[:40], LongName=name, Status="A", AjeraSync="N",
                     ChargeType="R")
            self.add("firm", Name=f"Firm {i + 1}", Status="A", ClientInd="Y")

    def touch(self, rng: random.Random) -> str:
        if not self.data["project"]:
            self.seed(1, rng)
            return "created a project"
        key = rng.choice(list(self.data["project"]))
        self.edit("project", key, ChargeType=rng.choice(["R", "H", "P"]))
        return f"project {key}: ChargeType -> {self.data['project'][key]['ChargeType']}"

    # --- serving -----------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/token", self._token),
                web.get("/api/{hub}", self._list), web.post("/api/{hub}", self._create),
                web.get("/api/{hub}/{key}", self._read), web.put("/api/{hub}/{key}", self._put),
                web.delete("/api/{hub}/{key}", self._delete)]

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = form.get("grant_type")
        if form.get("client_secret") != self.client_secret or \
                (form.get("Client_Id") or form.get("client_Id") or form.get("client_id")) \
                != self.client_id:
            return self._denied("invalid_client", "The client id or secret is not valid.")
        if grant == "password":
            if form.get("Username") != self.username or form.get("Password") != self.password \
                    or form.get("database") != self.database:
                return self._denied("invalid_grant", "The user name or password is incorrect.")
        elif grant == "refresh_token":
            if form.get("refresh_token") not in self.refresh:
                return self._denied("invalid_grant", "The refresh token is not valid.")
            self.refresh.pop(str(form.get("refresh_token")))
        else:
            return self._denied("unsupported_grant_type", f"grant_type {grant!r}")
        token, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self.tokens[token] = self.clock.now() + timedelta(seconds=self.expires_in)
        self.refresh[refresh] = token
        return web.json_response({"access_token": token, "token_type": "bearer",
                                  "expires_in": self.expires_in, "refresh_token": refresh})

    @staticmethod
    def _denied(code: str, text: str) -> web.Response:
        return web.json_response({"error": code, "error_description": text}, status=400)

    def _guard(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        until = self.tokens.get(token or "")
        if until is None or until <= self.clock.now():
            return None, _error(401, "Authorization has been denied for this request.")
        hub = request.match_info["hub"]
        if hub not in HUBS:
            return None, _error(404, f"No hub named {hub!r}.")
        return hub, None

    def _json(self, body: Any, status: int = 200) -> web.Response:
        return json_answer(body, status=status)

    async def _list(self, request: web.Request) -> web.Response:
        hub, refused = self._guard(request)
        if refused:
            return refused
        q = request.query
        try:
            size = int(q.get("pageSize") or q.get("limit") or 100)
            page = int(q.get("page") or 1)
            offset = int(q["offset"]) if "offset" in q else (page - 1) * size
        except ValueError:
            return _error(400, "pageSize, limit, page and offset must be whole numbers.")
        if size < 1 or offset < 0:
            return _error(400, "pageSize must be at least 1 and page at least 1.")
        rows = list(self.data[hub].values())
        key = HUBS[hub].key
        order = q.get("order")
        if order:
            column, desc = (order[:-2], True) if order.endswith("_D") else (order, False)
            if column not in (key, "ModDate", *HUBS[hub].fields):
                return _error(400, f"Cannot order by {column!r}.")
            rows.sort(key=lambda r: (str(r.get(column) or ""), r[key]), reverse=desc)
        else:
            rows.sort(key=lambda r: r[key])
        rows = rows[offset:offset + size]
        wanted = [c for c in (q.get("fieldFilter") or "").split(",") if c]
        if wanted:
            rows = [{c: r.get(c) for c in dict.fromkeys([key, *wanted]) if c in r}
                    for r in rows]
        return self._json(rows)

    async def _read(self, request: web.Request) -> web.Response:
        hub, refused = self._guard(request)
        if refused:
            return refused
        record = self.data[hub].get(request.match_info["key"])
        if record is None:
            return _error(404, f"No {hub} {request.match_info['key']!r}.")
        return self._json(record)

    async def _body(self, request: web.Request) -> dict:
        try:
            body = await request.json(loads=orjson.loads)
        except (ValueError, orjson.JSONDecodeError):
            raise web.HTTPBadRequest(text='{"Message": "The body is not JSON."}',
                                     content_type="application/json") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text='{"Message": "The body is not a JSON object."}',
                                     content_type="application/json")
        return body

    def _invalid(self, hub: str, record: dict, changes: dict) -> str | None:
        h = HUBS[hub]
        unknown = [k for k in changes if k not in h.fields and k != h.key]
        if unknown:
            return f"Unknown field(s) for {hub}: {', '.join(unknown)}."
        for f in h.required:
            if not str(record.get(f) or "").strip():
                return f"{f} is required."
        if hub == "project":
            if len(record.get("Name") or "") > 40:
                return "Name can be at most 40 characters."
            if len(record.get("LongName") or "") > 255:
                return "LongName can be at most 255 characters."
            if record.get("AjeraSync") not in (None, "Y", "N"):
                return "AjeraSync must be Y or N."
        if "Status" in changes and changes["Status"] not in (None, "A", "D", "I"):
            return "Status must be A, D or I."
        return None

    async def _create(self, request: web.Request) -> web.Response:
        hub, refused = self._guard(request)
        if refused:
            return refused
        body = await self._body(request)
        key = body.get(HUBS[hub].key)
        if key is not None and str(key) in self.data[hub]:
            return _error(400, f"{HUBS[hub].key} {key!r} already exists.")
        problem = self._invalid(hub, body, body)
        if problem:
            return _error(400, problem)
        record = self.add(hub, **{k: v for k, v in body.items() if k != "ModDate"})
        if await self.after_commit():
            return _error(500, "An error has occurred.")
        return self._json(record, 201)

    async def _put(self, request: web.Request) -> web.Response:
        hub, refused = self._guard(request)
        if refused:
            return refused
        key = request.match_info["key"]
        body = {k: v for k, v in (await self._body(request)).items()
                if k not in ("ModDate", HUBS[hub].key)}
        current = self.data[hub].get(key)
        if current is None:
            return _error(404, f"No {hub} {key!r}.")
        problem = self._invalid(hub, {**current, **body}, body)
        if problem:
            return _error(400, problem)
        record = self.edit(hub, key, **body)
        if await self.after_commit():
            return _error(500, "An error has occurred.")
        return self._json(record)

    async def _delete(self, request: web.Request) -> web.Response:
        hub, refused = self._guard(request)
        if refused:
            return refused
        if self.data[hub].pop(request.match_info["key"], None) is None:
            return _error(404, f"No {hub} {request.match_info['key']!r}.")
        if await self.after_commit():
            return _error(500, "An error has occurred.")
        return web.Response(status=204)
