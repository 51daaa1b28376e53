"""A field neither base knows (an answer left it out when the pair was last decided) is news,
not an edit: decided from both values as on a first link, or, when the other side was not
read, not decided at all (``news_to_both`` tells the step to read that side first)."""
from __future__ import annotations

from daemon.engine.merge import compile_fields, merge, news_to_both
from daemon.engine.rules import FlowRules
from daemon.engine.transforms import Context

FIELDS = compile_fields(FlowRules.model_validate({
    "name": "customers", "left_entity": "Customer", "right_entity": "company",
    "fields": [{"left": "Name", "right": "name"}, {"left": "Phone", "right": "tel"}]}))
BASE_L, BASE_R = {"Name": "Acme"}, {"name": "Acme"}      # the phone was left out of both


def _merge(left: dict, right: dict, policy: str = "left_wins", unread=frozenset()):
    return merge(FIELDS, policy, BASE_L, BASE_R, {**BASE_L, **left}, {**BASE_R, **right},
                 ctx=Context(), link_key="7", unread=unread)


def test_an_empty_value_news_to_the_base_is_not_taken_for_an_edit_when_the_other_is_unknown():
    # the CRM now sends an empty phone; Unleashed was not read again: nothing can be decided
    d = _merge({}, {"tel": ""}, unread=frozenset({"left"}))
    assert d.empty and d.conflicts == []


def test_a_value_news_to_the_base_does_not_overwrite_an_unknown_one():
    d = _merge({}, {"tel": "+44 1632 960000"}, unread=frozenset({"left"}))
    assert d.empty


def test_a_side_read_without_the_field_takes_the_value_news_to_the_base():
    # a field added to a flow: the other side was read and does not have it yet (back-fill)
    d = _merge({}, {"tel": "+44 1632 960000"})
    assert d.to_left == {"Phone": "+44 1632 960000"}


def test_both_values_known_for_the_first_time_are_decided_as_on_a_first_link():
    d = _merge({"Phone": "+64 9 555 0100"}, {"tel": ""}, policy="left_wins")
    assert d.to_right == {"tel": "+64 9 555 0100"} and d.to_left == {}
    assert [c.field for c in d.conflicts] == ["Phone"]
    assert d.why[("right", "tel")].startswith("conflict: first link")
    assert d.conflicts[0].winner == "left"


def test_news_never_blanks_a_value_whatever_the_policy():
    d = _merge({"Phone": "+64 9 555 0100"}, {"tel": ""}, policy="right_wins")
    assert d.to_right == {"tel": "+64 9 555 0100"} and d.to_left == {}
    d = _merge({"Phone": None}, {"tel": "+44 1632 960000"}, policy="left_wins")
    assert d.to_left == {"Phone": "+44 1632 960000"} and d.to_right == {}


def test_two_values_news_to_both_bases_are_decided_by_the_policy():
    d = _merge({"Phone": "+64 9 555 0100"}, {"tel": "+44 1632 960000"}, policy="right_wins")
    assert d.to_left == {"Phone": "+44 1632 960000"} and d.to_right == {}


def test_both_values_known_and_equal_write_nothing():
    d = _merge({"Phone": "+64 9 555 0100"}, {"tel": "+64 9 555 0100"})
    assert d.empty and d.conflicts == []


def test_a_known_base_still_detects_an_edit_to_empty():
    d = merge(FIELDS, "left_wins", {"Name": "Acme", "Phone": "1"}, {"name": "Acme", "tel": "1"},
              {"Name": "Acme", "Phone": "1"}, {"name": "Acme", "tel": ""}, ctx=Context(),
              link_key="7")
    assert d.to_left == {"Phone": ""}


def test_news_to_both_asks_for_the_other_side_only_when_neither_base_knows_the_field():
    assert news_to_both(FIELDS, "right", {"name": "Acme", "tel": ""}, BASE_R, BASE_L)
    assert not news_to_both(FIELDS, "right", {"name": "Acme"}, BASE_R, BASE_L)       # not sent
    assert not news_to_both(FIELDS, "right", {"tel": ""}, {"tel": None}, BASE_L)     # known here
    assert not news_to_both(FIELDS, "right", {"tel": ""}, BASE_R, {"Phone": "1"})    # known there
