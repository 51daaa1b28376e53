"""The Unleashed connector: customers and their contacts, through the documented REST API.

Entities and the field paths they expose (vendor names, flattened):

- ``customers`` (id: the customer Guid): every scalar property of the customer, nested
  objects flattened (``CustomerCode``, ``CustomerName``, ``PhoneNumber``, ``Website``,
  ``Obsolete``, ...), the sales person as ``SalesPerson.FullName`` and ``SalesPerson.Guid``,
  and the default address as ``Address.StreetAddress``, ``Address.StreetAddress2``,
  ``Address.Suburb``, ``Address.City``, ``Address.Region``, ``Address.Country``,
  ``Address.PostalCode``. Customers are never deleted, only made ``Obsolete``; obsolete ones
  come back from ``changes`` as ordinary records with ``Obsolete`` true.
- ``contacts`` (id: the contact Guid): ``FirstName``, ``LastName``, ``EmailAddress``,
  ``PhoneNumber``, ``MobilePhone``, ``FaxNumber`` and ``CustomerGuid`` (the parent customer).
  Unleashed has no contact listing of its own, so ``changes`` reads the customers modified
  since the cursor (a contact change bumps its customer, see the sandbox) with
  ``includeAllContacts=true``, which embeds every contact in its customer: the contacts come
  in the same pages as the customers.

Requests, and why the count is what it is: a change listing is one request per page of
customers (up to 1,000), contacts included. A customer item that comes back without its
``Contacts`` list (a server that ignores the parameter, an answer cut short) is not taken to
have none: its contacts are read on their own, ``GET /Customers/{guid}/Contacts``, the only
other route to them (as many at a time as the answers and the quota allow, at most
``CONTACT_READS``: ``connectors/pace.py``). Reads by id are one
``GET /Customers/{guid}`` each (no multi-Guid filter), unless reading every customer is
fewer requests (below). An update reads the customer first: Unleashed has no partial update (a
property left out of the POST is blanked). The engine says which customers a chunk updates
(``will_update``); when the whole customer listing, ``READ_AHEAD_PAGE`` a page, takes fewer
requests than one read each, the customers are taken from its pages, so a chunk of k updates
over n customers costs k POSTs and min(k, n / 1,000) reads. A customer the pages did not
carry (edited while they were read, a page that failed) is read on its own, as before; a read
kept for an update serves that update only, in the chunk it was read for, and only for
``connectors/kept.py``'s ``MAX_AGE`` (a POST sends every property as read: an edit made in
Unleashed meanwhile to a property accord does not map would be overwritten, so the copy must
stay young). ``get`` chooses the same way. ``check()`` reads ``GET /Companies`` and keeps it
for the run's ``identity()`` and ``options("account")`` (the UL-6 guards): one request for
the three.

``changes("customers")`` pages by keyset: ``orderBy=LastModifiedOn`` with ``modifiedSince``
moved to the last time seen, dropping the (id, time) pairs already yielded at that boundary,
so a customer edited while the pages are read moves to the end and is still read.

Malformed answers: a body that is not the documented JSON (an HTML error page, a truncated
body, a list without ``Items``) is an UnavailableError naming the request; a customer or
contact that cannot be read (a ``LastModifiedOn`` that is not a date...) comes back as a
Record with ``error`` set and the rest of its page goes on; one without a ``Guid`` is left out
and counted (``reader.skipped``). A write whose answer cannot be read is OutcomeUnknownError.

A property the answer does not carry is left out of ``Record.fields`` (unknown, not empty):
``SalesPerson.*`` only when the answer has ``SalesPerson`` (null: both None), ``Address.*``
only when it has ``Addresses`` (an empty list: no address, every line None). A contact update
sends only the properties known, so one left out of a read is never blanked.

Writes are upserts keyed by a Guid this client chooses (``POST /Customers/{guid}``, a contact
POST with its ``Guid``; the sandbox documents both), so sending one again after a timeout or a
5xx cannot make a second record: they go with ``idempotent=True`` and are retried like reads.

``clock()``: the ``Date`` header of the latest answer (``HttpClient.server_time``).
``identity()``: ``unleashed:company/<Guid>`` of the default company in ``GET /Companies``
(the one with ``IsDefault``, else the first); never the API id or key.

Optimistic concurrency: the Unleashed API documents none (no ETag, no version to send back),
so ``conditional_writes`` is off: a customer edited in Unleashed between the engine's read and
its write is overwritten by that write for the fields it sends (only the fields that changed),
and the next run sees the edit as a change. The window is one chunk's decisions: the record is
read, decided and written within seconds, one page at a time. For the properties accord does
not send, the window is from the read before the write (by id, or the listing read for the
chunk, at most ``MAX_AGE`` old) to the POST.
"""
from __future__ import annotations

