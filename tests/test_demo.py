"""The demo as a user meets it: sandboxes that keep their records in files next to the state,
commands beside a running daemon that use its sandboxes, a reload that keeps them, and
``accord demo reset``. In-process (a Service and ``cli.amain``) except one test that runs the
daemon and the commands as processes, as a user does in two terminals."""
from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.prospect_crm.sandbox import ProspectSandbox
from connectors.sage_sales_management.sandbox import SageSalesManagementSandbox
from connectors.sandbox import SandboxFileError
from connectors.unleashed.sandbox import UnleashedSandbox
from daemon import demo
from daemon.config import load
from daemon.service import Service
from tests.test_cli import INTEG, ROOT, accord
from tests.test_crash_recovery import free_port
from tests.test_lease import Proc, event_is


def demo_config(tmp: Path, *, ul_port: int = 0, crm_port: int = 0, ul_records: int = 3,
                sage50: bool = False, web: str = "enabled = false") -> str:
    sage = f"""
[systems.sage50]
type = "sage50fr"
state_path = "{tmp / 'sage50-ids.sqlite'}"
sandbox = {{ records = 3, seed = 3 }}
""" if sage50 else ""
    path = tmp / "demo.toml"
    path.write_text(f"""
[daemon]
database = "sqlite:///{tmp / 'accord-state.db'}"
log_format = "json"

[web]
{web}

[systems.unleashed]
type = "unleashed"
api_id = "sandbox"
api_key = "sandbox-key"
sandbox = {{ port = {ul_port}, records = {ul_records}, seed = 1 }}

[systems.prospect]
type = "prospect_crm"
token = "sandbox-token"
sandbox = {{ port = {crm_port}, records = 2, seed = 2 }}
{sage}
[integrations.{INTEG}]
left = "unleashed"
right = "prospect"
preset = "unleashed_crm"
schedule = {{ every = "1h", jitter = "0s", run_at_start = false }}
""")
    return str(path)


async def daemon(path: str) -> Service:
    svc = Service(path, configure_logging=False, activity=False)
    await svc.start(paused=True)
    return svc


def companies(svc: Service) -> dict:
    return svc.app.sandboxes["prospect"].data["Companies"]


# --- a sandbox's records file ------------------------------------------------------------------
@pytest.mark.parametrize("cls", [UnleashedSandbox, ProspectSandbox, SageSalesManagementSandbox])
async def test_a_sandbox_reads_back_exactly_what_it_kept(tmp_path, cls):
    path = tmp_path / "records.json"
    first = cls(seed=3, records=4)
    assert first.keep_in(path) is False and path.exists()
    for _ in range(3):
        first.touch(first.rng)
    first.changed()
    await first.start()
    await first.stop()                          # writes what the delay had not written yet
    again = cls(seed=3, records=0)
    assert again.keep_in(path) is True
    for name in cls.persisted:
        assert getattr(again, name) == getattr(first, name), name
    assert again.rng.getstate() == first.rng.getstate()     # no new id repeats an old one
    assert again.instance_id == first.instance_id   # the same instance, not a changed system


async def test_changes_through_the_api_are_written_once_after_a_delay_and_at_stop(tmp_path):
    import aiohttp
    path = tmp_path / "crm.json"
    sb = ProspectSandbox(seed=2, records=1)
    sb.keep_in(path, delay=3600)                # debounced: nothing written for now
    await sb.start()
    try:
        async with aiohttp.ClientSession() as s:
            for name in ("Kept Ltd", "Also Kept Ltd"):
                async with s.post(f"{sb.url}/Companies", json={"Name": name},
                                  headers={"Authorization": "Bearer sandbox-token"}) as r:
                    assert r.status == 201
        assert "Kept Ltd" not in path.read_text()
    finally:
        await sb.stop()                         # what is pending is written now
    back = ProspectSandbox(records=0)
    back.keep_in(path)
    names = [c["Name"] for c in back.data["Companies"].values()]
    assert "Kept Ltd" in names and "Also Kept Ltd" in names


def test_a_damaged_records_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "ul.json"
    path.write_text('{"sandbox": "unleashed", "format": 1, "records": {"custo')
    with pytest.raises(SandboxFileError, match="not a sandbox file") as info:
        UnleashedSandbox().keep_in(path)
    assert str(path) in str(info.value) and "accord demo reset" in str(info.value)
    assert path.read_text().endswith('"custo')
    other = tmp_path / "crm.json"
    ProspectSandbox(records=1).keep_in(other)
    with pytest.raises(SandboxFileError, match="prospect_crm sandbox, not of a unleashed"):
        UnleashedSandbox().keep_in(other)


