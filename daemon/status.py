"""What ``accord status`` and the web status page show, gathered in one place.

``gather(cfg, db)`` reads the state database (through daemon/store/reports.py): every
integration's systems and flows, its recent runs with their steps, why it fails, next run, jobs,
pause, open record errors, ambiguous matches awaiting review, held deletes and exclusions.
The daemon adds what only it knows: the scheduler's next run times and the live counts of the
steps under way (``LiveProgress``, fed by the runner's progress callback).
Nothing here holds or shows a secret.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from daemon import describe, preview
from daemon.app import seconds
from daemon.config import Config
from daemon.engine.rules import FlowRules
from daemon.store import gates as gates_store
from daemon.store import operator, reports


iso = reports.iso          # kept here: the command line and the page format times with it


def _short(value: Any, n: int = 60) -> str:
    text = str(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def next_run(spec, last_start: datetime | None) -> str:
    """The next run as the schedule says (the CLI, which has no scheduler to ask)."""
    sch = spec.schedule
    if not spec.enabled:
        return "disabled"
    if last_start is None:
        if sch.run_at_start:
            return "at start-up"
    if last_start is not None and last_start.tzinfo is None:
        last_start = last_start.replace(tzinfo=timezone.utc)
    if sch.cron:
        from apscheduler.triggers.cron import CronTrigger
        nxt = CronTrigger.from_crontab(sch.cron).get_next_fire_time(
            None, datetime.now(timezone.utc).astimezone())
        return iso(nxt) or "never"
    every = timedelta(seconds=seconds(sch.every or "15m"))
    if last_start is None:
        return f"{_short(sch.every)} after start-up"
    return iso(last_start + every)


class LiveProgress:
    """The counts of the steps under way, per integration: ``{name: {flow: counts}}``.

    ``callback(name)`` is what the runner calls as ``progress(flow, counts)``; the counter it
    passes is the step's own (mutated as it goes), so a copy is kept."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, dict[str, int]]] = {}
        self.planned: dict[str, list[str]] = {}     # the flows the run under way will step

    def begin(self, name: str, flows: list[str] | None = None) -> None:
        self.steps[name] = {}
        self.planned[name] = list(flows or [])

    def callback(self, name: str) -> Callable[[str, Counter], None]:
        def progress(flow: str, counts: Counter) -> None:
            self.steps.setdefault(name, {})[flow] = {k: v for k, v in counts.items() if v}
        return progress

    def end(self, name: str) -> None:
        self.steps.pop(name, None)
        self.planned.pop(name, None)

    def running(self, name: str) -> bool:
        return name in self.steps


FAILED = ("failed", "crashed")     # a run that did not get through (stopped is a shutdown)
RECENT_RUNS = 20


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    """How long it took (the ISO stamps are to the second; this is not)."""
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


def _step_doc(s: Mapping) -> dict:
    return {"flow": s["flow"], "status": s["status"], "counts": s["counts"],
            "message": s["message"], "started_at": iso(s["started_at"]),
            "finished_at": iso(s["finished_at"]),
            "seconds": _seconds(s["started_at"], s["finished_at"])}


def _run_doc(r: Mapping) -> dict:
    return {"id": r["id"], "trigger": r["trigger"], "status": r["status"],
            "started_at": iso(r["started_at"]), "finished_at": iso(r["finished_at"]),
            "seconds": _seconds(r["started_at"], r["finished_at"]),
            "message": r["message"], "steps": [_step_doc(s) for s in r["steps"]]}


def _failure(runs: list[dict]) -> dict | None:
    """The reason the integration is failing: its newest finished run failed. ``since``: when
    the first of the failed runs in a row (among the recent ones) started."""
    done = [r for r in runs if r["status"] != "running"]
    if not done or done[0]["status"] not in FAILED:
        return None
    streak = 0
    while streak < len(done) and done[streak]["status"] in FAILED:
        streak += 1
    last = done[0]
    message = last["message"] or next((s["message"] for s in last["steps"]
                                       if s["status"] == "failed" and s["message"]), "")
    return {"run": last["id"], "message": message or "no reason recorded",
            "at": last["finished_at"], "since": done[streak - 1]["started_at"],
            "runs": streak}


async def _labelled(conn, name: str, rules: Mapping[str, FlowRules], rows: list[dict],
                    side_of: Callable[[dict], str]) -> None:
    """Give each row (a record error, review, held delete, exclusion) the record's ``name``
    and ``key``, from what its link keeps of it (describe.record_label)."""
    wanted: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        wanted.setdefault((r["flow"], side_of(r)), set()).add(r["record"])
    bases: dict[tuple[str, str, str], dict] = {}
    for (flow, side), ids in wanted.items():
        if flow in rules:
            found = await reports.link_bases(conn, name, flow, side, sorted(ids))
            bases.update({(flow, side, rid): b for rid, b in found.items()})
    for r in rows:
        side = side_of(r)
        flow_rules = rules.get(r["flow"])
        label = (describe.record_label(flow_rules, side, bases.get((r["flow"], side, r["record"])))
                 if flow_rules is not None else {"name": None, "key": None})
        r.update(label)


