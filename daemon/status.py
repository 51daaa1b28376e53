"""What ``accord status`` and the web status page show, gathered in one place.

``gather(cfg, db)`` reads the state database: every integration's last run with its steps,
next run, jobs, open record errors, ambiguous matches awaiting review, held deletes and
exclusions. The daemon adds what only it knows: the scheduler's next run times and the live
counts of the steps under way (``LiveProgress``, fed by the runner's progress callback).
Nothing here holds or shows a secret.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.app import seconds
from daemon.config import Config
from daemon.store.db import loads
from daemon.store.tables import T


def iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat(timespec="seconds")
    return str(value)


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


async def _rows(conn, table: str, integration: str) -> list:
    t = T[table]
    order = [t.c[k] for k in ("flow", "side", "record_id") if k in t.c] or list(t.primary_key)
    return (await conn.execute(select(t).where(t.c.integration == integration)
                               .order_by(*order))).mappings().all()


async def gather(cfg: Config, db: AsyncEngine, *,
                 next_runs: Mapping[str, str | None] | None = None,
                 live: LiveProgress | None = None,
                 health: Mapping[str, str] | None = None) -> dict:
    """The status document (``accord status --json``, ``GET /api/status``)."""
    runs, steps = T["runs"], T["steps"]
    out: dict[str, Any] = {"integrations": {}}
    async with db.connect() as conn:
        for name, spec in cfg.integrations.items():
            last = (await conn.execute(select(runs).where(runs.c.integration == name)
                                       .order_by(runs.c.id.desc()).limit(1))
                    ).mappings().first()
            doc: dict[str, Any] = {"enabled": spec.enabled, "last_run": None}
            if live is not None:
                doc["running"] = live.running(name)
            if health is not None:
                doc["health"] = health.get(name, "ok")
            if last is not None:
                st = (await conn.execute(select(steps).where(steps.c.run_id == last["id"])
                                         .order_by(steps.c.id))).mappings().all()
                now_counts = (live.steps.get(name, {})
                              if live is not None and last["status"] == "running" else {})
                doc["last_run"] = {
                    "id": last["id"], "trigger": last["trigger"], "status": last["status"],
                    "started_at": iso(last["started_at"]),
                    "finished_at": iso(last["finished_at"]),
                    "message": last["message"],
                    "steps": [{"flow": s["flow"], "status": s["status"],
                               "counts": (now_counts.get(s["flow"], {})
                                          if s["status"] == "running"
                                          else loads(s["counts"]) or {}),
                               "message": s["message"]}
                              for s in st]}
                if live is not None and last["status"] == "running":
                    begun = {s["flow"] for s in st}
                    doc["last_run"]["steps"] += [
                        {"flow": f, "status": "waiting", "counts": {}, "message": ""}
                        for f in live.planned.get(name, []) if f not in begun]
            if next_runs is not None and name in next_runs:
                doc["next_run"] = next_runs[name] or ("disabled" if not spec.enabled
                                                      else "not scheduled")
            else:
                doc["next_run"] = next_run(spec, last["started_at"] if last else None)
            doc["jobs"] = [{"name": j.name, "flow": j.flow, "cron": j.cron}
                           for j in spec.jobs]
            doc["record_errors"] = [
                {"integration": r["integration"], "flow": r["flow"], "side": r["side"],
                 "record": r["record_id"], "message": r["message"], "count": r["count"],
                 "retry": r["retry"], "quarantined": r["quarantined"],
                 "updated_at": iso(r["updated_at"])}
                for r in await _rows(conn, "record_errors", name)]
            doc["gates"] = [
                {"kind": r["kind"], "flow": r["flow"], "message": r["message"],
                 "approved": r["approved"], "created_at": iso(r["created_at"]),
                 "counts": (loads(r["detail"]) or {}).get("counts")}
                for r in await _rows(conn, "gates", name)]
            doc["reviews"] = [
                {"flow": r["flow"], "side": r["side"], "record": r["record_id"],
                 "candidates": loads(r["candidates"]), "reason": r["reason"]}
                for r in await _rows(conn, "reviews", name)]
            doc["held_deletes"] = [
                {"id": r["id"], "flow": r["flow"], "target": r["target"],
                 "record": r["record_id"], "action": r["action"], "run": r["run_id"],
                 "approved": r["approved"]}
                for r in await _rows(conn, "held_deletes", name)]
            doc["exclusions"] = [
                {"flow": r["flow"], "side": r["side"], "record": r["record_id"],
                 "mode": r["mode"], "reason": r["reason"]}
                for r in await _rows(conn, "exclusions", name)]
            doc["log"] = await integration_log(conn, name)
            out["integrations"][name] = doc
    return out


LOG_RUNS = 20


async def integration_log(conn, name: str, runs_kept: int = LOG_RUNS) -> list[dict]:
    """AJ-5: the integration log, newest first: every run of the last ``runs_kept`` with its
    status and message, and each step's (batches, "Sync Completed", held flows, errors)."""
    runs, steps = T["runs"], T["steps"]
    rows = (await conn.execute(select(runs).where(runs.c.integration == name)
                               .order_by(runs.c.id.desc()).limit(runs_kept))).mappings().all()
    if not rows:
        return []
    by_run: dict[int, list] = {}
    for s in (await conn.execute(select(steps).where(steps.c.run_id.in_([r["id"] for r in rows]))
                                 .order_by(steps.c.id))).mappings():
        by_run.setdefault(s["run_id"], []).append(
            {"flow": s["flow"], "status": s["status"], "message": s["message"],
             "counts": {k: v for k, v in (loads(s["counts"]) or {}).items() if v}})
    return [{"run": r["id"], "trigger": r["trigger"], "status": r["status"],
             "started_at": iso(r["started_at"]), "finished_at": iso(r["finished_at"]),
             "message": r["message"], "steps": by_run.get(r["id"], [])} for r in rows]
