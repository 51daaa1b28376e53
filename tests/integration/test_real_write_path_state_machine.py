"""Guarantees 2 (no duplicates) and 3 (no lost update) on the real write path.

The in-memory state machine (tests/engine/test_guarantees_state_machine.py) cannot see what
HTTP does to a write. This one drives the real Unleashed and Prospect CRM connectors against
their sandboxes over loopback, with the Unleashed <-> Prospect preset's companies flow and a
real SQLite state, and injects the faults that broke the guarantees when measured:

- "stored, then 500": the CRM applies a create or update, then answers 500;
- "stored, then no answer before the timeout": it applies it and stalls past the client's
  timeout (0.5 s here);
- "answer without some fields": Unleashed and the CRM leave the phone out of their answers;
- "clock ahead": Unleashed records are stamped an hour ahead of its clock (a fast
  workstation), while its Date header stays honest.

After every quiescent sync: every Unleashed customer has exactly one CRM company and no CRM
company is there twice; every edit nobody contested arrived on the other side. The figures
(faults injected, duplicates and losses found: zero, or the test fails) are printed by
``test_real_write_path_figures``.
"""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile

from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from connectors.prospect_crm.sandbox import ProspectSandbox
from connectors.sandbox import Clock
from connectors.unleashed.sandbox import UnleashedSandbox
from daemon.app import App
from daemon.config import load
from daemon.engine.merge import same
from daemon.engine.runner import RunOptions, run
from daemon.store.tables import T

FIGURES: Counter = Counter()
PHONES = st.sampled_from(["01 23", "02 34", "03 45", "", "04 56"])
NAMES = st.sampled_from(["Alpha Ltd", "Beta Ltd", "Gamma Ltd", "Delta Ltd", "Omega Ltd"])
FAULTS = ["stored_then_500", "no_answer", "fields_left_out", "clock_ahead"]


def config(tmp: Path, ul: str, crm: str) -> str:
    return f"""
[daemon]
database = "sqlite:///{tmp / 'state.db'}"
log_format = "json"
log_level = "error"

[systems.unleashed]
type = "unleashed"
api_id = "sandbox"
api_key = "sandbox-key"
base_url = "{ul}"

[systems.prospect]
type = "prospect_crm"
token = "sandbox-token"
base_url = "{crm}"
timeout = 0.5

[integrations.ul]
left = "unleashed"
right = "prospect"
preset = "unleashed_crm"

[integrations.ul.options]
account_managers = false
addresses = false
"""


