"""An aiohttp imitation of Unleashed Software's public REST API (api.unleashedsoftware.com).

Built from the public documentation at apidocs.unleashedsoftware.com (Customers,
Salespersons, Currencies pages) and Unleashed's help centre; what they leave open is listed
under "Choices where the documentation is silent" below.

Routes
------
- ``GET  /Customers``, ``/Customers/{page}``, ``/Customers/Page/{page}``: a page of customers.
  Filters: ``pageSize`` (default 200, at most 1000; more is a 400), ``modifiedSince``,
  ``includeObsolete`` (obsolete customers are hidden unless ``true``), ``orderBy``
  (``LastModifiedOn`` or ``CreatedOn``; default ``CustomerCode``), ``customerCode`` and
  ``customerName`` (starts with), ``customer`` (code or name contains, case-sensitive),
  ``contactEmail`` (a contact's email starts with), ``includeAllContacts`` (``true``: each
  customer carries ``Contacts``, every one of its contacts as the contact list answers them).
  Answer:
  ``{"Pagination": {"NumberOfItems", "PageSize", "PageNumber", "NumberOfPages"}, "Items": [...]}``.
- ``GET  /Customers/{guid}``: one customer (obsolete or not); 404 when unknown.
- ``POST /Customers/{guid}``: create (the client chooses the Guid) or update that customer.
- ``GET  /Customers/{guid}/Contacts``, ``POST /Customers/{guid}/Contacts``: list, create.
- ``PUT  /Customers/{guid}/Contacts/{contactGuid}``, ``DELETE`` the same: update, delete.
- ``GET  /Salespersons`` (also spelled ``/SalesPersons``), optionally ``/{page}``: paged list of
  sales persons (Guid, FullName, Email, Obsolete, LastModifiedOn).
- ``GET  /Companies``: the account's operating companies (see the choices).

Authentication
--------------
Every request carries ``api-auth-id`` and ``api-auth-signature`` =
base64(HMAC-SHA256(key=API key, message=the query string as sent, without '?', "" if none)).
A missing or wrong signature, or an unknown id, is a 403 with a JSON ``Description``.
``client-type`` is recorded (``client_types``) but not enforced.

Validation
----------
Customers: ``CustomerCode`` and ``CustomerName`` required (code at most 50 characters, unique,
case-insensitively); ``Website`` (UL-7) must be empty or an http(s) URL or a bare domain
(``example.com``, ``www.example.co.nz/shop``): letters, digits and hyphens in dot-separated
labels, a top-level label of at least two letters, an optional port and path, no spaces, at
most 256 characters; ``SalesPerson`` must name an existing, non-obsolete sales person (by
``Guid``, else by ``FullName``); a body ``Guid`` must equal the one in the path. Text is
trimmed of surrounding blanks before it is stored (so callers must keep what the API answers).
Contacts: a ``FirstName`` or a ``LastName``; ``EmailAddress`` empty or a valid email format.
A refusal is a 400 ``{"Description", "DebugInformation": null, "Items": [{"Field",
"Description"}]}``; ``Field`` names the vendor field.

Rate limit and faults
---------------------
``rate_limit_per_minute`` requests per API id in any 60 s of the sandbox clock; beyond, a 429
with ``Retry-After`` (whole seconds until a slot frees). 5xx, dropped connections and latency
come from the base class's fault knobs; writes honour ``faults.fail_after_commit`` (the write
is applied, then answered 500) and ``faults.hang_after_commit`` (applied, then no answer).

Choices where the documentation is silent
-----------------------------------------
- Rate limit: no per-minute figure was found in the public docs; default 300 per minute.
- Paging: the page number is a path segment (``/Customers/2``), from 1; a page past the end
  is an empty ``Items`` list. The documented ``orderBy=LastModifiedOn`` sorts ascending, ties
  broken by Guid, so a client can page by keyset.
- ``modifiedSince`` is an ISO date-time without zone, read as UTC, milliseconds allowed; it is
  a closed bound (``LastModifiedOn >= modifiedSince``). A value that does not parse is a 400.
- Dates in JSON are ``/Date(ms)/`` in UTC; times are stored to the millisecond.
- ``POST /Customers/{guid}`` on an existing customer replaces the top-level properties it is
  given and keeps the others; ``Guid``, ``CreatedOn``, ``LastModifiedOn`` are read-only.
- Unknown customer or contact: 404 ``{"Description": "... not found"}``.
- Adding, editing or deleting a contact bumps its customer's ``LastModifiedOn``: contacts
  belong to the customer record (the Customers list can embed them, ``includeAllContacts``),
  and the API has no contact listing of its own with a modified filter, so this is the only
  way an incremental reader can notice contact changes. Contacts carry ``LastModifiedOn`` too.
- Creating a contact with a ``Guid`` that already exists under that customer updates it (a
  retried create is harmless). The contact list answer is ``{"Items": [...]}``, unpaged.
- UL-6: the API docs describe no "operating companies" or "advanced ledgers" resource; the
  sandbox answers ``GET /Companies`` with ``{"Items": [{"Guid", "CompanyName", "IsDefault",
  "AdvancedLedgers"}]}``, one item per operating company (constructor options
  ``operating_companies`` and ``advanced_ledgers``).
- Instance: ``GET /Companies`` (documented: "lists all information for your company") is
  where an account shows who it is. The default company's ``Guid`` is the sandbox's
  ``instance_id``, a random id made when the sandbox is built (not from the seed), so two
  generations are two accounts; the other operating companies' Guids derive from it.
- Faults (``connectors/sandbox.py``): every write route (customer POST, contact POST, PUT and
  DELETE) honours ``fail_after_commit`` and ``hang_after_commit``; ``drop_fields`` applies to
  customer pages, single customers, contact lists and write answers; ``clock_ahead`` moves
  ``CreatedOn`` and ``LastModifiedOn``; the ``Date`` header follows the sandbox clock.
- Error bodies: ``{"Description": ..., "DebugInformation": null}`` plus ``Items`` for
  validation, as above.
- Contact fields: Guid, FirstName, LastName, EmailAddress, PhoneNumber, MobilePhone,
  FaxNumber, CreatedOn, LastModifiedOn. ``PUT`` replaces the fields it is given.
- Sales persons: the docs spell the resource ``/Salespersons``; the server is case-blind
  (IIS), so both spellings answer. Seeded: five generated names, the fifth obsolete.
- Addresses: ``AddressType`` ("Postal", "Physical"), ``IsDefault``; the connector takes the
  default address to be the one with ``IsDefault``, else the first "Postal", else the first.
- The rate-limit window uses the sandbox clock, so a test holding the clock still stays
  throttled until it advances the clock.

The connector's side (connectors/unleashed/client.py)
-----------------------------------------------------
- ``create`` sends a client-made Guid (uuid4) and, when no ``CustomerCode`` is given, makes
  one: the name's first 8 letters/digits upper-cased, a dash, the Guid's first 6 hex digits
  (``KEAOUTFI-3F2A1B``); stable for that Guid, so a retried create cannot duplicate.
- ``changes("customers")`` pages by keyset on ``orderBy=LastModifiedOn``; if one page is all
  one millisecond it steps to the next page number at that instant (a record edited in that
  very window could shift by one; documented, not handled).
- Contacts have no documented route by contact Guid alone; ``get`` uses a bounded
  contact -> customer cache filled by every read, and otherwise scans all customers.
"""
from __future__ import annotations

