"""The command line: ``accord run | sync | plan | status | check | history | exclude | include |
push | approve | migrate | demo reset | sandbox | presets``.

Every command but ``sandbox`` and ``presets`` takes ``--config FILE`` (default: $ACCORD_CONFIG,
else ./config.toml). A configuration that cannot be used prints its one-line error on stderr
and exits 2. Exit codes of the commands that run something: 0 clean, 1 finished with record
errors, 2 could not run.

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
from collections import Counter
from typing import Any, Sequence

import orjson
from sqlalchemy import delete, insert, select, update

from daemon import demo
from daemon import logging as accord_logging
from daemon import presets as preset_lib
from daemon import status as status_lib
from daemon.lease import make_lease
from daemon.app import App
from daemon.config import Config, ConfigError, load
from daemon.engine.runner import RunOptions, RunResult, run
from daemon.store import schema as store_schema
from daemon.store.db import loads, make_engine, now
from daemon.store.tables import T

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
    p = argparse.ArgumentParser(prog="accord",
                                description="Keeps a CRM and an ERP in agreement.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help: str, config: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        if config:
            sp.add_argument("--config", default=None, metavar="FILE",
                            help="configuration file (default: $ACCORD_CONFIG or ./config.toml)")
        return sp

    sp = cmd("run", "run the daemon until SIGTERM/SIGINT (SIGHUP reloads the config)")
    sp.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                    help="on stop, how long a run under way may go on (default 30)")

    sp = cmd("sync", "run one integration now")
    sp.add_argument("integration")
    sp.add_argument("--flow", action="append", default=None, metavar="FLOW",
                    help="only this flow (repeatable)")
    sp.add_argument("--dry-run", action="store_true", help="decide but write nothing")
    sp.add_argument("--full", action="store_true", help="read everything, not only changes")

    sp = cmd("plan", "what a run would do, record by record, without writing")
    sp.add_argument("integration")
    sp.add_argument("--flow", action="append", default=None, metavar="FLOW")
    sp.add_argument("--full", action="store_true")
    sp.add_argument("--json", action="store_true")

    sp = cmd("status", "last and next run of every integration, open errors, reviews, holds")
    sp.add_argument("--json", action="store_true")

    cmd("check", "validate the config and check every system's connectivity and credentials")

    sp = cmd("history", "the audit trail of one record: why did this value change?")
    sp.add_argument("integration")
    sp.add_argument("record")
    sp.add_argument("--json", action="store_true")

    sp = cmd("exclude", "leave one record out of the sync (BB-6), or of the next run (--once)")
    for a in ("integration", "flow"):
        sp.add_argument(a)
    sp.add_argument("side", choices=SIDES)
    sp.add_argument("id")
    sp.add_argument("--once", action="store_true", help="skip it in the next run only (BB-7)")
    sp.add_argument("--reason", default="")

    sp = cmd("include", "lift an exclusion; the record is read again next run")
    for a in ("integration", "flow"):
        sp.add_argument(a)
    sp.add_argument("side", choices=SIDES)
    sp.add_argument("id")

    sp = cmd("push", "sync one record to the other side now (UL-3's explicit push)")
    for a in ("integration", "flow"):
        sp.add_argument(a)
    sp.add_argument("side", choices=SIDES, help="the side the record lives on")
    sp.add_argument("id")

    sp = cmd("approve", "let the next run apply the deletes the circuit-breaker held")
    sp.add_argument("integration")
    sp.add_argument("--flow", default=None)

    sp = cmd("sandbox", "serve one vendor sandbox on 127.0.0.1 (a database sandbox: make "
                        "its file)", config=False)
    sp.add_argument("system", help="a sandbox type (see the list in the error)")
    sp.add_argument("--port", type=int, default=0, help="default: any free port")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--records", type=int, default=25)
    sp.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a sandbox constructor option, e.g. operating_companies=2 or "
                         "rate_limit=100000 (VALUE read as JSON when it parses)")

    cmd("migrate", "upgrade the state database to the schema this accord needs "
                   "(run it after upgrading accord)")

    sp = cmd("demo", "the demo's files (the bundled sandboxes' records and the state)")
    sp.add_argument("action", choices=["reset"],
                    help="reset: delete them (after asking), so the demo starts afresh")
    sp.add_argument("--yes", action="store_true", help="do not ask")

    cmd("presets", "list the bundled presets", config=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(amain(argv))
    except KeyboardInterrupt:
        return 130


async def amain(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    handler = COMMANDS[args.command]
    try:
        if args.command in ("sandbox", "presets"):
            return await handler(args)
        path = args.config or _default_config()
        try:
            cfg = load(path)
        except ConfigError as exc:
            raise Fail(str(exc)) from None
        return await handler(args, cfg)
    except Fail as exc:
        print(f"accord {args.command}: {exc}", file=sys.stderr)
        return exc.code


# --- helpers -------------------------------------------------------------------------------
def _log_setup(cfg: Config, stream: str = "stdout") -> None:
    """``run``/``sync`` log on stdout (it is their output); commands that print a result
    (plan, status, push ...) log on stderr so that their stdout stays parseable."""
    accord_logging.configure(cfg.daemon.log_format, cfg.daemon.log_level, stream=stream)


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


async def _open_app(cfg: Config) -> App:
    running = await demo.running_sandboxes(cfg)     # a daemon serving this demo: use them
    if running:
        print(f"accord: using the sandboxes of the running daemon (pid {demo.daemon_pid(cfg)})"
              f": {', '.join(sorted(running))}", file=sys.stderr)
    app = App(cfg)
    try:
        return await app.start(sandboxes=True, activity=False, running=running)
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
    """One line per flow on a terminal (stderr), redrawn as counts change."""

    def __init__(self, out=None) -> None:
        self.out = out or sys.stderr
        self.current: str | None = None

    def line(self, flow: str, c: Counter) -> str:
        read = c["read_left"] + c["read_right"]
        decided = sum(c[k] for k in DECIDED)
        written = sum(c[k] for k in WRITES)
        extra = "".join(f", {k} {c[k]}" for k in ("errors", "conflicts", "held") if c[k])
        return (f"{flow}: read {read} (left {c['read_left']}, right {c['read_right']}), "
                f"decided {decided}, written {written}{extra}")

    def __call__(self, flow: str, counts: Counter) -> None:
        if self.current not in (None, flow):
            self.out.write("\n")
        self.current = flow
        self.out.write("\r\x1b[K" + self.line(flow, counts))
        self.out.flush()

    def done(self) -> None:
        if self.current is not None:
            self.out.write("\n")
            self.out.flush()


# --- run, sync, plan -------------------------------------------------------------------------
async def cmd_run(args, cfg: Config) -> int:
    from daemon.service import Service
    service = Service(args.config or _default_config(), grace=args.grace)
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
    _log_setup(cfg)
    tty = sys.stderr.isatty()
    progress = Progress() if tty else None
    result = await _one_run(cfg, args.integration, RunOptions(
        trigger="cli", flows=args.flow, dry_run=args.dry_run, full=args.full), progress)
    if progress is not None:
        progress.done()
        for s in result.steps:
            print(f"{s.flow}: {s.status}" + (f" — {s.message}" if s.message else ""),
                  file=sys.stderr)
        print(f"run {result.run_id}: {result.status}"
              + (f" — {result.message}" if result.message else ""), file=sys.stderr)
    return result.exit_code


async def cmd_plan(args, cfg: Config) -> int:
    _log_setup(cfg, "stderr")
    result = await _one_run(cfg, args.integration, RunOptions(
        trigger="plan", flows=args.flow, dry_run=True, full=args.full))
    rows = [{"flow": s.flow, **p} for s in result.steps for p in s.planned]
    if args.json:
        print(orjson.dumps({"integration": args.integration, "status": result.status,
                            "message": result.message, "planned": rows,
                            "counts": {s.flow: dict(s.counts) for s in result.steps}},
                           default=str, option=orjson.OPT_INDENT_2).decode())
        return result.exit_code
    if result.status == "failed":
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
        for j in d["jobs"]:
            print(f"  job {j['name']}: {j['flow']} at cron {j['cron']!r}")
        for title, key, cols in (
                ("open record errors", "record_errors",
                 ["flow", "side", "record", "count", "message"]),
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


# --- check -----------------------------------------------------------------------------------
async def cmd_check(args, cfg: Config) -> int:
    _log_setup(cfg, "stderr")
    print(f"config {cfg.path}: OK")
    app = await _open_app(cfg)
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


# --- history ---------------------------------------------------------------------------------
async def cmd_history(args, cfg: Config) -> int:
    _integration_spec(cfg, args.integration)
    db = await _db(cfg)
    audit, links = T["audit"], T["links"]
    try:
        async with db.connect() as conn:
            ids = {args.record}
            for row in (await conn.execute(select(links.c.left_id, links.c.right_id).where(
                    links.c.integration == args.integration,
                    (links.c.left_id == args.record) | (links.c.right_id == args.record)))):
                ids.update(row)
            rows = (await conn.execute(select(audit).where(
                audit.c.integration == args.integration, audit.c.record_id.in_(sorted(ids)))
                .order_by(audit.c.at, audit.c.id))).mappings().all()
    finally:
        await db.dispose()
    items = [{"at": status_lib.iso(r["at"]), "run": r["run_id"], "flow": r["flow"], "side": r["side"],
              "record": r["record_id"], "field": r["field"], "old": loads(r["old"]),
              "new": loads(r["new"]), "rule": r["rule"]} for r in rows]
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
    ex = T["exclusions"]
    mode = "skip_once" if args.once else "never"
    db = await _db(cfg)
    try:
        async with db.begin() as conn:
            await conn.execute(delete(ex).where(*_key(ex, args)))
            await conn.execute(insert(ex).values(
                integration=args.integration, flow=args.flow, side=args.side,
                record_id=args.id, mode=mode, reason=args.reason, created_at=now()))
    finally:
        await db.dispose()
    when = "in the next run only" if args.once else "until `accord include`"
    print(f"excluded {args.side} {args.flow} record {args.id} of {args.integration} {when}")
    return EXIT_OK


def _key(t, args) -> list:
    return [t.c.integration == args.integration, t.c.flow == args.flow,
            t.c.side == args.side, t.c.record_id == args.id]


async def cmd_include(args, cfg: Config) -> int:
    _flow_name(cfg, args.integration, args.flow)
    ex = T["exclusions"]
    db = await _db(cfg)
    try:
        async with db.begin() as conn:
            gone = (await conn.execute(delete(ex).where(
                *_key(ex, args), ex.c.mode.in_(("never", "skip_once"))))).rowcount
            if gone:
                await conn.execute(delete(ex).where(*_key(ex, args)))
                await conn.execute(insert(ex).values(
                    integration=args.integration, flow=args.flow, side=args.side,
                    record_id=args.id, mode="revisit", reason="included again",
                    created_at=now()))
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
    _log_setup(cfg, "stderr")
    pushes, links, errors = T["pushes"], T["links"], T["record_errors"]
    target = "left" if args.side == "right" else "right"
    db = await _db(cfg)
    try:
        async with db.begin() as conn:
            await conn.execute(delete(pushes).where(*_key(pushes, args)))
            await conn.execute(insert(pushes).values(
                integration=args.integration, flow=args.flow, side=args.side,
                record_id=args.id, created_at=now()))
    finally:
        await db.dispose()
    result = await _one_run(cfg, args.integration, RunOptions(
        trigger="push", flows=[args.flow], only={args.flow: {args.side: [args.id]}}))
    if result.status == "failed":
        print(f"push failed: {result.message}")
        return result.exit_code
    db = await _db(cfg)
    try:
        async with db.connect() as conn:
            link = (await conn.execute(select(links).where(
                links.c.integration == args.integration, links.c.flow == args.flow,
                links.c[f"{args.side}_id"] == args.id))).mappings().first()
            err = (await conn.execute(select(errors).where(*_key(errors, args)))
                   ).mappings().first()
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
    _integration_spec(cfg, args.integration)
    if args.flow:
        _flow_name(cfg, args.integration, args.flow)
    held = T["held_deletes"]
    cond = [held.c.integration == args.integration, held.c.approved.is_(False)]
    if args.flow:
        cond.append(held.c.flow == args.flow)
    db = await _db(cfg)
    try:
        async with db.begin() as conn:
            n = (await conn.execute(update(held).where(*cond).values(approved=True))).rowcount
    finally:
        await db.dispose()
    where = f"{args.integration}" + (f" flow {args.flow}" if args.flow else "")
    print(f"approved {n} held delete{'s' if n != 1 else ''} of {where}; "
          f"the next run applies {'them' if n != 1 else 'it'}")
    return EXIT_OK


# --- migrate ---------------------------------------------------------------------------------
async def cmd_migrate(args, cfg: Config) -> int:
    """Upgrade the state database to the head revision; prints ``from → to``."""
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


async def cmd_presets(args) -> int:
    for name in preset_lib.names():
        desc = preset_lib.load(name).get("description", "")
        print(f"{name}" + (f"  {desc}" if desc else ""))
    return EXIT_OK


COMMANDS = {
    "run": cmd_run, "sync": cmd_sync, "plan": cmd_plan, "status": cmd_status,
    "check": cmd_check, "history": cmd_history, "exclude": cmd_exclude,
    "include": cmd_include, "push": cmd_push, "approve": cmd_approve,
    "migrate": cmd_migrate, "demo": cmd_demo, "sandbox": cmd_sandbox,
    "presets": cmd_presets,
}

if __name__ == "__main__":
    sys.exit(main())
