"""The engine against the faults and rough edges an outside measurement found, one test each,
on two in-memory systems and a real state database (SQLite and PostgreSQL: ``state_url``).
The same faults through real HTTP and the sandboxes are in tests/integration."""
from __future__ import annotations

from datetime import datetime, timedelta

import orjson
import structlog
import structlog.testing

from connectors.base import RecordError
from tests.engine.harness import item_flow, make_pair

COMPANIES = dict(name="companies", left_entity="companies", right_entity="companies",
                 fields=[dict(left="key", right="code"), dict(left="name", right="title")],
                 match=[dict(left="key", right="code")], overlap_seconds=0)
CONTACTS = dict(name="contacts", left_entity="contacts", right_entity="contacts",
                depends_on=["companies"],
                fields=[dict(left="email", right="mail"), dict(left="first", right="given"),
                        dict(left="company", right="account", ref="companies")],
                match=[dict(left="email", right="mail", normalize="email")], overlap_seconds=0)


# --- decide, then do -------------------------------------------------------------------------
async def test_plan_of_matching_records_lists_each_pair_once_and_the_run_does_the_same(state_url):
    p = await make_pair(state_url, [item_flow()])
    for i in range(3):
        p.L.put("items", {"key": f"k{i}", "name": f"left {i}"})
        p.R.put("items", {"code": f"k{i}", "title": f"right {i}"})
    p.L.put("items", {"key": "new", "name": "only left"})
    plan = await p.sync(dry_run=True)
    counts = plan.steps[0].counts
    assert (counts["matched"], counts["created_right"]) == (3, 1)
    assert counts["conflicts"] == 3
    assert [r["action"] for r in plan.steps[0].planned] == ["link"] * 3 + ["create"]
    run = await p.sync()
    assert +run.steps[0].counts == +plan.steps[0].counts
    assert len(await p.rows("links")) == 4


async def test_plan_of_a_first_sync_shows_a_contact_waiting_for_its_company(state_url):
    p = await make_pair(state_url, [COMPANIES, CONTACTS])
    c = p.L.put("companies", {"key": "C1", "name": "Acme"})
    p.L.put("contacts", {"email": "ann@acme.test", "first": "Ann", "company": c})
    plan = await p.sync(dry_run=True)
    assert plan.status == "ok" and plan.exit_code == 0, plan.message
    (contact,) = plan.steps[1].planned
    assert contact["action"] == "create" and contact["waits_for"] == [f"companies left {c}"]
    assert plan.steps[1].counts["errors"] == 0
    run = await p.sync()
    assert run.status == "ok" and len(p.R.data["contacts"]) == 1


async def test_plans_and_dry_runs_are_not_runs(state_url):
    p = await make_pair(state_url, [item_flow()])
    p.L.put("items", {"key": "k1", "name": "A"})
    plan = await p.sync(dry_run=True)
    assert plan.run_id is None
    assert await p.rows("runs") == [] and await p.rows("steps") == []
    assert await p.rows("staged") == [] and p.R.data["items"] == {}


# --- a write whose outcome is unknown ------------------------------------------------------
async def test_a_create_whose_answer_was_lost_is_found_again_not_made_twice(state_url):
    p = await make_pair(state_url, [item_flow()])
    for i in range(20):
        p.L.put("items", {"key": f"k{i}", "name": f"n{i}"})
    p.R.fail_writes = ["lost", None, "lost", None, None, "lost"]
    r = await p.sync()
    assert r.status == "errors" and r.steps[0].counts["errors"] == 3
    assert len(p.R.data["items"]) == 20            # all stored, three answers lost
    assert len(await p.rows("intents")) == 3
    r = await p.sync()
    assert r.steps[0].counts["recovered"] == 3 and r.steps[0].counts["created_right"] == 0
    assert len(p.R.data["items"]) == 20 and len(await p.rows("links")) == 20
    assert await p.rows("intents") == [] and await p.rows("record_errors") == []


