"""Benchmark: a first sync and an incremental one, printing figures (not a test).

    python -m bench.sync_bench --records 10000            # Unleashed -> Prospect sandboxes
    python -m bench.sync_bench --records 50000 --memory   # the engine alone, in-memory systems

For each run it prints records per second, requests per changed record (sandboxes) and the
peak resident memory of the process, so that "memory does not grow with the number of
records" can be checked by running it at two sizes.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import random
import resource
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog

from daemon.engine.runner import RunOptions, run


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def sandboxes(n: int, changed: float) -> None:
    from connectors.prospect_crm.sandbox import ProspectSandbox
    from connectors.unleashed.sandbox import UnleashedSandbox
    from daemon.app import App
    from daemon.config import load

    ul = UnleashedSandbox(seed=1, records=n, rate_limit_per_minute=10**9)
    crm = ProspectSandbox(seed=2, records=0, rate_limit=10**9)
    await ul.start()
    await crm.start()
    tmp = Path(tempfile.mkdtemp())
    cfg_path = tmp / "bench.toml"
    cfg_path.write_text(f"""
[daemon]
database = "sqlite:///{tmp}/state.db"
[systems.ul]
type = "unleashed"
base_url = "{ul.url}"
api_id = "sandbox"
api_key = "sandbox-key"
page_size = 1000
[systems.crm]
type = "prospect_crm"
base_url = "{crm.url}"
token = "sandbox-token"
page_size = 500
requests_per_window = 1000000000
[integrations.b]
left = "ul"
right = "crm"
preset = "unleashed_crm"
""")
    app = await App(load(cfg_path)).start(sandboxes=False)
    try:
        integ = app.integration("b")
        await measure("first sync", app.db, integ, (ul, crm))
        rng = random.Random(3)
        guids = rng.sample(sorted(ul.customers), max(1, int(n * changed)))
        for g in guids:
            ul.customers[g]["PhoneNumber"] = f"+64 9 {rng.randint(1000000, 9999999)}"
            ul.customers[g]["LastModifiedOn"] = ul.clock.now()
        ul.clock.advance(120)
        crm.clock.advance(120)
        await measure(f"incremental ({len(guids)} changed)", app.db, integ, (ul, crm),
                      changed=len(guids))
        ul.clock.advance(120)
        crm.clock.advance(120)
        await measure("idle", app.db, integ, (ul, crm), changed=0, breakdown=True)
    finally:
        await app.close()
        await ul.stop()
        await crm.stop()


async def measure(label: str, db, integ, boxes, changed: int | None = None,
                  breakdown: bool = False) -> None:
    for b in boxes:
        b.reset_hits()
    t0 = time.perf_counter()
    result = await run(db, integ, RunOptions(trigger="bench"))
    seconds = time.perf_counter() - t0
    counts: dict[str, int] = {}
    for s in result.steps:
        for k, v in s.counts.items():
            counts[k] = counts.get(k, 0) + v
    read = counts.get("read_left", 0) + counts.get("read_right", 0)
    written = sum(counts.get(k, 0) for k in ("created_left", "created_right", "updated_left",
                                             "updated_right"))
    requests = sum(len(b.hits) for b in boxes)
    per = requests / (changed if changed else max(written, 1)) if changed != 0 else 0
    print(f"{label:>28}: {seconds:7.2f} s  {read / seconds if seconds else 0:9.0f} records read/s"
          f"  {written:6d} written  {requests:6d} requests"
          + (f"  {per:5.2f} requests/changed record" if changed else "")
          + f"  peak RSS {peak_mib():6.0f} MiB  status {result.status}")
    if breakdown:
        for b in boxes:
            kinds: dict[str, int] = {}
            for h in b.hits:
                path = "/".join("{id}" if len(part) > 20 else part
                                for part in h.path.split("/"))
                kinds[f"{h.method} {path}"] = kinds.get(f"{h.method} {path}", 0) + 1
            print(f"{'':>30}{type(b).__name__}: " + ", ".join(
                f"{k} x{v}" for k, v in sorted(kinds.items())))


async def memory(n: int, changed: float) -> None:
    from connectors.memory import MemoryConnector
    from daemon.engine.rules import FlowRules
    from daemon.engine.runner import Integration, order_flows
    from daemon.store.db import create_schema, make_engine

    db = make_engine(f"sqlite:///{tempfile.mkdtemp()}/state.db")
    await create_schema(db)
    s = MemoryConnector.Settings(page_size=500)
    # the systems' clock: each run comes a schedule's period after the one before. Run back
    # to back on the wall clock, the records a run saw were still inside the clock-skew
    # window (``clock_skew_seconds``), which a cursor does not pass: the next run read them
    # all again, and the incremental and idle figures measured that
    later = [timedelta(0)]

    def clock() -> datetime:
        return datetime.now(timezone.utc) + later[0]
    L, R = MemoryConnector("left", s, clock=clock), MemoryConnector("right", s, clock=clock)
    for i in range(n):
        L.put("items", {"key": f"k{i}", "name": f"name {i}", "phone": str(i)})
    rules = FlowRules.model_validate(dict(
        name="items", left_entity="items", right_entity="items", overlap_seconds=0,
        fields=[dict(left="key", right="code"), dict(left="name", right="title"),
                dict(left="phone", right="tel")], match=[dict(left="key", right="code")]))
    integ = Integration("m", order_flows([rules]), {"left": L, "right": R})
    for label in ("first sync", "incremental", "idle"):
        if label == "incremental":
            for rid in random.Random(1).sample(sorted(L.data["items"]), int(n * changed)):
                L.edit("items", rid, {"phone": "changed"})
        later[0] += timedelta(minutes=15)       # the edits were made during the period
        t0 = time.perf_counter()
        result = await run(db, integ, RunOptions(trigger="bench"))
        seconds = time.perf_counter() - t0
        c = result.steps[0].counts
        print(f"{label:>12}: {seconds:7.2f} s  {c['read_left'] + c['read_right']:7d} read  "
              f"{(c['read_left'] + c['read_right']) / seconds:9.0f} records read/s  "
              f"{c['created_right'] + c['updated_right']:6d} written  "
              f"peak RSS {peak_mib():6.0f} MiB")
    await db.dispose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=5000)
    p.add_argument("--changed", type=float, default=0.01)
    p.add_argument("--memory", action="store_true", help="in-memory systems: the engine alone")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    print(f"accord benchmark: {args.records} records, {args.changed:.0%} changed")
    asyncio.run((memory if args.memory else sandboxes)(args.records, args.changed))


if __name__ == "__main__":
    main()
