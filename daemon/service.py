"""The long-running daemon: a scheduler over the integrations, signals, graceful stop, reload.

- One APScheduler job per integration (its ``schedule``: ``every`` with ``jitter``, or
  ``cron``), plus one per extra job of the config (e.g. UL-11's nightly account-manager fix).
  ``max_instances=1, coalesce=True``: a missed tick is run once, never twice.
- Never two runs of one integration at once: one ``asyncio.Lock`` per integration, shared by
  scheduled runs, extra jobs and manual triggers. A run that finds it taken is skipped (logged).
- A run cut short by a ``batch_size`` (``result.more``) gets a follow-up run at once.
- A failed run is not retried before its next scheduled time; the change from working to
  failing is logged once (``integration.failing``), and the way back once
  (``integration.recovered``).
- The web side (daemon/web.py: status page, API, metrics, health) is started with the service,
  restarted by a reload that changes ``[web]`` host or port, stopped last. The counts of the
  steps under way are kept in ``self.live`` (the runner's progress callback) for it.
- SIGTERM / SIGINT: graceful stop (no new runs; a run under way gets ``grace`` seconds, then is
  cancelled -- the engine commits per chunk, an interrupted chunk is redone next time).
  SIGHUP: reload the config file; a bad file is refused (``config.reload_refused``) and the old
  configuration stays in force.

Tests drive it without sleeping: ``Service(path, scheduler_factory=...)``, ``start(paused=True)``,
``jobs()`` to look at the triggers and next run times, ``await run_job(job_id)`` to fire one.
"""
from __future__ import annotations

import asyncio
import signal
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import update

from daemon import logging as accord_logging
from daemon.app import App, seconds
from daemon.config import Config, ConfigError, IntegrationSpec, load
from daemon.engine.runner import RunOptions, RunResult, run
from daemon.lease import Lease, NoLease, make_lease
from daemon.status import LiveProgress
from daemon.store.db import now
from daemon.store.tables import T

log = structlog.get_logger("accord.service")


def sync_job_id(integration: str) -> str:
    return f"sync:{integration}"


def extra_job_id(integration: str, job: str) -> str:
    return f"job:{integration}:{job}"


def followup_job_id(integration: str) -> str:
    return f"more:{integration}"


def schedule_trigger(spec: IntegrationSpec):
    """The APScheduler trigger of an integration's schedule."""
    sch = spec.schedule
    if sch.cron:
        return CronTrigger.from_crontab(sch.cron)
    every = seconds(sch.every or "15m")
    return IntervalTrigger(seconds=every, jitter=int(seconds(sch.jitter)) or None)


