"""The command line: ``accord run | sync | plan | status | check | health | history | exclude |
include | push | approve | retry | migrate | demo reset | sandbox | presets``, and
``accord --version``.

Every command takes ``--config FILE`` (default: $ACCORD_CONFIG, else ./config.toml; ``presets``
reads it only when given, ``sandbox`` not at all). A configuration that cannot be used prints
its one-line error on stderr and exits 2, never a traceback. Exit codes of the commands that
run something: 0 clean, 1 finished with record errors, 2 could not run.

``main(argv)`` is the console script; ``await amain(argv)`` is the same from inside a running
event loop (tests).
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import signal
import sys
import time
from collections import Counter
from typing import Any, Sequence

import orjson
from sqlalchemy.engine import make_url

from daemon import __version__, demo, heap
from daemon import logging as accord_logging
from daemon import presets as preset_lib
from daemon import status as status_lib
from daemon.lease import make_lease
from daemon.app import App
from daemon.config import Config, ConfigError, WebSpec, load, load_web
from daemon.engine.runner import RunOptions, RunResult, run
from daemon.store import operator, reports
from daemon.store import schema as store_schema
from daemon.store.db import make_engine

SIDES = ("left", "right")
EXIT_OK, EXIT_ERRORS, EXIT_FAILED = 0, 1, 2


class Fail(Exception):
    """A command cannot go on: print the line on stderr, exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _default_config() -> str:
    return os.environ.get("ACCORD_CONFIG") or "config.toml"