import uuid
from collections import OrderedDict
from datetime import datetime
from typing import Any, AsyncIterator, Collection, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from yarl import URL

from connectors.base import (AuthError, Capabilities, ConnectorError, EntityInfo, NotFoundError,
                             Record, RecordError, UnavailableError, flatten, unflatten, utc)
from connectors.http import HttpClient, Response, SlidingWindowLimiter, default_error_parser
from connectors.kept import Kept
from connectors.pace import AdaptiveLimit, together
from connectors.reading import RecordReader, date_field
from connectors.unleashed.wire import decode_date, format_since, sign, to_ms

ADDRESS_FIELDS = ("StreetAddress", "StreetAddress2", "Suburb", "City", "Region", "Country",
                  "PostalCode")
# the documented largest page: the listing that stands in for reads by id uses it
READ_AHEAD_PAGE = 1000
CONTACT_FIELDS = ("FirstName", "LastName", "EmailAddress", "PhoneNumber", "MobilePhone",
                  "FaxNumber")
_READ_ONLY = {"Guid", "LastModifiedOn", "CreatedOn", "CreatedBy", "LastModifiedBy"}
_CACHE_SIZE = 10_000
CONTACT_READS = 16      # the most contact lists read at once (the round trips overlap)
# vendor field named in a 400 -> the field paths this connector exposes for it
_FIELD_PATHS = {"SalesPerson": ("SalesPerson.FullName", "SalesPerson.Guid"),
                "Addresses": tuple(f"Address.{k}" for k in ADDRESS_FIELDS)}


def parse_error(status: int, body: Any) -> tuple[str, tuple[str, ...]]:
    """Unleashed errors: ``{"Description", "Items": [{"Field", "Description"}]}``."""
    if isinstance(body, dict):
        items = [i for i in body.get("Items") or [] if isinstance(i, dict)]
        if items:
            message = "; ".join(str(i.get("Description") or i.get("Field")) for i in items)
            fields: list[str] = []
            for item in items:
                if item.get("Field"):
                    fields.extend(_FIELD_PATHS.get(item["Field"], (item["Field"],)))
            return message, tuple(fields)
        if body.get("Description"):
            return str(body["Description"]), ()
    return default_error_parser(status, body)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().casefold() == b.strip().casefold()
    return a == b


