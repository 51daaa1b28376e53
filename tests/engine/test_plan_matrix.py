"""The record-level planner, tested purely (no I/O), row by row from the change matrix:
the record-level table (deletes and their policies, ownership, both deleted, soft deletes),
the records with no link (one candidate, several, an already linked one, none and the create
rules, filters), and the circuit-breaker's holds. ``merge.py``'s field level has its own
matrix test; here a pair's fields only need to show that the merge is reached."""
from __future__ import annotations

import orjson
import pytest

from daemon.engine.actions import (Create, Delete, DropHold, Fail, Hold, Link, Mark, Park,
                                   Recreate, Review, Skip, Tombstone, Unchanged, Unlink, Update,
                                   tally)
from daemon.engine.flow import compile_flow, value_hash
from daemon.engine.plan import Situation, plan_pair, plan_unlinked
from daemon.engine.rules import FlowRules
from daemon.engine.transforms import Context

FIELDS = [dict(left="key", right="code"), dict(left="name", right="title")]


def flow(**kw):
    rules = dict(name="items", left_entity="items", right_entity="items", fields=FIELDS,
                 match=[dict(left="key", right="code")])
    rules.update(kw)
    return compile_flow(FlowRules.model_validate(rules))


def link(f, left=None, right=None, state="ok"):
    left = left or {"key": "k1", "name": "A"}
    right = right or {"code": "k1", "title": "A"}
    return {"id": 7, "left_id": "L1", "right_id": "R1", "state": state,
            "left_base": orjson.dumps(left).decode(), "right_base": orjson.dumps(right).decode(),
            "left_hash": value_hash(f.base_paths["left"], left),
            "right_hash": value_hash(f.base_paths["right"], right),
            "left_version": None, "right_version": None}


def staged(f, side, rid, data=None, deleted=False, passes=True, pushed=False):
    data = data if data is not None else ({"key": "k1", "name": "A"} if side == "left"
                                          else {"code": "k1", "title": "A"})
    return {"record_id": rid, "side": side, "data": data, "deleted": deleted,
            "passes": passes, "pushed": pushed, "modified": None, "version": None,
            "hash": value_hash(f.base_paths[side], data)}


def pair(f, lnk, left=None, right=None, sit=None):
    return plan_pair(f, lnk, {"left": left, "right": right}, Context(), sit or Situation())


# --- record level -------------------------------------------------------------------------
def test_plan_nothing_changed_is_unchanged():
    f = flow()
    assert pair(f, link(f), staged(f, "left", "L1")) == [Unchanged((("left", "L1"),))]


def test_plan_an_edit_on_one_side_is_an_update_of_the_other():
    f = flow()
    (a,) = pair(f, link(f), staged(f, "left", "L1", {"key": "k1", "name": "B"}))
    assert isinstance(a, Update)
    assert [(w.side, w.id, w.values) for w in a.writes] == [("right", "R1", {"title": "B"})]


@pytest.mark.parametrize("action,expected", [
    ("delete", Delete), ("mark", Mark), ("unlink", Unlink), ("ignore", Tombstone)])
def test_plan_a_left_delete_follows_the_delete_policy_toward_the_right(action, expected):
    rule = {"action": action} | ({"mark": {"title": "(deleted)"}} if action == "mark" else {})
    f = flow(delete={"to_right": rule})
    (a,) = pair(f, link(f), staged(f, "left", "L1", {}, deleted=True))
    assert isinstance(a, expected)
    if expected in (Delete, Mark):
        assert a.target == "right" and a.target_id == "R1" and a.gone_id == "L1"


def test_plan_an_edit_on_the_survivor_does_not_undo_a_delete():
    f = flow(delete={"to_right": {"action": "delete"}})
    (a,) = pair(f, link(f), staged(f, "left", "L1", {}, deleted=True),
                staged(f, "right", "R1", {"code": "k1", "title": "edited"}))
    assert isinstance(a, Delete) and a.edited


def test_plan_both_deleted_drops_the_pair():
    f = flow()
    (a,) = pair(f, link(f), staged(f, "left", "L1", {}, deleted=True),
                staged(f, "right", "R1", {}, deleted=True))
    assert a == Unlink(7, {"left": "L1", "right": "R1"}, "both deleted")


def test_plan_a_delete_of_an_owned_record_is_recreated_under_revert():
    f = flow(owner="left", ownership="revert")
    (a,) = pair(f, link(f), None, staged(f, "right", "R1", {}, deleted=True))
    assert isinstance(a, Recreate) and a.target == "right" and a.fields["title"] == "A"


def test_plan_a_delete_of_an_owned_record_keeps_the_pair_tombstoned_under_ignore():
    f = flow(owner="left", ownership="ignore")
    (a,) = pair(f, link(f), None, staged(f, "right", "R1", {}, deleted=True))
    assert a == Tombstone(7, "right", "R1", "ownership")


def test_plan_a_soft_delete_cleared_is_an_undelete_synced_as_an_edit():
    f = flow()
    (a,) = pair(f, link(f, state="gone_left"),
                staged(f, "left", "L1", {"key": "k1", "name": "back"}))
    assert isinstance(a, Update) and a.state == "ok"
    assert [(w.side, w.values) for w in a.writes] == [("right", {"title": "back"})]