# --- restart, reload ---------------------------------------------------------------------------
async def test_a_restart_keeps_the_records_and_the_links_still_point_at_them(tmp_path, capsys):
    path = demo_config(tmp_path, sage50=True)
    svc = await daemon(path)
    try:
        result = await svc.trigger(INTEG)
        assert result.status == "ok"
        assert len(companies(svc)) == 2 + 3          # Unleashed customers created in the CRM
        svc.app.sandboxes["unleashed"].touch(svc.app.sandboxes["unleashed"].rng)
        svc.app.sandboxes["unleashed"].changed()
        before = {k: dict(v) for k, v in companies(svc).items()}
        customers = dict(svc.app.sandboxes["unleashed"].customers)
        sage_rows = svc.app.sandboxes["sage50"].rows("third_parties")
    finally:
        await svc.stop()
    f = demo.files(load(path))
    assert f.sandbox_file("unleashed").exists() and f.sandbox_file("prospect").exists()
    assert f.sandbox_file("sage50", ".sqlite").exists()     # the generated file is kept
    assert not f.run_file.exists()

    svc = await daemon(path)
    try:
        assert {k: dict(v) for k, v in companies(svc).items()} == before
        assert svc.app.sandboxes["unleashed"].customers == customers
        assert svc.app.sandboxes["sage50"].rows("third_parties") == sage_rows
        result = await svc.trigger(INTEG)
        assert result.status == "ok"
        counts = {s.flow: s.counts for s in result.steps}
        assert counts["companies"]["created_right"] == 0 and len(companies(svc)) == 5
    finally:
        await svc.stop()


async def test_a_reload_keeps_the_sandboxes_serving_and_one_changed_restarts_from_its_file(
        tmp_path):
    path = demo_config(tmp_path)
    svc = await daemon(path)
    try:
        ul, crm = svc.app.sandboxes["unleashed"], svc.app.sandboxes["prospect"]
        run_file = json.loads(demo.files(svc.cfg).run_file.read_text())
        assert await svc.trigger(INTEG)
        assert await svc.reload()
        assert svc.app.sandboxes["unleashed"] is ul and svc.app.sandboxes["prospect"] is crm
        assert json.loads(demo.files(svc.cfg).run_file.read_text()) == run_file
        # a reload that changes one sandbox's table restarts that one, from its file
        Path(path).write_text(Path(path).read_text().replace("records = 2, seed = 2",
                                                             "records = 9, seed = 2"))
        before = {k: dict(v) for k, v in crm.data["Companies"].items()}
        assert await svc.reload()
        assert svc.app.sandboxes["unleashed"] is ul
        assert svc.app.sandboxes["prospect"] is not crm
        assert {k: dict(v) for k, v in companies(svc).items()} == before
    finally:
        await svc.stop()


# --- commands beside the daemon, or without it ---------------------------------------------------
async def test_a_second_cli_on_the_same_config_uses_the_daemons_sandboxes(tmp_path, capsys):
    path = demo_config(tmp_path)
    svc = await daemon(path)
    try:
        ul = svc.app.sandboxes["unleashed"]
        run_file = json.loads(demo.files(svc.cfg).run_file.read_text())
        assert run_file["sandboxes"]["prospect"]["url"] == svc.app.sandboxes["prospect"].url
        code, out, err = await accord(capsys, "sync", INTEG, "--config", path)
        assert code == 0 and "using the sandboxes of the running daemon" in err
        runs = [json.loads(x) for x in out.splitlines() if x.startswith('{"')]
        created, = [e["created_right"] for e in runs
                    if e["event"] == "step.end" and e["flow"] == "companies"]
        assert created == len(ul.customers) == 3
        assert len(companies(svc)) == 2 + created       # the records went to the daemon's CRM
        hits = ul.count()
        code, out, _ = await accord(capsys, "plan", INTEG, "--config", path)
        assert code == 0 and out.splitlines()[0] == "nothing to do"
        code, out, _ = await accord(capsys, "check", "--config", path)
        assert code == 0 and "prospect (prospect_crm): OK" in out
        assert ul.count() > hits                        # they asked the daemon's sandbox
    finally:
        await svc.stop()


