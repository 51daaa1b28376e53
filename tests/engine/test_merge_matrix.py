"""The field-level change matrix (CHANGE-MATRIX.md), cell by cell, against ``merge``.

Every cell of the field-level table (L unchanged/changed x R unchanged/changed, same or
different value, plus edits that clear a field) is crossed with each field direction
(including a flow-level narrowing), each ownership action and each conflict policy. The
expected decision comes from a small oracle written from CHANGE-MATRIX.md alone; it does not
call into merge.py except for ``same``'s contract (None and "" are one value), which it
re-states itself.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.engine.merge import (Conflict, Decision, Refusal, Violation, arbitrary_winner,
                                 compile_fields, create_fields, merge, same)
from daemon.engine.rules import FlowRules
from daemon.engine.transforms import Context

T1 = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)
T2 = T1 + timedelta(minutes=5)
SIDES = ("left", "right")


def _other(side: str) -> str:
    return "right" if side == "left" else "left"


def _empty_eq(a: Any, b: Any) -> bool:
    """The oracle's own 'same value': equal, or both empty (None / "")."""
    return a == b or (a in (None, "") and b in (None, ""))


def flow(fields: list[dict], **kw) -> FlowRules:
    return FlowRules.model_validate({"name": "customers", "left_entity": "Customer",
                                     "right_entity": "company", "fields": fields, **kw})


def compiled(fields: list[dict], **kw):
    return compile_fields(flow(fields, **kw))


def why_matches_writes(d: Decision) -> None:
    assert set(d.why) == ({("left", p) for p in d.to_left}
                          | {("right", p) for p in d.to_right})


# --------------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------------
# The field under test is "phone": Phone on the left, phone_number on the right (different
# paths, so a write on the wrong side shows). "code" is a bystander, unchanged on both sides.
BASE = "555-0100"

# cell id -> (left value, right value); both bases are BASE (the last sync left them equal)
CELLS: dict[str, tuple[Any, Any]] = {
    "L=,R=": (BASE, BASE),
    "Lchg,R=": ("555-0111", BASE),
    "Lclear,R=": (None, BASE),
    "L=,Rchg": (BASE, "555-0122"),
    "L=,Rclear": (BASE, ""),
    "Lchg,Rchg-same": ("555-0199", "555-0199"),
    "Lclear,Rclear-same": ("", None),                 # None and "" are one value
    "Lchg,Rchg-diff": ("555-0111", "555-0122"),
    "Lclear,Rchg-diff": (None, "555-0122"),
}

# id -> (flow direction, field direction or None)
DIRECTIONS: dict[str, tuple[str, str | None]] = {
    "both": ("both", None),
    "field-both": ("both", "both"),
    "field-l2r": ("both", "left_to_right"),
    "field-r2l": ("both", "right_to_left"),
    "flow-l2r": ("left_to_right", None),              # flow-level narrowing
    "flow-r2l+field-both": ("right_to_left", "both"),  # flow-level narrowing of a 'both' field
    "flow-l2r+field-l2r": ("left_to_right", "left_to_right"),
}

OWNERSHIPS = ("revert", "ignore")

# id -> (policy, lmod, rmod)
POLICIES: dict[str, tuple[str, datetime | None, datetime | None]] = {
    "left_wins": ("left_wins", T1, T2),
    "right_wins": ("right_wins", T2, T1),
    "newest:L-newer": ("newest_wins", T2, T1),
    "newest:R-newer": ("newest_wins", T1, T2),
    "newest:tie": ("newest_wins", T1, T1),
    "newest:no-times": ("newest_wins", None, None),
    "arbitrary": ("arbitrary", T2, T1),
}

ARBITRARY = "arbitrary"   # the oracle's winner when the matrix says "a deterministic choice"


@dataclass
class Expected:
    to_left: dict[str, Any] = field(default_factory=dict)
    to_right: dict[str, Any] = field(default_factory=dict)
    conflict: tuple[Any, Any, str] | None = None        # (left, right, winner or ARBITRARY)
    violation: tuple[str, Any, str] | None = None       # (side, value, action)


