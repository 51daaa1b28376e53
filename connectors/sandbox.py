"""What every vendor sandbox shares: serving on loopback, a request log, fault knobs, a clock,
and a file that keeps its records.

A sandbox is an aiohttp imitation of one vendor's documented API. Subclasses add the routes
(``routes()``), the data (``seed(n, rng)``), ``touch(rng)`` (one random edit, used by the
demo so a newcomer sees records flow) and ``persisted`` (the attributes holding the data).

``keep_in(path)`` keeps the records in a JSON file (the demo: a restart, a reload and a second
terminal see the same systems): read back when it exists, else written at once; then written
again after every change (a request other than GET, or ``changed()``), at most every
``save_delay`` seconds, and at ``stop()``. Without it (tests, benchmarks) nothing is written.

Fault knobs are set by tests and benchmarks:

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
  clock is fast, while the ``Date`` header stays honest (0 turns it off);
- ``faults.garbage_next(n, kind)``: the next n requests get a malformed answer: ``"html502"``
  (a proxy's HTML error page, status 502, not handled), ``"not_json"`` (200 with a text body,
  not handled), ``"truncated"`` (handled: a write is applied; the real answer's first half,
  then the connection closes before its announced length).

Every answer carries a ``Date`` header from the sandbox clock (``self.clock``), not the real
time, so a test that sets the clock sees a coherent vendor clock. ``instance_id`` is a random
id made when the sandbox is built, independent of the seed: a fresh generation is a different
instance even with the same seed; each sandbox exposes it where its vendor names an instance.
A sandbox kept in a file (``keep_in``) keeps its ``instance_id`` there too: read back, it is
the same instance, not a fresh one.
"""
from __future__ import annotations

import asyncio
import base64
import os
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
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


GARBAGE = ("html502", "not_json", "truncated")
BAD_GATEWAY_PAGE = ("<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
                    "<body><center><h1>502 Bad Gateway</h1></center>\n"
                    + "<p>The upstream server did not answer in time.</p>\n" * 40
                    + "<hr><center>nginx</center></body></html>\n")


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
        self._garbage = []


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



def json_answer(body: Any, status: int = 200, headers: dict[str, str] | None = None,
                dates: Callable[[datetime], str] | None = None) -> web.Response:
    """A JSON answer, encoded once by orjson to bytes (aiohttp's ``json_response`` encodes
    with the standard library's ``json``, dearer than a sandbox's own work on a page).
    ``dates``: how the vendor writes a date, for a body whose stored rows still hold
    datetimes (the encoder calls it for each; no row is copied to convert them)."""
    data = (orjson.dumps(body) if dates is None else
            orjson.dumps(body, default=lambda v: _date(v, dates),
                         option=orjson.OPT_PASSTHROUGH_DATETIME))
    return web.Response(body=data, status=status, headers=headers,
                        content_type="application/json")


def _date(value: Any, dates: Callable[[datetime], str]) -> str:
    if isinstance(value, datetime):
        return dates(value)
    raise TypeError(f"{type(value).__name__} is not JSON")

