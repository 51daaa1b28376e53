"""The daemon: jobs and their triggers, the per-integration lock, follow-ups, failing/recovered,
graceful stop; signals through a real subprocess. The scheduler is started paused and jobs are
fired with ``run_job``, so nothing here waits for a clock."""
from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from daemon.engine.runner import RunOptions
from daemon.service import Service
from tests.test_cli import (INTEG, ROOT, config_text, logs,  # noqa: F401
                            rows, sandboxes, write_config)

SECOND = f"""
[integrations.ul2]
left = "unleashed"
right = "prospect"
preset = "unleashed_crm"
schedule = {{ every = "2h", jitter = "0s", run_at_start = false }}
"""


async def started(path: str, **kw) -> Service:
    svc = Service(path, configure_logging=False, activity=False, **kw)
    await svc.start(paused=True)
    return svc


@pytest.fixture
async def service(tmp_path, sandboxes):
    ul, crm = sandboxes
    svc = await started(write_config(tmp_path, ul_url=ul.url, crm_url=crm.url))
    yield svc
    await svc.stop()


# --- jobs ------------------------------------------------------------------------------------
async def test_one_job_per_integration_with_its_interval_and_jitter(tmp_path, sandboxes):
    ul, crm = sandboxes
    path = write_config(tmp_path, ul_url=ul.url, crm_url=crm.url, extra=SECOND)
    before = datetime.now(timezone.utc)
    svc = await started(path)
    try:
        jobs = {j.id: j for j in svc.jobs()}
        assert set(jobs) == {"sync:ul", "sync:ul2"}           # the UL-11 job is off by default
        ul_trig, ul2_trig = jobs["sync:ul"].trigger, jobs["sync:ul2"].trigger
        assert isinstance(ul_trig, IntervalTrigger) and isinstance(ul2_trig, IntervalTrigger)
        assert ul_trig.interval == timedelta(minutes=10) and ul_trig.jitter == 30
        assert ul2_trig.interval == timedelta(hours=2) and not ul2_trig.jitter
        assert jobs["sync:ul"].max_instances == 1 and jobs["sync:ul"].coalesce
        # run_at_start: at once; without it, one interval (no jitter here) from now
        assert jobs["sync:ul"].next_run_time - before < timedelta(seconds=5)
        wait = jobs["sync:ul2"].next_run_time - before
        assert timedelta(hours=2) <= wait < timedelta(hours=2, seconds=5)
    finally:
        await svc.stop()


async def test_a_cron_schedule_makes_a_cron_job(tmp_path, sandboxes):
    ul, crm = sandboxes
    path = write_config(tmp_path, ul_url=ul.url, crm_url=crm.url,
                        schedule='cron = "*/5 * * * *", run_at_start = false')
    svc = await started(path)
    try:
        job = svc.job("sync:ul")
        assert isinstance(job.trigger, CronTrigger)
        assert job.next_run_time.minute % 5 == 0 and job.next_run_time.second == 0
    finally:
        await svc.stop()


async def test_ul11_nightly_account_manager_job_is_scheduled(tmp_path, sandboxes):
    ul, crm = sandboxes
    path = write_config(tmp_path, ul_url=ul.url, crm_url=crm.url,
                        options="fix_account_managers_overnight = true")
    svc = await started(path)
    try:
        job = svc.job("job:ul:fix-account-managers")
        assert isinstance(job.trigger, CronTrigger)
        fields = {f.name: str(f) for f in job.trigger.fields}
        assert (fields["hour"], fields["minute"]) == ("3", "0")
        assert (job.next_run_time.hour, job.next_run_time.minute) == (3, 0)
        assert job.next_run_time > datetime.now(timezone.utc)
        # fired: a full run of the companies flow only, the ERP's account manager enforced
        assert job.kwargs == {"flows": ["companies"], "full": True,
                              "enforce": {"account_manager": "left"}}
        result = await svc.run_job(job.id)
        assert result.status == "ok" and [s.flow for s in result.steps] == ["companies"]
        runs = await rows(tmp_path, "runs")
        assert [r["trigger"] for r in runs] == ["job:fix-account-managers"]
    finally:
        await svc.stop()


async def test_ul11_nightly_job_is_absent_when_the_option_is_off(tmp_path, sandboxes):
    ul, crm = sandboxes
    path = write_config(tmp_path, ul_url=ul.url, crm_url=crm.url,
                        options="fix_account_managers_overnight = false")
    svc = await started(path)
    try:
        assert [j.id for j in svc.jobs()] == ["sync:ul"]
    finally:
        await svc.stop()


# --- runs ------------------------------------------------------------------------------------
async def test_a_second_trigger_while_a_run_holds_the_lock_is_skipped(service, sandboxes, logs):
    ul, crm = sandboxes
    first = asyncio.create_task(service.run_job("sync:ul"))
    for _ in range(50):
        if service.locks[INTEG].locked():
            break
        await asyncio.sleep(0)
    assert service.locks[INTEG].locked()
    second = await service.trigger(INTEG, RunOptions(trigger="manual"))
    third = await service.run_job("sync:ul")
    result = await first
    assert second is None and third is None
    assert result is not None and result.status == "ok"
    skipped = [e for e in logs if e["event"] == "run.skipped"]
    assert len(skipped) == 2 and skipped[0]["integration"] == INTEG
    assert "under way" in skipped[0]["reason"]
    assert [e["event"] for e in logs].count("run.start") == 1
    # the lock is free again: the next trigger runs
    assert (await service.trigger(INTEG, RunOptions(trigger="manual"))).status == "ok"


