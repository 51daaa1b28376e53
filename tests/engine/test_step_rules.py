"""The rule vocabulary, one behaviour per test, on two in-memory systems and a state database
(each test runs on SQLite and on PostgreSQL: the ``state_url`` fixture of tests/dbs.py)."""
from __future__ import annotations

import pytest

from connectors.memory import Crash
from daemon.store.db import loads
from tests.engine.harness import item_flow, make_pair


async def test_first_sync_matches_by_normalised_key_and_creates_the_rest(state_url):
    p = await make_pair(state_url, [item_flow(match=[dict(left="key", right="code",
                                                         normalize="vat")])])
    p.L.put("items", {"key": "BE 0123.456.789", "name": "Acme"})
    p.L.put("items", {"key": "FR111", "name": "Brie"})
    p.R.put("items", {"code": "be0123456789", "title": "Acme"})
    r = await p.sync()
    assert r.status == "ok" and r.steps[0].counts["matched"] == 1
    assert r.steps[0].counts["created_right"] == 1
    assert len(p.R.data["items"]) == 2 and len(await p.rows("links")) == 2


async def test_ambiguous_match_is_reported_never_merged(state_url):
    p = await make_pair(state_url, [item_flow()])
    p.L.put("items", {"key": "k1", "name": "A"})
    p.R.put("items", {"code": "k1", "title": "B1"})
    p.R.put("items", {"code": "K1", "title": "B2"})
    r = await p.sync()
    assert r.steps[0].counts["review"] == 3            # each of the three is shown
    assert await p.rows("links") == []
    assert len(p.R.data["items"]) == 2 and len(p.L.data["items"]) == 1
    (review,) = await p.rows("reviews", side="left")
    assert "matches 2 records" in review["reason"]


@pytest.mark.parametrize("action,left_after,link_after", [
    ("delete", 0, 0), ("unlink", 1, 0), ("ignore", 1, 1)])
async def test_delete_policy_toward_the_other_side(state_url, action, left_after, link_after):
    p = await make_pair(state_url, [item_flow(delete=dict(to_left=dict(action=action)))])
    p.L.put("items", {"key": "k1", "name": "A"})
    await p.sync()
    (rid,) = p.R.data["items"]
    p.R.remove("items", rid)
    r = await p.sync()
    assert r.status == "ok"
    assert len(p.L.data["items"]) == left_after
    assert len(await p.rows("links")) == link_after


async def test_mark_sets_the_field_and_an_undelete_syncs_as_an_edit(state_url):
    p = await make_pair(state_url, [item_flow(
        soft_delete={"left": {"obsolete": True}},
        delete=dict(to_right=dict(action="mark", mark={"deleted": True})))])
    lid = p.L.put("items", {"key": "k1", "name": "A", "obsolete": False})
    await p.sync()
    (rid,) = p.R.data["items"]
    p.L.edit("items", lid, {"obsolete": True, "name": "A (old)"})
    r = await p.sync()
    assert r.steps[0].counts["marked"] == 1
    assert p.R.values("items")[rid]["deleted"] is True
    assert p.R.values("items")[rid]["title"] == "A"      # a deleted record's edits stay put
    p.L.edit("items", lid, {"obsolete": False, "name": "A again"})
    await p.sync()
    assert p.R.values("items")[rid]["title"] == "A again"


async def test_owner_side_wins_and_other_side_edits_are_reverted(state_url):
    p = await make_pair(state_url, [item_flow(owner="left", ownership="revert")])
    p.L.put("items", {"key": "k1", "name": "A", "phone": "1"})
    await p.sync()
    (rid,) = p.R.data["items"]
    p.R.edit("items", rid, {"title": "hacked"})
    r = await p.sync()
    assert r.steps[0].counts["ownership"] == 1
    assert p.R.values("items")[rid]["title"] == "A"
    assert [v["name"] for v in p.L.values("items").values()] == ["A"]


async def test_ownership_ignore_keeps_the_edit_and_writes_nothing(state_url):
    p = await make_pair(state_url, [item_flow(owner="left", ownership="ignore")])
    p.L.put("items", {"key": "k1", "name": "A"})
    await p.sync()
    (rid,) = p.R.data["items"]
    writes = (p.L.writes, p.R.writes)
    p.R.edit("items", rid, {"title": "theirs"})
    r = await p.sync()
    assert r.steps[0].counts["ownership"] == 1
    assert (p.L.writes, p.R.writes) == writes
    assert p.R.values("items")[rid]["title"] == "theirs"


