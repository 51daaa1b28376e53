"""The status page's parts of Sage BOB 50 <-> Sage CRM (seed 003): the first run's preview per
direction with its "the synchronisation data is correct" button (BB-3, BB-9), and the
correspondence table's page with "No sync", "Not this time" and "Lift" (BB-6, BB-7).

A real Service serves the page on loopback; the BOB side is a real SQLite file, the CRM the
Sage CRM sandbox over HTTP (tests/integration/bb_env.py), the state a real SQLite file.
"""
from __future__ import annotations

import re

import orjson
from sqlalchemy import insert, select

from daemon import page as page_lib
from daemon.store import gates
from daemon.store.db import dumps, now
from daemon.store.tables import T
from tests.integration.bb_env import FLOW, INTEG, close_env, make_env
from tests.web.conftest import AUTH, SECRETS, bb_config, bb_sync, get, post, start_service

LINKS = f"/integrations/{INTEG}/flows/{FLOW}/links"
API = f"/api/integrations/{INTEG}"


async def state(env, table: str) -> list[dict]:
    async with env.svc.app.db.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(T[table]))).mappings()]


def one(pattern: str, text: str) -> str:
    found = re.findall(pattern, text, re.S)
    assert len(found) == 1, (pattern, found)
    return found[0]


def four_parties(env) -> None:
    """BB-3's situation: one pair to link, one third party only in each system."""
    env.customer("C00001", "BE0412345678", NAME="Bakkerij Peeters")
    env.customer("C00002", "BE0400000001", NAME="Alleen in BOB")
    env.company("Peeters in CRM", "0412 345 678")
    env.company("Alleen in CRM", "BE0499999999")


# --- BB-3: the preview on the page -------------------------------------------------------------
async def test_bb03_the_page_shows_the_first_runs_preview_per_direction(bb, http):
    four_parties(bb)
    assert await bb_sync(bb) == "waiting"
    _, html = await get(http, bb.svc, "/")
    gate = one(r'<div class="gate" data-kind="first_run">(.*?)</div>\s*<h3>Record errors', html)
    assert "First run waiting for approval (waiting)" in gate
    to_crm = one(r'<h4 data-direction="to_right">(.*?)</h4>', gate)
    assert re.sub("<[^>]+>", "", to_crm) == "bob → crm: 1 to create, 1 to update"
    assert re.sub("<[^>]+>", "", one(r'<h4 data-direction="to_left">(.*?)</h4>', gate)) == \
        "crm → bob: 1 to create, 0 to update"
    create = one(r'<tr class="create" data-side="left" data-record="C00002">(.*?)</tr>', gate)
    assert "Alleen in BOB" in create and "BE0400000001" in create and "No sync" in create
    assert "Alleen in CRM" in one(r'<tr class="create" data-side="right" data-record="2">'
                                  r'(.*?)</tr>', gate)
    # the linked pair with both records' data, and what BOB's values change in the CRM
    link = one(r'<tr class="link" data-left="C00001" data-right="1">(.*?)</tr>', gate)
    for text in ("Bakkerij Peeters", "Peeters in CRM", "BE0412345678", "0412 345 678"):
        assert text in link, text
    update = one(r'<tr class="update" data-side="right" data-record="1">(.*?)</tr>', gate)
    assert "Peeters in CRM" in update and "Bakkerij Peeters" in update
    # the button approves the first run only
    assert one(r'<button[^>]*class="act approve-first-run"[^>]*data-url="([^"]+)"', gate) == \
        f"{API}/approve-first-run"
    assert ">The synchronisation data is correct</button>" in gate
    # the same preview in the status document, as `accord plan --stored` gives it
    _, text = await get(http, bb.svc, "/api/status")
    (g,) = orjson.loads(text)["integrations"][INTEG]["gates"]
    assert [c["name"] for c in g["preview"]["to_right"]["create"]] == ["Alleen in BOB"]
    assert [x["right_name"] for x in g["preview"]["link"]] == ["Peeters in CRM"]
    assert bb.crm.writes() == 0 and len(bb.bob.rows("third_parties")) == 2


