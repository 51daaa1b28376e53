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
from tests.waiting import until

WEB0 = "[web]\nport = 0\n"
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
async def test_a_started_service_is_what_the_web_side_asks_of_the_daemon(service):
    # daemon/web.py and daemon/metrics.py see the service through ``Daemon`` (they do not
    # import daemon/service.py, which starts them): each member they use must be there
    from daemon.control import Daemon
    assert isinstance(service, Daemon)
    assert service.cfg is not None and service.app is not None
    assert set(service.locks) == {INTEG} and service.stopping is False
    assert service.run_under_way(INTEG) is None


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
    await until(ul.count, "the run reached Unleashed", 2)
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


# --- stop: the grace is kept, every run ends with a status ---------------------------------------


async def test_stop_during_a_scheduled_run_ends_it_at_a_chunk_boundary_within_the_grace(
        tmp_path, sandboxes, logs):
    ul, crm = sandboxes
    ul.faults.latency = 0.05                    # one customer a page: many chunk boundaries
    svc = await started(write_config(tmp_path, ul_url=ul.url, crm_url=crm.url,
                                     ul_extra="page_size = 1"), grace=30.0)
    # fired by the scheduler itself (its executor's task), as in production
    svc.scheduler.modify_job("sync:ul", next_run_time=datetime.now(timezone.utc))
    svc.scheduler.resume()
    await until(lambda: svc.live.steps.get(INTEG), "the first page staged")
    t0 = time.monotonic()
    await svc.stop()
    assert time.monotonic() - t0 < 5.0                  # a chunk, not the whole run nor 30 s
    events = [e["event"] for e in logs]
    assert "run.cancelled" not in events                # stopped, not cancelled
    end = [e for e in logs if e["event"] == "run.end"]
    assert len(end) == 1 and end[0]["status"] == "stopped" and end[0]["log_level"] == "warning"
    runs = await rows(tmp_path, "runs")
    assert [(r["status"], r["finished_at"] is not None) for r in runs] == [("stopped", True)]
    steps = await rows(tmp_path, "steps")
    assert steps and all(s["status"] != "running" for s in steps)
    assert events.index("run.end") < events.index("service.stopped")


async def test_stop_after_the_grace_cancels_and_still_writes_stopped_and_run_end(
        tmp_path, sandboxes, logs, caplog):
    import logging
    caplog.set_level(logging.INFO, logger="apscheduler")
    ul, crm = sandboxes
    svc = await started(write_config(tmp_path, ul_url=ul.url, crm_url=crm.url), grace=0.05)
    ul.faults.latency = 1.5                     # no chunk boundary comes within the grace
    svc.scheduler.modify_job("sync:ul", next_run_time=datetime.now(timezone.utc))
    svc.scheduler.resume()
    await until(lambda: ul.count() > 0, "the first request")
    await svc.stop()
    assert [e["status"] for e in logs if e["event"] == "run.end"] == ["stopped"]
    assert [e for e in logs if e["event"] == "run.cancelled"][0]["integrations"] == [INTEG]
    assert [r["status"] for r in await rows(tmp_path, "runs")] == ["stopped"]
    # no "Job raised an exception" with a CancelledError traceback from the scheduler
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_runs_a_dead_process_left_running_are_closed_as_interrupted_at_start(
        tmp_path, sandboxes, logs):
    from daemon.store.db import create_schema, make_engine, now
    from daemon.store.tables import T
    from sqlalchemy import insert
    ul, crm = sandboxes
    path = write_config(tmp_path, ul_url=ul.url, crm_url=crm.url)
    db = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    await create_schema(db)
    async with db.begin() as conn:               # what a SIGKILL leaves behind
        run_id = (await conn.execute(insert(T["runs"]).values(
            integration=INTEG, trigger="schedule", status="running", started_at=now()))
        ).inserted_primary_key[0]
        await conn.execute(insert(T["steps"]).values(
            run_id=run_id, flow="companies", status="running", counts="{}", started_at=now()))
    await db.dispose()
    svc = await started(path)
    try:
        [run_row] = await rows(tmp_path, "runs")
        assert run_row["status"] == "interrupted" and run_row["finished_at"] is not None
        assert [s["status"] for s in await rows(tmp_path, "steps")] == ["interrupted"]
        said = [e for e in logs if e["event"] == "run.interrupted"]
        assert [(e["integration"], e["run"]) for e in said] == [(INTEG, run_id)]
        # this daemon's own runs are not touched by it
        assert (await svc.run_job("sync:ul")).status == "ok"
        assert [r["status"] for r in await rows(tmp_path, "runs")] == ["interrupted", "ok"]
    finally:
        await svc.stop()