@pytest.mark.parametrize("mode,created", [("never", 0), ("always", 1)])
async def test_create_rule(state_url, mode, created):
    p = await make_pair(state_url, [item_flow(create=dict(to_left=dict(mode=mode)))])
    p.R.put("items", {"code": "k1", "title": "A"})
    r = await p.sync()
    assert len(p.L.data["items"]) == created
    assert r.steps[0].counts["not_created"] == 1 - created


async def test_create_when_a_filter_holds(state_url):
    p = await make_pair(state_url, [item_flow(create=dict(to_left=dict(
        mode="filter", when=[dict(field="type", op="eq", value="Customer")])))])
    p.R.put("items", {"code": "k1", "title": "A", "type": "Prospect"})
    p.R.put("items", {"code": "k2", "title": "B", "type": "Customer"})
    await p.sync()
    assert [v["key"] for v in p.L.values("items").values()] == ["k2"]


async def test_create_only_by_explicit_push(state_url):
    p = await make_pair(state_url, [item_flow(create=dict(to_left=dict(mode="push")))])
    rid = p.R.put("items", {"code": "k1", "title": "A"})
    p.R.put("items", {"code": "k2", "title": "B"})
    await p.sync()
    assert p.L.data["items"] == {}
    from daemon.store.db import now
    await p.insert("pushes", integration="t", flow="items", side="right", record_id=rid,
                   created_at=now())
    r = await p.sync(flows=["items"], only={"items": {"right": [rid]}}, trigger="push")
    assert r.status == "ok"
    assert [v["key"] for v in p.L.values("items").values()] == ["k1"]
    assert await p.rows("pushes") == []


async def test_filter_keeps_records_out_and_unlinks_one_that_stops_passing(state_url):
    p = await make_pair(state_url, [item_flow(
        filter={"left": [dict(field="kind", op="eq", value="customer")]})])
    a = p.L.put("items", {"key": "k1", "name": "A", "kind": "customer"})
    p.L.put("items", {"key": "k2", "name": "S", "kind": "supplier"})
    await p.sync()
    assert [v["code"] for v in p.R.values("items").values()] == ["k1"]
    p.L.edit("items", a, {"kind": "supplier"})
    r = await p.sync()
    assert r.steps[0].counts["unlinked"] == 1
    assert len(p.R.data["items"]) == 1                   # never a delete
    assert await p.rows("links") == []


async def test_exclusion_never_and_skip_once(state_url):
    from daemon.store.db import now
    p = await make_pair(state_url, [item_flow()])
    a = p.L.put("items", {"key": "k1", "name": "A"})
    b = p.L.put("items", {"key": "k2", "name": "B"})
    for rid, mode in ((a, "never"), (b, "skip_once")):
        await p.insert("exclusions", integration="t", flow="items", side="left",
                       record_id=rid, mode=mode, created_at=now())
    r = await p.sync()
    assert r.steps[0].counts["excluded"] == 2 and p.R.data["items"] == {}
    r = await p.sync()                                  # skip_once is spent: b comes
    assert [v["code"] for v in p.R.values("items").values()] == ["k2"]
    r = await p.sync()
    assert len(p.R.data["items"]) == 1                  # a stays out


async def test_batch_size_continues_in_the_next_run(state_url):
    p = await make_pair(state_url, [item_flow(batch_size=3)], page_size=2)
    for i in range(7):
        p.L.put("items", {"key": f"k{i}", "name": str(i)})
        p.clock.tick(1)
    sizes = []
    for _ in range(4):
        r = await p.sync()
        sizes.append(len(p.R.data["items"]))
        if not r.more:
            break
    assert sizes[0] < 7 and sizes[-1] == 7 and r.more is False


async def test_dry_run_decides_and_writes_nothing(state_url):
    p = await make_pair(state_url, [item_flow()])
    p.L.put("items", {"key": "k1", "name": "A"})
    r = await p.sync(dry_run=True)
    assert [x["action"] for x in r.steps[0].planned] == ["create"]
    assert p.R.data["items"] == {} and await p.rows("links") == []
    assert await p.rows("intents") == []


