"""Benchmark: Sage 50 FR -> Sage Sales Management, a first sync and a 1 % incremental one.

    python -m bench.sage_bench                       # 10,000 customers, 20,000 contacts,
                                                     # 5,000 products, 50,000 invoices
    python -m bench.sage_bench --customers 1000 --invoices 5000    # a smaller one

A generated Sage 50 database file (the default layout) is synced into the Sales Management
sandbox, which serves from a process of its own; then 1 % of every Sage 50 table is edited
and an incremental run follows. Each run is a fresh process of its own (the state is the
SQLite file they share), so that the peak memory printed is that run's alone. The runs follow
each other within seconds here, where the service runs them 15 minutes apart: the flows'
overlap window (60 s: what a run reads again before its cursor, for clock skew and late
commits) is set to 0 here, or each run would read again all that the previous one wrote. Printed per
run: seconds, records read per second, records written per second, requests to Sales
Management per changed record, and the peak resident memory of the syncing process.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import random
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CONFIG = """
[daemon]
database = "sqlite:///{tmp}/state.db"
log_level = "error"

[systems.sage50]
type = "sage50fr"
url = "{sage_url}"
state_path = "{tmp}/sage50-ids.sqlite"

[systems.ssm]
type = "sage_sales_management"
base_url = "{ssm_url}"
public_key = "sandbox-public"
private_key = "sandbox-private"
page_size = 500
requests_per_window = 1000000000

