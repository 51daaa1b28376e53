"""Sage CRM through its SData 2.0 REST API: ``{base_url}/sdata/{install}j/sagecrm2/-/{Entity}``.

Auth: HTTP Basic with a CRM user (stateless: no login session). Entities are the API's own
resource kinds: ``Company``, ``Person``, ``Address``, ``Phone``, ``Email``; fields are the
API's lower-case column names (``comp_name``, ``comp_type``...), custom fields included
(plain ``comp_...`` columns, described by ``$prototypes/{entity}``: ``fields()``).

Changes: keyset pages on (``<prefix>_updateddate``, id): the first page asks
``where=comp_updateddate ge '<since>'``, each next one ``(comp_updateddate gt 'T' or
(comp_updateddate eq 'T' and comp_companyid gt K))``, with ``orderBy=comp_updateddate asc,
comp_companyid asc`` and ``startIndex=1``, so a record edited while pages are read moves past
the cursor and is read later. The API does not return deleted rows, so deletes look like
disappearance (``reports_deletes`` off: the engine infers them from complete listings).

Writes: POST creates (never sent again after a fault that may follow its arrival:
``OutcomeUnknownError``), PATCH updates (``update_method = "PUT"`` for versions whose docs
say PUT; both are partial), DELETE. A write's answer is the entry as stored, which becomes
the engine's base. Errors: the ``$diagnoses`` body's ``$message`` (and ``$source``, the field
it is about, which lets the engine send the rest of a record without it).

``find`` on a VAT field (``vat_fields``, default ``comp_vatnumber``) asks for the number's
letters and digits in order (``like '%0%4%...%'``, see ``connectors/vat.py``), since the API
can only compare text and people write VAT numbers in many ways; other fields use ``in``.

``clock()``: the ``Date`` header of the latest answer. ``identity()``:
``sage_crm:<host>/<install>`` (the API names no tenant or database; never the user).
No ETag or version: ``conditional_writes`` is off.

Requests, and why the count is what it is: the API filters and sorts on the server, so a change
listing is one request per page of ``page_size`` records (default and at most 100, SData 1's
documented cap; Sage documents none for the REST API), only the changed records: an idle run is
one request per entity, and a last page is known by its ``$totalResults`` (no empty page asked
for). Nothing is read per record: ``Person``, ``Address``, ``Phone`` and ``Email`` are entities
of their own, listed the same way. ``get`` asks ``<key> in (...)`` with 50 ids a request
(``capabilities.max_get``), one page each unless ``page_size`` is set below 50. ``find`` asks
``in (...)`` with 50 values a request, or, on a VAT field, 50 ``like`` tests joined by ``or``;
a query matching more than a page reads on by ``startIndex``. A create (``POST``), an update
(``PATCH`` or ``PUT``) or a delete is one request, nothing read before or after (a write's
answer is the entry, above). Auth is Basic on every request: no session or token request.
``check()`` is one ``GET Company?count=1``, which proves the credentials and whose ``Date``
serves ``clock()`` (which never asks on its own); ``identity()`` comes from the settings, no
request. ``fields()`` is one ``GET $prototypes/{entity}`` each call. There are no
``options(...)`` lists (none is read). Pacing: Sage publishes no rate limit for SData, so none
is imposed unless ``requests_per_window`` (per ``window_seconds``) is set, for a server or a
proxy that has one.
"""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Sequence
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import (Capabilities, EntityInfo, FieldInfo, NotFoundError, Record,
                             RecordError, utc)
from connectors.http import HttpClient, SlidingWindowLimiter
from connectors.vat import like_pattern

ENTITIES = {"Company": ("comp", "comp_companyid"), "Person": ("pers", "pers_personid"),
            "Address": ("addr", "addr_addressid"), "Phone": ("phon", "phon_phoneid"),
            "Email": ("emai", "emai_emailid")}
_PER_QUERY = 50


