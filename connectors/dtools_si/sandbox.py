"""An aiohttp imitation of the D-Tools SI "Subscribe" projects API (api.d-tools.com/SI).

Built from D-Tools' published OpenAPI document of the Subscribe Projects API and its help
pages. SI itself runs on the dealer's PC; the API is a queue D-Tools hosts: each time an SI
user publishes a project, a new *message* (a full copy of the project) is queued, and an
integration subscribes to the queue. This sandbox keeps that queue (``messages``); tests and
the demo publish into it as an SI user would (``publish``).

Routes (under ``/SI``)
------
- ``GET /Subscribe/Projects``: the queued messages as ``ProjectInfo`` (one per message: the
  same project ``Id`` can appear several times), oldest first. Filters: ``includeImported``
  (false: messages marked imported are hidden), ``includeArchived``, ``includeDeleted``
  (false), ``progresses`` and ``clients`` (repeated, or ASP.NET style ``progresses[0]=``),
  ``searchText`` (name, number or client contains), ``projectNumber``, ``pageNumber`` (from
  1), ``pageSize`` (default 50). Answer ``{"Projects": [...], "TotalCount": n}``.
- ``GET /Subscribe/Projects/{id}``: the newest published copy of the project (imported or
  not), with ``Items``, ``Locations``, ``Contacts``, ``Resources``; ``aggregateBy``
  (``Location``, ``Item``, ``System``, ``Phase``), ``coNumber``, ``getAdjustmentsByItem``
  accepted. 404 for an unknown id.
- ``GET /Subscribe/Projects/GetProjectByMessageId?messageId=``: one message's copy.
- ``PUT /Subscribe/Projects/MarkAsImported?id=&publishedOnUnixTimeMs=`` and
  ``PUT /Subscribe/Projects/MarkAsImportedByMessageId?messageId=&publishedOnUnixTimeMs=``:
  mark the project's messages imported (200, empty body). With ``publishedOnUnixTimeMs``, the
  stamp is an optimistic lock: when the project was published again since (its newest
  message has another stamp), nothing is marked and the answer is a 409.

Authentication: ``X-DTSI-ApiKey`` on every request; missing or wrong is a 401
``{"Message": "Authorization has been denied for this request."}``.

Wire format: PascalCase keys, as the live API and its help pages answer (the published YAML
writes camelCase; the connector reads both). ``PublishedOnUnixTimeMs`` is UTC milliseconds;
``PublishedOn``, ``ImportedOn``, ``CreatedOn`` and ``UpdatedOn`` are local wall-clock times
without a zone (here: the sandbox clock in UTC, written without an offset).

Choices where the documents are silent
--------------------------------------
- A stale ``publishedOnUnixTimeMs`` is a 409 ``{"Message": ...}`` (the status is not
  documented); an unknown project id on MarkAsImported is a 404.
- Marking imported marks every message of that project up to the stamp given (the newest
  when none is given): a project's older messages are not delivered after a newer one.
- Items are stored aggregated by location (one line per product and location, with its
  quantity); the answer is the same whatever ``aggregateBy`` says.
- Locations nest (``ParentId``; ``FullName`` is "Parent > Child"); every item sits in a
  leaf location. A deleted project is a message with ``Deleted`` true (listed only with
  ``includeDeleted``); archived projects likewise with ``Archived``.
- Error bodies are ``{"Message": ...}`` (ASP.NET Web API); a bad ``pageNumber`` is a 400.
- No rate limit is published for SI; none is imposed unless ``rate_limit`` is given
  (requests in any ``rate_window`` seconds of the sandbox clock, as D-Tools publishes 120 a
  minute for its Cloud API), answered 429 with ``Retry-After``; the base fault knobs give
  429s too.
"""
from __future__ import annotations

import copy
import random
import uuid
from collections import deque
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from connectors.sandbox import Clock, Sandbox

PROGRESSES = ["Lead", "Proposal", "Approved", "In Progress", "Completed"]
CLIENTS = ["Harbor Homes", "Summit Dental", "Cedar Realty", "Lumen Partners",
           "Northgate Clinic", "Riverside Homes", "Atlas Partners", "Beacon Realty"]
