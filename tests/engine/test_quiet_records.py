"""Quiet records (stage.Staging.page, ``q.OUTSIDE_CHUNKS``): a listed record equal to its
linked base is staged outside the chunks. Its pair is decided only with a partner that is a record
to decide, with the quiet record's values as read; a pair quiet on every side read is
unchanged, counted, never planned. Not when something could make its plan anything else:
record errors to settle, held deletes, an enforced field."""
from __future__ import annotations

import pytest

from daemon.store import queries as q
from daemon.store.db import now
from tests.engine.harness import item_flow, make_pair


def _spy_units(monkeypatch) -> list[int]:
    """The number of pairs each linked chunk handed to the planner."""
    seen: list[int] = []
    real = q.staged_linked_chunk

    async def counting(*args, **kw):
        chunk = await real(*args, **kw)
        if not kw.get("deleted_only"):
            seen.append(len(chunk))
        return chunk
    monkeypatch.setattr(q, "staged_linked_chunk", counting)
    return seen


async def _synced(state_url, n: int):
    p = await make_pair(state_url, [item_flow()], page_size=500)
    ids = [p.L.put("items", {"key": f"k{i}", "name": f"n{i}", "phone": str(i)})
           for i in range(n)]
    await p.sync()
    await p.sync()                      # reads back what the first sync wrote
    right = {r["fields"]["code"]: rid for rid, r in p.R.data["items"].items()}
    return p, ids, right


async def test_pairs_equal_to_their_bases_are_unchanged_without_being_planned(
        state_url, monkeypatch):
    p, ids, right = await _synced(state_url, 1234)
    p.L.edit("items", ids[7], {"name": "left edit"})            # its partner is quiet
    p.R.edit("items", right["k8"], {"tel": "right edit"})
    p.L.edit("items", ids[9], {"phone": "both, left"})          # a conflict: both read
    p.R.edit("items", right["k9"], {"tel": "both, right"})
    units = _spy_units(monkeypatch)
    r = await p.sync(full=True)
    c = r.steps[0].counts
    assert r.status == "ok"
    assert sum(units) == 3                  # 1,234 pairs read on both sides, 3 decided
    assert c["unchanged"] == 1231 and c["read_left"] == c["read_right"] == 1234
    assert c["updated_right"] == 1 and c["updated_left"] == 2 and c["conflicts"] == 1
    assert p.R.data["items"][right["k7"]]["fields"]["title"] == "left edit"
    assert p.L.data["items"][ids[8]]["fields"]["phone"] == "right edit"
    # the quiet partner's values were those read: the conflict saw both sides' phones
    assert {p.L.data["items"][ids[9]]["fields"]["phone"],
            p.R.data["items"][right["k9"]]["fields"]["tel"]} in (
        {"both, left"}, {"both, right"})
    again = await p.sync(full=True)
    assert again.steps[0].counts["unchanged"] == 1234 and sum(units) == 3
    assert await p.rows("staged") == []


async def test_a_record_gone_from_a_complete_listing_is_deleted_among_quiet_ones(
        state_url, monkeypatch):
    """Quiet records still count as seen: only the record the listing lacks is deleted."""
    flow = item_flow(delete={"to_left": {"action": "delete"}})
    p = await make_pair(state_url, [flow], page_size=500)
    ids = [p.L.put("items", {"key": f"k{i}", "name": f"n{i}"}) for i in range(600)]
    await p.sync()
    await p.sync()
    right = {r["fields"]["code"]: rid for rid, r in p.R.data["items"].items()}
    p.R.remove("items", right["k5"])
    r = await p.sync(full=True)
    assert r.status == "ok", r.steps[0].message
    assert r.steps[0].counts["deleted"] == 1 and r.steps[0].counts["unchanged"] == 599
    assert ids[5] not in p.L.data["items"] and len(p.L.data["items"]) == 599


@pytest.mark.parametrize("edited", [False, True])
async def test_a_new_record_matching_a_linked_one_is_reviewed_not_created(state_url, edited):
    """A new record whose key matches a linked record of the same side, in a full read:
    its candidate is the linked record's partner, which stays staged whether it was quiet or
    decided earlier in the step (``edited``: its pair was updated in the linked pass, where
    its staged row used to be deleted and the new record was created on the other side)."""
    p, ids, right = await _synced(state_url, 50)
    if edited:
        p.L.edit("items", ids[3], {"name": "edited"})
    twin = p.L.put("items", {"key": "k3", "name": "a second k3"})
    r = await p.sync(full=True)
    c = r.steps[0].counts
    assert c["created_right"] == 0 and c["review"] == 1
    assert c["updated_right"] == int(edited) and c["unchanged"] == 50 - int(edited)
    assert [x["record_id"] for x in await p.rows("reviews")] == [twin]
    assert len(p.R.data["items"]) == 50