async def test_without_the_daemon_commands_start_the_sandboxes_from_their_files(
        tmp_path, capsys):
    path = demo_config(tmp_path, ul_port=free_port(), crm_port=free_port())
    code, out, err = await accord(capsys, "sync", INTEG, "--config", path)
    assert code == 0 and "using the sandboxes" not in err
    code, out, err = await accord(capsys, "plan", INTEG, "--config", path)
    assert code == 0 and out.splitlines()[0] == "nothing to do"     # the same records
    kept = ProspectSandbox(records=0)
    kept.keep_in(demo.files(load(path)).sandbox_file("prospect"))
    assert len(kept.data["Companies"]) == 2 + 3
    # a stale run file (its daemon is gone) is not trusted
    demo.files(load(path)).run_file.write_text(json.dumps(
        {"pid": 2 ** 22 + 1, "sandboxes": {"prospect": {"type": "prospect_crm",
                                                         "url": "http://127.0.0.1:9"}}}))
    code, out, err = await accord(capsys, "check", "--config", path)
    assert code == 0 and "using the sandboxes" not in err


async def test_a_damaged_sandbox_file_stops_a_command_with_one_line(tmp_path, capsys):
    path = demo_config(tmp_path)
    demo.files(load(path)).sandbox_file("unleashed").write_text("<html>")
    code, out, err = await accord(capsys, "check", "--config", path)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "sandbox-unleashed.json: not a sandbox file" in err and "Traceback" not in err


# --- reset -------------------------------------------------------------------------------------
async def test_reset_asks_then_removes_the_demos_files_and_the_demo_starts_afresh(
        tmp_path, capsys, monkeypatch):
    path = demo_config(tmp_path, sage50=True)
    svc = await daemon(path)
    try:
        assert (await svc.trigger(INTEG)).status == "ok"
        code, _, err = await accord(capsys, "demo", "reset", "--config", path, "--yes")
        assert code == 2 and "is running on this demo; stop it first" in err
    finally:
        await svc.stop()
    (tmp_path / "sage50-ids.sqlite").write_bytes(b"")    # what the Sage 50 connector keeps
    (tmp_path / "unrelated.txt").write_text("mine")
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    code, out, _ = await accord(capsys, "demo", "reset", "--config", path)
    assert code == 1 and "nothing deleted" in out
    assert (tmp_path / "accord-state.db").exists()
    listed = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert {Path(p).name for p in listed} >= {
        "accord-state.db", "accord-state.sandbox-unleashed.json",
        "accord-state.sandbox-prospect.json", "accord-state.sandbox-sage50.sqlite",
        "sage50-ids.sqlite"}

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, out, _ = await accord(capsys, "demo", "reset", "--config", path)
    assert code == 0 and f"deleted {len(listed)} files" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.toml", "unrelated.txt"]

    svc = await daemon(path)                              # afresh: generated again
    try:
        assert len(companies(svc)) == 2 and len(svc.app.sandboxes["unleashed"].customers) == 3
    finally:
        await svc.stop()
    code, out, _ = await accord(capsys, "demo", "reset", "--config", path, "--yes")
    assert code == 0 and "deleted" in out


async def test_reset_refuses_a_config_that_is_not_only_sandboxes(tmp_path, capsys):
    path = Path(demo_config(tmp_path))
    path.write_text(path.read_text().replace(
        'sandbox = { port = 0, records = 2, seed = 2 }', 'base_url = "https://crm.example"'))
    (tmp_path / "accord-state.db").write_bytes(b"state")
    code, _, err = await accord(capsys, "demo", "reset", "--config", path, "--yes")
    assert code == 2 and "systems.prospect is not a sandbox" in err
    assert (tmp_path / "accord-state.db").read_bytes() == b"state"


# --- as a user: the daemon in one terminal, commands in another --------------------------------
def cli_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_commands_beside_accord_run_and_after_it_see_the_same_systems(tmp_path):
    path = demo_config(tmp_path, ul_port=free_port(), crm_port=free_port())
    run = Proc("run", "--config", path, cwd=ROOT)
    try:
        run.wait_for(event_is("service.started"), 60)
        sync = cli_process("sync", INTEG, "--config", path)
        assert sync.returncode == 0, sync.stderr       # not "address already in use"
        assert "using the sandboxes of the running daemon" in sync.stderr
        run.p.send_signal(signal.SIGHUP)
        run.wait_for(event_is("config.reloaded"), 60)
        plan = cli_process("plan", INTEG, "--config", path)
        assert plan.returncode == 0 and plan.stdout.splitlines()[0] == "nothing to do"
    finally:
        run.stop()
    assert run.p.returncode == 0
    assert not demo.files(load(path)).run_file.exists()
    plan = cli_process("plan", INTEG, "--config", path)      # the daemon stopped: from files
    assert plan.returncode == 0 and plan.stdout.splitlines()[0] == "nothing to do"
    assert "using the sandboxes" not in plan.stderr