async def test_an_unexpected_exception_ends_the_run_crashed_with_one_traceback(tmp_path, logs):
    from tests.engine import harness
    pair = await harness.make_pair(tmp_path, [harness.item_flow()])
    pair.L.put("items", {"key": "A", "name": "a"})

    async def changes(entity, since):           # a bug in a connector, half-way through a step
        raise ZeroDivisionError("division by zero in a connector")
        yield
    pair.L.changes = changes
    try:
        result = await pair.sync()
    finally:
        while harness.OPEN:
            await harness.OPEN.pop().dispose()
    assert result.status == "crashed" and "ZeroDivisionError" in result.message
    assert result.exit_code == 2
    crashed = [e for e in logs if e["event"] == "run.crashed"]
    assert len(crashed) == 1 and crashed[0]["exc_info"] is True
    assert [e["status"] for e in logs if e["event"] == "run.end"] == ["crashed"]
    db = harness.make_engine(f"sqlite:///{tmp_path}/state.db")
    try:
        async with db.connect() as conn:
            from sqlalchemy import text
            runs = (await conn.execute(text("select status, finished_at from runs"))).all()
            steps = (await conn.execute(text("select status from steps"))).all()
    finally:
        await db.dispose()
    assert [r[0] for r in runs] == ["crashed"] and runs[0][1] is not None
    assert [s[0] for s in steps] == ["crashed"]


# --- reload ----------------------------------------------------------------------------------------
async def test_reload_refuses_a_bad_schedule_keeps_the_jobs_and_takes_a_good_one(
        tmp_path, sandboxes, logs):
    ul, crm = sandboxes
    path = Path(write_config(tmp_path, ul_url=ul.url, crm_url=crm.url, extra=SECOND + WEB0))
    svc = await started(str(path))
    loop = asyncio.get_running_loop()
    unretrieved: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: unretrieved.append(ctx))
    try:
        before = {j.id: (str(j.trigger), j.next_run_time) for j in svc.jobs()}
        assert set(before) == {"sync:ul", "sync:ul2"}
        path.write_text(path.read_text().replace('every = "10m"', 'every = "1 minute"'))
        svc._on_hup()                           # as SIGHUP does: a task nobody awaits
        await asyncio.gather(*svc._bg)
        refused = [e for e in logs if e["event"] == "config.reload_refused"]
        assert len(refused) == 1 and "integrations.ul.schedule.every" in refused[0]["error"]
        assert {j.id: (str(j.trigger), j.next_run_time) for j in svc.jobs()} == before

        path.write_text(path.read_text().replace('every = "1 minute"', 'every = "20m"'))
        svc._on_hup()
        await asyncio.gather(*svc._bg)
        assert "config.reloaded" in [e["event"] for e in logs]
        jobs = {j.id: j for j in svc.jobs()}
        assert set(jobs) == {"sync:ul", "sync:ul2"}
        assert jobs["sync:ul"].trigger.interval == timedelta(minutes=20)
        assert all(j.next_run_time is not None for j in jobs.values())
        # what `accord status` and the page show as "next run"
        doc = await svc.web.status_doc()
        assert all(d["next_run"] not in ("not scheduled", None)
                   for d in doc["integrations"].values())
        assert (await svc.run_job("sync:ul")).status == "ok"     # the new app works
    finally:
        await svc.stop()
        import gc
        gc.collect()
        loop.set_exception_handler(None)
    assert not [c for c in unretrieved if "never retrieved" in c.get("message", "")]


async def test_reload_that_changes_the_state_database_is_refused(tmp_path, sandboxes, logs):
    ul, crm = sandboxes
    path = Path(write_config(tmp_path, ul_url=ul.url, crm_url=crm.url))
    svc = await started(str(path))
    try:
        path.write_text(path.read_text().replace("state.db", "other.db"))
        assert await svc.reload() is False
        [refused] = [e for e in logs if e["event"] == "config.reload_refused"]
        assert "daemon.database changed: restart" in refused["error"]
        assert svc.cfg.daemon.database.endswith("state.db")
    finally:
        await svc.stop()