# --- parser --------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="accord", description="Keeps a CRM and an ERP in agreement, both ways, on a "
        "schedule. `accord COMMAND --help` tells more about each command.",
        epilog="Exit codes: 0 done, 1 done with record errors, 2 could not run (a bad "
               "config, an unreachable system or state database).")
    p.add_argument("--version", action="version", version=f"accord {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands")

    def cmd(name: str, help: str, logs: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--config", default=None, metavar="FILE",
                        help="the configuration file (default: $ACCORD_CONFIG, else "
                             "./config.toml)")
        if logs:
            sp.add_argument("--console", action="store_true",
                            help="log for people, one short line per event, even when "
                                 "stdout is not a terminal (default: as [daemon] log_format "
                                 "says; auto is console on a terminal, JSON otherwise)")
            sp.add_argument("--verbose", "-v", action="store_true",
                            help="on the console, show every record line and the start "
                                 "of each run and step too")
        return sp

    def integration(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("integration", help="the integration's name, as in "
                                            "[integrations.NAME] of the config")

    def record(sp: argparse.ArgumentParser, side_help: str) -> None:
        integration(sp)
        sp.add_argument("flow", help="the flow's name (e.g. companies, contacts)")
        sp.add_argument("side", choices=SIDES, help=side_help)
        sp.add_argument("id", help="the record's id in that system")

    sp = cmd("run", "run the daemon until SIGTERM/SIGINT (SIGHUP reloads the config)",
             logs=True)
    sp.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                    help="on stop, how long a run under way may take to reach a chunk "
                         "boundary before it is cancelled (default 30)")

    sp = cmd("sync", "run one integration now", logs=True)
    integration(sp)
    sp.add_argument("--flow", action="append", default=None, metavar="FLOW",
                    help="only this flow (repeatable)")
    sp.add_argument("--dry-run", action="store_true", help="decide but write nothing")
    sp.add_argument("--full", action="store_true",
                    help="read everything, not only the changes since the last run")

    sp = cmd("plan", "what a run would do, record by record, without writing", logs=True)
    integration(sp)
    sp.add_argument("--flow", action="append", default=None, metavar="FLOW",
                    help="only this flow (repeatable)")
    sp.add_argument("--full", action="store_true",
                    help="plan over everything, not only the changes since the last run")
    sp.add_argument("--json", action="store_true", help="one JSON document on stdout")
    sp.add_argument("--stored", action="store_true",
                    help="show the plan a first run stored with its gate, per direction "
                         "(BB-3's preview), instead of planning now")

    sp = cmd("fields", "the custom fields of a flow's left system that have a counterpart in "
                       "the right one (BB-8), and the config lines that select them")
    integration(sp)
    sp.add_argument("flow", help="the flow's name")
    sp.add_argument("--json", action="store_true", help="one JSON document on stdout")

    sp = cmd("links", "the correspondence table: a flow's linked pairs with their names and "
                      "keys; set or lift \"no sync\" (BB-6) and \"not this time\" (BB-7)")
    integration(sp)
    sp.add_argument("flow", help="the flow's name")
    sp.add_argument("--json", action="store_true", help="one JSON document on stdout")
    sp.add_argument("--side", choices=SIDES, default="left",
                    help="the side of the id given to --no-sync, --not-this-time or --lift "
                         "(default left)")
    act = sp.add_mutually_exclusive_group()
    act.add_argument("--no-sync", metavar="ID", help="never sync this record and its partner")
    act.add_argument("--not-this-time", metavar="ID",
                     help="leave this record and its partner out of the next run only")
    act.add_argument("--lift", metavar="ID", help="lift either: synced again from the next run")

    sp = cmd("status", "last and next run of every integration, the integration log, open "
                       "errors, reviews, holds")
    sp.add_argument("--json", action="store_true", help="one JSON document on stdout")
    sp.add_argument("--log-runs", type=int, default=5, metavar="N",
                    help="runs of the integration log to show (default 5; --json has 20)")

    cmd("check", "validate the config, look at the state database and check every "
                 "system's connectivity and credentials", logs=True)

    cmd("health", "ask the running daemon's /healthz on the configured [web] port (exit 0 "
                  "alive, 1 not): the container HEALTHCHECK")

    sp = cmd("history", "the audit trail of one record: why did this value change?")
    integration(sp)
    sp.add_argument("record", help="the record's id, in either system")
    sp.add_argument("--json", action="store_true", help="one JSON document on stdout")

    sp = cmd("exclude", "leave one record out of the sync (BB-6), or of the next run (--once)")
    record(sp, "the system the id belongs to")
    sp.add_argument("--once", action="store_true", help="skip it in the next run only (BB-7)")
    sp.add_argument("--reason", default="", help="why, shown by status")

    sp = cmd("include", "lift an exclusion; the record is read again next run")
    record(sp, "the system the id belongs to")

    sp = cmd("push", "sync one record to the other side now (UL-3's explicit push)",
             logs=True)
    record(sp, "the side the record lives on")

    sp = cmd("approve", "let the next run go past what holds the integration: the deletes "
                        "the circuit-breaker held, a first run's stored plan, a system that "
                        "is not the instance the state was built with")
    integration(sp)
    sp.add_argument("--flow", default=None, metavar="FLOW",
                    help="only the held deletes of this flow")
    sp.add_argument("--first-run", action="store_true",
                    help="only the first run's stored plan: the synchronisation data is "
                         "correct (BB-9)")

    sp = cmd("retry", "try quarantined records again next run (and creates whose answer "
                      "was lost that could not be checked by any key)")
    integration(sp)
    sp.add_argument("flow", nargs="?", default=None, help="only this flow")
    sp.add_argument("side", nargs="?", choices=SIDES, default=None,
                    help="only records of this side")
    sp.add_argument("ids", nargs="*", help="record ids (default: every record of the flow)")

    sp = cmd("sandbox", "serve one vendor sandbox on 127.0.0.1 (a database sandbox: make "
                        "its file); --config is accepted and not read")
    sp.add_argument("system", help="a sandbox type: " + ", ".join(_sandbox_names()))
    sp.add_argument("--port", type=int, default=0, help="default: any free port")
    sp.add_argument("--seed", type=int, default=0,
                    help="the seed of the generated records (default 0)")
    sp.add_argument("--records", type=int, default=25,
                    help="how many records to generate (default 25)")
    sp.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a sandbox constructor option, e.g. operating_companies=2 or "
                         "rate_limit=100000 (VALUE read as JSON when it parses)")

    cmd("migrate", "upgrade the state database to the schema this accord needs "
                   "(run it after upgrading accord)", logs=True)

    sp = cmd("demo", "the demo's files (the bundled sandboxes' records and the state)")
    sp.add_argument("action", choices=["reset"],
                    help="reset: delete them (after asking), so the demo starts afresh")
    sp.add_argument("--yes", action="store_true", help="do not ask")

    cmd("presets", "list the bundled presets (with --config: which integrations use them)")
    return p


def _sandbox_names() -> list[str]:
    from daemon.registry import sandbox_names
    try:
        return sandbox_names()
    except Exception:                   # broken entry points: the error comes when used
        return []


def main(argv: Sequence[str] | None = None) -> int:
    """The console script. State files the daemon creates are its own (umask 077, as the
    systemd unit sets it); the imported modules are left out of garbage collection
    (``daemon.heap``); a closed pipe (``accord status | head -1``) ends it quietly."""
    os.umask(0o077)
    heap.freeze_startup()
    try:
        code = asyncio.run(amain(argv))
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that it says nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141                      # 128 + SIGPIPE, as other tools in a pipe


