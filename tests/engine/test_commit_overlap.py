"""A chunk's commit goes into the store while the next chunk of unlinked records is read and
decided (step._Step._unlinked). Until its links are in, the partners they name are claimed:
a later record that matches one of them is reviewed, as it is when the links are committed
first, never linked to a record another one was just linked to or created as."""
from __future__ import annotations

import asyncio

import pytest

from daemon.engine import match, step
from daemon.engine.chunk import UnitOfWork
from tests.engine.harness import item_flow, make_pair


def _hold_first_commit(monkeypatch) -> list[str]:
    """The first chunk's commit waits until the second chunk's candidates were looked up:
    the second chunk is decided before the first one's links are in, every time."""
    events: list[str] = []
    looked = asyncio.Event()
    real_commit, real_candidates = UnitOfWork.commit, match.candidates

    async def commit(self) -> None:
        if not events.count("commit"):
            events.append("commit held")
            await looked.wait()
        await real_commit(self)
        events.append("commit")

    async def candidates(*args, **kw):
        got = await real_candidates(*args, **kw)
        events.append("candidates")
        if events.count("candidates") == 2:
            looked.set()
        return got
    monkeypatch.setattr(UnitOfWork, "commit", commit)
    monkeypatch.setattr(match, "candidates", candidates)
    monkeypatch.setattr(step, "CHUNK", 2)
    return events


@pytest.mark.parametrize("found", ["created", "linked"])
async def test_a_partner_named_by_a_chunk_whose_commit_is_on_its_way_is_taken(
        state_url, monkeypatch, found):
    """Two keys: the later record matches the partner by its second key only, so the
    partner's own look-up back finds one record and the match is not ambiguous; only the
    partner being taken makes it a review. ``created``: the other side lists nothing, so
    each chunk asks it (``find``) and finds the record the chunk before created; ``linked``:
    the partner is listed, and the chunk before linked it."""
    flow = item_flow(match=[dict(left="key", right="code"), dict(left="phone", right="tel")])
    p = await make_pair(state_url, [flow], page_size=500)
    if found == "linked":
        partner = p.R.put("items", {"code": "k", "title": "there", "tel": "555"})
        p.R.put("items", {"code": "other", "title": "keeps the listing whole"})
    first = p.L.put("items", {"key": "k", "name": "first", "phone": "555"})
    p.L.put("items", {"key": "x", "name": "x"})
    twin = p.L.put("items", {"key": "j", "name": "another key, the same phone",
                             "phone": "555"})
    events = _hold_first_commit(monkeypatch)
    r = await p.sync()
    c = r.steps[0].counts
    # the second chunk was decided while the first one's commit waited
    assert events[:4] == ["candidates", "commit held", "candidates", "commit"], events
    assert r.status == "ok" and c["review"] == 1
    assert [x["record_id"] for x in await p.rows("reviews")] == [twin]
    links = await p.rows("links")
    k_side = [x["right_id"] for x in links if x["left_id"] == first]
    assert len(k_side) == 1 and not [x for x in links if x["left_id"] == twin]
    assert sorted(v["fields"]["code"] for v in p.R.data["items"].values()) == (
        ["k", "other", "x"] if found == "linked" else ["k", "x"])
    if found == "linked":
        assert k_side == [partner]


async def test_the_last_commit_of_a_side_is_in_before_the_other_side_is_decided(
        state_url, monkeypatch):
    """Each side's unlinked pass ends with its commit in: the right side's records the
    left side's creates linked are not decided again."""
    p = await make_pair(state_url, [item_flow()], page_size=500)
    for i in range(5):
        p.L.put("items", {"key": f"k{i}", "name": f"n{i}"})
    monkeypatch.setattr(step, "CHUNK", 2)
    r = await p.sync()
    assert r.steps[0].counts["created_right"] == 5
    again = await p.sync()
    assert again.steps[0].counts.get("created_left", 0) == 0
    assert len(await p.rows("links")) == 5 and len(p.L.data["items"]) == 5


async def test_a_fault_that_stops_the_step_comes_after_the_chunks_other_writes(state_url):
    """The chunk's writers go on past a write the system was unavailable for; the step
    stops after them with that fault, and what they wrote is linked: the next run creates
    only the one that failed."""
    p = await make_pair(state_url, [item_flow()], page_size=500)
    for i in range(6):
        p.L.put("items", {"key": f"k{i}", "name": f"n{i}"})
    p.R.fail_writes = [None, "before"]
    r = await p.sync()
    assert r.status == "failed" and "503 before the write" in r.steps[0].message
    assert len(p.R.data["items"]) == 5 and len(await p.rows("links")) == 5
    again = await p.sync()
    assert again.status == "ok" and again.steps[0].counts["created_right"] == 1
    assert sorted(v["fields"]["code"] for v in p.R.data["items"].values()) == [
        f"k{i}" for i in range(6)]
