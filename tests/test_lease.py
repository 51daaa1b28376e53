"""The lease per integration on a shared PostgreSQL database (daemon/lease.py).

Two real daemons (``accord run``) on one fresh PostgreSQL database and one pair of sandboxes
(processes of their own): one runs the integration, the other stands by; the holder is killed
with SIGKILL and the other takes over; the ``runs`` table shows no two runs of the integration
overlapping. Plus in-process tests of the lease itself.

Needs ACCORD_TEST_POSTGRES_URL (``.ci/run`` sets it); each test makes its own database.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from sqlalchemy.engine import make_url

from daemon.config import Config
from daemon.lease import NoLease, PostgresLease, make_lease
from tests.test_crash_recovery import free_port

PG_URL = os.environ.get("ACCORD_TEST_POSTGRES_URL")
needs_pg = pytest.mark.skipif(
    not PG_URL, reason="ACCORD_TEST_POSTGRES_URL is not set (a PostgreSQL to make test "
                       "databases in, e.g. postgresql://postgres@127.0.0.1:5432/test)")
pytestmark = [pytest.mark.postgres]


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
async def pg_database():
    """A fresh database (URL) for one test, dropped afterwards."""
    import asyncpg
    name = f"accord_lease_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_dsn(PG_URL))
    try:
        await admin.execute(f'create database "{name}"')
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


# --- the lease in process --------------------------------------------------------------------
async def test_sqlite_or_disabled_lease_is_a_no_op():
    assert isinstance(make_lease("sqlite:///x.db"), NoLease)
    assert isinstance(make_lease("postgresql://h/db", enabled=False), NoLease)
    assert isinstance(make_lease("postgres://h/db"), PostgresLease)
    lease = make_lease("sqlite:///x.db", holder="me:1")
    assert await lease.acquire("ul") and await lease.acquire("ul")
    await lease.close()


@needs_pg
async def test_one_holder_at_a_time_and_free_when_its_session_ends(pg_database):
    a = PostgresLease(pg_database, holder="host-a:1")
    b = PostgresLease(pg_database.replace("postgresql://", "postgresql+asyncpg://"),
                      holder="host-b:2")
    try:
        assert await a.acquire("ul")
        assert await a.acquire("ul")            # kept, not taken twice
        assert not await b.acquire("ul")
        assert await b.holder_of("ul") == "host-a:1"
        assert await b.acquire("other")         # one lease per integration
        await a.close()                         # the session ends: the lease is free at once
        assert await b.acquire("ul")
        assert not await a.acquire("ul")
        assert await a.holder_of("ul") == "host-b:2"
    finally:
        await a.close()
        await b.close()


@needs_pg
async def test_a_lost_session_is_noticed_and_the_lease_taken_again(pg_database):
    import asyncpg
    a = PostgresLease(pg_database, holder="host-a:1")
    admin = await asyncpg.connect(_dsn(pg_database))
    try:
        assert await a.acquire("ul")
        await admin.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                            "where application_name = 'accord-lease host-a:1'")
        assert await a.acquire("ul")            # reconnected, took it again (it was free)
        assert await admin.fetchval(
            "select count(*) from pg_stat_activity "
            "where application_name = 'accord-lease host-a:1'") == 1
    finally:
        await admin.close()
        await a.close()


# --- two daemons -----------------------------------------------------------------------------
class Proc:
    """A process whose output lines are read by a thread, so that no pipe fills up and we can
    wait (bounded, without sleeping) for a line."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.p = subprocess.Popen([sys.executable, "-m", "daemon.cli", *args], cwd=cwd,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in iter(self.p.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self._new.put(line)
        self._new.put(None)

    def wait_for(self, predicate, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            if predicate(line):
                return line
        raise AssertionError(f"gave up waiting after {timeout} s; last output:\n"
                             + "\n".join(self.lines[-20:]))

    def events(self, name: str) -> list[dict]:
        return [orjson.loads(x) for x in list(self.lines)
                if x.startswith("{") and f'"{name}"' in x]

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)


def event_is(name: str, **fields):
    def pred(line: str) -> bool:
        if f'"{name}"' not in line or not line.startswith("{"):
            return False
        doc = orjson.loads(line)
        return doc.get("event") == name and all(doc.get(k) == v for k, v in fields.items())
    return pred


def write_config(path: Path, database: str, ul: int, crm: int) -> Path:
    path.write_text(f"""
[daemon]
database = "{database}"
log_format = "json"
lease = true

[systems.unleashed]
type = "unleashed"
base_url = "http://127.0.0.1:{ul}"
api_id = "sandbox"
api_key = "sandbox-key"

[systems.prospect]
type = "prospect_crm"
base_url = "http://127.0.0.1:{crm}"
token = "sandbox-token"
requests_per_window = 100000

[integrations.ul]
left = "unleashed"
right = "prospect"
preset = "unleashed_crm"
schedule = {{ every = "10s", jitter = "0s" }}
""" + WEB_OFF)
    return path


# two daemons on one machine: keep them off each other's status port, where there is one
WEB_OFF = '\n[web]\nenabled = false\n' if "web" in Config.model_fields else ""


