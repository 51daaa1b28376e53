"""BB-1 .. BB-10 (RULES.md, seed 003): Sage BOB 50 <-> Sage CRM, end to end.

Every test goes through a real SQLite database file (the BOB side, read and written by the
``bob50`` connector), real HTTP on loopback (the Sage CRM SData sandbox) and a real SQLite state
file; see ``bb_env.py``. The CLI tests run ``accord`` in-process on a config file.
"""
from __future__ import annotations

import orjson
import pytest

from daemon.cli import amain
from tests.integration.bb_env import FLOW, INTEG, close_env, make_env


@pytest.fixture
async def env(tmp_path):
    e = await make_env(tmp_path)
    await e.open()
    yield e
    await close_env(e)


async def cli(env, *argv: str, capsys) -> tuple[int, str]:
    capsys.readouterr()                                     # the runs' own log lines
    code = await amain([argv[0], "--config", env.cfg_path, *argv[1:]])
    return code, capsys.readouterr().out


async def test_bb01_sync_is_driven_from_bob_which_is_the_left_primary_system(env):
    spec = env.app.cfg.integrations[INTEG]
    assert (spec.left, spec.right) == ("bob", "crm")
    env.customer("C00001", "BE0412345678", NAME="Van BOB")
    r = await env.confirmed()
    assert r.status == "ok", r.message
    (made,) = env.crm.live()
    assert made["comp_name"] == "Van BOB" and made["comp_bobsync"] == "Y"


async def test_bb02_the_first_sync_matches_third_parties_by_vat_written_any_way(env):
    env.customer("C00001", "BE 0412.345.678")
    env.customer("C00002", "be0412-999-888")
    env.customer("C00003", None)                           # the vendor's rule: no VAT, no sync
    a = env.company("Peeters", "0412 345 678")
    b = env.company("Maes", "BE0412999888", bobsync=None, kind="Prospect")
    r = await env.confirmed()
    assert r.status == "ok", r.message
    assert await env.links() == {"C00001": str(a["comp_companyid"]),
                                 "C00002": str(b["comp_companyid"])}
    assert len(env.crm.live()) == 2                        # zero duplicates
    reviews = await env.rows("reviews")
    assert [(x["record_id"], "no VAT number" in x["reason"]) for x in reviews] == \
        [("C00003", True)]
    r = await env.sync()
    assert env.counts(r).get("created_right", 0) == 0 and len(env.crm.live()) == 2


async def test_bb02_a_later_new_third_party_finds_its_crm_partner_by_vat(env):
    env.customer("C00001", "BE0412345678")
    await env.confirmed()
    env.company("Jacobs", "BE 0455.111.222", bobsync=None, kind="Prospect")
    await env.sync()
    env.customer("C00009", "0455111222")
    r = await env.sync()
    assert r.status == "ok", r.message
    assert len(env.crm.live()) == 2 and "C00009" in await env.links()


async def test_bb03_the_preview_lists_each_direction_with_the_linked_data(env, capsys):
    env.customer("C00001", "BE0412345678", NAME="Bakkerij Peeters")
    env.customer("C00002", "BE0400000001", NAME="Alleen in BOB")
    env.company("Peeters in CRM", "0412345678")
    env.company("Alleen in CRM", "BE0499999999")
    r = await env.sync()
    assert r.status == "waiting"
    code, out = await cli(env, "plan", INTEG, "--stored", "--json", capsys=capsys)
    assert code == 0
    view = orjson.loads(out)["preview"]
    assert [c["name"] for c in view["to_right"]["create"]] == ["Alleen in BOB"]
    assert [c["name"] for c in view["to_left"]["create"]] == ["Alleen in CRM"]
    (link,) = view["link"]
    assert (link["left"], link["left_name"], link["right_name"]) == \
        ("C00001", "Bakkerij Peeters", "Peeters in CRM")
    assert [u["fields"]["comp_name"] for u in view["to_right"]["update"]] == \
        ["Bakkerij Peeters"]
    code, out = await cli(env, "plan", INTEG, "--stored", capsys=capsys)
    assert "bob -> crm: 1 to create, 1 to update" in out and "crm -> bob: 1 to create" in out
    assert env.crm.writes() == 0 and len(env.bob.rows("third_parties")) == 2


