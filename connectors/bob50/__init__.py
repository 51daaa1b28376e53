"""Sage BOB 50 reached through its database, as a layout over the SQL connector (BOB 50 has no
public API: SQL Server, or a Firebird server). Entities ``third_parties`` and ``contacts``; the
default table and column names, with their Dutch and French meaning, are in ``layout.py``.
Example (TOML)::

    [systems.bob]
    type = "bob50"
    url = "mssql+pyodbc://accord:${BOB_DB_PASSWORD}@bob-host/BOB50?driver=ODBC+Driver+18+for+SQL+Server"
    timezone = "Europe/Brussels"       # the default: BOB keeps naive local times
    account_prefix = "C"               # new third parties get C00001, C00002...
    account_width = 5
    personal_prefix = "PF_"            # columns holding personal fields ("persoonlijke velden")

    [systems.bob.layout.third_parties]  # real names where they differ from ours
    table = "TIERS"
    columns = { TP_ID = "T_CODE", VAT_NUMBER = "T_TVA" }

Everything else (state_path, batch_size, schema, timeout) is the SQL connector's, see
``connectors/sql/client.py``. Deletes are hard deletes: changes also scan the ids.

Choices where BOB's documentation is silent:

- personal fields are columns of the third-party table (``PF_...``) described by the
  ``PERSONAL_FIELD`` table (name, label, type); ``fields("third_parties")`` lists them as
  custom fields, which is what ``accord fields`` matches with the CRM's custom fields;
- ``find`` on ``VAT_NUMBER`` looks a number up by its letters and digits in order
  (``connectors/vat.py``), so "BE 0123.456.789" finds "0123456789"; the engine compares the
  normalised values again;
- ``identity()`` names the database and ``COMPANY_FILE.FILE_ID`` (``identity_marker``).
"""
from __future__ import annotations

from typing import Any, Sequence

from pydantic import Field, field_validator
from sqlalchemy import column, func, or_, select, table

from connectors.base import FieldInfo, Record
from connectors.bob50.layout import DEFAULT, TableLayout, check_layout, entity_specs, real
from connectors.sql.client import SqlConnector
from connectors.sql.spec import BaseSettings, EntitySpec, Marker
from connectors.vat import like_pattern

VAT_FIELD = "VAT_NUMBER"
_LIKES = 50          # patterns per query


class Bob50Settings(BaseSettings):
    timezone: str = "Europe/Brussels"
    identity_marker: Marker | None = Marker(table="COMPANY_FILE", column="FILE_ID")
    layout: dict[str, TableLayout] = {}
    account_prefix: str = "C"
    account_width: int = Field(5, ge=1, le=16)
    personal_prefix: str = Field("PF_", min_length=1)

    _check_layout = field_validator("layout")(classmethod(lambda cls, v: check_layout(v)))


class Bob50Connector(SqlConnector):
    """Third parties and contacts of one Sage BOB 50 accounting file."""

    Settings = Bob50Settings

    def _entity_specs(self) -> dict[str, EntitySpec]:
        s = self.settings
        return entity_specs(s.layout, prefix=s.account_prefix, width=s.account_width)

    def _resolve(self, entity: str, spec: EntitySpec, table_of):
        ent = super()._resolve(entity, spec, table_of)
        if entity == "third_parties":
            prefix = self.settings.personal_prefix.upper()
            taken = {c.name.lower() for c in ent.fields.values()}
            for c in ent.table.c:
                if c.name.upper().startswith(prefix) and c.name.lower() not in taken:
                    ent.fields[str(c.name)] = c
        return ent

    async def fields(self, entity: str) -> list[FieldInfo]:
        """The entity's fields; for third parties also the personal fields, custom."""
        await self._ready()
        ent = self._entity(entity)
        labels = DEFAULT[entity].labels
        out = [FieldInfo(f, labels.get(f, f), str(c.type).lower(), False)
               for f, c in ent.fields.items() if f in labels]
        if entity != "third_parties":
            return out
        name, cols = real(self.settings.layout, "personal_fields")
        t = table(name, column(cols["NAME"]), column(cols["LABEL"]), column(cols["TYPE"]),
                  schema=self.settings.schema_)
        async with self._errors(None):
            async with self._engine().connect() as conn:
                rows = (await conn.execute(select(t).order_by(t.c[cols["NAME"]]))).all()
        present = {f.lower(): f for f in ent.fields}
        for n, label, kind in rows:
            if str(n).lower() in present:
                out.append(FieldInfo(present[str(n).lower()], label or n, kind or "text", True))
        return out

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        if entity != "third_parties" or field != VAT_FIELD:
            return await super().find(entity, field, values)
        await self._ready()
        ent = self._entity(entity)
        col = func.upper(ent.fields[VAT_FIELD])
        patterns = list(dict.fromkeys(p for p in map(like_pattern, values) if p))
        found: dict[str, Record] = {}
        for start in range(0, len(patterns), _LIKES):
            part = patterns[start:start + _LIKES]
            for rec in await self._query(ent, [or_(*[col.like(p) for p in part])], False):
                found[rec.id] = rec
        return list(found.values())


__all__ = ["Bob50Connector", "Bob50Settings", "DEFAULT"]
