"""The daemon's web side: a status page, a JSON API, Prometheus metrics, health checks.

Served by aiohttp in the daemon's own event loop, started and stopped by ``Service``, bound to
``[web] host`` (127.0.0.1 unless configured) and ``port`` (8080; 0 picks a free one).

- ``GET /``: the status page (server-rendered HTML, small inline CSS/JS). It fetches
  ``GET /partial`` (the same HTML, body only) every 2 s while a run is under way and every
  30 s otherwise (DT-10); the steps of a run under way show their live counts.
- ``GET /api/status``: the same as JSON (the document of ``accord status --json``, plus what
  only the daemon knows: running, health, the scheduler's next run).
- ``POST /api/integrations/{name}/run``: start a run now (202 with its id; 409 when a run of it
  is under way).
- ``POST /api/integrations/{name}/approve``: approve the deletes the circuit-breaker held
  (optional JSON ``{"flow": ...}``); the next run applies them.
- ``POST /api/webhooks/{name}``: ``{"flow", "side": "left|right", "ids": [...]}`` starts a
  targeted run of those records (UL-4); while a run is under way they wait for it, merged.
- ``GET /metrics`` (Prometheus text), ``GET /healthz``, ``GET /readyz``.

Every POST needs ``Authorization: Bearer <[web] token>`` (401 otherwise, compared in constant
time); without a configured token the POST endpoints answer 403. GETs need no token and never
show a secret: the documents are built from the state database and the runs, never from the
configuration's credentials.
"""
from __future__ import annotations

import asyncio
import hmac
import html
from collections import defaultdict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiohttp import web
from sqlalchemy import func, select, update

from daemon import status as status_lib
from daemon.engine.runner import RunOptions
from daemon.store.db import loads
from daemon.store.tables import T

if TYPE_CHECKING:
    from daemon.service import Service

log = structlog.get_logger("accord.web")

MAX_IDS = 1000                  # records one webhook call may name


def _json(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data, default=str), status=status,
                        content_type="application/json", headers=headers)


def _error(status: int, message: str, **extra) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="accord"'} if status == 401 else None
    return _json({"error": message, **extra}, status, headers)


