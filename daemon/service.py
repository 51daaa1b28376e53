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
- SIGTERM / SIGINT: graceful stop. No new runs (the scheduler is paused, not shut down: its
  shutdown would cancel the job under way at once); a run under way is asked to stop at its
  next chunk boundary (after a committed chunk: nothing is lost) and gets ``grace`` seconds
  for it, then is cancelled (its chunk is done again next time). Either way its row and its
  ``run.end`` line say ``stopped``. A second signal cuts the grace short.
- Every run ends with a final status (daemon/store/run_status.py). At start-up, the runs a
  dead process left ``running`` are closed as ``interrupted``: on SQLite (one daemon per file)
  or without a lease, all of them at once; on a shared PostgreSQL with leases, those of an
  integration when this daemon takes its lease, before its first run -- the lease is the proof
  that no other daemon runs it, so no holder column (and no migration) is needed.
- The state database is watched (daemon/statewatch.py, ``self.state``): a run that crashed on
  it marks it unavailable; runs are skipped (no line per tick) until it takes writes again.
- SIGHUP: reload the config file. The new file is validated and its triggers built before
  anything is touched; a bad file is refused (``config.reload_refused``, one line) and the old
  configuration stays in force; a change of ``[daemon] database`` or lease needs a restart.

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
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from daemon import logging as accord_logging
from daemon.app import App
from daemon.config import Config, ConfigError, IntegrationSpec, load
from daemon.durations import crontab, seconds
from daemon.engine.runner import RunOptions, RunResult, run
from daemon.lease import Lease, NoLease, make_lease
from daemon.status import LiveProgress
from daemon.statewatch import StateWatch
from daemon.store.run_status import close_interrupted
from daemon.store import operator

from daemon.jobs import extra_job_id, followup_job_id, sync_job_id  # noqa: F401 (re-exported)

log = structlog.get_logger("accord.service")


def schedule_trigger(spec: IntegrationSpec):
    """The APScheduler trigger of an integration's schedule."""
    sch = spec.schedule
    if sch.cron:
        return crontab(sch.cron)
    return IntervalTrigger(seconds=sch.interval(), jitter=int(seconds(sch.jitter)) or None)


def job_plan(cfg: Config, scheduled: set[str] = frozenset()) -> list[dict[str, Any]]:
    """The ``add_job`` arguments of a config's jobs, triggers built: whatever can fail here
    fails before a reload has touched the jobs in force. ``run_at_start`` holds for an
    integration that was not scheduled before (at start-up, or new in a reload)."""
    at_once = datetime.now(timezone.utc)
    plan: list[dict[str, Any]] = []
    for name, spec in cfg.integrations.items():
        if not spec.enabled:
            continue
        extra: dict[str, Any] = {}
        if spec.schedule.run_at_start and sync_job_id(name) not in scheduled:
            extra["next_run_time"] = at_once
        plan.append(dict(trigger=schedule_trigger(spec), args=[name, "schedule"],
                         id=sync_job_id(name), name=f"sync {name}", **extra))
        for job in spec.jobs:
            plan.append(dict(trigger=crontab(job.cron), args=[name, f"job:{job.name}"],
                             kwargs={"flows": [job.flow], "full": job.full,
                                     "enforce": dict(job.enforce)},
                             id=extra_job_id(name, job.name), name=f"{job.name} ({name})"))
    return plan


def _restart_needed(old: Config, new: Config) -> str | None:
    for key in ("database", "lease", "lease_holder"):
        if getattr(old.daemon, key) != getattr(new.daemon, key):
            return f"daemon.{key} changed: restart accord to use it (the old value stays)"
    return None