class Sandbox:
    """Base class. ``app`` is built once; ``start(port)`` serves it on 127.0.0.1."""

    system = "sandbox"
    persisted: tuple[str, ...] = ()     # the attributes that hold the records (keep_in)
    store_suffix = ".json"

    def __init__(self, *, seed: int = 0, records: int = 0, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.faults = Faults()
        self.hits: list[Hit] = []
        self.rng = random.Random(seed)
        # from the OS, not from the seed: the same seed generated twice is two instances
        # (kept with the records by keep_in: a sandbox read back is the same instance)
        self.instance_id = str(uuid.uuid4())
        self.app = web.Application(middlewares=[self._middleware, self._changes])
        self._http_date: tuple[datetime | None, str] = (None, "")
        self.app.on_response_prepare.append(self._date_header)
        # first, so that a sandbox whose routes catch every path still answers it
        self.app.router.add_get("/_sandbox/stats", self._stats)
        self.app.add_routes(self.routes())
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.store: Path | None = None
        self.save_delay = 0.5
        self._dirty = False
        self._saving: asyncio.TimerHandle | None = None
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
        self._save_pending()

    # --- storage -------------------------------------------------------------------------
    def keep_in(self, path: str | Path, *, delay: float = 0.5) -> bool:
        """Keep the records in the file ``path`` (see the module docstring). True when they
        were read back from it, False when it was new (the current records are written)."""
        self.store, self.save_delay = Path(path), delay
        if self.store.exists():
            self.restore(self.store)
            return True
        self.save()
        return False

    def changed(self) -> None:
        """Records changed: write them ``save_delay`` seconds from now (one write for all the
        changes made meanwhile)."""
        if self.store is None:
            return
        self._dirty = True
        if self._saving is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.save()
            return
        self._saving = loop.call_later(self.save_delay, self._save_pending)

    def _save_pending(self) -> None:
        if self._saving is not None:
            self._saving.cancel()
            self._saving = None
        if self._dirty:
            self.save()

    def save(self) -> None:
        """Write the records now (a whole new file, then renamed: never half a file)."""
        assert self.store is not None
        doc = {"sandbox": self.system, "format": 1,
               "saved_at": datetime.now(timezone.utc).isoformat(),
               "instance_id": self.instance_id,
               "rng": _encode(self.rng.getstate()),
               "records": {name: _encode(getattr(self, name)) for name in self.persisted}}
        self.store.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.store.with_name(self.store.name + ".tmp")
        tmp.write_bytes(orjson.dumps(doc))
        os.replace(tmp, self.store)
        self._dirty = False

    def restore(self, path: Path) -> None:
        """Replace the records with those kept in ``path``; SandboxFileError if it cannot be
        read (the file is left as it is)."""
        try:
            doc = orjson.loads(path.read_bytes())
        except OSError as exc:
            raise SandboxFileError(f"{path}: cannot read the {self.system} sandbox's "
                                   f"records: {exc.strerror or exc}") from None
        except orjson.JSONDecodeError:
            raise SandboxFileError(f"{path}: not a sandbox file (not JSON); "
                                   f"{_AFRESH}") from None
        kind = doc.get("sandbox") if isinstance(doc, dict) else None
        if kind != self.system:
            raise SandboxFileError(f"{path}: holds the records of a {kind or 'unknown'} "
                                   f"sandbox, not of a {self.system} one; {_AFRESH}")
        records = doc.get("records")
        missing = [n for n in self.persisted
                   if not isinstance(records, dict) or n not in records]
        if missing or doc.get("format") != 1:
            raise SandboxFileError(f"{path}: an unknown or incomplete sandbox file "
                                   f"({', '.join(missing) or 'format'}); {_AFRESH}")
        try:
            values = {name: _decode(records[name]) for name in self.persisted}
            rng_state = _decode(doc["rng"])
            self.rng.setstate(rng_state)
        except (KeyError, TypeError, ValueError) as exc:
            raise SandboxFileError(f"{path}: a damaged sandbox file ({exc}); "
                                   f"{_AFRESH}") from None
        for name, value in values.items():
            setattr(self, name, value)
        self.restored()
        instance = doc.get("instance_id")
        if isinstance(instance, str) and instance:
            # the same instance as before the restart (a file written without one, before
            # instances were named, keeps the id this sandbox was built with)
            self.instance_id = instance

    def restored(self) -> None:
        """Called after ``restore`` replaced the records: a sandbox that indexes them builds
        its indexes again here."""

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
        return web.json_response({"system": self.system, "requests": len(self.hits),
                                  "by_route": counts})

    @web.middleware
    async def _changes(self, request: web.Request, handler):
        """A request that may have written something: keep the records (``keep_in``)."""
        try:
            return await handler(request)
        finally:
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                self.changed()

    async def _date_header(self, request: web.Request, response: web.StreamResponse) -> None:
        """The sandbox clock's time, to the second as HTTP dates are (formatted once a
        second: formatting it cost about as much as answering a small request)."""
        now = self.clock.now().astimezone(timezone.utc).replace(microsecond=0)
        if self._http_date[0] != now:
            self._http_date = (now, format_datetime(now, usegmt=True))
        response.headers["Date"] = self._http_date[1]

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
        if self.faults._garbage:
            return await _garbage(request, handler, self.faults._garbage.pop(0))
        response = await handler(request)
        self._drop_fields(response)
        return response


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


# --- the records file -----------------------------------------------------------------------
_AFRESH = "delete it to start afresh (accord demo reset)"


class SandboxFileError(OSError):
    """A sandbox's records file cannot be read back; it is left as it is."""


def _encode(value: Any) -> Any:
    """JSON for the records: datetimes, dates, tuples, sets, bytes and maps with keys other
    than text are tagged (``{"$dt": ...}``) so that they come back as they were."""
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"$set": [_encode(v) for v in sorted(value, key=repr)]}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v) for k, v in value.items()}
        return {"$map": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"a sandbox cannot keep a {type(value).__name__} in its file")


_TAGS: dict[str, Callable[[Any], Any]] = {
    "$dt": datetime.fromisoformat,
    "$date": date.fromisoformat,
    "$tuple": lambda v: tuple(_decode(x) for x in v),
    "$set": lambda v: {_decode(x) for x in v},
    "$bytes": lambda v: base64.b64decode(v),
    "$map": lambda v: {_decode(k): _decode(x) for k, x in v},
}


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            (key, inner), = value.items()
            if key in _TAGS:
                return _TAGS[key](inner)
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value