OWNERS = ["John Smith", "Anita Kumar", "Maria Lopez", "Rita Hayes"]   # Rita: not in Manage
PRODUCTS = [("Sonos", "ARC", "Soundbar"), ("Sonos", "SUB-G3", "Subwoofer"),
            ("Ubiquiti", "U6-PRO", "Access point"), ("Lutron", "RR-MAIN-REP", "Repeater"),
            ("Control4", "C4-CORE3", "Controller"), ("Samsung", "QN65Q80C", "65in TV"),
            ("Araknis", "AN-310-SW-16", "Switch"), ("Furman", "M-8X2", "Power conditioner"),
            ("Triad", "TS-IW8", "In-wall speaker"), ("Luma", "LUM-510-DOM", "Camera"),
            ("Josh.ai", "JOSH-NANO", "Voice control"), ("Savant", "SVR-3200", "Host"),
            ("Crestron", "TSW-1070", "Touch screen"), ("Apple", "TV-4K", "Streamer"),
            ("Sony", "STR-AN1000", "Receiver"), ("Middle Atlantic", "SR-40", "Rack"),
            ("Pakedge", "RK-1", "Router"), ("WattBox", "WB-800", "Power"),
            ("Bose", "VB1", "Video bar"), ("Leon", "HZ-65", "Soundbar")]
ROOMS = ["Kitchen", "Living Room", "Media Room", "Office", "Patio", "Primary Bedroom"]


def _wall(dt: datetime) -> str:
    """A local wall-clock time without zone, as SI writes most of its times."""
    return dt.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")