class WebServer:
    def __init__(self, service: "Service") -> None:
        self.service = service
        self.started = False
        self.port: int | None = None
        self.host: str | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()
        self._pending: dict[str, dict[str, dict[str, set[str]]]] = {}
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._drainers: dict[str, asyncio.Task] = {}
        self._agg: tuple[int, dict] = (0, {})   # metrics: (step id watermark, sums)

    # --- life cycle ------------------------------------------------------------------------
    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.add_routes([
            web.get("/", self.page), web.get("/partial", self.partial),
            web.get("/api/status", self.api_status), web.get("/metrics", self.metrics),
            web.get("/healthz", self.healthz), web.get("/readyz", self.readyz),
            web.post("/api/integrations/{name}/run", self.run_now),
            web.post("/api/integrations/{name}/approve", self.approve),
            web.post("/api/webhooks/{name}", self.webhook),
        ])
        return app

    async def start(self, host: str, port: int) -> "WebServer":
        runner = web.AppRunner(self.application(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = host
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.started = True
        log.info("web.started", url=self.url)
        return self

    @property
    def url(self) -> str:
        host = self.host if self.host not in (None, "0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        for t in list(self._tasks) + list(self._drainers.values()):
            t.cancel()
        await asyncio.gather(*self._tasks, *self._drainers.values(), return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.started = False

    # --- auth ------------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            spec = self.service.cfg.web if self.service.cfg is not None else None
            token = spec.token.get_secret_value() if spec and spec.token else ""
            if not token:
                return _error(403, "POST endpoints are off: set [web] token (or token_file) "
                                   "in the configuration to use them")
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    value.strip().encode(), token.encode()):
                return _error(401, "missing or wrong token (Authorization: Bearer <token>)")
        return await handler(request)

    # --- helpers ---------------------------------------------------------------------------
    def _integration(self, request: web.Request) -> str:
        name = request.match_info["name"]
        app = self.service.app
        if app is None or name not in app.integrations:
            known = sorted(app.integrations) if app is not None else []
            raise web.HTTPNotFound(
                text=orjson.dumps({"error": f"no enabled integration named {name!r}",
                                   "integrations": known}).decode(),
                content_type="application/json")
        return name

    def _next_runs(self) -> dict[str, str | None]:
        from daemon.service import sync_job_id
        out: dict[str, str | None] = {}
        for name in (self.service.cfg.integrations if self.service.cfg else {}):
            job = (self.service.scheduler.get_job(sync_job_id(name))
                   if self.service.scheduler is not None else None)
            out[name] = status_lib.iso(job.next_run_time) if job is not None and \
                job.next_run_time is not None else None
        return out

    async def status_doc(self) -> dict:
        svc = self.service
        if svc.app is None or svc.app.db is None or svc.cfg is None:
            raise web.HTTPServiceUnavailable(
                text=orjson.dumps({"error": "starting or reloading; try again"}).decode(),
                content_type="application/json")
        doc = await status_lib.gather(svc.cfg, svc.app.db, next_runs=self._next_runs(),
                                      live=svc.live, health=svc.health)
        doc["generated_at"] = status_lib.iso(datetime.now(timezone.utc))
        doc["running"] = any(d.get("running") for d in doc["integrations"].values())
        return doc

    async def _last_run_id(self, name: str) -> int:
        runs = T["runs"]
        async with self.service.app.db.connect() as conn:  # type: ignore[union-attr]
            return (await conn.execute(select(func.max(runs.c.id)).where(
                runs.c.integration == name))).scalar() or 0

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start_run(self, name: str, options: RunOptions) -> tuple[asyncio.Task, int | None]:
        """Trigger a run in the background; wait only until it has a run id (or was skipped)."""
        before = await self._last_run_id(name)
        task = self._spawn(self.service.trigger(name, options))
        while True:
            if task.done():
                result = None if task.cancelled() or task.exception() else task.result()
                return task, (result.run_id if result is not None else None)
            if self.service.live.running(name):
                newest = await self._last_run_id(name)
                if newest > before:
                    return task, newest
            await asyncio.sleep(0.02)

    async def _wait_free(self, name: str) -> None:
        lock = self.service.locks.get(name)
        while lock is not None and lock.locked():
            task = self.service._running.get(name)
            if task is not None and not task.done():
                await asyncio.wait({task})
            else:
                await asyncio.sleep(0.05)

    # --- GET -------------------------------------------------------------------------------
    async def api_status(self, request: web.Request) -> web.Response:
        return _json(await self.status_doc())

    async def page(self, request: web.Request) -> web.Response:
        doc = await self.status_doc()
        return web.Response(text=PAGE.replace("%BODY%", render(doc)),
                             content_type="text/html", charset="utf-8",
                             headers={"Cache-Control": "no-store"})

    async def partial(self, request: web.Request) -> web.Response:
        return web.Response(text=render(await self.status_doc()), content_type="text/html",
                            charset="utf-8", headers={"Cache-Control": "no-store"})

    async def healthz(self, request: web.Request) -> web.Response:
        sched = self.service.scheduler
        if sched is not None and sched.running and not self.service._stopping:
            return _json({"status": "alive"})
        return _json({"status": "scheduler not running"}, 503)

    async def readyz(self, request: web.Request) -> web.Response:
        app = self.service.app
        if not self.started or app is None or app.db is None:
            return _json({"status": "not ready", "reason": "starting or reloading"}, 503)
        if not await self.service.state.check():    # daemon/statewatch.py
            return _json({"status": "not ready",
                          "reason": f"state database: {self.service.state.error}"}, 503)
        return _json({"status": "ready"})

    # --- POST ------------------------------------------------------------------------------
    async def run_now(self, request: web.Request) -> web.Response:
        name = self._integration(request)
        if self.service.locks.get(name) is not None and self.service.locks[name].locked():
            return _json({"status": "skipped", "message": "skipped: a run is under way"}, 409)
        _, run_id = await self._start_run(name, RunOptions(trigger="web"))
        if run_id is None:
            return self._not_started(name)
        return _json({"status": "started", "run": run_id}, 202)

    def _not_started(self, name: str) -> web.Response:
        if self.service._stopping:
            return _json({"status": "skipped", "message": "skipped: the daemon is stopping"},
                         503)
        lock = self.service.locks.get(name)
        if lock is not None and lock.locked():
            return _json({"status": "skipped", "message": "skipped: a run is under way"}, 409)
        return _json({"status": "skipped", "message": "skipped: see the daemon's log "
                      "(run.skipped), e.g. another daemon holds the integration's lease"}, 409)

    async def approve(self, request: web.Request) -> web.Response:
        name = self._integration(request)
        body = await self._body(request, required=False)
        flow = body.get("flow") if isinstance(body, dict) else None
        if flow is not None:
            self._check_flow(name, flow)
        held = T["held_deletes"]
        cond = [held.c.integration == name, held.c.approved.is_(False)]
        if flow:
            cond.append(held.c.flow == flow)
        async with self.service.app.db.begin() as conn:  # type: ignore[union-attr]
            n = (await conn.execute(update(held).where(*cond).values(approved=True))).rowcount
        log.info("web.approved", integration=name, flow=flow, held_deletes=n)
        return _json({"approved": n, "message": f"approved {n} held delete"
                      f"{'s' if n != 1 else ''}; the next run applies "
                      f"{'them' if n != 1 else 'it'}"})

    async def webhook(self, request: web.Request) -> web.Response:
        name = self._integration(request)
        body = await self._body(request, required=True)
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object {flow, side, ids}")
        flow, side, ids = body.get("flow"), body.get("side"), body.get("ids")
        if not isinstance(flow, str):
            raise _bad("flow: a flow name is required")
        self._check_flow(name, flow)
        if side not in ("left", "right"):
            raise _bad("side: left or right")
        if isinstance(ids, (str, int)):
            ids = [ids]
        if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS or not all(
                isinstance(i, (str, int)) and str(i) for i in ids):
            raise _bad(f"ids: a list of 1 to {MAX_IDS} record ids")
        lock = self.service.locks.get(name)
        busy = (lock is not None and lock.locked()) or name in self._drainers
        pending = self._pending.setdefault(name, {})
        pending.setdefault(flow, {}).setdefault(side, set()).update(str(i) for i in ids)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, []).append(waiter)
        if name not in self._drainers:
            task = asyncio.get_running_loop().create_task(self._drain(name))
            self._drainers[name] = task
        log.info("web.webhook", integration=name, flow=flow, side=side, records=len(ids))
        queued = _json({"status": "queued",
                        "message": "queued: a targeted run starts when the run under way ends"},
                       202)
        if busy:
            return queued
        try:
            run_id = await asyncio.wait_for(asyncio.shield(waiter), timeout=10.0)
        except asyncio.TimeoutError:
            return queued
        if run_id is None:
            return self._not_started(name)
        return _json({"status": "started", "run": run_id}, 202)

    async def _drain(self, name: str) -> None:
        """Targeted runs of the records webhooks named: one at a time, merged while waiting."""
        try:
            while self._pending.get(name):
                await self._wait_free(name)
                batch = self._pending.pop(name, {})
                waiters = self._waiters.pop(name, [])
                if not batch:
                    continue
                only = {flow: {side: sorted(ids) for side, ids in sides.items()}
                        for flow, sides in batch.items()}
                _, run_id = await self._start_run(name, RunOptions(
                    trigger="webhook", flows=list(only), only=only))  # type: ignore[arg-type]
                lock = self.service.locks.get(name)
                if run_id is None and lock is not None and lock.locked() \
                        and not self.service._stopping:
                    for flow, sides in batch.items():   # another run slipped in: wait for it
                        for side, ids in sides.items():
                            self._pending.setdefault(name, {}).setdefault(flow, {}) \
                                .setdefault(side, set()).update(ids)
                    self._waiters.setdefault(name, []).extend(waiters)
                    continue
                if run_id is None:
                    log.warning("web.webhook_dropped", integration=name,
                                records=sum(len(i) for s in only.values() for i in s.values()),
                                reason="the integration cannot run now")
                for w in waiters:
                    if not w.done():
                        w.set_result(run_id)
        finally:
            self._drainers.pop(name, None)

    async def _body(self, request: web.Request, *, required: bool) -> Any:
        raw = await request.read()
        if not raw.strip():
            if required:
                raise _bad("a JSON body is required")
            return {}
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _bad("the body is not valid JSON") from None

    def _check_flow(self, name: str, flow: Any) -> None:
        flows = [f.name for f in self.service.app.integration(name).flows]  # type: ignore
        if flow not in flows:
            raise _bad(f"flow: integration {name} has no flow {flow!r}", flows=flows)

    # --- metrics ---------------------------------------------------------------------------
    async def metrics(self, request: web.Request) -> web.Response:
        app = self.service.app
        if app is None or app.db is None:
            return web.Response(status=503, text="# starting or reloading\n")
        return web.Response(text=await self.metrics_text(),
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _step_sums(self, conn) -> dict[tuple[str, str, str], int]:
        """Sums of the finished steps' counts by (integration, flow, key). Steps up to the
        first one still running are summed once and kept; the rest is read each time."""
        runs, steps = T["runs"], T["steps"]
        mark, kept = self._agg
        rows = (await conn.execute(
            select(steps.c.id, steps.c.flow, steps.c.status, steps.c.counts,
                   runs.c.integration)
            .join(runs, runs.c.id == steps.c.run_id)
            .where(steps.c.id > mark).order_by(steps.c.id))).all()
        sums = defaultdict(int, kept)
        blocked = False
        new_mark, new_kept = mark, None
        for sid, flow, status, counts, integ in rows:
            if status == "running":
                if not blocked:
                    blocked, new_kept = True, dict(sums)
                continue
            for k, v in (loads(counts) or {}).items():
                if isinstance(v, (int, float)):
                    sums[(integ, flow, k)] += int(v)
            if not blocked:
                new_mark = sid
        self._agg = (new_mark, new_kept if blocked else dict(sums))
        return sums

    async def metrics_text(self) -> str:
        app, svc = self.service.app, self.service
        runs, errors, reviews, held, cursors = (T["runs"], T["record_errors"], T["reviews"],
                                                T["held_deletes"], T["cursors"])
        m = Metrics()
        async with app.db.connect() as conn:  # type: ignore[union-attr]
            m.family("accord_runs_total", "counter",
                     "Runs by integration and outcome (ok, errors, failed, stopped, running).")
            for integ, status, n in (await conn.execute(
                    select(runs.c.integration, runs.c.status, func.count())
                    .group_by(runs.c.integration, runs.c.status))).all():
                m.sample("accord_runs_total", n, integration=integ, outcome=status)

            sums = await self._step_sums(conn)
            m.family("accord_records_total", "counter",
                     "Records by outcome, from the counts of finished steps.")
            m.family("accord_records_read_total", "counter", "Records read, by side.")
            m.family("accord_conflicts_total", "counter",
                     "Fields changed on both sides within one window (resolved, logged).")
            for (integ, flow, key), n in sorted(sums.items()):
                if key.startswith("read_"):
                    m.sample("accord_records_read_total", n, integration=integ, flow=flow,
                             side=key[len("read_"):])
                elif key == "conflicts":
                    m.sample("accord_conflicts_total", n, integration=integ, flow=flow)
                else:
                    m.sample("accord_records_total", n, integration=integ, flow=flow,
                             outcome=key)

            for fam, table, help_ in (
                    ("accord_record_errors", errors, "Open record errors."),
                    ("accord_reviews", reviews, "Ambiguous matches awaiting review.")):
                m.family(fam, "gauge", help_)
                for integ, flow, side, n in (await conn.execute(
                        select(table.c.integration, table.c.flow, table.c.side, func.count())
                        .group_by(table.c.integration, table.c.flow, table.c.side))).all():
                    m.sample(fam, n, integration=integ, flow=flow, side=side)
            m.family("accord_held_deletes", "gauge",
                     "Deletes held by the circuit-breaker, not yet approved.")
            for integ, flow, n in (await conn.execute(
                    select(held.c.integration, held.c.flow, func.count())
                    .where(held.c.approved.is_(False))
                    .group_by(held.c.integration, held.c.flow))).all():
                m.sample("accord_held_deletes", n, integration=integ, flow=flow)

            m.family("accord_last_run_duration_seconds", "gauge",
                     "Duration of the last finished run.")
            m.family("accord_last_run_finished_timestamp_seconds", "gauge",
                     "When the last finished run ended (Unix time).")
            last_ids = select(func.max(runs.c.id).label("id")).where(
                runs.c.finished_at.is_not(None)).group_by(runs.c.integration).subquery()
            for integ, started, finished in (await conn.execute(
                    select(runs.c.integration, runs.c.started_at, runs.c.finished_at)
                    .where(runs.c.id.in_(select(last_ids.c.id))))).all():
                s, f = _utc(started), _utc(finished)
                m.sample("accord_last_run_duration_seconds",
                         round(max(0.0, (f - s).total_seconds()), 3), integration=integ)
                m.sample("accord_last_run_finished_timestamp_seconds",
                         round(f.timestamp(), 3), integration=integ)

            m.family("accord_cursor_lag_seconds", "gauge",
                     "Now minus the cursor's time, per flow and side (how far behind the "
                     "incremental reads are).")
            now = datetime.now(timezone.utc)
            for integ, flow, side, value in (await conn.execute(
                    select(cursors.c.integration, cursors.c.flow, cursors.c.side,
                           cursors.c.value))).all():
                at = (loads(value) or {}).get("at") if value else None
                try:
                    when = _utc(datetime.fromisoformat(at)) if at else None
                except (TypeError, ValueError):
                    when = None
                if when is not None:
                    m.sample("accord_cursor_lag_seconds",
                             round(max(0.0, (now - when).total_seconds()), 3),
                             integration=integ, flow=flow, side=side)

        m.family("accord_run_in_progress", "gauge", "1 while a run of the integration is under way.")
        m.family("accord_integration_failing", "gauge", "1 when the last run failed.")
        for name in sorted(app.integrations):  # type: ignore[union-attr]
            m.sample("accord_run_in_progress", int(svc.live.running(name)), integration=name)
            m.sample("accord_integration_failing", int(svc.health.get(name) == "failing"),
                     integration=name)
        m.family("accord_http_requests_total", "counter",
                 "HTTP requests sent to each system (since the connector started).")
        m.family("accord_http_throttled_total", "counter",
                 "HTTP 429 answers from each system (since the connector started).")
        for sysname, conn_ in sorted(app.connectors.items()):  # type: ignore[union-attr]
            http = getattr(conn_, "http", None)
            if http is not None and hasattr(http, "requests"):
                m.sample("accord_http_requests_total", http.requests, system=sysname)
                m.sample("accord_http_throttled_total", getattr(http, "throttled", 0),
                         system=sysname)
        return m.text()


def _bad(message: str, **extra) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=orjson.dumps({"error": message, **extra}).decode(),
                              content_type="application/json")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class Metrics:
    """The Prometheus text exposition format (0.0.4), written by hand."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str) -> None:
        self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, **labels: Any) -> None:
        lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --- the page ----------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _counts(counts: dict) -> str:
    items = [(k, v) for k, v in sorted(counts.items()) if v]
    if not items:
        return '<span class="muted">—</span>'
    return " ".join(f'<span class="c">{_e(k)} <b>{_e(v)}</b></span>' for k, v in items)


def _table(rows: list[dict], cols: list[str], cls: str) -> str:
    if not rows:
        return '<p class="muted">none</p>'
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join(
        f'<tr class="{cls}">' + "".join(f"<td>{_e(_cell(r.get(c)))}</td>" for c in cols)
        + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return orjson.dumps(value, default=str).decode()
    return value


def _log(entries: list[dict]) -> str:
    """AJ-5: the integration log, one line per run and per step that has something to say."""
    rows = ['<h3>Integration log</h3>', '<table class="log"><tr><th>run</th><th>started</th>'
            '<th>status</th><th>flow</th><th>message</th></tr>']
    for e in entries:
        rows.append(f'<tr class="log-run"><td>#{_e(e["run"])}</td><td>{_e(e["started_at"])}</td>'
                    f'<td><span class="b {_e(e["status"])}">{_e(e["status"])}</span></td>'
                    f'<td>({_e(e["trigger"])})</td><td>{_e(e["message"] or "")}</td></tr>')
        for s in e["steps"]:
            if s["message"] or s["status"] not in ("ok",):
                rows.append(f'<tr class="log-step"><td></td><td></td>'
                            f'<td><span class="b {_e(s["status"])}">{_e(s["status"])}</span>'
                            f'</td><td>{_e(s["flow"])}</td><td>{_e(s["message"] or "")}</td>'
                            '</tr>')
    rows.append("</table>")
    return "\n".join(rows) if entries else '<h3>Integration log</h3><p>no runs yet</p>'


def render(doc: dict) -> str:
    """The body of the status page (also ``GET /partial``)."""
    running = doc.get("running")
    parts = [f'<div id="status" data-running="{1 if running else 0}">',
             f'<p class="muted">updated {_e(doc.get("generated_at"))} · refreshes every '
             f'{"2 s (a run is under way)" if running else "30 s"}</p>']
    for name, d in doc["integrations"].items():
        last = d.get("last_run")
        badges = []
        if not d.get("enabled", True):
            badges.append('<span class="b off">disabled</span>')
        if d.get("running"):
            badges.append('<span class="b running">running</span>')
        if d.get("health") == "failing":
            badges.append('<span class="b failed">failing</span>')
        parts.append(f'<section class="integration" data-name="{_e(name)}">'
                     f'<h2>{_e(name)} {" ".join(badges)}'
                     f'<button class="act" data-url="/api/integrations/{_e(name)}/run">'
                     f'Run now</button></h2>')
        if last is None:
            parts.append('<p>Last run: <b>never</b></p>')
        else:
            parts.append(
                f'<p>Last run: <b>#{_e(last["id"])}</b> <span class="b {_e(last["status"])}">'
                f'{_e(last["status"])}</span> ({_e(last["trigger"])}) '
                f'{_e(last["started_at"])} → {_e(last["finished_at"] or "under way")}'
                + (f' — {_e(last["message"])}' if last.get("message") else "") + "</p>")
        parts.append(f'<p>Next run: {_e(d.get("next_run"))}</p>')
        if last is not None and last["steps"]:
            parts.append("<table><tr><th>flow</th><th>status</th><th>counts</th>"
                         "<th>message</th></tr>")
            for s in last["steps"]:
                parts.append(
                    f'<tr class="step" data-flow="{_e(s["flow"])}" '
                    f'data-status="{_e(s["status"])}"><td>{_e(s["flow"])}</td>'
                    f'<td><span class="b {_e(s["status"])}">{_e(s["status"])}</span></td>'
                    f'<td class="counts">{_counts(s["counts"])}</td>'
                    f'<td>{_e(s["message"])}</td></tr>')
            parts.append("</table>")
        parts.append(_log(d.get("log") or []))
        parts.append(f'<h3>Open record errors ({len(d["record_errors"])})</h3>')
        parts.append(_table(d["record_errors"],
                            ["flow", "side", "record", "count", "message"], "record-error"))
        parts.append(f'<h3>Ambiguous matches awaiting review ({len(d["reviews"])})</h3>')
        parts.append(_table(d["reviews"], ["flow", "side", "record", "reason", "candidates"],
                            "review"))
        waiting = [h for h in d["held_deletes"] if not h["approved"]]
        parts.append(f'<h3>Deletes held by the circuit-breaker ({len(waiting)} waiting)</h3>')
        parts.append(_table(d["held_deletes"],
                            ["flow", "target", "record", "action", "run", "approved"], "held"))
        if waiting:
            parts.append(f'<button class="act" data-url="/api/integrations/{_e(name)}/approve"'
                         f'>Approve {len(waiting)} held delete'
                         f'{"s" if len(waiting) != 1 else ""}</button>')
        parts.append("</section>")
    parts.append("</div>")
    return "\n".join(parts)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>accord — status</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;
color:#1d232b;background:#f6f7f9}
h1{font-size:20px;margin:0 0 .3em}h2{font-size:17px;margin:0 0 .4em}h3{font-size:14px;
margin:1em 0 .3em}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:1em 1.2em;
margin:1em 0}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .5em;
border-bottom:1px solid #eceff2;vertical-align:top}th{font-weight:600;color:#555}
.muted{color:#777}.b{display:inline-block;padding:0 .5em;border-radius:9px;font-size:12px;
background:#e6e8eb}.b.ok{background:#d8f3dc;color:#1b5e20}.b.errors,.b.skipped{
background:#fff3cd;color:#7a5a00}.b.failed,.b.stopped{background:#fde2e1;color:#9b1c1c}
.b.running{background:#dbeafe;color:#1e40af}.b.off{background:#eee;color:#666}
.c{display:inline-block;margin-right:.6em;white-space:nowrap}
button{font:inherit;padding:.2em .8em;margin-left:.6em;border:1px solid #99a;border-radius:4px;
background:#fff;cursor:pointer}
#bar{display:flex;gap:.6em;align-items:center}#msg{color:#1e40af}
</style></head><body>
<h1>accord — status</h1>
<div id="bar"><label>API token (for the buttons)
<input id="token" type="password" autocomplete="off" size="24"></label>
<span id="msg" role="status"></span></div>
%BODY%
<script>
(function(){
  var timer = null;
  var tok = document.getElementById('token');
  tok.value = sessionStorage.getItem('accord-token') || '';
  tok.addEventListener('change', function(){ sessionStorage.setItem('accord-token', tok.value); });
  function schedule(){
    var el = document.getElementById('status');
    var running = el && el.getAttribute('data-running') === '1';
    clearTimeout(timer);
    timer = setTimeout(refresh, running ? 2000 : 30000);
  }
  function refresh(){
    fetch('/partial', {cache: 'no-store'}).then(function(r){
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.text();
    }).then(function(text){
      document.getElementById('status').outerHTML = text;
    }).catch(function(e){
      document.getElementById('msg').textContent = 'refresh failed: ' + e.message;
    }).then(schedule);
  }
  document.addEventListener('click', function(ev){
    var b = ev.target.closest('button.act');
    if (!b) return;
    fetch(b.getAttribute('data-url'), {method: 'POST',
      headers: {'Authorization': 'Bearer ' + tok.value}}).then(function(r){
      return r.json().then(function(j){
        document.getElementById('msg').textContent =
          (j.message || j.error || j.status || '') + (j.run ? ' (run ' + j.run + ')' : '');
      });
    }).catch(function(e){
      document.getElementById('msg').textContent = e.message;
    }).then(refresh);
  });
  schedule();
})();
</script></body></html>
"""