async def test_a_record_deleted_by_a_chunk_is_no_candidate_after_it(state_url, monkeypatch):
    """A record this step deleted in its system (its partner was deleted) is no candidate
    for a new record with its key: that one is created, not linked to the deleted one."""
    flow = item_flow(delete={"to_right": {"action": "delete"}})
    p = await make_pair(state_url, [flow], page_size=500)
    ids = [p.L.put("items", {"key": f"k{i}", "name": f"n{i}"}) for i in range(10)]
    await p.sync()
    await p.sync()
    p.L.remove("items", ids[3])
    p.L.put("items", {"key": "k3", "name": "k3 again"})
    r = await p.sync(full=True)
    c = r.steps[0].counts
    assert r.status == "ok" and c["deleted"] == 1 and c["created_right"] == 1
    assert sorted(v["fields"]["title"] for v in p.R.data["items"].values()
                  if v["fields"]["code"] == "k3") == ["k3 again"]


async def test_record_errors_in_the_flow_turn_quiet_records_off(state_url, monkeypatch):
    """An unchanged record settles its retried refusals: with record errors in the flow,
    every pair is decided as before."""
    p, ids, right = await _synced(state_url, 20)
    await p.insert("record_errors", integration="t", flow="items", side="left",
                   record_id=ids[4], message="refused by validation", retry=True,
                   run_id=1, quarantined=False, updated_at=now())
    units = _spy_units(monkeypatch)
    r = await p.sync(full=True)
    assert r.steps[0].counts["unchanged"] == 20
    assert sum(units) == 20                       # every pair decided, none left quiet
    assert await p.rows("record_errors") == []    # settled: its values stand


async def test_a_held_delete_turns_quiet_records_off(state_url, monkeypatch):
    """A delete held for a pair whose records are both there after all is dropped when the
    pair is decided: with a hold in the flow, every pair is decided."""
    p, ids, right = await _synced(state_url, 20)
    links = {r["left_id"]: r["id"] for r in await p.rows("links")}
    await p.insert("held_deletes", integration="t", flow="items", link_id=links[ids[2]],
                   target="left", record_id=ids[2], action="delete", run_id=1,
                   approved=False, created_at=now())
    units = _spy_units(monkeypatch)
    r = await p.sync(full=True)
    assert sum(units) == 20 and r.steps[0].counts["unchanged"] == 20
    assert await p.rows("held_deletes") == []


@pytest.mark.parametrize("twin_on", [None, "left", "right"])
async def test_quiet_records_keys_are_staged_only_when_matching_needs_them(
        state_url, monkeypatch, twin_on):
    """A full read of a synced pair stages no match key of its quiet records; a new record
    on either side has them computed (once) before its partners are looked up, and finds
    the linked one: a review, no copy."""
    p, ids, right = await _synced(state_url, 600)
    staged_keys: list[int] = []
    real_stage, real_add = q.stage, q.add_staged_keys

    async def stage(conn, rows, keys, **kw):
        staged_keys.append(len(keys))
        return await real_stage(conn, rows, keys, **kw)

    async def add(conn, keys):
        staged_keys.append(len(keys))
        return await real_add(conn, keys)
    monkeypatch.setattr(q, "stage", stage)
    monkeypatch.setattr(q, "add_staged_keys", add)
    if twin_on == "left":
        twin = p.L.put("items", {"key": "k3", "name": "a second k3"})
    elif twin_on == "right":
        twin = p.R.put("items", {"code": "k3", "title": "a second k3"})
    r = await p.sync(full=True)
    c = r.steps[0].counts
    assert r.status == "ok" and c["unchanged"] == 600
    if twin_on is None:
        assert sum(staged_keys) == 0 and c["review"] == 0
    else:
        # the twin's key, then the quiet records' keys of both sides (600 each)
        assert sum(staged_keys) == 1 + 1200
        assert c["review"] == 1 and c["created_left"] == c["created_right"] == 0
        assert [x["record_id"] for x in await p.rows("reviews")] == [twin]
    assert len(p.L.data["items"]) == 600 + (twin_on == "left")
    assert len(p.R.data["items"]) == 600 + (twin_on == "right")