async def test_a_lost_create_with_no_key_to_check_by_waits_for_a_person(state_url):
    p = await make_pair(state_url, [item_flow(match=[])])
    p.L.put("items", {"key": "k1", "name": "A"})
    p.R.fail_writes = ["lost"]
    await p.sync()
    r = await p.sync()
    assert r.steps[0].counts["created_right"] == 0 and len(p.R.data["items"]) == 1
    (review,) = await p.rows("reviews")
    assert "no external id or natural key" in review["reason"]


async def test_an_update_whose_answer_was_lost_is_decided_again_not_repeated(state_url):
    p = await make_pair(state_url, [item_flow()])
    lid = p.L.put("items", {"key": "k1", "name": "A"})
    await p.sync()
    p.L.edit("items", lid, {"name": "B"})
    p.R.fail_writes = ["lost"]
    r = await p.sync()
    assert r.status == "errors"
    writes = p.R.writes
    r = await p.sync()
    assert r.status == "ok" and p.R.writes == writes      # it had landed: nothing sent again
    assert list(p.R.values("items").values())[0]["title"] == "B"


# --- absent is not empty ---------------------------------------------------------------------
async def test_a_field_the_vendor_left_out_is_not_taken_for_empty(state_url):
    p = await make_pair(state_url, [item_flow(overlap_seconds=0)])
    lid = p.L.put("items", {"key": "k1", "name": "Ann", "phone": "01"})
    await p.sync()
    p.L.edit("items", lid, {"phone": "02"})
    p.L.drop_fields = {"name"}
    r = await p.sync()
    (right,) = p.R.values("items").values()
    assert right["title"] == "Ann" and right["tel"] == "02"
    p.L.drop_fields = set()
    p.L.edit("items", lid, {"phone": "03"})
    await p.sync()
    (right,) = p.R.values("items").values()
    assert right == {"code": "k1", "title": "Ann", "tel": "03"}
    assert r.status == "ok"


# --- cursors with a signpost -----------------------------------------------------------------
async def test_a_record_stamped_in_the_future_does_not_hide_later_edits(state_url):
    p = await make_pair(state_url, [item_flow(overlap_seconds=0)])
    ahead = p.L.put("items", {"key": "k1", "name": "fast clock"})
    p.L.data["items"][ahead]["modified"] = p.clock.t + timedelta(hours=1)
    await p.sync()
    (cursor,) = await p.rows("cursors", side="left")
    at = datetime.fromisoformat(orjson.loads(cursor["value"])["at"])
    assert at <= p.clock.t                          # the signpost, not the fast clock
    later = p.L.put("items", {"key": "k2", "name": "right clock"})
    r = await p.sync()
    assert r.status == "ok" and len(p.R.data["items"]) == 2, later


async def test_an_idle_run_after_a_first_sync_reads_nothing_it_wrote(state_url):
    p = await make_pair(state_url, [item_flow(overlap_seconds=60)])
    for i in range(30):
        p.L.put("items", {"key": f"k{i}", "name": f"n{i}"})
    await p.sync()
    await p.sync()                  # reads back once what the first sync created
    idle = await p.sync()
    assert idle.steps[0].counts["read_left"] == 0
    assert idle.steps[0].counts["read_right"] == 0


# --- rule changes ------------------------------------------------------------------------------
async def test_a_field_added_to_a_flow_is_back_filled_on_existing_links(state_url):
    p = await make_pair(state_url, [item_flow(fields=[dict(left="key", right="code"),
                                                      dict(left="name", right="title")])])
    for i in range(3):
        p.L.put("items", {"key": f"k{i}", "name": f"n{i}", "phone": f"0{i}"})
    await p.sync()
    assert all("tel" not in r for r in p.R.values("items").values())
    p2 = await make_pair(state_url, [item_flow()])
    p2.L, p2.R = p.L, p.R
    p2.integ.sides = {"left": p.L, "right": p.R}
    r = await p2.sync()
    assert "fields changed (added phone)" in r.steps[0].message
    assert sorted(v["tel"] for v in p.R.values("items").values()) == ["00", "01", "02"]
    again = await p2.sync()
    assert again.steps[0].message == ""


