"""The daemon's web side: routes and auth for the status page, the JSON API, metrics, health.

Served by aiohttp in the daemon's own event loop, started and stopped by ``Service``, bound to
``[web] host`` (127.0.0.1 unless configured) and ``port`` (8080; 0 picks a free one). The page
is rendered by daemon/page.py, the metrics by daemon/metrics.py; the state is read through
daemon/store/reports.py (via daemon/status.py) and changed through daemon/store/operator.py.

- ``GET /``: the status page; ``GET /partial``: its refreshing part (DT-10).
- ``GET /api/status``: the same as JSON (the document of ``accord status --json``, plus what
  only the daemon knows: running, health, the scheduler's next runs).
- ``POST /api/integrations/{name}/run``: start a run now (202 with its id; 409 when a run of it
  is under way). It runs a paused integration too: pausing stops the schedule, not a person.
- ``.../approve`` (optional ``{"flow"}``): approve the deletes the circuit-breaker held.
- ``.../retry`` ``{"flow", "side"?, "id"?}``: read the record (or every record error of the
  flow, or of one side) again next run, out of quarantine (404: no such record error).
- ``.../exclude`` ``{"flow", "side", "id", "once"?, "reason"?}``: leave a record out.
- ``.../include`` ``{"flow", "side", "id"}``: lift an exclusion (404: not excluded).
- ``.../pause`` (optional ``{"reason"}``) and ``.../resume``: no scheduled runs (nor webhooks)
  while paused, kept in the state across restarts (409: already paused / not paused).
- ``.../approve-first-run``: "the synchronisation data is correct" (BB-9): the first run's
  gate only (404: none waits; 409: approved already).
- ``.../links`` ``{"flow", "side", "id", "mode"}``: "no sync" (``no_sync``), "not this time"
  (``not_this_time``) or ``lift`` on a record and its partner (BB-6, BB-7).
- ``GET /integrations/{name}/preview``: the first run's whole stored plan (BB-3; 404 when none
  waits); ``GET /integrations/{name}/flows/{flow}/links``: the flow's linked pairs, a keyset
  page at a time (``?after=`` / ``?before=`` a link id). ``?partial=1``: the refreshing part.
- ``POST /api/webhooks/{name}``: ``{"flow", "side", "ids": [...]}`` starts a targeted run of
  those records (UL-4); while a run is under way they wait for it, merged. ``side`` is
  ``left``/``right`` or the system's name. 409 while the integration is paused.
- ``GET /metrics`` (Prometheus text), ``GET /healthz``, ``GET /readyz``.

A ``side`` in a body may be ``left``/``right`` or the system's configured name.

Every POST needs ``Authorization: Bearer <[web] token>`` (401 otherwise, compared in constant
time); without a configured token the POST endpoints answer 403. GETs need no token and never
show a secret: the documents are built from the state database and the runs, never from the
configuration's credentials.
"""
from __future__ import annotations

import asyncio
import hmac
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from daemon import links as links_lib
from daemon import metrics as metrics_lib
from daemon import page as page_lib
from daemon import status as status_lib
from daemon.engine.runner import RunOptions
from daemon.store import correspondence, gates, operator, reports

if TYPE_CHECKING:
    from daemon.control import Daemon

log = structlog.get_logger("accord.web")

MAX_IDS = 1000                  # records one webhook call may name
# what ``POST .../links`` takes as ``mode``: the command line's words (``accord links --no-sync``)
LINK_MODES = {"no_sync": "never", "not_this_time": "skip_once", "lift": None}
# config.example.toml's token: fine for the demo on loopback, a warning anywhere else
EXAMPLE_TOKEN = "demo-token"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _json(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data, default=str), status=status,
                        content_type="application/json", headers=headers)


def _error(status: int, message: str, **extra) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="accord"'} if status == 401 else None
    return _json({"error": message, "message": message, **extra}, status, headers)