class Service:
    def __init__(self, config_path: str | Path, *,
                 scheduler_factory: Callable[[], AsyncIOScheduler] | None = None,
                 grace: float = 30.0, sandboxes: bool = True, activity: bool = True,
                 configure_logging: bool = True, log_format: str | None = None,
                 verbose: bool = False) -> None:
        self.config_path = str(config_path)
        self.scheduler_factory = scheduler_factory or AsyncIOScheduler
        self.grace = grace
        self.sandboxes, self.activity = sandboxes, activity
        self.configure_logging = configure_logging
        self.log_format, self.verbose = log_format, verbose    # `accord run --console -v`
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
        self._stop_runs = asyncio.Event()       # runs end at their next chunk boundary
        self._hurry = asyncio.Event()           # a second signal: no more grace
        self._claimed: set[str] = set()         # integrations whose old runs were closed
        self.state = StateWatch(lambda: self.app.db if self.app is not None else None)
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
        if isinstance(self.lease, NoLease):     # no other daemon on this state: close them all
            await self._close_interrupted(list(self.cfg.integrations))
        self.scheduler = self.scheduler_factory()
        self._install_jobs(job_plan(self.cfg))
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
            accord_logging.configure(self.log_format or cfg.daemon.log_format,
                                     cfg.daemon.log_level, verbose=self.verbose)

    def _install_jobs(self, plan: list[dict[str, Any]]) -> None:
        assert self.scheduler is not None
        for job in plan:
            self.locks.setdefault(job["args"][0], asyncio.Lock())
            self.scheduler.add_job(self._scheduled, max_instances=1, coalesce=True,
                                   replace_existing=True, misfire_grace_time=None, **job)

    async def _close_interrupted(self, names: list[str]) -> None:
        """Runs a dead process left ``running``: ``interrupted`` (see the module docstring)."""
        todo = [n for n in names if n not in self._claimed]
        if not todo or self.app is None or self.app.db is None:
            return
        try:
            closed = await close_interrupted(self.app.db, todo)
        except Exception as exc:        # the state watch will say more at the first run
            log.warning("run.interrupted_unrecorded", integrations=todo,
                        error=f"{type(exc).__name__}: {exc}")
            return
        self._claimed.update(todo)
        for r in closed:
            log.warning("run.interrupted", integration=r["integration"], run=r["id"],
                        started_at=r["started_at"],
                        reason="it was still running when its process ended")

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
        try:
            return await self.trigger(name, opts, scheduled=True)
        except asyncio.CancelledError:
            # cancelled by stop() after the grace: the run wrote ``stopped`` and its run.end;
            # the scheduler's executor would log the cancellation as a job error with its
            # traceback. This coroutine is the top of its task: nothing above it waits.
            if self._stopping:
                return None
            raise

    async def _paused(self, name: str) -> bool:
        """A state database that does not answer is not a pause: the run meets it itself."""
        try:
            async with self.app.db.connect() as conn:  # type: ignore[union-attr]
                return await operator.is_paused(conn, name)
        except Exception:
            return False

    @property
    def stopping(self) -> bool:
        """A stop is under way: no new runs."""
        return self._stopping

    def run_under_way(self, name: str) -> asyncio.Task | None:
        """The task of the integration's run under way, if any."""
        task = self._running.get(name)
        return task if task is not None and not task.done() else None

    async def trigger(self, name: str, options: RunOptions | None = None, *,
                      scheduled: bool = False) -> RunResult | None:
        """Run one integration now, unless a run of it is under way (then None, logged), or
        it is ``scheduled`` and an operator paused the integration (daemon/store/operator)."""
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
            if scheduled and await self._paused(name):
                log.info("run.skipped", integration=name, trigger=options.trigger,
                         reason="paused")
                return None
            # --- lease: one daemon per integration on a shared PostgreSQL (daemon/lease.py)
            if not await self.lease.acquire(name):
                log.info("run.skipped", integration=name, trigger=options.trigger,
                         reason="lease held by another daemon",
                         holder=await self.lease.holder_of(name))
                return None
            # --- end lease
            await self._close_interrupted([name])
            if not self.state.available and not await self.state.check():
                # the state database is still down: said once (state.unavailable)
                result = RunResult(0, "failed", f"state database unavailable: "
                                                 f"{self.state.error}")
            else:
                result = await self._run(app, name, options)
        self.last[name] = result
        self._note_health(name, result)
        if result.more and result.status in ("ok", "errors") and not options.dry_run:
            self._follow_up(name, options)
        return result

    async def _run(self, app: App, name: str, options: RunOptions) -> RunResult:
        self._running[name] = asyncio.current_task()  # type: ignore[assignment]
        self.live.begin(name, [f.name for f in app.integration(name).flows
                               if options.flows is None or f.name in options.flows])
        try:
            result = await run(app.db, app.integration(name), options,
                               progress=self.live.callback(name), stop=self._stop_runs.is_set)
        except asyncio.CancelledError:
            raise
        except Exception as exc:        # its row could not even be written
            result = RunResult(0, "crashed", f"crashed: {type(exc).__name__}: {exc}")
            if await self.state.after_crash():      # not the state database: a bug
                log.error("run.crashed", integration=name, trigger=options.trigger,
                          error=f"{type(exc).__name__}: {exc}", exc_info=True)
            return result
        finally:
            self._running.pop(name, None)
            self.live.end(name)
        if result.status == "crashed":
            await self.state.after_crash()
        return result

    def _note_health(self, name: str, result: RunResult) -> None:
        before = self.health.get(name, "ok")
        if result.status == "stopped":
            return
        if result.status in ("failed", "crashed") and before != "failing":
            self.health[name] = "failing"
            log.error("integration.failing", integration=name, run=result.run_id,
                      message=result.message)
        elif result.status not in ("failed", "crashed") and before == "failing":
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
        """SIGHUP: read the file again; keep the configuration in force when the new one is
        bad. Never raises: a reload runs as a task nobody awaits."""
        async with self._reloading:
            try:
                return await self._reload()
            except Exception as exc:
                log.error("config.reload_failed", config=self.config_path,
                          error=f"{type(exc).__name__}: {exc}", exc_info=True)
                return False

    async def _reload(self) -> bool:
        assert self.scheduler is not None and self.cfg is not None
        try:
            cfg = load(self.config_path)
            why = _restart_needed(self.cfg, cfg)
            if why:
                raise ConfigError(f"{self.config_path}: {why}")
            plan = job_plan(cfg, {j.id for j in self.jobs()})
        except ConfigError as exc:
            log.error("config.reload_refused", config=self.config_path, error=str(exc))
            return False
        if self._stopping:
            return False
        self.scheduler.pause()                  # no new runs start
        held = [self.locks[n] for n in sorted(self.locks)]
        for lock in held:                       # runs under way finish first
            await lock.acquire()
        try:
            old_cfg, old_plan = self.cfg, job_plan(self.cfg, {j.id for j in self.jobs()})
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
                log.error("config.reload_failed", config=self.config_path,
                          error=f"{type(exc).__name__}: {exc}")
                try:
                    self.app = await App(old_cfg, run_file=self.sandboxes).start(
                        sandboxes=self.sandboxes, activity=self.activity)
                except Exception as exc2:
                    log.error("service.restart_failed", error=f"{type(exc2).__name__}: {exc2}")
                    self._request_stop()
                    return False
                self._swap_jobs(old_plan)
                return False
            self.cfg = cfg
            self._configure_logging(cfg)
            self._swap_jobs(plan)
            if old_cfg.web.model_dump(exclude={"token"}) != cfg.web.model_dump(exclude={"token"}):
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

    def _swap_jobs(self, plan: list[dict[str, Any]]) -> None:
        """The jobs of the new plan in place of the old ones (a follow-up under way stays)."""
        assert self.scheduler is not None
        keep = {j["id"] for j in plan}
        for job in self.scheduler.get_jobs():
            if job.id not in keep and not job.id.startswith("more:"):
                job.remove()
        self._install_jobs(plan)

    # --- stop ----------------------------------------------------------------------------
    def _request_stop(self) -> None:
        if self._stop_requested.is_set():
            self._hurry.set()                   # a second SIGTERM/SIGINT: no more grace
        self._stop_requested.set()

    async def stop(self) -> None:
        """No new runs; a run under way stops at its next chunk boundary within ``grace``
        seconds, or is cancelled then; close all."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        tasks = {n: t for n, t in self._running.items() if not t.done()}
        log.info("service.stopping", running=sorted(tasks), grace=self.grace)
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.pause()              # not shutdown(): it cancels the job under way
        self._stop_runs.set()
        pending = await self._wait(set(tasks.values()), self.grace)
        if pending:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning("run.cancelled", integrations=sorted(n for n, t in tasks.items()
                                                             if t in pending),
                        reason=("a second signal" if self._hurry.is_set()
                                else f"still running after {self.grace:g} s grace"))
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for t in list(self._bg):
            t.cancel()
        await self._stop_web()
        await self.lease.close()                # after the runs: frees our leases at once
        if self.app is not None:
            await self.app.close()
        log.info("service.stopped")
        self._stopped.set()

    async def _wait(self, tasks: set[asyncio.Task], grace: float) -> set[asyncio.Task]:
        """Wait for the tasks up to ``grace`` seconds, or until a second signal; returns the
        ones still running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            while tasks and not self._hurry.is_set():
                left = deadline - loop.time()
                if left <= 0:
                    break
                done, _ = await asyncio.wait(tasks | {hurry}, timeout=left,
                                             return_when=asyncio.FIRST_COMPLETED)
                tasks = tasks - done
        finally:
            hurry.cancel()
        return tasks

    async def serve(self) -> int:
        """Run until SIGTERM or SIGINT; SIGHUP reloads. Returns the exit code (0)."""
        loop = asyncio.get_running_loop()
        # handlers first, so that a signal that comes while starting is not lost (or fatal);
        # a reload waits for the start to finish (it takes the same lock). They stay during
        # the stop: a second SIGTERM/SIGINT ends the grace instead of killing the process.
        loop.add_signal_handler(signal.SIGTERM, self._request_stop)
        loop.add_signal_handler(signal.SIGINT, self._request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        try:
            async with self._reloading:
                await self.start()
            await self._stop_requested.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 0

    def _on_hup(self) -> None:
        if self._stopping:
            return
        log.info("config.reload_requested", config=self.config_path)
        task = asyncio.get_running_loop().create_task(self.reload())
        self._bg.add(task)
        task.add_done_callback(_retrieved)
        task.add_done_callback(self._bg.discard)


def _retrieved(task: asyncio.Task) -> None:
    """A reload task's outcome is taken, so asyncio never says "Task exception was never
    retrieved" (reload() logs its own failures; a cancelled one at stop is fine)."""
    if not task.cancelled():
        task.exception()
