"""What a step asks the store, on SQLite and PostgreSQL: staging replaces an earlier reading
only of the ids it may have staged before (daemon/engine/seen.py), and a flow with no record
errors, reviews, parked records or exclusions is not asked about them record by record
(``RecordState``): one question a step instead. Behaviour stays: a record read twice keeps
its latest reading, and state that does exist is honoured (the tests of errors, quarantine,
reviews, parking and exclusions elsewhere)."""
from __future__ import annotations

import re

from sqlalchemy import event

from daemon.engine.seen import SeenIds
from tests.engine.harness import item_flow, make_pair

N = 1_200                # records: several pages and chunks


def _watch(db) -> list[str]:
    seen: list[str] = []

    @event.listens_for(db.sync_engine, "before_cursor_execute")
    def _statement(conn, cursor, statement, *args) -> None:
        seen.append(re.sub(r"\s+", " ", statement))
    return seen


def _touching(statements: list[str], *tables: str) -> list[str]:
    return [s for s in statements if any(re.search(rf"\b{t}\b", s) for t in tables)]


async def test_a_first_sync_asks_nothing_of_empty_record_state(state_url):
    pair = await make_pair(state_url, [item_flow()], page_size=200)
    for i in range(N):
        pair.L.put("items", {"key": f"k{i}", "name": f"n{i}", "phone": str(i)})
    statements = _watch(pair.db)
    result = await pair.sync()
    assert result.steps[0].counts["created_right"] == N
    # a page's ids were never staged before: no earlier reading is deleted
    assert [s for s in statements if s.startswith("DELETE FROM staged_keys")
            and "record_id" in s] == []
    per_record = _touching(statements, "record_errors", "reviews", "parked", "exclusions")
    # the one question of the step, and the run's own reads of the tables before staging
    # (what to read again by id, what to skip: one each per side)
    asked = [s for s in per_record if "EXISTS" in s and "record_errors" in s]
    assert len(asked) == 1
    others = [s for s in per_record if s not in asked]
    assert len(others) <= 6, others             # not one per page or per chunk


async def test_a_record_staged_twice_in_a_step_keeps_its_latest_reading(state_url):
    """A record listed, then read again by id in the same step (an earlier write of it
    failed): the second reading replaces the first (staged as new, it would break the
    staging table's key), and the step plans it once."""
    pair = await make_pair(state_url, [item_flow()])
    k = pair.L.put("items", {"key": "k1", "name": "first", "phone": "1"})
    await pair.sync()
    pair.R.fail_writes = ["refuse"]
    pair.L.edit("items", k, {"name": "second"})
    failed = await pair.sync()
    assert failed.steps[0].counts["errors"] >= 1
    pair.R.fail_writes = []
    pair.L.edit("items", k, {"name": "third"})      # listed again, and read again by id
    ok = await pair.sync()
    assert ok.steps[0].counts["errors"] == 0
    assert ok.steps[0].counts["updated_right"] == 1
    assert [r["fields"]["title"] for r in pair.R.data["items"].values()] == ["third"]


def test_seen_ids_are_certain_about_ids_never_added():
    seen = SeenIds()
    first = [f"id-{i}" for i in range(50_000)]
    assert len(seen.add(first)) < 50                    # a rare false "maybe" at most
    assert seen.add(["id-7", "id-49999"]) == ["id-7", "id-49999"]     # always seen again
    fresh = [f"new-{i}" for i in range(50_000)]
    maybe = seen.add(fresh)
    assert len(maybe) < len(fresh) * 0.01               # a few false "maybe" at most
    assert seen.add(["x", "x"]) == ["x"]                # twice in one call



async def test_a_full_read_plans_only_the_pairs_that_changed(state_url, monkeypatch):
    """A full read of a synced pair: the pairs whose two records equal their bases are
    ``Unchanged`` without their values decoded or planned (``_Step._quiet``); a pair edited
    on one side, one edited on both (a conflict) and one deleted are planned as before."""
    from daemon.engine import step as step_module
    pair = await make_pair(state_url, [item_flow()], page_size=200)
    keys = [pair.L.put("items", {"key": f"k{i}", "name": f"n{i}", "phone": str(i)})
            for i in range(300)]
    await pair.sync()
    await pair.sync()                       # reads back what the first sync wrote
    right = {r["fields"]["code"]: rid for rid, r in pair.R.data["items"].items()}
    pair.L.edit("items", keys[1], {"name": "left edit"})
    pair.R.edit("items", right["k2"], {"tel": "right edit"})
    pair.L.edit("items", keys[3], {"phone": "both, left"})
    pair.R.edit("items", right["k3"], {"tel": "both, right"})
    pair.R.remove("items", right["k4"])
    planned: list[tuple] = []
    real = step_module.plan_pair

    def counting(flow, link, recs, ctx, sit):
        planned.append((link["left_id"], link["right_id"]))
        return real(flow, link, recs, ctx, sit)
    monkeypatch.setattr(step_module, "plan_pair", counting)
    result = await pair.sync(full=True)
    counts = result.steps[0].counts
    # the deleted pair twice: the circuit-breaker counts the deletes the plan would make
    assert len(planned) == 5, planned       # 301 before: every pair was planned
    assert {lid for lid, _ in planned} == {keys[1], keys[2], keys[3], keys[4]}
    assert counts["unchanged"] == 296
    assert counts["updated_right"] == 1 and counts["updated_left"] == 2   # the conflict: right
    assert pair.R.data["items"][right["k1"]]["fields"]["title"] == "left edit"
    assert pair.L.data["items"][keys[2]]["fields"]["phone"] == "right edit"