def may_flow(flow_dir: str, field_dir: str | None, source: str) -> bool:
    """'may flow L->R: the field's direction is both or left_to_right, and the flow's
    direction allows it' (and the mirror)."""
    one_way = "left_to_right" if source == "left" else "right_to_left"
    return (field_dir in (None, "both", one_way)) and flow_dir in ("both", one_way)


def oracle(cell: str, direction: str, ownership: str, policy_id: str) -> Expected:
    lv, rv = CELLS[cell]
    flow_dir, field_dir = DIRECTIONS[direction]
    policy, lmod, rmod = POLICIES[policy_id]
    flows = {"left": may_flow(flow_dir, field_dir, "left"),
             "right": may_flow(flow_dir, field_dir, "right")}
    owner = None if flows["left"] == flows["right"] else ("left" if flows["left"] else "right")
    values = {"left": lv, "right": rv}
    changed = {"left": not _empty_eq(lv, BASE), "right": not _empty_eq(rv, BASE)}
    exp = Expected()

    def send(source: str) -> None:          # the source's value across, if it differs
        target = _other(source)
        if not _empty_eq(values[source], values[target]):
            (exp.to_left if target == "left" else exp.to_right)[
                "Phone" if target == "left" else "phone_number"] = values[source]

    if not changed["left"] and not changed["right"]:
        return exp                                              # nothing
    if changed["left"] != changed["right"]:                     # one side changed
        src = "left" if changed["left"] else "right"
        if flows[src]:
            send(src)
        else:                                                   # the other side owns it
            exp.violation = (src, values[src], ownership)
            if ownership == "revert":
                send(_other(src))
        return exp
    if _empty_eq(lv, rv):                                       # both, same value
        return exp
    if owner is None:                                           # both, differ, two-way
        if policy == "left_wins":
            winner = "left"
        elif policy == "right_wins":
            winner = "right"
        elif policy == "newest_wins" and lmod and rmod and lmod != rmod:
            winner = "left" if lmod > rmod else "right"
        else:
            winner = ARBITRARY                                  # arbitrary, or a tie
        exp.conflict = (lv, rv, winner)
        if winner != ARBITRARY:
            send(winner)
        return exp
    # both, differ, one-way: the owner's value wins, the other edit is a violation
    exp.violation = (_other(owner), values[_other(owner)], ownership)
    send(owner)
    return exp


def matrix_cases():
    for cell in CELLS:
        for direction in DIRECTIONS:
            for ownership in OWNERSHIPS:
                for policy_id in POLICIES:
                    yield pytest.param(cell, direction, ownership, policy_id,
                                       id=f"{cell}|{direction}|{ownership}|{policy_id}")


MATRIX = list(matrix_cases())


def matrix_fields(direction: str, ownership: str):
    flow_dir, field_dir = DIRECTIONS[direction]
    phone = {"left": "Phone", "right": "phone_number", "name": "phone"}
    if field_dir is not None:
        phone["direction"] = field_dir
    return compiled([phone, {"left": "Code", "right": "code"}],
                    direction=flow_dir, ownership=ownership)


@pytest.mark.parametrize("cell, direction, ownership, policy_id", MATRIX)
def test_matrix(cell, direction, ownership, policy_id):
    fields = matrix_fields(direction, ownership)
    policy, lmod, rmod = POLICIES[policy_id]
    lv, rv = CELLS[cell]
    base_l, base_r = {"Phone": BASE, "Code": "C1"}, {"phone_number": BASE, "code": "C1"}
    left, right = {"Phone": lv, "Code": "C1"}, {"phone_number": rv, "code": "C1"}

    def run() -> Decision:
        return merge(fields, policy, base_l, base_r, left, right, ctx=Context(),
                     link_key="42", lmod=lmod, rmod=rmod)

    d = run()
    exp = oracle(cell, direction, ownership, policy_id)

    if exp.conflict is None:
        assert d.conflicts == []
    else:
        el, er, winner = exp.conflict
        assert len(d.conflicts) == 1
        c = d.conflicts[0]
        assert (c.field, c.left, c.right) == ("phone", el, er)
        assert c.policy.startswith(policy)
        if winner == ARBITRARY:
            assert c.winner in SIDES
            assert "arbitrary" in c.policy
            assert run().conflicts[0].winner == c.winner          # deterministic
            winner = c.winner
            src = {"left": el, "right": er}[winner]
            tgt = {"left": el, "right": er}[_other(winner)]
            if not _empty_eq(src, tgt):
                (exp.to_left if winner == "right" else exp.to_right)[
                    "Phone" if winner == "right" else "phone_number"] = src
        assert c.winner == winner

    assert d.to_left == exp.to_left
    assert d.to_right == exp.to_right
    if exp.violation is None:
        assert d.violations == []
    else:
        assert d.violations == [Violation("phone", *exp.violation)]
    assert d.refusals == []
    why_matches_writes(d)


