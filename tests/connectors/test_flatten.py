"""``flatten``/``unflatten`` and ``utc``, the helpers every connector parses its rows with."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from connectors.base import flatten, unflatten, utc


def reference(obj: Mapping, prefix: str = "") -> dict:
    """The plain definition: every path is its parents' keys and its own, joined by dots."""
    out: dict = {}
    for key, value in obj.items():
        if isinstance(value, Mapping):
            out.update(reference(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


KEYS = st.text(st.characters(blacklist_characters="."), min_size=1, max_size=6)
LEAVES = st.none() | st.booleans() | st.integers() | st.text(max_size=5) \
    | st.lists(st.integers(), max_size=3)
ROWS = st.recursive(LEAVES, lambda inner: st.dictionaries(KEYS, inner, min_size=1, max_size=4),
                    max_leaves=12).filter(lambda x: isinstance(x, dict))


@given(ROWS)
def test_flatten_names_each_value_by_its_path_and_unflatten_inverts_it(row):
    flat = flatten(row)
    assert flat == reference(row)
    assert unflatten(flat) == row


def test_a_top_level_key_that_is_not_text_is_named_as_text():
    assert flatten({1: "a", "b": {2: "c"}}) == {"1": "a", "b.2": "c"}


def test_utc_keeps_a_utc_value_takes_a_naive_one_as_utc_and_converts_the_others():
    at = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
    assert utc(at) is at
    assert utc(at.replace(tzinfo=None)) == at and utc(at.replace(tzinfo=None)).tzinfo \
        is timezone.utc
    paris = at.astimezone(timezone(timedelta(hours=1)))
    assert utc(paris) == at and utc(paris).tzinfo is timezone.utc
