"""Benchmark: the first sync of Sage BOB 50 -> Sage CRM with most third parties already in the
CRM under differently written VAT numbers (issue 12: 20,000 third parties, 15,000 of them
already there) must make zero duplicates.

    python -m bench.bob_bench                          # 20,000 third parties, 15,000 existing
    python -m bench.bob_bench --records 2000 --existing 1500

A generated BOB database file (every third party a customer with a VAT number) and the Sage
CRM sandbox (on loopback, in this process) are made; the CRM gets ``--existing`` companies
whose VAT numbers are the BOB ones written another way ("BE 0xxx.xxx.xxx", "0xxx xxx xxx",
"be0xxx...", ...), half of them with BobSync ticked. Then the preset's first run (it stores its
plan: BB-3), the approval (BB-9) and the first sync. Printed: seconds of each, records read,
matched, created each way, requests to the CRM, and the duplicates found afterwards (CRM
companies sharing a normalised VAT number, and BOB third parties likewise): both must be 0.
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

from connectors.bob50.sandbox import Bob50Sandbox, spell, vat
from connectors.sage_crm.sandbox import PASSWORD, USER, SageCrmSandbox
from connectors.vat import significant

CONFIG = """
[daemon]
database = "sqlite:///{tmp}/state.db"
log_level = "error"

[systems.bob]
type = "bob50"
url = "{bob_url}"
state_path = "{tmp}/bob-ids.sqlite"

[systems.crm]
type = "sage_crm"
base_url = "{crm_url}"
username = "{user}"
password = "{password}"

[integrations.bb]
left = "bob"
right = "crm"
preset = "bob50_sage_crm"
"""


def other_spelling(written: str, digits: str, i: int) -> str:
    for k in range(6):
        candidate = spell(digits, i + k)
        if candidate != written:
            return candidate
    raise AssertionError("unreachable")


async def main(records: int, existing: int) -> dict:
    from daemon.app import App
    from daemon.config import load
    from daemon.engine.runner import RunOptions, run
    from daemon.store import gates

    from daemon import logging as accord_logging
    accord_logging.configure("json", "error", stream="stderr")
    tmp = Path(tempfile.mkdtemp(prefix="accord-bob-bench-"))
    bob = Bob50Sandbox(seed=7, path=tmp / "bob50.sqlite", contacts_per_party=0,
                       no_vat_share=0.0, supplier_share=0.0)
    await bob.start()
    t0 = time.monotonic()
    bob.seed(records, bob.rng)
    crm = SageCrmSandbox()
    for i, row in enumerate(bob.rows("third_parties")[:existing]):
        digits = vat(int(row["TP_ID"][1:]) - 1)
        crm.add("Company", comp_name=row["NAME"], comp_type="Customer" if i % 3 else "Prospect",
                comp_vatnumber=other_spelling(row["VAT_NUMBER"], digits, i),
                comp_bobsync="Y" if i % 2 else None)
    await crm.start()
    seeded = time.monotonic() - t0
    (tmp / "accord.toml").write_text(CONFIG.format(tmp=tmp, bob_url=bob.url, crm_url=crm.url,
                                                   user=USER, password=PASSWORD))
    app = await App(load(tmp / "accord.toml")).start(sandboxes=False, activity=False)
    integ = app.integration("bb")
    try:
        t = time.monotonic()
        first = await run(app.db, integ, RunOptions(trigger="bench"))
        plan_s = time.monotonic() - t
        assert first.status == "waiting", first.message
        async with app.db.begin() as conn:
            await gates.approve(conn, "bb")
        crm.reset_hits()
        t = time.monotonic()
        result = await run(app.db, integ, RunOptions(trigger="bench"))
        sync_s = time.monotonic() - t
        counts = Counter()
        for s in result.steps:
            counts.update(s.counts)
    finally:
        await app.close()
    crm_vats = Counter(significant(c["comp_vatnumber"]) for c in crm.live()
                       if c.get("comp_vatnumber"))
    bob_vats = Counter(significant(r["VAT_NUMBER"]) for r in bob.rows("third_parties")
                       if r["VAT_NUMBER"])
    out = {"records": records, "existing": existing, "status": result.status,
           "seed_seconds": round(seeded, 1), "plan_seconds": round(plan_s, 1),
           "sync_seconds": round(sync_s, 1), "read_left": counts["read_left"],
           "read_right": counts["read_right"], "matched": counts["matched"],
           "created_right": counts["created_right"], "created_left": counts["created_left"],
           "updated_right": counts["updated_right"], "review": counts["review"],
           "crm_requests": len(crm.hits), "crm_companies": len(crm.live()),
           "bob_third_parties": bob.count("third_parties"),
           "crm_duplicates": sum(n - 1 for n in crm_vats.values() if n > 1),
           "bob_duplicates": sum(n - 1 for n in bob_vats.values() if n > 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    await crm.stop()
    await bob.stop()
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--existing", type=int, default=15_000)
    a = p.parse_args()
    figures = asyncio.run(main(a.records, a.existing))
    for k, v in figures.items():
        print(f"{k:>18}: {v}")
    raise SystemExit(0 if figures["crm_duplicates"] == figures["bob_duplicates"] == 0
                     and figures["status"] == "ok" else 1)
