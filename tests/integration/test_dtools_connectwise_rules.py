"""Rules DT-1 ... DT-10 (RULES.md, seed 000) end to end: the bundled ``dtools_connectwise``
preset, the D-Tools SI and ConnectWise Manage sandboxes over loopback HTTP, a real SQLite
state file, ``runner.run`` (and, for DT-1 and DT-10, the daemon's web side).

Left is D-Tools SI (a queue of published projects), right is Manage. Projects are made and
published by the test as an SI user would (``env.publish``).
"""
from __future__ import annotations


import aiohttp
import pytest

from daemon.service import Service
from tests.integration.dt_env import FLOWS, INTEG, close_env, counts, make_env, ok
from tests.waiting import idle, until

OPPORTUNITY = "Lead"          # one of the preset's default opportunity progresses
SOLD = "Approved"             # not one of them


@pytest.fixture
async def env(tmp_path):
    e = await make_env(tmp_path)
    yield e
    await close_env(e)


def only(rows: list[dict]) -> dict:
    assert len(rows) == 1, rows
    return rows[0]


async def opportunity_of(env, project: dict) -> dict:
    links = await env.links("opportunities")
    return env.cw.data["opportunities"][int(links[project["Id"]])]


# --- DT-2: four steps in order, each with a status and a message ---------------------------
async def test_dt02_a_run_has_the_four_steps_in_order_each_with_status_and_message(env):
    await env.start()
    env.publish(env.new_project(progress=SOLD))
    result = await env.sync()
    ok(result)
    assert [s.flow for s in result.steps] == FLOWS
    rows = await env.rows("steps")
    assert [r["flow"] for r in rows] == FLOWS
    assert all(r["status"] == "ok" for r in rows)
    # a product Manage refuses (no description) is an error of the products step, with the
    # vendor's message in the step's message column; the later steps still run
    bad = env.new_project(progress=OPPORTUNITY, items=1)
    bad["Items"][0].update(Model="NO-DESC-1", Description="")
    env.publish(bad)
    result = await env.sync()
    assert result.status == "errors"
    step = next(s for s in result.steps if s.flow == "products")
    assert step.status == "errors"
    assert "description" in step.message and "NO-DESC-1" in step.message
    assert [s.flow for s in result.steps] == FLOWS
    last = [r for r in await env.rows("steps") if r["run_id"] == result.run_id]
    assert next(r for r in last if r["flow"] == "products")["message"] == step.message


# --- DT-3: both systems checked first; a failure shown on the step --------------------------
async def test_dt03_a_connection_failure_is_shown_on_its_step_and_nothing_is_read(env):
    await env.start(private_key="wrong-private-key")
    env.publish(env.new_project())
    env.reset_hits()
    result = await env.sync()
    assert result.status == "failed"
    assert [(s.flow, s.status) for s in result.steps] == [("connect", "failed")]
    assert "right system cw" in result.message and "credentials refused" in result.message
    assert "wrong-private-key" not in result.message
    rows = await env.rows("steps")
    assert [(r["flow"], r["status"], r["message"]) for r in rows] == [
        ("connect", "failed", result.message)]
    assert env.si.count(path_prefix="/SI/Subscribe/Projects/") == 0     # no project read
    assert len(env.si.unimported()) == 1                                 # still queued


# --- DT-4: companies and contacts matched first, never duplicated ---------------------------
async def test_dt04_company_and_contact_are_matched_before_any_create(env):
    project = env.new_project(client="Harbor Homes", progress=OPPORTUNITY)
    contact = project["Contacts"][0]
    company = env.cw.insert("companies", {"identifier": "HARBOR", "name": "HARBOR  homes"})
    env.cw.insert("contacts", {
        "firstName": "Pat", "lastName": "Doe", "company": {"id": company["id"]},
        "communicationItems": [{"type": {"name": "Email"}, "communicationType": "Email",
                                "defaultFlag": True, "value": contact["Email"].upper()}]})
    await env.start()
    env.publish(project)
    result = await env.sync()
    ok(result)
    assert counts(result, "clients") .get("matched") == 1
    assert counts(result, "contacts").get("matched") == 1
    assert len(env.cw.data["companies"]) == 1 and len(env.cw.data["contacts"]) == 1
    # a second project of the same client, and the same one published again: no duplicate
    env.publish(env.new_project(client="Harbor Homes", progress=OPPORTUNITY))
    env.publish(env.si.project(project["Id"]))
    ok(await env.sync())
    assert len(env.cw.data["companies"]) == 1 and len(env.cw.data["contacts"]) == 1
    opp = await opportunity_of(env, project)
    assert opp["company"]["id"] == company["id"]