def test_matrix_size():
    # 9 cells x 7 directions x 2 ownerships x 7 policies
    assert len(MATRIX) == 9 * 7 * 2 * 7 == 882


# --------------------------------------------------------------------------------------------
# Field-level ownership overrides the flow's
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flow_own, field_own, acted", [
    ("ignore", "revert", "revert"), ("revert", "ignore", "ignore"), ("revert", None, "revert")])
def test_field_ownership_overrides_flow(flow_own, field_own, acted):
    rule = {"left": "Rep", "right": "owner", "direction": "left_to_right"}
    if field_own:
        rule["ownership"] = field_own
    fields = compiled([rule], ownership=flow_own)
    d = merge(fields, "left_wins", {"Rep": "Ann"}, {"owner": "Ann"}, {"Rep": "Ann"},
              {"owner": "Bob"}, ctx=Context(), link_key="1")
    assert d.violations == [Violation("Rep", "right", "Bob", acted)]
    assert d.to_right == ({"owner": "Ann"} if acted == "revert" else {})
    assert d.to_left == {}


# --------------------------------------------------------------------------------------------
# Fields changed on different sides merge
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["left_wins", "right_wins", "newest_wins", "arbitrary"])
def test_changes_on_different_sides_merge(policy):
    fields = compiled([{"left": "Phone", "right": "phone"}, {"left": "Email", "right": "email"}])
    base_l = {"Phone": "1", "Email": "a@x.test"}
    base_r = {"phone": "1", "email": "a@x.test"}
    d = merge(fields, policy, base_l, base_r, {"Phone": "2", "Email": "a@x.test"},
              {"phone": "1", "email": "b@x.test"}, ctx=Context(), link_key="1",
              lmod=T1, rmod=T2)
    assert d.to_right == {"phone": "2"}
    assert d.to_left == {"Email": "b@x.test"}
    assert d.conflicts == [] and d.violations == [] and d.refusals == []
    why_matches_writes(d)


# --------------------------------------------------------------------------------------------
# arbitrary: deterministic, both outcomes occur, logged with both values
# --------------------------------------------------------------------------------------------
def _arbitrary(link_key: str, lv="North", rv="South") -> Decision:
    fields = compiled([{"left": "Region", "right": "region", "name": "region"}])
    return merge(fields, "arbitrary", {"Region": "Mid"}, {"region": "Mid"}, {"Region": lv},
                 {"region": rv}, ctx=Context(), link_key=link_key, lmod=T2, rmod=T1)


def test_arbitrary_is_deterministic_and_logged():
    winners = {}
    for key in map(str, range(64)):
        first = _arbitrary(key)
        for _ in range(3):
            again = _arbitrary(key)
            assert again.conflicts == first.conflicts
            assert (again.to_left, again.to_right) == (first.to_left, first.to_right)
        [c] = first.conflicts
        assert (c.field, c.left, c.right, c.policy) == ("region", "North", "South", "arbitrary")
        assert c.winner == arbitrary_winner(key, "region", "North", "South")
        # the write follows the logged winner, whatever lmod/rmod say
        if c.winner == "left":
            assert (first.to_left, first.to_right) == ({}, {"region": "North"})
        else:
            assert (first.to_left, first.to_right) == ({"Region": "South"}, {})
        winners[key] = c.winner
    assert set(winners.values()) == {"left", "right"}


