"""Rules AJ-1 ... AJ-5 (RULES.md, seed 001) end to end: the bundled ``ajera_vantagepoint``
preset, the Ajera and Vantagepoint sandboxes over loopback HTTP, a real SQLite state file."""
from __future__ import annotations

import pytest

from daemon import cli
from daemon import status as status_lib
from daemon.page import body as render
from tests.integration.aj_env import INTEG, close_env, make_env, ok, step

LONG = "Riverside Public Library Renovation and Expansion Phase 2"     # 57 characters


@pytest.fixture
async def env(tmp_path):
    e = await make_env(tmp_path)
    yield e
    await close_env(e)


# --- AJ-1 ------------------------------------------------------------------------------------
async def test_aj01_a_manual_sync_covers_projects_employees_contacts_and_clients(env):
    aj = env.aj
    p1 = env.project("Harbor Clinic")
    p2 = env.project(LONG)
    unsynced = env.project("Not For The CRM", sync=False)
    aj.add_transaction(p1["ProjectKey"], "Time", 950.0)
    aj.add("Employees", FirstName="Ana", LastName="Ortiz", Email="ana@studio.example",
           Status="Active")
    aj.add("Clients", Description="Harbor County", Status="Active", Phone="555-0100")
    aj.add("Contacts", FirstName="Ben", LastName="Park", Email="ben@harbor.example",
           Company="Harbor County")
    await env.start()
    result = await env.sync(trigger="manual")
    ok(result)

    crm = env.crm("project")
    assert set(crm) == {p1["ID"], p2["ID"]}                 # WBS1 = the Ajera project ID
    assert crm[p1["ID"]]["Name"] == "Harbor Clinic"
    assert crm[p2["ID"]]["Name"] == LONG[:40] and crm[p2["ID"]]["LongName"] == LONG
    assert crm[p1["ID"]]["AjeraSync"] == "Y" and crm[p1["ID"]]["AjeraSpentLabor"] == 950.0
    assert unsynced["ID"] not in crm
    assert [e["Email"] for e in env.crm("employee").values()] == ["ana@studio.example"]
    assert [f["Name"] for f in env.crm("firm").values()] == ["Harbor County"]
    assert [c["FirmName"] for c in env.crm("contact").values()] == ["Harbor County"]
    assert {s.flow for s in result.steps} == {"employees", "clients", "contacts", "projects"}

    env.tick()                                              # nothing new: nothing written
    env.vp.reset_hits()
    ok(await env.sync())
    assert env.crm_writes() == 0


# --- AJ-2 ------------------------------------------------------------------------------------
async def aj02_data(env):
    short = env.project("Harbor Clinic", sync=False)                     # 13 characters
    long_ = env.project(LONG, sync=False)                                # 57 characters
    lonely = env.project("Summit Office Tower", sync=False)              # no CRM project
    by_long_only = env.project("Cedar Fire Station", sync=False)         # only a long name
    env.crm_project("P-100", Name="Harbor Clinic", LongName="Harbor Clinic Expansion Study")
    env.crm_project("P-200", Name="Riverside Library Ph 2", LongName=LONG)
    env.crm_project("P-300", Name="Cedar Station", LongName="Cedar Fire Station")
    return short, long_, lonely, by_long_only


async def test_aj02_unsynced_projects_map_to_crm_projects_by_long_or_short_name(env):
    short, long_, lonely, by_long_only = await aj02_data(env)
    await env.start(map_unsynced_projects=True)
    ok(await env.sync())

    links = await env.links("projects")
    keys = {p["ProjectKey"]: p for p in (short, long_, lonely, by_long_only)}
    assert links == {str(short["ProjectKey"]): "P-100", str(long_["ProjectKey"]): "P-200"}
    projects = env.aj.data["Projects"]
    # a match turns sync on (Ajera) and marks the CRM project synced
    assert projects[short["ProjectKey"]]["SyncToCRM"] is True
    assert projects[long_["ProjectKey"]]["SyncToCRM"] is True
    assert env.crm("project")["P-100"]["AjeraSync"] == "Y"
    assert env.crm("project")["P-200"]["AjeraSync"] == "Y"
    # no match: nothing mapped, sync stays off, nothing created in the CRM
    for p in (lonely, by_long_only):
        assert projects[p["ProjectKey"]]["SyncToCRM"] is False
    assert set(env.crm("project")) == {"P-100", "P-200", "P-300"}
    assert env.crm("project")["P-300"]["AjeraSync"] == "N"
    assert len(keys) == 4


