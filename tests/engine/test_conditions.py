"""Conditions with more reach, tested purely: ``any_of``, a field that flows from a side only
for records meeting its condition, a side whose records flow only when they meet conditions
(while still matching), requirements reported for review, and an excluded partner that stops
a create."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from daemon.engine.actions import Create, Link, Park, Review, Skip, Update
from daemon.engine.flow import compile_flow
from daemon.engine.plan import Situation, plan_pair, plan_unlinked
from daemon.engine.rules import Condition, FlowRules, holds
from daemon.engine.transforms import Context
from tests.engine.test_plan_matrix import link, staged

FIELDS = [dict(left="key", right="code"), dict(left="name", right="title"),
          dict(left="sector", right="branch", when={"left": [{"field": "kind", "value": "A"}]})]


def flow(**kw):
    rules = dict(name="items", left_entity="items", right_entity="items", fields=FIELDS,
                 match=[dict(left="key", right="code")], initial="left")
    rules.update(kw)
    return compile_flow(FlowRules.model_validate(rules))


def test_any_of_holds_when_one_of_its_conditions_does():
    c = [Condition(any_of=[Condition(field="a", value=1), Condition(field="b", op="truthy")])]
    assert holds(c, {"a": 1}) and holds(c, {"b": "x"}) and not holds(c, {"a": 2, "b": ""})


def test_a_condition_names_a_field_or_any_of_not_both():
    with pytest.raises(ValidationError):
        Condition(field="a", any_of=[Condition(field="b")])
    with pytest.raises(ValidationError):
        Condition()


def test_a_conditional_field_flows_only_from_records_that_meet_it():
    f = flow()
    lnk = link(f, {"key": "k1", "name": "A", "sector": "s1", "kind": "A"},
               {"code": "k1", "title": "A", "branch": "s1"})
    (a,) = plan_pair(f, lnk, {"left": staged(f, "left", "L1", {"key": "k1", "name": "A",
                                                                  "sector": "s2", "kind": "A"}),
                              "right": None}, Context(), Situation())
    assert isinstance(a, Update) and a.writes[0].values == {"branch": "s2"}
    (a,) = plan_pair(f, lnk, {"left": staged(f, "left", "L1", {"key": "k1", "name": "A",
                                                                  "sector": "s2", "kind": "B"}),
                              "right": None}, Context(), Situation())
    assert not (isinstance(a, Update) and a.writes)


def test_the_condition_fields_are_read_and_kept_with_the_base():
    f = flow(flows_when={"right": [{"field": "sync", "op": "truthy"}]})
    assert "kind" in f.read_paths["left"] and "kind" in f.base_paths["left"]
    assert "sync" in f.read_paths["right"] and "sync" in f.base_paths["right"]


def test_a_side_flows_only_for_records_meeting_flows_when_but_still_matches():
    f = flow(flows_when={"right": [{"field": "sync", "op": "truthy"}]})
    right = staged(f, "right", "R1", {"code": "k1", "title": "CRM name", "sync": None})
    # no create toward the left for a record that does not meet it
    assert isinstance(plan_unlinked(f, "right", right, [], set(), "m", Context(), Situation()),
                      Park)
    ticked = staged(f, "right", "R2", {"code": "k2", "title": "T", "sync": "Y"})
    assert isinstance(plan_unlinked(f, "right", ticked, [], set(), "m", Context(),
                                    Situation()), Create)
    # it still links with the left record of the same key, and only left values flow
    left = staged(f, "left", "L1", {"key": "k1", "name": "BOB name"})
    a = plan_unlinked(f, "left", left, [right], set(), "m", Context(), Situation())
    assert isinstance(a, Link)
    assert [(w.side, w.values) for w in a.writes] == [("right", {"title": "BOB name"})]
    lnk = link(f, {"key": "k1", "name": "A"}, {"code": "k1", "title": "A", "sync": None})
    edited = staged(f, "right", "R1", {"code": "k1", "title": "B", "sync": None})
    (u,) = plan_pair(f, lnk, {"left": None, "right": edited}, Context(), Situation())
    assert not (isinstance(u, Update) and u.writes)
    edited = staged(f, "right", "R1", {"code": "k1", "title": "B", "sync": "Y"})
    (u,) = plan_pair(f, lnk, {"left": None, "right": edited}, Context(), Situation())
    assert isinstance(u, Update) and u.writes[0].values == {"name": "B"}


def test_a_record_that_does_not_meet_a_requirement_is_reported_for_review():
    f = flow(require=[{"side": "left", "when": [{"field": "vat", "op": "truthy"}],
                       "message": "no VAT number: not synchronised"}])
    rec = staged(f, "left", "L1", {"key": "k1", "name": "A", "vat": ""})
    cand = staged(f, "right", "R1")
    a = plan_unlinked(f, "left", rec, [cand], set(), "m", Context(), Situation())
    assert isinstance(a, Review) and a.reason == "no VAT number: not synchronised"
    assert a.mark == "m"


def test_an_excluded_partner_stops_the_create_that_would_duplicate_it():
    f = flow()
    rec = staged(f, "right", "R1")
    a = plan_unlinked(f, "right", rec, [], set(), "m", Context(), Situation(),
                      partner_excluded=True)
    assert a == Skip("right", "R1", "partner_excluded")