def test_arbitrary_is_the_same_in_another_process():
    """'the same on every run': no dependence on Python's per-process hash seed."""
    keys = [str(k) for k in range(16)]
    here = [_arbitrary(k).conflicts[0].winner for k in keys]
    code = ("from tests.engine.test_merge_matrix import _arbitrary\n"
            f"print(','.join(_arbitrary(k).conflicts[0].winner for k in {keys!r}))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))), timeout=60, check=True)
    assert out.stdout.strip().split(",") == here


# --------------------------------------------------------------------------------------------
# First link (no base)
# --------------------------------------------------------------------------------------------
FIRST_FIELDS = [
    {"left": "Name", "right": "name"},                                   # two-way
    {"left": "Phone", "right": "phone"},                                 # two-way, equal
    {"left": "Notes", "right": "notes"},                                 # two-way, None vs ""
    {"left": "Terms", "right": "terms", "direction": "left_to_right"},   # left owns
    {"left": "Web", "right": "web", "direction": "right_to_left"},       # right owns
]
FIRST_L = {"Name": "Acme Ltd", "Phone": "1", "Notes": None, "Terms": "30 days", "Web": "old.test"}
FIRST_R = {"name": "ACME", "phone": "1", "notes": "", "terms": "7 days", "web": "acme.test"}


@pytest.mark.parametrize("initial", ["left", "right"])
@pytest.mark.parametrize("ownership", OWNERSHIPS)
def test_first_link_initial_side_wins(initial, ownership):
    fields = compiled(FIRST_FIELDS, ownership=ownership)
    d = merge(fields, "right_wins" if initial == "left" else "left_wins", None, None,
              FIRST_L, FIRST_R, ctx=Context(), link_key="1", initial=initial)
    if initial == "left":
        assert d.to_right == {"name": "Acme Ltd", "terms": "30 days"}
        assert d.to_left == {"Web": "acme.test"}
    else:
        assert d.to_left == {"Name": "ACME", "Web": "acme.test"}
        assert d.to_right == {"terms": "30 days"}
    assert d.violations == []          # no base: nobody edited against an owner
    assert d.refusals == []
    why_matches_writes(d)


@pytest.mark.parametrize("policy, winner", [("left_wins", "left"), ("right_wins", "right")])
def test_first_link_without_initial_uses_conflict_policy(policy, winner):
    fields = compiled(FIRST_FIELDS)
    d = merge(fields, policy, None, None, FIRST_L, FIRST_R, ctx=Context(), link_key="1")
    assert [(c.field, c.left, c.right, c.winner) for c in d.conflicts] == [
        ("Name", "Acme Ltd", "ACME", winner)]
    if winner == "left":
        assert d.to_right == {"name": "Acme Ltd", "terms": "30 days"}
        assert d.to_left == {"Web": "acme.test"}
    else:
        assert d.to_left == {"Name": "ACME", "Web": "acme.test"}
        assert d.to_right == {"terms": "30 days"}
    assert d.violations == []


@pytest.mark.parametrize("initial", ["left", "right"])
def test_initial_only_applies_to_a_first_link(initial):
    """'initial' decides a first link only; a linked pair's conflict follows the policy."""
    fields = compiled([{"left": "Name", "right": "name"}])
    d = merge(fields, "right_wins", {"Name": "A"}, {"name": "A"}, {"Name": "B"}, {"name": "C"},
              ctx=Context(), link_key="1", initial=initial)
    assert [(c.field, c.left, c.right, c.winner, c.policy) for c in d.conflicts] == [
        ("Name", "B", "C", "right", "right_wins")]
    assert d.to_left == {"Name": "C"} and d.to_right == {}


@pytest.mark.parametrize("initial", ["left", "right"])
def test_first_link_initial_decision_is_logged_as_a_conflict(initial):
    fields = compiled([{"left": "Name", "right": "name"}])
    d = merge(fields, "left_wins", None, None, {"Name": "A"}, {"name": "B"}, ctx=Context(),
              link_key="1", initial=initial)
    assert [(c.field, c.left, c.right, c.winner) for c in d.conflicts] == [
        ("Name", "A", "B", initial)]


def test_first_link_equal_values_write_nothing():
    fields = compiled(FIRST_FIELDS)
    same_l = {"Name": "Acme", "Phone": "1", "Notes": "", "Terms": "30", "Web": None}
    same_r = {"name": "Acme", "phone": "1", "notes": None, "terms": "30", "web": ""}
    for initial in (None, "left", "right"):
        d = merge(fields, "arbitrary", None, None, same_l, same_r, ctx=Context(),
                  link_key="1", initial=initial)
        assert d.empty and d.conflicts == [] and d.violations == [] and d.why == {}


# --------------------------------------------------------------------------------------------
# Record owner (SG-2): every field one-way from the owner
# --------------------------------------------------------------------------------------------
OWNED = [{"left": "Name", "right": "name"}, {"left": "Phone", "right": "phone"},
         {"left": "Email", "right": "email", "direction": "both"}]


@pytest.mark.parametrize("ownership", OWNERSHIPS)
def test_record_owner_left_makes_every_field_one_way(ownership):
    fields = compiled(OWNED, owner="left", ownership=ownership)
    assert all(f.flows_lr and not f.flows_rl and f.owner() == "left" for f in fields)
    base_l = {"Name": "Acme", "Phone": "1", "Email": "a@x.test"}
    base_r = {"name": "Acme", "phone": "1", "email": "a@x.test"}
    # L edits the name, R edits the phone, both edit the e-mail differently
    d = merge(fields, "right_wins", base_l, base_r,
              {"Name": "Acme Ltd", "Phone": "1", "Email": "l@x.test"},
              {"name": "Acme", "phone": "2", "email": "r@x.test"},
              ctx=Context(), link_key="1", lmod=T1, rmod=T2)
    assert d.conflicts == []            # the owner's value wins, no policy involved
    assert d.violations == [Violation("Phone", "right", "2", ownership),
                            Violation("Email", "right", "r@x.test", ownership)]
    expected = {"name": "Acme Ltd", "email": "l@x.test"}
    if ownership == "revert":
        expected["phone"] = "1"
    assert d.to_right == expected
    assert d.to_left == {}
    why_matches_writes(d)


def test_record_owner_right_mirror():
    fields = compiled(OWNED, owner="right", ownership="revert")
    d = merge(fields, "left_wins", {"Name": "A"}, {"name": "A"}, {"Name": "B"}, {"name": "A"},
              ctx=Context(), link_key="1")
    assert d.to_left == {"Name": "A"} and d.to_right == {}
    assert d.violations == [Violation("Name", "left", "B", "revert")]


def test_record_owner_first_link_takes_owner_values():
    fields = compiled(OWNED, owner="left")
    d = merge(fields, "right_wins", None, None, {"Name": "Acme", "Phone": None, "Email": "l@x"},
              {"name": "ACME", "phone": "", "email": "r@x"}, ctx=Context(), link_key="1",
              initial="right")
    assert d.to_right == {"name": "Acme", "email": "l@x"} and d.to_left == {}
    assert d.conflicts == [] and d.violations == []


# --------------------------------------------------------------------------------------------
# enforce (UL-11: the nightly fix)
# --------------------------------------------------------------------------------------------
ENF = [{"left": "SalesPerson", "right": "manager", "name": "name"},
       {"left": "Phone", "right": "phone"}]


@pytest.mark.parametrize("lv, rv, bl, br, write", [
    ("Ann", "Bob", "Ann", "Bob", True),     # unchanged on both, but they differ
    ("Ann", "Bob", "Ann", "Ann", True),     # R changed: R's edit is overwritten
    ("Ann", "Bob", "Cat", "Cat", True),     # both changed: no conflict, left's value
    ("Ann", "Bob", "Ann", None, True),      # R changed from empty
    ("Ann", "Ann", "Cat", "Bob", False),    # equal: nothing
    (None, "", "Ann", "Bob", False),        # equal (None and ""): nothing
    (None, "Bob", None, "Bob", True),       # left empty: empty is enforced too
], ids=["unchanged-differ", "R-changed", "both-changed", "R-from-empty", "equal",
        "equal-empty", "left-empty"])
def test_enforce_writes_left_wherever_they_differ(lv, rv, bl, br, write):
    fields = compiled(ENF)
    d = merge(fields, "right_wins", {"SalesPerson": bl, "Phone": "1"},
              {"manager": br, "phone": "1"}, {"SalesPerson": lv, "Phone": "1"},
              {"manager": rv, "phone": "1"}, ctx=Context(), link_key="1",
              lmod=T1, rmod=T2, enforce={"name": "left"})
    assert d.to_right == ({"manager": lv} if write else {})
    assert d.to_left == {}
    assert d.conflicts == []
    why_matches_writes(d)


def test_enforce_leaves_other_fields_to_the_matrix():
    fields = compiled(ENF)
    d = merge(fields, "right_wins", {"SalesPerson": "Ann", "Phone": "1"},
              {"manager": "Ann", "phone": "1"}, {"SalesPerson": "Ann", "Phone": "1"},
              {"manager": "Bob", "phone": "2"}, ctx=Context(), link_key="1",
              enforce={"name": "left"})
    assert d.to_right == {"manager": "Ann"}
    assert d.to_left == {"Phone": "2"}


def test_enforce_applies_on_first_link_and_the_transforms():
    fields = compiled([{"left": "SalesPerson", "right": "manager", "name": "name",
                        "to_right": ["upper"]}])
    d = merge(fields, "right_wins", None, None, {"SalesPerson": "ann"}, {"manager": "Bob"},
              ctx=Context(), link_key="1", initial="right", enforce={"name": "left"})
    assert d.to_right == {"manager": "ANN"} and d.to_left == {} and d.conflicts == []


# --------------------------------------------------------------------------------------------
# Transforms on the way across; per-field refusals (UL-7)
# --------------------------------------------------------------------------------------------
REP_OPTION = {"one_of": {"option": "salespersons", "message": "{value} is not a salesperson"}}
TX = [{"left": "Name", "right": "name", "to_right": [{"truncate": 5}]},
      {"left": "Rep", "right": "rep", "to_right": [REP_OPTION], "to_left": ["strip"]},
      {"left": "Phone", "right": "phone"}]
TX_CTX = Context(options={"salespersons": ["Ann", "Bob"]})


def _tx(lv: dict, rv: dict, base_l=None, base_r=None):
    base_l = base_l or {"Name": "Acme", "Rep": "Ann", "Phone": "1"}
    base_r = base_r or {"name": "Acme", "rep": "Ann", "phone": "1"}
    return merge(compiled(TX), "left_wins", base_l, base_r, {**base_l, **lv}, {**base_r, **rv},
                 ctx=TX_CTX, link_key="1")


def test_transform_applies_on_the_way_across():
    d = _tx({"Name": "Acme Industries"}, {})
    assert d.to_right == {"name": "Acme "}
    # read back: the right side stored the truncated value; the next run sees no change
    d2 = _tx({}, {}, base_l={"Name": "Acme Industries", "Rep": "Ann", "Phone": "1"},
             base_r={"name": "Acme ", "rep": "Ann", "phone": "1"})
    assert d2.empty and d2.conflicts == []


def test_transform_agreement_is_not_a_conflict():
    # both changed; the left value, carried across, is the right value: same value, no conflict
    d = _tx({"Name": "Acme Industries"}, {"name": "Acme "})
    assert d.empty and d.conflicts == []


@pytest.mark.parametrize("policy", ["left_wins", "right_wins"])
def test_transform_agreement_right_to_left_is_not_a_conflict(policy):
    fields = compiled([{"left": "Rep", "right": "rep", "to_left": ["strip"]}])
    d = merge(fields, policy, {"Rep": "Ann"}, {"rep": "Ann"}, {"Rep": "Bob"}, {"rep": "Bob "},
              ctx=Context(), link_key="1")
    assert d.conflicts == []
    assert d.empty


def test_transform_other_direction():
    d = _tx({}, {"rep": "  Bob  "})
    assert d.to_left == {"Rep": "Bob"} and d.to_right == {}


def test_one_of_canonicalises_case():
    d = _tx({"Rep": "bob"}, {})
    assert d.to_right == {"rep": "Bob"} and d.refusals == []


def test_refused_value_is_a_per_field_error_and_the_rest_goes():
    d = _tx({"Rep": "Zed", "Phone": "2", "Name": "Acme Ltd"}, {})
    assert d.refusals == [Refusal("Rep", "right", "Zed is not a salesperson")]
    assert d.to_right == {"phone": "2", "name": "Acme "}
    assert ("right", "rep") not in d.why
    assert d.to_left == {}


def test_refused_conflict_winner_is_a_refusal_too():
    d = _tx({"Rep": "Zed", "Phone": "3"}, {"rep": "Bob"})
    assert [(c.field, c.left, c.right, c.winner) for c in d.conflicts] == [
        ("Rep", "Zed", "Bob", "left")]
    assert d.refusals == [Refusal("Rep", "right", "Zed is not a salesperson")]
    assert d.to_right == {"phone": "3"}


# --------------------------------------------------------------------------------------------
# None and "" are one value
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bl, lv, br, rv", [
    ("", None, "x", "x"),       # L: "" -> None is no change
    (None, "", None, None),
    ("x", "x", None, ""),       # R: None -> "" is no change
    ("", None, None, ""),       # both sides, both ways
])
@pytest.mark.parametrize("direction", ["both", "left_to_right", "right_to_left"])
@pytest.mark.parametrize("ownership", OWNERSHIPS)
def test_none_and_empty_string_are_no_change(bl, lv, br, rv, direction, ownership):
    fields = compiled([{"left": "Fax", "right": "fax", "direction": direction}],
                      ownership=ownership)
    d = merge(fields, "arbitrary", {"Fax": bl}, {"fax": br}, {"Fax": lv}, {"fax": rv},
              ctx=Context(), link_key="1")
    assert d.empty and d.conflicts == [] and d.violations == [] and d.why == {}


