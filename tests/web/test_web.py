"""daemon/web.py: the JSON API, auth on POST, the operator's buttons (retry, exclude, include,
approve, pause, resume), webhooks (UL-4), health, no secrets. Metrics: test_metrics.py."""
from __future__ import annotations

import json
from urllib.parse import unquote

from sqlalchemy import insert, select

from daemon.store.db import now
from daemon.store.tables import T
from tests.test_cli import logs  # noqa: F401  (the fixture)
from tests.web.conftest import (TOKEN, get, post, refused_company, start_service, until_idle,
                                web_config)

POSTS = ("run", "approve", "retry", "exclude", "include", "pause", "resume", "approve-first-run",
         "links")
PATHS = tuple(f"/api/integrations/ul/{p}" for p in POSTS) + ("/api/webhooks/ul",)


async def open_errors(svc) -> list[dict]:
    async with svc.app.db.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(T["record_errors"]))).mappings()]


async def exclusions(svc) -> list[tuple]:
    ex = T["exclusions"]
    async with svc.app.db.connect() as conn:
        return [tuple(r) for r in await conn.execute(
            select(ex.c.flow, ex.c.side, ex.c.record_id, ex.c.mode).order_by(ex.c.record_id))]


# --- auth --------------------------------------------------------------------------------------
async def test_post_needs_the_token(service, http):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        for path in PATHS:
            status, body = await post(http, service, path, headers=headers, json={})
            assert status == 401 and "token" in body["error"], (path, headers)
    assert not (await service.web._last_run_id("ul"))          # nothing ran
    async with service.app.db.connect() as conn:
        assert not (await conn.execute(select(T["pauses"]))).all()   # nor was paused
    status, body = await post(http, service, "/api/integrations/ul/run")
    assert status == 202 and body["status"] == "started" and body["run"] >= 1
    await until_idle(service)
    assert service.last["ul"].run_id == body["run"]


async def test_without_a_configured_token_post_is_forbidden(tmp_path, sandboxes, http):
    ul, crm = sandboxes
    svc = await start_service(web_config(tmp_path, ul, crm, token=None))
    try:
        for path in PATHS:
            status, body = await post(http, svc, path)
            assert status == 403 and "set [web] token" in body["error"], path
        await get(http, svc, "/api/status")                    # GETs still answer
        _, page = await get(http, svc, "/")
        assert "Buttons are off" in page and 'id="token" type="hidden"' in page
    finally:
        await svc.stop()
    assert ul.count() == 0


async def test_unknown_integration_and_a_run_under_way(service, http, sandboxes):
    ul, _ = sandboxes
    for path in [f"/api/integrations/nope/{p}" for p in POSTS] + ["/api/webhooks/nope"]:
        status, body = await post(http, service, path, json={
            "flow": "companies", "side": "left", "id": "1", "ids": ["1"]})
        assert status == 404 and body["integrations"] == ["ul"], path
        assert body["error"] == "no enabled integration named 'nope'"
    ul.faults.latency = 0.2
    status, first = await post(http, service, "/api/integrations/ul/run")
    assert status == 202
    status, second = await post(http, service, "/api/integrations/ul/run")
    assert status == 409 and second["message"] == "skipped: a run is under way"
    ul.faults.latency = 0
    await until_idle(service)


# --- status ------------------------------------------------------------------------------------
async def test_status_json_after_a_run(service, http):
    result = await service.run_job("sync:ul")
    assert result.status == "ok"
    _, body = await get(http, service, "/api/status")
    doc = json.loads(body)
    ul = doc["integrations"]["ul"]
    assert ul["systems"] == {"left": {"name": "unleashed", "type": "unleashed"},
                             "right": {"name": "prospect", "type": "prospect_crm"}}
    assert [f["name"] for f in ul["flows"]] == ["companies", "contacts"]
    assert ul["flows"][0]["description"].startswith(
        "unleashed customers ⇄ prospect companies, both ways")
    assert ul["paused"] is None and ul["failure"] is None
    assert ul["runs"][0] == ul["last_run"] and len(ul["runs"]) == 1
    assert doc["running"] is False and ul["running"] is False and ul["health"] == "ok"
    assert ul["last_run"]["id"] == result.run_id and ul["last_run"]["status"] == "ok"
    assert [s["flow"] for s in ul["last_run"]["steps"]] == [s.flow for s in result.steps]
    companies = ul["last_run"]["steps"][0]
    assert companies["status"] == "ok" and companies["counts"]["created_right"] == 4
    assert ul["next_run"] and ul["next_run"][:4].isdigit()      # the scheduler's time
    assert ul["record_errors"] == [] and ul["held_deletes"] == []
    _, page = await get(http, service, "/")
    assert "created in prospect <b>4</b>" in page and 'data-status="ok"' in page


