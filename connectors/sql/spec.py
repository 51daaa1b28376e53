"""Settings of the SQL connector: the database URL and one ``EntitySpec`` per entity.

Names: every name in an ``EntitySpec`` (``key``, ``modified``, ``read_only``,
``soft_delete.column``, ``defaults``, the child side of ``join.on``) is a *field* name. A field
is a column of ``table``; ``columns`` as a list exposes those columns under their own names, as
a table (field -> column) it renames them, and when absent every column of the table is a field.
A name not listed in ``columns`` is taken as a column of the same name. The parent side of
``join`` (``on`` values, ``columns`` values, ``modified``) names columns of the parent table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SoftDelete(_Model):
    """A row whose ``column`` equals ``value`` is deleted: a tombstone in changes, absent from
    get/find; ``delete()`` sets it."""

    column: str
    value: Any = 1


class KeyGeneration(_Model):
    """Codes ``<prefix><zero-padded number>`` for creates that give no key: the next one after
    the greatest existing code of that shape, computed inside the insert's transaction."""

    prefix: str = ""
    width: int = Field(6, ge=1, le=30)


class Join(_Model):
    """Read-only fields from a parent table, e.g. a contact's third-party type.

    ``on``: child field -> parent column; ``columns``: field -> parent column; ``modified``: the
    parent's modified-at column, folded into the child's (the greater of the two), so that a
    change of the parent makes the child count as changed."""

    table: str
    on: dict[str, str]
    columns: dict[str, str]
    modified: str | None = None
    schema_: str | None = Field(None, alias="schema")

    @field_validator("on", "columns")
    @classmethod
    def _not_empty(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("must name at least one column")
        return value


class EntitySpec(_Model):
    table: str
    key: str
    columns: list[str] | dict[str, str] | None = None
    read_only: list[str] = []
    modified: str | None = None
    created: str | None = None                  # a created-at column, stamped on create
    soft_delete: SoftDelete | None = None
    deletes: Literal["ids"] | None = None
    key_generation: KeyGeneration | None = None
    defaults: dict[str, Any] = {}
    touch_modified: bool | None = None          # default: True when ``modified`` is set
    join: Join | None = None

    @model_validator(mode="after")
    def _coherent(self) -> "EntitySpec":
        if self.soft_delete is not None and self.deletes is not None:
            raise ValueError("choose soft_delete or deletes = \"ids\", not both")
        if self.touch_modified and self.modified is None:
            raise ValueError("touch_modified needs a modified column")
        if self.join is not None and self.modified is None and self.join.modified is not None:
            raise ValueError("join.modified needs the entity's own modified column")
        return self

    @property
    def touches(self) -> bool:
        return self.modified is not None and self.touch_modified is not False

    def column_of(self, field: str) -> str:
        if isinstance(self.columns, dict):
            return self.columns.get(field, field)
        return field


class Marker(_Model):
    """A value stored in the database that names it (a company file's id, a tenant's guid):
    the first row's ``column`` of ``table``. It is part of ``identity()``, so a database made
    again at the same place (a restored or regenerated file) is told from the old one."""

    table: str
    column: str


class BaseSettings(_Model):
    """What every SQL-reached system shares (the generic connector adds ``entities``)."""

    url: SecretStr                     # any SQLAlchemy URL; a password may be inside
    timezone: str = "UTC"              # IANA zone of naive datetimes in the database
    state_path: Path | None = None     # default: ./accord-sql-<connector name>.sqlite
    batch_size: int = Field(500, ge=1, le=50_000)
    schema_: str | None = Field(None, alias="schema")
    timeout: float = Field(30.0, gt=0)  # seconds: connect, and waiting for a SQLite lock
    identity_marker: Marker | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as "
                             "Europe/Paris)") from None
        return value


class Settings(BaseSettings):
    entities: dict[str, EntitySpec]
