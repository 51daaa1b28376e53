"""Schema revisions of the state database (Alembic), and the policy at start.

The migration scripts ship inside the package (``daemon/store/migrations``); the Alembic
configuration is built here in code, so an installed accord needs no alembic.ini.

Policy (``check``, called by ``App.start`` and by every command that opens the database):
- a brand-new database (none of accord's tables, no revision) is upgraded to the head
  revision at once, so a fresh SQLite file or an empty PostgreSQL database just works (other
  applications' tables in a shared database are left alone);
- a database at the head revision is used as it is;
- a database with tables but behind the head (or with accord's tables and no revision at all:
  made by an accord from before migrations) is refused with ``SchemaBehind``, one line that
  says to run ``accord migrate``;
- a database at a revision this accord does not know (a newer accord migrated it) is refused
  with ``SchemaAhead``.
``upgrade`` (``accord migrate``) brings any of these but the last to the head.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path
from typing import AsyncIterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.store.db import make_engine

MIGRATIONS = Path(__file__).with_name("migrations")
BASE = "0001"                  # the first revision: the tables of the accord before migrations
VERSION_TABLE = "alembic_version"
_LOCK_ID = 0x6163636F7264      # 'accord': one migrator at a time on a shared PostgreSQL


class SchemaError(Exception):
    """The state database cannot be used by this accord as it is."""


class SchemaBehind(SchemaError):
    """The state database is at an older revision: ``accord migrate`` upgrades it."""


class SchemaAhead(SchemaError):
    """The state database is at a revision this accord does not know."""


def alembic_config(url: str | None = None, connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The revision this accord needs."""
    return _scripts().get_current_head()


def revisions() -> list[str]:
    """All revisions, oldest first."""
    return [s.revision for s in reversed(list(_scripts().walk_revisions()))]


def where(url: str | AsyncEngine) -> str:
    """The database's URL for messages, without its password."""
    u = url.url if isinstance(url, AsyncEngine) else make_url(url)
    return u.set(drivername=u.get_backend_name()).render_as_string(hide_password=True)


@contextlib.asynccontextmanager
async def _engine(url: str | AsyncEngine) -> AsyncIterator[AsyncEngine]:
    if isinstance(url, AsyncEngine):
        yield url
        return
    engine = make_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


def _state(conn) -> tuple[str | None, set[str]]:
    """(revision, accord's base tables present) on a sync connection. Other tables (another
    application's, in a shared PostgreSQL database) do not count."""
    rev = MigrationContext.configure(conn).get_current_revision()
    tables = set(inspect(conn).get_table_names()) & _base_tables()
    return rev, tables


async def current(url: str | AsyncEngine) -> str | None:
    """The database's revision; None when it has none (empty, or made before migrations)."""
    async with _engine(url) as engine, engine.connect() as conn:
        return await conn.run_sync(lambda c: _state(c)[0])


async def describe(url: str) -> tuple[str | None, bool]:
    """(revision, has accord's tables) without changing anything: ``accord check``."""
    async with _engine(url) as engine, engine.connect() as conn:
        rev, tables = await conn.run_sync(_state)
    return rev, bool(tables)


def known(rev: str) -> bool:
    """A revision this accord has a script for."""
    return _known(rev)


def _known(rev: str) -> bool:
    try:
        return _scripts().get_revision(rev) is not None
    except CommandError:
        return False


@lru_cache(maxsize=1)
def _base_tables() -> frozenset[str]:
    return frozenset(getattr(_scripts().get_revision(BASE).module, "TABLES"))


def _foreign_line(url: str, tables: set[str]) -> str:
    missing = sorted(_base_tables() - tables)
    return (f"the state database at {where(url)} has some of accord's tables "
            f"({', '.join(sorted(tables))}) but not the others ({', '.join(missing)}) and no "
            f"revision: is it accord's state database?")


def _upgrade_sync(conn, target: str) -> tuple[str | None, str | None]:
    if conn.dialect.name == "postgresql":     # several daemons may start on one database
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
    before, tables = _state(conn)
    cfg = alembic_config(connection=conn)
    if before is None and tables:
        if tables != _base_tables():
            raise SchemaError(_foreign_line(str(conn.engine.url), tables))
        command.stamp(cfg, BASE)           # made by an accord from before migrations
    elif before is not None and not _known(before):
        raise SchemaAhead(_ahead_line(str(conn.engine.url), before))
    command.upgrade(cfg, target)
    return before, _state(conn)[0]


async def upgrade(url: str | AsyncEngine, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade to ``revision`` (default: the head); returns (from, to)."""
    async with _engine(url) as engine, engine.begin() as conn:
        return await conn.run_sync(_upgrade_sync, revision)


async def stamp(url: str | AsyncEngine, revision: str | None) -> None:
    """Record ``revision`` without running anything (tests; repairs). None removes it."""
    def _stamp(conn) -> None:
        if revision is None:
            conn.execute(text(f"DELETE FROM {VERSION_TABLE}"))
        else:
            command.stamp(alembic_config(connection=conn), revision, purge=True)
    async with _engine(url) as engine, engine.begin() as conn:
        await conn.run_sync(_stamp)


def _ahead_line(url: str, rev: str) -> str:
    return (f"the state database at {where(url)} is at revision {rev}, which this accord "
            f"does not know (it needs {head()}; a newer accord migrated it): upgrade accord")


def behind_line(url: str | AsyncEngine, rev: str | None, config_path: str | None = None) -> str:
    at = f"at revision {rev}" if rev else "at no revision (made before migrations)"
    cmd = f"accord migrate --config {config_path or 'FILE'}"
    return (f"the state database at {where(url)} is {at}, this accord needs {head()}: "
            f"run `{cmd}`")


async def check(url: str | AsyncEngine, *, config_path: str | None = None,
                upgrade_empty: bool = True) -> str:
    """The policy at start (see the module's docstring); returns the revision in use."""
    async with _engine(url) as engine:
        async with engine.connect() as conn:
            rev, tables = await conn.run_sync(_state)
        if rev == head():
            return rev
        if rev is None and not tables and upgrade_empty:
            _, to = await upgrade(engine)
            return to
        if rev is None and tables and tables != _base_tables():
            raise SchemaError(_foreign_line(str(engine.url), tables))
        if rev is not None and not _known(rev):
            raise SchemaAhead(_ahead_line(str(engine.url), rev))
        raise SchemaBehind(behind_line(engine, rev, config_path))


def revision(url: str, message: str, autogenerate: bool = True) -> None:
    """For developers: write a new revision script, autogenerated against the database at
    ``url`` (upgraded to the head first); review it before committing."""
    import asyncio
    asyncio.run(upgrade(url))
    command.revision(alembic_config(url), message=message, autogenerate=autogenerate,
                     rev_id=f"{len(revisions()) + 1:04d}")


if __name__ == "__main__":         # python -m daemon.store.schema revision URL "message"
    import sys
    if len(sys.argv) != 4 or sys.argv[1] != "revision":
        sys.exit('usage: python -m daemon.store.schema revision URL "message"')
    revision(sys.argv[2], sys.argv[3])