class DToolsSiSandbox(Sandbox):
    system = "dtools_si"

    def __init__(self, *, seed: int = 0, records: int = 0, clock: Clock | None = None,
                 api_key: str = "sandbox-key", items: int = 20, locations: int = 4,
                 rate_limit: int | None = None, rate_window: float = 60.0) -> None:
        self.api_key = api_key
        self.rate_limit, self.rate_window = rate_limit, rate_window
        self.rejected = 0
        self._calls: deque[datetime] = deque()
        self.items_per_project, self.locations_per_project = items, locations
        self.messages: list[dict] = []
        self._last_ms = 0
        self._made = 0
        super().__init__(seed=seed, records=records, clock=clock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/SI"

    # --- the SI user's side ----------------------------------------------------------------
    def make_project(self, rng: random.Random | None = None, *, items: int | None = None,
                     locations: int | None = None, progress: str | None = None,
                     client: str | None = None, owner: str | None = "",
                     name: str | None = None) -> dict:
        """A new project as an SI user designs it (not yet published)."""
        rng = rng or self.rng
        n_items = self.items_per_project if items is None else items
        n_loc = max(1, self.locations_per_project if locations is None else locations)
        client = client or rng.choice(CLIENTS)
        pid = str(uuid.UUID(int=rng.getrandbits(128)))
        floor = {"Id": str(uuid.UUID(int=rng.getrandbits(128))), "Name": "Main Floor",
                 "FullName": "Main Floor", "Number": "1", "FullNumber": "1",
                 "Description": None, "ParentId": None}
        locs = [floor]
        for i, room in enumerate(rng.sample(ROOMS, min(len(ROOMS), n_loc - 1)) if n_loc > 1
                                 else []):
            locs.append({"Id": str(uuid.UUID(int=rng.getrandbits(128))), "Name": room,
                         "FullName": f"Main Floor > {room}", "Number": f"1.{i + 1}",
                         "FullNumber": f"1.{i + 1}", "Description": None,
                         "ParentId": floor["Id"]})
        leaves = locs[1:] or locs
        items_ = []
        for i in range(n_items):
            maker, model, desc = PRODUCTS[(i + rng.randrange(len(PRODUCTS))) % len(PRODUCTS)]
            cost = float(rng.randrange(50, 2000))
            items_.append({"Id": str(uuid.UUID(int=rng.getrandbits(128))), "TypeId": 1,
                           "Manufacturer": maker, "Model": model, "PartNumber": model,
                           "Category": "AV", "Description": desc,
                           "Quantity": float(rng.randint(1, 4)), "UnitCost": cost,
                           "UnitPrice": round(cost * 1.4, 2),
                           "LocationId": leaves[i % len(leaves)]["Id"], "SystemId": None,
                           "Phase": "Rough In", "Vendor": maker, "IsOfe": False,
                           "IsNonBillable": False, "DoNotOrder": False})
        cid = str(uuid.uuid5(uuid.NAMESPACE_DNS, client))
        owner = rng.choice(OWNERS) if owner == "" else owner
        first = client.split()[0]
        self._made += 1
        number = f"P-{1000 + self._made}"
        return {
            "Id": pid, "IntegrationProjectId": None, "ClientId": cid, "Client": client,
            "ClientNumber": f"C-{first.upper()[:6]}", "IntegrationClientId": None,
            # dealers name projects after the client and the job; the number keeps the
            # generated ones apart (Manage's opportunities and projects are matched by name)
            "Name": name or f"{client} {rng.choice(['Renovation', 'New Build', 'Upgrade'])}"
                            f" {number}",
            "Number": number,
            "Progress": progress or rng.choice(PROGRESSES), "Approved": False,
            "CONumber": None, "CurrencyCode": "USD",
            "Price": round(sum(i["UnitPrice"] * i["Quantity"] for i in items_), 2),
            "SalesRep": owner, "ProjectManager": None, "AssignedTo": None,
            "EstimatedCloseDate": None, "StartDate": None, "EndDate": None,
            "Items": items_, "Locations": locs,
            "Contacts": [{"Name": f"{rng.choice(['Alex', 'Jordan', 'Casey'])} {first}",
                          "Title": "Owner", "Email": f"owner@{first.lower()}.example",
                          "Phone": "555-0100", "Mobile": None, "IsPrimary": True}],
            "Resources": ([] if owner is None else
                          [{"Name": owner, "Email": None, "Roles": "Sales", "IsOwner": True},
                           {"Name": "Sam Tech", "Email": None, "Roles": "Install",
                            "IsOwner": False}]),
        }

    def publish(self, project: dict, *, deleted: bool = False,
                archived: bool = False) -> dict:
        """Queue a published copy of ``project`` (a new message)."""
        now = self.stamp()
        ms = max(int(now.timestamp() * 1000), self._last_ms + 1)
        self._last_ms = ms
        msg = copy.deepcopy(project)
        msg.update(MessageId=str(uuid.UUID(int=self.rng.getrandbits(128))),
                   PublishedOn=_wall(now), PublishedOnUnixTimeMs=ms, ImportedOn=None,
                   Deleted=deleted, Archived=archived, UpdatedOn=_wall(now),
                   CreatedOn=msg.get("CreatedOn") or _wall(now))
        self.messages.append(msg)
        return msg

    def project(self, project_id: str) -> dict:
        """The newest published copy of a project, to edit and publish again."""
        msg = self._newest(project_id)
        if msg is None:
            raise KeyError(project_id)
        return copy.deepcopy(msg)

    def unimported(self) -> list[dict]:
        return [m for m in self.messages if m["ImportedOn"] is None]

    def seed(self, n: int, rng: random.Random) -> None:
        for _ in range(n):
            self.publish(self.make_project(rng))

    def touch(self, rng: random.Random) -> str:
        if not self.messages or rng.random() < 0.3:
            p = self.publish(self.make_project(rng))
            return f"published a new project {p['Name']}"
        p = self.project(rng.choice(self.messages)["Id"])
        item = rng.choice(p["Items"]) if p["Items"] else None
        if item is not None:
            item["Quantity"] = float(item["Quantity"]) + 1
        self.publish(p)
        return f"published project {p['Name']} again"

    def _newest(self, project_id: str) -> dict | None:
        mine = [m for m in self.messages if m["Id"] == project_id]
        return max(mine, key=lambda m: m["PublishedOnUnixTimeMs"]) if mine else None

    # --- serving -----------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        p = "/SI/Subscribe/Projects"
        return [web.get(p, self._guard(self._list)),
                web.get(f"{p}/GetProjectByMessageId", self._guard(self._by_message)),
                web.put(f"{p}/MarkAsImported", self._guard(self._mark)),
                web.put(f"{p}/MarkAsImportedByMessageId", self._guard(self._mark_message)),
                web.get(f"{p}/{{id}}", self._guard(self._detail))]

    def records_in(self, body: Any) -> list[dict]:
        if isinstance(body, dict) and isinstance(body.get("Projects"), list):
            return body["Projects"]
        return super().records_in(body)

    def _guard(self, handler):
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if request.headers.get("X-DTSI-ApiKey") != self.api_key:
                return web.json_response(
                    {"Message": "Authorization has been denied for this request."},
                    status=401)
            throttled = self._throttled()
            if throttled is not None:
                return throttled
            return await handler(request)
        return wrapped

    def _throttled(self) -> web.Response | None:
        if self.rate_limit is None:
            return None
        now = self.clock.now()
        while self._calls and (now - self._calls[0]).total_seconds() >= self.rate_window:
            self._calls.popleft()
        if len(self._calls) >= self.rate_limit:
            self.rejected += 1
            wait = int(self.rate_window - (now - self._calls[0]).total_seconds()) + 1
            return web.json_response(
                {"Message": f"Too many requests: at most {self.rate_limit} in "
                            f"{self.rate_window:g} seconds; try again in {wait} seconds."},
                status=429, headers={"Retry-After": str(wait)})
        self._calls.append(now)
        return None

    async def _list(self, request: web.Request) -> web.Response:
        q = request.query
        flag = lambda k: q.get(k, "false").lower() == "true"      # noqa: E731
        try:
            page = int(q.get("pageNumber", 1))
            size = int(q.get("pageSize", 50))
        except ValueError:
            return web.json_response({"Message": "The request is invalid."}, status=400)
        if page < 1 or size < 1:
            return web.json_response({"Message": "pageNumber and pageSize start at 1."},
                                     status=400)
        progresses = _array(q, "progresses")
        clients = _array(q, "clients")
        text = (q.get("searchText") or "").casefold()
        rows = []
        for m in sorted(self.messages, key=lambda m: m["PublishedOnUnixTimeMs"]):
            if m["ImportedOn"] is not None and not flag("includeImported"):
                continue
            if m["Deleted"] and not flag("includeDeleted"):
                continue
            if m["Archived"] and not flag("includeArchived"):
                continue
            if progresses and m["Progress"] not in progresses:
                continue
            if clients and m["Client"] not in clients and m["ClientId"] not in clients:
                continue
            if text and not any(text in str(m.get(k) or "").casefold()
                                for k in ("Name", "Number", "Client")):
                continue
            if q.get("projectNumber") and m["Number"] != q["projectNumber"]:
                continue
            rows.append(m)
        chunk = rows[(page - 1) * size: page * size]
        return web.json_response({"Projects": [_info(m) for m in chunk],
                                  "TotalCount": len(rows)})

    async def _detail(self, request: web.Request) -> web.Response:
        msg = self._newest(request.match_info["id"])
        if msg is None:
            return web.json_response({"Message": "Project not found."}, status=404)
        return web.json_response(_project(msg))

    async def _by_message(self, request: web.Request) -> web.Response:
        msg = next((m for m in self.messages
                    if m["MessageId"] == request.query.get("messageId")), None)
        if msg is None:
            return web.json_response({"Message": "Message not found."}, status=404)
        return web.json_response(_project(msg))

    async def _mark(self, request: web.Request) -> web.Response:
        return self._mark_project(request.query.get("id", ""),
                                  request.query.get("publishedOnUnixTimeMs"))

    async def _mark_message(self, request: web.Request) -> web.Response:
        msg = next((m for m in self.messages
                    if m["MessageId"] == request.query.get("messageId")), None)
        if msg is None:
            return web.json_response({"Message": "Message not found."}, status=404)
        return self._mark_project(msg["Id"], request.query.get("publishedOnUnixTimeMs"))

    def _mark_project(self, project_id: str, stamp: str | None) -> web.Response:
        newest = self._newest(project_id)
        if newest is None:
            return web.json_response({"Message": "Project not found."}, status=404)
        if stamp not in (None, "") and str(newest["PublishedOnUnixTimeMs"]) != str(stamp):
            return web.json_response(
                {"Message": "The project was published again since it was read "
                            f"(now {newest['PublishedOnUnixTimeMs']}): read it again."},
                status=409)
        now = _wall(self.clock.now())
        for m in self.messages:
            if m["Id"] == project_id and m["ImportedOn"] is None:
                m["ImportedOn"] = now
        return web.Response(status=200)


INFO_KEYS = ("Id", "IntegrationProjectId", "MessageId", "ClientId", "Client", "ClientNumber",
             "Name", "Number", "Progress", "Approved", "CONumber", "CurrencyCode", "Price",
             "ImportedOn", "PublishedOn", "PublishedOnUnixTimeMs", "Deleted", "Archived")
DETAIL_DROP = ("MessageId", "Deleted", "Archived")    # not properties of Project


def _info(m: dict) -> dict:
    return {k: m.get(k) for k in INFO_KEYS}


def _project(m: dict) -> dict:
    return {k: copy.deepcopy(v) for k, v in m.items() if k not in DETAIL_DROP}


def _array(q, name: str) -> list[str]:
    """A query array, repeated (``a=1&a=2``) or ASP.NET style (``a[0]=1&a[1]=2``)."""
    out = list(q.getall(name, []))
    out += [v for k, v in sorted(q.items()) if k.startswith(f"{name}[")]
    return out
