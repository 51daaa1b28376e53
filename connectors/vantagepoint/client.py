"""Deltek Vantagepoint through its REST API (``{base_url}/{hub}``, bearer token).

Entities are Vantagepoint's hubs, by their own names and keys: ``project`` (``WBS1``: ``Name``
the short name, ``LongName``, ``Status``, ``AjeraSync``, ``ChargeType``, ``ClientID``,
``ProjMgr``, ``AjeraSpentLabor``, ``AjeraSpentExpense``, ``AjeraBilled``, ``AjeraReceived``),
``firm`` (``ClientID``), ``contact`` (``ContactID``), ``employee`` (``Employee``).

Token: ``POST {base_url}/token`` with the password grant; it is refreshed (refresh grant)
a minute before ``expires_in`` runs out, and fetched again once when a request is answered
401. Credentials refused at the token endpoint are AuthError.

Changes: Vantagepoint documents no modified-since filter. ``changes`` lists only the key and
``ModDate`` of the records (``fieldFilter``, ``key_page_size`` a page), newest first
(``order=ModDate_D``) down to the first one older than ``since`` (a first read lists them all),
sorted by (``ModDate``, key), and reads them: one by one (``GET {hub}/{key}``) or by pages of
the whole listing (which: see below). So an idle run costs one small request per hub, whatever
its size, and ``changes`` yields in (``ModDate``, key) order (``ordered``). A record's
``modified`` is the ``ModDate`` of the key listing (see the Ajera connector for why). Hard
deletes are not reported (no feed): a complete read lets the engine see them. The records read by
pages of the whole listing are held until the read ends (a first sync holds the hub; later runs
hold only what changed).

Requests, and why the count is what it is: Vantagepoint documents no modified-since filter and no
read of several keys at once, so a change listing is the key listing above, one request per
``key_page_size`` changed keys (default 1,000; no maximum is published; a first read lists
every key), then either one ``GET {hub}/{key}`` per changed record or one request per
``page_size`` records of the whole hub (default 500), plus one ``GET {hub}/{key}`` per changed key
that read did not meet. Which: when the key listing went to the hub's end (a first read, or every
record changed), it counted the hub, and the one of fewer requests is taken (the pages, from two
records on with the default sizes); when it stopped at the cursor, the hub's size is not known (no
count is documented; learning it means listing the rest of its keys, requests a small change would
not repay), so up to ``FEW`` (50) changed records are read one by one, more by pages. ``count()``
is the key listing again: Vantagepoint documents no count or total, and that listing (key and
``ModDate``, stopping at the cursor) is its cheapest read. ``get`` is one ``GET {hub}/{key}``
per id (``capabilities.max_get`` is ``FEW``: 50 ids a call). ``find`` reads the whole hub by pages
of ``page_size`` and compares here (no documented filter). A create (``POST``), an update (``PUT``)
or a delete is one request: the ``POST`` and ``PUT`` answers are the record as stored, and nothing
is read before a write (no version to check). The token (above) costs one request on first use and
one per refresh, about every 29 minutes while requests go on (a refused refresh adds the password
grant); a 401 costs a token and the request again. ``check()`` forgets the token, so it is a token
request (the password grant; in a daemon's later runs, the refresh grant while that holds) and one
``GET project`` of one key (``pageSize=1``), whose ``Date`` also serves ``clock()``; ``identity()``
comes from the settings, no request. There are no ``options(...)`` lists (none is read). Pacing:
``requests_per_second``, default 10 in any second, the connector's own choice (Vantagepoint
publishes no limit); a token request goes in the slot of the request that needed it.

Writes: POST and PUT are partial (Vantagepoint: "PUT and POST behave as PATCH"). A POST is
never sent again after a fault that may follow its arrival (OutcomeUnknownError); PUT and
DELETE are idempotent and are retried. No version check exists in the documented API, so
``conditional_writes`` is off.

``clock()``: the ``Date`` header of the latest answer. ``identity()``:
``vantagepoint:<database>@<host>``, the database named in the token request and the server.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Sequence
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import (AuthError, Capabilities, ConnectorError, EntityInfo,
                             NotFoundError, Record, UnavailableError)
from connectors.http import HttpClient, SlidingWindowLimiter

KEYS = {"project": "WBS1", "firm": "ClientID", "contact": "ContactID", "employee": "Employee"}
FEW = 50        # changed records read one by one; more: by pages of the listing (when the
                # hub's size is unknown; else whichever costs fewer requests)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class VantagepointConnector:
    """Projects, firms, contacts and employees of one Vantagepoint database."""

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        base_url: str                  # e.g. https://company.deltek.com/company/api
        username: str
        password: SecretStr
        database: str
        client_id: str
        client_secret: SecretStr
        integrated: bool = False
        page_size: int = Field(500, ge=1)
        key_page_size: int = Field(1000, ge=1)
        requests_per_second: float = Field(10.0, gt=0)
        timeout: float = Field(30.0, gt=0)
        attempts: int = Field(5, ge=1)
        max_wait: float = Field(30.0, ge=0)

    def __init__(self, name: str, settings: "VantagepointConnector.Settings") -> None:
        self.name = name
        self.settings = settings
        self.capabilities = Capabilities(
            entities={e: EntityInfo(e, incremental=True, ordered=True) for e in KEYS},
            max_get=FEW, requests_per_second=settings.requests_per_second)
        per_second = settings.requests_per_second
        self.http = HttpClient(settings.base_url, system=name, auth=self._auth,
                               timeout=settings.timeout, attempts=settings.attempts,
                               max_wait=settings.max_wait,
                               headers={"Accept": "application/json"},
                               limiter=SlidingWindowLimiter(max(1, round(per_second)),
                                                            max(1, round(per_second))
                                                            / per_second))
        self._token: str | None = None
        self._refresh: str | None = None
        self._expires = 0.0                  # local monotonic time to renew at

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()

    async def check(self) -> None:
        self._token = None
        await self._request("GET", "/project", {"pageSize": 1, "fieldFilter": "WBS1"})

    async def clock(self) -> datetime | None:
        if self.http.server_time() is None:
            try:
                await self.check()
            except ConnectorError:
                pass
        return self.http.server_time()

    async def identity(self) -> str | None:
        host = urlsplit(self.settings.base_url).netloc
        return f"vantagepoint:{self.settings.database}@{host}"

    async def options(self, name: str) -> Any:
        raise KeyError(name)

    # --- the token -----------------------------------------------------------------------
    async def _auth(self, method: str, query: str, headers: dict[str, str]) -> None:
        if self._token is None or time.monotonic() >= self._expires:
            await self._fetch_token()
        headers["Authorization"] = f"Bearer {self._token}"

    async def _fetch_token(self) -> None:
        s = self.settings
        common = {"client_Id": s.client_id, "Client_Id": s.client_id,
                  "client_secret": s.client_secret.get_secret_value()}
        forms = []
        if self._refresh:
            forms.append({**common, "grant_type": "refresh_token",
                          "refresh_token": self._refresh})
        forms.append({**common, "grant_type": "password", "Username": s.username,
                      "Password": s.password.get_secret_value(),
                      "Integrated": "Y" if s.integrated else "N", "database": s.database})
        session = self.http.session
        if session is None:
            raise ConnectorError(f"{self.name}: client used before start()")
        for form in forms:
            status, body = await self._token_request(session, form)
            if status == 200 and isinstance(body, dict) and body.get("access_token"):
                self._token = body["access_token"]
                self._refresh = body.get("refresh_token")
                self._expires = time.monotonic() + max(0, int(body.get("expires_in") or 0) - 60)
                return
            self._refresh = None                  # a refused refresh: the password grant
            why = (body or {}).get("error_description") if isinstance(body, dict) else None
        raise AuthError(f"{self.name}: Vantagepoint refused the API user {s.username!r} "
                        f"({why or 'no reason given'}); check Utilities > Integrations > API "
                        "Authorization", status=400)

    async def _token_request(self, session, form: dict) -> tuple[int, Any]:
        """One token request, tried again after a transient fault (a token asked for twice
        does no harm): a connection that failed, a 5xx, a 429 (after its Retry-After)."""
        for attempt in range(1, self.settings.attempts + 1):
            try:
                async with session.post(f"{self.http.base_url}/token", data=form) as resp:
                    body = await resp.json(content_type=None)
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                status, body, retry_after = 0, None, None
                fault = type(exc).__name__
            else:
                if status < 500 and status != 429:
                    return status, body
                fault = f"HTTP {status}"
                if status == 429:
                    self.http.throttled += 1
            if attempt == self.settings.attempts:
                raise UnavailableError(f"{self.name}: token endpoint: {fault} (gave up after "
                                       f"{attempt} attempts)", status=status or None)
            try:
                wait = float(retry_after) if retry_after else 0.2 * 2 ** attempt
            except ValueError:
                wait = 0.2 * 2 ** attempt
            await asyncio.sleep(min(max(0.0, wait), self.settings.max_wait))
        raise AssertionError("unreachable")

    async def _request(self, method: str, path: str, params: dict | None = None,
                       body: Any = None) -> Any:
        for attempt in range(2):
            try:
                response = await self.http.request(method, path, params=params, json=body)
                return response.body
            except AuthError:
                if attempt:
                    raise
                self._token = None              # expired early or revoked: once more
        raise AssertionError("unreachable")

    # --- reading -------------------------------------------------------------------------
    async def _stamps(self, entity: str, since: datetime | None
                      ) -> tuple[list[tuple[datetime, str]], bool]:
        """(ModDate, key) of the records changed at or after ``since``, in that order, and
        whether the listing went to the hub's end (they are then all its records). With a
        ``since``, the keys are listed newest first (``order=ModDate_D``) and the listing stops
        at the first older one, so an idle run reads one page of keys, not the whole hub. (A
        record without a ``ModDate`` sorts last and is read by a complete listing only: it
        gets one with its first edit.)"""
        key = self._key(entity)
        stamps: list[tuple[datetime, str]] = []
        page = 1
        while True:
            rows = await self._request("GET", f"/{entity}", {
                "fieldFilter": f"{key},ModDate",
                "order": "ModDate" if since is None else "ModDate_D",
                "pageSize": self.settings.key_page_size, "page": page}) or []
            older = False
            for row in rows:
                when = _date(row.get("ModDate"))
                if since is not None and (when is None or when < since):
                    older = True
                    break
                stamps.append((when or _EPOCH, str(row[key])))
            if older or len(rows) < self.settings.key_page_size:
                return sorted(stamps), not older
            page += 1

    async def count(self, entity: str, since: datetime | None) -> int:
        """How many records ``changes`` would yield: the key listing alone (key and
        ``ModDate`` only, stopping at ``since``). Vantagepoint documents no count or total,
        and no listing cheaper than this one."""
        return len((await self._stamps(entity, since))[0])

    async def changes(self, entity: str, since: datetime | None) -> AsyncIterator[list[Record]]:
        key = self._key(entity)
        stamps, whole = await self._stamps(entity, since)
        if whole:       # the hub's size is known: its pages cost len // page_size + 1 requests
            by_pages = len(stamps) // self.settings.page_size + 1 < len(stamps)
        else:           # it is not (the listing stopped at the cursor; no count is documented)
            by_pages = len(stamps) > FEW
        if not by_pages:
            got = {r.id: r for r in await self.get(entity, [k for _, k in stamps])}
        else:
            wanted = {k for _, k in stamps}
            got = {}
            async for row in self._all(entity):
                if str(row[key]) in wanted:
                    got[str(row[key])] = self._record(entity, row)
            missing = [k for k in wanted if k not in got]      # keyed anew meanwhile
            got.update({r.id: r for r in await self.get(entity, missing)})
        size = self.settings.page_size
        for i in range(0, len(stamps), size):
            out = []
            for when, k in stamps[i:i + size]:
                if k in got:
                    got[k].modified = when
                    out.append(got[k])
            if out:
                yield out

    async def _all(self, entity: str) -> AsyncIterator[dict]:
        page = 1
        while True:
            rows = await self._request("GET", f"/{entity}", {
                "order": self._key(entity), "pageSize": self.settings.page_size,
                "page": page}) or []
            for row in rows:
                yield row
            if len(rows) < self.settings.page_size:
                return
            page += 1

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        self._key(entity)
        out = []
        for id_ in dict.fromkeys(str(i) for i in ids):
            try:
                row = await self._request("GET", f"/{entity}/{quote(id_, safe='')}")
            except NotFoundError:
                continue
            out.append(self._record(entity, row))
        return out

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        wanted = {_fold(v) for v in values if v is not None}
        return [self._record(entity, row) async for row in self._all(entity)
                if _fold(row.get(field)) in wanted]

    # --- writing -------------------------------------------------------------------------
    async def create(self, entity: str, fields: dict[str, Any]) -> Record:
        self._key(entity)
        row = await self._request("POST", f"/{entity}", body=self._payload(fields))
        return self._record(entity, row)

    async def update(self, entity: str, id: str, fields: dict[str, Any],
                     version: str | None = None) -> Record:
        key = self._key(entity)
        body = {k: v for k, v in self._payload(fields).items() if k != key}
        row = await self._request("PUT", f"/{entity}/{quote(str(id), safe='')}", body=body)
        return self._record(entity, row)

    async def delete(self, entity: str, id: str) -> None:
        self._key(entity)
        await self._request("DELETE", f"/{entity}/{quote(str(id), safe='')}")

    # --- helpers -------------------------------------------------------------------------
    def _key(self, entity: str) -> str:
        try:
            return KEYS[entity]
        except KeyError:
            raise KeyError(f"{self.name}: unknown entity {entity!r} "
                           f"(known: {', '.join(KEYS)})") from None

    @staticmethod
    def _payload(fields: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in fields.items() if k != "ModDate"}

    def _record(self, entity: str, row: Any) -> Record:
        if not isinstance(row, dict) or self._key(entity) not in row:
            raise UnavailableError(f"{self.name}: Vantagepoint answered {entity} without "
                                   "its key")
        fields = dict(row)
        stamp = fields.pop("ModDate", None)
        return Record(id=str(row[self._key(entity)]), fields=fields, modified=_date(stamp),
                      version=stamp)


def _date(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else \
        when.astimezone(timezone.utc)


def _fold(value: Any) -> Any:
    return " ".join(value.split()).casefold() if isinstance(value, str) else value