[integrations.bench]
left = "sage50"
right = "ssm"
preset = "sage50fr_sales_management"
""" + "".join(f"""
[[integrations.bench.flows]]
name = "{flow}"
overlap_seconds = 0
""" for flow in ("companies", "contacts", "products", "invoices"))


def _serve_ssm(port_out) -> None:
    """The Sales Management sandbox, in a process of its own (its records are not ours)."""
    from connectors.sage_sales_management.sandbox import SageSalesManagementSandbox

    async def main():
        sb = SageSalesManagementSandbox(requests_per_minute=10**9, max_page_size=500)
        port_out.send(await sb.start())
        await asyncio.Event().wait()
    logging.disable(logging.CRITICAL)
    asyncio.run(main())


def _requests(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_sandbox/stats") as resp:
        return json.loads(resp.read())["requests"]


async def _one_run(config: str) -> dict:
    """One sync in this process; its figures as a dict."""
    import structlog

    from daemon.app import App
    from daemon.config import load
    from daemon.engine.runner import RunOptions, run
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    app = await App(load(config)).start(sandboxes=False)
    try:
        t0 = time.perf_counter()
        result = await run(app.db, app.integration("bench"), RunOptions(trigger="bench"))
        seconds = time.perf_counter() - t0
    finally:
        await app.close()
    counts: dict[str, int] = {}
    for step in result.steps:
        for k, v in step.counts.items():
            counts[k] = counts.get(k, 0) + v
    return {"seconds": seconds, "status": result.status, "counts": counts,
            "steps": {step.flow: dict(step.counts) for step in result.steps},
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _edit_one_percent(sage, share: float, rng: random.Random) -> int:
    """Edit ``share`` of every table, as Sage 50 users would; the number of records edited."""
    db = sage._db()
    edited = 0
    for entity, table, key, column, value in (
            ("third_parties", "THIRD_PARTY", "ACCOUNT_CODE", "PHONE", lambda: "01 23 45 67 89"),
            ("contacts", "CONTACT", "CONTACT_ID", "FUNCTION", lambda: "Directeur"),
            ("items", "ITEM", "ITEM_CODE", "SALE_PRICE", lambda: round(rng.uniform(1, 99), 2)),
            ("invoices", "INVOICE", "INVOICE_ID", "STATUS", lambda: "Réglée")):
        keys = [r[0] for r in db.execute(f"SELECT {key} FROM {table}")]
        for k in rng.sample(keys, max(1, int(len(keys) * share))):
            sage.update(entity, k, **{column: value()})
            edited += 1
    return edited


def _spread_modified(sage, rng: random.Random) -> None:
    """Generated rows share one modification time; real ones are spread over past weeks."""
    from datetime import timedelta
    db = sage._db()
    now = sage.clock.now()
    db.execute("BEGIN")
    for table, key in (("THIRD_PARTY", "ACCOUNT_CODE"), ("CONTACT", "CONTACT_ID"),
                       ("ITEM", "ITEM_CODE"), ("INVOICE", "INVOICE_ID")):
        keys = [r[0] for r in db.execute(f"SELECT {key} FROM {table}")]
        db.executemany(f"UPDATE {table} SET MODIFIED_AT = ? WHERE {key} = ?",
                       [(sage.stamp(now - timedelta(seconds=rng.randrange(3600, 60 * 86400))),
                         k) for k in keys])
    db.execute("COMMIT")


def report(label: str, figures: dict, requests: int, changed: int) -> None:
    c, s = figures["counts"], figures["seconds"]
    read = c.get("read_left", 0) + c.get("read_right", 0)
    written = sum(c.get(k, 0) for k in ("created_left", "created_right", "updated_left",
                                        "updated_right", "deleted", "marked"))
    print(f"{label:>22}: {s:7.1f} s  {read / s:8.0f} records read/s  {written / s:7.0f} "
          f"written/s ({written} written)  {requests / max(changed, 1):5.2f} requests per "
          f"changed record ({requests} requests)  peak RSS {figures['peak_mib']:5.0f} MiB  "
          f"{figures['status']}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=10_000, help="third parties (70%% customers)")
    p.add_argument("--contacts", type=int, default=2, help="contacts per third party")
    p.add_argument("--products", type=int, default=5_000)
    p.add_argument("--invoices", type=int, default=50_000)
    p.add_argument("--changed", type=float, default=0.01)
    p.add_argument("--verbose", action="store_true", help="also print each flow's counts")
    p.add_argument("--run", help=argparse.SUPPRESS)       # internal: one sync on this config
    args = p.parse_args()
    if args.run:
        print(json.dumps(asyncio.run(_one_run(args.run))))
        return

    from connectors.sage50fr.sandbox import Sage50FrSandbox
    tmp = Path(tempfile.mkdtemp(prefix="accord-bench-"))
    sage = Sage50FrSandbox(seed=1, path=tmp / "sage50.sqlite", contacts_per_account=args.contacts,
                           products=args.products, invoices=args.invoices)
    t0 = time.perf_counter()
    url = asyncio.run(sage.start())
    sage.seed(args.customers, sage.rng)
    _spread_modified(sage, random.Random(1))
    sizes = {e: sage.count(e) for e in ("third_parties", "contacts", "items", "invoices")}
    print(f"accord benchmark, Sage 50 FR -> Sage Sales Management: generated {sizes} in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)

    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=_serve_ssm, args=(child,), daemon=True)
    server.start()
    ssm_url = parent.recv()
    config = tmp / "bench.toml"
    config.write_text(CONFIG.format(tmp=tmp, sage_url=url, ssm_url=ssm_url))

    def one(label: str, changed: int | None) -> None:
        before = _requests(ssm_url)
        out = subprocess.run([sys.executable, "-m", "bench.sage_bench", "--run", str(config)],
                             check=True, capture_output=True, text=True)
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        requests = _requests(ssm_url) - before
        c = figures["counts"]
        written = sum(c.get(k, 0) for k in ("created_right", "updated_right", "deleted",
                                            "marked", "created_left", "updated_left"))
        report(label, figures, requests, changed if changed is not None else written)
        if args.verbose:
            for flow, counts in figures["steps"].items():
                print(f"{'':>24}{flow}: {counts}")

    try:
        one("first sync", None)
        # the next run reads back what the first one created in Sales Management (its
        # listing was empty, so it had no cursor there yet) and finds it unchanged
        one("read-back", 0)
        edited = _edit_one_percent(sage, args.changed, random.Random(2))
        one(f"incremental ({edited} changed)", edited)
        one("idle", 0)
    finally:
        server.terminate()
        asyncio.run(sage.stop())


if __name__ == "__main__":
    main()