def test_cleared_field_is_not_written_over_an_empty_one():
    # L cleared the field ("x" -> ""); R already holds None: same value, nothing to write
    fields = compiled([{"left": "Fax", "right": "fax"}])
    d = merge(fields, "left_wins", {"Fax": "x"}, {"fax": None}, {"Fax": ""}, {"fax": None},
              ctx=Context(), link_key="1")
    assert d.empty


def test_missing_key_is_empty():
    fields = compiled([{"left": "Fax", "right": "fax"}])
    d = merge(fields, "left_wins", {"Fax": ""}, {}, {}, {"fax": ""}, ctx=Context(),
              link_key="1")
    assert d.empty


# --------------------------------------------------------------------------------------------
# on_create_only and create_fields
# --------------------------------------------------------------------------------------------
CREATE = [
    {"left": "Code", "right": "code", "on_create_only": True},
    {"left": "Name", "right": "name", "to_right": [{"truncate": 5}]},
    {"left": "Terms", "right": "terms", "direction": "left_to_right"},
    {"left": "Web", "right": "web", "direction": "right_to_left"},
    {"left": "Rep", "right": "rep", "to_right": [REP_OPTION]},
    {"left": "Fax", "right": "fax"},
]


def test_on_create_only_never_written_by_merge():
    fields = compiled(CREATE)
    ctx = TX_CTX
    # changed on one side, on both, on a first link, and enforced: never written
    for base_l, base_r in ((({"Code": "A"}), {"code": "A"}), (None, None)):
        for lv, rv in (("B", "A"), ("A", "B"), ("B", "C")):
            for enforce in (None, {"Code": "left"}):
                d = merge(fields, "left_wins", base_l, base_r, {"Code": lv}, {"code": rv},
                          ctx=ctx, link_key="1", initial="left", enforce=enforce)
                assert "code" not in d.to_right and "Code" not in d.to_left
                assert not [x for x in d.conflicts + d.violations if x.field == "Code"]