async def amain(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    handler = COMMANDS[args.command]
    try:
        if args.command == "sandbox":
            return await handler(args)
        if args.command == "presets":
            return await handler(args, _load(args.config) if args.config else None)
        if args.command == "health":        # the [web] table only: see config.load_web
            return await handler(args, _load_web(args.config or _default_config()))
        return await handler(args, _load(args.config or _default_config()))
    except Fail as exc:
        print(f"accord {args.command}: {exc}", file=sys.stderr)
        return exc.code


def _load(path: str) -> Config:
    try:
        return load(path)
    except ConfigError as exc:
        raise Fail(str(exc)) from None


def _load_web(path: str) -> WebSpec:
    try:
        return load_web(path)
    except ConfigError as exc:
        raise Fail(str(exc)) from None


# --- helpers -------------------------------------------------------------------------------
def _log_setup(cfg: Config, stream: str = "stdout", args=None) -> None:
    """``run``/``sync`` log on stdout (it is their output); commands that print a result
    (plan, status, push ...) log on stderr so that their stdout stays parseable."""
    console = getattr(args, "console", False)
    accord_logging.configure("console" if console else cfg.daemon.log_format,
                             cfg.daemon.log_level, stream=stream,
                             verbose=getattr(args, "verbose", False))


def _integration_spec(cfg: Config, name: str):
    if name not in cfg.integrations:
        raise Fail(f"no integration named {name!r} "
                   f"(configured: {', '.join(sorted(cfg.integrations)) or 'none'})")
    return cfg.integrations[name]


def _flow_name(cfg: Config, integ: str, flow: str) -> str:
    spec = _integration_spec(cfg, integ)
    names = [f.name for f in spec.flows]
    if flow not in names:
        raise Fail(f"integration {integ} has no flow {flow!r} (flows: {', '.join(names)})")
    return flow


async def _open_app(cfg: Config, *, state: bool = True) -> App:
    """The systems (and, unless ``state=False``, the state database). A daemon serving this
    demo's sandboxes: its sandboxes are used, not started a second time on the same files."""
    running = await demo.running_sandboxes(cfg)
    if running:
        print(f"accord: using the sandboxes of the running daemon (pid {demo.daemon_pid(cfg)})"
              f": {', '.join(sorted(running))}", file=sys.stderr)
    app = App(cfg)
    try:
        return await app.start(sandboxes=True, activity=False, running=running, state=state)
    except store_schema.SchemaError as exc:      # behind: one line that says `accord migrate`
        await app.close()
        raise Fail(str(exc)) from None
    except Exception as exc:
        await app.close()
        raise Fail(f"cannot start: {exc}") from None


async def _db(cfg: Config):
    """The state database, at the schema this accord needs (an empty one is migrated; one
    that is behind is refused: exit 2, with the line that says to run ``accord migrate``)."""
    engine = make_engine(cfg.daemon.database)
    try:
        await store_schema.check(engine, config_path=cfg.path or None)
    except store_schema.SchemaError as exc:
        await engine.dispose()
        raise Fail(str(exc)) from None
    except Exception as exc:
        await engine.dispose()
        raise Fail(f"cannot open the state database at "
                   f"{store_schema.where(cfg.daemon.database)}: {exc}") from None
    return engine


def _table(rows: list[list[Any]], head: list[str]) -> str:
    cells = [head] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _short(value: Any, n: int = 60) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= n else text[: n - 1] + "…"


WRITES = ("created_left", "created_right", "updated_left", "updated_right", "deleted",
          "marked", "unlinked")
DECIDED = WRITES + ("unchanged", "matched", "excluded", "held", "conflicts", "errors")


class Progress:
    """One line per flow on a terminal (stderr), redrawn as counts change; log lines go
    above it (``daemon.logging.status_line``), not into it."""

    def __init__(self, out=None) -> None:
        self.out = out or sys.stderr
        self.current: str | None = None

    @staticmethod
    def counts(c: Counter) -> str:
        read = c["read_left"] + c["read_right"]
        decided = sum(c[k] for k in DECIDED)
        written = sum(c[k] for k in WRITES)
        extra = "".join(f", {k} {c[k]}" for k in ("errors", "conflicts", "held") if c[k])
        return (f"read {read} (left {c['read_left']}, right {c['read_right']}), "
                f"decided {decided}, written {written}{extra}")

    def line(self, flow: str, c: Counter) -> str:
        return f"{flow}: {self.counts(c)}"

    def __call__(self, flow: str, counts: Counter) -> None:
        line = accord_logging.status_line
        if self.current not in (None, flow):
            line.end()
        self.current = flow
        line.show(self.line(flow, counts), self.out)

    def done(self) -> None:
        if self.current is not None:
            accord_logging.status_line.end()


def summary(result: RunResult, seconds: float) -> list[str]:
    """The lines a person reads at the end of ``accord sync``: each step, then the run."""
    lines = [f"{s.flow}: {s.status} — {Progress.counts(s.counts)}"
             + (f" — {s.message}" if s.message else "") for s in result.steps]
    total: Counter = Counter()
    for s in result.steps:
        total.update(s.counts)
    what = "plan" if result.run_id is None else f"run {result.run_id}"
    lines.append(f"{what}: {result.status} in {seconds:.1f}s — "
                 f"{len(result.steps)} flow{'s' if len(result.steps) != 1 else ''}, "
                 f"{Progress.counts(total)}"
                 + (f" — {result.message}" if result.message else ""))
    return lines


# --- run, sync, plan -------------------------------------------------------------------------
async def cmd_run(args, cfg: Config) -> int:
    from daemon.service import Service
    service = Service(args.config or _default_config(), grace=args.grace,
                      log_format="console" if args.console else None, verbose=args.verbose)
    try:
        return await service.serve()
    except ConfigError as exc:          # changed between our check and the service's load
        raise Fail(str(exc)) from None
    except store_schema.SchemaError as exc:     # behind: run `accord migrate`
        raise Fail(str(exc)) from None
    except OSError as exc:              # e.g. a sandbox port in use
        raise Fail(f"cannot start: {exc}") from None


async def _one_run(cfg: Config, name: str, options: RunOptions,
                   progress=None) -> RunResult:
    spec = _integration_spec(cfg, name)
    if not spec.enabled:
        raise Fail(f"integration {name} is disabled (enabled = false)")
    for flow in options.flows or []:
        _flow_name(cfg, name, flow)
    app = await _open_app(cfg)
    # on a shared PostgreSQL, a run by hand takes the integration's lease like a daemon does
    lease = make_lease(cfg.daemon.database, cfg.daemon.lease, cfg.daemon.lease_holder)
    try:
        if not await lease.acquire(name):
            raise Fail(f"integration {name} is being run by another daemon "
                       f"({await lease.holder_of(name) or 'unknown'}); try again later")
        return await run(app.db, app.integration(name), options, progress=progress)
    finally:
        await lease.close()
        await app.close()


async def cmd_sync(args, cfg: Config) -> int:
    _log_setup(cfg, args=args)
    tty = sys.stderr.isatty()
    progress = Progress() if tty else None
    started = time.monotonic()
    result = await _one_run(cfg, args.integration, RunOptions(
        trigger="cli", flows=args.flow, dry_run=args.dry_run, full=args.full), progress)
    if progress is not None:
        progress.done()
        print("\n".join(summary(result, time.monotonic() - started)), file=sys.stderr)
    return result.exit_code


async def cmd_plan(args, cfg: Config) -> int:
    _log_setup(cfg, "stderr", args)
    if args.stored:
        return await _stored_plan(args, cfg)
    result = await _one_run(cfg, args.integration, RunOptions(
        trigger="plan", flows=args.flow, dry_run=True, full=args.full))
    rows = [{"flow": s.flow, **p} for s in result.steps for p in s.planned]
    if args.json:
        print(orjson.dumps({"integration": args.integration, "status": result.status,
                            "message": result.message, "planned": rows,
                            "counts": {s.flow: dict(s.counts) for s in result.steps}},
                           default=str, option=orjson.OPT_INDENT_2).decode())
        return result.exit_code
    if result.status in ("failed", "crashed", "stopped"):
        print(f"cannot plan: {result.message}")
        return result.exit_code
    if not rows:
        print("nothing to do")
    else:
        table = []
        for r in rows:
            record = r.get("id") or (f"(new, from {r['from']})" if r.get("from") else "")
            fields = r.get("fields") or {}
            table.append([r["flow"], r["action"], r.get("side", ""), record,
                          ", ".join(f"{k}={_short(v, 30)}" for k, v in fields.items())])
        print(_table(table, ["flow", "action", "side", "record", "fields"]))
    for s in result.steps:
        if s.message:
            print(f"{s.flow}: {s.status} — {s.message}")
    return result.exit_code


# --- status ----------------------------------------------------------------------------------
async def _status_doc(cfg: Config) -> dict:
    db = await _db(cfg)
    try:
        return await status_lib.gather(cfg, db)
    finally:
        await db.dispose()


async def cmd_status(args, cfg: Config) -> int:
    doc = await _status_doc(cfg)
    if args.json:
        print(orjson.dumps(doc, default=str, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    for name, d in doc["integrations"].items():
        print(f"{name}" + ("" if d["enabled"] else " (disabled)"))
        last = d["last_run"]
        if last is None:
            print("  last run: never")
        else:
            print(f"  last run: #{last['id']} {last['status']} ({last['trigger']}) "
                  f"{last['started_at']} → {last['finished_at'] or 'still running'}"
                  + (f" — {last['message']}" if last["message"] else ""))
            for s in last["steps"]:
                counts = ", ".join(f"{k} {v}" for k, v in sorted(s["counts"].items()) if v)
                print(f"    {s['flow']}: {s['status']}" + (f" [{counts}]" if counts else "")
                      + (f" — {s['message']}" if s["message"] else ""))
        print(f"  next run: {d['next_run']}")
        log_lines = _log_lines(d.get("log") or [], args.log_runs)
        if log_lines:
            print("  integration log:")
            print("\n".join("    " + line for line in log_lines))
        for gate in d.get("gates", []):
            print(f"  {'approved' if gate['approved'] else 'HELD'}: {gate['message']}")
        for j in d["jobs"]:
            print(f"  job {j['name']}: {j['flow']} at cron {j['cron']!r}")
        for title, key, cols in (
                ("open record errors", "record_errors",
                 ["flow", "side", "record", "count", "quarantined", "message"]),
                ("ambiguous matches awaiting review", "reviews",
                 ["flow", "side", "record", "reason"]),
                ("held deletes (accord approve)", "held_deletes",
                 ["flow", "target", "record", "action", "approved"]),
                ("exclusions", "exclusions", ["flow", "side", "record", "mode", "reason"])):
            if d[key]:
                print(f"  {title}: {len(d[key])}")
                table = _table([[_short(r[c], 70) if c in ("message", "reason") else r[c]
                                 for c in cols] for r in d[key]], cols)
                print("\n".join("    " + line for line in table.splitlines()))
    return EXIT_OK


def _log_lines(entries: list[dict], runs: int) -> list[str]:
    """AJ-5: the integration log's newest ``runs`` runs, each with its steps' messages."""
    out = []
    for e in entries[:max(0, runs)]:
        out.append(f"#{e['run']} {e['started_at']} {e['status']} ({e['trigger']})"
                   + (f" — {e['message']}" if e["message"] else ""))
        for s in e["steps"]:
            if s["message"] or s["status"] != "ok":
                out.append(f"  {s['flow']}: {s['status']}"
                           + (f" — {s['message']}" if s["message"] else ""))
    return out


# --- check -----------------------------------------------------------------------------------
async def cmd_check(args, cfg: Config) -> int:
    """The config, then the state database (stop there if it does not answer: the daemon
    cannot start without it), then every system. Changes nothing: an empty or missing state
    database is reported, not created or migrated."""
    _log_setup(cfg, "stderr", args)
    print(f"config {cfg.path}: OK")
    print(await _check_state(cfg))
    app = await _open_app(cfg, state=False)
    ok = True
    try:
        for name, conn in app.connectors.items():
            kind = cfg.systems[name].type
            try:
                await conn.check()
            except Exception as exc:
                ok = False
                print(f"{name} ({kind}): {getattr(exc, 'message', None) or exc}")
            else:
                print(f"{name} ({kind}): OK")
    finally:
        await app.close()
    return EXIT_OK if ok else EXIT_FAILED


async def _check_state(cfg: Config) -> str:
    """One line on the state database, or Fail (exit 2) when the daemon could not use it."""
    url = cfg.daemon.database
    where = store_schema.where(url)
    sqlite_file = make_url(url).database if url.startswith("sqlite") else None
    if sqlite_file and sqlite_file != ":memory:" and not os.path.exists(sqlite_file):
        return f"state database {where}: not created yet (the first start creates it)"
    try:
        rev, tables = await store_schema.describe(url)
    except Exception as exc:
        raise Fail(f"state database {where}: unreachable: "
                   f"{_one_line(exc)}") from None
    head = store_schema.head()
    if rev == head:
        return f"state database {where}: reachable, schema {rev} (current)"
    if rev is None and not tables:
        return f"state database {where}: reachable, empty (the first start makes its tables)"
    if rev is not None and not store_schema.known(rev):
        raise Fail(f"state database {where}: schema {rev} is newer than this accord "
                   f"(it needs {head}): upgrade accord")
    raise Fail(f"state database {where}: schema {rev or 'from before migrations'} is behind "
               f"{head}: run `accord migrate --config {cfg.path}`")


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc) or type(exc).__name__
    return " ".join(text.split())[:300]


async def cmd_health(args, spec: WebSpec) -> int:
    """GET /healthz of the daemon this config runs, on 127.0.0.1 when it listens on all
    addresses. Exit 0 alive, 1 not (Docker's HEALTHCHECK reads just that). Only the
    config's ``[web]`` table is read: the daemon runs what it loaded at its start or last
    reload, whatever the file holds now."""
    import aiohttp
    if not spec.enabled:
        print("the web side is disabled ([web] enabled = false): no /healthz to ask")
        return EXIT_OK
    if spec.port == 0:
        raise Fail("[web] port = 0: the daemon picks its port at start, so there is no "
                   "known /healthz to ask; set a port", EXIT_ERRORS)
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(spec.host, spec.host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{spec.port}/healthz"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=4)) as http:
            async with http.get(url) as r:
                body = (await r.text())[:200]
                status = r.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise Fail(f"{url}: no answer ({type(exc).__name__}: {exc})", EXIT_ERRORS) from None
    if status != 200:
        raise Fail(f"{url}: {status} {body}", EXIT_ERRORS)
    print(f"{url}: alive")
    return EXIT_OK


# --- history ---------------------------------------------------------------------------------
async def cmd_history(args, cfg: Config) -> int:
    _integration_spec(cfg, args.integration)
    db = await _db(cfg)
    try:
        async with db.connect() as conn:
            items = await reports.history(conn, args.integration, args.record)
    finally:
        await db.dispose()
    if args.json:
        print(orjson.dumps(items, default=str, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    if not items:
        print(f"no writes recorded for {args.record} in {args.integration}")
        return EXIT_OK
    print(_table([[i["at"], i["run"], i["flow"], i["side"], i["record"], i["field"],
                   f"{_short(i['old'], 30)} -> {_short(i['new'], 30)}", i["rule"]]
                  for i in items],
                 ["when", "run", "flow", "side", "record", "field", "old -> new", "rule"]))
    return EXIT_OK


# --- exclusions, push, approve ----------------------------------------------------------------
async def cmd_exclude(args, cfg: Config) -> int:
    _flow_name(cfg, args.integration, args.flow)
    db = await _db(cfg)
    try:
        async with db.begin() as conn:
            await operator.exclude(conn, args.integration, args.flow, args.side, args.id,
                                   once=args.once, reason=args.reason)
    finally:
        await db.dispose()
    when = "in the next run only" if args.once else "until `accord include`"
    print(f"excluded {args.side} {args.flow} record {args.id} of {args.integration} {when}")
    return EXIT_OK


async def cmd_include(args, cfg: Config) -> int:
    _flow_name(cfg, args.integration, args.flow)
    db = await _db(cfg)
    try:
        async with db.begin() as conn:
            gone = await operator.include(conn, args.integration, args.flow, args.side, args.id)
    finally:
        await db.dispose()
    if not gone:
        print(f"{args.side} {args.flow} record {args.id} of {args.integration} "
              f"was not excluded")
        return EXIT_ERRORS
    print(f"included {args.side} {args.flow} record {args.id} of {args.integration}: "
          f"it is read again in the next run")
    return EXIT_OK


async def cmd_push(args, cfg: Config) -> int:
    _flow_name(cfg, args.integration, args.flow)
    _log_setup(cfg, "stderr", args)
    target = "left" if args.side == "right" else "right"
    db = await _db(cfg)
    try:
        async with db.begin() as conn:
            await operator.push(conn, args.integration, args.flow, args.side, args.id)
    finally:
        await db.dispose()
    result = await _one_run(cfg, args.integration, RunOptions(
        trigger="push", flows=[args.flow], only={args.flow: {args.side: [args.id]}}))
    if result.status in ("failed", "crashed", "stopped"):
        print(f"push failed: {result.message}")
        return result.exit_code
    db = await _db(cfg)
    try:
        async with db.connect() as conn:
            link, err = await reports.record_outcome(conn, args.integration, args.flow,
                                                     args.side, args.id)
    finally:
        await db.dispose()
    counts = Counter()
    for s in result.steps:
        counts.update(s.counts)
    if err is not None:
        print(f"not pushed: {err['message']}")
        return EXIT_ERRORS
    if link is None:
        print(f"not pushed: {args.side} {args.flow} record {args.id} was not found "
              f"or left out by the flow's rules")
        return EXIT_ERRORS
    other = link[f"{target}_id"]
    if counts[f"created_{target}"]:
        print(f"created {target} {args.flow} record {other} from {args.side} {args.id}")
    elif counts[f"updated_{target}"]:
        print(f"updated {target} {args.flow} record {other} (already linked)")
    else:
        print(f"already linked to {target} {args.flow} record {other}; nothing to change")
    return result.exit_code


async def cmd_approve(args, cfg: Config) -> int:
    from daemon.store import gates as gates_lib
    _integration_spec(cfg, args.integration)
    if args.flow:
        _flow_name(cfg, args.integration, args.flow)
    if args.first_run:
        return await _approve_first_run(args, cfg)
    db = await _db(cfg)
    try:
        async with db.begin() as conn:
            open_ = [x for x in await gates_lib.open_gates(conn, args.integration)
                     if not x["approved"]]
            done = await operator.approve(conn, args.integration, args.flow)
    finally:
        await db.dispose()
    where = f"{args.integration}" + (f" flow {args.flow}" if args.flow else "")
    n = done["held_deletes"]
    for x in open_:
        print(f"approved: {x['message']}")
    if n or not open_:
        print(f"approved {n} held delete{'s' if n != 1 else ''} of {where}; "
              f"the next run applies {'them' if n != 1 else 'it'}")
    return EXIT_OK


async def cmd_retry(args, cfg: Config) -> int:
    _integration_spec(cfg, args.integration)
    if args.flow:
        _flow_name(cfg, args.integration, args.flow)
    db = await _db(cfg)
    try:
        async with db.begin() as conn:
            n = await operator.retry(conn, args.integration, args.flow, args.side,
                                     args.ids or None)
    finally:
        await db.dispose()
    print(f"{n} record{'s' if n != 1 else ''} of {args.integration} will be tried again "
          f"next run")
    return EXIT_OK


# --- migrate ---------------------------------------------------------------------------------
async def cmd_migrate(args, cfg: Config) -> int:
    """Upgrade the state database to the head revision; prints ``from → to``."""
    _log_setup(cfg, "stderr", args)
    url = cfg.daemon.database
    try:
        before, after = await store_schema.upgrade(url)
    except store_schema.SchemaError as exc:
        raise Fail(str(exc)) from None
    except Exception as exc:
        raise Fail(f"cannot migrate the state database at {store_schema.where(url)}: "
                   f"{exc}") from None
    where = store_schema.where(url)
    if before == after:
        print(f"{where}: already at {after}")
    else:
        print(f"{where}: {before or 'none'} → {after}")
    return EXIT_OK


# --- demo ----------------------------------------------------------------------------------
async def cmd_demo(args, cfg: Config) -> int:
    """``accord demo reset``: delete the demo's files after asking (daemon/demo.py)."""
    try:
        paths = demo.reset_plan(cfg)
    except demo.NotADemo as exc:
        raise Fail(f"{cfg.path} is not a demo ({exc}): a reset deletes the files of a config "
                   "whose systems are all bundled sandboxes, and nothing else") from None
    pid = demo.daemon_pid(cfg)
    if pid is not None:
        raise Fail(f"the daemon (pid {pid}) is running on this demo; stop it first")
    if demo.files(cfg).state is None:
        print(f"the state database ({store_schema.where(cfg.daemon.database)}) is not a file: "
              "left as it is")
    if not paths:
        print("nothing to delete: the demo starts afresh")
        return EXIT_OK
    print("accord demo reset deletes:")
    for path in paths:
        print(f"  {path}")
    if not args.yes and not _confirm("delete these files? [y/N] "):
        print("nothing deleted")
        return EXIT_ERRORS
    demo.delete(paths)
    print(f"deleted {len(paths)} file{'s' if len(paths) != 1 else ''}: the next start "
          "generates the sandboxes' records afresh")
    return EXIT_OK


def _confirm(prompt: str) -> bool:
    try:
        answer = input(prompt)
    except (EOFError, OSError):         # no terminal to ask on: no
        answer = ""
    try:
        echoed = sys.stdin.isatty()
    except (OSError, ValueError):
        echoed = False
    if not echoed:
        print()                         # the answer was not echoed: end the prompt's line
    return answer.strip().lower() in ("y", "yes")


# --- sandbox, presets ------------------------------------------------------------------------
async def cmd_sandbox(args) -> int:
    from daemon.registry import sandbox_class, sandbox_names
    try:
        cls = sandbox_class(args.system)
    except KeyError as exc:
        raise Fail(f"{exc.args[0]}; sandboxes: {', '.join(sandbox_names())}") from None
    accord_logging.configure("auto", "info", stream="stderr")
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise Fail(f"--option {item!r}: use KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    try:
        sb = cls(seed=args.seed, records=args.records, **options)
    except TypeError as exc:
        raise Fail(f"{args.system} sandbox: {exc}") from None
    try:
        url = await sb.start(port=args.port)
    except OSError as exc:
        raise Fail(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    params = inspect.signature(cls.__init__).parameters
    creds = {k: getattr(sb, k, p.default) for k, p in params.items()
             if k not in ("self", "seed", "records", "clock") and isinstance(p.default, str)}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):     # before saying we are up
        loop.add_signal_handler(sig, stop.set)
    print(f"{args.system} sandbox at {url} with {args.records} records (seed {args.seed})")
    for k, v in creds.items():
        print(f"  {k} = {v!r}")
    print("stop with Ctrl-C", flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await sb.stop()
    return EXIT_OK


async def cmd_presets(args, cfg: Config | None) -> int:
    used: dict[str, list[str]] = {}
    for integ, spec in (cfg.integrations if cfg is not None else {}).items():
        if spec.preset:
            used.setdefault(spec.preset, []).append(integ)
    for name in preset_lib.names():
        desc = preset_lib.load(name).get("description", "")
        print(f"{name}" + (f"  {desc}" if desc else "")
              + (f"  (used by {', '.join(used[name])})" if name in used else ""))
    return EXIT_OK


# --- the first run's preview, the correspondence table, custom fields (BB-3, BB-6..BB-9) ------
async def _stored_plan(args, cfg: Config) -> int:
    from daemon import preview
    from daemon.store import gates as gates_lib
    spec = _integration_spec(cfg, args.integration)
    db = await _db(cfg)
    try:
        async with db.connect() as conn:
            gate = await gates_lib.gate(conn, args.integration, "first_run")
    finally:
        await db.dispose()
    if gate is None:
        print(f"no stored plan: {args.integration} has no first run waiting for approval")
        return EXIT_ERRORS
    rows = gate["detail"].get("rows", [])
    titles = {f.name: dict(f.title) for f in spec.flows}
    view = preview.by_direction(rows, titles)
    if args.json:
        print(orjson.dumps({"integration": args.integration, "approved": gate["approved"],
                            "counts": gate["detail"].get("counts"), "preview": view},
                           default=str, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    print(gate["message"])
    print("\n".join(preview.lines(view, spec.left, spec.right)))
    if gate["detail"].get("actions", 0) > len(rows):
        print(f"(the first {len(rows)} of {gate['detail']['actions']} actions)")
    return EXIT_OK


async def _approve_first_run(args, cfg: Config) -> int:
    from daemon.store import gates as gates_lib
    db = await _db(cfg)
    try:
        async with db.begin() as conn:
            gate = await gates_lib.gate(conn, args.integration, "first_run")
            if gate is not None:
                await gates_lib.approve_gate(conn, args.integration, "first_run")
    finally:
        await db.dispose()
    if gate is None:
        print(f"{args.integration} has no first run waiting for approval")
        return EXIT_ERRORS
    print(f"approved: the synchronisation data of {args.integration} is correct; the next "
          f"run synchronises")
    return EXIT_OK


async def cmd_links(args, cfg: Config) -> int:
    from daemon.links import MODE_WORDS, pair_row
    from daemon.store import correspondence as corr
    spec = _integration_spec(cfg, args.integration)
    _flow_name(cfg, args.integration, args.flow)
    flow = next(f for f in spec.flows if f.name == args.flow)
    target = args.no_sync or args.not_this_time or args.lift
    db = await _db(cfg)
    try:
        if target:
            mode = "never" if args.no_sync else "skip_once" if args.not_this_time else None
            async with db.begin() as conn:
                ids = await corr.set_mode(conn, args.integration, args.flow, args.side,
                                          target, mode)
            print(f"{MODE_WORDS[mode]}: " + ", ".join(f"{s} {i}" for s, i in ids.items()))
            return EXIT_OK
        rows, after = [], 0
        async with db.connect() as conn:
            while True:
                page = await corr.pairs(conn, args.integration, args.flow, after=after)
                if not page:
                    break
                rows += page
                after = page[-1]["id"]
            loose = await corr.unlinked_exclusions(conn, args.integration, args.flow)
    finally:
        await db.dispose()
    out = [pair_row(p, flow) for p in rows]
    if args.json:
        print(orjson.dumps({"integration": args.integration, "flow": args.flow, "pairs": out,
                            "excluded_unlinked": loose}, default=str,
                           option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    table = [[r["left"], _short(r["left_name"], 30), r["right"], _short(r["right_name"], 30),
              " / ".join(f"{a} = {b}" for a, b in r["keys"]),
              "no sync" if r["no_sync"] else "not this time" if r["not_this_time"] else ""]
             for r in out]
    print(_table(table, [spec.left, "name", spec.right, "name", "keys", "exclusion"])
          if table else "no linked pairs yet")
    for x in loose:
        print(f"{x['side']} {x['record_id']}: "
              f"{'no sync' if x['mode'] == 'never' else 'not this time'} (not linked)")
    return EXIT_OK


async def cmd_fields(args, cfg: Config) -> int:
    from daemon.fields import counterparts
    spec = _integration_spec(cfg, args.integration)
    _flow_name(cfg, args.integration, args.flow)
    flow = next(f for f in spec.flows if f.name == args.flow)
    app = await _open_app(cfg)
    try:
        integ = app.integration(args.integration)
        found = await counterparts(integ.sides["left"], integ.sides["right"], flow)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        raise Fail(f"cannot list the fields: {exc}") from None
    finally:
        await app.close()
    if args.json:
        print(orjson.dumps({"integration": args.integration, "flow": args.flow,
                            "fields": found}, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    if not found:
        print("no custom field of the left system has a counterpart in the right one")
        return EXIT_OK
    print(_table([[f["left"], f["label"], f["right"], "yes" if f["selected"] else ""]
                  for f in found], [spec.left, "label", spec.right, "selected"]))
    print(f"\nto select one, add to [[integrations.{args.integration}.flows]] "
          f"(name = \"{args.flow}\"):")
    for f in found:
        if not f["selected"]:
            print(f"  custom_fields = [{{ left = \"{f['left']}\", right = \"{f['right']}\" }}]"
                  f"   # optional: when = [{{ field = ..., op = ..., value = ... }}]")
    return EXIT_OK


COMMANDS = {
    "run": cmd_run, "sync": cmd_sync, "plan": cmd_plan, "status": cmd_status,
    "check": cmd_check, "health": cmd_health, "history": cmd_history, "exclude": cmd_exclude,
    "include": cmd_include, "push": cmd_push, "approve": cmd_approve,
    "retry": cmd_retry, "links": cmd_links, "fields": cmd_fields,
    "migrate": cmd_migrate, "demo": cmd_demo, "sandbox": cmd_sandbox, "presets": cmd_presets,
}

if __name__ == "__main__":
    sys.exit(main())
