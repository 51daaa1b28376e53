"""The chunk queries read their own chunk from an index, on SQLite (EXPLAIN QUERY PLAN) and on
PostgreSQL (EXPLAIN), once the step's statistics are current (``refresh_statistics``): no sort
of every staged row of a side per chunk, which made a step's cost per record grow with its
size. The plans are the databases' own answers for the statements the queries really send.
(The circuit-breaker's ``deleted_only`` window may be a scan of the side when deletes are
few: one scan per 500 deletes, linear over the step, and the planner's right choice.)"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import event, insert

from daemon.store import queries as q
from daemon.store.db import create_schema, dumps, make_engine
from tests.dbs import OPEN

AT = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
I, F, RUN = "t", "items", 7
N = 6_000                       # staged rows per side: above STATS_AFTER


@pytest.fixture
async def db(state_url):
    engine = make_engine(state_url)
    OPEN.append(engine)
    await create_schema(engine)
    async with engine.begin() as conn:
        for side in ("left", "right"):
            await conn.execute(insert(q.staged), [dict(
                run_id=RUN, flow=F, side=side, record_id=f"{side[0]}{i}",
                seq=i + (N if side == "right" else 0), modified=None, deleted=i % 50 == 0,
                passes=True, excluded=False, pushed=False, data=dumps({}), hash="h")
                for i in range(N)])
            # another integration's step in the same table: the index narrows to ours
            await conn.execute(insert(q.staged), [dict(
                run_id=RUN - 1, flow="other", side=side, record_id=f"x{i}", seq=i,
                modified=None, deleted=False, passes=True, excluded=False, pushed=False,
                data=dumps({}), hash="h") for i in range(N // 10)])
        await conn.execute(insert(q.links), [dict(
            integration=I, flow=F, left_id=f"l{i}", right_id=f"r{i}", left_base="{}",
            right_base="{}", left_hash="h", right_hash="h", state="ok", updated_at=AT)
            for i in range(0, N + 100, 2)])      # the last 50 not staged: unseen
        assert await q.refresh_statistics(conn, 2 * N)
    return engine


async def plan_of(db, call) -> str:
    """The database's plan of the first statement ``call`` sends, as one text."""
    sent: list[tuple[str, object]] = []
    async with db.connect() as conn:
        def grab(_c, _cursor, statement, parameters, _ctx, _many):
            sent.append((statement, parameters))
        event.listen(conn.sync_connection, "before_cursor_execute", grab)
        rows = await call(conn)
        event.remove(conn.sync_connection, "before_cursor_execute", grab)
        assert rows, "the query found its chunk"
        statement, params = sent[0]
        prefix = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
        plan = await conn.exec_driver_sql(prefix + statement, params)
        return "\n".join(str(r[-1]) for r in plan.all())


CHUNKS = {
    "unlinked": lambda conn: q.staged_unlinked_chunk(conn, RUN, I, F, "left", N // 10, 500),
    "linked": lambda conn: q.staged_linked_chunk(conn, RUN, I, F, "right", N + N // 10, 500),
}


@pytest.mark.parametrize("name", sorted(CHUNKS))
async def test_a_chunk_is_read_by_keyset_on_the_staging_order(db, name):
    plan = await plan_of(db, CHUNKS[name])
    assert "ix_staged_order" in plan, plan
    if db.dialect.name == "sqlite":
        assert "TEMP B-TREE" not in plan, plan          # no sort of the side's rows
        assert "seq>?" in plan, plan                    # the keyset is the index's range
    else:
        assert "Sort" not in plan, plan
        assert "Seq Scan on staged" not in plan, plan


async def test_unseen_links_walk_one_flow_by_id_without_sorting(db):
    plan = await plan_of(db, lambda conn: q.unseen_links(conn, RUN, I, F, "left", 500, 0))
    assert "Seq Scan on links" not in plan and "TEMP B-TREE" not in plan, plan


async def test_statistics_are_left_alone_for_a_small_step(db):
    async with db.begin() as conn:
        assert not await q.refresh_statistics(conn, q.STATS_AFTER - 1)
