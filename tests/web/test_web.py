"""daemon/web.py: the JSON API, auth on POST, webhooks (UL-4), metrics, health, no secrets."""
from __future__ import annotations

import re
from urllib.parse import unquote

from sqlalchemy import insert, select

from daemon.store.db import now
from daemon.store.tables import T
from tests.web.conftest import SECRETS, TOKEN, start_service, until_idle, web_config

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
                    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)?\})? '
                    r'(-?[0-9.]+(e[+-]?[0-9]+)?|NaN|[+-]Inf)$')


async def get(http, svc, path: str, status: int = 200):
    async with http.get(svc.web.url + path) as r:
        body = await r.text()
        assert r.status == status, body
        for secret in SECRETS:
            assert secret not in body, f"{secret!r} shown by GET {path}"
        return r, body


async def post(http, svc, path: str, *, headers=AUTH, json=None):
    async with http.post(svc.web.url + path, headers=headers, json=json) as r:
        return r.status, await r.json()


# --- auth --------------------------------------------------------------------------------------
async def test_post_needs_the_token(service, http):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        for path in ("/api/integrations/ul/run", "/api/integrations/ul/approve",
                     "/api/webhooks/ul"):
            status, body = await post(http, service, path, headers=headers, json={})
            assert status == 401 and "token" in body["error"], (path, headers)
    assert not (await service.web._last_run_id("ul"))          # nothing ran
    status, body = await post(http, service, "/api/integrations/ul/run")
    assert status == 202 and body["status"] == "started" and body["run"] >= 1
    await until_idle(service)
    assert service.last["ul"].run_id == body["run"]


async def test_without_a_configured_token_post_is_forbidden(tmp_path, sandboxes, http):
    ul, crm = sandboxes
    svc = await start_service(web_config(tmp_path, ul, crm, token=None))
    try:
        status, body = await post(http, svc, "/api/integrations/ul/run")
        assert status == 403 and "set [web] token" in body["error"]
        await get(http, svc, "/api/status")                    # GETs still answer
    finally:
        await svc.stop()
    assert ul.count() == 0


async def test_unknown_integration_and_a_run_under_way(service, http, sandboxes):
    ul, _ = sandboxes
    status, body = await post(http, service, "/api/integrations/nope/run")
    assert status == 404 and body["integrations"] == ["ul"]
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
    import json
    doc = json.loads(body)
    ul = doc["integrations"]["ul"]
    assert doc["running"] is False and ul["running"] is False and ul["health"] == "ok"
    assert ul["last_run"]["id"] == result.run_id and ul["last_run"]["status"] == "ok"
    assert [s["flow"] for s in ul["last_run"]["steps"]] == [s.flow for s in result.steps]
    companies = ul["last_run"]["steps"][0]
    assert companies["status"] == "ok" and companies["counts"]["created_right"] == 4
    assert ul["next_run"] and ul["next_run"][:4].isdigit()      # the scheduler's time
    assert ul["record_errors"] == [] and ul["held_deletes"] == []
    _, page = await get(http, service, "/")
    assert "created_right" in page and 'data-status="ok"' in page


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
    import json
    _, text = await get(http, service, "/api/status")
    last = json.loads(text)["integrations"]["ul"]["last_run"]
    assert last["trigger"] == "webhook" and last["id"] == running["run"] + 1  # one, merged
    assert [s["flow"] for s in last["steps"]] == ["companies"]


# --- metrics and health ------------------------------------------------------------------------
async def test_metrics_parse_and_have_the_families(service, http, sandboxes):
    ul, crm = sandboxes
    assert (await service.run_job("sync:ul")).status == "ok"
    crm.faults.fail_next(1, 429, retry_after=0)
    assert (await service.run_job("sync:ul")).status == "ok"
    r, text = await get(http, service, "/metrics")
    assert r.headers["Content-Type"].startswith("text/plain")
    samples: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ .+$", line), line
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        samples.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(5))))
    for family in ("accord_runs_total", "accord_records_total", "accord_records_read_total",
                   "accord_http_requests_total", "accord_http_throttled_total",
                   "accord_last_run_duration_seconds", "accord_cursor_lag_seconds",
                   "accord_run_in_progress"):
        assert family in samples, family
    for family in ("accord_conflicts_total", "accord_record_errors", "accord_held_deletes"):
        assert f"# TYPE {family} " in text
    assert samples["accord_runs_total"] == [('{integration="ul",outcome="ok"}', 2.0)]
    created = dict(samples["accord_records_total"])
    assert created['{integration="ul",flow="companies",outcome="created_right"}'] == 4
    http_req = dict(samples["accord_http_requests_total"])
    assert http_req['{system="prospect"}'] >= 2 and http_req['{system="unleashed"}'] >= 2
    assert dict(samples["accord_http_throttled_total"])['{system="prospect"}'] == 1
    lags = samples["accord_cursor_lag_seconds"]
    assert lags and all(v >= 0 for _, v in lags)
    assert any('side="left"' in labels for labels, _ in lags)
    # cached sums stay right as more runs come
    assert (await service.run_job("sync:ul")).status == "ok"
    _, text2 = await get(http, service, "/metrics")
    assert 'accord_runs_total{integration="ul",outcome="ok"} 3' in text2
    assert 'accord_records_total{integration="ul",flow="companies",outcome="created_right"} 4' \
        in text2


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