async def test_dt04_a_new_client_is_created_with_its_contact(env):
    await env.start()
    project = env.new_project(client="Atlas Partners", progress=OPPORTUNITY)
    env.publish(project)
    ok(await env.sync())
    company = only(env.cw_rows("companies", name="Atlas Partners"))
    assert company["identifier"] == project["ClientNumber"]
    contact = only(env.cw_rows("contacts", company__id=company["id"]))
    name = project["Contacts"][0]["Name"].split()
    assert (contact["firstName"], contact["lastName"]) == (name[0], " ".join(name[1:]))
    assert contact["communicationItems"][0]["value"] == project["Contacts"][0]["Email"]


# --- DT-5: products added to the catalog only when absent -----------------------------------
async def test_dt05_products_are_added_to_the_catalog_only_when_absent(env):
    project = env.new_project(progress=OPPORTUNITY, items=4)
    models = sorted({i["Model"] for i in project["Items"]})
    existing = env.cw.insert("catalog", {"identifier": models[0].lower(),
                                         "description": "Manage's own description"})
    await env.start()
    env.publish(project)
    result = await env.sync()
    ok(result)
    assert counts(result, "products") == {**counts(result, "products"), "matched": 1,
                                          "created_right": len(models) - 1}
    catalog = {c["identifier"].casefold(): c for c in env.cw.data["catalog"].values()}
    assert set(catalog) == {m.casefold() for m in models}
    assert catalog[models[0].casefold()]["description"] == "Manage's own description"
    assert catalog[models[0].casefold()]["id"] == existing["id"]     # matched, not re-made
    # labor is not a product; a product used by two projects is added once
    again = env.new_project(progress=OPPORTUNITY, items=2)
    again["Items"][0].update(Model=models[1])
    again["Items"][1].update(Model="LABOR-1", TypeId=2)
    env.publish(again)
    ok(await env.sync())
    assert len(env.cw.data["catalog"]) == len(models)


# --- DT-6: each project an opportunity with its products ------------------------------------
async def test_dt06_each_project_becomes_an_opportunity_with_its_product_lines(env):
    await env.start()
    project = env.new_project(progress=OPPORTUNITY, items=5)
    env.publish(project)
    ok(await env.sync())
    opp = await opportunity_of(env, project)
    assert opp["name"] == project["Name"]
    lines = env.cw_rows("products", opportunity__id=opp["id"])
    assert len(lines) == 5
    by_xref = {p["integrationXRef"]: p for p in lines}
    item = project["Items"][0]
    line = by_xref[f"{project['Id']}/{item['Id']}"]
    assert (line["quantity"], line["price"], line["catalogItem"]["identifier"]) == (
        item["Quantity"], item["UnitPrice"], item["Model"])
    forecast = env.cw.forecasts[opp["id"]]          # Manage's forecast lines follow
    assert len(forecast) == 5

    # published again: one item removed, one changed -> the line goes, the other is updated,
    # nothing is created twice
    edited = env.si.project(project["Id"])
    gone = edited["Items"].pop(1)
    edited["Items"][0]["Quantity"] = 9.0
    env.publish(edited)
    env.reset_hits()
    result = await env.sync()
    ok(result)
    lines = {p["integrationXRef"]: p for p in env.cw_rows("products", opportunity__id=opp["id"])}
    assert f"{project['Id']}/{gone['Id']}" not in lines and len(lines) == 4
    assert lines[f"{project['Id']}/{item['Id']}"]["quantity"] == 9.0
    assert len(env.cw.forecasts[opp["id"]]) == 4
    assert counts(result, "opportunity_products").get("deleted") == 1
    assert env.cw.count("POST") == 0
    assert len(env.cw.data["opportunities"]) == 1

    # delivered again as it is (no acknowledgement reached SI): nothing is written
    for m in env.si.messages:
        m["ImportedOn"] = None
    env.reset_hits()
    ok(await env.sync())
    assert env.cw.writes() == 0


async def test_dt03_the_queue_read_by_the_check_serves_every_flow_of_the_run(env):
    """The check reads the queue (it proves the key) and every flow of the run works from
    that listing: an idle run asks SI once, not once per flow. A project published while the
    run is under way stays queued, unmarked, and the next run delivers it."""
    await env.start()
    first = env.new_project(progress=SOLD, items=1)
    env.publish(first)
    ok(await env.sync())
    env.reset_hits()
    ok(await env.sync())                                     # idle: nothing new queued
    assert [(h.method, h.path) for h in env.si.hits] == [("GET", "/SI/Subscribe/Projects")]

    late = env.new_project(progress=SOLD, items=1)
    published: list = []

    def publish_once(*_a) -> None:
        if not published:
            published.append(env.publish(late))
    ok(await env.sync(progress=publish_once))
    assert published and late["Id"] not in await env.links("opportunities")  # not this run
    assert any(m["Id"] == late["Id"] for m in env.si.unimported())  # still queued
    ok(await env.sync())
    assert (await opportunity_of(env, late))["status"]["name"] == "Won"