async def test_bb04_bob_wins_when_both_changed_a_record(env):
    env.customer("C00001", "BE0412345678", NAME="Oud", WEBSITE="https://oud.be")
    await env.confirmed()
    crm_id = (await env.links())["C00001"]
    env.bob.update("third_parties", "C00001", NAME="BOB naam")
    env.crm.edit("Company", crm_id, comp_name="CRM naam", comp_website="https://crm.be")
    r = await env.sync()
    assert r.status == "ok", r.message
    assert env.crm_company(crm_id)["comp_name"] == "BOB naam"
    row = env.bob.row("third_parties", "C00001")
    assert row["NAME"] == "BOB naam" and row["WEBSITE"] == "https://crm.be"  # merged fields


async def test_bb05_crm_to_bob_only_for_bobsync_customers_others_still_match(env):
    env.company("Getikt", "BE0400000011")
    env.company("Niet getikt", "BE0400000012", bobsync=None)
    env.company("Prospect", "BE0400000013", kind="Prospect")
    env.customer("C00001", "0400.000.012", NAME="BOB klant")
    r = await env.confirmed()
    assert r.status == "ok", r.message
    names = sorted(x["NAME"] for x in env.bob.rows("third_parties"))
    assert names == ["BOB klant", "Getikt"]
    links = await env.links()
    assert set(links) == {"C00001", next(x["TP_ID"] for x in env.bob.rows("third_parties")
                                         if x["NAME"] == "Getikt")}
    # the unticked company is linked and receives BOB's values, but its edits stay in the CRM
    crm_id = links["C00001"]
    assert env.crm_company(crm_id)["comp_name"] == "BOB klant"
    env.crm.edit("Company", crm_id, comp_website="https://alleen-crm.be")
    await env.sync()
    assert env.bob.row("third_parties", "C00001")["WEBSITE"] is None
    env.crm.edit("Company", crm_id, comp_bobsync="Y", comp_website="https://nu-wel.be")
    await env.sync()
    assert env.bob.row("third_parties", "C00001")["WEBSITE"] == "https://nu-wel.be"


async def test_bb06_no_sync_leaves_the_preview_and_lifting_it_brings_it_back(env, capsys):
    env.customer("C00001", "BE0412345678", NAME="Nooit")
    env.customer("C00002", "BE0400000002", NAME="Wel")
    env.company("Nooit in CRM", "BE0412345678")
    assert (await env.sync()).status == "waiting"
    code, out = await cli(env, "links", INTEG, FLOW, "--no-sync", "C00001", capsys=capsys)
    assert code == 0 and "no sync" in out
    assert (await env.sync()).status == "waiting"           # the plan is made again
    code, out = await cli(env, "plan", INTEG, "--stored", "--json", capsys=capsys)
    view = orjson.loads(out)["preview"]
    assert [c["name"] for c in view["to_right"]["create"]] == ["Wel"]
    assert view["link"] == [] and view["to_left"]["create"] == []   # no duplicate either
    await env.approve()
    assert (await env.sync()).status == "ok"
    assert sorted(c["comp_name"] for c in env.crm.live()) == ["Nooit in CRM", "Wel"]
    assert len(env.bob.rows("third_parties")) == 2
    code, out = await cli(env, "links", INTEG, FLOW, "--json", capsys=capsys)
    assert [x["record_id"] for x in orjson.loads(out)["excluded_unlinked"]] == ["C00001"]
    await cli(env, "links", INTEG, FLOW, "--lift", "C00001", capsys=capsys)
    await env.sync()
    assert "C00001" in await env.links() and len(env.crm.live()) == 2
    # on a linked pair, no sync stops both directions until lifted
    await cli(env, "links", INTEG, FLOW, "--no-sync", "C00001", capsys=capsys)
    env.bob.update("third_parties", "C00001", NAME="Gewijzigd")
    await env.sync()
    crm_id = (await env.links())["C00001"]
    assert env.crm_company(crm_id)["comp_name"] == "Nooit"
    code, out = await cli(env, "links", INTEG, FLOW, capsys=capsys)
    assert "no sync" in out and "Nooit" in out
    await cli(env, "links", INTEG, FLOW, "--lift", "C00001", capsys=capsys)
    await env.sync()
    assert env.crm_company(crm_id)["comp_name"] == "Gewijzigd"


async def test_bb07_not_this_time_skips_the_next_sync_only(env, capsys):
    env.customer("C00001", "BE0412345678", NAME="Later")
    env.customer("C00002", "BE0400000002", NAME="Nu")
    assert (await env.sync()).status == "waiting"
    await cli(env, "links", INTEG, FLOW, "--not-this-time", "C00001", capsys=capsys)
    await env.approve()
    assert (await env.sync()).status == "ok"
    assert [c["comp_name"] for c in env.crm.live()] == ["Nu"]
    await env.sync()
    assert sorted(c["comp_name"] for c in env.crm.live()) == ["Later", "Nu"]


