"""Performance figures of issue 14, each measured in one run against its ceiling (not a test).

    python -m bench.perf_bench                       # every figure, full sizes (long)
    python -m bench.perf_bench --small 10000 --big 200000 --records 2000 --idle 100

Prints one table: the engine alone (in-memory systems) at two sizes, CPU per record and the
engine's resident memory, for a first sync that creates every record and for one that links
every record to one the other system already has; then, against the Unleashed and Prospect
CRM sandboxes served by a child process (so their CPU is theirs, not accord's): first-sync
creates against a bare aiohttp loop making the same number of creates on the same kind of
sandbox at the flow's concurrency ceiling (and what bounds that ratio: a create's CPU in
accord against the bare loop's client and the engine alone), a full read against the same
requests replayed bare, the sandboxes' CPU against accord's during the first sync, requests
of an idle run and per changed record above it, the share of a time-scaled quota an initial
load uses (and its 429s), and 100 idle integrations in one daemon (resident memory, CPU
share of one core over one period of their schedule and a minute). The first-sync and
full-read figures are measured in rounds (``--rounds``, each beside its own bare loops, on
fresh sandboxes and a fresh state): the median round is given, with every round's ratio, as
a run on a shared machine varies by a fifth.

Each size of the engine figure runs in a fresh process, so peak memory is its own; the small
size runs five times, two before the big size's run and three after (the machine's speed
drifts over minutes), and the median of their CPU, and apart of their memory, is taken (a run
lasts a second or two). The in-memory systems' own data is left out: the left side is built
before the baseline is taken, and the right side answers creates without keeping them (a
write-only system), so what grows during the sync is the engine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

HERE = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.disable(logging.WARNING)


def child(*args: str, timeout: float = 3600) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.perf_bench", *args], cwd=HERE,
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"bench child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the engine alone ---------------------------------------------------------------------------
async def engine_alone(n: int, matched: bool = False) -> dict:
    """A first sync of ``n`` records from an in-memory system into a write-only one (it
    answers creates as a system does but keeps nothing), so that the memory measured after
    the left side is built is the engine's own, and its CPU the engine's. ``matched``: the
    other system already holds every record under the same key (built before the baseline
    too), so the sync links them all and creates nothing."""
    from connectors.base import Record
    from connectors.memory import MemoryConnector
    from daemon.engine.rules import FlowRules
    from daemon import heap
    from daemon.engine.runner import Integration, RunOptions, order_flows, run
    from daemon.store.db import create_schema, make_engine

    class Sink(MemoryConnector):
        async def create(self, entity: str, fields: dict[str, Any]) -> Record:
            self.writes += 1
            return Record(f"r{self.writes}", dict(fields), self.now(), "v1")

    db = make_engine(f"sqlite:///{tempfile.mkdtemp()}/state.db")
    await create_schema(db)
    s = MemoryConnector.Settings(page_size=500)
    L, R = MemoryConnector("left", s), Sink("right", s)
    for i in range(n):
        L.put("items", {"key": f"k{i}", "name": f"name {i}", "phone": str(i)})
        if matched:
            R.put("items", {"code": f"K{i}", "title": f"name {i}", "tel": str(i)})
    rules = FlowRules.model_validate(dict(
        name="items", left_entity="items", right_entity="items",
        fields=[dict(left="key", right="code"), dict(left="name", right="title"),
                dict(left="phone", right="tel")], match=[dict(left="key", right="code")]))
    integ = Integration("m", order_flows([rules]), {"left": L, "right": R})
    # as the daemon does after its imports (daemon.heap), and the in-memory systems' data
    # with them: in a daemon that data lives in the vendor's process, not for accord's
    # collector to walk
    heap.freeze_startup()
    base = rss_mib()                    # the systems' data is all in already
    cpu, wall = time.process_time(), time.perf_counter()
    result = await run(db, integ, RunOptions(trigger="bench"))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = result.steps[0].counts["matched" if matched else "created_right"]
    assert result.status == "ok" and done == n, result
    await db.dispose()
    return {"n": n, "cpu_us": cpu / n * 1e6, "wall_s": wall,
            "engine_mib": max(1.0, peak_mib() - base)}


# runs of the small size, the median taken: a run of 10,000 matched records lasts a second,
# and on a shared machine its CPU a record varies by a fifth from one run to the next. The
# machine's speed also drifts over minutes, so the small runs are taken on both sides of the
# big one; the million's one run of minutes still takes whatever the machine does meanwhile
# (its matched run took 123 to 182 µs a record in seven runs on one day).
SMALL_RUNS = 5


def engine_pair(small: int, big: int, matched: bool = False) -> list[dict]:
    """The engine alone at ``small`` and ``big`` records, each run in a fresh process: the
    small size ``SMALL_RUNS`` times, about half before the big run and the rest after, its
    CPU the median of the runs' and, apart, its memory the median of theirs."""
    args = ["matched"] if matched else []
    half = SMALL_RUNS // 2
    runs = [child("_engine", str(small), *args) for _ in range(half)]
    large = child("_engine", str(big), *args)
    runs += [child("_engine", str(small), *args) for _ in range(SMALL_RUNS - half)]
    mid = len(runs) // 2
    return [{**sorted(runs, key=lambda r: r["cpu_us"])[mid],
             "engine_mib": sorted(r["engine_mib"] for r in runs)[mid]}, large]