# --- DT-7: the won status ---------------------------------------------------------------------
async def test_dt07_not_an_opportunity_progress_gets_the_won_status(env):
    await env.start()
    lead = env.new_project(progress=" lead ", items=1)          # case and spaces ignored
    sold = env.new_project(progress=SOLD, items=1)
    env.publish(lead)
    env.publish(sold)
    ok(await env.sync())
    assert (await opportunity_of(env, lead))["status"]["name"] == "Open"
    assert (await opportunity_of(env, sold))["status"]["name"] == "Won"
    # the lead is sold later: its opportunity is won
    later = env.si.project(lead["Id"])
    later["Progress"] = "Completed"
    env.publish(later)
    ok(await env.sync())
    assert (await opportunity_of(env, lead))["status"]["name"] == "Won"


async def test_dt07_the_won_status_and_progresses_come_from_the_configuration(env):
    await env.start(options='opportunity_progresses = ["Approved"]\nwon_status = "No Decision"')
    a = env.new_project(progress="Approved", items=1)
    b = env.new_project(progress="Lead", items=1)
    env.publish(a)
    env.publish(b)
    ok(await env.sync())
    assert (await opportunity_of(env, a))["status"]["name"] == "Open"
    assert (await opportunity_of(env, b))["status"]["name"] == "No Decision"


# --- DT-8: the sales representative -----------------------------------------------------------
@pytest.mark.parametrize("owner,member", [
    ("Anita Kumar", "akumar"),           # a Manage member of that name
    ("anita  KUMAR", "akumar"),          # names compare as people read them
    ("Rita Hayes", "admin"),             # no such member: the configured default
    (None, "admin"),                     # the export has no resources: the default
])
async def test_dt08_sales_rep_is_the_member_named_like_the_owner_else_the_default(
        env, owner, member):
    await env.start()
    project = env.new_project(progress=OPPORTUNITY, items=1, owner=owner)
    env.publish(project)
    ok(await env.sync())
    assert (await opportunity_of(env, project))["primarySalesRep"]["identifier"] == member


async def test_dt08_the_default_sales_rep_is_configured(env):
    await env.start(options='default_sales_rep = "mlopez"')
    project = env.new_project(progress=OPPORTUNITY, items=1, owner=None)
    env.publish(project)
    ok(await env.sync())
    assert (await opportunity_of(env, project))["primarySalesRep"]["identifier"] == "mlopez"


# --- DT-9: a sold project is a Manage project with one ticket per location --------------------
async def test_dt09_sold_project_gets_a_project_with_a_ticket_per_location_and_its_products(
        env):
    await env.start()
    sold = env.new_project(progress=SOLD, items=6, locations=4)
    lead = env.new_project(progress=OPPORTUNITY, items=2)
    env.publish(sold)
    env.publish(lead)
    ok(await env.sync())
    assert len(env.cw.data["projects"]) == 1                 # the lead has no project
    mproject = only(env.cw_rows("projects", name=sold["Name"]))
    assert mproject["board"]["name"] == "Professional Services"
    opp = await opportunity_of(env, sold)
    assert mproject["opportunity"]["id"] == opp["id"]
    tickets = {t["summary"]: t for t in env.cw_rows("tickets", project__id=mproject["id"])}
    assert set(tickets) == {loc["FullName"] for loc in sold["Locations"]}   # nested included
    assert "Main Floor > Kitchen" in tickets or len(tickets) == 4
    by_location = {loc["Id"]: loc["FullName"] for loc in sold["Locations"]}
    for item in sold["Items"]:
        ticket = tickets[by_location[item["LocationId"]]]
        carried = [p for p in env.cw_rows("products", ticket__id=ticket["id"])
                   if p["catalogItem"]["identifier"] == item["Model"]
                   and p["quantity"] == item["Quantity"]]
        assert carried, (item, ticket["summary"])
    assert sum(len(env.cw_rows("products", ticket__id=t["id"])) for t in tickets.values()) == 6

    # a room removed in SI: its ticket goes; published again: nothing created twice
    edited = env.si.project(sold["Id"])
    room = edited["Locations"].pop()
    edited["Items"] = [i for i in edited["Items"] if i["LocationId"] != room["Id"]]
    env.publish(edited)
    env.reset_hits()
    ok(await env.sync())
    left = {t["summary"] for t in env.cw_rows("tickets", project__id=mproject["id"])}
    assert room["FullName"] not in left and len(left) == 3
    assert env.cw.count("POST") == 0