async def test_status_page_lists_errors_reviews_and_held_deletes_with_approve(service, http):
    db = service.app.db
    async with db.begin() as conn:
        await conn.execute(insert(T["record_errors"]).values(
            integration="ul", flow="companies", side="right", record_id="77",
            message="website <not allowed>", retry=False, count=2, run_id=1, updated_at=now()))
        await conn.execute(insert(T["reviews"]).values(
            integration="ul", flow="companies", side="left", record_id="g-1",
            candidates='["1","2"]', reason="two companies named Acme", updated_at=now()))
        await conn.execute(insert(T["held_deletes"]).values(
            integration="ul", flow="companies", link_id=1, target="right", record_id="5",
            action="delete", run_id=1, created_at=now()))
    _, page = await get(http, service, "/")
    assert "website &lt;not allowed&gt;" in page                 # escaped
    assert "two companies named Acme" in page
    assert 'data-url="/api/integrations/ul/approve"' in page and "Approve 1 held delete" in page
    status, body = await post(http, service, "/api/integrations/ul/approve",
                              json={"flow": "nope"})
    assert status == 400 and "no flow" in body["error"]
    status, body = await post(http, service, "/api/integrations/ul/approve")
    assert status == 200 and body["approved"] == 1
    async with db.connect() as conn:
        held = (await conn.execute(select(T["held_deletes"]))).mappings().all()
    assert [h["approved"] for h in held] == [True]
    _, page = await get(http, service, "/")
    assert "Approve 1 held delete" not in page


# --- the operator's buttons --------------------------------------------------------------------
async def test_retry_a_record_error_then_the_next_run_reads_it_again(service, http, sandboxes):
    ul, crm = sandboxes
    guid, key, _ = await refused_company(service, crm)
    async with service.app.db.begin() as conn:          # as if it had been set aside
        await conn.execute(T["record_errors"].update().values(retry=False, count=4))
    for bad, status in (({"side": "right", "id": key}, 400),                 # no flow
                        ({"flow": "nope", "side": "right", "id": key}, 400),
                        ({"flow": "companies", "side": "up", "id": key}, 400),
                        ({"flow": "companies", "id": key}, 400),             # id needs a side
                        ({"flow": "companies", "side": "right", "id": "999"}, 404),
                        ({"flow": "contacts"}, 404)):                        # none in that flow
        code, body = await post(http, service, "/api/integrations/ul/retry", json=bad)
        assert code == status, (bad, body)
    code, body = await post(http, service, "/api/integrations/ul/retry",
                            json={"flow": "companies", "side": "prospect", "id": key})
    assert code == 200 and body["retried"] == 1
    assert body["message"] == (f"prospect companies record {key}: 1 record error marked for "
                               f"retry; the next run reads it again")
    [err] = await open_errors(service)
    assert (err["retry"], err["count"]) == (True, 0)
    crm.modify("Companies", int(key), {"Website": "https://fixed.example.com"})
    result = await service.run_job("sync:ul")
    assert result.status == "ok" and await open_errors(service) == []
    assert ul.customers[guid]["Website"] == "https://fixed.example.com"


async def test_retry_all_of_a_flow(service, http, sandboxes):
    _, crm = sandboxes
    await refused_company(service, crm)
    code, body = await post(http, service, "/api/integrations/ul/retry",
                            json={"flow": "companies"})
    assert code == 200 and body["retried"] == 1 and "prospect" not in body["message"]


async def test_exclude_a_refused_record_and_include_it_again(service, http, sandboxes):
    ul, crm = sandboxes
    guid, key, _ = await refused_company(service, crm)
    target = {"flow": "companies", "side": "right", "id": key}
    code, body = await post(http, service, "/api/integrations/ul/exclude",
                            json={"flow": "companies", "side": "right"})
    assert code == 400 and "id" in body["error"]
    code, body = await post(http, service, "/api/integrations/ul/exclude", json=target)
    assert code == 200 and "left out until it is included again" in body["message"]
    assert await open_errors(service) == []               # decided: no longer an error
    assert await exclusions(service) == [("companies", "right", key, "never")]
    crm.modify("Companies", int(key), {"Telephone": "+64 9 555 0101"})
    before = ul.customers[guid]["PhoneNumber"]
    assert (await service.run_job("sync:ul")).status == "ok"
    assert ul.customers[guid]["PhoneNumber"] == before    # excluded: not synced
    code, body = await post(http, service, "/api/integrations/ul/include", json=target)
    assert code == 200 and "the next run reads it" in body["message"]
    code, body = await post(http, service, "/api/integrations/ul/include", json=target)
    assert code == 404 and "is not excluded" in body["error"]
    crm.modify("Companies", int(key), {"Website": "https://fixed.example.com"})
    assert (await service.run_job("sync:ul")).status == "ok"
    assert ul.customers[guid]["PhoneNumber"] == "+64 9 555 0101"