# --- the state database failed and came back -----------------------------------------------------
def _immutable(path: Path, on: bool) -> bool:
    out = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    return out.returncode == 0


async def test_a_state_database_that_was_read_only_is_used_again_once_it_is_writable(
        tmp_path, sandboxes, logs):
    """An immutable SQLite file is read-only even for root: the daemon's pooled connections
    opened meanwhile stay read-only unless it drops them."""
    import aiohttp
    from daemon.store.db import create_schema, make_engine
    ul, crm = sandboxes
    path = write_config(tmp_path, ul_url=ul.url, crm_url=crm.url, extra=WEB0)
    state = tmp_path / "state.db"
    db = make_engine(f"sqlite:///{state}")
    await create_schema(db)
    await db.dispose()
    if not _immutable(state, True):
        pytest.skip("chattr +i is not possible here (needs root on ext4/xfs/btrfs)")
    svc = None
    try:
        svc = await started(path)               # starts on the read-only file
        readyz = f"{svc.web.url}/readyz"
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                result = await svc.run_job("sync:ul")
                assert result.status in ("crashed", "failed")
            async with http.get(readyz) as r:
                assert r.status == 503 and "readonly" in (await r.json())["reason"]
            assert svc.health[INTEG] == "failing"
            events = [e["event"] for e in logs]
            assert events.count("state.unavailable") == 1           # not one per tick
            assert events.count("integration.failing") == 1
            assert events.count("run.crashed") <= 1

            assert _immutable(state, False)
            async with http.get(readyz) as r:
                assert r.status == 200
            assert (await svc.run_job("sync:ul")).status == "ok"
            assert (await svc.run_job("sync:ul")).status == "ok"
            events = [e["event"] for e in logs]
            assert events.count("state.recovered") == 1
            assert events.count("integration.recovered") == 1
            assert svc.state.available and svc.health[INTEG] == "ok"
    finally:
        _immutable(state, False)
        if svc is not None:
            await svc.stop()


@pytest.mark.postgres
async def test_on_a_shared_postgresql_only_runs_whose_lease_it_takes_are_closed(tmp_path,
                                                                              sandboxes, logs):
    """Another daemon holds ``ul``: its running run is left alone, until the lease is ours."""
    from sqlalchemy import insert, select
    from daemon.lease import PostgresLease
    from daemon.store.db import create_schema, make_engine, now
    from daemon.store.tables import T
    from tests.dbs import PG_URL, create_pg_database, drop_pg_database
    if PG_URL is None:
        pytest.skip("ACCORD_TEST_POSTGRES_URL is not set (a PostgreSQL to make test "
                    "databases in, e.g. postgresql://postgres@127.0.0.1:5432/test)")
    ul, crm = sandboxes
    url = await create_pg_database()
    other = PostgresLease(url, holder="other-host:1")
    db = make_engine(url)
    svc = None
    try:
        await create_schema(db)
        async with db.begin() as conn:
            run_id = (await conn.execute(insert(T["runs"]).values(
                integration=INTEG, trigger="schedule", status="running", started_at=now()))
            ).inserted_primary_key[0]

        async def status() -> str:
            async with db.connect() as conn:
                return (await conn.execute(select(T["runs"].c.status).where(
                    T["runs"].c.id == run_id))).scalar_one()
        assert await other.acquire(INTEG)           # the other daemon, alive, running it
        text = config_text(tmp_path, ul_url=ul.url, crm_url=crm.url).replace(
            f"sqlite:///{tmp_path / 'state.db'}", url)
        (tmp_path / "pg.toml").write_text(text)
        svc = await started(str(tmp_path / "pg.toml"))
        assert await svc.run_job("sync:ul") is None             # lease held: skipped
        assert await status() == "running"                      # not ours to close
        await other.close()                                     # it died
        assert (await svc.run_job("sync:ul")).status == "ok"
        assert await status() == "interrupted"
        assert [e["run"] for e in logs if e["event"] == "run.interrupted"] == [run_id]
    finally:
        if svc is not None:
            await svc.stop()
        await other.close()
        await db.dispose()
        await drop_pg_database(url)