def _error_parser(status: int, body: Any) -> tuple[str, tuple[str, ...]]:
    if isinstance(body, dict) and isinstance(body.get("$diagnoses"), list):
        diags = [d for d in body["$diagnoses"] if isinstance(d, dict)]
        message = "; ".join(str(d.get("$message") or d.get("$sdataCode") or "") for d in diags)
        fields = tuple(str(d["$source"]) for d in diags if d.get("$source"))
        return message or f"HTTP {status}", fields
    if isinstance(body, str) and body:
        return body[:500], ()
    return f"HTTP {status}", ()


def _quote(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    return utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def _literal(when: datetime) -> str:
    return "'" + when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "'"


class SageCrmConnector:
    """Companies, people, addresses, phones and e-mails of one Sage CRM installation."""

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        base_url: str                               # e.g. https://crm.example.be
        install: str = "crm"                        # the installation's name (…/{install}j/)
        username: str
        password: SecretStr
        page_size: int = Field(100, ge=1, le=100)
        update_method: str = Field("PATCH", pattern="^(PATCH|PUT)$")
        vat_fields: list[str] = ["comp_vatnumber"]
        timeout: float = Field(30.0, gt=0)
        attempts: int = Field(5, ge=1)
        max_wait: float = Field(30.0, ge=0)
        requests_per_window: int | None = Field(None, ge=1)   # none published
        window_seconds: float = Field(60.0, gt=0)

    def __init__(self, name: str, settings: "SageCrmConnector.Settings") -> None:
        self.name = name
        self.settings = settings
        self.capabilities = Capabilities(
            entities={e: EntityInfo(e, incremental=True, ordered=True, reports_deletes=False)
                      for e in ENTITIES}, max_get=_PER_QUERY,
            requests_per_second=(settings.requests_per_window / settings.window_seconds
                                 if settings.requests_per_window else None))
        token = base64.b64encode(f"{settings.username}:{settings.password.get_secret_value()}"
                                 .encode()).decode()
        self._auth_header = f"Basic {token}"
        self.http = HttpClient(settings.base_url, system=name, auth=self._auth,
                               timeout=settings.timeout, attempts=settings.attempts,
                               max_wait=settings.max_wait,
                               headers={"Accept": "application/json"},
                               error_parser=_error_parser,
                               limiter=(SlidingWindowLimiter(settings.requests_per_window,
                                                             settings.window_seconds)
                                        if settings.requests_per_window else None))
        self.root = f"/sdata/{settings.install}j/sagecrm2/-/"

    def _auth(self, method: str, query: str, headers: dict[str, str]) -> None:
        headers["Authorization"] = self._auth_header

    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()

    async def check(self) -> None:
        await self.http.request("GET", self.root + "Company", params={"count": "1"})

    async def clock(self) -> datetime | None:
        return self.http.server_time()

    async def identity(self) -> str | None:
        host = urlsplit(self.settings.base_url).netloc.rpartition("@")[2]
        return f"sage_crm:{host}/{self.settings.install}"

    @staticmethod
    def _spec(entity: str) -> tuple[str, str]:
        try:
            return ENTITIES[entity]
        except KeyError:
            raise KeyError(f"unknown entity {entity!r} (known: {', '.join(ENTITIES)})") from None

    def _record(self, entity: str, entry: dict) -> Record:
        prefix, key = self._spec(entity)
        fields = {k: v for k, v in entry.items() if not k.startswith("$")}
        return Record(str(entry.get(key, entry.get("$key"))), fields,
                      modified=_when(fields.get(f"{prefix}_updateddate")))

    async def _feed(self, entity: str, where: str | None, order: str | None = None
                    ) -> AsyncIterator[list[dict]]:
        """Every page of one query, by startIndex (for bounded id lists)."""
        start = 1
        while True:
            params = {"startIndex": str(start), "count": str(self.settings.page_size)}
            if where:
                params["where"] = where
            if order:
                params["orderBy"] = order
            body = (await self.http.request("GET", self.root + entity, params=params)).body
            items = body.get("$resources") or [] if isinstance(body, dict) else []
            if items:
                yield items
            start += len(items)
            if not items or start > int(body.get("$totalResults") or 0):
                return

    async def changes(self, entity: str, since: datetime | None) -> AsyncIterator[list[Record]]:
        prefix, key = self._spec(entity)
        mod = f"{prefix}_updateddate"
        order = f"{mod} asc, {key} asc"
        base = f"{mod} ge {_literal(since)}" if since is not None else None
        after: tuple[str, str] | None = None
        while True:
            parts = [base] if base else []
            if after is not None:
                parts.append(f"({mod} gt {after[0]} or ({mod} eq {after[0]} and "
                             f"{key} gt {after[1]}))")
            params = {"startIndex": "1", "count": str(self.settings.page_size),
                      "orderBy": order}
            if parts:
                params["where"] = " and ".join(f"({p})" for p in parts)
            body = (await self.http.request("GET", self.root + entity, params=params)).body
            items = (body.get("$resources") or []) if isinstance(body, dict) else []
            if not items:
                return
            yield [self._record(entity, e) for e in items]
            last = items[-1]
            stamp = _when(last.get(mod))
            if stamp is None:
                return          # rows without a date cannot be paged past: the API sorts them first
            after = (_literal(stamp), _quote(int(last[key])))
            total = body.get("$totalResults")       # the rows matching this page's query
            if len(items) < self.settings.page_size or (
                    isinstance(total, int) and not isinstance(total, bool)
                    and total <= len(items)):
                return

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        _, key = self._spec(entity)
        wanted = [int(i) for i in dict.fromkeys(ids) if str(i).isdigit()]
        out: list[Record] = []
        for start in range(0, len(wanted), _PER_QUERY):
            part = wanted[start:start + _PER_QUERY]
            where = f"{key} in ({', '.join(str(i) for i in part)})"
            async for page in self._feed(entity, where):
                out += [self._record(entity, e) for e in page]
        return out

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        self._spec(entity)
        values = [v for v in dict.fromkeys(values) if v not in (None, "")]
        if field in self.settings.vat_fields:
            tests = [f"{field} like {_quote(p)}" for p in map(like_pattern, values) if p]
        else:
            tests = [f"{field} in ({', '.join(_quote(v) for v in values[i:i + _PER_QUERY])})"
                     for i in range(0, len(values), _PER_QUERY)]
        found: dict[str, Record] = {}
        step = _PER_QUERY if field in self.settings.vat_fields else 1
        for start in range(0, len(tests), step):
            async for page in self._feed(entity, " or ".join(tests[start:start + step])):
                for e in page:
                    rec = self._record(entity, e)
                    found[rec.id] = rec
        return list(found.values())

    async def fields(self, entity: str) -> list[FieldInfo]:
        self._spec(entity)
        body = (await self.http.request("GET", self.root + f"$prototypes/{entity}")).body
        return [FieldInfo(str(f["name"]), str(f.get("label") or f["name"]),
                          str(f.get("type") or "string"), bool(f.get("custom")))
                for f in (body.get("fields") or []) if isinstance(f, dict) and f.get("name")]

    async def create(self, entity: str, fields: dict[str, Any]) -> Record:
        self._spec(entity)
        body = (await self.http.request("POST", self.root + entity, json=fields)).body
        return self._record(entity, body)

    def _entry_path(self, entity: str, id: str) -> str:
        self._spec(entity)
        if not str(id).isdigit():
            raise NotFoundError(f"{self.name}: {entity} ids are integers, not {id!r}")
        return self.root + f"{entity}('{int(id)}')"

    async def update(self, entity: str, id: str, fields: dict[str, Any],
                     version: str | None = None) -> Record:
        path = self._entry_path(entity, id)
        body = (await self.http.request(self.settings.update_method, path, json=fields)).body
        return self._record(entity, body)

    async def delete(self, entity: str, id: str) -> None:
        await self.http.request("DELETE", self._entry_path(entity, id))

    async def options(self, name: str) -> Any:
        raise KeyError(name)


__all__ = ["SageCrmConnector", "NotFoundError", "RecordError"]