async def test_bb03_the_page_cuts_long_lists_and_the_preview_page_has_them_all(
        bb, http, monkeypatch):
    for i in range(1, 4):
        bb.customer(f"C0000{i}", f"BE040000000{i}", NAME=f"Klant {i}")
    assert await bb_sync(bb) == "waiting"
    monkeypatch.setattr(page_lib, "PREVIEW_ROWS", 2)
    _, html = await get(http, bb.svc, "/")
    assert len(re.findall(r'<tr class="create"', html)) == 2
    assert f'… and 1 more: <a href="/integrations/{INTEG}/preview">the whole preview</a>' in html
    r, whole = await get(http, bb.svc, f"/integrations/{INTEG}/preview")
    assert r.content_type == "text/html" and "<title>accord — bb: the first run" in whole
    assert len(re.findall(r'<tr class="create"', whole)) == 3 and "more:" not in whole
    assert 'data-partial="/integrations/bb/preview?partial=1"' in whole
    assert "The synchronisation data is correct" in whole
    _, part = await get(http, bb.svc, f"/integrations/{INTEG}/preview?partial=1")
    assert part.startswith('<div id="status"') and "<script>" not in part
    await get(http, bb.svc, "/integrations/nope/preview", 404)
    for secret in SECRETS:
        assert secret not in html + whole


async def test_bb03_the_preview_page_says_when_no_first_run_waits(bb, http):
    _, html = await get(http, bb.svc, f"/integrations/{INTEG}/preview", 404)
    assert "bb has no first run waiting for approval" in html


async def test_bb06_no_sync_from_the_preview_leaves_the_plan_made_again(bb, http):
    four_parties(bb)
    assert await bb_sync(bb) == "waiting"
    status, body = await post(http, bb.svc, f"{API}/links", json={
        "flow": FLOW, "side": "left", "id": "C00002", "mode": "no_sync"})
    assert status == 200 and body["message"] == \
        "no sync: bob C00002 never synchronised until lifted"
    _, html = await get(http, bb.svc, "/")
    row = one(r'<tr class="create" data-side="left" data-record="C00002">(.*?)</tr>', html)
    assert ">no sync</span>" in row and ">Lift</button>" in row and "No sync<" not in row
    assert await bb_sync(bb) == "waiting"                      # Run now: the plan is made again
    _, html = await get(http, bb.svc, "/")
    assert 'data-record="C00002"' not in html.split('<h3>Exclusions')[0]
    assert "Alleen in BOB" not in html.split('<h3>Exclusions')[0]


# --- BB-9: "the synchronisation data is correct" ---------------------------------------------
async def test_bb09_the_button_approves_the_first_run_only_then_the_next_run_writes(bb, http):
    four_parties(bb)
    assert await bb_sync(bb) == "waiting"
    async with bb.svc.app.db.begin() as conn:               # something else that waits
        await conn.execute(insert(T["held_deletes"]).values(
            integration=INTEG, flow=FLOW, link_id=0, target="right", record_id="99",
            action="delete", run_id=1, approved=False, created_at=now()))
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, body = await post(http, bb.svc, f"{API}/approve-first-run", headers=headers)
        assert status == 401 and "token" in body["error"]
    status, body = await post(http, bb.svc, f"{API}/approve-first-run", json=["x"])
    assert status == 400 and "JSON object" in body["error"]
    assert not (await state(bb, "gates"))[0]["approved"]
    assert await bb_sync(bb) == "waiting" and bb.crm.writes() == 0      # still nothing written
    status, body = await post(http, bb.svc, f"{API}/approve-first-run")
    assert status == 200 and body["message"] == (
        "approved: the synchronisation data of bb is correct; the next run synchronises")
    assert [g["approved"] for g in await state(bb, "gates")] == [True]
    assert [h["approved"] for h in await state(bb, "held_deletes")] == [False]
    _, html = await get(http, bb.svc, "/")
    assert "First run waiting for approval (approved: the next run goes on)" in html
    assert "approve-first-run" not in html
    status, body = await post(http, bb.svc, f"{API}/approve-first-run")
    assert status == 409 and "approved already" in body["error"]
    assert await bb_sync(bb) == "ok"
    assert sorted(c["comp_name"] for c in bb.crm.live()) == \
        ["Alleen in BOB", "Alleen in CRM", "Bakkerij Peeters"]
    assert len(bb.bob.rows("third_parties")) == 3
    status, body = await post(http, bb.svc, f"{API}/approve-first-run")
    assert status == 404 and body["error"] == "bb has no first run waiting for approval"
    status, body = await post(http, bb.svc, "/api/integrations/nope/approve-first-run")
    assert status == 404 and body["integrations"] == [INTEG]


async def test_bb09_without_a_token_the_page_buttons_are_forbidden(tmp_path, http):
    env = await make_env(tmp_path)
    svc = await start_service(bb_config(tmp_path, env, token=None))
    try:
        env.tie_clock(svc.app)
        env.customer("C00001", "BE0412345678")
        assert (await svc.run_job(f"sync:{INTEG}")).status == "waiting"
        for path, body in ((f"{API}/approve-first-run", None),
                           (f"{API}/links", {"flow": FLOW, "side": "left", "id": "C00001",
                                             "mode": "no_sync"})):
            status, answer = await post(http, svc, path, json=body)
            assert status == 403 and "set [web] token" in answer["error"], path
        async with svc.app.db.connect() as conn:
            assert [g["approved"] for g in (await conn.execute(select(T["gates"]))).mappings()
                    ] == [False]
            assert not (await conn.execute(select(T["exclusions"]))).all()
    finally:
        await svc.stop()
        await close_env(env)


