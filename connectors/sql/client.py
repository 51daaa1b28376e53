"""A system reached through its database: one table per entity, SQLAlchemy Core, async.

Example (TOML)::

    [systems.erp]
    type = "sql"
    url = "postgresql://accord:${ERP_DB_PASSWORD}@db.example.com/erp"  # any SQLAlchemy URL
    timezone = "Europe/Paris"        # naive datetimes in the database are local times here
    # state_path = "/var/lib/accord/accord-sql-erp.sqlite"   (default: ./accord-sql-erp.sqlite)
    # batch_size = 500   schema = "dbo"   timeout = 30
    # identity_marker = { table = "COMPANY", column = "GUID" }   # a value naming this database

    [systems.erp.entities.customers]
    table = "CUSTOMER"
    key = "CODE"                                     # Record.id = str(CODE)
    columns = ["CODE", "NAME", "PHONE", "TYPE", "UPDATED", "DELETED"]   # default: all
    # or a rename table, field -> column:  columns = { CODE = "CT_Num", NAME = "CT_Intitule" }
    read_only = ["TYPE"]
    modified = "UPDATED"                             # the change cursor
    soft_delete = { column = "DELETED", value = 1 }  # or: deletes = "ids"
    key_generation = { prefix = "C", width = 6 }     # creates without a key get "C000124"
    defaults = { TYPE = "C" }
    created = "CREATED"                              # stamped on create; read-only
    touch_modified = true                            # default: true when modified is set

    [systems.erp.entities.contacts]
    table = "CONTACT"
    key = "ID"                                       # integer autoincrement
    deletes = "ids"
    modified = "UPDATED"
    join = { table = "CUSTOMER", on = { CUSTOMER_CODE = "CODE" },
             columns = { CUSTOMER_TYPE = "TYPE" }, modified = "UPDATED" }

Drivers: ``sqlite:///`` -> ``sqlite+aiosqlite``, ``postgresql://`` -> ``postgresql+asyncpg``,
``mssql+pyodbc://`` -> ``mssql+aioodbc`` (aioodbc is not a dependency: install it to use SQL
Server). A SQLite file is opened read-write without being created (``mode=rw``), so a wrong path
is an error, not a new empty database; foreign keys are enforced and writes take the lock at
BEGIN (``BEGIN IMMEDIATE``) so that concurrent writers queue instead of failing.

Changes:

- with ``modified``: keyset pages on (modified, key), ``modified >= since`` compared in the
  database's own representation (``since`` turned into the database's time zone, naive for a
  naive column; on SQLite the text ``YYYY-MM-DD HH:MM:SS[.ffffff]``, the format SQLAlchemy
  writes, so datetimes stored with a ``T`` separator are not supported there). The next page
  starts after the last (modified, key) read, taken verbatim from the database, so any number of
  rows may share one value and a row edited while pages are read is read again later. Rows whose
  modified is NULL are listed only by a full read (since = None). With a ``join`` that has a
  ``modified`` the cursor is the greater of the two columns.
- without ``modified`` (hash mode): every ``changes()`` scans the table in key order and keeps
  per row a hash in the state file (see ``connectors/sql/state.py``); records come back with
  ``modified`` = when a scan first saw their current content.
- ``deletes = "ids"``: every ``changes()`` also scans the ids; an id seen before and gone now
  comes back as a tombstone dated when a scan first missed it: with ``modified``, in the
  database's own time (the table's latest modified value, and not before ``since``), so that
  the cursors the engine makes of these dates never mix two clocks; in hash mode, by the
  connector's clock (``now``), like the changes it finds.
  The state file (``state_path``, default ``./accord-sql-<connector name>.sqlite``, one per
  connector) remembers which database and table it describes and starts afresh when they
  change, rather than taking another database's ids for deletes.
  ``soft_delete``: rows flagged deleted come back as tombstones (with their fields).

EntityInfo: incremental always; ordered when records come in (modified, key) order, which is
not so with ``modified`` + ``deletes = "ids"`` (tombstones come after the rows);
reports_deletes with ``soft_delete`` or ``deletes = "ids"``. ``options()`` knows no name.

``clock()`` is the database's own current time and ``identity()`` its location (no
credentials), oid on PostgreSQL and ``identity_marker`` value: see ``instance.py``. A row
carries every column it selects, so a field is never absent here: NULL is empty.

Errors: a refused login (SQLSTATE 28000/28P01) is AuthError; an unreachable or missing database,
a lock held past ``timeout`` and other operational failures are UnavailableError; integrity and
data errors (NOT NULL, unique, foreign key, too long) are RecordError with the database's message
and ``fields`` when the column can be told; unknown, read-only and joined fields in a write, and
values a column cannot hold, are RecordError naming them before anything is sent. The URL's
password never appears in a message (rendered with ``hide_password``).

Optimistic concurrency: not offered (``conditional_writes`` off); an UPDATE sets only the
columns that changed, in its own short transaction, seconds after the page was read.
"""
from __future__ import annotations