async def test_a_run_cut_short_by_batch_size_gets_a_follow_up_at_once(tmp_path, sandboxes):
    ul, crm = sandboxes
    extra = '[[integrations.ul.flows]]\nname = "companies"\nbatch_size = 2\n'
    svc = await started(write_config(tmp_path, ul_url=ul.url, crm_url=crm.url, extra=extra,
                                     ul_extra="page_size = 1"))
    try:
        result = await svc.run_job("sync:ul")
        assert result.more and result.steps[0].counts["created_right"] == 2
        follow = svc.job("more:ul")
        assert follow.next_run_time - datetime.now(timezone.utc) < timedelta(seconds=5)
        created = crm.writes()
        await svc.run_job("more:ul")
        assert crm.writes() > created
    finally:
        await svc.stop()


async def test_failing_is_logged_once_and_recovered_once_without_retries(service, sandboxes,
                                                                          logs):
    ul, crm = sandboxes
    ul.api_key = "rotated"                      # the credentials in the config no longer work
    for _ in range(3):
        result = await service.run_job("sync:ul")
        assert result.status == "failed"
    jobs_while_failing = [j.id for j in service.jobs()]
    hits = ul.count()
    ul.api_key = "sandbox-key"
    assert (await service.run_job("sync:ul")).status == "ok"
    assert (await service.run_job("sync:ul")).status == "ok"
    events = [e["event"] for e in logs]
    assert events.count("integration.failing") == 1
    assert events.count("integration.recovered") == 1
    assert events.index("integration.failing") < events.index("integration.recovered")
    assert jobs_while_failing == ["sync:ul"]            # no retry job, no follow-up
    assert hits <= 3 * 3                                # each failed run: refused at once
    assert service.health[INTEG] == "ok"


async def test_stop_cancels_a_run_still_going_after_the_grace_period(tmp_path, sandboxes, logs):
    ul, crm = sandboxes
    svc = await started(write_config(tmp_path, ul_url=ul.url, crm_url=crm.url), grace=0.05)
    ul.faults.latency = 1.5                     # the sandbox is slow; the stop does not wait
    task = asyncio.create_task(svc.run_job("sync:ul"))
    for _ in range(200):
        if ul.count():
            break
        await asyncio.sleep(0.01)
    assert svc.locks[INTEG].locked()
    t0 = time.monotonic()
    await svc.stop()
    assert time.monotonic() - t0 < 1.0                  # grace 0.05 s, not the 1.5 s answer
    assert task.cancelled() or task.done()
    assert "run.cancelled" in [e["event"] for e in logs]
    assert [r["status"] for r in await rows(tmp_path, "runs")] == ["stopped"]
    assert await svc.trigger(INTEG) is None             # stopped: no new runs


# --- signals, through a real process ---------------------------------------------------------
class Daemon:
    def __init__(self, config: str, env: dict) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "--config", config], cwd=ROOT,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self.buf = b""
        self.lines: list[str] = []

    def wait_for(self, event: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                seen += 1
                if line.startswith("{") and json.loads(line)["event"] == event:
                    return json.loads(line)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event!r} within {timeout}s:\n"
                                     + "\n".join(self.lines[-20:]))
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"daemon exited before {event!r}:\n"
                                         + "\n".join(self.lines[-20:])
                                         + self.proc.stderr.read().decode())
                self.buf += chunk
                *done, self.buf = self.buf.split(b"\n")
                self.lines += [d.decode() for d in done]

    def finish(self, timeout: float = 15.0) -> int:
        code = self.proc.wait(timeout=timeout)
        rest = self.proc.stdout.read()
        self.lines += (self.buf + rest).decode().splitlines()
        return code


def test_sighup_refuses_a_broken_file_reloads_a_good_one_and_sigterm_exits_0(tmp_path):
    (tmp_path / "crm.token").write_text("file-secret-crm-0815\n")
    good = config_text(tmp_path, api_key='"${ACCORD_TEST_UL_SECRET}"',
                       token='token_file = "crm.token"')
    path = tmp_path / "config.toml"
    path.write_text(good)
    env = {**os.environ, "ACCORD_TEST_UL_SECRET": "env-secret-ul-4711"}
    d = Daemon(str(path), env)
    try:
        started_line = d.wait_for("service.started")
        assert started_line["jobs"] == ["sync:ul"]
        end = d.wait_for("run.end")                 # run_at_start: a first run at once
        assert end["status"] == "ok"

        path.write_text(good.replace("[daemon]", "[daemon]\nbogus = 1"))
        d.proc.send_signal(signal.SIGHUP)
        refused = d.wait_for("config.reload_refused")
        assert str(path) in refused["error"] and "daemon.bogus" in refused["error"]
        assert refused["level"] == "error"

        path.write_text(good.replace("fix_account_managers_overnight", "")
                        + "fix_account_managers_overnight = true\n")
        d.proc.send_signal(signal.SIGHUP)
        reloaded = d.wait_for("config.reloaded")
        assert reloaded["jobs"] == ["sync:ul", "job:ul:fix-account-managers"]

        d.proc.send_signal(signal.SIGTERM)
        d.wait_for("service.stopped")
        assert d.finish() == 0
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    out = "\n".join(d.lines) + d.proc.stderr.read().decode()
    assert "env-secret-ul-4711" not in out and "file-secret-crm-0815" not in out
    events = [json.loads(x)["event"] for x in d.lines if x.startswith("{")]
    assert events.count("config.reloaded") == 1 and events.count("config.reload_refused") == 1
    assert events.index("service.stopping") < events.index("service.stopped")