def test_create_fields_left_to_right():
    fields = compiled(CREATE)
    out, refused = create_fields(fields, "left", {
        "Code": "C-1", "Name": "Acme Industries", "Terms": "30", "Web": "acme.test",
        "Rep": "Zed", "Fax": ""}, TX_CTX)
    # on_create_only written; transform applied; Web (right's) skipped; empty Fax skipped
    assert out == {"code": "C-1", "name": "Acme ", "terms": "30"}
    assert refused == [Refusal("Rep", "right", "Zed is not a salesperson")]


def test_create_fields_right_to_left():
    fields = compiled(CREATE)
    out, refused = create_fields(fields, "right", {
        "code": "C-2", "name": "Acme Industries", "terms": "7", "web": "acme.test",
        "rep": None, "fax": "9"}, TX_CTX)
    assert out == {"Code": "C-2", "Name": "Acme Industries", "Web": "acme.test", "Fax": "9"}
    assert refused == []


def test_create_fields_respects_record_owner():
    fields = compiled(CREATE[:2], owner="left")
    assert create_fields(fields, "right", {"code": "X", "name": "Y"}, Context()) == ({}, [])
    assert create_fields(fields, "left", {"Code": "X", "Name": "Y"}, Context()) == (
        {"code": "X", "name": "Y"}, [])