async def test_dt09_a_lead_sold_later_gets_its_project_then(env):
    await env.start()
    lead = env.new_project(progress=OPPORTUNITY, items=2, locations=2)
    env.publish(lead)
    ok(await env.sync())
    assert not env.cw.data["projects"] and not env.cw.data["tickets"]
    sold = env.si.project(lead["Id"])
    sold["Progress"] = SOLD
    env.publish(sold)
    ok(await env.sync())
    mproject = only(env.cw_rows("projects", name=lead["Name"]))
    assert len(env.cw_rows("tickets", project__id=mproject["id"])) == 2


# --- the feed: acknowledged after commit, at least once ----------------------------------------
async def test_dt_feed_is_acknowledged_only_once_committed_and_a_failed_project_stays(env):
    await env.start()
    good = env.new_project(progress=OPPORTUNITY, items=2)
    bad = env.new_project(progress=OPPORTUNITY, items=1)
    bad["Items"][0].update(Model="NO-DESC-2", Description="")
    env.publish(good)
    env.publish(bad)
    result = await env.sync()
    assert result.status == "errors"
    assert [m["Id"] for m in env.si.unimported()] == [bad["Id"]]      # retried next run
    fixed = env.si.project(bad["Id"])
    fixed["Items"][0]["Description"] = "Now described"
    env.publish(fixed)
    ok(await env.sync())
    assert env.si.unimported() == []


async def test_dt_feed_a_project_published_again_during_the_run_is_not_acknowledged(env):
    await env.start()
    project = env.new_project(progress=OPPORTUNITY, items=2)
    env.publish(project)
    published = []

    def progress(flow, counts):
        if flow == "opportunity_products" and not published:
            again = env.si.project(project["Id"])
            again["Name"] = project["Name"] + " (rev 2)"
            published.append(env.si.publish(again))
    ok(await env.sync(progress=progress))
    # the flows read two versions of it: not acknowledged, both messages stay queued
    assert published and len(env.si.unimported()) == 2
    ok(await env.sync())
    assert (await opportunity_of(env, project))["name"].endswith("(rev 2)")
    assert env.si.unimported() == []


# --- DT-1 and DT-10: through the daemon ---------------------------------------------------------
TOKEN = "dt-web-token-5522"


@pytest.fixture
async def service(env):
    path = env.write_config(extra=f'[web]\nport = 0\ntoken = "{TOKEN}"\n')
    svc = Service(path, configure_logging=False, activity=False)
    await svc.start(paused=True)
    yield svc
    await svc.stop()


async def _wait_idle(svc: Service) -> None:
    await until(idle(svc, INTEG), "the run finishing")


async def test_dt01_poll_now_starts_a_run_at_once_and_the_schedule_starts_runs(env, service):
    env.publish(env.new_project(progress=OPPORTUNITY, items=1))
    job = next(j for j in service.jobs() if j.args[0] == INTEG)
    assert job.trigger.interval.total_seconds() == 15 * 60        # the preset's schedule
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{service.web.url}/api/integrations/{INTEG}/run",
                             headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 202, await resp.text()
    await _wait_idle(service)
    runs = await _runs(service)
    assert [(r["trigger"], r["status"]) for r in runs] == [("web", "ok")]
    assert len(env.cw.data["opportunities"]) == 1
    await service.run_job(job.id)                                   # the schedule fires
    runs = await _runs(service)
    assert [r["trigger"] for r in runs][-1] != "web" and len(runs) == 2


async def _runs(svc: Service) -> list[dict]:
    from sqlalchemy import select

    from daemon.store.tables import T
    async with svc.app.db.connect() as conn:
        return [dict(r) for r in (await conn.execute(
            select(T["runs"]).order_by(T["runs"].c.id))).mappings()]


async def test_dt10_the_status_view_shows_each_step_and_mapping_while_a_run_is_under_way(
        env, service):
    for _ in range(3):
        env.publish(env.new_project(progress=SOLD, items=3))
    env.cw.faults.latency = 0.02            # a run that takes a moment to watch
    seen: list[dict] = []
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{service.web.url}/api/integrations/{INTEG}/run",
                             headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 202
        async def watched_to_the_end() -> bool:
            async with http.get(f"{service.web.url}/api/status") as resp:
                doc = (await resp.json())["integrations"][INTEG]
            if doc.get("running"):
                seen.append(doc)
            return bool(seen) and not doc.get("running")
        await until(watched_to_the_end, "the run watched from start to end", 60, poll=0.02)
        async with http.get(f"{service.web.url}/") as resp:
            page = await resp.text()
    await _wait_idle(service)
    steps = [s for d in seen for s in d["last_run"]["steps"]]
    assert {s["flow"] for s in steps} == set(FLOWS)       # every mapping is listed ...
    assert any(s["status"] == "running" for s in steps)   # ... with its live status
    assert any(s["status"] == "ok" for s in steps) and any(
        s["status"] not in ("ok", "running") for s in steps)     # done, under way, to come
    for flow in FLOWS:
        assert flow in page
    assert "refresh" in page