import itertools
import math
import random
import uuid
from collections import deque
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from connectors.sandbox import Clock, Sandbox
from connectors.sandbox import json_answer as _json_answer
from connectors.sandbox_index import Row, Table
from connectors.unleashed import fake
from connectors.unleashed.sandbox_rules import (ADDRESS_TEXT, CONTACT_TEXT, CUSTOMER_TEXT,
                                                DEFAULT_PAGE_SIZE, GUID, MAX_PAGE_SIZE,
                                                Refused, apply_contact, text,
                                                validate_customer)
from connectors.unleashed.wire import encode_date, from_ms, parse_iso, sign, to_ms



def json_answer(body, status: int = 200, headers: dict[str, str] | None = None):
    """An answer of this sandbox: its dates written as Unleashed writes them, by the encoder
    (stored rows go out as they are, their datetimes included; no copy converts them)."""
    return _json_answer(body, status, headers, dates=encode_date)


class UnleashedSandbox(Sandbox):
    system = "unleashed"
    persisted = ("customers", "contacts", "salespersons", "_serial")     # keep_in()

    def __init__(self, *, seed: int = 0, records: int = 0, clock: Clock | None = None,
                 api_id: str = "sandbox", api_key: str = "sandbox-key",
                 operating_companies: int = 1, advanced_ledgers: bool = False,
                 rate_limit_per_minute: int = 300) -> None:
        self.api_id, self.api_key = api_id, api_key
        self.operating_companies = operating_companies
        self.advanced_ledgers = advanced_ledgers
        self.rate_limit_per_minute = rate_limit_per_minute
        self.customers: dict[str, dict] = Table("LastModifiedOn")
        self.contacts: dict[str, dict[str, dict]] = {}     # customer guid -> contact guid -> c
        self.salespersons: dict[str, dict] = {}
        self.client_types: set[str] = set()
        self._window: deque[datetime] = deque()
        self._serial = 0
        super().__init__(seed=seed, records=records, clock=clock)
        self.app.middlewares.append(self._auth)

    # --- data ----------------------------------------------------------------------------
    def _now(self) -> datetime:
        """A record stamp: the sandbox clock (plus ``faults.clock_ahead``), to the ms."""
        return from_ms(to_ms(self.stamp()))

    def add_salesperson(self, full_name: str, email: str, *, obsolete: bool = False,
                        guid: str | None = None) -> dict:
        sp = {"Guid": guid or fake.guid(self.rng), "FullName": full_name, "Email": email,
              "Obsolete": obsolete, "LastModifiedOn": self._now()}
        self.salespersons[sp["Guid"]] = sp
        return sp

    def seed(self, n: int, rng: random.Random) -> None:
        if not self.salespersons:
            # the same people as the Prospect CRM sandbox's users (but Emma Wright), so the
            # demo's account managers line up (UL-5) and one does not
            for i, full in enumerate(fake.SALESPEOPLE):
                first = full.split()[0]
                self.add_salesperson(full, f"{first.lower()}.{i}@sandbox.test",
                                     obsolete=(i == len(fake.SALESPEOPLE) - 1),
                                     guid=fake.guid(rng))
        active = [sp for sp in self.salespersons.values() if not sp["Obsolete"]]
        now = self._now()
        taken = {c["CustomerName"] for c in self.customers.values()}
        emails = {c["EmailAddress"] for cs in self.contacts.values() for c in cs.values()}
        for _ in range(n):
            self._serial += 1
            name = fake.company_name(rng)
            if name in taken:           # real customers have distinct names
                name = f"{name} ({self._serial})"
            taken.add(name)
            when = now - timedelta(minutes=rng.randint(60, 60 * 24 * 30))
            sp = rng.choice(active)
            customer = {
                "Guid": fake.guid(rng), "CustomerCode": fake.customer_code(name, self._serial),
                "CustomerName": name, "PhoneNumber": fake.phone(rng), "FaxNumber": "",
                "MobileNumber": "", "Email": "", "Website": fake.website(rng, name),
                "Notes": "", "SalesPerson": self._sp_ref(sp), "Addresses": [fake.address(rng)],
                "Obsolete": False, "CreatedOn": when, "LastModifiedOn": when}
            customer = Row(customer)
            self.customers[customer["Guid"]] = customer
            domain = (customer["Website"].split("//")[-1].removeprefix("www.").split("/")[0]
                      or "example.com")
            self.contacts[customer["Guid"]] = {}
            for _ in range(rng.randint(0, 3)):
                c = fake.contact(rng, domain)
                if c["EmailAddress"] in emails:     # people have addresses of their own
                    local, _, host = c["EmailAddress"].partition("@")
                    c["EmailAddress"] = f"{local}.{self._serial}@{host}"
                emails.add(c["EmailAddress"])
                c["CreatedOn"] = c["LastModifiedOn"] = when
                self.contacts[customer["Guid"]][c["Guid"]] = c

    def touch(self, rng: random.Random) -> str:
        if not self.customers:
            self.seed(1, rng)
            return "created a customer"
        customer = self.customers[rng.choice(sorted(self.customers))]
        now = self._now()
        kind = rng.choice(["phone", "name", "contact_add", "contact_edit", "website"])
        contacts = self.contacts.setdefault(customer["Guid"], {})
        if kind == "contact_edit" and contacts:
            c = contacts[rng.choice(sorted(contacts))]
            c["PhoneNumber"], c["LastModifiedOn"] = fake.phone(rng), now
            what = f"changed the phone of contact {c['FirstName']} {c['LastName']}"
        elif kind in ("contact_add", "contact_edit"):
            c = fake.contact(rng, "example.com")
            c["CreatedOn"] = c["LastModifiedOn"] = now
            contacts[c["Guid"]] = c
            what = f"added contact {c['FirstName']} {c['LastName']}"
        elif kind == "name":
            customer["CustomerName"] = fake.company_name(rng)
            what = "renamed the customer"
        elif kind == "website":
            customer["Website"] = fake.website(rng, customer["CustomerName"]) or "example.com"
            what = f"set the website to {customer['Website']!r}"
        else:
            customer["PhoneNumber"] = fake.phone(rng)
            what = f"changed the phone to {customer['PhoneNumber']}"
        customer["LastModifiedOn"] = now
        return f"unleashed: {customer['CustomerCode']}: {what}"

    @staticmethod
    def _sp_ref(sp: dict | None) -> dict | None:
        return None if sp is None else {k: sp[k] for k in ("Guid", "FullName", "Email")}

    def restored(self) -> None:
        """Records read back from a file: indexed again."""
        self.customers = Table("LastModifiedOn", rows=(
            (k, Row(v)) for k, v in self.customers.items()))

    # --- rendering -----------------------------------------------------------------------
    def render_customer(self, c: dict) -> dict:
        """A stored customer as an answer carries it. Its dates stay datetimes: the answer's
        encoder writes them (``json_answer``), so a page of 1,000 customers is not copied
        field by field first."""
        return {**c, "Addresses": c.get("Addresses") or []}

    # --- routes --------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = [
            web.get("/Customers", self._list_customers),
            web.get("/Customers/Page/{page:\\d+}", self._list_customers),
            web.get("/Customers/{key}", self._get_customer),
            web.post("/Customers/{guid}", self._post_customer),
            web.get("/Customers/{guid}/Contacts", self._list_contacts),
            web.post("/Customers/{guid}/Contacts", self._create_contact),
            web.put("/Customers/{guid}/Contacts/{contact}", self._update_contact),
            web.delete("/Customers/{guid}/Contacts/{contact}", self._delete_contact),
            web.get("/Companies", self._companies),
        ]
        for spelling in ("Salespersons", "SalesPersons"):
            r += [web.get(f"/{spelling}", self._salespersons),
                  web.get(f"/{spelling}/{{page:\\d+}}", self._salespersons)]
        return r

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if request.path.startswith("/_sandbox/"):
            return await handler(request)
        api_id = request.headers.get("api-auth-id")
        signature = request.headers.get("api-auth-signature")
        query = request.raw_path.partition("?")[2]
        if not api_id or not signature:
            return Refused(403, "Forbidden: the api-auth-id and api-auth-signature headers "
                                "are required.").response()
        if api_id != self.api_id:
            return Refused(403, "Forbidden: unknown API id.").response()
        if signature != sign(self.api_key, query):
            return Refused(403, "Forbidden: the signature does not match the request.") \
                .response()
        if request.headers.get("client-type"):
            self.client_types.add(request.headers["client-type"])
        now = self.clock.now()
        while self._window and (now - self._window[0]).total_seconds() >= 60:
            self._window.popleft()
        if len(self._window) >= self.rate_limit_per_minute:
            wait = 60 - (now - self._window[0]).total_seconds()
            return json_answer(
                {"Description": "Too many requests: the API rate limit was exceeded.",
                 "DebugInformation": None}, status=429,
                headers={"Retry-After": str(max(1, math.ceil(wait)))})
        self._window.append(now)
        try:
            return await handler(request)
        except Refused as exc:
            return exc.response()

    async def _committed(self, body: Any, status: int = 200) -> web.Response:
        if await self.after_commit():
            return json_answer({"Description": "Internal server error (after commit)",
                                "DebugInformation": None}, status=500)
        if body is None:
            return web.Response(status=204)
        return json_answer(body, status=status)

    @staticmethod
    def _page_args(request: web.Request) -> tuple[int, int]:
        q = request.query
        try:
            size = int(q.get("pageSize", DEFAULT_PAGE_SIZE))
            page = int(request.match_info.get("page") or request.match_info.get("key") or 1)
        except ValueError:
            raise Refused(400, "pageSize must be a whole number.", "pageSize") from None
        if size < 1 or size > MAX_PAGE_SIZE:
            raise Refused(400, f"pageSize must be between 1 and {MAX_PAGE_SIZE}.", "pageSize")
        if page < 1:
            raise Refused(400, "Page number must be 1 or more.", "pageNumber")
        return page, size

    @staticmethod
    def _paged(items: list[dict], page: int, size: int) -> dict:
        total = len(items)
        return {"Pagination": {"NumberOfItems": total, "PageSize": size, "PageNumber": page,
                               "NumberOfPages": max(1, math.ceil(total / size))},
                "Items": items[(page - 1) * size: page * size]}

    async def _list_customers(self, request: web.Request) -> web.Response:
        page, size = self._page_args(request)
        q = request.query
        since = None
        if "modifiedSince" in q:
            try:
                since = parse_iso(q["modifiedSince"])
            except ValueError:
                raise Refused(400, "modifiedSince is not a valid date.", "modifiedSince") \
                    from None
        order = q.get("orderBy", "CustomerCode")
        if order not in ("LastModifiedOn", "CreatedOn", "CustomerCode"):
            raise Refused(400, "orderBy must be LastModifiedOn or CreatedOn.", "orderBy")
        narrowed = any(q.get(k) for k in ("customerCode", "customerName", "customer",
                                          "contactEmail"))
        if (order == "LastModifiedOn" and not narrowed and isinstance(self.customers, Table)
                and q.get("includeObsolete", "false").lower() == "true"):
            # the connector's changes listing: a slice of the modified-at index
            total = self.customers.count_since(since)
            keys = itertools.islice(self.customers.since(since, skip=(page - 1) * size), size)
            # the stored rows as they are, their dates written by the encoder: a page of
            # 1,000 customers is not copied field by field to be encoded
            items = [self.render_customer(self.customers[k]) for k in keys]
            self._embed_contacts(q, items)
            return json_answer(self._page_of(items, total, page, size))
        rows = list(self.customers.values())
        if q.get("includeObsolete", "false").lower() != "true":
            rows = [c for c in rows if not c["Obsolete"]]
        if since is not None:
            rows = [c for c in rows if c["LastModifiedOn"] >= since]
        if q.get("customerCode"):
            rows = [c for c in rows
                    if c["CustomerCode"].lower().startswith(q["customerCode"].lower())]
        if q.get("customerName"):
            rows = [c for c in rows
                    if c["CustomerName"].lower().startswith(q["customerName"].lower())]
        if q.get("customer"):
            rows = [c for c in rows
                    if q["customer"] in c["CustomerCode"] or q["customer"] in c["CustomerName"]]
        if q.get("contactEmail"):
            prefix = q["contactEmail"].lower()
            rows = [c for c in rows if any(
                (k.get("EmailAddress") or "").lower().startswith(prefix)
                for k in self.contacts.get(c["Guid"], {}).values())]
        rows.sort(key=lambda c: (c[order], c["Guid"]))
        items = [self.render_customer(c) for c in rows[(page - 1) * size: page * size]]
        self._embed_contacts(q, items)
        return json_answer(self._page_of(items, len(rows), page, size))

    def _embed_contacts(self, q, items: list[dict]) -> None:
        """``includeAllContacts=true``: each customer with all its contacts."""
        if q.get("includeAllContacts", "false").lower() == "true":
            for item in items:
                item["Contacts"] = list(self.contacts.get(item["Guid"], {}).values())

    @staticmethod
    def _page_of(items: list[dict], total: int, page: int, size: int) -> dict:
        """One page already cut (only its rows are rendered) with the pagination of all."""
        return {"Pagination": {"NumberOfItems": total, "PageSize": size, "PageNumber": page,
                               "NumberOfPages": max(1, math.ceil(total / size))},
                "Items": items}

    async def _get_customer(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key.isdigit():
            return await self._list_customers(request)
        return json_answer(self.render_customer(self._customer(key)))

    def _customer(self, guid: str) -> dict:
        customer = self.customers.get(guid.lower())
        if customer is None:
            raise Refused(404, f"Customer {guid} not found.")
        return customer

    async def _body(self, request: web.Request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            raise Refused(400, "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise Refused(400, "The request body must be a JSON object.")
        return body

    def _resolve_salesperson(self, ref: Any) -> dict | None:
        if ref in (None, {}, ""):
            return None
        if not isinstance(ref, dict):
            raise Refused(400, "SalesPerson must be an object.", "SalesPerson")
        sp = self.salespersons.get(str(ref.get("Guid") or "").lower())
        if sp is None and ref.get("FullName"):
            name = str(ref["FullName"]).strip().lower()
            sp = next((s for s in self.salespersons.values()
                       if s["FullName"].lower() == name and not s["Obsolete"]), None)
        if sp is None or sp["Obsolete"]:
            raise Refused(400, f"Sales person {ref.get('FullName') or ref.get('Guid')!r} "
                               "does not exist or is obsolete.", "SalesPerson")
        return self._sp_ref(sp)

    async def _post_customer(self, request: web.Request) -> web.Response:
        guid = request.match_info["guid"].lower()
        if not GUID.match(guid):
            raise Refused(400, "The customer identifier must be a GUID.", "Guid")
        body = await self._body(request)
        if body.get("Guid") and str(body["Guid"]).lower() != guid:
            raise Refused(400, "The Guid in the body does not match the URL.", "Guid")
        existing = self.customers.get(guid)
        new = dict(existing) if existing else {
            "Guid": guid, "CustomerCode": "", "CustomerName": "", "PhoneNumber": "",
            "FaxNumber": "", "MobileNumber": "", "Email": "", "Website": "", "Notes": "",
            "SalesPerson": None, "Addresses": [], "Obsolete": False}
        for key in CUSTOMER_TEXT:
            if key in body:
                new[key] = text(body[key]) or ""
        if "Obsolete" in body:
            new["Obsolete"] = bool(body["Obsolete"])
        if "SalesPerson" in body:
            new["SalesPerson"] = self._resolve_salesperson(body["SalesPerson"])
        if "Addresses" in body:
            if not isinstance(body["Addresses"], list):
                raise Refused(400, "Addresses must be a list.", "Addresses")
            new["Addresses"] = [{k: text(a.get(k)) or "" for k in ADDRESS_TEXT}
                                | {"IsDefault": bool(a.get("IsDefault"))}
                                for a in body["Addresses"] if isinstance(a, dict)]
        validate_customer(new, {k: self.customers[k] for k in self.customers.matching(
            "CustomerCode", new.get("CustomerCode") or "")})
        now = self._now()
        new["LastModifiedOn"] = now
        new.setdefault("CreatedOn", now)
        new = Row(new)
        self.customers[guid] = new
        self.contacts.setdefault(guid, {})
        return await self._committed(self.render_customer(new), 200 if existing else 201)

    async def _list_contacts(self, request: web.Request) -> web.Response:
        customer = self._customer(request.match_info["guid"])
        return json_answer({"Items": list(self.contacts.get(customer["Guid"], {}).values())})

    def _save_contact(self, customer: dict, contact: dict) -> None:
        now = self._now()
        contact["LastModifiedOn"] = now
        contact.setdefault("CreatedOn", now)
        self.contacts.setdefault(customer["Guid"], {})[contact["Guid"]] = contact
        customer["LastModifiedOn"] = now

    async def _create_contact(self, request: web.Request) -> web.Response:
        customer = self._customer(request.match_info["guid"])
        body = await self._body(request)
        guid = str(body.get("Guid") or fake.guid(self.rng)).lower()
        if not GUID.match(guid):
            raise Refused(400, "The contact Guid must be a GUID.", "Guid")
        existing = self.contacts.get(customer["Guid"], {}).get(guid)
        contact = dict(existing) if existing else {"Guid": guid, **{k: "" for k in CONTACT_TEXT}}
        apply_contact(contact, body)
        self._save_contact(customer, contact)
        return await self._committed(dict(contact), 201)

    def _contact(self, request: web.Request) -> tuple[dict, dict]:
        customer = self._customer(request.match_info["guid"])
        contact = self.contacts.get(customer["Guid"], {}).get(
            request.match_info["contact"].lower())
        if contact is None:
            raise Refused(404, f"Contact {request.match_info['contact']} not found.")
        return customer, contact

    async def _update_contact(self, request: web.Request) -> web.Response:
        customer, contact = self._contact(request)
        body = await self._body(request)
        updated = dict(contact)
        apply_contact(updated, body)
        self._save_contact(customer, updated)
        return await self._committed(dict(updated))

    async def _delete_contact(self, request: web.Request) -> web.Response:
        customer, contact = self._contact(request)
        del self.contacts[customer["Guid"]][contact["Guid"]]
        customer["LastModifiedOn"] = self._now()
        return await self._committed(None)

    async def _salespersons(self, request: web.Request) -> web.Response:
        page, size = self._page_args(request)
        rows = sorted(self.salespersons.values(), key=lambda s: (s["FullName"], s["Guid"]))
        return json_answer(self._paged(rows, page, size))

    def company_guid(self, i: int = 0) -> str:
        """Operating company ``i``'s Guid: the default one (0) is the ``instance_id``."""
        if i == 0:
            return self.instance_id
        return str(uuid.uuid5(uuid.UUID(self.instance_id), f"company-{i}"))

    async def _companies(self, request: web.Request) -> web.Response:
        items = [{"Guid": self.company_guid(i),
                  "CompanyName": "Sandbox Trading Ltd" if i == 0 else f"Sandbox Company {i}",
                  "IsDefault": i == 0, "AdvancedLedgers": self.advanced_ledgers}
                 for i in range(max(1, self.operating_companies))]
        return json_answer({"Items": items})
