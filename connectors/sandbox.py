"""What every vendor sandbox shares: serving on loopback, a request log, fault knobs, a clock.

A sandbox is an aiohttp imitation of one vendor's documented API. Subclasses add the routes
(``routes()``), the data (``seed(n, rng)``) and ``touch(rng)`` (one random edit, used by the
demo so a newcomer sees records flow). Fault knobs are set by tests and benchmarks:

- ``faults.latency``: seconds added to every request;
- ``faults.fail_next(n, status, retry_after=None)``: the next n requests answer ``status``;
- ``faults.drop_next(n)``: the next n requests have their connection closed without answer;
- ``faults.fail_after_commit(n)``: the next n writes (every create, update and delete route)
  are applied and then answered 500;
- ``faults.hang_after_commit(n, seconds=3600)``: the next n writes are applied and then not
  answered for ``seconds`` (a client with a shorter timeout gives up: "stored, then no answer
  before the client's timeout"). The wait ends early when the sandbox stops, or when
  ``faults.release()`` is called, so a test never waits for it and shutdown stays clean;
- ``faults.drop_fields(n, *names)``: the next n answers that carry records (reads and write
  answers alike) leave the named fields out of every record in them (a vendor answer without
  some fields); a dotted name (``MainAddress.Postcode``) reaches into a nested object;
- ``faults.clock_ahead(seconds)``: records written or edited from now on (through the API or
  by ``touch``) are stamped ``seconds`` ahead of the sandbox clock, as by a workstation whose
  clock is fast, while the ``Date`` header stays honest (0 turns it off).

Every answer carries a ``Date`` header from the sandbox clock (``self.clock``), not the real
time, so a test that sets the clock sees a coherent vendor clock. ``instance_id`` is a random
id made when the sandbox is built, independent of the seed: a fresh generation is a different
instance even with the same seed; each sandbox exposes it where its vendor names an instance.
"""
from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, Callable, Iterable

import orjson
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


@dataclass
class Faults:
    """The knobs of the module docstring; a sandbox consumes them."""

    latency: float = 0.0
    stamp_offset: float = 0.0            # clock_ahead: seconds added to record stamps
    _fail: list[tuple[int, float | None]] = field(default_factory=list)
    _drop: int = 0
    _after_commit: int = 0
    _hang: list[float] = field(default_factory=list)
    _drop_fields: list[tuple[str, ...]] = field(default_factory=list)
    _release: asyncio.Event | None = None

    def fail_next(self, n: int, status: int = 500, retry_after: float | None = None) -> None:
        self._fail.extend([(status, retry_after)] * n)

    def drop_next(self, n: int) -> None:
        self._drop += n

    def fail_after_commit(self, n: int) -> None:
        self._after_commit += n

    def hang_after_commit(self, n: int, seconds: float = 3600.0) -> None:
        self._hang.extend([seconds] * n)

    def drop_fields(self, n: int, *names: str) -> None:
        self._drop_fields.extend([tuple(names)] * n)

    def clock_ahead(self, seconds: float) -> None:
        self.stamp_offset = seconds

    def take_after_commit(self) -> bool:
        if self._after_commit > 0:
            self._after_commit -= 1
            return True
        return False

    async def hold_after_commit(self) -> None:
        """Wait as a server that applied a write and then stalls (hang_after_commit), until
        the time is up, ``release()`` or the sandbox stops; cancellable."""
        if not self._hang:
            return
        seconds = self._hang.pop(0)
        if self._release is None or self._release.is_set():
            self._release = asyncio.Event()
        try:
            await asyncio.wait_for(self._release.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def release(self) -> None:
        """End every wait of hang_after_commit now."""
        if self._release is not None:
            self._release.set()

    def take_drop_fields(self) -> tuple[str, ...]:
        return self._drop_fields.pop(0) if self._drop_fields else ()

    def clear(self) -> None:
        self.release()
        self.latency, self._fail, self._drop, self._after_commit = 0.0, [], 0, 0
        self._hang, self._drop_fields, self.stamp_offset = [], [], 0.0


def drop_paths(record: dict, names: Iterable[str]) -> None:
    """Remove each name (a dotted path reaches into nested objects) from one record."""
    for name in names:
        node: Any = record
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)


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
        # from the OS, not from the seed: the same seed generated twice is two instances
        self.instance_id = str(uuid.uuid4())
        self.app = web.Application(middlewares=[self._middleware])
        self.app.on_response_prepare.append(self._date_header)
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

    def records_in(self, body: Any) -> list[dict]:
        """The records an answer's JSON body carries (for ``faults.drop_fields``): a list of
        them, a collection under ``value`` or ``Items``, or one record. Override where the
        vendor's answers differ."""
        if isinstance(body, list):
            return [r for r in body if isinstance(r, dict)]
        if isinstance(body, dict):
            for key in ("value", "Items"):
                if isinstance(body.get(key), list):
                    return [r for r in body[key] if isinstance(r, dict)]
            return [body]
        return []

    # --- for subclasses ------------------------------------------------------------------
    def stamp(self) -> datetime:
        """The time to stamp on a record written or edited now: the sandbox clock, plus the
        ``clock_ahead`` offset of a fast workstation."""
        now = self.clock.now()
        faults = getattr(self, "faults", None)      # None while a subclass builds its data
        if faults is not None and faults.stamp_offset:
            now += timedelta(seconds=faults.stamp_offset)
        return now

    async def after_commit(self) -> bool:
        """Call once a write is applied: stalls for ``hang_after_commit``, then True when
        the write must be answered 500 (``fail_after_commit``)."""
        await self.faults.hold_after_commit()
        return self.faults.take_after_commit()

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
        self.faults.release()              # a stalled write ends, so shutdown does not wait
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

    async def _date_header(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = format_datetime(self.clock.now().astimezone(timezone.utc),
                                                   usegmt=True)

    def _drop_fields(self, response: web.StreamResponse) -> None:
        """Apply ``faults.drop_fields`` to a JSON answer that carries records."""
        if not self.faults._drop_fields or not isinstance(response, web.Response) \
                or response.status >= 400 or "json" not in (response.content_type or "") \
                or not isinstance(response.body, bytes):
            return
        body = orjson.loads(response.body)
        records = self.records_in(body)
        if records:
            names = self.faults.take_drop_fields()
            for record in records:
                drop_paths(record, names)
            response.body = orjson.dumps(body)

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
        response = await handler(request)
        self._drop_fields(response)
        return response
