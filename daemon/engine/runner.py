"""One run of one integration: check both systems and their gates, then each flow in order.

A real run is a row in ``runs`` that always ends with a final status and a ``run.end`` line:
``ok``, ``errors``, ``failed``, ``waiting`` (a gate holds it), ``stopped`` (``stop()`` said so
at a chunk boundary, or the task was cancelled) or ``crashed`` (an unexpected exception, its
traceback logged once as ``run.crashed``). ``stop`` is asked after every staged page and
committed chunk (the points where the step reports progress) and between flows: stopping
there loses nothing. A plan (``dry_run``)
is not a run: it writes nothing to the state but scratch staging rows under an ephemeral id,
and it never shows as the last run. Gates stop an integration before it writes: a system that
is not the instance the state was built with, and (opt-in) a first run waiting for its plan to
be approved. A flow whose mapped fields changed since its links were last brought up to date
is read completely once, so every existing link gets the new fields (a back-fill).
"""
from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.base import (AuthError, Connector, ConnectorError, system_acknowledge,
                             system_identity)
from daemon.engine.flow import Flow, compile_flow, holds, value_hash
from daemon.engine.reference import ReferenceData
from daemon.engine.rules import FlowRules, Side
from daemon.engine.step import StepAborted, StepOptions, StepResult, run_step
from daemon.store import gates as g
from daemon.store import run_status as run_rows

log = structlog.get_logger("accord.run")
PLAN_ROWS = 1000            # rows of a first run's plan kept with its gate


@dataclass
class Guard:
    side: Side
    option: str
    refuse_when: list
    message: str


@dataclass
class Integration:
    """An integration ready to run: its flows compiled, its two connectors."""
    name: str
    flows: list[Flow]
    sides: dict[Side, Connector]
    guards: list[Guard] = field(default_factory=list)
    confirm_first_run: bool = False

    def flow(self, name: str) -> Flow:
        for f in self.flows:
            if f.name == name:
                return f
        raise KeyError(f"integration {self.name} has no flow {name!r} "
                       f"(flows: {', '.join(f.name for f in self.flows)})")


def order_flows(rules: list[FlowRules]) -> list[Flow]:
    """Dependency order (``depends_on`` and reference fields), stable otherwise."""
    by_name = {r.name: r for r in rules}
    done: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in path:
            raise ValueError(f"flows depend on each other in a circle: {' -> '.join(path)}")
        r = by_name[name]
        for dep in list(r.depends_on) + list(r.waits_for) + [f.ref for f in r.fields
                                                              if f.ref]:
            if dep != name:
                visit(dep, path + (name,))
        done.append(name)
    for r in rules:
        visit(r.name, ())
    return [compile_flow(by_name[n]) for n in done]


@dataclass
class RunOptions:
    trigger: str = "schedule"
    flows: list[str] | None = None
    dry_run: bool = False
    full: bool = False
    enforce: dict[str, Side] = field(default_factory=dict)
    only: dict[str, dict[Side, list[str]]] | None = None    # flow -> side -> ids
    keep_actions: bool = False                              # tests: the actions carried out


@dataclass
class RunResult:
    run_id: int | None                # None: a plan, not a run
    status: str                       # ok | errors | failed | waiting | stopped | crashed
    message: str = ""
    steps: list[StepResult] = field(default_factory=list)
    more: bool = False

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "errors": 1}.get(self.status, 2)


class ConnectFailed(StepAborted):
    """DT-3: a system could not be reached or refused the credentials at the start of a run.
    Shown as a step of its own, ``connect``, failed with the reason, before the flows."""


CONNECT_STEP = "connect"


class Gated(Exception):
    """A gate stops the integration until someone approves it."""


class RunStopped(Exception):
    """``stop()`` said so: the run ends at this chunk boundary, ``stopped``."""


STOPPED = "stopped by the daemon's shutdown; the next run goes on from there"
CANCELLED = ("cancelled by the daemon's shutdown after its grace period; the chunk under way "
             "is done again by the next run")


def fields_fingerprint(flow: Flow) -> tuple[str, list]:
    fields = [f.model_dump(mode="json") for f in flow.rules.fields]
    return value_hash(["f"], {"f": fields})[:16], fields