# --- the sandboxes, served by a child process ---------------------------------------------------
async def serve() -> None:
    """Sandboxes in this process, driven over HTTP by the bench (/ctl/...)."""
    from aiohttp import web

    from connectors.prospect_crm.sandbox import ProspectSandbox
    from connectors.sandbox import Clock
    from connectors.unleashed.sandbox import UnleashedSandbox
    boxes: dict[str, Any] = {}

    async def new(request: web.Request) -> web.Response:
        q = request.query
        for b in boxes.values():
            await b.stop()
        boxes.clear()
        fixed = q.get("fixed", "1") == "1"
        clock = (lambda: Clock(Clock().now())) if fixed else Clock
        boxes["ul"] = UnleashedSandbox(seed=1, records=int(q.get("ul", 0)), clock=clock(),
                                       rate_limit_per_minute=10**9)
        boxes["crm"] = ProspectSandbox(seed=2, records=0, clock=clock(),
                                       rate_limit=int(q.get("limit", 10**9)),
                                       rate_window=float(q.get("window", 600)))
        for b in boxes.values():
            await b.start()
        return web.json_response({k: b.url for k, b in boxes.items()})

    async def ctl(request: web.Request) -> web.Response:
        cmd, q = request.match_info["cmd"], request.query
        if cmd == "reset":
            for b in boxes.values():
                b.reset_hits()
        elif cmd == "hits":
            return web.json_response({k: [[h.method, h.path, h.query] for h in b.hits]
                                      for k, b in boxes.items()})
        elif cmd == "advance":
            for b in boxes.values():
                b.clock.advance(float(q["s"]))
        elif cmd == "edit":
            ul, rng = boxes["ul"], random.Random(3)
            for g in rng.sample(sorted(ul.customers), int(q["n"])):
                ul.customers[g]["PhoneNumber"] = f"+64 9 {rng.randint(1000000, 9999999)}"
                ul.customers[g]["LastModifiedOn"] = ul.clock.now()
        elif cmd == "crm_edit":
            crm, rng = boxes["crm"], random.Random(4)
            live = sorted(k for k, v in crm.data["Companies"].items() if v["StatusFlag"] == "A")
            for key in rng.sample(live, int(q["n"])):
                phone = f"+44 1632 {rng.randint(100000, 999999)}"
                crm.modify("Companies", key, {"Telephone": phone})
        elif cmd == "counts":
            return web.json_response({"rejected": boxes["crm"].rejected,
                                      "companies": len(boxes["crm"].data["Companies"])})
        return web.json_response({"cpu": time.process_time()})

    app = web.Application()
    app.router.add_get("/new", new)
    app.router.add_get("/ctl/{cmd}", ctl)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"port": port}), flush=True)
    await asyncio.Event().wait()


