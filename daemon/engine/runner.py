"""One run of one integration: check both systems, then each flow in dependency order.

Every run that got its row ends with a final status in that row and a ``run.end`` line:
``ok``, ``errors``, ``failed``, ``stopped`` (``stop()`` said so at a chunk boundary, or the
task was cancelled) or ``crashed`` (an unexpected exception, its traceback logged once as
``run.crashed``). ``stop`` is asked after every staged page and committed chunk (the points
where the step reports progress) and between flows: stopping there loses nothing.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
import structlog
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.base import AuthError, Connector, ConnectorError
from daemon.engine.flow import Flow, compile_flow, holds
from daemon.engine.rules import FlowRules, Side
from daemon.engine.step import FlowStep, StepAborted, StepOptions, StepResult
from daemon.store.db import now
from daemon.store.run_status import end_run
from daemon.store.tables import T

log = structlog.get_logger("accord.run")


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
        for dep in list(r.depends_on) + [f.ref for f in r.fields if f.ref]:
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


@dataclass
class RunResult:
    run_id: int
    status: str                     # ok | errors | failed | stopped | crashed
    message: str = ""
    steps: list[StepResult] = field(default_factory=list)
    more: bool = False

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "errors": 1}.get(self.status, 2)


class RunStopped(Exception):
    """``stop()`` said so: the run ends at this chunk boundary, ``stopped``."""


STOPPED = "stopped by the daemon's shutdown; the next run goes on from there"
CANCELLED = ("cancelled by the daemon's shutdown after its grace period; the chunk under way "
             "is done again by the next run")


async def run(db: AsyncEngine, integ: Integration, options: RunOptions | None = None,
              progress: Callable[[str, Counter], None] | None = None, *,
              stop: Callable[[], bool] | None = None) -> RunResult:
    opt = options or RunOptions()
    runs = T["runs"]
    async with db.begin() as conn:
        run_id = (await conn.execute(insert(runs).values(
            integration=integ.name, trigger=opt.trigger, status="running",
            started_at=now()))).inserted_primary_key[0]
    rlog = log.bind(integration=integ.name, run=run_id)
    started = time.monotonic()
    rlog.info("run.start", trigger=opt.trigger, dry_run=opt.dry_run)
    result = RunResult(run_id, "ok")

    def tick(flow: str, counts: Counter) -> None:
        if progress is not None:
            progress(flow, counts)
        if stop is not None and stop():
            raise RunStopped()
    try:
        await _flows(db, integ, opt, result, tick, rlog, stop)
    except RunStopped:
        result.status, result.message = "stopped", STOPPED
    except asyncio.CancelledError:
        result.status, result.message = "stopped", CANCELLED
        await _end(db, result, rlog, started)
        raise
    except Exception as exc:            # a bug, or the state database: logged once, here
        rlog.error("run.crashed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        result.status, result.message = "crashed", f"crashed: {type(exc).__name__}: {exc}"
    await _end(db, result, rlog, started)
    return result


async def _flows(db, integ: Integration, opt: RunOptions, result: RunResult, tick, rlog,
                 stop: Callable[[], bool] | None) -> None:
    try:
        reference = await _check(integ)
    except StepAborted as exc:
        result.status, result.message = "failed", str(exc)
        return
    failed: set[str] = set()
    stopped: str | None = None
    for flow in integ.flows:
        if opt.flows is not None and flow.name not in opt.flows:
            continue
        if stop is not None and stop():
            raise RunStopped()
        step = await _step(db, integ, flow, result.run_id, opt, reference, failed, tick, rlog,
                           stopped)
        result.steps.append(step)
        result.more = result.more or step.more
        if step.status == "failed":
            failed.add(flow.name)
            result.status = "failed"
            result.message = result.message or step.message
            stopped = stopped or f"skipped: the run stopped at {flow.name}"
        elif step.status == "errors" and result.status == "ok":
            result.status = "errors"
        elif step.status == "skipped" and result.status == "ok":
            result.status = "errors"


async def _end(db, result: RunResult, rlog, started: float) -> None:
    """The final status in the run's row (best effort: the state database may be what
    failed; a row left ``running`` is closed as ``interrupted`` at the next start), then the
    ``run.end`` line."""
    try:
        await end_run(db, result.run_id, result.status, result.message)
    except Exception as exc:
        rlog.warning("run.unrecorded", status=result.status,
                     error=f"{type(exc).__name__}: {exc}")
    total = Counter()
    for s in result.steps:
        total.update(s.counts)
    event = rlog.error if result.status in ("failed", "crashed") else (
        rlog.warning if result.status == "stopped" else rlog.info)
    event("run.end", status=result.status, message=result.message or None,
          seconds=round(time.monotonic() - started, 3), **dict(total))


async def _check(integ: Integration) -> dict[Side, dict[str, Any]]:
    """DT-3: both systems answer and accept the credentials; guards hold; reference lists."""
    reference: dict[Side, dict[str, Any]] = {"left": {}, "right": {}}
    for side, conn in integ.sides.items():
        try:
            await conn.check()
        except AuthError as exc:
            raise StepAborted(f"stopped: {side} system {conn.name}: {exc.message}") from None
        except ConnectorError as exc:
            raise StepAborted(f"stopped: {side} system {conn.name} unreachable: "
                              f"{exc.message}") from None
    for guard in integ.guards:
        facts = await integ.sides[guard.side].options(guard.option)
        if holds(guard.refuse_when, facts):
            raise StepAborted(f"stopped: {guard.message}")
    needed: dict[Side, set[str]] = {"left": set(), "right": set()}
    for flow in integ.flows:
        for side in ("left", "right"):
            needed[side] |= flow.options[side]
    for side, names in needed.items():
        for name in sorted(names):
            try:
                reference[side][name] = await integ.sides[side].options(name)
            except (ConnectorError, KeyError) as exc:
                raise StepAborted(f"stopped: {side} system cannot list {name}: {exc}") from None
    return reference


async def _step(db, integ: Integration, flow: Flow, run_id: int, opt: RunOptions,
                reference, failed: set[str], progress, rlog, stopped: str | None) -> StepResult:
    steps = T["steps"]
    async with db.begin() as conn:
        step_id = (await conn.execute(insert(steps).values(
            run_id=run_id, flow=flow.name, status="running", counts="{}",
            started_at=now()))
        ).inserted_primary_key[0]
    deps = [d for d in list(flow.rules.depends_on) + [f.ref for f in flow.fields if f.ref]
            if d in failed]
    slog = rlog.bind(flow=flow.name)
    started = time.monotonic()
    if deps:
        result = StepResult(flow.name, "skipped", message=f"skipped: {deps[0]} failed")
    elif stopped:
        result = StepResult(flow.name, "skipped", message=stopped)
    else:
        slog.info("step.start")
        only = None if opt.only is None else opt.only.get(flow.name, {})
        step = FlowStep(db, integ.name, flow, integ.sides, run_id,
                        StepOptions(full=opt.full, dry_run=opt.dry_run,
                                    enforce=opt.enforce, only=only), reference, progress)
        try:
            result = await step.run()
        except StepAborted as exc:
            result = step.result
            result.status, result.message = "failed", f"stopped: {exc}"
    async with db.begin() as conn:
        await conn.execute(update(steps).where(steps.c.id == step_id).values(
            status=result.status, counts=orjson.dumps(dict(result.counts)).decode(),
            message=result.message[:2000], finished_at=now()))
    event = slog.error if result.status == "failed" else (
        slog.warning if result.status in ("errors", "skipped") or result.message else slog.info)
    event("step.end", status=result.status, message=result.message or None,
          seconds=round(time.monotonic() - started, 3), **dict(result.counts))
    return result
