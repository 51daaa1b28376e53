"""Every batched statement of daemon/store/queries.py, on SQLite and PostgreSQL (``state_url``):
booleans, ``rowcount`` upserts, IN lists longer than one chunk, the UNION of
staged_linked_chunk's keyset, JSON text columns, aware timestamps, and a stable order of lists."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from daemon.store import operator
from daemon.store import queries as q
from daemon.store.db import create_schema, dumps, make_engine
from daemon.store.tables import T
from tests.dbs import OPEN

AT = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
I, F = "t", "items"


@pytest.fixture
async def db(state_url):
    engine = make_engine(state_url)
    OPEN.append(engine)
    await create_schema(engine)
    return engine


def link(n: int, **kw) -> dict:
    return dict(integration=I, flow=F, left_id=f"L{n}", right_id=f"R{n}",
                left_base=dumps({"name": f"n{n}", "Δ": [1, None]}), right_base=dumps({}),
                left_hash="a", right_hash="b", state="ok", updated_at=AT, **kw)


def staged(run: int, side: str, rid: str, seq: int, **kw) -> dict:
    return dict(run_id=run, flow=F, side=side, record_id=rid, seq=seq,
                modified=AT.isoformat(), deleted=kw.pop("deleted", False), passes=True,
                excluded=False, pushed=False, data=dumps({"id": rid, **kw}), hash=rid)


async def test_links_in_chunks_update_and_delete(db):
    n = q.CHUNK * 2 + 7                     # three IN lists
    async with db.begin() as conn:
        await q.insert_links(conn, [link(i) for i in range(n)])
    async with db.begin() as conn:
        by_left = await q.links_by_side(conn, I, F, "left", [f"L{i}" for i in range(n)])
        assert len(by_left) == n and q.decode_base(by_left["L3"], "left") == {
            "name": "n3", "Δ": [1, None]}
        assert await q.count_links(conn, I, F) == n
        ids = sorted(r["id"] for r in by_left.values())
        await q.update_links(conn, [{"id": ids[0], "state": "gone_left"},
                                    {"id": ids[1], "left_hash": "x", "updated_at": AT},
                                    {"id": ids[2], "left_hash": "y", "updated_at": AT}])
        partners = await q.link_map(conn, I, F, "right", [f"R{i}" for i in range(n)])
        assert len(partners) == n - 1 and partners["R5"] == "L5"     # gone_left left out
        await q.delete_links(conn, ids[: q.CHUNK + 1])
        assert await q.count_links(conn, I, F) == n - q.CHUNK - 1
        page = await q.links_of(conn, I, F, after=0, limit=5)
        assert [r["id"] for r in page] == ids[q.CHUNK + 1: q.CHUNK + 6]
        row = (await q.links_by_side(conn, I, F, "left", [f"L{n - 1}"]))[f"L{n - 1}"]
        assert row["updated_at"].replace(tzinfo=row["updated_at"].tzinfo or timezone.utc) == AT


async def test_ids_of_any_text_are_looked_up_and_deleted_exactly(db):
    """A list of ids is one parameter (a JSON array on SQLite, an array on PostgreSQL): ids
    with quotes, backslashes, brackets, commas, non-Latin letters or that look like numbers
    are found as they are, and nothing else is."""
    odd = ["it's", 'say "hi"', "back\\slash", "[1, 2]", "a,b", "Ωmega 東京", "0042", "42",
           "%_", " padded ", "null"]
    async with db.begin() as conn:
        await q.insert_links(conn, [dict(link(i), left_id=rid, right_id=f"R-{rid}")
                                    for i, rid in enumerate(odd)])
        found = await q.links_by_side(conn, I, F, "left", odd + ["missing", "4", "'"])
        assert sorted(found) == sorted(odd)
        assert await q.link_map(conn, I, F, "left", ["0042"]) == {"0042": "R-0042"}
        by_id = await q.links_by_id(conn, [found["42"]["id"], found["null"]["id"]])
        assert sorted(r["left_id"] for r in by_id.values()) == ["42", "null"]
        await q.delete_links(conn, [found["it's"]["id"], found["Ωmega 東京"]["id"]])
        left = await q.links_by_side(conn, I, F, "left", odd)
        assert sorted(left) == sorted(set(odd) - {"it's", "Ωmega 東京"})


async def test_cursor_upsert_by_rowcount(db):
    async with db.begin() as conn:
        assert await q.get_cursor(conn, I, F, "left") is None
        await q.set_cursor(conn, I, F, "left", {"at": AT.isoformat(), "ids": ["a"]})
        await q.set_cursor(conn, I, F, "left", {"at": AT.isoformat(), "ids": ["a", "b"]})
        assert await q.get_cursor(conn, I, F, "left") == {"at": AT.isoformat(),
                                                         "ids": ["a", "b"]}
        await q.clear_cursors(conn, I, F)
        assert await q.get_cursor(conn, I, F, "left") is None


async def test_record_errors_upsert_count_and_retry_boolean(db):
    row = dict(integration=I, flow=F, side="right", record_id="R1", message="422",
               retry=True, run_id=1, updated_at=AT)
    async with db.begin() as conn:
        await q.record_errors(conn, [row])
        await q.record_errors(conn, [{**row, "run_id": 2}])        # the same way: counted
        await q.record_errors(conn, [{**row, "run_id": 2}])        # twice in a run: once
        (r1,) = [dict(r) for r in (await conn.execute(select(q.errors).where(
            q.errors.c.record_id == "R1"))).mappings()]
        assert r1["count"] == 2
        await q.record_errors(conn, [{**row, "message": "422 again", "run_id": 3}])
        await q.record_errors(conn, [{**row, "record_id": "R2", "retry": False}])
        (r1,) = [dict(r) for r in (await conn.execute(select(q.errors).where(
            q.errors.c.record_id == "R1"))).mappings()]
        # another way of failing starts the count again
        assert (r1["count"], r1["message"], r1["retry"]) == (1, "422 again", True)
        assert await q.revisit_ids(conn, I, F, "right") == ["R1"]
        await q.clear_errors(conn, I, F, "right", ["R1", "R2"], only_retry=True)
        left = (await conn.execute(select(q.errors.c.record_id, q.errors.c.retry))).all()
        assert [tuple(r) for r in left] == [("R2", False)]


async def test_record_errors_failing_the_same_way_n_runs_in_a_row_are_quarantined(db):
    row = dict(integration=I, flow=F, side="right", record_id="R1", message="422",
               retry=True, run_id=1, updated_at=AT, hash="h1")
    async with db.begin() as conn:
        for run in range(1, 4):
            await q.record_errors(conn, [{**row, "run_id": run}], quarantine_after=3)
        assert await q.quarantined(conn, I, F, "right", ["R1"]) == {"R1": "h1"}
        assert await q.revisit_ids(conn, I, F, "right") == []      # not re-read every run
        assert await operator.retry(conn, I, F, "right", ["R1"]) == 1
        assert await q.quarantined(conn, I, F, "right", ["R1"]) == {}
        assert await q.revisit_ids(conn, I, F, "right") == ["R1"]


async def test_staging_the_union_of_linked_records_and_unlinked_ones(db):
    run = 7
    async with db.begin() as conn:
        await q.insert_links(conn, [link(i) for i in range(1, 5)])
        by_left = await q.links_by_side(conn, I, F, "left", ["L1", "L2", "L3", "L4"])
        ids = [by_left[f"L{i}"]["id"] for i in range(1, 5)]
        await q.stage(conn, [staged(run, "left", "L1", 1), staged(run, "left", "L2", 2),
                             staged(run, "left", "N1", 3, email="a@x")],
                      [dict(run_id=run, flow=F, side="left", record_id="N1", key="email",
                            value="a@x")])
        await q.stage(conn, [staged(run, "right", "R2", 1), staged(run, "right", "R3", 2,
                                                                   deleted=True)], [])
        await q.stage(conn, [staged(run, "left", "L1", 4, name="read twice")], [])
        chunk = await q.staged_linked_chunk(conn, run, I, F, "left", 0, 10)
        assert [u["link"]["left_id"] for u in chunk] == ["L2", "L1"]     # in staging order
        by_id = {u["link"]["left_id"]: u for u in chunk}
        assert by_id["L1"]["left"]["data"]["name"] == "read twice"
        assert by_id["L1"]["right"] is None
        assert by_id["L2"]["left"] and by_id["L2"]["right"]
        right = await q.staged_linked_chunk(conn, run, I, F, "right", 0, 10)
        assert [u["link"]["id"] for u in right] == ids[1:3]               # R2, R3
        assert right[1]["right"]["deleted"] is True and right[1]["left"] is None
        assert await q.staged_linked_chunk(conn, run, I, F, "left", chunk[-1]["seq"], 10) == []
        assert [u["link"]["left_id"] for u in
                await q.staged_linked_chunk(conn, run, I, F, "left", 0, 1)] == ["L2"]
        gap = await q.staged_linked_chunk(conn, run, I, F, "left", 2, 1)    # N1: no link
        assert gap == [] and gap.last == 3          # an empty window, not the end
        end = await q.staged_unlinked_chunk(conn, run, I, F, "left", 4, 10)
        assert end == [] and end.last is None
        unlinked = await q.staged_unlinked_chunk(conn, run, I, F, "left", 0, 10)
        assert [r["record_id"] for r in unlinked] == ["N1"] and unlinked[0]["passes"] is True
        found = await q.staged_by_key(conn, run, F, "left", "email", ["a@x", "b@x"])
        assert list(found) == ["a@x"] and found["a@x"][0]["data"]["email"] == "a@x"
        gone = await q.unseen_links(conn, run, I, F, "left", limit=10, after=0)
        assert [r["left_id"] for r in gone] == ["L3", "L4"]
        await q.unstage(conn, run, F, "left", ["N1"])
        assert await q.staged_unlinked_chunk(conn, run, I, F, "left", 0, 10) == []
        await q.clear_staged(conn, run_id=run)
        assert await q.staged_linked_chunk(conn, run, I, F, "left", 0, 10) == []


async def test_intents_exclusions_reviews_pushes_holds_parked_audit(db):
    async with db.begin() as conn:
        await q.add_intents(conn, [dict(integration=I, flow=F, target="right", source_id=s,
                                        keys=dumps({"code": s}), created_at=AT)
                                   for s in ("b", "a")])
        assert [(i["source_id"], i["keys"]) for i in await q.pending_intents(conn, I, F)] == [
            ("a", {"code": "a"}), ("b", {"code": "b"})]
        await q.drop_intents(conn, I, F, "right", ["a", "b"])
        assert await q.pending_intents(conn, I, F) == []

        ex = T["exclusions"]
        for rid, mode in (("x1", "never"), ("x2", "skip_once")):
            await conn.execute(ex.insert().values(integration=I, flow=F, side="left",
                                                  record_id=rid, mode=mode, created_at=AT))
        assert await q.excluded(conn, I, F, "left", ["x1", "x2", "x3"]) == {
            "x1": "never", "x2": "skip_once"}
        await q.after_step_exclusions(conn, I, F)
        assert await q.revisit_ids(conn, I, F, "left") == ["x2"]
        await q.after_step_exclusions(conn, I, F)
        assert await q.revisit_ids(conn, I, F, "left") == []

        review = dict(integration=I, flow=F, side="left", record_id="r1",
                      candidates=dumps(["R1", "R2"]), reason="matches 2 records", updated_at=AT)
        await q.set_reviews(conn, [review])
        await q.set_reviews(conn, [{**review, "reason": "again"}])
        assert [r["reason"] for r in (await conn.execute(select(q.reviews))).mappings()] == [
            "again"]
        await q.clear_reviews(conn, I, F, "left", ["r1"])

        for rid in ("p2", "p1"):
            await conn.execute(q.pushes.insert().values(integration=I, flow=F, side="left",
                                                        record_id=rid, created_at=AT))
        assert await q.take_pushes(conn, I, F, "left") == ["p1", "p2"]
        await q.drop_pushes(conn, I, F, "left", ["p1", "p2"])
        assert await q.take_pushes(conn, I, F, "left") == []

        holds = [dict(integration=I, flow=F, link_id=n, target="right", record_id=f"R{n}",
                      action="delete", run_id=1, approved=False, created_at=AT)
                 for n in (3, 1, 2)]
        assert await q.hold(conn, holds) == 3 and await q.hold(conn, holds) == 0
        assert await q.approved_holds(conn, I, F) == []
        await conn.execute(q.held.update().where(q.held.c.link_id != 2).values(approved=True))
        approved = await q.approved_holds(conn, I, F)
        assert [h["link_id"] for h in approved] == [3, 1]           # in the order held
        assert set(await q.held_links(conn, I, F)) == {1, 2, 3}
        await q.drop_holds(conn, [h["id"] for h in approved])
        assert set(await q.held_links(conn, I, F)) == {2}

        await q.park(conn, I, F, "left", [("k1", "h1"), ("k2", "h2")])
        await q.park(conn, I, F, "left", [("k1", "h1b")])
        assert await q.parked_hashes(conn, I, F, "left", ["k1", "k2", "k3"]) == {
            "k1": "h1b", "k2": "h2"}
        await q.unpark(conn, I, F, "left", ["k1", "k2"])
        assert await q.parked_hashes(conn, I, F, "left", ["k1", "k2"]) == {}

        await q.add_audit(conn, [dict(run_id=1, integration=I, flow=F, side="right",
                                      record_id="R1", at=AT + timedelta(seconds=1),
                                      fields=dumps([{"field": "title", "old": None,
                                                     "new": {"a": "Δ"}, "rule": "flow"}]))])
        (a,) = (await conn.execute(select(q.audit))).mappings().all()
        assert a["fields"] == '[{"field":"title","old":null,"new":{"a":"Δ"},"rule":"flow"}]'


async def test_hot_inserts_write_each_timestamp_as_a_core_insert_does(db):
    """The batched insert converts each distinct timestamp once: rows sharing one get the
    same text, and the same instant in another zone is still written as that zone's text
    (what SQLAlchemy's own insert writes), not taken from the first."""
    from sqlalchemy import insert
    plus_one = timezone(timedelta(hours=1))
    stamps = [AT, AT, AT.astimezone(plus_one), AT + timedelta(microseconds=1), AT]

    def rows(run: int) -> list[dict]:
        return [dict(run_id=run, integration=I, flow=F, side="left", record_id=f"L{i}",
                     fields=dumps([{"field": "name", "old": None, "new": i, "rule": "flow"}]),
                     at=at)
                for i, at in enumerate(stamps)]

    async with db.begin() as conn:
        await q.add_audit(conn, rows(1))
        await conn.execute(insert(q.audit), rows(2))
        written = {run: [r[0] for r in await conn.exec_driver_sql(
            f"SELECT at FROM audit WHERE run_id = {run} ORDER BY id")] for run in (1, 2)}
    assert written[1] == written[2]
    assert written[1][0] == written[1][1] == written[1][4]
    # SQLite keeps the zone's own wall time (10:00 for 09:00 UTC); PostgreSQL the instant
    assert len(set(written[1])) == (2 if db.dialect.name == "postgresql" else 3)