class Sandboxes:
    """The child process serving the sandboxes, and its control calls."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.perf_bench", "_serve"],
                                     cwd=HERE, stdout=subprocess.PIPE, text=True)
        self.base = f"http://127.0.0.1:{json.loads(self.proc.stdout.readline())['port']}"
        self.urls: dict[str, str] = {}

    async def call(self, path: str, **params: Any) -> Any:
        import aiohttp
        async with aiohttp.ClientSession() as s:
            async with s.get(self.base + path, params={k: str(v) for k, v in params.items()},
                             timeout=aiohttp.ClientTimeout(total=3600)) as r:
                return await r.json()

    async def new(self, **params: Any) -> dict[str, str]:
        self.urls = await self.call("/new", **params)
        return self.urls

    async def cpu(self) -> float:
        return (await self.call("/ctl/cpu"))["cpu"]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def config(tmp: Path, urls: dict[str, str], n_integrations: int = 1, *,
           crm_quota: tuple[int, float] | None = None, every: str = "15m") -> Path:
    limit, window = crm_quota or (10**9, 600)
    text = f"""
[daemon]
database = "sqlite:///{tmp}/state.db"
log_level = "error"
[web]
enabled = false
[systems.ul]
type = "unleashed"
base_url = "{urls['ul']}"
api_id = "sandbox"
api_key = "sandbox-key"
page_size = 1000
[systems.crm]
type = "prospect_crm"
base_url = "{urls['crm']}"
token = "sandbox-token"
page_size = 500
requests_per_window = {limit}
window_seconds = {window}
"""
    for i in range(n_integrations):
        text += f"""