# --- BB-6, BB-7: the correspondence table's page -----------------------------------------------
async def confirmed_pairs(env) -> dict[str, str]:
    env.customer("C00001", "BE0412345678", NAME="Bakkerij Peeters")
    env.customer("C00002", "BE0400000002", NAME="Slagerij Maes")
    env.company("Peeters in CRM", "0412.345.678")
    assert await bb_sync(env) == "waiting"
    async with env.svc.app.db.begin() as conn:
        await gates.approve_gate(conn, INTEG, "first_run")
    assert await bb_sync(env) == "ok"
    return {r["left_id"]: r["right_id"] for r in await state(env, "links")}


async def test_bb06_the_links_page_lists_pairs_with_keys_and_names(bb, http):
    pairs = await confirmed_pairs(bb)
    _, html = await get(http, bb.svc, "/")
    assert f'<a class="links" href="{LINKS}">linked pairs</a>' in html   # from the flow
    r, html = await get(http, bb.svc, LINKS)
    assert r.content_type == "text/html" and "bb · third_parties: linked pairs" in html
    assert "<th>VAT_NUMBER = comp_vatnumber</th>" in html and "pairs 1–2 of 2" in html
    row = one(rf'<tr class="pair" data-link="\d+" data-left="C00001" '
              rf'data-right="{pairs["C00001"]}" data-mode="">(.*?)</tr>', html)
    for text in ("Bakkerij Peeters", "id C00001", "BE0412345678 = BE0412345678",
                 ">No sync</button>", ">Not this time</button>"):
        assert text in row, text
    assert "Slagerij Maes" in html and "next ›" not in html and "« first" not in html
    assert f'data-partial="{LINKS}?partial=1"' in html
    _, part = await get(http, bb.svc, f"{LINKS}?partial=1")
    assert part.startswith('<div id="status"') and "Bakkerij Peeters" in part
    assert "<script>" not in part
    for secret in SECRETS:
        assert secret not in html
    await get(http, bb.svc, f"/integrations/nope/flows/{FLOW}/links", 404)
    _, text = await get(http, bb.svc, f"/integrations/{INTEG}/flows/nope/links", 404)
    assert "has no flow 'nope'" in text
    for bad in ("after=x", "before=-1", "after=1.5"):
        await get(http, bb.svc, f"{LINKS}?{bad}", 400)


async def test_bb06_no_sync_on_a_pair_holds_both_ways_until_lifted(bb, http):
    pairs = await confirmed_pairs(bb)
    crm_id = pairs["C00001"]
    status, body = await post(http, bb.svc, f"{API}/links", json={
        "flow": FLOW, "side": "crm", "id": crm_id, "mode": "no_sync"})
    assert status == 200, body
    assert body["message"] == (f"no sync: bob C00001 and crm {crm_id} never synchronised "
                               f"until lifted")
    ex = sorted((x["side"], x["record_id"], x["mode"]) for x in await state(bb, "exclusions"))
    assert ex == [("left", "C00001", "never"), ("right", crm_id, "never")]
    _, html = await get(http, bb.svc, LINKS)
    row = one(r'<tr class="pair" [^>]*data-left="C00001"[^>]*>(.*?)</tr>', html)
    assert 'data-mode="never"' in one(r'(<tr class="pair" [^>]*data-left="C00001"[^>]*>)', html)
    assert ">no sync</span>" in row and ">Lift</button>" in row and "Not this time" not in row
    bb.bob.update("third_parties", "C00001", NAME="Gewijzigd in BOB")
    bb.crm.edit("Company", crm_id, comp_website="https://crm.be")
    assert await bb_sync(bb) == "ok"
    assert bb.crm_company(crm_id)["comp_name"] == "Bakkerij Peeters"
    assert bb.bob.row("third_parties", "C00001")["WEBSITE"] is None
    status, body = await post(http, bb.svc, f"{API}/links", json={
        "flow": FLOW, "side": "left", "id": "C00001", "mode": "lift"})
    assert status == 200 and body["message"] == (
        f"lifted: bob C00001 and crm {crm_id} synchronised again from the next run")
    assert await bb_sync(bb) == "ok"
    assert bb.crm_company(crm_id)["comp_name"] == "Gewijzigd in BOB"
    _, html = await get(http, bb.svc, LINKS)
    assert f'data-left="C00001" data-right="{crm_id}" data-mode=""' in html


