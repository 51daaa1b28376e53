"""The connector's own memory of a table, for tables that cannot say what changed.

A SQLite file (``state_path``) holds, per entity and id: the hash of the row's fields as last
seen (NULL when only ids are tracked), ``changed_at`` (when a scan first saw this content),
``deleted_at`` (when a scan first missed the id) and ``gen`` (the last scan that saw it).

A scan streams the table in pages and hands each page here; one batched query per page
compares it with the state, so memory stays flat whatever the table's size. Only a scan that
read the whole table marks the ids it did not see as deleted. The state of an entity is
forgotten when the database or table it was made from changes. Changes since T are then the
rows whose ``changed_at`` or ``deleted_at`` is at or after T: reading again with the same T
gives the same answer, so a run that fails after reading loses nothing.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from sqlalchemy import (Column, Integer, MetaData, String, Table, and_, bindparam, event,
                        func, or_, select, update)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_meta = MetaData()
rows = Table(
    "sql_rows", _meta,
    Column("entity", String, primary_key=True),
    Column("id", String, primary_key=True),
    Column("hash", String),
    Column("changed_at", String, nullable=False),
    Column("deleted_at", String),
    Column("gen", Integer, nullable=False))
scans = Table(
    "sql_scans", _meta,
    Column("entity", String, primary_key=True),
    Column("gen", Integer, nullable=False),
    Column("source", String))         # the database and table the state describes

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"     # fixed width: text order is time order


def stamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime(_FORMAT)


def unstamp(text: str) -> datetime:
    return datetime.strptime(text, _FORMAT).replace(tzinfo=timezone.utc)


class StateStore:
    def __init__(self, path: Path, chunk: int = 500) -> None:
        self.path = path
        self.chunk = chunk
        self.engine: AsyncEngine | None = None

    async def open(self) -> None:
        if self.engine is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(f"sqlite+aiosqlite:///{self.path}",
                                     connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        async with engine.begin() as conn:
            await conn.run_sync(_meta.create_all)
        self.engine = engine

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None

    async def begin_scan(self, entity: str, source: str) -> int:
        """A new scan generation. When ``source`` (database and table) is not the one the
        state was made from, the state is forgotten: another database's ids are no deletes."""
        assert self.engine is not None
        async with self.engine.begin() as conn:
            last = (await conn.execute(select(scans.c.gen, scans.c.source).where(
                scans.c.entity == entity))).first()
            if last is not None and last.source != source:
                await conn.execute(rows.delete().where(rows.c.entity == entity))
            gen = (last.gen if last is not None else 0) + 1
            stmt = sqlite_insert(scans).values(entity=entity, gen=gen, source=source)
            await conn.execute(stmt.on_conflict_do_update(
                index_elements=[scans.c.entity], set_={"gen": gen, "source": source}))
        return gen

    async def apply_page(self, entity: str, gen: int, now: datetime,
                         seen: Sequence[tuple[str, str | None]]) -> int:
        """Compare one page of (id, hash) with the state; returns how many rows changed."""
        assert self.engine is not None
        when = stamp(now)
        changed: list[dict] = []
        same: list[dict] = []
        async with self.engine.begin() as conn:
            known = {r.id: r for r in await conn.execute(
                select(rows.c.id, rows.c.hash, rows.c.deleted_at).where(
                    rows.c.entity == entity, rows.c.id.in_([i for i, _ in seen])))}
            for id_, hash_ in seen:
                old = known.get(id_)
                if old is None or old.deleted_at is not None or old.hash != hash_:
                    changed.append({"entity": entity, "id": id_, "hash": hash_,
                                    "changed_at": when, "deleted_at": None, "gen": gen})
                else:
                    same.append({"k_entity": entity, "k_id": id_})
            if changed:
                stmt = sqlite_insert(rows)
                await conn.execute(stmt.on_conflict_do_update(
                    index_elements=[rows.c.entity, rows.c.id],
                    set_={"hash": stmt.excluded.hash, "changed_at": stmt.excluded.changed_at,
                          "deleted_at": None, "gen": stmt.excluded.gen}), changed)
            if same:
                await conn.execute(
                    update(rows).where(rows.c.entity == bindparam("k_entity"),
                                       rows.c.id == bindparam("k_id")).values(gen=gen), same)
        return len(changed)

    async def finish_scan(self, entity: str, gen: int, now: datetime) -> int:
        """The scan read the whole table: ids it did not see are deleted as of ``now``."""
        assert self.engine is not None
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(rows).where(rows.c.entity == entity, rows.c.gen < gen,
                                   rows.c.deleted_at.is_(None)).values(deleted_at=stamp(now)))
        return result.rowcount

    async def page(self, entity: str, since: datetime | None, after: tuple[str, str] | None,
                   limit: int, *, live: bool = True) -> list[tuple[str, datetime, bool]]:
        """(id, when, deleted) at or after ``since`` in (when, id) order, after ``after``.
        ``live=False``: tombstones only."""
        assert self.engine is not None
        when = func.coalesce(rows.c.deleted_at, rows.c.changed_at)
        where = [rows.c.entity == entity]
        if not live:
            where.append(rows.c.deleted_at.is_not(None))
        if since is not None:
            where.append(when >= stamp(since))
        if after is not None:
            where.append(or_(when > after[0], and_(when == after[0], rows.c.id > after[1])))
        stmt = (select(rows.c.id, when.label("when"), rows.c.deleted_at)
                .where(*where).order_by(when, rows.c.id).limit(limit))
        async with self.engine.connect() as conn:
            result = await conn.execute(stmt)
            return [(r.id, unstamp(r.when), r.deleted_at is not None) for r in result]

