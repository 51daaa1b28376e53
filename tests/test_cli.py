"""The `accord` command line, in-process (``await cli.amain([...])``) against sandboxes the test
starts itself on free ports, so it can look at what they received."""
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from sqlalchemy import insert, select

from connectors.prospect_crm.sandbox import ProspectSandbox
from connectors.unleashed.sandbox import UnleashedSandbox
from daemon import cli
from daemon.store.db import create_schema, make_engine, now
from daemon.store.tables import T

INTEG = "ul"
ROOT = Path(__file__).resolve().parent.parent




@pytest.fixture
def logs():
    """Every structlog event (any level) as a dict, whatever the suite's log set-up."""
    import logging
    old = structlog.get_config()
    cap = structlog.testing.LogCapture()
    structlog.configure(processors=[cap], cache_logger_on_first_use=False,
                        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield cap.entries
    structlog.configure(**old)


def config_text(tmp: Path, *, ul_url: str | None = None, crm_url: str | None = None,
                api_key: str = '"sandbox-key"', token: str = 'token = "sandbox-token"',
                options: str = "", schedule: str = 'every = "10m", jitter = "30s"',
                extra: str = "", ul_extra: str = "") -> str:
    """A config for the Unleashed <-> Prospect preset. With URLs: the test's own sandboxes;
    without: the daemon starts its own on port 0."""
    ul = f'base_url = "{ul_url}"' if ul_url else "sandbox = { port = 0, records = 3, seed = 1 }"
    crm = (f'base_url = "{crm_url}"' if crm_url
           else "sandbox = { port = 0, records = 2, seed = 2 }")
    return f"""
[daemon]
database = "sqlite:///{tmp / 'state.db'}"
log_format = "json"
log_level = "info"

[systems.unleashed]
type = "unleashed"
api_id = "sandbox"
api_key = {api_key}
{ul}
{ul_extra}

[systems.prospect]
type = "prospect_crm"
{token}
{crm}

[integrations.{INTEG}]
left = "unleashed"
right = "prospect"
preset = "unleashed_crm"
schedule = {{ {schedule} }}

[integrations.{INTEG}.options]
{options}
{extra}
"""


def write_config(tmp: Path, name: str = "config.toml", **kw) -> str:
    path = tmp / name
    path.write_text(config_text(tmp, **kw))
    return str(path)


@pytest.fixture
async def sandboxes():
    ul = UnleashedSandbox(seed=1, records=4)
    crm = ProspectSandbox(seed=2, records=2)
    await ul.start(0)
    await crm.start(0)
    yield ul, crm
    await ul.stop()
    await crm.stop()


@pytest.fixture
def cfg_path(tmp_path, sandboxes):
    ul, crm = sandboxes
    return write_config(tmp_path, ul_url=ul.url, crm_url=crm.url)


async def accord(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await cli.amain([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def log_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


async def rows(tmp: Path, table: str) -> list[dict]:
    db = make_engine(f"sqlite:///{tmp / 'state.db'}")
    await create_schema(db)
    try:
        async with db.connect() as conn:
            return [dict(r) for r in (await conn.execute(select(T[table]))).mappings()]
    finally:
        await db.dispose()


# --- sync ------------------------------------------------------------------------------------
async def test_sync_clean_exits_0_and_status_json_shows_the_run(capsys, cfg_path, sandboxes):
    ul, crm = sandboxes
    code, out, _ = await accord(capsys, "sync", INTEG, "--config", cfg_path)
    assert code == 0
    events = [e["event"] for e in log_lines(out)]
    assert events[0] == "run.start" and events[-1] == "run.end"
    assert crm.writes() > 0                         # Unleashed customers were created in the CRM

    code, out, _ = await accord(capsys, "status", "--json", "--config", cfg_path)
    assert code == 0
    doc = json.loads(out)["integrations"][INTEG]
    last = doc["last_run"]
    assert last["status"] == "ok" and last["trigger"] == "cli"
    assert last["started_at"] and last["finished_at"]
    steps = {s["flow"]: s for s in last["steps"]}
    assert set(steps) == {"companies", "contacts"}
    assert steps["companies"]["counts"]["created_right"] == 4
    assert steps["companies"]["counts"]["read_left"] == 4
    assert doc["record_errors"] == [] and doc["held_deletes"] == []
    assert doc["next_run"] not in ("at start-up", None)        # last start + 10m


async def test_status_before_any_run_says_at_start_up(capsys, cfg_path):
    code, out, _ = await accord(capsys, "status", "--config", cfg_path)
    assert code == 0
    assert "last run: never" in out and "next run: at start-up" in out


async def test_sync_with_record_errors_exits_1(capsys, cfg_path, sandboxes):
    ul, crm = sandboxes
    assert await cli.amain(["sync", INTEG, "--config", cfg_path]) == 0
    # UL-5: an account manager with no matching Unleashed sales person is refused, per record
    linked = [c for c in crm.data["Companies"].values() if c["CompanyId"] > 2]
    crm.modify("Companies", linked[0]["CompanyId"], {"AccountManagerId": "EW"})
    code, out, _ = await accord(capsys, "sync", INTEG, "--config", cfg_path)
    assert code == 1
    errors = [e for e in log_lines(out) if e["event"] == "record.error"]
    assert errors and "sales person" in errors[0]["error"]
    code, out, _ = await accord(capsys, "status", "--json", "--config", cfg_path)
    doc = json.loads(out)["integrations"][INTEG]
    assert doc["last_run"]["status"] == "errors"
    assert [e["flow"] for e in doc["record_errors"]] == ["companies"]
    code, out, _ = await accord(capsys, "status", "--config", cfg_path)
    assert "open record errors: 1" in out


async def test_sync_with_a_wrong_credential_exits_2_with_one_line_and_no_retry_storm(
        capsys, tmp_path, sandboxes):
    ul, crm = sandboxes
    path = write_config(tmp_path, ul_url=ul.url, crm_url=crm.url, api_key='"not-the-key"')
    code, out, err = await accord(capsys, "sync", INTEG, "--config", path)
    assert code == 2
    errors = [e for e in log_lines(out) if e["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["event"] == "run.end" and "signature" in errors[0]["message"]
    assert "not-the-key" not in out + err
    assert ul.count() <= 3                          # refused once, not retried in a loop
    assert crm.writes() == 0


async def test_unknown_integration_or_flow_exits_2(capsys, cfg_path):
    code, _, err = await accord(capsys, "sync", "nope", "--config", cfg_path)
    assert code == 2 and "no integration named 'nope'" in err
    code, _, err = await accord(capsys, "sync", INTEG, "--flow", "invoices", "--config", cfg_path)
    assert code == 2 and "no flow 'invoices'" in err


# --- plan, check -----------------------------------------------------------------------------
async def test_plan_lists_creates_and_writes_nothing(capsys, cfg_path, sandboxes):
    ul, crm = sandboxes
    code, out, _ = await accord(capsys, "plan", INTEG, "--flow", "companies", "--json",
                                "--config", cfg_path)
    assert code == 0
    doc = json.loads(out)
    creates = [p for p in doc["planned"] if p["action"] == "create"]
    assert len(creates) == 4 and {p["side"] for p in creates} == {"right"}
    assert {p["from"] for p in creates} == set(ul.customers)
    assert crm.writes() == 0 and ul.writes() == 0
    code, out, _ = await accord(capsys, "plan", INTEG, "--flow", "companies",
                                "--config", cfg_path)
    assert code == 0
    assert out.splitlines()[0].split() == ["flow", "action", "side", "record", "fields"]
    assert sum(" create " in line for line in out.splitlines()) == 4


async def test_check_reports_each_system(capsys, tmp_path, sandboxes, cfg_path):
    code, out, _ = await accord(capsys, "check", "--config", cfg_path)
    assert code == 0
    assert "unleashed (unleashed): OK" in out and "prospect (prospect_crm): OK" in out
    ul, crm = sandboxes
    bad = write_config(tmp_path, "bad.toml", ul_url=ul.url, crm_url=crm.url,
                       token='token = "wrong-token"')
    code, out, _ = await accord(capsys, "check", "--config", bad)
    assert code == 2
    lines = out.splitlines()
    assert "unleashed (unleashed): OK" in lines
    assert [ln for ln in lines if ln.startswith("prospect")] != ["prospect (prospect_crm): OK"]


async def test_bad_config_exits_2_with_the_error_line(capsys, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(config_text(tmp_path, extra="[daemon.oops]\nx = 1\n"))
    code, out, err = await accord(capsys, "status", "--config", path)
    assert code == 2
    assert str(path) in err and "daemon.oops" in err and len(err.strip().splitlines()) == 1
    code, _, err = await accord(capsys, "status", "--config", tmp_path / "missing.toml")
    assert code == 2 and "no such file" in err


async def test_config_defaults_to_env_variable(capsys, cfg_path, monkeypatch):
    monkeypatch.setenv("ACCORD_CONFIG", cfg_path)
    code, out, _ = await accord(capsys, "status")
    assert code == 0 and INTEG in out


# --- history ---------------------------------------------------------------------------------
async def test_history_shows_the_write_of_a_field(capsys, cfg_path, sandboxes):
    ul, crm = sandboxes
    assert await cli.amain(["sync", INTEG, "--config", cfg_path]) == 0
    guid = next(iter(ul.customers))
    customer = ul.customers[guid]
    customer["PhoneNumber"] = "+64 9 555 0199"
    customer["LastModifiedOn"] = ul.clock.now()
    assert await cli.amain(["sync", INTEG, "--config", cfg_path]) == 0
    code, out, _ = await accord(capsys, "history", INTEG, guid, "--json", "--config", cfg_path)
    assert code == 0
    items = json.loads(out)
    phone = [i for i in items if i["new"] == "+64 9 555 0199"]
    assert phone and phone[-1]["side"] == "right" and phone[-1]["flow"] == "companies"
    assert phone[-1]["rule"] and phone[-1]["run"] == 2
    code, out, _ = await accord(capsys, "history", INTEG, guid, "--config", cfg_path)
    assert "-> +64 9 555 0199" in out and out.splitlines()[0].startswith("when")
    code, out, _ = await accord(capsys, "history", INTEG, "nothing-here", "--config", cfg_path)
    assert code == 0 and "no writes recorded" in out


# --- exclusions ------------------------------------------------------------------------------
async def test_exclude_include_round_trip(capsys, cfg_path, tmp_path):
    code, out, _ = await accord(capsys, "exclude", INTEG, "companies", "left", "G-1",
                                "--reason", "duplicate", "--config", cfg_path)
    assert code == 0
    assert [(r["record_id"], r["mode"], r["reason"]) for r in await rows(tmp_path, "exclusions")] \
        == [("G-1", "never", "duplicate")]
    code, out, _ = await accord(capsys, "exclude", INTEG, "companies", "left", "G-1", "--once",
                                "--config", cfg_path)
    assert [r["mode"] for r in await rows(tmp_path, "exclusions")] == ["skip_once"]
    code, out, _ = await accord(capsys, "status", "--json", "--config", cfg_path)
    assert json.loads(out)["integrations"][INTEG]["exclusions"][0]["record"] == "G-1"

    code, out, _ = await accord(capsys, "include", INTEG, "companies", "left", "G-1",
                                "--config", cfg_path)
    assert code == 0 and "read again" in out
    assert [(r["record_id"], r["mode"]) for r in await rows(tmp_path, "exclusions")] \
        == [("G-1", "revisit")]
    code, out, _ = await accord(capsys, "include", INTEG, "companies", "left", "G-1",
                                "--config", cfg_path)
    assert code == 1 and "was not excluded" in out
    code, _, err = await accord(capsys, "exclude", INTEG, "invoices", "left", "G-1",
                                "--config", cfg_path)
    assert code == 2 and "no flow 'invoices'" in err


# --- push (UL-3) -----------------------------------------------------------------------------
async def test_ul03_push_creates_one_contact_only_under_a_linked_company(
        capsys, cfg_path, sandboxes, tmp_path):
    ul, crm = sandboxes
    assert await cli.amain(["sync", INTEG, "--config", cfg_path]) == 0
    links = {r["right_id"]: r["left_id"] for r in await rows(tmp_path, "links")
             if r["flow"] == "companies"}
    linked_company = int(next(iter(links)))
    unlinked_company = next(k for k in crm.data["Companies"] if str(k) not in links)
    ok = crm.insert("Contacts", {"CompanyId": linked_company, "Forename": "Pushy",
                                 "Surname": "McPush", "Email": "pushy@example.com"})
    orphan = crm.insert("Contacts", {"CompanyId": unlinked_company, "Forename": "Lone",
                                     "Surname": "Wolf", "Email": "lone@example.com"})
    # an ordinary run never creates a contact in Unleashed (create to_left = push)
    assert await cli.amain(["sync", INTEG, "--config", cfg_path]) == 0
    before = sum(len(c) for c in ul.contacts.values())
    assert ul.writes() == 0

    code, out, _ = await accord(capsys, "push", INTEG, "contacts", "right", orphan["ContactId"],
                                "--config", cfg_path)
    assert code == 1 and out.startswith("not pushed:")
    assert sum(len(c) for c in ul.contacts.values()) == before

    code, out, _ = await accord(capsys, "push", INTEG, "contacts", "right", ok["ContactId"],
                                "--config", cfg_path)
    assert code == 0 and out.startswith("created left contacts record")
    assert sum(len(c) for c in ul.contacts.values()) == before + 1
    made = [c for c in ul.contacts[links[str(linked_company)]].values()
            if c.get("EmailAddress") == "pushy@example.com"]
    assert len(made) == 1
    assert await rows(tmp_path, "pushes") == [] or all(
        r["record_id"] != str(ok["ContactId"]) for r in await rows(tmp_path, "pushes"))
    # pushing it again creates nothing more
    code, out, _ = await accord(capsys, "push", INTEG, "contacts", "right", ok["ContactId"],
                                "--config", cfg_path)
    assert code == 0 and "already linked" in out
    assert sum(len(c) for c in ul.contacts.values()) == before + 1


# --- approve ---------------------------------------------------------------------------------
async def test_approve_marks_held_deletes(capsys, cfg_path, tmp_path):
    db = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    await create_schema(db)
    async with db.begin() as conn:
        for i, flow in enumerate(["companies", "companies", "contacts"]):
            await conn.execute(insert(T["held_deletes"]).values(
                integration=INTEG, flow=flow, link_id=i + 1, target="right", record_id=str(i),
                action="delete", run_id=1, created_at=now()))
    await db.dispose()
    code, out, _ = await accord(capsys, "approve", INTEG, "--flow", "companies",
                                "--config", cfg_path)
    assert code == 0 and "approved 2 held deletes" in out
    held = {r["record_id"]: r["approved"] for r in await rows(tmp_path, "held_deletes")}
    assert held == {"0": True, "1": True, "2": False}
    code, out, _ = await accord(capsys, "approve", INTEG, "--config", cfg_path)
    assert "approved 1 held delete " in out
    code, out, _ = await accord(capsys, "status", "--json", "--config", cfg_path)
    assert len(json.loads(out)["integrations"][INTEG]["held_deletes"]) == 3


# --- presets, sandbox ------------------------------------------------------------------------
async def test_presets_lists_the_bundled_preset(capsys):
    code, out, _ = await accord(capsys, "presets")
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert code == 0 and "unleashed_crm" in names and names == sorted(names)


@contextlib.contextmanager
def served(*args: str):
    """``accord sandbox ARGS`` in a process of its own; it must stop cleanly on SIGTERM."""
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "sandbox", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sandbox_command_serves_and_stops_on_sigterm():
    with served("unleashed", "--port", "0", "--records", "2") as proc:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("unleashed sandbox at http://127.0.0.1:")
        assert "api_key = 'sandbox-key'" in "".join(lines)


def test_sandbox_command_serves_sage_sales_management_with_its_keys():
    with served("sage_sales_management", "--port", "0", "--records", "3") as proc:
        lines = "".join(proc.stdout.readline() for _ in range(4))
        assert lines.startswith("sage_sales_management sandbox at http://127.0.0.1:")
        assert "public_key = 'sandbox-public'" in lines
        assert "private_key = 'sandbox-private'" in lines


def test_sandbox_command_generates_a_sage50_database_file(tmp_path):
    import sqlite3
    path = tmp_path / "sage50.sqlite"
    with served("sage50fr", "--records", "4", "--option", f"path={path}") as proc:
        line = proc.stdout.readline()
        assert line.startswith(f"sage50fr sandbox at sqlite:///{path} with 4 records")
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM THIRD_PARTY").fetchone()[0] == 4


async def test_sandbox_command_unknown_type_exits_2(capsys):
    code, _, err = await accord(capsys, "sandbox", "salesforce", "--port", "0")
    assert code == 2 and "unknown type 'salesforce'" in err and "unleashed" in err


def test_progress_line_counts_read_decided_written():
    import io
    from collections import Counter
    out = io.StringIO()
    p = cli.Progress(out)
    p("companies", Counter(read_left=4, read_right=2, created_right=3, unchanged=1, errors=1))
    p("contacts", Counter(read_left=5))
    p.done()
    text = out.getvalue()
    assert ("companies: read 6 (left 4, right 2), decided 5, written 3, errors 1") in text
    assert text.endswith("contacts: read 5 (left 5, right 0), decided 0, written 0\n")


# --- the command line itself -------------------------------------------------------------------
async def test_version_is_the_package_version(capsys):
    import tomllib
    from daemon import __version__
    with pytest.raises(SystemExit) as info:
        await cli.amain(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"accord {__version__}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"]


def _subcommands() -> dict:
    import argparse
    p = cli.parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_command_option_and_argument_has_help_and_takes_config():
    import argparse
    commands = _subcommands()
    assert set(commands) == set(cli.COMMANDS)
    for name, sp in commands.items():
        assert sp.description, name
        for action in sp._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"{name} {action.dest}: no help"
        assert "--config" in sp._option_string_actions, f"{name} takes no --config"


async def test_presets_takes_a_config_and_says_which_integrations_use_them(capsys, cfg_path):
    code, out, err = await accord(capsys, "presets", "--config", cfg_path)
    assert code == 0 and err == ""
    line = next(x for x in out.splitlines() if x.startswith("unleashed_crm"))
    assert line.endswith(f"(used by {INTEG})")


async def test_check_reports_the_state_database(capsys, tmp_path, cfg_path):
    code, out, _ = await accord(capsys, "check", "--config", cfg_path)
    assert code == 0 and "state database sqlite:///" in out and "not created yet" in out
    assert not (tmp_path / "state.db").exists()            # check creates nothing
    assert await cli.amain(["sync", INTEG, "--config", cfg_path]) == 0
    code, out, _ = await accord(capsys, "check", "--config", cfg_path)
    from daemon.store.schema import head, stamp
    assert code == 0 and f"reachable, schema {head()} (current)" in out
    await stamp(f"sqlite:///{tmp_path / 'state.db'}", "0001")
    code, out, err = await accord(capsys, "check", "--config", cfg_path)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"is behind {head()}: run `accord migrate --config {cfg_path}`" in err


async def test_health_without_a_daemon_exits_1_and_a_disabled_web_side_exits_0(capsys,
                                                                               tmp_path):
    from tests.test_crash_recovery import free_port
    path = write_config(tmp_path, extra=f"[web]\nport = {free_port()}\n")
    code, _, err = await accord(capsys, "health", "--config", path)
    assert code == 1 and "/healthz: no answer" in err
    path = write_config(tmp_path, "off.toml", extra="[web]\nenabled = false\n")
    code, out, _ = await accord(capsys, "health", "--config", path)
    assert code == 0 and "disabled" in out


async def test_health_reads_only_the_web_table_of_the_config(capsys, tmp_path, monkeypatch):
    # the daemon runs the configuration it loaded; an edit that breaks an integration (not
    # reloaded yet, or refused by the reload) must not make it look unhealthy
    from tests.test_crash_recovery import free_port
    port = free_port()
    path = Path(write_config(tmp_path, extra=f"[web]\nport = {port}\n"))
    path.write_text(path.read_text() + '[systems.broken]\ntype = "no such connector"\n'
                    'token = "${NOT_SET_ANYWHERE}"\n')
    code, _, err = await accord(capsys, "check", "--config", str(path))
    assert code != 0                                    # the file as a whole is refused
    code, _, err = await accord(capsys, "health", "--config", str(path))
    assert code == 1 and f"127.0.0.1:{port}/healthz: no answer" in err    # asked all the same
    # the [web] table itself is checked as `check` checks it, naming the file and the key
    monkeypatch.setenv("HEALTH_TOKEN", "t0ken")
    bad = tmp_path / "bad.toml"
    bad.write_text('[web]\nport = "eighty"\ntoken = "${HEALTH_TOKEN}"\n')
    code, _, err = await accord(capsys, "health", "--config", str(bad))
    assert code == 2 and f"{bad}: web.port:" in err and "t0ken" not in err
    bad.write_text('[web]\nport = 8080\ntoken = "${NOT_SET_ANYWHERE}"\n')
    code, _, err = await accord(capsys, "health", "--config", str(bad))
    assert code == 2 and "web.token: environment variable NOT_SET_ANYWHERE is not set" in err


def test_a_closed_pipe_ends_status_quietly(tmp_path):
    path = write_config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "status", "--config", path],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                         # `| head -1` that has already gone
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err and err == ""


# --- what a person reads -------------------------------------------------------------------------
def test_console_lines_are_short_ordered_and_leave_out_none_and_chatter(capsys):
    from daemon import logging as accord_logging
    accord_logging.configure("console", "info")
    log = structlog.get_logger("accord.run").bind(integration="ul", run=3)
    step = log.bind(flow="companies")
    log.info("run.start", trigger="schedule", dry_run=False)
    for i in range(350):
        step.info("record.created", side="right", record=f"r{i}", source=f"s{i}")
    step.error("record.error", side="right", record="G-1", error="refused: " + "x" * 300,
               message=None)
    step.warning("conflict", field="Phone", left="1", right="2", winner="left")
    step.info("ownership.violation", field="AccountManager", side="right", value="EW")
    step.info("step.end", status="ok", message=None, seconds=1.25, read_left=4,
              created_right=4)
    log.info("run.end", status="ok", message=None, seconds=2.5, read_left=4,
             created_right=4, api_key="k-1")
    lines = capsys.readouterr().out.splitlines()
    events = [line.split()[1] if line.split()[1] not in ("warn", "ERROR") else line.split()[2]
              for line in lines]
    assert events == ["record.error", "conflict", "ownership.violation", "step.end",
                      "run.end"]
    assert all(len(line) <= 160 for line in lines)
    assert all("None" not in line and "message=" not in line for line in lines)
    err = lines[0]
    assert err.split()[1:5] == ["ERROR", "record.error", "ul/companies", "run=3"]
    assert err.index("side=right") < err.index("record=G-1") < err.index("error=")
    value = err.split("error=", 1)[1]
    assert len(value) <= 62 and value.endswith("…\"")
    assert lines[3].split()[1:6] == ["step.end", "ul/companies", "run=3", "ok", "1.2s"]
    assert "read_left=4 created_right=4" in lines[3]
    assert "k-1" not in lines[4] and "api_key=***" in lines[4]


def test_console_verbose_shows_the_chatter_and_json_keeps_every_key(capsys):
    from daemon import logging as accord_logging
    accord_logging.configure("console", "info", verbose=True)
    structlog.get_logger("accord.step").bind(integration="ul", flow="c").info(
        "record.created", side="right", record="r1", source=None)
    out = capsys.readouterr().out
    assert "record.created ul/c side=right record=r1" in out and "source" not in out
    accord_logging.configure("json", "info")
    structlog.get_logger("accord.step").bind(integration="ul", flow="c").info(
        "record.created", side="right", record="r1", source=None)
    doc = json.loads(capsys.readouterr().out)
    assert list(doc)[:4] == ["timestamp", "level", "event", "logger"]
    assert doc["source"] is None and doc["record"] == "r1"


def test_progress_is_cleared_before_a_log_line_and_drawn_again_under_it(capsys):
    import io
    from collections import Counter
    from daemon import logging as accord_logging
    accord_logging.configure("console", "info")
    term = io.StringIO()
    p = cli.Progress(term)
    p("companies", Counter(read_left=1))
    structlog.get_logger("accord.step").error("record.error", record="x", error="no")
    p("companies", Counter(read_left=2))
    p.done()
    text = term.getvalue()
    # the progress line was wiped (\r ESC[K) before the log line and redrawn after it
    assert text.count("\r\x1b[K") >= 3
    assert text.endswith("companies: read 2 (left 2, right 0), decided 0, written 0\n")
    assert "record.error" in capsys.readouterr().out
    assert accord_logging.status_line.text is None


def test_the_sync_summary_has_the_counts_of_each_step_and_of_the_run():
    from collections import Counter
    from daemon.engine.runner import RunResult
    from daemon.engine.step import StepResult
    result = RunResult(7, "errors", steps=[
        StepResult("companies", "ok", Counter(read_left=4, created_right=4)),
        StepResult("contacts", "errors", Counter(read_right=2, errors=1, unchanged=1),
                   message="1 record error")])
    lines = cli.summary(result, 2.04)
    assert lines[0] == ("companies: ok — read 4 (left 4, right 0), decided 4, written 4")
    assert lines[1].startswith("contacts: errors — read 2 (left 0, right 2), decided 2, "
                               "written 0, errors 1 — 1 record error")
    assert lines[2] == ("run 7: errors in 2.0s — 2 flows, read 6 (left 4, right 2), "
                        "decided 6, written 4, errors 1")


def test_the_console_script_leaves_its_imported_modules_out_of_garbage_collection(capsys):
    """``main`` freezes what the imports made (daemon.heap), so the collector's full passes
    during a sync do not walk the modules again and again."""
    import gc

    from daemon import cli, heap
    gc.unfreeze()
    threshold = gc.get_threshold()
    try:
        assert cli.main(["presets"]) == 0
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == heap.YOUNG
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert "unleashed_crm" in capsys.readouterr().out
