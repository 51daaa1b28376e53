"""daemon/store/operator.py and reports.py on a real SQLite file and PostgreSQL: what the
status page's buttons (and the CLI) write, and the reads the page and /metrics make."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import insert, select

from daemon.store import operator, reports
from daemon.store.db import create_schema, make_engine
from daemon.store.tables import T
from tests.dbs import OPEN

AT = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)


async def migrated(url: str):
    db = make_engine(url)
    OPEN.append(db)
    await create_schema(db)
    return db


async def add_error(conn, record_id: str, *, flow="companies", side="right", retry=False,
                    count=3) -> None:
    await conn.execute(insert(T["record_errors"]).values(
        integration="ul", flow=flow, side=side, record_id=record_id, message=f"refused {record_id}",
        retry=retry, count=count, run_id=1, updated_at=AT))


async def errors_by_id(db) -> dict[str, dict]:
    async with db.connect() as conn:
        return {r["record_id"]: dict(r) for r in (await conn.execute(
            select(T["record_errors"]))).mappings()}


async def test_retry_marks_one_error_a_side_or_a_whole_flow(state_url):
    db = await migrated(state_url)
    async with db.begin() as conn:
        for rid in ("1", "2"):
            await add_error(conn, rid)
        await add_error(conn, "L1", side="left")
        await add_error(conn, "C1", flow="contacts")
    async with db.begin() as conn:
        assert await operator.retry(conn, "ul", "companies", "right", ["1"]) == 1
    errs = await errors_by_id(db)
    assert (errs["1"]["retry"], errs["1"]["count"]) == (True, 0)        # counter starts again
    assert (errs["2"]["retry"], errs["2"]["count"]) == (False, 3)       # the others untouched
    async with db.begin() as conn:
        assert await operator.retry(conn, "ul", "companies", "right", ["nope"]) == 0
        assert await operator.retry(conn, "ul", "companies") == 3         # both sides, one flow
    errs = await errors_by_id(db)
    assert all(errs[r]["retry"] for r in ("1", "2", "L1")) and not errs["C1"]["retry"]
    async with db.begin() as conn:
        assert await operator.retry(conn, "other", "companies") == 0      # other integration


async def test_exclude_takes_the_error_with_it_and_include_reads_it_again(state_url):
    db = await migrated(state_url)
    async with db.begin() as conn:
        await add_error(conn, "7")
        await operator.exclude(conn, "ul", "companies", "right", "7")
    ex = T["exclusions"]
    async with db.connect() as conn:
        rows = (await conn.execute(select(ex))).mappings().all()
    assert [(r["record_id"], r["mode"], r["reason"]) for r in rows] == [
        ("7", "never", "refused 7")]                       # the error's message is the reason
    assert await errors_by_id(db) == {}
    async with db.begin() as conn:
        await operator.exclude(conn, "ul", "companies", "right", "7", once=True, reason="later")
        assert await operator.include(conn, "ul", "companies", "right", "7") is True
        assert await operator.include(conn, "ul", "companies", "right", "7") is False
    async with db.connect() as conn:
        rows = (await conn.execute(select(ex))).mappings().all()
    assert [(r["record_id"], r["mode"]) for r in rows] == [("7", "revisit")]


async def test_pause_is_kept_in_the_state(state_url):
    db = await migrated(state_url)
    async with db.begin() as conn:
        assert await operator.is_paused(conn, "ul") is False
        assert await operator.pause(conn, "ul", "ERP upgrade") is True
        assert await operator.pause(conn, "ul") is False
    await db.dispose()
    db = await migrated(state_url)                 # a new engine: as after a restart
    async with db.begin() as conn:
        assert await operator.is_paused(conn, "ul") is True
        assert await operator.is_paused(conn, "other") is False
        paused = await operator.paused(conn)
        assert list(paused) == ["ul"] and paused["ul"]["reason"] == "ERP upgrade"
        assert await operator.resume(conn, "ul") is True
        assert await operator.resume(conn, "ul") is False
        assert await operator.paused(conn) == {}


async def test_last_reads_count_only_finished_steps_of_runs_that_synced(state_url):
    db = await migrated(state_url)
    runs, steps = T["runs"], T["steps"]

    async def run(trigger: str, flow_status: str, minutes: int) -> None:
        end = AT + timedelta(minutes=minutes)
        run_id = (await conn.execute(insert(runs).values(
            integration="ul", trigger=trigger, status="ok", started_at=end,
            finished_at=end))).inserted_primary_key[0]
        await conn.execute(insert(steps).values(run_id=run_id, flow="companies",
                                                status=flow_status, counts="{}",
                                                started_at=end, finished_at=end))
    async with db.begin() as conn:
        await run("schedule", "ok", 0)
        await run("schedule", "errors", 5)            # record errors: both sides were read
        await run("schedule", "failed", 10)           # stopped somewhere: not a read
        await run("webhook", "ok", 15)                # targeted: not a read of the changes
        await run("plan", "ok", 20)                   # a dry run
    async with db.connect() as conn:
        reads = await reports.last_reads(conn)
    assert len(reads) == 1
    integ, flow, at = reads[0]
    assert (integ, flow) == ("ul", "companies")
    at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
    assert at == AT + timedelta(minutes=5)
