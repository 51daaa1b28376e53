"""GET /metrics (daemon/metrics.py), parsed with prometheus_client's own parser: families and
types, a sample for every gauge (0 included), counters that never go down across a run, values
that survive a restart, the cursor lag as the age of the newest successful read."""
from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from daemon.store.tables import T
from tests.web.conftest import get, post, start_service, until_idle, web_config

FLOWS = ("companies", "contacts")
COUNTERS = ("accord_runs", "accord_records", "accord_records_read", "accord_conflicts",
            "accord_http_requests", "accord_http_throttled")
GAUGES = ("accord_record_errors", "accord_reviews", "accord_exclusions", "accord_held_deletes",
          "accord_last_run_duration_seconds", "accord_last_run_finished_timestamp_seconds",
          "accord_cursor_lag_seconds", "accord_run_in_progress", "accord_integration_failing",
          "accord_integration_paused")


async def scrape(http, svc) -> dict[str, dict]:
    """{family: {"type": ..., "samples": {(sample name, sorted labels): value}}}."""
    r, text = await get(http, svc, "/metrics")
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: dict[str, dict] = {}
    for fam in text_string_to_metric_families(text):
        assert fam.name not in out, f"{fam.name} declared twice"
        out[fam.name] = {"type": fam.type, "samples": {
            (s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}}
    return out


def value(m: dict, family: str, sample: str | None = None, **labels) -> float:
    return m[family]["samples"][(sample or family, tuple(sorted(labels.items())))]


def counter_samples(m: dict) -> dict:
    return {k: v for fam in m.values() if fam["type"] == "counter"
            for k, v in fam["samples"].items() if k[0].endswith("_total")}


async def test_families_types_and_a_sample_for_every_gauge_before_any_run(service, http):
    m = await scrape(http, service)
    for name in COUNTERS:
        assert m[name]["type"] == "counter", name
    for name in GAUGES:
        assert m[name]["type"] == "gauge", name
    # nothing ran yet: the samples are there, at 0
    for outcome in ("ok", "errors", "failed", "stopped"):
        assert value(m, "accord_runs", "accord_runs_total", integration="ul",
                     outcome=outcome) == 0
    for flow in FLOWS:
        for side in ("left", "right"):
            for fam in ("accord_record_errors", "accord_reviews", "accord_exclusions"):
                assert value(m, fam, integration="ul", flow=flow, side=side) == 0
            assert value(m, "accord_records_read", "accord_records_read_total",
                         integration="ul", flow=flow, side=side) == 0
            # never read: infinitely behind
            assert value(m, "accord_cursor_lag_seconds", integration="ul", flow=flow,
                         side=side) == math.inf
        assert value(m, "accord_held_deletes", integration="ul", flow=flow) == 0
        assert value(m, "accord_records", "accord_records_total", integration="ul", flow=flow,
                     outcome="created_right") == 0
    for fam in ("accord_last_run_duration_seconds", "accord_last_run_finished_timestamp_seconds",
                "accord_run_in_progress", "accord_integration_failing",
                "accord_integration_paused"):
        assert value(m, fam, integration="ul") == 0, fam
    # the run under way has no outcome yet: no "running" sample anywhere
    assert not [k for k in m["accord_runs"]["samples"] if ("outcome", "running") in k[1]]
    # the process-wide registry is not ours
    assert "accord_runs" not in {
        f.name for f in prometheus_client.REGISTRY.collect()}


async def test_after_runs_the_counts_http_and_gauges_follow(service, http, sandboxes):
    ul, crm = sandboxes
    assert (await service.run_job("sync:ul")).status == "ok"
    crm.faults.fail_next(1, 429, retry_after=0)
    assert (await service.run_job("sync:ul")).status == "ok"
    async with service.app.db.begin() as conn:
        await conn.execute(T["held_deletes"].insert().values(
            integration="ul", flow="companies", link_id=1, target="right", record_id="5",
            action="delete", run_id=1, created_at=datetime.now(timezone.utc)))
    status, _ = await post(http, service, "/api/integrations/ul/pause")
    assert status == 200
    m = await scrape(http, service)
    assert value(m, "accord_runs", "accord_runs_total", integration="ul", outcome="ok") == 2
    assert value(m, "accord_records", "accord_records_total", integration="ul",
                 flow="companies", outcome="created_right") == 4
    assert value(m, "accord_records_read", "accord_records_read_total", integration="ul",
                 flow="companies", side="left") >= 4
    assert value(m, "accord_http_requests", "accord_http_requests_total",
                 system="prospect") >= 2
    assert value(m, "accord_http_throttled", "accord_http_throttled_total",
                 system="prospect") == 1
    assert value(m, "accord_held_deletes", integration="ul", flow="companies") == 1
    assert value(m, "accord_integration_paused", integration="ul") == 1
    assert value(m, "accord_last_run_finished_timestamp_seconds", integration="ul") > 1e9
    for flow in FLOWS:
        lag = value(m, "accord_cursor_lag_seconds", integration="ul", flow=flow, side="right")
        assert 0 <= lag < 60


async def test_counters_never_go_down_across_a_run(service, http, sandboxes):
    ul, _ = sandboxes
    assert (await service.run_job("sync:ul")).status == "ok"
    before = await scrape(http, service)
    ul.faults.latency = 0.2                       # the next run takes a while
    status, body = await post(http, service, "/api/integrations/ul/run")
    assert status == 202
    during = await scrape(http, service)
    assert value(during, "accord_run_in_progress", integration="ul") == 1
    ul.faults.latency = 0
    await until_idle(service)
    after = await scrape(http, service)
    assert value(after, "accord_run_in_progress", integration="ul") == 0
    scrapes = [counter_samples(before), counter_samples(during), counter_samples(after)]
    for earlier, later in zip(scrapes, scrapes[1:]):
        for key, n in earlier.items():
            assert key in later and later[key] >= n, (key, n, later.get(key))
    ok = ("accord_runs_total", (("integration", "ul"), ("outcome", "ok")))
    assert scrapes[0][ok] == scrapes[1][ok] == 1 and scrapes[2][ok] == 2


async def test_the_counts_survive_a_restart(tmp_path, sandboxes, http):
    ul, crm = sandboxes
    path = web_config(tmp_path, ul, crm)
    svc = await start_service(path)
    try:
        assert (await svc.run_job("sync:ul")).status == "ok"
        first = counter_samples(await scrape(http, svc))
    finally:
        await svc.stop()
    svc = await start_service(path)                # a new process would read the same state
    try:
        again = counter_samples(await scrape(http, svc))
    finally:
        await svc.stop()
    state = {k: v for k, v in first.items() if not k[0].startswith("accord_http_")}
    assert state and {k: again[k] for k in state} == state
    assert state[("accord_records_total", (("flow", "companies"), ("integration", "ul"),
                                           ("outcome", "created_right")))] == 4


async def test_cursor_lag_is_the_age_of_the_newest_successful_read(service, http, sandboxes):
    _, crm = sandboxes
    assert (await service.run_job("sync:ul")).status == "ok"
    steps = T["steps"]
    async with service.app.db.connect() as conn:
        ends = dict((await conn.execute(select(steps.c.flow, steps.c.finished_at))).all())
    ends = {f: (t if t.tzinfo else t.replace(tzinfo=timezone.utc)) for f, t in ends.items()}
    collector = service.web.prometheus.collector
    clock = {"now": ends["contacts"] + timedelta(seconds=100)}
    collector.clock = lambda: clock["now"]
    m = await scrape(http, service)
    for side in ("left", "right"):
        assert value(m, "accord_cursor_lag_seconds", integration="ul", flow="contacts",
                     side=side) == 100
    expected = (clock["now"] - ends["companies"]).total_seconds()
    assert abs(value(m, "accord_cursor_lag_seconds", integration="ul", flow="companies",
                     side="left") - expected) < 0.01
    # a run that fails reads nothing: the lag goes on growing, the failing gauge says why
    crm.faults.fail_next(100, 401)
    assert (await service.run_job("sync:ul")).status == "failed"
    crm.faults.clear()
    clock["now"] += timedelta(seconds=200)
    m = await scrape(http, service)
    assert value(m, "accord_cursor_lag_seconds", integration="ul", flow="contacts",
                 side="right") == 300
    assert value(m, "accord_integration_failing", integration="ul") == 1
    assert value(m, "accord_runs", "accord_runs_total", integration="ul", outcome="failed") == 1


async def test_two_web_apps_in_one_process_have_their_own_registries(tmp_path, sandboxes, http):
    ul, crm = sandboxes
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = await start_service(web_config(tmp_path / "a", ul, crm))
    two = await start_service(web_config(tmp_path / "b", ul, crm))
    try:
        assert one.web.prometheus.registry is not two.web.prometheus.registry
        assert (await one.run_job("sync:ul")).status == "ok"
        m1, m2 = await asyncio.gather(scrape(http, one), scrape(http, two))
        assert value(m1, "accord_runs", "accord_runs_total", integration="ul", outcome="ok") == 1
        assert value(m2, "accord_runs", "accord_runs_total", integration="ul", outcome="ok") == 0
    finally:
        await one.stop()
        await two.stop()