async def run(db: AsyncEngine, integ: Integration, options: RunOptions | None = None,
              progress: Callable[[str, Counter], None] | None = None, *,
              stop: Callable[[], bool] | None = None) -> RunResult:
    opt = options or RunOptions()
    if opt.dry_run:
        run_id = -random.randrange(1, 2**31)     # staging scratch only: not a run
    else:
        async with db.begin() as conn:
            run_id = await run_rows.start_run(conn, integ.name, opt.trigger)
    rlog = log.bind(integration=integ.name, run=run_id if not opt.dry_run else None)
    started = time.monotonic()
    if not opt.dry_run:
        rlog.info("run.start", trigger=opt.trigger)
    result = RunResult(None if opt.dry_run else run_id, "ok")

    def tick(flow: str, counts: Counter) -> None:
        if progress is not None:
            progress(flow, counts)
        if stop is not None and stop():
            raise RunStopped()
    try:
        reference = await _check(db, integ, opt)
        if integ.confirm_first_run and not opt.dry_run and opt.only is None:
            await _first_run_gate(db, integ, opt)
        await _flows(db, integ, opt, run_id, reference, result, tick, rlog, stop)
    except ConnectFailed as exc:
        result.status, result.message = "failed", str(exc)
        result.steps.append(StepResult(CONNECT_STEP, "failed", message=str(exc)))
        if not opt.dry_run:
            async with db.begin() as conn:
                step_id = await run_rows.start_step(conn, run_id, CONNECT_STEP)
                await run_rows.finish_step(conn, step_id, "failed", {}, str(exc))
    except StepAborted as exc:
        result.status, result.message = "failed", str(exc)
    except Gated as exc:
        result.status, result.message = "waiting", str(exc)
    except RunStopped:
        result.status, result.message = "stopped", STOPPED
    except asyncio.CancelledError:
        result.status, result.message = "stopped", CANCELLED
        if not opt.dry_run:
            await _end(db, run_id, result, rlog, started)
        raise
    except Exception as exc:        # a bug, or the state database: logged once, here
        rlog.error("run.crashed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        result.status, result.message = "crashed", f"crashed: {type(exc).__name__}: {exc}"
    if opt.dry_run:
        return result
    if result.status in ("ok", "errors") and integ.confirm_first_run and opt.only is None:
        async with db.begin() as conn:
            await g.close_gate(conn, integ.name, "first_run")
    await _end(db, run_id, result, rlog, started)
    return result


async def _end(db, run_id: int, result: RunResult, rlog, started: float) -> None:
    """The final status in the run's row (best effort: the state database may be what
    failed; a row left ``running`` is closed as ``interrupted`` at the next start), then the
    ``run.end`` line."""
    try:
        await run_rows.end_run(db, run_id, result.status, result.message)
    except Exception as exc:  # noqa: BLE001
        rlog.warning("run.unrecorded", status=result.status,
                     error=f"{type(exc).__name__}: {exc}")
    total = Counter()
    for s in result.steps:
        total.update(s.counts)
    event = rlog.error if result.status in ("failed", "crashed") else (
        rlog.warning if result.status in ("stopped", "waiting") else rlog.info)
    event("run.end", status=result.status, message=result.message or None,
          seconds=round(time.monotonic() - started, 3), **dict(total))


async def _flows(db, integ: Integration, opt: RunOptions, run_id: int, reference,
                 result: RunResult, progress, rlog, stop: Callable[[], bool] | None) -> None:
    failed: set[str] = set()
    stopped: str | None = None
    planned: dict[Any, dict[str, str]] = {}
    batching: dict[str, int] = {}           # flows with records waiting for later batches
    for flow in integ.flows:
        if opt.flows is not None and flow.name not in opt.flows:
            continue
        if stop is not None and stop():
            raise RunStopped()
        waits = [w for w in flow.rules.waits_for if w in batching]
        if waits:
            step = await _held(db, flow, run_id, opt, rlog, waits[0], batching[waits[0]])
            result.steps.append(step)
            continue
        step = await _step(db, integ, flow, run_id, opt, reference, failed, progress, rlog,
                           stopped, planned)
        result.steps.append(step)
        result.more = result.more or step.more
        if step.more:
            batching[flow.name] = step.backlog
        for side, links in step.planned_links.items():
            planned[(flow.name, side)] = links
        if step.status == "failed":
            failed.add(flow.name)
            result.status = "failed"
            result.message = result.message or step.message
            stopped = stopped or f"skipped: the run stopped at {flow.name}"
        elif step.status in ("errors", "skipped") and result.status == "ok":
            result.status = "errors"
    if not opt.dry_run and opt.only is None and opt.flows is None:
        await _acknowledge(integ, result, rlog)


def feed_readers(integ: Integration) -> dict[tuple[Side, str], list[str]]:
    """(side, entity) of each feed the integration reads -> the flows that read it."""
    out: dict[tuple[Side, str], list[str]] = {}
    for flow in integ.flows:
        for side in ("left", "right"):
            entity = flow.rules.entity(side)
            info = integ.sides[side].capabilities.entities.get(entity)
            if info is not None and info.feed:
                out.setdefault((side, entity), []).append(flow.name)
    return out


async def _acknowledge(integ: Integration, result: RunResult, rlog) -> None:
    """A feed's records are acknowledged once every flow that reads the feed committed what
    it did with them, with no error, review or hold left on them or what they derive, and
    read the same version of them (a record published again meanwhile is delivered again).
    A crash before this point delivers them again: at least once, and a record delivered
    again equals its base, so it changes nothing."""
    steps = {s.flow: s for s in result.steps}
    for (side, entity), flows in feed_readers(integ).items():
        done = [steps.get(f) for f in flows]
        if any(s is None or s.status not in ("ok", "errors") for s in done):
            continue
        settled = [s.settled_feed[side] for s in done]      # type: ignore[union-attr]
        first, rest = settled[0], settled[1:]
        ready = [(rid, v) for rid, v in first.items()
                 if all(rid in other_ and other_[rid] == v for other_ in rest)]
        if not ready:
            continue
        try:
            acked, stale = await system_acknowledge(integ.sides[side], entity, ready)
        except ConnectorError as exc:
            rlog.warning("feed.unacknowledged", side=side, entity=entity,
                         records=len(ready), error=exc.message)
            continue
        rlog.info("feed.acknowledged", side=side, entity=entity, records=acked,
                  stale=stale or None)


async def _held(db, flow: Flow, run_id: int, opt: RunOptions, rlog, waiting_for: str,
                backlog: int) -> StepResult:
    """A flow that waits for another's batches (AJ-4): recorded as held, not run."""
    result = StepResult(flow.name, "held", message=(
        f"waiting until {waiting_for} has finished its batches ({backlog:,} records still "
        "waiting)"))
    if not opt.dry_run:
        async with db.begin() as conn:
            step_id = await run_rows.start_step(conn, run_id, flow.name)
            await run_rows.finish_step(conn, step_id, result.status, {}, result.message)
        rlog.info("step.held", flow=flow.name, waits_for=waiting_for, backlog=backlog)
    return result


async def _check(db: AsyncEngine, integ: Integration, opt: RunOptions
                 ) -> ReferenceData:
    """DT-3: both systems answer and accept the credentials; they are the instances the
    state was built with; guards hold. Reference lists are read later, when a record needs
    them (an idle run reads none)."""
    for side, conn in integ.sides.items():
        try:
            await conn.check()
        except AuthError as exc:
            raise ConnectFailed(f"stopped: {side} system {conn.name}: {exc.message}") from None
        except ConnectorError as exc:
            raise ConnectFailed(f"stopped: {side} system {conn.name} unreachable: "
                                f"{exc.message}") from None
    await _instances(db, integ, opt)
    # reference data is read once per run: two guards on one option ask the system once
    known: dict[tuple[Side, str], Any] = {}
    for guard in integ.guards:
        key = (guard.side, guard.option)
        if key not in known:
            known[key] = await integ.sides[guard.side].options(guard.option)
        if holds(guard.refuse_when, known[key]):
            raise StepAborted(f"stopped: {guard.message}")
    needed: dict[Side, set[str]] = {"left": set(), "right": set()}
    for flow in integ.flows:
        for side in ("left", "right"):
            needed[side] |= flow.options[side]
    return ReferenceData(integ.sides, needed, known)


async def _instances(db: AsyncEngine, integ: Integration, opt: RunOptions) -> None:
    """Each side's system must be the instance the state was built with; a different one
    stops the integration until approved (a restored backup, a test tenant, fresh sandboxes:
    the links would point at unrelated records)."""
    for side, conn in integ.sides.items():
        try:
            now = await system_identity(conn)
        except ConnectorError as exc:
            raise StepAborted(f"stopped: {side} system {conn.name}: cannot tell which "
                              f"instance it is: {exc.message}") from None
        if not now:
            continue
        async with db.begin() as c:
            was = await g.instance(c, integ.name, side)
            if was is None or was == now:
                if was is None and not opt.dry_run:
                    await g.set_instance(c, integ.name, side, now)
                if not opt.dry_run:
                    gate = await g.gate(c, integ.name, "instance", side)
                    if gate is not None:
                        await g.close_gate(c, integ.name, "instance", side)
                continue
            gate = await g.gate(c, integ.name, "instance", side)
            if gate is not None and gate["approved"] and gate["detail"].get("now") == now:
                if not opt.dry_run:
                    await g.set_instance(c, integ.name, side, now)
                    await g.close_gate(c, integ.name, "instance", side)
                    log.warning("instance.approved", integration=integ.name, side=side,
                                was=was, now=now)
                continue
            message = (f"stopped: the {side} system {conn.name} is not the instance this "
                       f"integration's state was built with (was {was}, now {now}); if it is "
                       f"the same system, run `accord approve {integ.name}`")
            if not opt.dry_run and (gate is None or gate["detail"].get("now") != now):
                await g.set_gate(c, integ.name, "instance", message,
                                 {"was": was, "now": now, "system": conn.name}, flow=side)
        raise Gated(message)


async def _first_run_gate(db: AsyncEngine, integ: Integration, opt: RunOptions) -> None:
    """Opt-in: a first run stores its plan and waits for approval before writing."""
    async with db.begin() as c:
        if await g.has_state(c, integ.name):
            return
        gate = await g.gate(c, integ.name, "first_run")
    if gate is not None and gate["approved"]:
        return
    plan = await run(db, integ, RunOptions(trigger="plan", flows=opt.flows, dry_run=True,
                                           full=opt.full))
    if plan.status == "failed":
        raise StepAborted(plan.message)
    rows = [{"flow": s.flow, **p} for s in plan.steps for p in s.planned]
    counts = {s.flow: dict(s.counts) for s in plan.steps}
    creates = sum(v for s in plan.steps for k, v in s.counts.items()
                  if k.startswith("created_"))
    message = (f"waiting: first run of {integ.name}: its plan is stored ({len(rows)} actions, "
               f"{creates} creates); see it with `accord plan {integ.name} --stored` or on the "
               f"status page, then `accord approve {integ.name} --first-run`")
    async with db.begin() as c:
        await g.set_gate(c, integ.name, "first_run", message,
                         {"counts": counts, "actions": len(rows), "rows": rows[:PLAN_ROWS]})
    raise Gated(message)


async def _step(db, integ: Integration, flow: Flow, run_id: int, opt: RunOptions,
                reference, failed: set[str], progress, rlog, stopped: str | None,
                planned: dict) -> StepResult:
    deps = [d for d in list(flow.rules.depends_on) + [f.ref for f in flow.fields if f.ref]
            if d in failed]
    slog = rlog.bind(flow=flow.name)
    started = time.monotonic()
    step_id = None
    if not opt.dry_run:
        async with db.begin() as conn:
            step_id = await run_rows.start_step(conn, run_id, flow.name)
    if deps:
        result = StepResult(flow.name, "skipped", message=f"skipped: {deps[0]} failed")
    elif stopped:
        result = StepResult(flow.name, "skipped", message=stopped)
    else:
        result = await _run_flow(db, integ, flow, run_id, opt, reference, progress, slog,
                                 planned)
    if opt.dry_run:
        return result
    async with db.begin() as conn:
        await run_rows.finish_step(conn, step_id, result.status, dict(result.counts), result.message)
    event = slog.error if result.status == "failed" else (
        slog.warning if result.status in ("errors", "skipped") or result.message else slog.info)
    event("step.end", status=result.status, message=result.message or None,
          seconds=round(time.monotonic() - started, 3), **dict(result.counts))
    return result


async def _run_flow(db, integ: Integration, flow: Flow, run_id: int, opt: RunOptions,
                    reference, progress, slog, planned: dict) -> StepResult:
    if not opt.dry_run:
        slog.info("step.start")
    only = None if opt.only is None else opt.only.get(flow.name, {})
    fingerprint, fields = fields_fingerprint(flow)
    backfill, kept = "", None
    if only is None:
        async with db.begin() as conn:
            kept = await g.flow_fields(conn, integ.name, flow.name)
        if kept is not None and kept["fingerprint"] != fingerprint:
            backfill = _changed_fields(kept["fields"], fields)
            slog.warning("flow.fields_changed", changed=backfill)
    step_opt = StepOptions(full=opt.full or bool(backfill), dry_run=opt.dry_run,
                           enforce=opt.enforce, only=only,
                           planned=planned if opt.dry_run else {})
    try:
        result = await run_step(db, integ.name, flow, integ.sides, run_id, step_opt, reference,
                                progress, keep_actions=opt.keep_actions)
    except StepAborted as exc:
        return StepResult(flow.name, "failed", message=f"stopped: {exc}")
    if backfill:
        note = f"fields changed ({backfill}): every link read again and brought up to date"
        result.message = f"{note}; {result.message}" if result.message else note
    if (not opt.dry_run and only is None and result.status in ("ok", "errors")
            and (kept is None or kept["fingerprint"] != fingerprint)):
        async with db.begin() as conn:     # written when it changed, not by every run
            await g.set_flow_fields(conn, integ.name, flow.name, fingerprint, fields)
    return result


def _changed_fields(before: list[dict], after: list[dict]) -> str:
    old = {f["name"]: f for f in before}
    new = {f["name"]: f for f in after}
    parts = [f"added {', '.join(sorted(set(new) - set(old)))}" if set(new) - set(old) else "",
             f"removed {', '.join(sorted(set(old) - set(new)))}" if set(old) - set(new) else "",
             "changed " + ", ".join(sorted(n for n in set(old) & set(new)
                                           if orjson.dumps(old[n], option=orjson.OPT_SORT_KEYS)
                                           != orjson.dumps(new[n],
                                                           option=orjson.OPT_SORT_KEYS)))]
    return "; ".join(p for p in parts if p and p != "changed ")
