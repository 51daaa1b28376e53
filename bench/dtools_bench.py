"""Benchmark: D-Tools SI -> ConnectWise Manage, a first sync of published projects, then
the same projects delivered again (an unacknowledged queue), printing figures (not a test).

    python -m bench.dtools_bench                                  # 500 projects, 20 items, 4 locations
    python -m bench.dtools_bench --projects 50 --items 20 --locations 4

Both vendors are the bundled sandboxes on loopback (in this process), the state a SQLite
file. It prints, for each run: SI projects and derived records per second, the requests
sent per Manage record created (both systems' requests, then Manage's alone), and the peak
resident memory of the process (sandboxes included) before and after the run.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import tempfile
import time
from pathlib import Path

import structlog

from daemon.engine.runner import RunOptions, run


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(projects: int, items: int, locations: int) -> None:
    from connectors.connectwise.sandbox import ConnectWiseSandbox
    from connectors.dtools_si.sandbox import DToolsSiSandbox
    from daemon.app import App
    from daemon.config import load

    si = DToolsSiSandbox(seed=1, records=projects, items=items, locations=locations)
    cw = ConnectWiseSandbox(seed=2, records=10, rate_limit=10**9)
    await si.start()
    await cw.start()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "bench.toml").write_text(f"""
[daemon]
database = "sqlite:///{tmp / 'state.db'}"
log_level = "warning"
[systems.si]
type = "dtools_si"
api_key = "sandbox-key"
base_url = "{si.url}"
requests_per_window = 1000000
[systems.cw]
type = "connectwise"
company_id = "sandbox"
public_key = "sandbox-public"
private_key = "sandbox-private"
client_id = "00000000-0000-0000-0000-00000000c11e"
base_url = "{cw.url}"
requests_per_window = 1000000
[integrations.dt]
left = "si"
right = "cw"
preset = "dtools_connectwise"
""")
    app = await App(load(str(tmp / "bench.toml"))).start(sandboxes=False, activity=False)
    integ = app.integration("dt")
    print(f"{projects} published projects x {items} items over {locations} locations")
    try:
        for label in ("first sync", "delivered again"):
            if label == "delivered again":
                for m in si.messages:
                    m["ImportedOn"] = None
            si.reset_hits()
            cw.reset_hits()
            before = peak_mib()
            t0 = time.perf_counter()
            result = await run(app.db, integ, RunOptions(trigger="bench"))
            secs = time.perf_counter() - t0
            derived = sum(s.counts.get("read_left", 0) for s in result.steps)
            staged = sum(sum(v for k, v in s.counts.items()
                             if k in ("unchanged", "filtered", "matched", "created_right",
                                      "updated_right", "deleted", "not_created"))
                         for s in result.steps)
            created = sum(s.counts.get("created_right", 0) for s in result.steps)
            requests = len(si.hits) + len(cw.hits)
            print(f"{label}: {result.status} in {secs:.2f} s; {projects / secs:.1f} SI "
                  f"projects/s, {staged / secs:.0f} records decided/s ({staged} records, "
                  f"{derived} project reads over {len(result.steps)} flows)")
            if created:
                print(f"  {created} Manage records created; "
                      f"{requests / created:.2f} requests per created record "
                      f"({len(cw.hits) / created:.2f} to Manage, "
                      f"{len(si.hits) / created:.2f} to SI)")
            else:
                print(f"  nothing created; {requests} requests, {cw.writes()} writes to "
                      f"Manage")
            print(f"  peak memory {before:.0f} MiB -> {peak_mib():.0f} MiB "
                  "(the process, both sandboxes included)")
    finally:
        await app.close()
        await si.stop()
        await cw.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--projects", type=int, default=500)
    p.add_argument("--items", type=int, default=20)
    p.add_argument("--locations", type=int, default=4)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main(a.projects, a.items, a.locations))
