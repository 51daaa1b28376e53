"""Benchmark: an Ajera firm catching up 1,600 projects into Vantagepoint CRM in batches (AJ-4).

    python -m bench.ajera_bench                          # 1,600 projects, batches of 500
    python -m bench.ajera_bench --projects 300 --batch 100   # a smaller one

Both sandboxes run in this process on loopback; the ``ajera_vantagepoint`` preset syncs them
run after run, as the daemon's automatic continuation does, until the projects flow says
"Sync Completed". Each project is saved a second after the one before (as people save them),
and has a time entry. Printed per run: seconds, the projects flow's counts and its message,
the closed-projects flow's status, and the requests each system answered; then one idle run,
and the integration log as ``accord status`` shows it.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import structlog

from connectors.ajera.sandbox import AjeraSandbox
from connectors.sandbox import Clock
from connectors.vantagepoint.sandbox import VantagepointSandbox
from daemon.app import App
from daemon.config import load
from daemon.engine.runner import RunOptions, run
from daemon.status import gather

CONFIG = """
[daemon]
database = "sqlite:///{tmp}/state.db"
log_level = "error"

[systems.ajera]
type = "ajera"
base_url = "{aj_url}"
api_id = "{aj_id}"
username = "sandbox"
password = "sandbox-password"
requests_per_second = 10000

[systems.crm]
type = "vantagepoint"
base_url = "{vp_url}"
username = "sandbox"
password = "sandbox-password"
database = "Vantagepoint"
client_id = "sandbox-client"
client_secret = "sandbox-secret"
requests_per_second = 10000

[integrations.aj]
left = "ajera"
right = "crm"
preset = "ajera_vantagepoint"

[integrations.aj.options]
sync_closed_projects = true

[[integrations.aj.flows]]
name = "projects"
batch_size = {batch}
"""


async def main(projects: int, batch: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    clock = Clock(datetime(2024, 6, 3, 13, 0, tzinfo=timezone.utc))
    aj, vp = AjeraSandbox(clock=clock), VantagepointSandbox(clock=clock)
    for i in range(projects):
        clock.advance(1)
        p = aj.add("Projects", Description=f"Project {i + 1:05d}", Status="Active",
                   SyncToCRM=True)
        aj.add_transaction(p["ProjectKey"], "Time", 95.0 * (1 + i % 8))
    clock.advance(60)
    await aj.start(0)
    await vp.start(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(CONFIG.format(tmp=tmp, aj_url=aj.url, aj_id=aj.id_blob, vp_url=vp.url,
                                      batch=batch))
        app = await App(load(path)).start(sandboxes=False, activity=False)
        integ = app.integration("aj")
        print(f"{projects:,} Ajera projects waiting, batches of {batch:,}")
        print(f"{'run':>4} {'seconds':>8} {'read':>6} {'created':>8} {'ajera req':>10} "
              f"{'crm req':>8}  closed_projects / projects message")
        total = time.perf_counter()
        n = 0
        while True:
            n += 1
            aj.reset_hits()
            vp.reset_hits()
            started = time.perf_counter()
            result = await run(app.db, integ, RunOptions(trigger="schedule"))
            seconds = time.perf_counter() - started
            step = next(s for s in result.steps if s.flow == "projects")
            closed = next(s for s in result.steps if s.flow == "closed_projects")
            print(f"{n:>4} {seconds:>8.2f} {step.counts['read_left']:>6} "
                  f"{step.counts['created_right']:>8} {len(aj.hits):>10} {len(vp.hits):>8}  "
                  f"{closed.status} / {step.message}")
            if result.status not in ("ok", "errors") or not result.more or n > 100:
                break
        print(f"catch-up: {n} runs, {time.perf_counter() - total:.2f} s, "
              f"{len(vp.data['project']):,} CRM projects")
        clock.advance(600)
        aj.reset_hits()
        vp.reset_hits()
        started = time.perf_counter()
        result = await run(app.db, integ, RunOptions(trigger="schedule"))
        print(f"idle run: {time.perf_counter() - started:.2f} s, {len(aj.hits)} Ajera requests, "
              f"{len(vp.hits)} CRM requests, status {result.status}")
        doc = await gather(app.cfg, app.db)
        print("integration log (newest first):")
        for entry in doc["integrations"]["aj"]["log"][:n + 1]:
            msg = next((s["message"] for s in entry["steps"]
                        if s["flow"] == "projects" and s["message"]), "")
            print(f"  #{entry['run']} {entry['status']}: {msg}")
        await app.close()
    await aj.stop()
    await vp.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=1600)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.projects, args.batch))
