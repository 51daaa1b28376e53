"""The measured failures of the engine, reproduced end to end: the Unleashed <-> Prospect CRM
preset over loopback HTTP against both sandboxes, a real SQLite state, and the sandboxes'
fault knobs. Each test is named after what it shows."""
from __future__ import annotations

import random

from connectors.prospect_crm.sandbox import ProspectSandbox
from daemon.app import App
from daemon.config import load
from daemon.engine.runner import RunOptions, run
from tests.integration.conftest import Env, close_env, make_env


def crm_companies(env: Env) -> list[dict]:
    return [c for c in env.crm.data["Companies"].values() if c["StatusFlag"] == "A"]


async def test_plan_of_a_first_sync_exits_0_with_contacts_waiting_for_their_companies(env):
    await env.start()
    plan = await env.sync(dry_run=True)
    assert plan.status == "ok" and plan.exit_code == 0, plan.message
    contacts = next(s for s in plan.steps if s.flow == "contacts")
    assert contacts.counts["errors"] == 0
    creates = [p for p in contacts.planned if p["action"] == "create"]
    assert creates and all(p.get("waits_for") for p in creates
                           if p["side"] == "right")
    assert await env.rows("runs") == []                  # a plan is not a run
    first = await env.sync()
    assert first.status == "ok"
    done = next(s for s in first.steps if s.flow == "contacts")
    assert done.counts["created_right"] == contacts.counts["created_right"]


async def test_a_crm_that_stores_then_fails_or_times_out_gets_no_duplicate(tmp_path):
    env = await make_env(tmp_path)
    try:
        env.ul.seed(40, random.Random(3))
        path = env.write_config()
        text = open(path).read().replace('token = "sandbox-token"',
                                         'token = "sandbox-token"\ntimeout = 0.5')
        open(path, "w").write(text)
        env.app = await App(load(path)).start(sandboxes=False, activity=False)
        env.crm.faults.fail_after_commit(4)
        env.crm.faults.hang_after_commit(2, seconds=30)
        first = await env.sync()
        env.crm.faults.clear()
        assert first.status == "errors"                  # honest: answers were lost
        customers = len(env.ul.customers)
        names = [c["Name"] for c in crm_companies(env)]
        assert len(names) == len(set(names))
        env.tick()
        second = await env.sync()
        companies = next(s for s in second.steps if s.flow == "companies")
        assert companies.counts["recovered"] >= 1
        env.tick()
        third = await env.sync()
        assert third.status == "ok", third.message
        names = [c["Name"] for c in crm_companies(env)]
        assert len(names) == len(set(names)) == customers + 2   # the CRM's own two
        assert len(await env.links("companies")) == customers
    finally:
        await close_env(env)


async def test_fresh_sandboxes_behind_an_old_state_stop_the_integration_until_approved(
        tmp_path):
    env = await make_env(tmp_path)
    try:
        await env.start()
        assert (await env.sync()).status == "ok"
        # the demo restarted: the same ports, freshly generated systems, the old state file
        await env.crm.stop()
        fresh = ProspectSandbox(seed=2, records=2, clock=env.crm.clock)
        await fresh.start(env.crm.port)
        env.crm = fresh
        writes = fresh.writes()
        r = await env.sync()
        assert r.status == "waiting" and "is not the instance" in r.message
        assert fresh.writes() == writes
        r = await env.sync()
        assert r.status == "waiting"                      # until a person says so
        gates = await env.rows("gates")
        assert [g["kind"] for g in gates] == ["instance"]
    finally:
        await close_env(env)


async def test_a_refused_long_name_reports_the_crms_own_reason_first(env):
    await env.start()
    guid = sorted(env.ul.customers)[0]
    env.ul_edit_customer(guid, CustomerName="N" * 150)
    r = await env.sync()
    assert r.status == "errors"
    errors = [e for e in await env.errors("companies") if e["record_id"] == guid]
    assert errors, await env.errors()
    message = errors[0]["message"]
    assert "at most 100 characters" in message
    assert message.index("at most 100") < (message.index("required")
                                           if "required" in message else len(message))


async def test_sync_full_warns_of_held_deletes_only_when_something_is_held(env):
    await env.start()
    assert (await env.sync()).status == "ok"
    env.tick()
    full = await run(env.app.db, env.integration, RunOptions(trigger="test", full=True))
    assert full.status == "ok"
    assert all("deletes held" not in s.message for s in full.steps)
    assert all(not s.counts["held"] for s in full.steps)
