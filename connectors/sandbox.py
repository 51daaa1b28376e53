"""What every vendor sandbox shares: serving on loopback, a request log, fault knobs, a clock.

A sandbox is an aiohttp imitation of one vendor's documented API. Subclasses add the routes
(``routes()``), the data (``seed(n, rng)``) and ``touch(rng)`` (one random edit, used by the
demo so a newcomer sees records flow). Fault knobs are set by tests and benchmarks:

- ``faults.latency``: seconds added to every request;
- ``faults.fail_next(n, status, retry_after=None)``: the next n requests answer ``status``;
- ``faults.drop_next(n)``: the next n requests have their connection closed without answer;
- ``faults.fail_after_commit(n)``: the next n writes are applied and then answered 500;
- ``faults.garbage_next(n, kind)``: the next n requests get a malformed answer: ``"html502"``
  (a proxy's HTML error page, status 502, not handled), ``"not_json"`` (200 with a text body,
  not handled), ``"truncated"`` (handled: a write is applied; the real answer's first half,
  then the connection closes before its announced length).
"""
from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from aiohttp import web


class Clock:
    """The sandbox's clock: real time by default; tests set or step it."""

    def __init__(self, start: datetime | None = None) -> None:
        self._fixed = start

    def now(self) -> datetime:
        return self._fixed if self._fixed is not None else datetime.now(timezone.utc)

    def set(self, when: datetime) -> None:
        self._fixed = when

    def advance(self, seconds: float) -> None:
        self._fixed = self.now() + timedelta(seconds=seconds)


GARBAGE = ("html502", "not_json", "truncated")
BAD_GATEWAY_PAGE = ("<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
                    "<body><center><h1>502 Bad Gateway</h1></center>\n"
                    + "<p>The upstream server did not answer in time.</p>\n" * 40
                    + "<hr><center>nginx</center></body></html>\n")


@dataclass
class Faults:
    latency: float = 0.0
    _fail: list[tuple[int, float | None]] = field(default_factory=list)
    _drop: int = 0
    _after_commit: int = 0
    _garbage: list[str] = field(default_factory=list)

    def garbage_next(self, n: int, kind: str = "not_json") -> None:
        if kind not in GARBAGE:
            raise ValueError(f"garbage kind {kind!r}: one of {', '.join(GARBAGE)}")
        self._garbage.extend([kind] * n)

    def fail_next(self, n: int, status: int = 500, retry_after: float | None = None) -> None:
        self._fail.extend([(status, retry_after)] * n)

    def drop_next(self, n: int) -> None:
        self._drop += n

    def fail_after_commit(self, n: int) -> None:
        self._after_commit += n

    def take_after_commit(self) -> bool:
        if self._after_commit > 0:
            self._after_commit -= 1
            return True
        return False

    def clear(self) -> None:
        self.latency, self._fail, self._drop, self._after_commit = 0.0, [], 0, 0
        self._garbage = []


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    query: str


class Sandbox:
    """Base class. ``app`` is built once; ``start(port)`` serves it on 127.0.0.1."""

    system = "sandbox"

    def __init__(self, *, seed: int = 0, records: int = 0, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.faults = Faults()
        self.hits: list[Hit] = []
        self.rng = random.Random(seed)
        self.app = web.Application(middlewares=[self._middleware])
        self.app.add_routes(self.routes())
        self.app.router.add_get("/_sandbox/stats", self._stats)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        if records:
            self.seed(records, self.rng)

    # --- to override -------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return []

    def seed(self, n: int, rng: random.Random) -> None:
        """Generate ``n`` plausible records."""

    def touch(self, rng: random.Random) -> str:
        """Make one random edit, as a user of the system would; return what it did."""
        return "nothing"

    # --- serving -------------------------------------------------------------------------
    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- bookkeeping ---------------------------------------------------------------------
    def count(self, method: str | None = None, path_prefix: str = "",
              predicate: Callable[[Hit], bool] | None = None) -> int:
        return sum(1 for h in self.hits
                   if (method is None or h.method == method) and h.path.startswith(path_prefix)
                   and (predicate is None or predicate(h)))

    def writes(self) -> int:
        return self.count(predicate=lambda h: h.method in ("POST", "PUT", "PATCH", "DELETE"))

    def reset_hits(self) -> None:
        self.hits.clear()

    async def _stats(self, request: web.Request) -> web.Response:
        counts = Counter(f"{h.method} {h.path}" for h in self.hits)
        return web.json_response({"requests": len(self.hits), "by_route": counts})

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        if request.path.startswith("/_sandbox/"):
            return await handler(request)
        self.hits.append(Hit(request.method, request.path, request.query_string))
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        if self.faults._drop > 0:
            self.faults._drop -= 1
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("dropped by the sandbox's fault knob")
        if self.faults._fail:
            status, retry_after = self.faults._fail.pop(0)
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return web.json_response({"message": f"injected fault {status}"}, status=status,
                                     headers=headers)
        if self.faults._garbage:
            return await _garbage(request, handler, self.faults._garbage.pop(0))
        return await handler(request)


async def _garbage(request: web.Request, handler, kind: str) -> web.StreamResponse:
    """One malformed answer (``faults.garbage_next``)."""
    if kind == "html502":
        return web.Response(status=502, text=BAD_GATEWAY_PAGE, content_type="text/html")
    if kind == "not_json":
        return web.Response(status=200, text="Service temporarily in maintenance mode.",
                            content_type="text/plain")
    real = await handler(request)
    body = real.body if isinstance(getattr(real, "body", None), bytes) else b""
    cut = web.StreamResponse(status=real.status,
                             headers={"Content-Type": real.headers.get("Content-Type",
                                                                       "application/json")})
    cut.content_length = len(body) + 1
    await cut.prepare(request)
    await cut.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return cut