class UnleashedConnector:
    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        base_url: str = "https://api.unleashedsoftware.com"
        api_id: str
        api_key: SecretStr
        page_size: int = Field(200, ge=1, le=1000)
        client_type: str = "accord/sync"
        timeout: float = 30.0
        # Unleashed publishes no request quota: no client-side limit unless one is set (its
        # 429 answers are honoured either way, Retry-After included)
        requests_per_window: int | None = Field(None, ge=1)
        window_seconds: float = Field(60.0, gt=0)

    def __init__(self, name: str, settings: "UnleashedConnector.Settings | dict") -> None:
        if not isinstance(settings, UnleashedConnector.Settings):
            settings = UnleashedConnector.Settings.model_validate(settings)
        self.name = name
        self.settings = settings
        self.capabilities = Capabilities(entities={
            "customers": EntityInfo("customers", incremental=True, ordered=True,
                                    reports_deletes=False, can_delete=False),
            "contacts": EntityInfo("contacts", incremental=True, ordered=False,
                                   reports_deletes=False),
        }, max_get=100, requests_per_second=(
            settings.requests_per_window / settings.window_seconds
            if settings.requests_per_window else None))
        self.http = HttpClient(
            settings.base_url, system="unleashed", auth=self._sign, timeout=settings.timeout,
            error_parser=parse_error,
            limiter=(SlidingWindowLimiter(settings.requests_per_window, settings.window_seconds)
                     if settings.requests_per_window else None),
            headers={"Accept": "application/json", "Content-Type": "application/json",
                     "client-type": settings.client_type})
        self._salespersons: list[dict] | None = None
        self._companies: list[dict] | None = None      # GET /Companies, once per run
        self._contact_owner: OrderedDict[str, str] = OrderedDict()   # contact -> customer
        self.ahead: Kept[dict] = Kept()     # customers read for the chunk's updates, by Guid
        self._listing_pages: int | None = None   # the whole listing's pages, as last answered
        self.reader = RecordReader("unleashed")
        self.pace = AdaptiveLimit(CONTACT_READS, self.capabilities.requests_per_second)

    # --- plumbing ------------------------------------------------------------------------
    def _sign(self, method: str, query: str, headers: dict[str, str]) -> None:
        headers["api-auth-id"] = self.settings.api_id
        headers["api-auth-signature"] = sign(self.settings.api_key.get_secret_value(), query)

    async def _call(self, method: str, path: str, params: dict | None = None,
                    body: Any = None, *, idempotent: bool | None = None) -> Response:
        # Encoded here, once, in yarl's canonical form (which aiohttp leaves as it is), so the
        # signed bytes are the bytes sent.
        query = URL("/").with_query(params).raw_query_string if params else None
        return await self.http.request(method, path, query=query, json=body,
                                       idempotent=idempotent)

    async def start(self) -> None:
        self._salespersons = None
        self.ahead.clear()
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()

    async def check(self) -> None:
        """A run starts here: ``GET /Companies`` proves the credentials and is kept for the
        run's ``identity()`` and ``options("account")`` (one request for the three)."""
        self._companies = None
        self.ahead.clear()
        self._companies = await self._company_list()

    async def _company_list(self) -> list[dict]:
        if self._companies is None:
            self._companies = [i for i in (await self._call("GET", "/Companies")).rows("Items")
                               if isinstance(i, dict)]
        return self._companies

    async def clock(self) -> datetime | None:
        if self.http.server_time() is None:
            try:                                # the cheapest request; any answer has a Date
                await self.check()
            except ConnectorError:
                pass
        return self.http.server_time()

    async def identity(self) -> str | None:
        items = await self._company_list()
        default = next((i for i in items if i.get("IsDefault")), items[0] if items else None)
        guid = default.get("Guid") if default else None
        return f"unleashed:company/{str(guid).lower()}" if guid else None

    def _entity(self, entity: str) -> str:
        if entity not in self.capabilities.entities:
            raise KeyError(f"unleashed: unknown entity {entity!r}")
        return entity

    # --- records -------------------------------------------------------------------------
    @staticmethod
    def _default_address(addresses: list) -> dict | None:
        addresses = [a for a in addresses or [] if isinstance(a, dict)]
        return (next((a for a in addresses if a.get("IsDefault")), None)
                or next((a for a in addresses if a.get("AddressType") == "Postal"), None)
                or (addresses[0] if addresses else None))

    def _customer_record(self, raw: dict) -> Record:
        modified = date_field(raw, "LastModifiedOn", decode_date)
        plain = {k: v for k, v in raw.items()
                 if k not in _READ_ONLY and k not in ("SalesPerson", "Addresses")}
        fields = {k: v for k, v in flatten(plain).items() if not isinstance(v, list)}
        if "SalesPerson" in raw:
            sp = raw["SalesPerson"]
            for key in ("FullName", "Guid"):
                if not isinstance(sp, dict):        # null: no sales person
                    fields[f"SalesPerson.{key}"] = None
                elif key in sp:
                    fields[f"SalesPerson.{key}"] = sp[key]
        if "Addresses" in raw:
            address = self._default_address(raw["Addresses"])
            for key in ADDRESS_FIELDS:
                if address is None:                 # no address at all
                    fields[f"Address.{key}"] = None
                elif key in address:
                    fields[f"Address.{key}"] = address[key]
        return Record(id=str(raw["Guid"]).lower(), fields=fields, modified=modified,
                      version=str(to_ms(modified)) if modified else None)

    def _customer_stub(self, raw: dict) -> Record:
        """A customer as the listing of contacts needs it: its id and when it changed. Its
        own fields are the customers flow's (parsing them all cost a seventh of a full
        read), and one of them unreadable does not keep its contacts from being read."""
        return Record(id=str(raw["Guid"]).lower(), fields={},
                      modified=date_field(raw, "LastModifiedOn", decode_date))

    def _contact_record(self, raw: dict, customer: str) -> Record:
        modified = date_field(raw, "LastModifiedOn", decode_date)
        self._remember(str(raw["Guid"]).lower(), customer)
        fields = {k: raw[k] for k in CONTACT_FIELDS if k in raw}
        fields["CustomerGuid"] = customer
        return Record(id=str(raw["Guid"]).lower(), fields=fields, modified=modified,
                      version=str(to_ms(modified)) if modified else None)

    def _customers(self, response: Response) -> list[Record]:
        return self.reader.page(response.rows("Items"), self._customer_record, _guid,
                                response.request)

    def _remember(self, contact: str, customer: str) -> None:
        self._contact_owner[contact] = customer
        self._contact_owner.move_to_end(contact)
        while len(self._contact_owner) > _CACHE_SIZE:
            self._contact_owner.popitem(last=False)

    # --- reading -------------------------------------------------------------------------
    def changes(self, entity: str, since: datetime | None) -> AsyncIterator[list[Record]]:
        if self._entity(entity) == "customers":
            return self._customer_changes(since)
        return self._contact_changes(since)

    async def _customer_changes(self, since: datetime | None) -> AsyncIterator[list[Record]]:
        async for records, _, _ in self._customer_listing(since):
            yield records

    async def _customer_listing(self, since: datetime | None, contacts: bool = False
                                ) -> AsyncIterator[tuple[list[Record], dict[str, dict], str]]:
        """Pages of customers changed since ``since``: their records, the raw items by id
        (with ``Contacts`` embedded when ``contacts``) and the request that read them."""
        since = utc(since) if since else None
        cursor, page = since, 1
        boundary: set[tuple[str, int]] = set()     # (id, ms) already yielded at the cursor
        asked: set[tuple[str | None, int]] = set()
        unreadable: set[str] = set()               # records already yielded with an error
        size = self.settings.page_size
        while True:
            params: dict[str, Any] = {"pageSize": size, "includeObsolete": "true",
                                      "orderBy": "LastModifiedOn"}
            if contacts:
                params["includeAllContacts"] = "true"
            if cursor is not None:
                params["modifiedSince"] = format_since(cursor)
            key = (params.get("modifiedSince"), page)
            if key in asked:            # loop guard: the same question twice means no progress
                return
            asked.add(key)
            response = await self._call("GET", f"/Customers/{page}", params)
            items = response.rows("Items")
            records = (self.reader.page(items, self._customer_stub, _guid, response.request)
                       if contacts else self._customers(response))
            out = [r for r in records
                   if (r.id, to_ms(r.modified) if r.modified else 0) not in boundary
                   and (since is None or r.modified is None or r.modified >= since)
                   and r.id not in unreadable]
            unreadable |= {r.id for r in out if r.error}
            if out:
                yield out, ({str(_guid(i)): i for i in items if isinstance(i, dict)}
                            if contacts else {}), response.request
            if len(items) < size:
                return
            last = max((r.modified for r in records if r.modified and not r.error),
                       default=None)
            if last is None:
                page += 1
                continue
            if cursor is None or to_ms(last) > to_ms(cursor):
                cursor, page = last, 1
                boundary = set()
            else:                        # a whole page at one instant: step to the next page
                page += 1
            boundary |= {(r.id, to_ms(r.modified)) for r in records
                         if r.modified and to_ms(r.modified) == to_ms(cursor)}

    async def _contacts_of(self, customer: str) -> list[Record]:
        response = await self._call("GET", f"/Customers/{customer}/Contacts")
        return self.reader.page(response.rows("Items"),
                                lambda c: self._contact_record(c, customer), _guid,
                                response.request)

    async def _contact_changes(self, since: datetime | None) -> AsyncIterator[list[Record]]:
        since = utc(since) if since else None
        async for customers, items, request in self._customer_listing(since, contacts=True):
            wanted = [c.id for c in customers if not c.error]
            embedded: dict[str, list[Record]] = {}
            for customer in wanted:
                rows = (items.get(customer) or {}).get("Contacts")
                if isinstance(rows, list):
                    embedded[customer] = self.reader.page(
                        rows, lambda c, owner=customer: self._contact_record(c, owner), _guid,
                        request)
            missing = [c for c in wanted if c not in embedded]   # unknown, not none
            embedded.update(zip(missing, await self._contacts_of_many(missing)))
            out = [c for customer in wanted for c in embedded[customer]
                   if since is None or c.modified is None or c.modified >= since]
            if out:
                yield out

    async def _contacts_of_many(self, customers: list[str]) -> list[list[Record]]:
        """The contacts of each customer (one request each: see the module docstring),
        paced (``self.pace``), in the customers' order; a customer gone meanwhile has
        none."""
        async def one(customer: str) -> list[Record]:
            async with self.pace.slot():
                try:
                    return await self._contacts_of(customer)
                except NotFoundError:
                    return []
        return await together(one(c) for c in customers)

    async def _customer_pages(self, params: dict) -> AsyncIterator[tuple[list, str]]:
        """Plain page-number listing (for find): stops on a short page or a repeated page."""
        seen: set[tuple[str, ...]] = set()
        page = 1
        while True:
            response = await self._call("GET", f"/Customers/{page}",
                                        {"pageSize": self.settings.page_size,
                                         "includeObsolete": "true", **params})
            items = response.rows("Items")
            ids = tuple(str(_guid(i)) if isinstance(i, dict) else "" for i in items)
            if not items or ids in seen:
                return
            seen.add(ids)
            yield items, response.request
            pages = _pages(response.body)
            if len(items) < self.settings.page_size or (pages and page >= pages):
                return
            page += 1

    async def _listed(self, ids: set[str]) -> dict[str, tuple[dict, str]]:
        """Those of ``ids`` the whole customer listing carries, read page by page while the
        ids still wanted outnumber the pages still to read (a read each would be fewer
        requests otherwise); {guid: (raw, request)}. A page that fails ends the listing: the
        rest are read one by one."""
        found: dict[str, tuple[dict, str]] = {}
        wanted = set(ids)
        page = 1
        while len(wanted) > (1 if self._listing_pages is None
                             else self._listing_pages - page + 1):
            try:
                response = await self._call("GET", f"/Customers/{page}",
                                            {"pageSize": READ_AHEAD_PAGE,
                                             "includeObsolete": "true",
                                             "orderBy": "LastModifiedOn"})
                items = response.rows("Items")
            except (AuthError, UnavailableError):
                raise
            except ConnectorError:
                break
            pages = _pages(response.body)
            self._listing_pages = pages if pages else None
            for item in items:
                guid = _guid(item) if isinstance(item, dict) else None
                if guid in wanted:
                    found[guid] = (item, response.request)
                    wanted.discard(guid)
            if not pages or page >= pages or len(items) < READ_AHEAD_PAGE:
                break
            page += 1
        return found

    async def will_update(self, entity: str, updates: Mapping[str, Collection[str]]) -> None:
        """The customers a chunk is about to update, read together when the listing is fewer
        requests than a read each (see the module docstring); kept for those updates only."""
        self.ahead.clear()
        if self._entity(entity) != "customers":
            return
        wanted = {str(i).lower() for i in updates if _is_guid(i)}
        self.ahead.replace({guid: raw for guid, (raw, _) in
                            (await self._listed(wanted)).items()})

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        if self._entity(entity) == "customers":
            wanted = [str(i).lower() for i in ids if _is_guid(i)]
            listed = await self._listed(set(wanted))
            out = []
            for id in dict.fromkeys(wanted):
                if id in listed:
                    raw, request = listed[id]
                else:
                    try:
                        response = await self._call("GET", f"/Customers/{id}")
                    except NotFoundError:
                        continue
                    raw, request = response.object(), response.request
                out.extend(self.reader.page([raw], self._customer_record, _guid, request))
            return out
        wanted = [str(i).lower() for i in ids]
        found: dict[str, Record] = {}
        owners = {self._contact_owner[i] for i in wanted if i in self._contact_owner}
        for customer in owners:
            try:
                found.update((c.id, c) for c in await self._contacts_of(customer))
            except NotFoundError:
                continue
        if any(i not in found for i in wanted):
            # No documented route reads one contact by its Guid alone: scan every customer.
            async for page in self._contact_changes(None):
                found.update((c.id, c) for c in page if c.id in wanted)
        return [found[i] for i in dict.fromkeys(wanted) if i in found]

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        values = [v for v in values if v not in (None, "")]
        if not values:
            return []
        out: dict[str, Record] = {}
        if self._entity(entity) == "customers":
            filters = {"CustomerCode": "customerCode", "CustomerName": "customerName"}
            queries = ([{filters[field]: v} for v in values] if field in filters
                       else [{}])
            for params in queries:
                async for items, request in self._customer_pages(params):
                    for r in self.reader.page(items, self._customer_record, _guid, request):
                        if r.error or any(_same(r.fields.get(field), v) for v in values):
                            out[r.id] = r
            return list(out.values())
        if field == "EmailAddress":
            for value in values:
                async for items, request in self._customer_pages({"contactEmail": value}):
                    for raw in items:
                        guid = _guid(raw.get("Guid")) if isinstance(raw, dict) else None
                        if not isinstance(guid, str) or not guid:
                            continue
                        for c in await self._contacts_of(guid):
                            if c.error or _same(c.fields.get(field), value):
                                out[c.id] = c
            return list(out.values())
        async for page in self._contact_changes(None):
            out.update((c.id, c) for c in page
                       if any(_same(c.fields.get(field), v) for v in values))
        return list(out.values())

    # --- writing -------------------------------------------------------------------------
    async def _salesperson_list(self, refresh: bool = False) -> list[dict]:
        if self._salespersons is None or refresh:
            found: list[dict] = []
            page, seen = 1, set()
            while True:
                response = await self._call("GET", f"/SalesPersons/{page}", {"pageSize": 1000})
                items = [i for i in response.rows("Items")
                         if isinstance(i, dict) and i.get("Guid")
                         and isinstance(i.get("FullName"), str)]
                ids = tuple(str(i.get("Guid")) for i in items)
                if not items or ids in seen:
                    break
                seen.add(ids)
                found.extend(items)
                pages = _pages(response.body) or 1
                if page >= pages:
                    break
                page += 1
            self._salespersons = found
        return self._salespersons

    async def _salesperson(self, full_name: str) -> dict:
        for refresh in (False, True):
            for sp in await self._salesperson_list(refresh):
                if not sp.get("Obsolete") and _same(sp.get("FullName"), full_name):
                    return {"Guid": sp["Guid"], "FullName": sp["FullName"],
                            "Email": sp.get("Email")}
        raise RecordError(f"unleashed: no active sales person named {full_name!r}",
                          fields=("SalesPerson.FullName",))

    async def _apply(self, raw: dict, fields: dict[str, Any], *, existing: bool = False) -> dict:
        body = {k: v for k, v in raw.items() if k not in ("LastModifiedOn", "CreatedOn")}
        nested: dict[str, Any] = {}
        for path, value in fields.items():
            if path in _READ_ONLY or path == "SalesPerson.Email":
                continue
            if path == "SalesPerson.FullName":
                body["SalesPerson"] = await self._salesperson(value) if value else None
            elif path == "SalesPerson.Guid":
                if "SalesPerson.FullName" not in fields:
                    body["SalesPerson"] = {"Guid": value} if value else None
            elif path.startswith("Address."):
                if existing and "Addresses" not in raw:
                    # an existing customer read without its addresses: writing one default
                    # address would replace the ones we were not shown
                    raise RecordError("unleashed: the customer was read without its "
                                      "Addresses; its address is not written",
                                      fields=[f for f in fields if f.startswith("Address.")])
                addresses = [dict(a) for a in body.get("Addresses") or []]
                default = self._default_address(addresses)
                if default is None:
                    default = {"AddressType": "Postal", "IsDefault": True}
                    addresses.append(default)
                default[path.split(".", 1)[1]] = value
                body["Addresses"] = addresses
            elif "." in path:
                nested[path] = value
            else:
                body[path] = value
        for key, value in unflatten(nested).items():
            base = body.get(key) if isinstance(body.get(key), dict) else {}
            body[key] = {**base, **value}
        return body

    async def create(self, entity: str, fields: dict[str, Any]) -> Record:
        if self._entity(entity) == "contacts":
            return await self._create_contact(fields)
        guid = str(uuid.uuid4())
        body = await self._apply({"Guid": guid}, fields)
        if not body.get("CustomerCode"):
            # Documented choice: the name's first 8 letters/digits, a dash, the Guid's first 6
            # hex digits; stable for this Guid, so a retried create sends the same code.
            stem = "".join(ch for ch in str(body.get("CustomerName") or "") if ch.isalnum())
            body["CustomerCode"] = f"{(stem[:8] or 'CUST').upper()}-{guid[:6].upper()}"
        return self._written(await self._call("POST", f"/Customers/{guid}", body=body,
                                              idempotent=True), self._customer_record)

    def _written(self, response: Response, parse) -> Record:
        return self.reader.written(response.body, parse, response.request)

    async def update(self, entity: str, id: str, fields: dict[str, Any],
                     version: str | None = None) -> Record:
        if self._entity(entity) == "contacts":
            return await self._update_contact(id, fields)
        if not _is_guid(id):
            raise NotFoundError(f"unleashed: not found: customer {id}")
        raw = self.ahead.take(str(id).lower())
        if raw is None:
            raw = (await self._call("GET", f"/Customers/{id}")).object()
        body = await self._apply(raw, fields, existing=True)
        return self._written(await self._call("POST", f"/Customers/{id}", body=body,
                                              idempotent=True), self._customer_record)

    async def delete(self, entity: str, id: str) -> None:
        if self._entity(entity) == "customers":
            raise RecordError("Unleashed customers cannot be deleted; set Obsolete")
        customer = await self._owner(id)
        await self._call("DELETE", f"/Customers/{customer}/Contacts/{id}")
        self._contact_owner.pop(str(id).lower(), None)

    async def _create_contact(self, fields: dict[str, Any]) -> Record:
        customer = str(fields.get("CustomerGuid") or "").lower()
        if not customer:
            raise RecordError("unleashed: a contact needs CustomerGuid (its customer)",
                              fields=("CustomerGuid",))
        body = {"Guid": str(uuid.uuid4()),
                **{k: v for k, v in fields.items() if k in CONTACT_FIELDS}}
        try:
            response = await self._call("POST", f"/Customers/{customer}/Contacts", body=body,
                                        idempotent=True)
        except NotFoundError as exc:
            raise RecordError(f"unleashed: customer {customer} not found ({exc.message})",
                              status=exc.status, fields=("CustomerGuid",)) from None
        return self._written(response, lambda raw: self._contact_record(raw, customer))

    async def _owner(self, contact: str) -> str:
        contact = str(contact).lower()
        if contact not in self._contact_owner:
            await self.get("contacts", [contact])
        if contact not in self._contact_owner:
            raise NotFoundError(f"unleashed: not found: contact {contact}")
        return self._contact_owner[contact]

    async def _update_contact(self, id: str, fields: dict[str, Any]) -> Record:
        customer = await self._owner(id)
        target = fields.get("CustomerGuid")
        if target and str(target).lower() != customer:
            raise RecordError("unleashed: a contact cannot move to another customer",
                              fields=("CustomerGuid",))
        current = {c.id: c for c in await self._contacts_of(customer)}.get(str(id).lower())
        if current is not None and current.error:
            raise RecordError(current.error)
        if current is None:
            self._contact_owner.pop(str(id).lower(), None)
            raise NotFoundError(f"unleashed: not found: contact {id}")
        body = {"Guid": current.id,
                **{k: current.fields[k] for k in CONTACT_FIELDS if k in current.fields},
                **{k: v for k, v in fields.items() if k in CONTACT_FIELDS}}
        response = await self._call("PUT", f"/Customers/{customer}/Contacts/{current.id}",
                                    body=body)
        return self._written(response, lambda raw: self._contact_record(raw, customer))

    # --- reference data ------------------------------------------------------------------
    async def options(self, name: str) -> Any:
        if name == "salespersons":
            return [sp["FullName"] for sp in await self._salesperson_list(refresh=True)
                    if not sp.get("Obsolete")]
        if name == "account":
            items = await self._company_list()
            return {"operating_companies": len(items),
                    "advanced_ledgers": any(bool(i.get("AdvancedLedgers")) for i in items)}
        raise KeyError(name)


def _guid(row: dict) -> Any:
    """A row's Guid as this connector exposes ids (lower case)."""
    value = row.get("Guid") if isinstance(row, dict) else row
    return value.lower() if isinstance(value, str) else value


def _is_guid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _pages(body: Any) -> int | None:
    pagination = body.get("Pagination") if isinstance(body, dict) else None
    pages = pagination.get("NumberOfPages") if isinstance(pagination, dict) else None
    return pages if isinstance(pages, int) and not isinstance(pages, bool) else None


__all__ = ["UnleashedConnector", "parse_error"]