import asyncio
import hashlib
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import (Column, MetaData, String, Table, and_, case, delete, event, func,
                        insert, literal, make_url, or_, select, text, type_coerce, update)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from connectors.base import (Capabilities, ConnectorError, EntityInfo, NotFoundError, Record,
                             RecordError, UnavailableError)
from connectors.sql import instance
from connectors.sql import values as V
from connectors.sql.errors import SqlConfigError, translate
from connectors.sql.spec import EntitySpec, Settings
from connectors.sql.state import StateStore, stamp

_MODIFIED = "__accord_modified__"
_FLOOR = datetime(1900, 1, 1)
_IN_CHUNK = 500          # ids per IN list (SQL Server takes at most 2100 parameters)


def _driver_errors() -> tuple[type[BaseException], ...]:
    """Errors a driver raises without SQLAlchemy wrapping them (asyncpg while connecting)."""
    import sqlite3
    found: list[type[BaseException]] = [sa_exc.SQLAlchemyError, OSError, asyncio.TimeoutError,
                                        sqlite3.Error]
    try:
        import asyncpg
        found += [asyncpg.PostgresError, asyncpg.InterfaceError]
    except ImportError:
        pass
    return tuple(found)


_DB_ERRORS = _driver_errors()


def to_async_url(url: str | URL) -> URL:
    """Plain URLs to the async drivers; a SQLite file is opened read-write, never created."""
    u = make_url(url) if isinstance(url, str) else url
    driver = u.drivername
    if driver in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    elif driver in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    elif driver == "mssql+pyodbc":
        u = u.set(drivername="mssql+aioodbc")
    if u.drivername == "sqlite+aiosqlite" and u.database and u.database != ":memory:" \
            and not u.database.startswith("file:") and "uri" not in u.query:
        u = u.set(database=f"file:{u.database}", query={**u.query, "mode": "rw", "uri": "true"})
    return u


@dataclass
class _Entity:
    """An EntitySpec resolved against the reflected tables."""

    name: str
    spec: EntitySpec
    table: Table
    key_field: str
    key: Column
    fields: dict[str, Column]                 # own columns, by field name
    joined: dict[str, Column] = field(default_factory=dict)   # parent columns, by field name
    parent: Table | None = None
    on: list[tuple[Column, Column]] = field(default_factory=list)
    modified: Column | None = None
    parent_modified: Column | None = None
    soft: tuple[str, Any] | None = None       # (field, value)
    read_only: frozenset[str] = frozenset()

    @property
    def field_of_column(self) -> dict[str, str]:
        return {c.name.lower(): f for f, c in self.fields.items()}

    @property
    def integer_key(self) -> bool:
        return V.is_integer(self.key.type)