async def test_crash_between_create_and_link_commit_makes_no_duplicate(state_url):
    p = await make_pair(state_url, [item_flow()])
    p.L.put("items", {"key": "k1", "name": "A"})
    p.R.crash_after_create = True
    with pytest.raises(Crash):
        await p.sync()
    assert len(p.R.data["items"]) == 1 and await p.rows("links") == []
    assert len(await p.rows("intents")) == 1
    r = await p.sync()
    assert r.steps[0].counts["recovered"] == 1
    assert len(p.R.data["items"]) == 1 and len(await p.rows("links")) == 1
    assert await p.rows("intents") == []


async def test_failed_write_is_retried_next_run_without_holding_the_cursor(state_url):
    p = await make_pair(state_url, [item_flow()])
    p.L.put("items", {"key": "k1", "name": "A"})
    p.L.put("items", {"key": "k2", "name": "B"})
    p.R.fail_writes = ["refuse"]
    r = await p.sync()
    assert r.status == "errors" and r.steps[0].counts["errors"] == 1
    (err,) = await p.rows("record_errors")
    assert "refused by validation" in err["message"] and err["retry"]
    assert len(p.R.data["items"]) == 1
    r = await p.sync()
    assert r.status == "ok" and len(p.R.data["items"]) == 2
    assert await p.rows("record_errors") == []


async def test_vendor_normalisation_is_no_echo(state_url):
    p = await make_pair(state_url, [item_flow()])
    p.R.normalize = True
    p.L.put("items", {"key": "k1", "name": "  spaced  "})
    await p.sync()
    writes = (p.L.writes, p.R.writes)
    for _ in range(2):
        await p.sync()
    assert (p.L.writes, p.R.writes) == writes


async def test_circuit_breaker_holds_mass_deletes_until_approved(state_url):
    p = await make_pair(state_url, [item_flow(delete=dict(to_right=dict(action="delete")),
                                             delete_threshold=0.1, delete_threshold_min=2)])
    ids = [p.L.put("items", {"key": f"k{i}", "name": str(i)}) for i in range(10)]
    await p.sync()
    for rid in ids[:5]:
        p.L.remove("items", rid)
    r = await p.sync()
    assert "deletes held" in r.steps[0].message
    assert len(p.R.data["items"]) == 10 and len(await p.rows("held_deletes")) == 5
    await p.set("held_deletes", {"approved": True}, integration="t")
    await p.sync()
    assert len(p.R.data["items"]) == 5 and await p.rows("held_deletes") == []


async def test_audit_records_each_written_field_with_its_rule(state_url):
    """A row a write, each field it wrote in it; ``history`` lists them field by field."""
    from daemon.store import reports
    p = await make_pair(state_url, [item_flow()])
    a = p.L.put("items", {"key": "k1", "name": "A", "phone": "1"})
    await p.sync()
    p.L.edit("items", a, {"name": "B"})
    await p.sync()
    (rid,) = p.R.data["items"]
    created, updated = [loads(r["fields"]) for r in await p.rows("audit", record_id=rid)]
    assert created == [{"field": f, "old": None, "new": v, "rule": f"create from left {a}"}
                       for f, v in (("code", "k1"), ("title", "A"), ("tel", "1"))]
    assert updated == [{"field": "title", "old": "A", "new": "B", "rule": "left changed"}]
    async with p.db.connect() as conn:
        trail = await reports.history(conn, "t", rid)
    assert [(x["field"], x["old"], x["new"]) for x in trail] == [
        ("code", None, "k1"), ("title", None, "A"), ("tel", None, "1"), ("title", "A", "B")]