async def test_pause_stops_scheduled_runs_and_webhooks_and_survives_a_restart(
        tmp_path, sandboxes, http):
    ul, crm = sandboxes
    path = web_config(tmp_path, ul, crm)
    svc = await start_service(path)
    try:
        code, body = await post(http, svc, "/api/integrations/ul/pause",
                                json={"reason": "ERP upgrade"})
        assert code == 200 and body["message"] == ("ul paused: no scheduled runs until it is "
                                                   "resumed")
        code, body = await post(http, svc, "/api/integrations/ul/pause")
        assert code == 409 and body["error"] == "ul is already paused"
        assert await svc.run_job("sync:ul") is None          # the scheduler's tick: skipped
        assert not await svc.web._last_run_id("ul")
        code, body = await post(http, svc, "/api/webhooks/ul",
                                json={"flow": "companies", "side": "right", "ids": ["1"]})
        assert code == 409 and "paused" in body["error"]
        _, text = await get(http, svc, "/api/status")
        assert json.loads(text)["integrations"]["ul"]["paused"]["reason"] == "ERP upgrade"
    finally:
        await svc.stop()
    svc = await start_service(path)                          # kept in the state
    try:
        assert await svc.run_job("sync:ul") is None
        _, page = await get(http, svc, "/")
        assert 'data-paused="1"' in page and "(ERP upgrade)" in page and ">Resume<" in page
        code, body = await post(http, svc, "/api/integrations/ul/run")   # a person still can
        assert code == 202
        await until_idle(svc)
        code, body = await post(http, svc, "/api/integrations/ul/resume")
        assert code == 200 and "on its schedule again" in body["message"]
        code, body = await post(http, svc, "/api/integrations/ul/resume")
        assert code == 409 and body["error"] == "ul is not paused"
        result = await svc.run_job("sync:ul")
        assert result is not None and result.status == "ok"
    finally:
        await svc.stop()


# --- webhooks (UL-4) ---------------------------------------------------------------------------
async def _links(svc) -> dict[str, str]:
    links = T["links"]
    async with svc.app.db.connect() as conn:
        return {r.left_id: r.right_id for r in await conn.execute(
            select(links.c.left_id, links.c.right_id).where(links.c.flow == "companies"))}


async def test_webhook_runs_only_the_records_it_names(service, http, sandboxes):
    ul, crm = sandboxes
    assert (await service.run_job("sync:ul")).status == "ok"
    (g1, k1), (g2, k2) = sorted((await _links(service)).items())[:2]
    phone2 = ul.customers[g2]["PhoneNumber"]
    crm.modify("Companies", int(k1), {"Telephone": "+64 3 555 0001"})
    crm.modify("Companies", int(k2), {"Telephone": "+64 3 555 0002"})
    ul.reset_hits()
    crm.reset_hits()
    for bad in ({"flow": "nope", "side": "right", "ids": [k1]},
                {"flow": "companies", "side": "up", "ids": [k1]},
                {"flow": "companies", "side": "right", "ids": []}):
        status, body = await post(http, service, "/api/webhooks/ul", json=bad)
        assert status == 400, body
    status, body = await post(http, service, "/api/webhooks/ul",
                              json={"flow": "companies", "side": "right", "ids": [k1]})
    assert status == 202 and body["status"] == "started" and body["run"] >= 2
    await until_idle(service)
    result = service.last["ul"]
    assert result.run_id == body["run"] and result.status == "ok"
    assert [s.flow for s in result.steps] == ["companies"]
    assert dict(result.steps[0].counts) == {"updated_left": 1}
    # the CRM read is one by-key filter for k1; Unleashed: one read and one write of g1
    company_reads = [unquote(h.query) for h in crm.hits if h.path == "/Companies"
                     and "$filter" in unquote(h.query)]
    assert len(company_reads) == 1 and f"CompanyId eq {k1})" in company_reads[0]
    assert crm.writes() == 0 and ul.writes() == 1
    assert [(h.method, h.path) for h in ul.hits if h.path.startswith("/Customers/")
            and h.path != "/Customers/1"] == [("GET", f"/Customers/{g1}"),
                                             ("POST", f"/Customers/{g1}")]
    assert not [h for h in ul.hits if h.path.endswith("Contacts")]
    assert ul.customers[g1]["PhoneNumber"] == "+64 3 555 0001"
    assert ul.customers[g2]["PhoneNumber"] == phone2           # not named: not synced
    runs = await service.web._last_run_id("ul")
    assert runs == body["run"]