class SqlConnector:
    """Tables of a database as entities (see the module docstring)."""

    Settings = Settings

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.zone = ZoneInfo(settings.timezone)
        self.specs: dict[str, EntitySpec] = self._entity_specs()
        self.now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
        self.capabilities = Capabilities(
            entities={e: self._info(e, s) for e, s in self.specs.items()}, max_get=_IN_CHUNK)
        self.engine: AsyncEngine | None = None
        self.entities: dict[str, _Entity] = {}
        path = settings.state_path or Path(f"accord-sql-{name}.sqlite")
        self.state = StateStore(Path(path))
        self._sqlite = False
        self._reflect_lock = asyncio.Lock()

    # --- overridable ---------------------------------------------------------------------
    def _entity_specs(self) -> dict[str, EntitySpec]:
        return dict(self.settings.entities)

    @staticmethod
    def _info(entity: str, spec: EntitySpec) -> EntityInfo:
        ids = spec.deletes == "ids"
        return EntityInfo(entity, incremental=True,
                          ordered=spec.modified is None or not ids,
                          reports_deletes=ids or spec.soft_delete is not None)

    # --- lifecycle -----------------------------------------------------------------------
    @property
    def where(self) -> str:
        """The database for messages: the URL without its password."""
        return make_url(self.settings.url.get_secret_value()).render_as_string(
            hide_password=True)

    async def start(self) -> None:
        url = to_async_url(self.settings.url.get_secret_value())
        self._sqlite = url.get_backend_name() == "sqlite"
        args: dict[str, Any] = {}
        if self._sqlite or url.get_backend_name() == "postgresql":
            args["timeout"] = self.settings.timeout
        self.engine = create_async_engine(url, connect_args=args, pool_pre_ping=True)
        if self._sqlite:
            _sqlite_events(self.engine)
        try:
            await self._ready()
        except SqlConfigError:
            raise
        except ConnectorError:
            pass        # unreachable or refused: check() says so, and the first use retries

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None
        await self.state.close()

    async def check(self) -> None:
        self._sqlite_file_missing()
        await self._ready()
        async with self._errors(None):
            async with self._engine().connect() as conn:
                # SQLite opens a file lazily: reading its schema proves it is a database
                await conn.execute(text("SELECT count(*) FROM sqlite_master") if self._sqlite
                                   else select(literal(1)))

    async def clock(self) -> datetime | None:
        """The database's own time (see ``instance.py``); None when it cannot be reached.
        A SQLite file has no server: its time is this machine's, as ``now`` tells it (the
        same clock that stamps the rows this connector writes)."""
        try:
            if self._sqlite:
                self._sqlite_file_missing()
                return self.now()
            async with self._errors(None):
                return await instance.database_now(self._engine(), self.zone)
        except ConnectorError:
            return None

    async def identity(self) -> str | None:
        """Where the database is, plus what names it (see ``instance.py``); no credentials."""
        engine = self._engine()
        self._sqlite_file_missing()
        parts = [instance.location(engine.url)]
        marker = self.settings.identity_marker
        async with self._errors(None):
            oid = await instance.database_oid(engine)
            try:
                value = await instance.marker_value(engine, marker, self.settings.schema_) \
                    if marker is not None else None
            except instance.NoMarker as missing:
                if "identity_marker" in self.settings.model_fields_set:
                    raise SqlConfigError(f"{self.name}: identity_marker: {missing} does not "
                                         f"exist in {self.where}") from None
                value = None            # a default marker this database does not have
        if oid is not None:
            parts.append(f"(oid {oid})")
        if value is not None:
            parts.append(f"({marker.table}.{marker.column} {value})")
        return " ".join(parts)

    def _engine(self) -> AsyncEngine:
        if self.engine is None:
            raise UnavailableError(f"{self.name}: not started")
        return self.engine

    def _sqlite_file_missing(self) -> None:
        """A SQLite file that is not there is said so without trying to open it (a failed
        open leaves the driver's worker thread behind)."""
        if not self._sqlite or self.engine is None:
            return
        database = self.engine.url.database or ""
        if database.startswith("file:"):
            path = Path(database[5:])
            if not path.exists():
                raise UnavailableError(f"{self.name}: the database file {path} does not exist")

    async def _ready(self) -> None:
        if self.entities:
            return
        self._sqlite_file_missing()
        async with self._reflect_lock:
            if self.entities:
                return
            async with self._errors(None):
                async with self._engine().connect() as conn:
                    resolved = await conn.run_sync(self._resolve_all)
            self.entities = resolved

    def _resolve_all(self, sync_conn) -> dict[str, _Entity]:
        meta = MetaData(schema=self.settings.schema_)
        tables: dict[tuple[str | None, str], Table] = {}

        def table(entity: str, setting: str, name: str, schema: str | None) -> Table:
            if (schema, name) not in tables:
                try:
                    tables[(schema, name)] = Table(name, meta, autoload_with=sync_conn,
                                                   schema=schema)
                except sa_exc.NoSuchTableError:
                    raise SqlConfigError(
                        f"{self.name}: entity {entity!r}: table {name!r} (setting {setting}) "
                        f"does not exist in {self.where}") from None
            return tables[(schema, name)]

        return {e: self._resolve(e, s, table) for e, s in self.specs.items()}

    def _resolve(self, entity: str, spec: EntitySpec, table_of) -> _Entity:
        prefix = f"entities.{entity}"
        schema = self.settings.schema_
        tbl = table_of(entity, f"{prefix}.table", spec.table, schema)

        def col(t: Table, name: str, setting: str) -> Column:
            found = t.c.get(name)
            if found is None:
                matches = [c for c in t.c if c.name.lower() == name.lower()]
                if len(matches) == 1:
                    return matches[0]
                raise SqlConfigError(f"{self.name}: entity {entity!r}: column {name!r} "
                                     f"(setting {setting}) does not exist in table {t.name!r}")
            return found

        if spec.columns is None:
            fields = {str(c.name): c for c in tbl.c}     # quoted_name is no plain str
        elif isinstance(spec.columns, dict):
            fields = {f: col(tbl, c, f"{prefix}.columns.{f}") for f, c in spec.columns.items()}
        else:
            fields = {c: col(tbl, c, f"{prefix}.columns") for c in spec.columns}

        def own(name: str, setting: str) -> tuple[str, Column]:
            if name not in fields:
                fields[name] = col(tbl, spec.column_of(name), setting)
            return name, fields[name]

        key_field, key = own(spec.key, f"{prefix}.key")
        ent = _Entity(entity, spec, tbl, key_field, key, fields)
        if spec.modified:
            ent.modified = own(spec.modified, f"{prefix}.modified")[1]
        if spec.created:
            own(spec.created, f"{prefix}.created")
        if spec.soft_delete:
            ent.soft = (own(spec.soft_delete.column, f"{prefix}.soft_delete.column")[0],
                        spec.soft_delete.value)
        for name in spec.read_only:
            own(name, f"{prefix}.read_only")
        for name in spec.defaults:
            own(name, f"{prefix}.defaults")
        if spec.join is not None:
            j = spec.join
            parent = table_of(entity, f"{prefix}.join.table", j.table, j.schema_ or schema)
            ent.parent = parent
            ent.on = [(own(c, f"{prefix}.join.on")[1], col(parent, p, f"{prefix}.join.on.{c}"))
                      for c, p in j.on.items()]
            for f, p in j.columns.items():
                if f in fields:
                    raise SqlConfigError(f"{self.name}: entity {entity!r}: joined field {f!r} "
                                         f"(setting {prefix}.join.columns) is also a column")
                ent.joined[f] = col(parent, p, f"{prefix}.join.columns.{f}")
            if j.modified:
                ent.parent_modified = col(parent, j.modified, f"{prefix}.join.modified")
        read_only = set(spec.read_only) | set(ent.joined)
        if spec.touches:
            read_only.add(spec.modified)
        if spec.created:
            read_only.add(spec.created)
        ent.read_only = frozenset(read_only)
        return ent

    def _entity(self, entity: str) -> _Entity:
        try:
            return self.entities[entity]
        except KeyError:
            if entity in self.specs:
                raise UnavailableError(f"{self.name}: the database has not been reached yet "
                                       f"({self.where})") from None
            raise KeyError(f"{self.name}: unknown entity {entity!r}") from None

    # --- errors and transactions ---------------------------------------------------------
    @asynccontextmanager
    async def _errors(self, ent: _Entity | None, values: dict | None = None):
        try:
            yield
        except ConnectorError:
            raise
        except _DB_ERRORS as exc:
            where = f"{self.name}: {ent.name}" if ent else f"{self.name} ({self.where})"
            by_col = ent.field_of_column if ent else {}

            def fk_fields() -> list[str]:
                if ent is None:
                    return []
                cols = {c.parent.name.lower() for fk in ent.table.foreign_key_constraints
                        for c in fk.elements}
                return [by_col[c] for c in cols
                        if c in by_col and (values is None or by_col[c] in values)]

            raise translate(exc, where, lambda c: by_col.get(c.lower()), fk_fields) from None

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine().connect() as conn:
            await conn.execution_options(accord_write=True)
            async with conn.begin():
                yield conn

    # --- reading -------------------------------------------------------------------------
    def _mod_expr(self, ent: _Entity):
        """The cursor column (the greater of own and parent modified), NULL as 1900-01-01;
        on SQLite the stored text itself."""
        m, pm = ent.modified, ent.parent_modified
        expr = m if pm is None else case((pm > m, pm), else_=func.coalesce(m, pm))
        if self._sqlite:
            return func.coalesce(type_coerce(expr, String), "1900-01-01 00:00:00")
        floor = _FLOOR.replace(tzinfo=timezone.utc) if getattr(m.type, "timezone", False) \
            else _FLOOR
        return func.coalesce(expr, literal(floor, m.type))

    def _since_bound(self, ent: _Entity, since: datetime) -> Any:
        naive = not getattr(ent.modified.type, "timezone", False)
        local = V.db_datetime(since, self.zone, naive or self._sqlite)
        if self._sqlite:
            text = local.strftime("%Y-%m-%d %H:%M:%S")
            return text + (f".{local.microsecond:06d}" if local.microsecond else "")
        return local

    def _select(self, ent: _Entity, *, with_modified: bool = False):
        cols = [c.label(f) for f, c in ent.fields.items()]
        cols += [c.label(f) for f, c in ent.joined.items()]
        if with_modified and ent.modified is not None:
            cols.append(self._mod_expr(ent).label(_MODIFIED))
        stmt = select(*cols)
        if ent.parent is not None:
            stmt = stmt.select_from(ent.table.outerjoin(
                ent.parent, and_(*[c == p for c, p in ent.on])))
        return stmt

    def _not_deleted(self, ent: _Entity):
        f, value = ent.soft
        column = ent.fields[f]
        return or_(column.is_(None), column != V.to_column(value, column.type, self.zone))

    def _record(self, ent: _Entity, row) -> Record:
        m = row._mapping
        fields = {f: V.to_field(m[f], c.type, self.zone) for f, c in ent.fields.items()}
        for f, c in ent.joined.items():
            fields[f] = V.to_field(m[f], c.type, self.zone)
        modified = None
        if _MODIFIED in m and m[_MODIFIED] is not None:
            raw = V.parse_datetime(m[_MODIFIED])
            if raw.replace(tzinfo=None) != _FLOOR:
                modified = V.aware_utc(raw, self.zone)
        deleted = False
        if ent.soft is not None:
            value = m[ent.soft[0]]
            deleted = value is not None and (value == ent.soft[1]
                                              or str(value) == str(ent.soft[1]))
        return Record(str(m[ent.key_field]), fields, modified=modified, deleted=deleted)

    async def changes(self, entity: str, since: datetime | None) -> AsyncIterator[list[Record]]:
        await self._ready()
        ent = self._entity(entity)
        if ent.modified is None:
            async for page in self._hash_changes(ent, since):
                yield page
            return
        size = self.settings.batch_size
        mod = self._mod_expr(ent)
        base = self._select(ent, with_modified=True)
        cursor: tuple[Any, Any] | None = None
        while True:
            if cursor is None:
                where = [] if since is None else [mod >= self._since_bound(ent, since)]
            else:
                where = [or_(mod > cursor[0], and_(mod == cursor[0], ent.key > cursor[1]))]
            stmt = base.where(*where).order_by(mod, ent.key).limit(size)
            async with self._errors(ent):
                async with self._engine().connect() as conn:
                    rows = (await conn.execute(stmt)).all()
            if rows:
                yield [self._record(ent, r) for r in rows]
            if len(rows) < size:
                break
            last = rows[-1]._mapping
            cursor = (last[_MODIFIED], last[ent.key_field])
        if ent.spec.deletes == "ids":
            # tombstones are dated in the database's own time (the table's latest modified,
            # and not before ``since``), never by this machine's clock: the engine's cursor
            # is made of these dates too, and the database's clock (a Sage 50 workstation's)
            # may be minutes away from ours
            mark = await self._high_water(ent)
            when = max([t for t in (mark, since) if t is not None], default=None)
            await self._scan(ent, hashed=False, now=when or self.now())
            async for page in self._state_pages(ent, since, live=False):
                yield page

    async def _high_water(self, ent: _Entity) -> datetime | None:
        """The table's latest modified value (the greater of own and parent), aware UTC."""
        sub = self._select(ent, with_modified=True).subquery()
        async with self._errors(ent):
            async with self._engine().connect() as conn:
                raw = (await conn.execute(select(func.max(sub.c[_MODIFIED])))).scalar()
        if raw is None:
            return None
        value = V.parse_datetime(raw)
        return None if value.replace(tzinfo=None) == _FLOOR else V.aware_utc(value, self.zone)

    async def _hash_changes(self, ent: _Entity, since: datetime | None):
        await self._scan(ent, hashed=True)
        async for page in self._state_pages(ent, since, live=True):
            yield page

    async def _scan(self, ent: _Entity, *, hashed: bool, now: datetime | None = None) -> None:
        """Read the whole table in key order, page by page, into the state; what it finds
        new, changed or gone is dated ``now`` (default: the connector's clock)."""
        await self.state.open()
        gen = await self.state.begin_scan(ent.name, f"{self.where} {ent.table.fullname}")
        now = now or self.now()
        size = self.settings.batch_size
        stmt = self._select(ent) if hashed else select(ent.key.label(ent.key_field))
        last = None
        while True:
            page = stmt.where(ent.key > last) if last is not None else stmt
            async with self._errors(ent):
                async with self._engine().connect() as conn:
                    rows = (await conn.execute(page.order_by(ent.key).limit(size))).all()
            seen = []
            for row in rows:
                if hashed:
                    rec = self._record(ent, row)
                    seen.append((rec.id, _hash(rec.fields)))
                else:
                    seen.append((str(row._mapping[ent.key_field]), None))
            if seen:
                await self.state.apply_page(ent.name, gen, now, seen)
            if len(rows) < size:
                break
            last = rows[-1]._mapping[ent.key_field]
        await self.state.finish_scan(ent.name, gen, now)

    async def _state_pages(self, ent: _Entity, since: datetime | None, *, live: bool):
        size = self.settings.batch_size
        tombstones = ent.spec.deletes == "ids"
        after = None
        while True:
            items = await self.state.page(ent.name, since, after, size, live=live)
            if not items:
                return
            ids = [i for i, _, deleted in items if not deleted]
            rows = {r.id: r for r in await self._rows(ent, ids, include_deleted=True)}
            out = []
            for id_, when, deleted in items:
                if deleted:
                    if tombstones:
                        out.append(Record(id_, {}, modified=when, deleted=True))
                elif id_ in rows:          # gone since the scan: the next scan says so
                    rec = rows[id_]
                    rec.modified = when
                    out.append(rec)
            if out:
                yield out
            if len(items) < size:
                return
            after = (stamp(items[-1][1]), items[-1][0])

    def _keys(self, ent: _Entity, ids: Sequence[Any]) -> list[Any]:
        out = []
        for i in dict.fromkeys(str(i) for i in ids):
            key = self._key(ent, i)
            if key is not None:
                out.append(key)
        return out

    def _key(self, ent: _Entity, id: Any) -> Any:
        if not ent.integer_key:
            return str(id)
        text = str(id).strip()
        return int(text) if text.lstrip("-").isdigit() else None

    async def _rows(self, ent: _Entity, ids: Sequence[Any], *, include_deleted: bool = False,
                    conn: AsyncConnection | None = None) -> list[Record]:
        keys = self._keys(ent, ids)
        out: list[Record] = []
        for start in range(0, len(keys), _IN_CHUNK):
            where = [ent.key.in_(keys[start:start + _IN_CHUNK])]
            out.extend(await self._query(ent, where, include_deleted, conn))
        return out

    async def _query(self, ent: _Entity, where: list, include_deleted: bool,
                     conn: AsyncConnection | None = None) -> list[Record]:
        if ent.soft is not None and not include_deleted:
            where = [*where, self._not_deleted(ent)]
        stmt = self._select(ent, with_modified=True).where(*where).order_by(ent.key)
        if conn is not None:
            return [self._record(ent, r) for r in await conn.execute(stmt)]
        async with self._errors(ent):
            async with self._engine().connect() as c:
                return [self._record(ent, r) for r in await c.execute(stmt)]

    async def get(self, entity: str, ids: Sequence[str]) -> list[Record]:
        await self._ready()
        return await self._rows(self._entity(entity), ids)

    async def find(self, entity: str, field: str, values: Sequence[Any]) -> list[Record]:
        await self._ready()
        ent = self._entity(entity)
        column = ent.fields.get(field)
        if column is None:
            column = ent.joined.get(field)
        if column is None:
            raise RecordError(f"{self.name}: {entity}: unknown field {field!r}", fields=[field])
        text = V.is_text(column.type)
        wanted: list[Any] = []
        for value in dict.fromkeys(v for v in values if v is not None):
            if text:
                wanted.append(str(value).strip().lower())
            else:
                try:
                    wanted.append(V.to_column(value, column.type, self.zone))
                except V.BadValue:
                    continue
        target = func.lower(column) if text else column
        found: dict[str, Record] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            for rec in await self._query(ent, [target.in_(wanted[start:start + _IN_CHUNK])],
                                         False):
                found[rec.id] = rec
        return list(found.values())

    async def options(self, name: str) -> Any:
        raise KeyError(name)

    # --- writing -------------------------------------------------------------------------
    def _values(self, ent: _Entity, fields: dict[str, Any], *, id: str | None = None
                ) -> dict[str, Any]:
        """Field values as {column name: value}; RecordError before anything is sent."""
        unknown = [f for f in fields if f not in ent.fields and f not in ent.joined]
        if unknown:
            raise RecordError(f"{self.name}: {ent.name}: unknown field(s) "
                              f"{', '.join(unknown)}", fields=unknown)
        if id is not None and ent.key_field in fields \
                and str(fields[ent.key_field]) == str(id):
            fields = {f: v for f, v in fields.items() if f != ent.key_field}
        refused = [f for f in fields if f in ent.read_only
                   or (id is not None and f == ent.key_field)]
        if refused:
            raise RecordError(f"{self.name}: {ent.name}: read-only field(s) "
                              f"{', '.join(refused)}", fields=refused)
        out: dict[str, Any] = {}
        bad: list[tuple[str, str]] = []
        for f, value in fields.items():
            column = ent.fields[f]
            try:
                out[column.name] = V.to_column(value, column.type, self.zone)
            except V.BadValue as exc:
                bad.append((f, str(exc)))
        if bad:
            raise RecordError(f"{self.name}: {ent.name}: " + "; ".join(f"{f} {why}"
                                                                       for f, why in bad),
                              fields=[f for f, _ in bad])
        return out

    def _touch(self, ent: _Entity, values: dict[str, Any]) -> None:
        if ent.spec.touches:
            column = ent.modified
            naive = not getattr(column.type, "timezone", False)
            values[column.name] = V.db_datetime(self.now(), self.zone, naive)

    async def create(self, entity: str, fields: dict[str, Any]) -> Record:
        await self._ready()
        ent = self._entity(entity)
        spec = ent.spec
        values = self._values(ent, dict(fields))
        for f, value in spec.defaults.items():        # defaults may fill read-only fields
            column = ent.fields[f]
            if f not in fields:
                values[column.name] = V.to_column(value, column.type, self.zone)
        given = {**spec.defaults, **fields}
        self._touch(ent, values)
        if spec.created:
            column = ent.fields[spec.created]
            values[column.name] = V.db_datetime(self.now(), self.zone,
                                                not getattr(column.type, "timezone", False))
        keyname = ent.key.name
        generate = values.get(keyname) is None and spec.key_generation is not None
        if values.get(keyname) is None and not generate and not ent.integer_key:
            raise RecordError(f"{self.name}: {entity}: {ent.key_field} is required",
                              fields=[ent.key_field])
        for attempt in (1, 2):
            try:
                async with self._errors(ent, given):
                    async with self._write() as conn:
                        if generate:
                            values[keyname] = await self._next_code(conn, ent)
                        elif values.get(keyname) is None:
                            values.pop(keyname, None)
                        result = await conn.execute(insert(ent.table).values(values))
                        key = values.get(keyname)
                        if key is None:
                            key = result.inserted_primary_key[0]
                        stored = await self._rows(ent, [key], include_deleted=True, conn=conn)
            except RecordError:
                if generate and attempt == 1:
                    continue          # another writer took the code: compute it again
                raise
            if not stored:
                raise UnavailableError(f"{self.name}: {entity}: the created row {key} could "
                                       "not be read back")
            return stored[0]
        raise AssertionError("unreachable")

    async def _next_code(self, conn: AsyncConnection, ent: _Entity) -> str:
        gen = ent.spec.key_generation
        prefix = gen.prefix
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = (select(ent.key).where(ent.key.like(escaped + "_" * gen.width, escape="\\"))
                .order_by(ent.key.desc()).limit(50))
        highest = 0
        for (code,) in await conn.execute(stmt):
            suffix = str(code)[len(prefix):]
            if suffix.isdigit():
                highest = int(suffix)
                break
        number = highest + 1
        if len(str(number)) > gen.width:
            raise RecordError(f"{self.name}: {ent.name}: no free code {prefix}"
                              f"{'9' * gen.width} is the last", fields=[ent.key_field])
        return f"{prefix}{number:0{gen.width}d}"

    async def update(self, entity: str, id: str, fields: dict[str, Any],
                     version: str | None = None) -> Record:
        await self._ready()
        ent = self._entity(entity)
        values = self._values(ent, dict(fields), id=id)
        key = self._key(ent, id)
        if key is None:
            raise NotFoundError(f"{self.name}: {entity} {id} does not exist")
        where = [ent.key == key]
        if ent.soft is not None:
            where.append(self._not_deleted(ent))
        self._touch(ent, values)
        async with self._errors(ent, fields):
            async with self._write() as conn:
                found = (await conn.execute(select(ent.key).where(*where))).first()
                if found is None:
                    raise NotFoundError(f"{self.name}: {entity} {id} does not exist")
                if values:
                    await conn.execute(update(ent.table).where(ent.key == key).values(values))
                stored = await self._rows(ent, [key], include_deleted=True, conn=conn)
        return stored[0]

    async def delete(self, entity: str, id: str) -> None:
        await self._ready()
        ent = self._entity(entity)
        key = self._key(ent, id)
        if key is None:
            raise NotFoundError(f"{self.name}: {entity} {id} does not exist")
        async with self._errors(ent):
            async with self._write() as conn:
                if ent.soft is not None:
                    column = ent.fields[ent.soft[0]]
                    values = {column.name: V.to_column(ent.soft[1], column.type, self.zone)}
                    self._touch(ent, values)
                    stmt = update(ent.table).where(ent.key == key, self._not_deleted(ent)
                                                   ).values(values)
                else:
                    stmt = delete(ent.table).where(ent.key == key)
                result = await conn.execute(stmt)
        if result.rowcount == 0:
            raise NotFoundError(f"{self.name}: {entity} {id} does not exist")


def _hash(fields: dict[str, Any]) -> str:
    return hashlib.blake2b(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS),
                           digest_size=16).hexdigest()


def _sqlite_events(engine: AsyncEngine) -> None:
    """Foreign keys on; our own BEGIN (IMMEDIATE for writes, so that concurrent writers wait
    for the lock rather than fail on upgrading a read lock)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn):
        write = conn.get_execution_options().get("accord_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