async def test_reference_fields_translate_through_the_parent_flow(state_url):
    flows = [item_flow(name="companies", left_entity="customers", right_entity="companies"),
             dict(name="contacts", left_entity="contacts", right_entity="people",
                  depends_on=["companies"], overlap_seconds=0,
                  fields=[dict(left="email", right="mail"),
                          dict(left="customer", right="company", ref="companies")],
                  match=[dict(left="email", right="mail", normalize="email")])]
    p = await make_pair(state_url, flows)
    c = p.L.put("customers", {"key": "k1", "name": "A"})
    p.L.put("contacts", {"email": "x@a.test", "customer": c})
    orphan = p.L.put("contacts", {"email": "y@a.test", "customer": "nope"})
    r = await p.sync()
    (rc,) = p.R.data["companies"]
    people = p.R.values("people")
    assert [v["company"] for v in people.values()] == [rc]
    (err,) = await p.rows("record_errors", flow="contacts")
    assert err["record_id"] == orphan and "no linked partner" in err["message"]
    assert r.status == "errors"


async def test_a_failed_dependency_skips_the_flow_that_needs_it(state_url):
    flows = [item_flow(name="companies", left_entity="customers", right_entity="companies"),
             dict(name="contacts", left_entity="contacts", right_entity="people",
                  depends_on=["companies"], fields=[dict(left="email", right="mail")],
                  match=[dict(left="email", right="mail")])]
    p = await make_pair(state_url, flows)
    p.L.put("customers", {"key": "k1"})
    p.R.fail_writes = ["before"] * 10
    r = await p.sync()
    assert [s.status for s in r.steps] == ["failed", "skipped"]
    assert r.steps[1].message == "skipped: companies failed"


async def test_bad_credentials_stop_the_run_with_one_clear_message(state_url):
    p = await make_pair(state_url, [item_flow()])
    p.R.auth_ok = False
    p.L.put("items", {"key": "k1"})
    r = await p.sync()
    assert r.status == "failed" and r.exit_code == 2
    assert r.message == "stopped: right system right: right: credentials refused (401: bad token)"
    # DT-3: the failed connection check is shown as a step of its own
    assert [(s.flow, s.status, s.message) for s in r.steps] == [("connect", "failed", r.message)]
    assert p.R.writes == 0


# --- record ownership by condition, transforms that look at the record, defaults from options
def _typed_flow(**overrides) -> dict:
    flow = dict(
        owner="left", owner_when=[dict(field="kind", value="client")], ownership="ignore",
        fields=[dict(left="key", right="code"), dict(left="name", right="title"),
                dict(left="kind", right="kind", direction="left_to_right"),
                dict(name="locked", left="kind", right="locked", direction="left_to_right",
                     ownership="revert", to_right=[{"map": {"client": True, "*": False}}])])
    flow.update(overrides)
    return item_flow(**flow)


async def test_owner_when_shares_records_that_do_not_meet_it_and_owns_the_others(state_url):
    p = await make_pair(state_url, [_typed_flow()])
    lid = p.L.put("items", {"key": "k1", "name": "A", "kind": "prospect"})
    await p.sync()
    (rid,) = p.R.data["items"]
    assert p.R.values("items")[rid]["locked"] is False
    p.R.edit("items", rid, {"title": "A from the right"})      # a prospect: two-way
    await p.sync()
    assert p.L.values("items")[lid]["name"] == "A from the right"
    p.L.edit("items", lid, {"kind": "client"})                   # converted on the left
    await p.sync()
    assert p.R.values("items")[rid]["locked"] is True
    assert p.R.values("items")[rid]["title"] == "A from the right"   # its data is kept
    p.R.edit("items", rid, {"title": "edited on the right"})    # now owned by the left
    r = await p.sync()
    assert r.steps[0].counts["ownership"] == 1
    assert p.L.values("items")[lid]["name"] == "A from the right"


async def test_owner_when_a_create_from_the_other_side_writes_owned_fields_back(state_url):
    p = await make_pair(state_url, [_typed_flow(
        create=dict(to_left=dict(mode="always")),
        fields=[dict(left="key", right="code"), dict(left="name", right="title"),
                dict(name="kind_at_creation", left="kind", right="kind",
                     direction="right_to_left", on_create_only=True),
                dict(name="locked", left="kind", right="locked", direction="left_to_right",
                     ownership="revert", to_right=[{"map": {"client": True, "*": False}}])])])
    rid = p.R.put("items", {"code": "k9", "title": "Made on the right", "kind": "client"})
    await p.sync()
    (lid,) = p.L.data["items"]
    assert p.L.values("items")[lid]["kind"] == "client"
    assert p.R.values("items")[rid]["locked"] is True            # written back after the create