def test_plan_a_record_leaving_the_filter_is_unlinked_never_deleted():
    f = flow()
    (a,) = pair(f, link(f), staged(f, "left", "L1", passes=False))
    assert a == Unlink(7, {"left": "L1", "right": "R1"}, "filtered")


def test_plan_deletes_over_the_threshold_are_held_and_counted_once():
    f = flow(delete={"to_right": {"action": "delete"}})
    sit = Situation(hold_deletes=True)
    (a,) = pair(f, link(f), staged(f, "left", "L1", {}, deleted=True), sit=sit)
    assert a == Hold(7, "right", "R1", "delete", new=True)
    standing = {7: {"id": 3, "target": "right", "record_id": "R1", "action": "delete"}}
    (b,) = pair(f, link(f), staged(f, "left", "L1", {}, deleted=True),
                sit=Situation(held=standing))
    assert b == Hold(7, "right", "R1", "delete", new=False)
    from collections import Counter
    counts = Counter()
    tally(b, counts)
    assert counts == Counter(held=1)


def test_plan_a_held_delete_whose_record_is_seen_again_is_dropped():
    f = flow(delete={"to_right": {"action": "delete"}})
    standing = {7: {"id": 3, "target": "right", "record_id": "R1", "action": "delete"}}
    actions = pair(f, link(f), staged(f, "left", "L1"), sit=Situation(held=standing))
    assert actions[0] == DropHold(3, "L1") and isinstance(actions[1], Unchanged)


def test_plan_a_field_the_vendor_did_not_send_neither_flows_nor_moves_the_base():
    f = flow()
    (a,) = pair(f, link(f), staged(f, "left", "L1", {"key": "k1"}))      # no "name"
    assert isinstance(a, Update) and a.writes == ()
    assert a.current["left"]["name"] == "A"                             # kept from the base


# --- records with no link -----------------------------------------------------------------
def one(f, side="left", rid="L9", data=None, cands=(), taken=(), sit=None, pushed=False):
    rec = staged(f, side, rid, data, pushed=pushed)
    return plan_unlinked(f, side, rec, list(cands), set(taken), "mark", Context(),
                         sit or Situation())


def test_plan_exactly_one_unlinked_candidate_is_linked_and_decided_by_the_owner():
    f = flow(owner="left")
    cand = staged(flow(), "right", "R9", {"code": "k1", "title": "other"})
    a = one(f, cands=[cand])
    assert isinstance(a, Link) and a.ids == {"left": "L9", "right": "R9"}
    assert [(w.side, w.values) for w in a.writes] == [("right", {"title": "A"})]


def test_plan_several_candidates_or_a_linked_one_go_to_review_never_merged():
    f = flow()
    c1, c2 = staged(f, "right", "R1"), staged(f, "right", "R2")
    assert isinstance(one(f, cands=[c1, c2]), Review)
    a = one(f, cands=[c1], taken={"R1"})
    assert isinstance(a, Review) and a.reason == "matches a record that is already linked"


@pytest.mark.parametrize("mode,pushed,expected", [
    ("always", False, Create), ("never", False, Park), ("push", False, Park),
    ("push", True, Create)])
def test_plan_no_candidate_follows_the_create_rule(mode, pushed, expected):
    f = flow(create={"to_right": {"mode": mode}})
    assert isinstance(one(f, pushed=pushed), expected)


def test_plan_create_with_a_filter_only_when_it_holds():
    f = flow(create={"to_right": {"mode": "filter",
                                  "when": [{"field": "name", "op": "eq", "value": "A"}]}})
    assert isinstance(one(f), Create)
    assert isinstance(one(f, data={"key": "k1", "name": "B"}), Park)


def test_plan_no_copies_into_a_side_that_suddenly_lists_nothing():
    f = flow()
    sit = Situation(hold_deletes=True, listed_empty={"left": False, "right": True})
    assert one(f, sit=sit) == Skip("left", "L9", "create_held")


def test_plan_a_create_whose_reference_has_no_partner_yet_is_a_record_error():
    f = compile_flow(FlowRules.model_validate(dict(
        name="contacts", left_entity="p", right_entity="p", depends_on=["companies"],
        fields=FIELDS + [dict(left="company", right="account", ref="companies")])))
    rec = staged(f, "left", "P1", {"key": "p1", "name": "Ann", "company": "C1"})
    a = plan_unlinked(f, "left", rec, [], set(), "m", Context(), Situation())
    assert isinstance(a, Fail) and "no linked partner" in a.message


def test_plan_a_create_waits_for_a_partner_the_same_plan_creates():
    f = compile_flow(FlowRules.model_validate(dict(
        name="contacts", left_entity="p", right_entity="p", depends_on=["companies"],
        fields=FIELDS + [dict(left="company", right="account", ref="companies")])))
    rec = staged(f, "left", "P1", {"key": "p1", "name": "Ann", "company": "C1"})
    ctx = Context(planned={("companies", "left"): {"C1": "(new companies record from left C1)"}})
    a = plan_unlinked(f, "left", rec, [], set(), "m", ctx, Situation())
    assert isinstance(a, Create) and a.waits_for == ("companies left C1",)
    assert a.fields["account"] == "(new companies record from left C1)"