async def test_webhooks_during_a_run_wait_for_it_and_are_merged(service, http, sandboxes):
    ul, crm = sandboxes
    assert (await service.run_job("sync:ul")).status == "ok"
    (g1, k1), (g2, k2) = sorted((await _links(service)).items())[:2]
    crm.modify("Companies", int(k1), {"Telephone": "+64 3 555 0011"})
    crm.modify("Companies", int(k2), {"Telephone": "+64 3 555 0012"})
    ul.faults.latency = 0.3                       # the run under way takes a while
    status, running = await post(http, service, "/api/integrations/ul/run")
    assert status == 202
    for k in (k1, k2):
        status, body = await post(http, service, "/api/webhooks/ul",
                                  json={"flow": "companies", "side": "right", "ids": [k]})
        assert status == 202 and body["status"] == "queued", body
    ul.faults.latency = 0
    await until_idle(service)
    _, text = await get(http, service, "/api/status")
    last = json.loads(text)["integrations"]["ul"]["last_run"]
    assert last["trigger"] == "webhook" and last["id"] == running["run"] + 1  # one, merged
    assert [s["flow"] for s in last["steps"]] == ["companies"]


# --- health ------------------------------------------------------------------------------------
async def test_healthz_and_readyz(service, http):
    r, body = await get(http, service, "/healthz")
    assert '"alive"' in body
    r, body = await get(http, service, "/readyz")
    assert '"ready"' in body
    await service.app.db.dispose()
    service.app.db.sync_engine.url                # still an engine; break it for real:
    app_db, service.app.db = service.app.db, None
    try:
        await get(http, service, "/readyz", status=503)
    finally:
        service.app.db = app_db


async def test_secrets_never_in_a_get(service, http):
    assert (await service.run_job("sync:ul")).status == "ok"
    for path in ("/", "/partial", "/api/status", "/metrics", "/healthz", "/readyz"):
        await get(http, service, path)                # get() checks every secret is absent


async def test_the_web_port_in_use_is_logged_and_the_service_runs(tmp_path, sandboxes, service):
    ul, crm = sandboxes
    busy = service.web.port
    path = tmp_path / "busy.toml"
    path.write_text(open(web_config(tmp_path, ul, crm)).read()
                    .replace("port = 0", f"port = {busy}"))
    from daemon.service import Service
    other = Service(path, configure_logging=False, activity=False)
    await other.start(paused=True)
    try:
        assert other.web is None and other.scheduler.running
    finally:
        await other.stop()


async def test_a_reload_takes_a_new_token_and_keeps_serving(tmp_path, sandboxes, http):
    ul, crm = sandboxes
    path = web_config(tmp_path, ul, crm)
    svc = await start_service(path)
    try:
        web_before = svc.web
        text = open(path).read()
        open(path, "w").write(text.replace(TOKEN, "a-newer-token-5150"))
        assert await svc.reload()
        assert svc.web is web_before                  # same host and port: not restarted
        status, _ = await post(http, svc, "/api/integrations/ul/approve")
        assert status == 401
        status, _ = await post(http, svc, "/api/integrations/ul/approve",
                               headers={"Authorization": "Bearer a-newer-token-5150"})
        assert status == 200
        open(path, "w").write(text.replace("port = 0", "port = 0\nhost = \"localhost\""))
        assert await svc.reload()
        assert svc.web is not web_before and svc.web.host == "localhost"
        await get(http, svc, "/readyz")
    finally:
        await svc.stop()


async def test_the_example_token_is_flagged_off_loopback(tmp_path, sandboxes, logs):
    ul, crm = sandboxes
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        (tmp_path / host).mkdir()
        svc = await start_service(web_config(tmp_path / host, ul, crm, token="demo-token",
                                             web=f'host = "{host}"'))
        await svc.stop()
        events = [e for e in logs if e["event"] == "web.example_token"]
        assert bool(events) is warned, host
        assert all("demo-token" not in str(e) for e in logs)      # never logged itself