async def test_owner_when_a_delete_of_a_shared_record_follows_the_delete_rule(state_url):
    p = await make_pair(state_url, [_typed_flow(
        ownership="revert", delete=dict(to_left=dict(action="delete")))])
    p.L.put("items", {"key": "k1", "name": "A", "kind": "prospect"})
    p.L.put("items", {"key": "k2", "name": "B", "kind": "client"})
    await p.sync()
    by_code = {v["code"]: k for k, v in p.R.values("items").items()}
    p.R.remove("items", by_code["k1"])
    p.R.remove("items", by_code["k2"])
    await p.sync()
    # the shared one follows the delete rule; the owned one is not the right's to delete
    assert sorted(v["key"] for v in p.L.values("items").values()) == ["k2"]
    assert [v["code"] for v in p.R.values("items").values()] == ["k2"]    # re-created


async def test_if_transform_looks_at_the_record_and_a_change_to_it_is_a_change(state_url):
    p = await make_pair(state_url, [item_flow(
        direction="left_to_right",
        fields=[dict(left="key", right="code"),
                dict(left="qty", right="stock",
                     to_right=[{"if": {"when": [{"field": "stocked", "value": False}],
                                       "then": "-"}}])])])
    a = p.L.put("items", {"key": "a", "qty": 5, "stocked": True})
    b = p.L.put("items", {"key": "b", "qty": 0, "stocked": False})
    await p.sync()
    stock = {v["code"]: v["stock"] for v in p.R.values("items").values()}
    assert stock == {"a": 5, "b": "-"}
    p.L.edit("items", a, {"stocked": False})        # only the field the rule looks at
    p.L.edit("items", b, {"stocked": True})
    await p.sync()
    stock = {v["code"]: v["stock"] for v in p.R.values("items").values()}
    assert stock == {"a": "-", "b": 0}


async def test_create_default_from_the_target_systems_reference_data(state_url):
    p = await make_pair(state_url, [item_flow(
        create_defaults={"right": {"owner_id": {"option": "admin"}}})])
    p.R.options_data["admin"] = "u1"
    p.L.put("items", {"key": "k1", "name": "A"})
    await p.sync()
    (rec,) = p.R.values("items").values()
    assert rec["owner_id"] == "u1"


# --- reference lists: read when a record needs them, once a run ------------------------------
def _rep_flow() -> dict:
    return item_flow(fields=[dict(left="key", right="code"), dict(
        left="rep", right="rep", direction="left_to_right",
        to_right=[{"one_of": {"option": "reps", "message": "{value} is not a rep"}}])])


def _asked(p) -> list[str]:
    """The right system lists reps Ann and Bob; the names of the lists it is asked for."""
    asked: list[str] = []
    real = p.R.options

    async def options(name):
        asked.append(name)
        return await real(name)
    p.R.options = options
    p.R.options_data["reps"] = ["Ann", "Bob"]
    return asked


async def test_reference_lists_are_read_once_by_a_run_with_records_and_not_by_an_idle_one(
        state_url):
    p = await make_pair(state_url, [_rep_flow()])
    asked = _asked(p)
    for i in range(1200):                   # three chunks: the list is still read once
        p.L.put("items", {"key": f"k{i}", "rep": "Ann" if i % 2 else "Bob"})
    r = await p.sync()
    assert asked == ["reps"]
    assert r.steps[0].counts["created_right"] == 1200
    asked.clear()
    assert (await p.sync()).status == "ok"      # reads back what the first sync wrote
    asked.clear()
    idle = await p.sync()
    assert asked == [] and idle.steps[0].counts["read_left"] == 0