class RealWritePath(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp())
        self.clock = Clock(datetime(2024, 6, 3, 9, tzinfo=timezone.utc))
        self.ul = UnleashedSandbox(seed=1, records=4, clock=self.clock)
        self.crm = ProspectSandbox(seed=2, records=0, clock=self.clock)
        self.rng = random.Random(7)
        self.pending: dict[tuple[str, str, str], str] = {}
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        await self.ul.start(0)
        await self.crm.start(0)
        path = self.tmp / "config.toml"
        path.write_text(config(self.tmp, self.ul.url, self.crm.url))
        self.app = await App(load(str(path))).start(sandboxes=False, activity=False)

    def teardown(self) -> None:
        if hasattr(self, "loop"):
            self.crm.faults.clear()
            self.ul.faults.clear()
            self.loop.run_until_complete(self._stop())
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    async def _stop(self) -> None:
        await self.app.close()
        await self.ul.stop()
        await self.crm.stop()

    # --- users ---------------------------------------------------------------------------
    @rule()
    def ul_new_customer(self) -> None:
        before = set(self.ul.customers)
        self.ul.seed(1, self.rng)
        (guid,) = set(self.ul.customers) - before
        new = self.ul.customers[guid]
        new["CreatedOn"] = new["LastModifiedOn"] = self.ul._now()     # saved just now

    @rule(n=st.integers(0, 20), phone=PHONES, name=NAMES, which=st.sampled_from(["p", "n"]))
    def ul_edit(self, n, phone, name, which) -> None:
        guid = sorted(self.ul.customers)[n % len(self.ul.customers)]
        c = self.ul.customers[guid]
        if which == "n":
            if any(x["CustomerName"] == name for x in self.ul.customers.values()):
                return                        # real customers have distinct names
            c["CustomerName"] = name
            self.pending[("left", guid, "CustomerName")] = name
        else:
            c["PhoneNumber"] = phone
            self.pending[("left", guid, "PhoneNumber")] = phone
        c["LastModifiedOn"] = self.ul._now()

    @rule(n=st.integers(0, 20), phone=PHONES)
    def crm_edit(self, n, phone) -> None:
        live = sorted(k for k, v in self.crm.data["Companies"].items() if v["StatusFlag"] == "A")
        if not live:
            return
        key = live[n % len(live)]
        self.crm.modify("Companies", key, {"Telephone": phone})
        self.pending[("right", str(key), "Telephone")] = phone

    @rule(seconds=st.sampled_from([1, 30, 120]))
    def tick(self, seconds) -> None:
        self.clock.advance(seconds)

    # --- syncs with faults ---------------------------------------------------------------
    @rule(fault=st.sampled_from(FAULTS), n=st.integers(1, 3))
    def sync_with_fault(self, fault, n) -> None:
        FIGURES[f"faults: {fault}"] += n
        if fault == "stored_then_500":
            self.crm.faults.fail_after_commit(n)
        elif fault == "no_answer":
            self.crm.faults.hang_after_commit(n, seconds=30)
        elif fault == "fields_left_out":
            self.ul.faults.drop_fields(n, "PhoneNumber")
            self.crm.faults.drop_fields(n, "Telephone")
        else:
            self.ul.faults.clock_ahead(3600)
            for guid in sorted(self.ul.customers)[:n]:      # saved on the fast workstation
                c = self.ul.customers[guid]
                c["PhoneNumber"] = f"09 {n}{guid[:2]}"
                c["LastModifiedOn"] = self.ul._now()
                self.pending[("left", guid, "PhoneNumber")] = c["PhoneNumber"]
            self.ul.faults.clock_ahead(0)
        self._sync()
        self.crm.faults.clear()
        self.ul.faults.clear()

    def _sync(self):
        self.clock.advance(5)
        FIGURES["syncs"] += 1
        return self.loop.run_until_complete(run(self.app.db, self.app.integration("ul"),
                                                RunOptions(trigger="test")))

    # --- the invariants after a quiescent sync -------------------------------------------
    @precondition(lambda self: hasattr(self, "app"))
    @rule()
    def quiescent_sync_checks(self) -> None:
        self.clock.advance(60)
        for _ in range(3):
            result = self._sync()
            if result.status == "ok":
                break
        assert result.status == "ok", result.message
        FIGURES["quiescent checks"] += 1
        links = self._links()
        companies = {str(k): v for k, v in self.crm.data["Companies"].items()
                     if v["StatusFlag"] == "A"}
        customers = {g: c for g, c in self.ul.customers.items() if not c["Obsolete"]}
        # no duplicates: one company per customer, one link per record
        dupes = len(companies) - len(customers)
        FIGURES["duplicates found"] += max(0, dupes)
        assert dupes == 0, f"{len(companies)} CRM companies for {len(customers)} customers"
        assert sorted(links) == sorted(customers), "a customer is not linked"
        assert sorted(links.values()) == sorted(companies), "a company is linked twice or not"
        # no lost update: an edit nobody contested arrived on the other side
        for (side, rid, name), value in self.pending.items():
            if side == "left":
                company = companies[links[rid]]
                other = {"CustomerName": "Name", "PhoneNumber": "Telephone"}[name]
                contested = (side == "left" and name == "PhoneNumber" and
                             ("right", links[rid], "Telephone") in self.pending)
                now = self.ul.customers[rid][name]
                if contested or not same(now, value):
                    continue
                if not same(company[other], value):
                    FIGURES["lost updates found"] += 1
                assert same(company[other], value), f"lost: {name}={value!r}: {company}"
            else:
                guid = next(g for g, r in links.items() if r == rid)
                if ("left", guid, "PhoneNumber") in self.pending:
                    continue                  # contested: the conflict policy decided
                if not same(companies[rid]["Telephone"], value):
                    continue                  # edited again since
                got = self.ul.customers[guid]["PhoneNumber"]
                if not same(got, value):
                    FIGURES["lost updates found"] += 1
                assert same(got, value), f"lost: Telephone={value!r}, Unleashed has {got!r}"
        self.pending.clear()

    def _links(self) -> dict[str, str]:
        from sqlalchemy import select

        async def q():
            async with self.app.db.connect() as conn:
                rows = await conn.execute(select(T["links"]).where(
                    T["links"].c.flow == "companies"))
                return {r["left_id"]: r["right_id"] for r in rows.mappings()}
        return self.loop.run_until_complete(q())


RealWritePath.TestCase.settings = settings(
    max_examples=int(os.environ.get("ACCORD_REAL_SM_EXAMPLES", "15")), stateful_step_count=14,
    deadline=None, suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate] + ([] if os.environ.get("CI")
                                                            else [Phase.shrink]))
TestRealWritePath = RealWritePath.TestCase


def test_real_write_path_figures():
    """Runs after the machine (file order): the figures for the closing note."""
    print("\nreal write path:", dict(sorted(FIGURES.items())))
    if not FIGURES["syncs"]:
        pytest.skip("run together with TestRealWritePath")
    assert FIGURES["duplicates found"] == 0 and FIGURES["lost updates found"] == 0

