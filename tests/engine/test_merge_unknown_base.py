"""A field neither base knows (an answer left it out when the pair was last decided) is news,
not an edit: decided from both values as on a first link, or, when the other side's value is
unknown too, not decided at all and that side read again (the step reads it at once)."""
from __future__ import annotations

from daemon.engine.merge import compile_fields, merge
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
    assert d.unknown == {"left"}


def test_a_value_news_to_the_base_does_not_overwrite_an_unknown_one():
    d = _merge({}, {"tel": "+44 1632 960000"}, unread=frozenset({"left"}))
    assert d.empty and d.unknown == {"left"}


def test_a_side_read_without_the_field_takes_the_value_news_to_the_base():
    # a field added to a flow: the other side was read and does not have it yet (back-fill)
    d = _merge({}, {"tel": "+44 1632 960000"})
    assert d.to_left == {"Phone": "+44 1632 960000"} and d.unknown == set()


def test_both_values_known_for_the_first_time_are_decided_as_on_a_first_link():
    d = _merge({"Phone": "+64 9 555 0100"}, {"tel": ""}, policy="left_wins")
    assert d.to_right == {"tel": "+64 9 555 0100"} and d.to_left == {}
    assert d.unknown == set()
    assert [c.field for c in d.conflicts] == ["Phone"]
    assert d.why[("right", "tel")].startswith("conflict: first link")


def test_both_values_known_and_equal_write_nothing():
    d = _merge({"Phone": "+64 9 555 0100"}, {"tel": "+64 9 555 0100"})
    assert d.empty and d.conflicts == [] and d.unknown == set()


def test_a_known_base_still_detects_an_edit_to_empty():
    d = merge(FIELDS, "left_wins", {"Name": "Acme", "Phone": "1"}, {"name": "Acme", "tel": "1"},
              {"Name": "Acme", "Phone": "1"}, {"name": "Acme", "tel": ""}, ctx=Context(),
              link_key="7")
    assert d.to_left == {"Phone": ""} and d.unknown == set()