async def test_a_reference_list_is_read_only_when_a_value_going_across_needs_it(state_url):
    """An edit that touches no field checked against a list reads no list; the first edit
    that does reads it, in the middle of a chunk, and the record is decided with it. A plan
    (dry run) asks the same."""
    flow = _rep_flow()
    flow["fields"].append(dict(left="name", right="title"))
    p = await make_pair(state_url, [flow])
    asked = _asked(p)
    ids = [p.L.put("items", {"key": f"k{i}", "rep": "Ann"}) for i in range(3)]
    await p.sync()
    await p.sync()
    asked.clear()
    for lid in ids:
        p.L.edit("items", lid, {"name": "edited"})                  # goes across unchecked
    p.L.put("items", {"key": "k3", "name": "new"})                  # a create, no rep to check
    r = await p.sync()
    assert r.status == "ok", r.steps[0].message
    assert r.steps[0].counts["updated_right"] == 3 and r.steps[0].counts["created_right"] == 1
    assert asked == []
    p.L.edit("items", ids[0], {"name": "again"})
    p.L.edit("items", ids[1], {"rep": "bob"})               # checked: the list is read
    p.L.edit("items", ids[2], {"rep": "Zed"})               # refused by the list
    plan = await p.sync(dry_run=True)
    assert asked == ["reps"]
    assert plan.steps[0].counts["updated_right"] == 2 and plan.steps[0].counts["errors"] == 1
    asked.clear()
    r = await p.sync()
    assert asked == ["reps"]
    assert r.steps[0].counts["updated_right"] == 2 and r.steps[0].counts["errors"] == 1
    assert sorted(str(v.get("rep")) for v in p.R.values("items").values()) == [
        "Ann", "Ann", "Bob", "None"]


async def test_a_list_a_creates_write_back_may_consult_is_read_before_the_create(state_url):
    """A one-way field owned by the right, reverted when the left contradicts it, carried
    back through a list check: after a create the write-back is decided from what the right
    stored, after the write. The list is read before the chunk's creates, so a list the left
    cannot give stops the step with nothing written, not after the record exists."""
    flow = item_flow(fields=[dict(left="key", right="code"), dict(
        left="grade", right="grade", direction="right_to_left", ownership="revert",
        to_left=[{"one_of": {"option": "grades"}}])])
    p = await make_pair(state_url, [flow])
    p.L.put("items", {"key": "k1", "grade": "A"})
    r = await p.sync()                      # the left side has no list named "grades"
    assert r.status == "failed" and p.R.writes == 0
    assert r.steps[0].message == "stopped: left system cannot list grades: 'grades'"
    p.L.options_data["grades"] = ["A", "B"]
    assert (await p.sync()).steps[0].counts["created_right"] == 1


async def test_a_reference_list_the_system_cannot_give_stops_the_step_that_needs_it(state_url):
    p = await make_pair(state_url, [_rep_flow()])
    p.L.put("items", {"key": "k1", "rep": "Ann"})
    r = await p.sync()                      # the right side has no list named "reps"
    assert r.status == "failed"
    assert r.steps[0].status == "failed"
    assert r.steps[0].message == "stopped: right system cannot list reps: 'reps'"
    assert p.R.writes == 0


async def test_a_held_delete_whose_record_is_deleted_meanwhile_carries_its_deletion_over(
        state_url):
    """A left listing suddenly empty holds the deletes toward the right. Then a right record
    is really deleted: its tombstone is not absorbed by the hold (held on, an approval would
    drop the pair and leave the left record behind, to be created on the right again the next
    time it changed). The hold goes, the deletion is carried to the left by its rule, and the
    holds of the records still there stand."""
    p = await make_pair(state_url, [item_flow(delete=dict(to_left=dict(action="delete"),
                                                          to_right=dict(action="delete")))])
    ids = [p.L.put("items", {"key": f"k{i}", "name": str(i)}) for i in range(3)]
    await p.sync()
    p.L.empty = True
    held = await p.sync(full=True)
    p.L.empty = False
    assert "deletes held" in held.steps[0].message and len(await p.rows("held_deletes")) == 3
    right = {r["fields"]["code"]: rid for rid, r in p.R.data["items"].items()}
    p.R.remove("items", right["k0"])
    plan = await p.sync(dry_run=True)
    r = await p.sync()
    assert r.steps[0].counts["deleted"] == 1 and plan.steps[0].counts["deleted"] == 1
    assert ids[0] not in p.L.data["items"] and set(p.L.data["items"]) == set(ids[1:])
    assert len(await p.rows("held_deletes")) == 2           # the other two still held
    assert {x["left_id"] for x in await p.rows("links")} == set(ids[1:])
