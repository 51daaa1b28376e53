"""A listing's pages go into the store behind the reading (stage.Staging.page, ``behind``):
the next page is read and parsed while the previous one is stored, in order, one page per
side at most; a page the store refuses stops the step, and a side whose reading fails lets
its page on the way in go. The linked pass reads its next chunk while it decides the current
one, and decides every pair once."""
from __future__ import annotations

import asyncio

import pytest

from daemon.store import queries as q
from tests.engine.harness import item_flow, make_pair


def _logged(monkeypatch, log: list[str], hold_first: int = 0, fail_at: int | None = None):
    """q.stage wrapped: each page's store logged when it starts and ends; the first store
    lets the event loop turn ``hold_first`` times before it goes on (the store being slow);
    the store of page ``fail_at`` fails."""
    real = q.stage
    count = {"n": 0}

    async def stage(conn, rows, keys, replace=None):
        count["n"] += 1
        n = count["n"]
        log.append(f"store {n} {rows[0]['side'] if rows else '-'}")
        if n == 1:
            for _ in range(hold_first):
                await asyncio.sleep(0)
        if n == fail_at:
            raise RuntimeError("the state database refused the page")
        await real(conn, rows, keys, replace=replace)
        log.append(f"stored {n}")
    monkeypatch.setattr(q, "stage", stage)


async def _forty(state_url):
    """Forty records on the left, listed ten a page."""
    p = await make_pair(state_url, [item_flow()], page_size=10)
    for i in range(40):
        p.L.put("items", {"key": f"k{i}", "name": f"n{i}"})
    return p


async def test_the_next_page_is_read_while_the_previous_one_is_stored(state_url, monkeypatch):
    p = await _forty(state_url)
    log: list[str] = []
    _logged(monkeypatch, log, hold_first=200)
    pages = {"n": 0}

    def on_page() -> None:
        pages["n"] += 1
        log.append(f"read {pages['n']}")
    p.L.on_page = on_page
    r = await p.sync()
    assert r.status == "ok" and r.steps[0].counts["created_right"] == 40
    # "read n": the listing is asked for the page after page n, which happens when page n
    # is handed to the side. Page 2 was handed over (and parsed) while page 1 was still
    # being stored: the reading did not wait for the store
    assert log.index("read 2") < log.index("stored 1")
    # in order, one page at a time: no store starts before the one before it is done
    stores = [e for e in log if e.startswith("store") or e.startswith("stored")]
    for a, b in zip(stores, stores[1:]):
        if a.startswith("store "):
            assert b == f"stored {a.split()[1]}"


async def test_a_page_the_store_refuses_stops_the_step_and_keeps_the_cursor(
        state_url, monkeypatch):
    p = await _forty(state_url)
    log: list[str] = []
    _logged(monkeypatch, log, fail_at=2)
    r = await p.sync()
    assert r.status == "crashed"                    # the state database: not the systems
    assert "refused the page" in r.message
    assert p.R.writes == 0
    assert await p.rows("cursors") == []
    assert await p.rows("staged") == []             # the step's rows are cleared
    monkeypatch.undo()
    r = await p.sync()                              # the next run reads it all again
    assert r.status == "ok" and r.steps[0].counts["created_right"] == 40


async def test_a_side_whose_reading_fails_lets_its_page_on_the_way_in_go(state_url, monkeypatch):
    p = await _forty(state_url)
    log: list[str] = []
    _logged(monkeypatch, log, hold_first=200)

    def fail() -> None:
        from connectors.base import UnavailableError
        raise UnavailableError("left: 503 on the second page")
    p.L.on_page = fail
    r = await p.sync()
    assert r.status == "failed" and "503 on the second page" in r.message
    assert "stored 1" not in log                    # let go, rolled back
    assert await p.rows("staged") == [] and await p.rows("cursors") == []


@pytest.mark.parametrize("pairs", [1, 1234])
async def test_the_linked_pass_decides_every_pair_once_across_chunks(state_url, pairs):
    p = await make_pair(state_url, [item_flow()], page_size=500)
    ids = [p.L.put("items", {"key": f"k{i}", "name": f"n{i}"}) for i in range(pairs)]
    await p.sync()
    await p.sync()
    for lid in ids[::3]:
        p.L.edit("items", lid, {"name": "edited"})
    r = await p.sync(full=True)
    assert r.status == "ok"
    c = r.steps[0].counts
    edited = len(ids[::3])
    assert c["updated_right"] == edited and c["unchanged"] == pairs - edited
    assert sorted(v["title"] for v in p.R.values("items").values()).count("edited") == edited
