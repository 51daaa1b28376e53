"""A side that reads a record before updating it is told, once a chunk, which of its records
the chunk updates (``ReadsBeforeUpdate.will_update``), so it can read them together; what it
does with that is its own affair, and its failure never stops the writes."""
from __future__ import annotations

from connectors.base import ReadsBeforeUpdate
from connectors.memory import MemoryConnector
from tests.engine.harness import item_flow, make_pair


class Told(MemoryConnector):
    def __init__(self, *a, fail: Exception | None = None, **kw) -> None:
        super().__init__(*a, **kw)
        self.told: list[tuple[str, list[str]]] = []
        self.fields: dict[str, set[str]] = {}
        self.fail = fail

    async def will_update(self, entity, updates) -> None:
        self.told.append((entity, sorted(updates)))
        self.fields.update({i: set(f) for i, f in updates.items()})
        if self.fail:
            raise self.fail


async def _pair(state_url, fail=None, **flow):
    p = await make_pair(state_url, [item_flow(**flow)])
    assert not isinstance(p.L, ReadsBeforeUpdate)      # the memory connector needs none
    p.L, p.R = (Told(n, p.L.settings, clock=p.clock, fail=fail) for n in ("left", "right"))
    assert isinstance(p.L, ReadsBeforeUpdate)
    p.integ.sides.update(left=p.L, right=p.R)
    return p


async def test_each_side_is_told_which_of_its_records_the_chunk_updates(state_url):
    p = await _pair(state_url)
    left = [p.L.put("items", {"key": f"k{i}", "name": f"A{i}"}) for i in range(4)]
    await p.sync()                                     # creates: no update anywhere
    assert all(ids == [] for _, ids in p.R.told + p.L.told)
    by_key = {v["code"]: rid for rid, v in p.R.values("items").items()}
    for i in (0, 2):
        p.L.edit("items", left[i], {"name": f"B{i}"})
    p.R.edit("items", by_key["k3"], {"title": "C3"})
    p.L.told.clear()
    p.R.told.clear()
    await p.sync()
    # told once a chunk, even of none (so nothing read for an earlier chunk is kept)
    assert [t for t in p.R.told if t[1]] == [("items", sorted([by_key["k0"], by_key["k2"]]))]
    assert [t for t in p.L.told if t[1]] == [("items", [left[3]])]
    assert p.R.fields[by_key["k0"]] == {"title"} and p.L.fields[left[3]] == {"name"}
    assert p.R.values("items")[by_key["k2"]]["title"] == "B2"
    assert p.L.values("items")[left[3]]["name"] == "C3"


async def test_a_failing_will_update_stops_no_update(state_url):
    p = await _pair(state_url, fail=RuntimeError("listing broke"))
    rid = p.L.put("items", {"key": "k1", "name": "A"})
    await p.sync()
    p.L.edit("items", rid, {"name": "B"})
    result = await p.sync()
    assert result.status == "ok", result.message
    (other,) = p.R.values("items").values()
    assert other["title"] == "B"