class Service:
    def __init__(self, config_path: str | Path, *,
                 scheduler_factory: Callable[[], AsyncIOScheduler] | None = None,
                 grace: float = 30.0, sandboxes: bool = True, activity: bool = True,
                 configure_logging: bool = True) -> None:
        self.config_path = str(config_path)
        self.scheduler_factory = scheduler_factory or AsyncIOScheduler
        self.grace = grace
        self.sandboxes, self.activity = sandboxes, activity
        self.configure_logging = configure_logging
        self.cfg: Config | None = None
        self.app: App | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.locks: dict[str, asyncio.Lock] = {}
        self.health: dict[str, str] = {}         # integration -> ok | failing
        self.last: dict[str, RunResult] = {}
        self._running: dict[str, asyncio.Task] = {}
        self._stopping = False
        self._stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._reloading = asyncio.Lock()
        self._bg: set[asyncio.Task] = set()
        self.live = LiveProgress()              # counts of the steps under way (web page)
        self.web = None                         # daemon.web.WebServer while serving
        self.lease: Lease = NoLease()           # daemon/lease.py; set by start()

    # --- life cycle ----------------------------------------------------------------------
    async def start(self, *, paused: bool = False, cfg: Config | None = None) -> "Service":
        """Load the config (ConfigError propagates), open the App, schedule the jobs."""
        self.cfg = cfg or load(self.config_path)
        self._configure_logging(self.cfg)
        self.app = await App(self.cfg, run_file=self.sandboxes).start(
            sandboxes=self.sandboxes, activity=self.activity)
        d = self.cfg.daemon                     # lease: kept until stop (a reload keeps it)
        self.lease = make_lease(d.database, d.lease, d.lease_holder)
        self.scheduler = self.scheduler_factory()
        self._add_jobs()
        self.scheduler.start(paused=paused)
        await self._start_web()
        log.info("service.started", config=self.config_path,
                 integrations=sorted(self.app.integrations),
                 jobs=[j.id for j in self.scheduler.get_jobs()])
        return self

    async def _start_web(self) -> None:
        """The status page and API. A port in use is logged, not fatal: syncing goes on."""
        assert self.cfg is not None
        spec = self.cfg.web
        if not spec.enabled:
            return
        from daemon.web import WebServer
        try:
            self.web = await WebServer(self).start(spec.host, spec.port)
        except OSError as exc:
            self.web = None
            log.error("web.unavailable", host=spec.host, port=spec.port,
                      error=exc.strerror or str(exc))

    async def _stop_web(self) -> None:
        if self.web is not None:
            web, self.web = self.web, None
            await web.stop()

    def _configure_logging(self, cfg: Config) -> None:
        if self.configure_logging:
            accord_logging.configure(cfg.daemon.log_format, cfg.daemon.log_level)

    def _add_jobs(self) -> None:
        assert self.cfg is not None and self.app is not None and self.scheduler is not None
        at_once = datetime.now(timezone.utc)
        for name, spec in self.cfg.integrations.items():
            if name not in self.app.integrations:
                continue                        # enabled = false
            self.locks.setdefault(name, asyncio.Lock())
            extra: dict[str, Any] = {}
            if spec.schedule.run_at_start:
                extra["next_run_time"] = at_once
            self.scheduler.add_job(
                self._scheduled, schedule_trigger(spec), args=[name, "schedule"],
                id=sync_job_id(name), name=f"sync {name}", max_instances=1, coalesce=True,
                replace_existing=True, misfire_grace_time=None, **extra)
            for job in spec.jobs:
                self.scheduler.add_job(
                    self._scheduled, CronTrigger.from_crontab(job.cron),
                    args=[name, f"job:{job.name}"],
                    kwargs={"flows": [job.flow], "full": job.full, "enforce": dict(job.enforce)},
                    id=extra_job_id(name, job.name), name=f"{job.name} ({name})",
                    max_instances=1, coalesce=True, replace_existing=True,
                    misfire_grace_time=None)

    def jobs(self) -> list:
        """The scheduled jobs (APScheduler ``Job``s: ``id``, ``trigger``, ``next_run_time``)."""
        return [] if self.scheduler is None else list(self.scheduler.get_jobs())

    def job(self, job_id: str):
        job = None if self.scheduler is None else self.scheduler.get_job(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r} (jobs: {', '.join(j.id for j in self.jobs())})")
        return job

    async def run_job(self, job_id: str) -> RunResult | None:
        """Fire one job now, as the scheduler would (tests, and `accord` triggers)."""
        job = self.job(job_id)
        return await job.func(*job.args, **job.kwargs)

    # --- runs ----------------------------------------------------------------------------
    async def _scheduled(self, name: str, trigger: str, *, flows: list[str] | None = None,
                         full: bool = False, enforce: dict | None = None) -> RunResult | None:
        opts = RunOptions(trigger=trigger, flows=flows, full=full, enforce=enforce or {})
        return await self.trigger(name, opts)

    async def trigger(self, name: str, options: RunOptions | None = None) -> RunResult | None:
        """Run one integration now, unless a run of it is under way (then None, logged)."""
        options = options or RunOptions(trigger="manual")
        if self._stopping:
            log.info("run.skipped", integration=name, trigger=options.trigger,
                     reason="the service is stopping")
            return None
        if self.app is None or name not in self.app.integrations:
            raise KeyError(f"no integration named {name!r}")
        lock = self.locks.setdefault(name, asyncio.Lock())
        if lock.locked():
            log.info("run.skipped", integration=name, trigger=options.trigger,
                     reason="a run of this integration is under way")
            return None
        async with lock:
            app = self.app                      # a reload waits for the lock: stable here
            if app is None or name not in app.integrations:
                log.info("run.skipped", integration=name, trigger=options.trigger,
                         reason="no longer configured")
                return None
            # --- lease: one daemon per integration on a shared PostgreSQL (daemon/lease.py)
            if not await self.lease.acquire(name):
                log.info("run.skipped", integration=name, trigger=options.trigger,
                         reason="lease held by another daemon",
                         holder=await self.lease.holder_of(name))
                return None
            # --- end lease
            self._running[name] = asyncio.current_task()  # type: ignore[assignment]
            self.live.begin(name, [f.name for f in app.integration(name).flows
                                   if options.flows is None or f.name in options.flows])
            try:
                result = await run(app.db, app.integration(name), options,
                                   progress=self.live.callback(name))
            except asyncio.CancelledError:
                raise
            except Exception as exc:            # a bug or the state database: not a retry loop
                log.exception("run.crashed", integration=name, trigger=options.trigger,
                              error=str(exc))
                result = RunResult(0, "failed", f"crashed: {exc}")
            finally:
                self._running.pop(name, None)
                self.live.end(name)
        self.last[name] = result
        self._note_health(name, result)
        if result.more and result.status != "failed" and not options.dry_run:
            self._follow_up(name, options)
        return result

    def _note_health(self, name: str, result: RunResult) -> None:
        before = self.health.get(name, "ok")
        if result.status == "failed" and before != "failing":
            self.health[name] = "failing"
            log.error("integration.failing", integration=name, run=result.run_id,
                      message=result.message)
        elif result.status != "failed" and before == "failing":
            self.health[name] = "ok"
            log.info("integration.recovered", integration=name, run=result.run_id)

    def _follow_up(self, name: str, options: RunOptions) -> None:
        """batch_size cut the run short: the rest goes at once (same flows, same kind)."""
        if self.scheduler is None or self._stopping:
            return
        log.info("run.followup", integration=name, trigger=options.trigger)
        self.scheduler.add_job(
            self._scheduled, DateTrigger(run_date=datetime.now(timezone.utc)),
            args=[name, options.trigger],
            kwargs={"flows": options.flows, "full": options.full,
                    "enforce": dict(options.enforce)},
            id=followup_job_id(name), replace_existing=True, max_instances=1, coalesce=True,
            misfire_grace_time=None)

    # --- reload --------------------------------------------------------------------------
    async def reload(self) -> bool:
        """SIGHUP: read the file again; keep the old configuration when it is bad."""
        async with self._reloading:
            try:
                cfg = load(self.config_path)
            except ConfigError as exc:
                log.error("config.reload_refused", config=self.config_path, error=str(exc))
                return False
            if self._stopping:
                return False
            assert self.scheduler is not None
            self.scheduler.pause()              # no new runs start
            held = [self.locks[n] for n in sorted(self.locks)]
            for lock in held:                   # runs under way finish first
                await lock.acquire()
            try:
                self.scheduler.remove_all_jobs()
                old_cfg = self.cfg
                # the demo's sandboxes the new config keeps as they are go on serving
                kept = self.app.detach_sandboxes(cfg) if self.app is not None else {}
                if self.app is not None:
                    await self.app.close()
                    self.app = None
                try:
                    self.app = await App(cfg, run_file=self.sandboxes).start(
                        sandboxes=self.sandboxes, activity=self.activity, adopt=kept)
                except Exception as exc:
                    # e.g. a sandbox port in use: go back to the configuration in force
                    log.error("config.reload_failed", config=self.config_path, error=str(exc))
                    try:
                        self.app = await App(old_cfg, run_file=self.sandboxes).start(
                            sandboxes=self.sandboxes, activity=self.activity)
                    except Exception as exc2:
                        log.error("service.restart_failed", error=str(exc2))
                        self._request_stop()
                        return False
                    self._add_jobs()
                    return False
                self.cfg = cfg
                self._configure_logging(cfg)
                self._add_jobs()
                if old_cfg is None or old_cfg.web.model_dump(exclude={"token"}) \
                        != cfg.web.model_dump(exclude={"token"}):
                    await self._stop_web()
                    await self._start_web()
            finally:
                for lock in held:
                    lock.release()
                if not self._stopping:
                    self.scheduler.resume()
            log.info("config.reloaded", config=self.config_path,
                     integrations=sorted(self.app.integrations),
                     jobs=[j.id for j in self.scheduler.get_jobs()])
            return True

    # --- stop ----------------------------------------------------------------------------
    def _request_stop(self) -> None:
        self._stop_requested.set()

    async def stop(self) -> None:
        """No new runs; runs under way get ``grace`` seconds, then are cancelled; close all."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        log.info("service.stopping", running=sorted(self._running), grace=self.grace)
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        tasks = {n: t for n, t in self._running.items() if not t.done()}
        cancelled: list[str] = []
        if tasks:
            _, pending = await asyncio.wait(tasks.values(), timeout=self.grace)
            for n, t in tasks.items():
                if t in pending:
                    t.cancel()
                    cancelled.append(n)
            await asyncio.gather(*pending, return_exceptions=True)
        if cancelled and self.app is not None and self.app.db is not None:
            runs = T["runs"]
            try:
                async with self.app.db.begin() as conn:
                    await conn.execute(update(runs).where(
                        runs.c.integration.in_(cancelled), runs.c.status == "running")
                        .values(status="stopped", message="interrupted by shutdown",
                                finished_at=now()))
            except Exception as exc:            # the state stays "running": say so, go on
                log.warning("run.stop_unrecorded", error=str(exc))
            log.warning("run.cancelled", integrations=cancelled,
                        reason=f"still running after {self.grace:g} s grace")
        for t in list(self._bg):
            t.cancel()
        await self._stop_web()
        await self.lease.close()                # after the runs: frees our leases at once
        if self.app is not None:
            await self.app.close()
        log.info("service.stopped")
        self._stopped.set()

    async def serve(self) -> int:
        """Run until SIGTERM or SIGINT; SIGHUP reloads. Returns the exit code (0)."""
        loop = asyncio.get_running_loop()
        # handlers first, so that a signal that comes while starting is not lost (or fatal);
        # a reload waits for the start to finish (it takes the same lock)
        loop.add_signal_handler(signal.SIGTERM, self._request_stop)
        loop.add_signal_handler(signal.SIGINT, self._request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        try:
            async with self._reloading:
                await self.start()
            await self._stop_requested.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()
        return 0

    def _on_hup(self) -> None:
        log.info("config.reload_requested", config=self.config_path)
        task = asyncio.get_running_loop().create_task(self.reload())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