# --- gates -------------------------------------------------------------------------------------
async def test_a_system_that_is_not_the_instance_the_state_was_built_with_stops_it(state_url):
    p = await make_pair(state_url, [item_flow()])
    p.L.put("items", {"key": "k1", "name": "A"})
    await p.sync()
    p.R.instance = "memory:a-fresh-sandbox"
    writes = p.R.writes
    r = await p.sync()
    assert r.status == "waiting" and r.exit_code == 2
    assert "is not the instance" in r.message and "memory:a-fresh-sandbox" in r.message
    assert p.R.writes == writes
    (gate,) = await p.rows("gates")
    assert gate["kind"] == "instance"
    await p.set("gates", {"approved": True})
    r = await p.sync()
    assert r.status == "ok" and await p.rows("gates") == []


async def test_a_first_run_waits_with_its_plan_until_approved(state_url):
    p = await make_pair(state_url, [item_flow()])
    p.integ.confirm_first_run = True
    p.L.put("items", {"key": "k1", "name": "A"})
    r = await p.sync()
    assert r.status == "waiting" and p.R.data["items"] == {}
    (gate,) = await p.rows("gates")
    assert gate["kind"] == "first_run" and '"create"' in gate["detail"]
    again = await p.sync()
    assert again.status == "waiting" and p.R.data["items"] == {}
    await p.set("gates", {"approved": True})
    r = await p.sync()
    assert r.status == "ok" and len(p.R.data["items"]) == 1
    assert await p.rows("gates") == []
    p.L.put("items", {"key": "k2", "name": "B"})
    assert (await p.sync()).status == "ok"          # only the first run waits


async def test_deletes_are_held_counted_once_and_the_warning_only_when_held(state_url):
    p = await make_pair(state_url, [item_flow(delete=dict(to_right=dict(action="delete")),
                                              delete_threshold=0.1, delete_threshold_min=1)])
    ids = [p.L.put("items", {"key": f"k{i}", "name": "x"}) for i in range(10)]
    await p.sync()
    full = await p.sync(full=True)
    assert full.steps[0].message == "" and full.steps[0].counts["held"] == 0
    for lid in ids[:5]:
        p.L.remove("items", lid)
    r = await p.sync()
    assert r.steps[0].counts["held"] == 5 and "deletes held: 5" in r.steps[0].message
    again = await p.sync(full=True)
    assert again.steps[0].counts["held"] == 5 and len(await p.rows("held_deletes")) == 5


# --- honest reasons, crashes, quarantine -------------------------------------------------------
async def test_a_second_refusal_is_reported_after_the_first(state_url):
    p = await make_pair(state_url, [item_flow()])
    p.L.put("items", {"key": "k1", "name": "N" * 150})
    original = p.R.create
    calls = []

    async def refuse(entity, fields):
        calls.append(fields)
        if "title" in fields:
            raise RecordError("right: 'Name' must be at most 100 characters", fields=["title"])
        raise RecordError("right: The Name field is required.")
    p.R.create = refuse
    r = await p.sync()
    p.R.create = original
    (err,) = await p.rows("record_errors")
    assert err["message"].index("at most 100") < err["message"].index("is required")
    assert r.status == "errors" and len(calls) == 2


async def test_an_unexpected_exception_is_logged_once_with_its_traceback(state_url):
    p = await make_pair(state_url, [item_flow()])
    p.L.put("items", {"key": "k1", "name": "A"})
    p.R.fail_writes = ["crash"]
    with structlog.testing.capture_logs() as logs:
        r = await p.sync()
    assert r.status == "errors"
    crashed = [e for e in logs if e["event"] == "record.crashed"]
    assert len(crashed) == 1 and crashed[0]["exc_info"] is True
    assert crashed[0]["records"] == ["left:l1"]
    (err,) = await p.rows("record_errors")
    assert "RuntimeError: an unexpected bug" in err["message"]


async def test_a_record_failing_the_same_way_is_quarantined_then_retried_on_change(state_url):
    p = await make_pair(state_url, [item_flow(quarantine_after=3, overlap_seconds=0)])
    lid = p.L.put("items", {"key": "k1", "name": "A"})
    for _ in range(3):
        p.R.fail_writes = ["refuse"]
        await p.sync()
    (err,) = await p.rows("record_errors")
    assert err["quarantined"] and err["count"] == 3
    writes = p.R.writes
    r = await p.sync()
    assert p.R.writes == writes and r.steps[0].counts.get("read_left", 0) == 0
    p.L.edit("items", lid, {"name": "A fixed"})
    r = await p.sync()
    assert r.status == "ok" and len(p.R.data["items"]) == 1
    assert await p.rows("record_errors") == []