[integrations.i{i}]
left = "ul"
right = "crm"
preset = "unleashed_crm"
schedule = {{ every = "{every}", jitter = "5s" }}
"""
    path = tmp / "bench.toml"
    path.write_text(text)
    return path


async def one_run(app, name: str = "i0", **options: Any):
    from daemon.engine.runner import RunOptions, run
    result = await run(app.db, app.integration(name), RunOptions(trigger="bench", **options))
    assert result.status == "ok", result.message
    return result


def counted(result, *keys: str) -> int:
    return sum(s.counts.get(k, 0) for s in result.steps for k in keys)


async def through_sandboxes(args, out: dict) -> None:
    from daemon import heap

    heap.freeze_startup()                   # as the console script does
    boxes = Sandboxes()
    try:
        # the speed figures, in rounds (each against its own bare loops, run beside it): on
        # a shared machine a run varies by a fifth, and the median round tells more
        rounds = [await speed_round(boxes, args, out if i == 0 else None)
                  for i in range(args.rounds)]
        for key in ("creates", "full_read"):
            ratios = sorted(r[f"{key}_ratio"] for r in rounds)
            median = sorted(rounds, key=lambda r: r[f"{key}_ratio"])[len(rounds) // 2]
            out[f"{key}_rounds"] = ratios
            for k, v in median.items():
                if k.startswith(key):
                    out[k] = v
        out["cpu_split"] = sorted((r["cpu_split"] for r in rounds),
                                  key=lambda c: c[0] / c[1])[len(rounds) // 2]
        await quota_and_idle(boxes, args, out)
    finally:
        boxes.close()


async def speed_round(boxes: Sandboxes, args, requests: dict | None) -> dict:
    """One round: a first sync of ``args.records`` customers and a full read, each beside
    the same work done by a bare aiohttp loop. ``requests``: where to put the request counts
    of idle and edited runs (measured in the first round only), or None."""
    import aiohttp
    import orjson

    from connectors.prospect_crm import schema
    from connectors.unleashed.wire import sign
    from daemon.app import App
    from daemon.config import load
    got: dict[str, Any] = {}
    out = requests if requests is not None else {}
    # --- first sync: creates, CPU split, then a full read -----------------------------
    urls = await boxes.new(ul=args.records)
    tmp = Path(tempfile.mkdtemp())
    app = await App(load(config(tmp, urls))).start(sandboxes=False)
    try:
        sb0, cpu0, wall0 = await boxes.cpu(), time.process_time(), time.perf_counter()
        first = await one_run(app)
        wall = time.perf_counter() - wall0
        accord_cpu, sandbox_cpu = time.process_time() - cpu0, await boxes.cpu() - sb0
        creates = counted(first, "created_right")
        got["creates_per_s"] = creates / wall
        got["creates_cpu_us"] = 1e6 * accord_cpu / creates
        got["cpu_split"] = (sandbox_cpu, accord_cpu)
        await boxes.call("/ctl/advance", s=600)
        await one_run(app)                 # reads back what the first sync wrote
        await boxes.call("/ctl/advance", s=600)
        await boxes.call("/ctl/reset")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        full = await one_run(app, full=True)
        wall = time.perf_counter() - wall0
        read = counted(full, "read_left", "read_right")
        got["full_read_per_s"] = read / wall
        got["full_read_cpu_us"] = 1e6 * (time.process_time() - cpu0) / read
        hits = await boxes.call("/ctl/hits")
        # the same listings read by the connectors alone (parsed into records, no engine)
        integration = app.integration("i0")
        cpu0, listed = time.process_time(), 0
        for flow in integration.flows:
            for side, conn in integration.sides.items():
                async for page in conn.changes(flow.rules.entity(side), None):
                    listed += len(page)
        got["full_read_connectors_cpu_us"] = 1e6 * (time.process_time() - cpu0) / listed
        if requests is not None:
            await edited_requests(boxes, app, args, out)
    finally:
        await app.close()
    # --- the same full read's requests, made bare (bodies read; then also parsed) ------
    async with aiohttp.ClientSession() as s:
        for parse in (False, True):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for kind, rows in hits.items():
                for method, path, query in rows:
                    headers = ({"api-auth-id": "sandbox", "Accept": "application/json",
                                "api-auth-signature": sign("sandbox-key", query)}
                               if kind == "ul" else
                               {"Authorization": "Bearer sandbox-token"})
                    url = urls[kind] + path + (f"?{query}" if query else "")
                    async with s.request(method, url, headers=headers) as r:
                        body = await r.read()
                        if parse:
                            orjson.loads(body)
            bare = time.perf_counter() - wall0
            got["full_read_parsed_per_s" if parse else "full_read_bare_per_s"] = read / bare
            if parse:
                got["full_read_parsed_cpu_us"] = 1e6 * (time.process_time() - cpu0) / read

    # --- the same number of creates, bare, on a fresh sandbox --------------------------
    urls = await boxes.new(ul=0)
    users = [code for code, _ in schema.DEFAULT_USERS]
    rng = random.Random(5)
    bodies = [schema.company_body(rng, users) for _ in range(creates)]
    sem = asyncio.Semaphore(args.concurrency)
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sandbox-token",
                                              "Prefer": "return=representation"}) as s:
        async def post(body: dict) -> None:
            async with sem:
                async with s.post(urls["crm"] + "/Companies", json=body) as r:
                    assert r.status == 201, await r.text()
                    await r.read()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(post(b) for b in bodies))
        got["creates_bare_per_s"] = creates / (time.perf_counter() - wall0)
        got["creates_bare_cpu_us"] = 1e6 * (time.process_time() - cpu0) / creates

    got["creates_ratio"] = got["creates_per_s"] / got["creates_bare_per_s"]
    got["full_read_ratio"] = got["full_read_per_s"] / got["full_read_bare_per_s"]
    return got


async def edited_requests(boxes: Sandboxes, app, args, out: dict) -> None:
    """The requests of an idle run, and of runs after 1% of the records were edited on each
    side, above it (after a first sync and a full read)."""
    await boxes.call("/ctl/advance", s=600)
    await one_run(app)                 # after the full read: cursors at the signpost
    await boxes.call("/ctl/advance", s=600)
    await boxes.call("/ctl/reset")
    await one_run(app)
    idle = await boxes.call("/ctl/hits")
    changed = max(1, int(args.records * 0.01))

    async def edited(edit: str, written: str) -> dict:
        """The requests of the run after ``changed`` records were edited (``edit``: the
        sandbox control), each written to the other side (``written``)."""
        await boxes.call(f"/ctl/{edit}", n=changed)
        await boxes.call("/ctl/advance", s=600)
        await boxes.call("/ctl/reset")
        result = await one_run(app)
        assert counted(result, written) == changed, [s.counts for s in result.steps]
        hits = await boxes.call("/ctl/hits")
        await boxes.call("/ctl/advance", s=600)
        await one_run(app)             # reads back what that run wrote
        await boxes.call("/ctl/advance", s=600)
        return hits
    incremental = await edited("edit", "updated_right")
    # the same share of the CRM's companies edited: each goes to Unleashed
    crm_side = await edited("crm_edit", "updated_left")
    n_idle = {k: len(v) for k, v in idle.items()}
    out["idle"] = {k: _by_kind(v) for k, v in idle.items()}
    out["idle_total"] = n_idle
    # the change listings: Unleashed's customers and contacts (both list customers by
    # modifiedSince), the CRM's companies and contacts (a LastUpdatedTimestamp filter)
    listings = [sum(1 for m, p, q in idle["ul"] if p == "/Customers/1" and "modifiedSince"
                    in q and "orderBy" in q),
                sum(1 for m, p, q in idle["crm"] if p == "/Companies" and
                    "LastUpdatedTimestamp" in q),
                sum(1 for m, p, q in idle["crm"] if p == "/Contacts" and
                    "LastUpdatedTimestamp" in q)]
    out["idle_listings"] = f"{max(listings[0] / 2, listings[1], listings[2]):g}"
    out["per_changed"] = (sum(len(v) for v in incremental.values())
                          - sum(n_idle.values())) / changed
    out["changed"] = changed
    out["per_changed_crm"] = (sum(len(v) for v in crm_side.values())
                              - sum(n_idle.values())) / changed
    out["incremental"] = {k: _by_kind(v) for k, v in incremental.items()}
    out["crm_side"] = {k: _by_kind(v) for k, v in crm_side.items()}


async def quota_and_idle(boxes: Sandboxes, args, out: dict) -> None:
    """The share of a time-scaled quota an initial load uses; many idle integrations."""
    from daemon.app import App
    from daemon.config import load
    # --- a time-scaled quota (Prospect's 1,200 per 10 minutes, shrunk to a benchmark:
    # args.quota_limit per args.window seconds), enforced by the sandbox ---------------
    limit = args.quota_limit
    urls = await boxes.new(ul=args.quota_records, fixed=0, limit=limit,
                           window=args.window)
    tmp = Path(tempfile.mkdtemp())
    app = await App(load(config(tmp, urls, crm_quota=(limit, args.window)))
                    ).start(sandboxes=False)
    try:
        await boxes.call("/ctl/reset")
        wall0 = time.perf_counter()
        await one_run(app)
        wall = time.perf_counter() - wall0
        made = len((await boxes.call("/ctl/hits"))["crm"])
        rejected = (await boxes.call("/ctl/counts"))["rejected"]
    finally:
        await app.close()
    out["quota"] = {"made": made, "seconds": wall, "limit": limit, "window": args.window,
                    "share": made / (limit * (1 + wall / args.window)),
                    "rejected": rejected}

    # --- many idle integrations in one daemon ------------------------------------------
    if args.idle:
        urls = await boxes.new(ul=20)
        out["idle_daemon"] = child("_idle", str(args.idle), json.dumps(urls),
                                   args.idle_every, boxes.base)


def _by_kind(rows: list) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for method, path, _ in rows:
        path = "/".join("{id}" if len(p) > 20 or p.isdigit() and len(p) > 2 else p
                        for p in path.split("/"))
        path = re.sub(r"\(\d+\)$", "({id})", path)          # OData keys: /Companies(12)
        kinds[f"{method} {path}"] = kinds.get(f"{method} {path}", 0) + 1
    return kinds


async def idle_daemon(n: int, urls: dict[str, str], every: str, ctl: str) -> dict:
    """``n`` integrations in one daemon (the status page off: a port of its own per bench is
    not worth it): each synced and what it wrote read back; then the sandboxes' clock moved
    on (``ctl``: the sandboxes' control) and each run once more, so that the cursors are past
    the overlap window (``overlap_seconds``) of the records just synced, as they are for an
    integration that has been idle a while; then the scheduler left to run them on their
    schedule (``every``) for one period and a minute, so each runs about once. Resident
    memory at the end and the CPU share of that stretch."""
    import aiohttp

    from daemon import heap
    from daemon.durations import seconds as duration
    from daemon.service import Service
    heap.freeze_startup()                   # as the console script does
    tmp = Path(tempfile.mkdtemp())
    path = config(tmp, urls, n, every=every)
    seconds = duration(every) + 60
    svc = Service(path, sandboxes=False, activity=False, configure_logging=False)
    await svc.start(paused=True)

    async def advance() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{ctl}/ctl/advance", params={"s": "600"}) as r:
                r.raise_for_status()
    for i in range(n):
        await svc.trigger(f"i{i}")                # the first sync of each
    for i in range(n):
        await svc.trigger(f"i{i}")                # what the first sync wrote, read back
    await advance()
    for i in range(n):
        await svc.trigger(f"i{i}")                # the overlap window read once more
    await advance()
    import gc
    gc.collect()
    svc.scheduler.resume()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    rss = rss_mib()
    await svc.stop()
    return {"integrations": n, "rss_mib": rss, "cpu_share": cpu / wall, "seconds": wall,
            "every": every}


# --- the table ----------------------------------------------------------------------------------
def engine_rows(out: dict) -> list[tuple[str, str, str]]:
    e_small, e_big = out["engine"]
    rows = [
        ("engine alone, CPU per record at {:,} ÷ at {:,}".format(e_big["n"], e_small["n"]),
         f"{e_big['cpu_us']:.0f} µs ÷ {e_small['cpu_us']:.0f} µs = "
         f"{e_big['cpu_us'] / e_small['cpu_us']:.2f}×", "≤ 1.2×"),
        ("engine alone, peak RSS at {:,} ÷ at {:,} (systems' data excluded)".format(
            e_big["n"], e_small["n"]),
         f"{e_big['engine_mib']:.0f} MiB ÷ {e_small['engine_mib']:.0f} MiB = "
         f"{e_big['engine_mib'] / e_small['engine_mib']:.2f}×", "≤ 1.3×"),
    ]
    m_small, m_big = out["matching"]
    rows += [
        ("engine alone, a first sync that links every record: CPU per record, peak RSS, "
         "{:,} ÷ {:,}".format(m_big["n"], m_small["n"]),
         f"{m_big['cpu_us']:.0f} µs ÷ {m_small['cpu_us']:.0f} µs = "
         f"{m_big['cpu_us'] / m_small['cpu_us']:.2f}×; {m_big['engine_mib']:.0f} MiB ÷ "
         f"{m_small['engine_mib']:.0f} MiB = {m_big['engine_mib'] / m_small['engine_mib']:.2f}×",
         "≤ 1.2×; ≤ 1.3×"),
    ]
    return rows


def creates_bound(out: dict) -> list[tuple[str, str, str]]:
    """What bounds the creates ratio, from figures of the same run: accord runs on one core
    (its CPU is its wall time in a first sync), and a create costs it at least what the bare
    loop's client spends on one (sending it, reading the answer) plus what the engine alone
    spends on a record (with in-memory systems: no HTTP at all). Against the bare loop's
    wall time a create, that sum caps the ratio, whatever else is made cheaper."""
    if "engine" not in out:
        return []
    client, engine = out["creates_bare_cpu_us"], out["engine"][0]["cpu_us"]
    bare = 1e6 / out["creates_bare_per_s"]
    return [("what bounds it: accord's CPU a create; bare client + engine alone, against "
             "the bare loop's wall a create",
             f"{out['creates_cpu_us']:.0f} µs; {client:.0f} + {engine:.0f} = "
             f"{client + engine:.0f} µs against {bare:.0f} µs: the ratio reaches "
             f"{bare / (client + engine):.2f} at most", "(the row above's ceiling)")]


def read_cost(out: dict) -> tuple[str, str, str]:
    """A full read's CPU a record in accord, and in it the connectors' alone (the same
    listings read and parsed into records, no engine), against the bare loop's client
    reading and parsing the same pages: to weigh against the wall time a record the goal
    leaves accord (accord runs on one core: its wall time a record is at least its CPU)."""
    bare = 1e6 / out["full_read_bare_per_s"]           # the bare loop's wall a record, µs
    return ("what it costs: accord's CPU a record (the connectors' alone, reading and "
            "parsing the same listings); the bare client's, reading and parsing the same "
            "pages, against the bare loop's wall a record",
            f"{out['full_read_cpu_us']:.1f} µs ({out['full_read_connectors_cpu_us']:.1f} µs); "
            f"{out['full_read_parsed_cpu_us']:.1f} µs against {bare:.1f} µs",
            f"(0.6 leaves accord {bare / 0.6:.1f} µs)")


def spread(ratios: list[float]) -> str:
    """The rounds behind a median ratio."""
    if len(ratios) < 2:
        return ""
    return f" (median of {len(ratios)} rounds: " + ", ".join(f"{r:.2f}" for r in ratios) + ")"


def table(out: dict, args) -> str:
    rows: list[tuple[str, str, str]] = []
    if "engine" in out:
        rows += engine_rows(out)
    if "creates_per_s" in out:
        sb, ac = out["cpu_split"]
        q = out["quota"]
        d = out.get("idle_daemon")
        rows += [
            (f"first-sync creates ÷ bare aiohttp loop (concurrency {args.concurrency})",
             f"{out['creates_per_s']:,.0f}/s ÷ {out['creates_bare_per_s']:,.0f}/s = "
             f"{out['creates_ratio']:.2f}{spread(out['creates_rounds'])}", "≥ 0.5"),
            *creates_bound(out),
            ("full read of a synced pair ÷ the same requests made bare",
             f"{out['full_read_per_s']:,.0f}/s ÷ {out['full_read_bare_per_s']:,.0f}/s = "
             f"{out['full_read_ratio']:.2f}{spread(out['full_read_rounds'])} (bare and "
             f"also parsing the JSON: {out['full_read_parsed_per_s']:,.0f}/s, "
             f"{out['full_read_per_s'] / out['full_read_parsed_per_s']:.2f})", "≥ 0.6"),
            read_cost(out),
            (f"sandbox CPU ÷ accord CPU, first sync of {args.records:,} customers",
             f"{sb:.1f} s ÷ {ac:.1f} s = {sb / ac:.2f}", "≤ 0.5"),
            (f"requests per changed record above idle ({out['changed']} of {args.records:,} "
             "edited): in Unleashed; in the CRM",
             f"{out['per_changed']:.2f} (floor 1: the CRM write); {out['per_changed_crm']:.2f} "
             "(floor 1 + 1/10 at 1%: no partial update in Unleashed, so each customer is read "
             "before it is written, from the listing, 1,000 a page; the reference lists "
             "only when an edited value is checked against one)",
             "≤ 1.1"),
            ("requests of an idle run: listings per entity per side; all, per side",
             f"{out['idle_listings']}; " + ", ".join(
                 f"{k} {v}" for k, v in out["idle_total"].items()),
             "1 per entity per side"),
            (f"quota used in an initial load ({q['limit']} per {q['window']:g} s, "
             "time-scaled), 429s",
             f"{q['share']:.0%} ({q['made']} requests in {q['seconds']:.1f} s), "
             f"{q['rejected']} × 429", "≥ 90%, 0"),
        ]
        if d:
            rows.append((f"{d['integrations']} idle integrations in one daemon (every "
                         f"{d['every']}): RSS, CPU share",
                         f"{d['rss_mib']:.0f} MiB, {d['cpu_share']:.1%} of one core "
                         f"(over {d['seconds']:.0f} s)", "≤ 300 MiB, ≤ 2%"))
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'figure':<{width}} | measured | goal |", f"|{'-' * (width + 2)}|---|---|"]
    lines += [f"| {a:<{width}} | {b} | {c} |" for a, b, c in rows]
    if "idle" in out:
        lines.append("")
        lines.append("idle run by request: " + "; ".join(
            f"{k}: " + ", ".join(f"{r} x{n}" for r, n in sorted(v.items()))
            for k, v in out["idle"].items()))
        for key, what in (("incremental", "edits in Unleashed"), ("crm_side", "edits in the CRM")):
            lines.append(f"run after {what}, by request: " + "; ".join(
                f"{k}: " + ", ".join(f"{r} x{n}" for r, n in sorted(v.items()))
                for k, v in out[key].items()))
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        quiet()
        cmd = sys.argv[1]
        if cmd == "_engine":
            print(json.dumps(asyncio.run(engine_alone(int(sys.argv[2]),
                                                      matched="matched" in sys.argv[3:]))))
        elif cmd == "_serve":
            asyncio.run(serve())
        elif cmd == "_idle":
            print(json.dumps(asyncio.run(idle_daemon(int(sys.argv[2]), json.loads(sys.argv[3]),
                                                     sys.argv[4], sys.argv[5]))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=10_000, help="engine: the small size")
    p.add_argument("--big", type=int, default=1_000_000, help="engine: the big size")
    p.add_argument("--records", type=int, default=5_000, help="Unleashed customers")
    p.add_argument("--concurrency", type=int, default=32, help="the bare loop's")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of the first-sync and full-read figures (the median is given)")
    p.add_argument("--quota-limit", type=int, default=120,
                   help="the time-scaled quota: this many requests ...")
    p.add_argument("--window", type=float, default=3.0, help="... per this many seconds")
    p.add_argument("--quota-records", type=int, default=300)
    p.add_argument("--idle", type=int, default=100,
                   help="idle integrations in one daemon (0: leave this figure out)")
    p.add_argument("--idle-every", default="15m",
                   help="their schedule (the default one); measured over it and a minute")
    p.add_argument("--engine-only", action="store_true")
    p.add_argument("--sandboxes-only", action="store_true",
                   help="leave out the engine-alone figures")
    args = p.parse_args()
    quiet()
    print(f"accord performance: load {os.getloadavg()[0]:.2f} "
          f"({os.cpu_count()} cores) at the start", flush=True)
    out: dict[str, Any] = {}
    if not args.sandboxes_only:
        out["engine"] = engine_pair(args.small, args.big)
        out["matching"] = engine_pair(args.small, args.big, matched=True)
    if not args.engine_only:
        asyncio.run(through_sandboxes(args, out))
    print(table(out, args))
    print(f"load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
