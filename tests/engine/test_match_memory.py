"""Matching on a first sync keeps no growing set of the partners it linked: once a chunk's
links are committed, the links table answers for them. A dry run, which commits no link,
still remembers them, so its plan links each partner once and creates none of them."""
from __future__ import annotations

from daemon.engine import step as step_module
from tests.engine.harness import item_flow, make_pair

N = 1_200                       # more than two chunks of 500


def _watch_steps(monkeypatch) -> list:
    made: list = []

    class Watched(step_module._Step):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(step_module, "_Step", Watched)
    return made


async def _pair(state_url):
    p = await make_pair(state_url, [item_flow()])
    for i in range(N):
        p.L.put("items", {"key": f"k{i}", "name": f"left {i}"})
        p.R.put("items", {"code": f"K{i}", "title": f"left {i}"})
    return p


async def test_a_matched_first_sync_keeps_no_set_of_its_partners(state_url, monkeypatch):
    p = await _pair(state_url)
    steps = _watch_steps(monkeypatch)
    r = await p.sync()
    counts = r.steps[0].counts
    assert r.status == "ok" and counts["matched"] == N, counts
    assert counts["created_left"] == counts["created_right"] == 0
    assert len(await p.rows("links")) == N
    assert steps and all(not s.claimed["left"] and not s.claimed["right"] for s in steps)


async def test_a_dry_run_still_links_each_partner_once_and_creates_none(state_url,
                                                                        monkeypatch):
    p = await _pair(state_url)
    steps = _watch_steps(monkeypatch)
    r = await p.sync(dry_run=True)
    counts = r.steps[0].counts
    assert counts["matched"] == N and counts["created_left"] == 0, counts
    assert len(steps[0].claimed["right"]) == N          # nothing committed: remembered
    assert await p.rows("links") == []
