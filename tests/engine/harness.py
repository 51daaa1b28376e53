"""A small harness: two in-memory systems, a real state database (a SQLite file, or a fresh
PostgreSQL database: the ``state_url`` fixture of tests/dbs.py), and a flow to run."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from connectors.memory import MemoryConnector
from daemon.engine.rules import FlowRules
from daemon.engine.runner import Integration, RunOptions, order_flows, run
from daemon.store.db import create_schema, make_engine
from daemon.store.tables import T
from tests.dbs import OPEN


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.t

    def tick(self, seconds: float = 120) -> None:
        self.t += timedelta(seconds=seconds)


def item_flow(**overrides) -> dict:
    flow = dict(name="items", left_entity="items", right_entity="items",
                fields=[dict(left="key", right="code"), dict(left="name", right="title"),
                        dict(left="phone", right="tel")],
                match=[dict(left="key", right="code")], overlap_seconds=0)
    flow.update(overrides)
    return flow


class Pair:
    def __init__(self, db, left: MemoryConnector, right: MemoryConnector, flows: list[dict],
                 clock: Clock) -> None:
        self.db, self.L, self.R, self.clock = db, left, right, clock
        self.integ = Integration("t", order_flows([FlowRules.model_validate(f) for f in flows]),
                                 {"left": left, "right": right})

    async def sync(self, **kw):
        self.clock.tick()
        result = await run(self.db, self.integ, RunOptions(**kw))
        self.clock.tick()
        return result

    async def rows(self, table: str, **where) -> list[dict]:
        t = T[table]
        async with self.db.connect() as conn:
            stmt = select(t).where(*[t.c[k] == v for k, v in where.items()])
            return [dict(r) for r in (await conn.execute(stmt)).mappings()]

    async def insert(self, table: str, **values) -> None:
        from sqlalchemy import insert
        async with self.db.begin() as conn:
            await conn.execute(insert(T[table]).values(**values))

    async def set(self, table: str, values: dict, **where) -> None:
        t = T[table]
        async with self.db.begin() as conn:
            await conn.execute(update(t).where(*[t.c[k] == v for k, v in where.items()])
                               .values(**values))


async def make_pair(where, flows: list[dict], **settings) -> Pair:
    """``where``: a state database URL (the ``state_url`` fixture), or a directory for a
    SQLite file (``tmp_path``)."""
    url = where if isinstance(where, str) and "://" in where else f"sqlite:///{where}/state.db"
    db = make_engine(url)
    OPEN.append(db)
    await create_schema(db)
    clock = Clock()
    entities = sorted({f["left_entity"] for f in flows} | {f["right_entity"] for f in flows})
    s = MemoryConnector.Settings(entities=entities, **settings)
    return Pair(db, MemoryConnector("left", s, clock=clock),
                MemoryConnector("right", s, clock=clock), flows, clock)