async def test_aj02_without_the_option_nothing_unsynced_is_mapped(env):
    await aj02_data(env)
    await env.start()
    ok(await env.sync())
    assert await env.links("projects") == {}
    assert all(not p["SyncToCRM"] for p in env.aj.data["Projects"].values())
    assert all(p["AjeraSync"] == "N" for p in env.crm("project").values())


# --- AJ-3 ------------------------------------------------------------------------------------
async def aj03_data(env):
    c1 = env.project("Maple School", status="Closed")
    c2 = env.project("Oak Museum", status="Closed")
    c3 = env.project("Granite Bridge", status="Closed", sync=False)
    for p in (c1, c2, c3):
        env.crm_project(p["ID"], Name=p["Description"], LongName=p["Description"])
    draft = env.aj.add_transaction(c2["ProjectKey"], "Invoice", 5000.0)
    return c1, c2, c3, draft


async def test_aj03_closed_projects_update_the_crm_only_when_they_or_their_transactions_changed(
        env):
    c1, c2, c3, draft = await aj03_data(env)
    await env.start(sync_closed_projects=True)
    ok(await env.sync())
    links = await env.links("closed_projects")
    assert links == {str(c1["ProjectKey"]): c1["ID"], str(c2["ProjectKey"]): c2["ID"]}
    assert env.crm("project")[c1["ID"]]["Status"] == "I"

    env.tick()                                  # time entered on c1: only c1 goes
    env.aj.add_transaction(c1["ProjectKey"], "Time", 190.0)
    env.aj.add_transaction(c3["ProjectKey"], "Time", 95.0)     # not marked to sync
    env.vp.reset_hits()
    result = await env.sync()
    ok(result)
    assert env.crm("project")[c1["ID"]]["AjeraSpentLabor"] == 190.0
    assert env.vp.count("PUT") == 1
    assert env.crm("project")[c3["ID"]]["AjeraSpentLabor"] is None

    env.tick()                                  # a draft invoice changes nothing
    env.aj.add_transaction(c2["ProjectKey"], "Invoice", 700.0)
    env.vp.reset_hits()
    ok(await env.sync())
    assert env.vp.count("PUT") == 0

    env.tick()                                  # finalised: c2's billed total goes
    env.aj.finalise_invoice(draft["TransactionKey"])
    env.vp.reset_hits()
    ok(await env.sync())
    assert env.crm("project")[c2["ID"]]["AjeraBilled"] == 5000.0
    assert env.vp.count("PUT") == 1

    env.tick()                                  # a project edit, a receipt: both go
    env.aj.edit("Projects", c1["ProjectKey"], Description="Maple School (archived)")
    env.aj.add_transaction(c2["ProjectKey"], "Receipt", 2500.0)
    env.aj.add_transaction(c2["ProjectKey"], "Expense", 80.0)
    env.vp.reset_hits()
    ok(await env.sync())
    assert env.crm("project")[c1["ID"]]["LongName"] == "Maple School (archived)"
    assert env.crm("project")[c2["ID"]]["AjeraReceived"] == 2500.0
    assert env.crm("project")[c2["ID"]]["AjeraSpentExpense"] == 80.0
    assert env.vp.count("PUT") == 2


async def test_aj03_without_the_option_closed_projects_are_left_alone(env):
    c1, *_ = await aj03_data(env)
    await env.start()
    result = await env.sync()
    ok(result)
    assert "closed_projects" not in {s.flow for s in result.steps}
    env.tick()
    env.aj.add_transaction(c1["ProjectKey"], "Time", 190.0)
    env.vp.reset_hits()
    ok(await env.sync())
    assert env.crm_writes() == 0


# --- AJ-4 ------------------------------------------------------------------------------------
BATCH = '[[integrations.aj.flows]]\nname = "projects"\nbatch_size = 5\n'


