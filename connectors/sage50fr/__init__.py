"""Sage 50 FR (ex Ciel) reached through its database, as a layout over the SQL connector.

Entities: ``third_parties``, ``contacts``, ``items``, ``invoices``; the default table and column
names and their meaning are in ``layout.py``. Example (TOML)::

    [systems.sage50]
    type = "sage50fr"
    url = "mssql+pyodbc://accord:${SAGE_DB_PASSWORD}@sage-host/SAGE50?driver=ODBC+Driver+18+for+SQL+Server"
    timezone = "Europe/Paris"          # the default: Sage keeps naive local times
    account_prefix = "C"               # new third parties get C000001, C000002...
    account_width = 6

    [systems.sage50.layout.third_parties]   # real names where they differ from ours
    table = "F_COMPTET"
    columns = { ACCOUNT_CODE = "CT_Num", NAME = "CT_Intitule" }

Everything else (state_path, batch_size, schema, timeout) is the SQL connector's, see
``connectors/sql/client.py``. Deletes are hard deletes in Sage: every read of changes also
scans the ids and reports those gone as tombstones.

``identity()`` names the database file (or server and database) and, by default, the company
file's id: ``identity_marker`` defaults to ``COMPANY_FILE.FILE_ID`` (see ``layout.py``); a
database without that table is named by its location alone. Set ``identity_marker`` to the
real table and column of your version (it is then required to exist).
"""
from __future__ import annotations

from pydantic import Field, field_validator

from connectors.sage50fr.layout import DEFAULT, TableLayout, check_layout, entity_specs
from connectors.sql.client import SqlConnector
from connectors.sql.spec import BaseSettings, EntitySpec, Marker


class Sage50FrSettings(BaseSettings):
    timezone: str = "Europe/Paris"
    identity_marker: Marker | None = Marker(table="COMPANY_FILE", column="FILE_ID")
    layout: dict[str, TableLayout] = {}
    account_prefix: str = "C"
    account_width: int = Field(6, ge=1, le=16)

    _check_layout = field_validator("layout")(classmethod(lambda cls, v: check_layout(v)))


class Sage50FrConnector(SqlConnector):
    """Third parties, contacts, items and invoices of one Sage 50 FR company file."""

    Settings = Sage50FrSettings

    def _entity_specs(self) -> dict[str, EntitySpec]:
        s = self.settings
        return entity_specs(s.layout, prefix=s.account_prefix, width=s.account_width)


__all__ = ["Sage50FrConnector", "Sage50FrSettings", "DEFAULT"]