class WebServer:
    def __init__(self, service: "Daemon") -> None:
        self.service = service
        self.started = False
        self.port: int | None = None
        self.host: str | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()
        self._pending: dict[str, dict[str, dict[str, set[str]]]] = {}
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._drainers: dict[str, asyncio.Task] = {}
        self.prometheus = metrics_lib.Metrics(service)     # this web app's own registry

    # --- life cycle ------------------------------------------------------------------------
    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.add_routes([
            web.get("/", self.page), web.get("/partial", self.partial),
            web.get("/api/status", self.api_status), web.get("/metrics", self.metrics),
            web.get("/healthz", self.healthz), web.get("/readyz", self.readyz),
            web.get("/integrations/{name}/preview", self.preview_page),
            web.get("/integrations/{name}/flows/{flow}/links", self.links_page),
            web.post("/api/integrations/{name}/run", self.run_now),
            web.post("/api/integrations/{name}/approve", self.approve),
            web.post("/api/integrations/{name}/approve-first-run", self.approve_first_run),
            web.post("/api/integrations/{name}/links", self.set_link_mode),
            web.post("/api/integrations/{name}/retry", self.retry),
            web.post("/api/integrations/{name}/exclude", self.exclude),
            web.post("/api/integrations/{name}/include", self.include),
            web.post("/api/integrations/{name}/pause", self.pause),
            web.post("/api/integrations/{name}/resume", self.resume),
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
        if self._token() == EXAMPLE_TOKEN and host not in LOOPBACK:
            log.warning("web.example_token", host=host,
                        reason="the POST endpoints take the example configuration's token on "
                               "a non-loopback address: set [web] token_file")
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
    def _token(self) -> str:
        spec = self.service.cfg.web if self.service.cfg is not None else None
        return spec.token.get_secret_value() if spec and spec.token else ""

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            token = self._token()
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

    def _next_time(self, job_id: str) -> str | None:
        sched = self.service.scheduler
        job = sched.get_job(job_id) if sched is not None else None
        return status_lib.iso(getattr(job, "next_run_time", None))

    def _next_runs(self) -> tuple[dict[str, str | None], dict[tuple[str, str], str | None]]:
        """The scheduler's next run of each integration, and of each of its jobs."""
        from daemon.jobs import extra_job_id, sync_job_id
        runs: dict[str, str | None] = {}
        jobs: dict[tuple[str, str], str | None] = {}
        for name, spec in (self.service.cfg.integrations if self.service.cfg else {}).items():
            runs[name] = self._next_time(sync_job_id(name))
            for job in spec.jobs:
                jobs[(name, job.name)] = self._next_time(extra_job_id(name, job.name))
        return runs, jobs

    async def status_doc(self) -> dict:
        svc = self.service
        if svc.app is None or svc.app.db is None or svc.cfg is None:
            raise web.HTTPServiceUnavailable(
                text=orjson.dumps({"error": "starting or reloading; try again"}).decode(),
                content_type="application/json")
        next_runs, job_runs = self._next_runs()
        doc = await status_lib.gather(svc.cfg, svc.app.db, next_runs=next_runs,
                                      job_runs=job_runs, live=svc.live, health=svc.health)
        doc["generated_at"] = status_lib.iso(datetime.now(timezone.utc))
        doc["running"] = any(d.get("running") for d in doc["integrations"].values())
        return doc

    async def _last_run_id(self, name: str) -> int:
        async with self.service.app.db.connect() as conn:  # type: ignore[union-attr]
            return await reports.last_run_id(conn, name)

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
            task = self.service.run_under_way(name)
            if task is not None:
                await asyncio.wait({task})
            else:
                await asyncio.sleep(0.05)

    # --- GET -------------------------------------------------------------------------------
    async def api_status(self, request: web.Request) -> web.Response:
        return _json(await self.status_doc())

    async def page(self, request: web.Request) -> web.Response:
        html = page_lib.page(await self.status_doc(), buttons=bool(self._token()))
        return web.Response(text=html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def partial(self, request: web.Request) -> web.Response:
        return web.Response(text=page_lib.body(await self.status_doc()),
                            content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    def _html(self, text: str, status: int = 200) -> web.Response:
        return web.Response(text=text, status=status, content_type="text/html",
                            charset="utf-8", headers={"Cache-Control": "no-store"})

    def _page_integration(self, request: web.Request) -> str:
        """The integration a page names; a plain 404 page when there is none."""
        name = request.match_info["name"]
        app = self.service.app
        if app is None or name not in app.integrations:
            raise web.HTTPNotFound(text=f"no enabled integration named {name!r}",
                                   content_type="text/plain")
        return name

    async def preview_page(self, request: web.Request) -> web.Response:
        """BB-3: the first run's stored plan, every stored row (the status page cuts each list);
        404 when no first run waits (the page says so)."""
        name = self._page_integration(request)
        doc = await self.status_doc()
        waiting = any(g["kind"] == "first_run" for g in doc["integrations"][name]["gates"])
        if request.query.get("partial"):
            return self._html(page_lib.preview_body(name, doc), 200 if waiting else 404)
        return self._html(page_lib.preview_page(name, doc, buttons=bool(self._token())),
                          200 if waiting else 404)

    async def links_page(self, request: web.Request) -> web.Response:
        """BB-6, BB-7: a flow's correspondence table, a keyset page of ``links.PAGE`` pairs at
        a time (``?after=`` / ``?before=`` a link id)."""
        name = self._page_integration(request)
        flow_name = request.match_info["flow"]
        spec = self.service.cfg.integrations[name]  # type: ignore[union-attr]
        flow = next((f for f in spec.flows if f.name == flow_name), None)
        if flow is None:
            raise web.HTTPNotFound(text=f"integration {name} has no flow {flow_name!r}",
                                   content_type="text/plain")
        keyset: dict[str, int] = {}
        for key in ("after", "before"):
            value = request.query.get(key)
            if value is None:
                continue
            if not value.isdigit():
                raise web.HTTPBadRequest(text=f"{key}: a link id (a whole number)",
                                         content_type="text/plain")
            keyset[key] = int(value)
        async with self.service.app.db.connect() as conn:  # type: ignore[union-attr]
            table = await links_lib.page(conn, name, flow, **keyset)
        systems = {"left": spec.left, "right": spec.right}
        partial = page_lib.links_url(name, flow_name, **keyset, partial=1)
        if request.query.get("partial"):
            return self._html(page_lib.links_body(table, systems, partial))
        return self._html(page_lib.links_page(table, systems, partial,
                                              buttons=bool(self._token())))

    async def healthz(self, request: web.Request) -> web.Response:
        sched = self.service.scheduler
        if sched is not None and sched.running and not self.service.stopping:
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
        return _json({"status": "started", "run": run_id,
                      "message": f"run #{run_id} of {name} started"}, 202)

    def _not_started(self, name: str) -> web.Response:
        if self.service.stopping:
            return _json({"status": "skipped", "message": "skipped: the daemon is stopping"},
                         503)
        lock = self.service.locks.get(name)
        if lock is not None and lock.locked():
            return _json({"status": "skipped", "message": "skipped: a run is under way"}, 409)
        return _json({"status": "skipped", "message": "skipped: see the daemon's log "
                      "(run.skipped), e.g. another daemon holds the integration's lease"}, 409)

    async def approve(self, request: web.Request) -> web.Response:
        name = self._integration(request)
        body = await self._object(request, required=False)
        flow = body.get("flow")
        if flow is not None:
            self._check_flow(name, flow)
        async with self.service.app.db.begin() as conn:  # type: ignore[union-attr]
            done = await operator.approve(conn, name, flow)
        n, gates = done["held_deletes"], done["gates"]
        log.info("web.approved", integration=name, flow=flow, held_deletes=n, gates=gates)
        message = (f"approved {n} held delete{'s' if n != 1 else ''}"
                   + (f" and {gates} gate{'s' if gates != 1 else ''}" if gates else "")
                   + "; the next run goes on")
        return _json({"approved": n, "gates": gates, "message": message})

    async def approve_first_run(self, request: web.Request) -> web.Response:
        """BB-9: "the synchronisation data is correct": the first run's gate only (not held
        deletes nor another gate), as ``accord approve --first-run``. 404: no first run waits;
        409: it is approved already."""
        name = self._integration(request)
        await self._object(request, required=False)
        async with self.service.app.db.begin() as conn:  # type: ignore[union-attr]
            gate = await gates.gate(conn, name, "first_run")
            if gate is not None and not gate["approved"]:
                await gates.approve_gate(conn, name, "first_run")
        if gate is None:
            return _error(404, f"{name} has no first run waiting for approval")
        if gate["approved"]:
            return _error(409, f"the first run of {name} is approved already: the next run "
                               f"synchronises")
        log.info("web.approved_first_run", integration=name)
        return _json({"approved": name, "message": f"approved: the synchronisation data of "
                      f"{name} is correct; the next run synchronises"})

    async def set_link_mode(self, request: web.Request) -> web.Response:
        """BB-6, BB-7: ``{"flow", "side", "id", "mode": "no_sync" | "not_this_time" |
        "lift"}`` on a record and, when linked, its partner, as ``accord links``."""
        name = self._integration(request)
        body = await self._object(request, required=True)
        flow, side, rid = (self._flow_of(name, body), self._side_of(name, body, required=True),
                           self._id_of(body))
        if body.get("mode") not in LINK_MODES:
            raise _bad("mode: no_sync, not_this_time or lift")
        mode = LINK_MODES[body["mode"]]
        reason = body.get("reason") or ""
        if not isinstance(reason, str):
            raise _bad("reason: text")
        async with self.service.app.db.begin() as conn:  # type: ignore[union-attr]
            ids = await correspondence.set_mode(conn, name, flow, side, rid, mode,
                                                reason[:500])
        log.info("web.link_mode", integration=name, flow=flow, side=side, record=rid,
                 mode=body["mode"])
        spec = self.service.cfg.integrations[name]  # type: ignore[union-attr]
        systems = {"left": spec.left, "right": spec.right}
        records = " and ".join(f"{systems[s]} {i}" for s, i in ids.items())
        what = {"never": "never synchronised until lifted",
                "skip_once": "left out of the next run only",
                None: "synchronised again from the next run"}[mode]
        return _json({"mode": body["mode"], "records": ids,
                      "message": f"{links_lib.MODE_WORDS[mode]}: {records} {what}"})

    async def retry(self, request: web.Request) -> web.Response:
        """One record error (flow, side, id), one side's, or a whole flow's."""
        name = self._integration(request)
        body = await self._object(request, required=True)
        flow = self._flow_of(name, body)
        side = self._side_of(name, body, required="id" in body)
        ids = [self._id_of(body)] if "id" in body else None
        async with self.service.app.db.begin() as conn:  # type: ignore[union-attr]
            n = await operator.retry(conn, name, flow, side, ids)
        what = self._what(name, flow, side, ids)
        if not n:
            return _error(404, f"no open record error for {what}")
        log.info("web.retry", integration=name, flow=flow, side=side, record_errors=n)
        return _json({"retried": n, "message": f"{what}: {n} record error"
                      f"{'s' if n != 1 else ''} marked for retry; the next run reads "
                      f"{'them' if n != 1 else 'it'} again"})

    async def exclude(self, request: web.Request) -> web.Response:
        name = self._integration(request)
        body = await self._object(request, required=True)
        flow, side, rid = (self._flow_of(name, body), self._side_of(name, body, required=True),
                           self._id_of(body))
        once = bool(body.get("once", False))
        reason = body.get("reason") or ""
        if not isinstance(reason, str):
            raise _bad("reason: text")
        async with self.service.app.db.begin() as conn:  # type: ignore[union-attr]
            await operator.exclude(conn, name, flow, side, rid, once=once, reason=reason[:500])
        log.info("web.excluded", integration=name, flow=flow, side=side, record=rid, once=once)
        when = "from the next run" if once else "until it is included again"
        return _json({"excluded": rid, "message": f"{self._what(name, flow, side, [rid])} is "
                      f"left out {when}"})

    async def include(self, request: web.Request) -> web.Response:
        name = self._integration(request)
        body = await self._object(request, required=True)
        flow, side, rid = (self._flow_of(name, body), self._side_of(name, body, required=True),
                           self._id_of(body))
        async with self.service.app.db.begin() as conn:  # type: ignore[union-attr]
            done = await operator.include(conn, name, flow, side, rid)
        what = self._what(name, flow, side, [rid])
        if not done:
            return _error(404, f"{what} is not excluded")
        log.info("web.included", integration=name, flow=flow, side=side, record=rid)
        return _json({"included": rid, "message": f"{what} is included again: the next run "
                      f"reads it"})

    async def pause(self, request: web.Request) -> web.Response:
        name = self._integration(request)
        body = await self._object(request, required=False)
        reason = body.get("reason") or ""
        if not isinstance(reason, str):
            raise _bad("reason: text")
        async with self.service.app.db.begin() as conn:  # type: ignore[union-attr]
            done = await operator.pause(conn, name, reason[:500])
        if not done:
            return _error(409, f"{name} is already paused")
        log.info("web.paused", integration=name, reason=reason or None)
        return _json({"paused": name, "message": f"{name} paused: no scheduled runs until it "
                      f"is resumed"})

    async def resume(self, request: web.Request) -> web.Response:
        name = self._integration(request)
        async with self.service.app.db.begin() as conn:  # type: ignore[union-attr]
            done = await operator.resume(conn, name)
        if not done:
            return _error(409, f"{name} is not paused")
        log.info("web.resumed", integration=name)
        return _json({"resumed": name, "message": f"{name} resumed: it runs on its schedule "
                      f"again"})

    async def _paused(self, name: str) -> bool:
        async with self.service.app.db.connect() as conn:  # type: ignore[union-attr]
            return await operator.is_paused(conn, name)

    async def webhook(self, request: web.Request) -> web.Response:
        name = self._integration(request)
        body = await self._body(request, required=True)
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object {flow, side, ids}")
        flow, ids = self._flow_of(name, body), body.get("ids")
        side = self._side_of(name, body, required=True)
        if isinstance(ids, (str, int)):
            ids = [ids]
        if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS or not all(
                isinstance(i, (str, int)) and str(i) for i in ids):
            raise _bad(f"ids: a list of 1 to {MAX_IDS} record ids")
        if await self._paused(name):
            return _error(409, f"{name} is paused: the change is picked up by the first run "
                               f"after it is resumed")
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
        return _json({"status": "started", "run": run_id,
                      "message": f"targeted run #{run_id} of {name} started"}, 202)

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
                        and not self.service.stopping:
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

    async def _object(self, request: web.Request, *, required: bool) -> dict:
        body = await self._body(request, required=required)
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object")
        return body

    def _flow_of(self, name: str, body: dict) -> str:
        flow = body.get("flow")
        if not isinstance(flow, str) or not flow:
            raise _bad("flow: a flow name is required")
        self._check_flow(name, flow)
        return flow

    def _side_of(self, name: str, body: dict, *, required: bool) -> str | None:
        """``left``/``right``, or the name of the integration's system on that side."""
        side = body.get("side")
        if side is None and not required:
            return None
        spec = self.service.cfg.integrations[name]  # type: ignore[union-attr]
        by_name = {spec.left: "left", spec.right: "right"}
        if side in ("left", "right"):
            return side
        if isinstance(side, str) and side in by_name and spec.left != spec.right:
            return by_name[side]
        raise _bad(f"side: left, right, {spec.left!r} or {spec.right!r}")

    def _id_of(self, body: dict) -> str:
        rid = body.get("id")
        if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid):
            raise _bad("id: a record id is required")
        return str(rid)

    def _what(self, name: str, flow: str, side: str | None, ids: list[str] | None) -> str:
        """"prospect companies record 42", in the systems' names."""
        spec = self.service.cfg.integrations[name]  # type: ignore[union-attr]
        system = {"left": spec.left, "right": spec.right}.get(side or "", "")
        where = f"{system} {flow}".strip()
        return f"{where} record {ids[0]}" if ids else f"{where} of {name}"

    def _check_flow(self, name: str, flow: Any) -> None:
        flows = [f.name for f in self.service.app.integration(name).flows]  # type: ignore
        if flow not in flows:
            raise _bad(f"flow: integration {name} has no flow {flow!r}", flows=flows)

    # --- metrics ---------------------------------------------------------------------------
    async def metrics(self, request: web.Request) -> web.Response:
        app = self.service.app
        if app is None or app.db is None:
            return web.Response(status=503, text="# starting or reloading\n")
        try:
            body = await self.prometheus.exposition()
        except (OSError, SQLAlchemyError) as exc:
            return web.Response(status=503, text=f"# state database: {type(exc).__name__}\n")
        return web.Response(body=body, headers={"Content-Type": metrics_lib.CONTENT_TYPE,
                                                "X-Content-Type-Options": "nosniff"})


def _bad(message: str, **extra) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=orjson.dumps({"error": message, **extra}).decode(),
                              content_type="application/json")
