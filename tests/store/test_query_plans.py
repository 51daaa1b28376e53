"""The chunk queries read their own chunk from an index, on SQLite (EXPLAIN QUERY PLAN) and on
PostgreSQL (EXPLAIN), once the step's statistics are current (``refresh_statistics``): no sort
of every staged row of a side per chunk, which made a step's cost per record grow with its
size. The plans are the databases' own answers for the statements the queries really send.
(The circuit-breaker's ``deleted_only`` window may be a scan of the side when deletes are
few: one scan per 500 deletes, linear over the step, and the planner's right choice.)"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import and_, event, insert, or_, update

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


async def plan_of(db, call, which: int = 0, indexable: bool = False) -> str:
    """The database's plan of the statement ``call`` sends first (or ``which``), as one
    text. ``indexable``: PostgreSQL is told to avoid scans where it can (a small table is
    cheaper to scan, whatever its indexes), so a scan left in the plan means no index could
    serve the condition."""
    sent: list[tuple[str, object]] = []
    async with db.connect() as conn:
        def grab(_c, _cursor, statement, parameters, _ctx, _many):
            sent.append((statement, parameters))
        event.listen(conn.sync_connection, "before_cursor_execute", grab)
        rows = await call(conn)
        event.remove(conn.sync_connection, "before_cursor_execute", grab)
        assert rows, "the query found its chunk"
        statement, params = sent[which]
        prefix = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
        if indexable and conn.dialect.name == "postgresql":
            await conn.exec_driver_sql("SET enable_seqscan = off")
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


async def test_quiet_pairs_are_counted_from_the_quiet_rows_each_found_by_its_key(db):
    """On SQLite, counting the pairs left quiet reads the quiet rows (the staging-order
    index's range ``seq = 0``) and finds each one's link and partner row by their keys: the
    count costs what the quiet rows do, not what the flow's links do (it walked every link,
    which an incremental step with a few quiet rows paid in full). On PostgreSQL it walks
    the links once (see ``quiet_pairs``), each staged row found by its key. A staged row is
    never looked up with ``seq``: with ``seq = 0`` in that look-up, SQLite took the
    staging-order index, whose zero holds every quiet row, and the count went quadratic
    (3 s for 25,000 pairs)."""
    async with db.begin() as conn:
        await conn.execute(update(q.staged).where(q.staged.c.run_id == RUN, or_(
            and_(q.staged.c.side == "left", q.staged.c.seq < 3000),
            and_(q.staged.c.side == "right", q.staged.c.seq < N + 3000))).values(seq=0))
        assert await q.refresh_statistics(conn, 2 * N)
    if db.dialect.name == "sqlite":
        for which, side in ((0, "left"), (1, "right")):
            plan = await plan_of(db, lambda conn: q.quiet_pairs(conn, RUN, I, F), which)
            assert "SCAN" not in plan, plan
            assert "ix_staged_order (run_id=? AND flow=? AND side=? AND seq=?)" in plan, plan
            assert f"{side}_id=?)" in plan, plan                 # its link, by its key
            assert "partner USING INDEX sqlite_autoindex_staged_1" in plan, plan
    else:
        plan = await plan_of(db, lambda conn: q.quiet_pairs(conn, RUN, I, F))
        assert "ix_staged_order" not in plan and "Seq Scan on staged" not in plan, plan
    async with db.connect() as conn:
        assert await q.quiet_pairs(conn, RUN, I, F) == 1500


async def test_quiet_pairs_count_each_pair_quiet_on_some_side_and_undecided_on_none(db):
    flow = "quiet"
    staged_rows = {("left", "a"): 0, ("left", "b"): 0, ("right", "b"): 5, ("right", "c"): 0,
                   ("left", "d"): 0, ("right", "d"): 0, ("left", "e"): 9, ("right", "e"): 0,
                   ("left", "lone"): 0}
    async with db.begin() as conn:
        await conn.execute(insert(q.staged), [dict(
            run_id=RUN, flow=flow, side=side, record_id=f"{side[0]}{rid}", seq=seq,
            modified=None, deleted=False, passes=True, excluded=False, pushed=False,
            data=dumps({}), hash="h") for (side, rid), seq in staged_rows.items()])
        await conn.execute(insert(q.links), [dict(
            integration=I, flow=flow, left_id=f"l{x}", right_id=f"r{x}", left_base="{}",
            right_base="{}", left_hash="h", right_hash="h", state="ok", updated_at=AT)
            for x in "abcdef"])
    async with db.connect() as conn:
        # a: left quiet, right not read; c: the mirror; d: quiet on both, counted once.
        # b, e: one side to decide; f: read on neither side; "lone": quiet, but no link
        assert await q.quiet_pairs(conn, RUN, I, flow) == 3


async def test_statistics_are_left_alone_for_a_small_step(db):
    async with db.begin() as conn:
        assert not await q.refresh_statistics(conn, q.STATS_AFTER - 1)


# a chunk's look-ups by id: the ids are one parameter (a JSON array on SQLite, an array on
# PostgreSQL), and each id is still found through the table's index, not by a scan
LOOKUPS = {
    "links of one side's ids": (
        lambda conn: q.links_by_side(conn, I, F, "left", [f"l{i}" for i in range(0, 100, 2)]),
        "links"),
    "staged records by id": (
        lambda conn: q.staged_records(conn, RUN, F, "left", [f"l{i}" for i in range(50)]),
        "staged"),
    "the keys of staged records": (
        lambda conn: q.staged_by_key(conn, RUN, F, "left", "0", [f"v{i}" for i in range(50)]),
        "staged_keys"),
}


@pytest.mark.parametrize("name", sorted(LOOKUPS))
async def test_a_list_of_ids_is_one_parameter_and_found_by_index(db, name):
    call, table = LOOKUPS[name]
    if table == "staged_keys":
        async with db.begin() as conn:
            await conn.execute(insert(q.staged_keys), [dict(
                run_id=RUN, flow=F, side="left", record_id=f"l{i}", key="0", value=f"v{i}")
                for i in range(N)])
            assert await q.refresh_statistics(conn, 2 * N)
    sent: list = []
    async with db.connect() as conn:
        def grab(_c, _cursor, statement, parameters, _ctx, _many):
            sent.append(parameters)
        event.listen(conn.sync_connection, "before_cursor_execute", grab)
        assert await call(conn)
        event.remove(conn.sync_connection, "before_cursor_execute", grab)
    assert len(sent[0]) <= 6, sent[0]               # not one parameter per id
    plan = await plan_of(db, call, indexable=True)
    if db.dialect.name == "sqlite":
        assert f"SEARCH {table} USING" in plan, plan
        assert f"SCAN {table}" not in plan, plan
    else:
        assert f"Seq Scan on {table}" not in plan, plan