# --------------------------------------------------------------------------------------------
# Property: converge and idempotence on a two-way flow
# --------------------------------------------------------------------------------------------
PROP_NAMES = ["a", "b", "c", "d"]
PROP_FIELDS = compiled([{"left": n.upper(), "right": n} for n in PROP_NAMES])
value = st.sampled_from([None, "", "x", "y", "z", "X"])
mod = st.sampled_from([None, T1, T2])


@st.composite
def scenario(draw):
    first = draw(st.booleans())
    base = None if first else {n: draw(value) for n in PROP_NAMES}
    left, right = {}, {}
    for n in PROP_NAMES:
        keep_l, keep_r = (False, False) if first else (draw(st.booleans()), draw(st.booleans()))
        left[n.upper()] = base[n] if keep_l else draw(value)
        right[n] = base[n] if keep_r else draw(value)
    return dict(
        base=base, left=left, right=right,
        policy=draw(st.sampled_from(["left_wins", "right_wins", "newest_wins", "arbitrary"])),
        lmod=draw(mod), rmod=draw(mod), link_key=draw(st.sampled_from(["1", "2", "x-9"])),
        initial=draw(st.sampled_from([None, "left", "right"])) if first else None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_property_converges_and_is_idempotent(s):
    base = s["base"]
    base_l = None if base is None else {n.upper(): v for n, v in base.items()}
    base_r = None if base is None else dict(base)
    kw = dict(ctx=Context(), link_key=s["link_key"], lmod=s["lmod"], rmod=s["rmod"])
    d = merge(PROP_FIELDS, s["policy"], base_l, base_r, s["left"], s["right"],
              initial=s["initial"], **kw)
    new_l = {**s["left"], **d.to_left}
    new_r = {**s["right"], **d.to_right}
    for n in PROP_NAMES:
        assert _empty_eq(new_l[n.upper()], new_r[n]), n
    # every write changes something, and no field is written on both sides
    for p, v in d.to_left.items():
        assert not _empty_eq(v, s["left"][p])
        assert p.lower() not in d.to_right
    for p, v in d.to_right.items():
        assert not _empty_eq(v, s["right"][p])
    # conflicts only where both changed to different values
    for c in d.conflicts:
        assert not _empty_eq(c.left, c.right)
    again = merge(PROP_FIELDS, s["policy"], new_l, new_r, new_l, new_r, **kw)
    assert again.empty and again.conflicts == [] and again.violations == []
