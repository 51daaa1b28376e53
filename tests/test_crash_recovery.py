"""Real processes: the daemon is killed with SIGKILL in the middle of a first sync of
thousands of records, started again, and no record is duplicated or missing.

The sandboxes run in processes of their own (``accord sandbox``), so they outlive the daemon,
and are read back over HTTP with the connectors themselves.
"""
from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from connectors.prospect_crm import ProspectCrmConnector
from connectors.unleashed import UnleashedConnector

pytestmark = pytest.mark.slow
CUSTOMERS = 2000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for(proc: subprocess.Popen, predicate, timeout: float) -> list[str]:
    """Read the process's output lines until one satisfies ``predicate`` (bounded)."""
    lines: list[str] = []
    buf = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split(b"\n")
        for raw in done:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if predicate(line, lines):
                return lines
    raise AssertionError(f"gave up waiting; last output:\n{chr(10).join(lines[-20:])}")


@pytest.fixture
def sandboxes(tmp_path):
    ul, crm = free_port(), free_port()
    procs = [spawn("sandbox", "unleashed", "--port", str(ul), "--records", str(CUSTOMERS),
                   "--seed", "7", "--option", "rate_limit_per_minute=1000000", cwd=tmp_path),
             spawn("sandbox", "prospect_crm", "--port", str(crm), "--records", "0",
                   "--option", "rate_limit=1000000", cwd=tmp_path)]
    for p in procs:
        wait_for(p, lambda line, _: "stop with Ctrl-C" in line, 60)
    yield ul, crm
    for p in procs:
        p.send_signal(signal.SIGTERM)
        p.wait(10)


def write_config(tmp_path: Path, ul: int, crm: int) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[daemon]
database = "sqlite:///{tmp_path}/state.db"
log_format = "json"

[systems.unleashed]
type = "unleashed"
base_url = "http://127.0.0.1:{ul}"
api_id = "sandbox"
api_key = "sandbox-key"
page_size = 500

[systems.prospect]
type = "prospect_crm"
base_url = "http://127.0.0.1:{crm}"
token = "sandbox-token"
requests_per_window = 1000000

[integrations.ul]
left = "unleashed"
right = "prospect"
preset = "unleashed_crm"
schedule = {{ every = "1h", jitter = "0s" }}
""")
    return cfg


async def everything(ul: int, crm: int) -> dict[str, list]:
    u = UnleashedConnector("u", UnleashedConnector.Settings(
        base_url=f"http://127.0.0.1:{ul}", api_id="sandbox", api_key="sandbox-key",
        page_size=1000))
    p = ProspectCrmConnector("p", ProspectCrmConnector.Settings(
        base_url=f"http://127.0.0.1:{crm}", token="sandbox-token",
        requests_per_window=1000000))
    out: dict[str, list] = {}
    for conn, entities in ((u, ("customers", "contacts")), (p, ("companies", "contacts"))):
        await conn.start()
        try:
            for e in entities:
                out[f"{conn.name}.{e}"] = [r async for page in conn.changes(e, None)
                                           for r in page if not r.deleted]
        finally:
            await conn.close()
    return out


def test_sigkill_mid_first_sync_then_restart_leaves_no_duplicate_and_no_gap(tmp_path,
                                                                         sandboxes):
    ul, crm = sandboxes
    cfg = write_config(tmp_path, ul, crm)
    daemon = spawn("run", "--config", str(cfg), cwd=tmp_path)
    try:
        created = Counter()

        def enough(line: str, _lines) -> bool:
            if '"record.created"' in line:
                created[orjson.loads(line)["flow"]] += 1
            return created["companies"] >= 600
        wait_for(daemon, enough, 120)
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
    mid = asyncio.run(everything(ul, crm))
    assert 0 < len(mid["p.companies"]) < CUSTOMERS, "the kill did not land mid-sync"

    # started again: one run to the end, then an idle one
    for expected_writes in (None, 0):
        out = subprocess.run([sys.executable, "-m", "daemon.cli", "sync", "ul", "--config",
                              str(cfg)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        ends = [orjson.loads(x) for x in out.stdout.splitlines() if '"step.end"' in x]
        writes = sum(e.get(k, 0) for e in ends for k in ("created_left", "created_right",
                                                        "updated_left", "updated_right"))
        if expected_writes is not None:
            assert writes == expected_writes, ends

    final = asyncio.run(everything(ul, crm))
    customers, companies = final["u.customers"], final["p.companies"]
    assert len(customers) == CUSTOMERS
    names = Counter(r.fields["Name"] for r in companies)
    assert names == Counter(r.fields["CustomerName"] for r in customers), "duplicate or gap"
    ul_contacts, crm_contacts = final["u.contacts"], final["p.contacts"]
    assert len(ul_contacts) > CUSTOMERS // 2
    assert Counter(r.fields["EmailAddress"].lower() for r in ul_contacts) == \
        Counter((r.fields["Email"] or "").lower() for r in crm_contacts)