async def test_a_value_no_system_can_store_is_a_record_error_not_a_failed_run(state_url):
    p = await make_pair(state_url, [item_flow()])
    p.L.put("items", {"key": "k1", "name": "bad\x00byte"})
    p.L.put("items", {"key": "k2", "name": "fine"})
    p.L.put("items", {"key": "k3", "name": "half a pair \ud800"})
    p.L.put("items", {"key": "k4", "name": "a NUL written out: \\u0000"})    # stored as is
    r = await p.sync()
    assert r.status == "errors" and len(p.R.data["items"]) == 2
    errs = {e["record_id"]: e["message"] for e in await p.rows("record_errors")}
    assert len(errs) == 2
    assert any("NUL" in m for m in errs.values())
    assert any("not valid Unicode" in m for m in errs.values())
    assert sorted(r["fields"]["title"] for r in p.R.data["items"].values()) == [
        "a NUL written out: \\u0000", "fine"]


async def test_a_linked_record_read_back_unreadable_leaves_its_partner_alone_and_is_reported(
        state_url):
    """A record the connector could not read (Record.error) on a full sync: a record error,
    once a run though it is read twice (listed, then again by id); its partner is neither
    deleted (the complete listing did see it) nor written from fields it does not have."""
    p = await make_pair(state_url, [item_flow()])
    ids = [p.L.put("items", {"key": f"k{i}", "name": f"n{i}"}) for i in range(3)]
    assert (await p.sync()).status == "ok"
    before, writes = p.R.values("items"), p.R.writes
    links = {(r["left_id"], r["right_id"]) for r in await p.rows("links")}
    p.L.unreadable[ids[0]] = "modified is not a date: 'yesterday'"
    plan = await p.sync(full=True, dry_run=True)
    assert plan.steps[0].planned == [
        {"action": "error", "side": "left", "id": ids[0],
         "why": f"left: record {ids[0]} cannot be read: modified is not a date: 'yesterday'"}]
    for _ in range(2):                  # the second run also reads it again by id
        r = await p.sync(full=True)
        assert r.status == "errors" and r.steps[0].counts["errors"] == 1, r.steps[0].counts
        assert r.steps[0].counts["held"] == 0 and not r.message
        (err,) = await p.rows("record_errors")
        assert (err["side"], err["record_id"]) == ("left", ids[0])
        assert "modified is not a date" in err["message"]
        assert p.R.values("items") == before and p.R.writes == writes
        assert {(x["left_id"], x["right_id"]) for x in await p.rows("links")} == links
        assert {x["state"] for x in await p.rows("links")} == {"ok"}
    del p.L.unreadable[ids[0]]
    r = await p.sync(full=True)
    assert r.status == "ok" and await p.rows("record_errors") == []
    assert p.R.values("items") == before


async def test_a_conditional_write_refused_is_settled_by_the_policy_not_overwritten(state_url):
    p = await make_pair(state_url, [item_flow(conflict="left_wins")], conditional=True)
    lid = p.L.put("items", {"key": "k1", "name": "A"})
    await p.sync()
    (rid,) = p.R.data["items"]
    p.R.edit("items", rid, {"title": "B"})
    original = p.L.update

    async def edited_meanwhile(entity, id, fields, version=None):
        # a user saves the record between the engine's read and its write
        p.L.edit("items", lid, {"name": "D (a user, just now)"})
        p.L.update = original
        return await original(entity, id, fields, version=version)
    p.L.update = edited_meanwhile
    r = await p.sync()
    assert p.L.values("items")[lid]["name"] == "D (a user, just now)"
    assert r.steps[0].counts["stale"] == 1
    r = await p.sync()                # both changed: the flow's policy decides, and logs it
    assert r.status == "ok" and r.steps[0].counts["conflicts"] == 1
    assert p.L.values("items")[lid]["name"] == "D (a user, just now)"
    assert p.R.values("items")[rid]["title"] == "D (a user, just now)"