async def test_bb07_not_this_time_from_the_page_skips_the_next_run_only(bb, http):
    pairs = await confirmed_pairs(bb)
    crm_id = pairs["C00001"]
    status, body = await post(http, bb.svc, f"{API}/links", json={
        "flow": FLOW, "side": "left", "id": "C00001", "mode": "not_this_time"})
    assert status == 200 and body["message"] == (
        f"not this time: bob C00001 and crm {crm_id} left out of the next run only")
    _, html = await get(http, bb.svc, LINKS)
    assert ">not this time</span>" in one(r'<tr class="pair" [^>]*data-left="C00001"[^>]*>'
                                          r'(.*?)</tr>', html)
    bb.bob.update("third_parties", "C00001", NAME="Later")
    assert await bb_sync(bb) == "ok"
    assert bb.crm_company(crm_id)["comp_name"] == "Bakkerij Peeters"
    assert await bb_sync(bb) == "ok"
    assert bb.crm_company(crm_id)["comp_name"] == "Later"


async def test_bb06_bad_bodies_get_400_and_change_nothing(bb, http):
    await confirmed_pairs(bb)
    good = {"flow": FLOW, "side": "left", "id": "C00001", "mode": "no_sync"}
    for body, word in (({**good, "mode": "never"}, "mode"), ({**good, "mode": None}, "mode"),
                       ({**good, "flow": "nope"}, "flow"), ({**good, "side": "erp"}, "side"),
                       ({k: v for k, v in good.items() if k != "id"}, "id"),
                       ({**good, "id": True}, "id"), ({**good, "reason": 5}, "reason"),
                       ([good], "JSON object"), (None, "JSON body")):
        status, answer = await post(http, bb.svc, f"{API}/links", json=body)
        assert status == 400 and word in answer["error"], (body, answer)
    async with http.post(bb.svc.web.url + f"{API}/links", headers=AUTH, data=b"{no") as r:
        assert r.status == 400 and "not valid JSON" in (await r.json())["error"]
    status, answer = await post(http, bb.svc, "/api/integrations/nope/links", json=good)
    assert status == 404 and answer["integrations"] == [INTEG]
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, answer = await post(http, bb.svc, f"{API}/links", headers=headers, json=good)
        assert status == 401
    assert await state(bb, "exclusions") == []


async def test_bb06_the_links_page_goes_through_the_pairs_a_keyset_page_at_a_time(bb, http):
    n = 250
    async with bb.svc.app.db.begin() as conn:
        await conn.execute(insert(T["links"]), [
            {"integration": INTEG, "flow": FLOW, "left_id": f"C{i:05d}", "right_id": str(i),
             "left_base": dumps({"NAME": f"Klant {i}", "VAT_NUMBER": f"BE{i:010d}"}),
             "right_base": dumps({"comp_name": f"Bedrijf {i}",
                                  "comp_vatnumber": f"{i:010d}"}),
             "left_hash": "", "right_hash": "", "updated_at": now()}
            for i in range(1, n + 1)])
    ids = [r["id"] for r in sorted(await state(bb, "links"), key=lambda r: r["id"])]
    _, html = await get(http, bb.svc, LINKS)
    assert "pairs 1–100 of 250" in html and len(re.findall('<tr class="pair"', html)) == 100
    assert "Klant 1<" in html and "Klant 101<" not in html and "‹ previous" not in html
    nxt = one(r'<a class="next" href="([^"]+)"', html)
    assert nxt == f"{LINKS}?after={ids[99]}"
    _, html = await get(http, bb.svc, nxt)
    assert "pairs 101–200 of 250" in html and "Klant 101<" in html and "Klant 200<" in html
    assert f'data-partial="{LINKS}?after={ids[99]}&amp;partial=1"' in html
    _, html = await get(http, bb.svc, one(r'<a class="next" href="([^"]+)"', html))
    assert "pairs 201–250 of 250" in html and len(re.findall('<tr class="pair"', html)) == 50
    assert 'class="next"' not in html and "« first" in html
    back = one(r'<a class="prev" href="([^"]+)"', html)
    assert back == f"{LINKS}?before={ids[200]}"
    _, html = await get(http, bb.svc, back)
    assert "pairs 101–200 of 250" in html and "Klant 150<" in html
    _, html = await get(http, bb.svc, f"{LINKS}?after={ids[-1]}")
    assert "250 linked pairs" in html and "none" in html and "« first" in html