def _gate_doc(g: Mapping, rules: Mapping[str, FlowRules]) -> dict:
    """A gate; a first run's with its stored plan per direction (BB-3: daemon/preview.py, as
    ``accord plan --stored`` shows it) and how many of its actions were stored (``rows``)."""
    doc = {"id": g["id"], "kind": g["kind"], "flow": g["flow"], "message": g["message"],
           "approved": g["approved"], "created_at": iso(g["created_at"]),
           "counts": g["detail"].get("counts"), "actions": g["detail"].get("actions")}
    if g["kind"] == "first_run":
        rows = g["detail"].get("rows") or []
        doc["rows"] = len(rows)
        doc["preview"] = preview.by_direction(
            rows, {name: dict(f.title) for name, f in rules.items()})
    return doc


async def gather(cfg: Config, db: AsyncEngine, *,
                 next_runs: Mapping[str, str | None] | None = None,
                 job_runs: Mapping[tuple[str, str], str | None] | None = None,
                 live: LiveProgress | None = None,
                 health: Mapping[str, str] | None = None,
                 recent: int = RECENT_RUNS) -> dict:
    """The status document (``accord status --json``, ``GET /api/status``).

    Per integration: its two systems by name and type, its flows in a sentence, whether it is
    paused, the ``recent`` newest runs with their steps (``last_run`` is the newest), why it is
    failing (``failure``), the next run and the jobs, and what waits for a person: record
    errors, reviews, held deletes and exclusions, each with the record's name and key where its
    link knows them."""
    out: dict[str, Any] = {"integrations": {}}
    async with db.connect() as conn:
        paused = await operator.paused(conn)
        for name, spec in cfg.integrations.items():
            systems = {side: {"name": getattr(spec, side),
                              "type": cfg.systems[getattr(spec, side)].type
                              if getattr(spec, side) in cfg.systems else None}
                       for side in ("left", "right")}
            names = {side: s["name"] for side, s in systems.items()}
            rules = {f.name: f for f in spec.flows}
            pause = paused.get(name)
            doc: dict[str, Any] = {
                "enabled": spec.enabled, "systems": systems,
                "flows": [{"name": f.name, "description": describe.describe_flow(f, names)}
                          for f in spec.flows],
                "paused": None if pause is None else {
                    "reason": pause["reason"], "at": iso(pause["paused_at"])},
                "last_run": None}
            if live is not None:
                doc["running"] = live.running(name)
            if health is not None:
                doc["health"] = health.get(name, "ok")
            runs = [_run_doc(r) for r in await reports.recent_runs(conn, name, recent)]
            if runs and runs[0]["status"] == "running" and live is not None:
                last = runs[0]
                now_counts = live.steps.get(name, {})
                for s in last["steps"]:
                    if s["status"] == "running":
                        s["counts"] = now_counts.get(s["flow"], {})
                begun = {s["flow"] for s in last["steps"]}
                last["steps"] += [
                    {"flow": f, "status": "waiting", "counts": {}, "message": "",
                     "started_at": None, "finished_at": None}
                    for f in live.planned.get(name, []) if f not in begun]
            doc["runs"] = runs
            doc["last_run"] = runs[0] if runs else None
            doc["failure"] = _failure(runs)
            if next_runs is not None and name in next_runs:
                doc["next_run"] = next_runs[name] or ("disabled" if not spec.enabled
                                                      else "not scheduled")
            else:
                doc["next_run"] = next_run(spec, _when(runs[0]["started_at"]) if runs else None)
            doc["jobs"] = [{"name": j.name, "flow": j.flow, "cron": j.cron, "full": j.full,
                            "next_run": (job_runs or {}).get((name, j.name))}
                           for j in spec.jobs]
            doc["record_errors"] = [
                {"integration": r["integration"], "flow": r["flow"], "side": r["side"],
                 "record": r["record_id"], "message": r["message"], "count": r["count"],
                 "retry": r["retry"], "run": r["run_id"], "updated_at": iso(r["updated_at"]),
                 **({"quarantined": r["quarantined"]} if "quarantined" in r else {})}
                for r in await reports.record_errors(conn, name)]
            await _labelled(conn, name, rules, doc["record_errors"], lambda r: r["side"])
            doc["gates"] = [_gate_doc(g, rules)
                           for g in await gates_store.open_gates(conn, name)]
            doc["reviews"] = [
                {"flow": r["flow"], "side": r["side"], "record": r["record_id"],
                 "candidates": r["candidates"], "reason": r["reason"],
                 "updated_at": iso(r["updated_at"])}
                for r in await reports.reviews_of(conn, name)]
            doc["held_deletes"] = [
                {"id": r["id"], "flow": r["flow"], "target": r["target"],
                 "record": r["record_id"], "action": r["action"], "run": r["run_id"],
                 "approved": r["approved"], "created_at": iso(r["created_at"])}
                for r in await reports.held_deletes(conn, name)]
            await _labelled(conn, name, rules, doc["held_deletes"], lambda r: r["target"])
            doc["exclusions"] = [
                {"flow": r["flow"], "side": r["side"], "record": r["record_id"],
                 "mode": r["mode"], "reason": r["reason"], "created_at": iso(r["created_at"])}
                for r in await reports.exclusions_of(conn, name)]
            await _labelled(conn, name, rules, doc["exclusions"], lambda r: r["side"])
            doc["log"] = await reports.integration_log(conn, name)
            out["integrations"][name] = doc
    return out


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
