"""Records read ahead for a chunk's updates: each serves one update, in its chunk, while it
is young (connectors/kept.py)."""
from __future__ import annotations

from connectors.kept import Kept


def test_a_kept_record_serves_one_take_while_it_is_young():
    now = [0.0]
    kept: Kept[str] = Kept(clock=lambda: now[0], max_age=5)
    kept.replace({"a": "A", "b": "B", "c": "C"})
    assert kept.take("a") == "A" and kept.take("a") is None        # once
    now[0] = 5.0
    assert kept.take("b") == "B"                                    # at the limit: still young
    now[0] = 5.5
    assert kept.take("c") is None and kept.expired == 1             # too old: read again
    assert kept.take("zzz") is None and kept.expired == 1


def test_a_new_chunk_drops_what_the_last_one_kept():
    kept: Kept[str] = Kept(clock=lambda: 0.0)
    kept.replace({"a": "old"})
    kept.replace({"b": "new"})
    assert kept.take("a") is None and kept.take("b") == "new"
    kept.replace({"c": "C"})
    kept.clear()
    assert len(kept) == 0 and kept.take("c") is None