async def test_aj04_projects_sync_in_batches_with_the_runs_left_then_sync_completed(env):
    """1,600 projects in batches of 500, at a smaller scale: 16 projects in batches of 5."""
    projects = [env.project(f"Project {i:02d}") for i in range(16)]
    closed = env.project("Closed One", status="Closed")
    env.crm_project(closed["ID"], Name="Closed One", LongName="Closed One")
    await env.start(extra=BATCH, sync_closed_projects=True)

    messages, held = [], []
    for expected in (5, 10, 15):
        result = await env.sync(trigger="schedule")
        ok(result)
        assert result.more                              # the daemon goes on at once
        assert len(env.crm("project")) == expected + 1
        messages.append(step(result, "projects").message)
        held.append(step(result, "closed_projects").status)
    # the batches count the projects Ajera lists as changed (the closed one too: it is read
    # in the last batch, and left to closed_projects)
    assert messages == [
        "5 of 17 projects synchronised. The sync contained more than 5 projects: re-run the "
        "manual or auto sync 3 more times to sync the remaining 12 (continuing automatically)",
        "10 of 17 projects synchronised. The sync contained more than 5 projects: re-run the "
        "manual or auto sync 2 more times to sync the remaining 7 (continuing automatically)",
        "15 of 17 projects synchronised. The sync contained more than 5 projects: re-run the "
        "manual or auto sync 1 more time to sync the remaining 2 (continuing automatically)"]
    assert held == ["held", "held", "held"]             # normal syncing waits
    assert await env.links("closed_projects") == {}

    result = await env.sync(trigger="schedule")
    ok(result)
    assert not result.more
    assert step(result, "projects").message == "Sync Completed: 17 projects synchronised"
    assert step(result, "closed_projects").status == "ok"
    assert set(env.crm("project")) == {p["ID"] for p in projects} | {closed["ID"]}
    assert await env.links("closed_projects") == {str(closed["ProjectKey"]): closed["ID"]}

    env.tick()                                          # and then quiet again
    result = await env.sync()
    ok(result)
    assert step(result, "projects").message == ""


async def test_aj04_batch_size_on_an_entity_read_out_of_order_is_refused(env, tmp_path):
    from connectors.base import Capabilities, EntityInfo
    from daemon.app import check_entities
    from daemon.engine.rules import FieldRule, FlowRules

    class Unordered:
        name = "legacy"
        capabilities = Capabilities({"projects": EntityInfo("projects", ordered=False)})
    flow = FlowRules(name="projects", left_entity="projects", right_entity="project",
                     fields=[FieldRule(left="ID", right="WBS1")], batch_size=500)
    await env.start()
    with pytest.raises(ValueError, match="batch_size: legacy cannot read projects in order"):
        check_entities("aj", flow, {"left": Unordered(), "right": env.app.connectors["crm"]})
    check_entities("aj", flow, {"left": env.app.connectors["ajera"],
                                "right": env.app.connectors["crm"]})


# --- AJ-5 ------------------------------------------------------------------------------------
async def test_aj05_the_integration_log_tracks_every_run_on_the_page_and_in_status(
        env, capsys):
    for i in range(7):
        env.project(f"Project {i}")
    await env.start(extra=BATCH.replace("5\n", "4\n"))
    results = [await env.sync() for _ in range(2)]
    assert results[0].more and not results[1].more

    doc = await status_lib.gather(env.app.cfg, env.app.db)
    log = doc["integrations"][INTEG]["log"]
    assert [e["run"] for e in log] == [r.run_id for r in reversed(results)]
    first = {s["flow"]: s for s in log[1]["steps"]}
    assert first["projects"]["message"].startswith("4 of 7 projects synchronised")
    assert first["projects"]["counts"]["created_right"] == 4
    assert {s["flow"] for s in log[0]["steps"]} == {"employees", "clients", "contacts",
                                                   "projects"}
    page = render({"integrations": doc["integrations"], "generated_at": "now"})
    assert "Integration log" in page and "re-run the manual or auto sync 1 more time" in page
    assert "Sync Completed: 7 projects synchronised" in page

    await env.app.close()
    env.app = None
    capsys.readouterr()
    code = await cli.amain(["status", "--config", env.cfg_path])
    out = capsys.readouterr().out
    assert code == 0
    assert "integration log:" in out
    assert "projects: ok — Sync Completed: 7 projects synchronised" in out
    assert "projects: ok — 4 of 7 projects synchronised" in out