def has_migrate(cwd: Path) -> bool:
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "migrate", "--help"], cwd=cwd,
                         capture_output=True, timeout=60)
    return out.returncode == 0


@pytest.fixture
def sandboxes(tmp_path):
    ul, crm = free_port(), free_port()
    procs = [Proc("sandbox", "unleashed", "--port", str(ul), "--records", "50",
                  "--option", "rate_limit_per_minute=100000", cwd=tmp_path),
             Proc("sandbox", "prospect_crm", "--port", str(crm), "--records", "5",
                  "--option", "rate_limit=100000", cwd=tmp_path)]
    try:
        for p in procs:
            p.wait_for(lambda line: "stop with Ctrl-C" in line, 60)
        yield ul, crm
    finally:
        for p in procs:
            p.stop()


async def runs_of(database: str, integration: str) -> list[tuple]:
    import asyncpg
    conn = await asyncpg.connect(_dsn(database))
    try:
        rows = await conn.fetch("select id, status, started_at, finished_at from runs "
                                "where integration = $1 order by started_at", integration)
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@needs_pg
@pytest.mark.slow
async def test_two_daemons_one_runs_the_integration_the_other_takes_over_on_sigkill(
        tmp_path, pg_database, sandboxes):
    ul, crm = sandboxes
    cfg = write_config(tmp_path / "config.toml", pg_database, ul, crm)
    if has_migrate(tmp_path):                   # the schema exists before both start
        out = subprocess.run([sys.executable, "-m", "daemon.cli", "migrate", "--config",
                              str(cfg)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr

    # the first daemon alone until it has the lease and runs (and create_all has been done)
    first = Proc("run", "--config", str(cfg), cwd=tmp_path)
    second = None
    try:
        first.wait_for(event_is("lease.acquired", integration="ul"), 60)
        first.wait_for(event_is("run.end", integration="ul"), 60)
        second = Proc("run", "--config", str(cfg), cwd=tmp_path)
        held = second.wait_for(event_is("run.skipped", integration="ul"), 60)
        assert orjson.loads(held)["reason"] == "lease held by another daemon"
        assert orjson.loads(held)["holder"] == f"{os.uname().nodename}:{first.p.pid}"
        # a few more ticks of both: still only the first one runs
        first.wait_for(event_is("run.end", integration="ul"), 30)
        second.wait_for(event_is("run.skipped", integration="ul"), 30)
        assert not second.events("run.start"), "the standby ran the integration"
        assert not first.events("run.skipped")

        first.stop(signal.SIGKILL)
        killed_at = datetime.now(timezone.utc)
        t0 = time.monotonic()
        second.wait_for(event_is("lease.acquired", integration="ul"), 30)
        second.wait_for(event_is("run.start", integration="ul"), 15)
        takeover = time.monotonic() - t0
        second.wait_for(event_is("run.end", integration="ul"), 60)
        # the lock died with the holder's session: the takeover is the next tick (every 10 s)
        assert takeover < 15, f"took {takeover:.1f} s to take over"
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop()
    assert second.p.returncode == 0, "\n".join(second.lines[-20:])

    first_ids = {e["run"] for e in first.events("run.start")}
    second_ids = {e["run"] for e in second.events("run.start")}
    assert first_ids and second_ids and not first_ids & second_ids
    runs = await runs_of(pg_database, "ul")
    unlogged = {r[0] for r in runs} - first_ids - second_ids
    assert not (first_ids | second_ids) - {r[0] for r in runs}
    # a run the kill caught between its row and its log line is the first daemon's
    assert all(utc(r[2]) <= killed_at for r in runs if r[0] in unlogged), unlogged
    first_ids |= unlogged
    spans = []
    for run_id, status, started, finished in runs:
        # the killed daemon's last run may still say "running": it ended at the kill at most
        end = utc(finished) if finished is not None else killed_at
        assert finished is not None or run_id in first_ids, (run_id, status)
        spans.append((utc(started), end, run_id))
    spans.sort()
    for (s1, e1, r1), (s2, e2, r2) in zip(spans, spans[1:]):
        assert e1 <= s2, f"runs {r1} and {r2} of one integration overlap"
    assert max(r[0] for r in spans if r[2] in first_ids) < min(
        r[0] for r in spans if r[2] in second_ids), "the standby ran before the kill"


@needs_pg
async def test_a_sync_by_hand_waits_for_no_daemon_holding_the_lease(pg_database, tmp_path,
                                                                     capsys):
    """`accord sync` takes the integration's lease like a daemon: refused (exit 2, one line
    naming the holder) while another holds it, and it runs once that one has let go."""
    from daemon import cli
    from tests.test_cli import config_text
    text = config_text(tmp_path).replace(f"sqlite:///{tmp_path / 'state.db'}", pg_database)
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    other = PostgresLease(pg_database, holder="elsewhere:42")
    try:
        assert await other.acquire("ul")
        assert await cli.amain(["sync", "ul", "--config", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert "being run by another daemon (elsewhere:42)" in err
    finally:
        await other.close()
    assert await cli.amain(["sync", "ul", "--config", str(cfg)]) == 0