async def test_bb08_custom_fields_with_a_counterpart_are_listed_selected_and_conditional(
        env, capsys):
    env.customer("C00001", "BE0412345678", PF_SECTOR="Bouw", PF_EMPLOYEES=5)
    env.customer("C00002", "BE0400000002", PF_SECTOR="Horeca", PF_EMPLOYEES=80)
    await env.confirmed()
    code, out = await cli(env, "fields", INTEG, FLOW, "--json", capsys=capsys)
    found = {f["left"]: f for f in orjson.loads(out)["fields"]}
    assert set(found) == {"PF_SECTOR", "PF_EMPLOYEES"}      # PF_INTERNAL has no counterpart
    assert found["PF_SECTOR"]["right"] == "comp_sector" and not found["PF_SECTOR"]["selected"]
    links = await env.links()
    assert all(env.crm_company(i).get("comp_sector") is None for i in links.values())
    # selected by name, one with a condition; no need to restate the preset's fields
    await env.open(extra=f"""
[[integrations.{INTEG}.flows]]
name = "{FLOW}"

[[integrations.{INTEG}.flows.custom_fields]]
left = "PF_SECTOR"
right = "comp_sector"

[[integrations.{INTEG}.flows.custom_fields]]
left = "PF_EMPLOYEES"
right = "comp_employees"
when = [{{ field = "PF_EMPLOYEES", op = "not_in", value = [0] }}, {{ any_of = [{{ field = "PF_SECTOR", value = "Bouw" }}, {{ field = "PF_SECTOR", value = "Retail" }}] }}]
""")
    r = await env.sync()                                    # a newly selected field: back-filled
    assert r.status == "ok", r.message
    one, two = env.crm_company(links["C00001"]), env.crm_company(links["C00002"])
    assert (one["comp_sector"], one.get("comp_employees")) == ("Bouw", 5)
    assert (two["comp_sector"], two.get("comp_employees")) == ("Horeca", None)
    code, out = await cli(env, "fields", INTEG, FLOW, "--json", capsys=capsys)
    assert all(f["selected"] for f in orjson.loads(out)["fields"])


async def test_bb09_nothing_is_written_before_the_first_run_is_confirmed(env, capsys):
    env.customer("C00001", "BE0412345678")
    env.company("Alleen CRM", "BE0499999999")
    for _ in range(2):
        r = await env.sync()
        assert r.status == "waiting" and "approve" in r.message
    assert env.crm.writes() == 0 and len(env.bob.rows("third_parties")) == 1
    assert await env.links() == {}
    code, out = await cli(env, "approve", INTEG, "--first-run", capsys=capsys)
    assert code == 0 and "correct" in out
    r = await env.sync()
    assert r.status == "ok" and len(env.crm.live()) == 2 and len(await env.links()) == 2
    assert (await env.sync()).status == "ok"                 # no gate once synchronised


async def test_bb10_only_customers_are_synced_never_suppliers(env):
    env.customer("C00001", "BE0412345678", NAME="Klant")
    env.bob.insert("third_parties", TP_ID="S00001", TP_TYPE="S", NAME="Leverancier",
                   VAT_NUMBER="BE0400000009")
    env.company("CRM leverancier", "BE0400000007", kind="Supplier")
    env.company("CRM zelfde btw", "BE0400000009", bobsync=None, kind="Prospect")
    r = await env.confirmed()
    assert r.status == "ok", r.message
    assert "S00001" not in await env.links()
    assert sorted(c["comp_name"] for c in env.crm.live()) == \
        ["CRM leverancier", "CRM zelfde btw", "Klant"]
    assert sorted(x["TP_ID"] for x in env.bob.rows("third_parties")) == ["C00001", "S00001"]


async def test_bb02_zero_duplicates_when_most_already_exist_under_other_spellings(env):
    """The benchmark's situation at a small size (bench/bob_bench.py runs 20,000)."""
    from connectors.bob50.sandbox import spell, vat
    env.bob.supplier_share, env.bob.no_vat_share = 0.0, 0.0
    env.bob.seed(200, env.bob.rng)
    for i, row in enumerate(env.bob.rows("third_parties")[:150]):
        env.company(f"CRM {row['NAME']}", spell(vat(int(row["TP_ID"][1:]) - 1), i + 1),
                    bobsync=None if i % 2 else "Y")
    r = await env.confirmed()
    assert r.status == "ok", r.message
    counts = env.counts(r)
    assert counts["matched"] == 150 and counts["created_right"] == 50
    assert len(env.crm.live()) == 200 and len(env.bob.rows("third_parties")) == 200
