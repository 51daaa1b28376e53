"""The seven guarantees of DESIGN.md, proven by a Hypothesis rule-based state machine.

Two in-memory systems and a real SQLite store (and, with fewer examples, a fresh PostgreSQL
database per example: GuaranteesPostgres at the end). The machine creates, edits and deletes on both
sides, and syncs with faults: writes failing before and after the remote commit, a crash
between a remote create and the link commit, versions that change on every read, many records
sharing one timestamp, a record edited while its page is read, one side suddenly empty in a
complete listing. After every quiescent sync it checks: both sides agree where the rules let
values flow, no record is linked twice, no key is duplicated by the engine, the one-way field
holds its owner's value, the edits nobody contested arrived, nothing was deleted because a side
looked empty, and a second sync makes zero writes.
"""
from __future__ import annotations

import asyncio
import os
from collections import Counter
import tempfile
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)
from sqlalchemy import select

from connectors.memory import Crash, MemoryConnector
from daemon.engine.actions import Recover, Unchanged
from daemon.engine.merge import same
from daemon.engine.rules import FlowRules
from daemon.engine.runner import Integration, RunOptions, order_flows, run
from daemon.store.db import create_schema, make_engine
from daemon.store.tables import T
from tests.dbs import NO_PG, PG_URL, create_pg_database, drop_pg_database

STEPS = {"count": 0, "syncs": 0}
KEYS = [f"k{i}" for i in range(12)]
VALUES = st.sampled_from(["", "a", "b", "c", " padded ", "Δx", None])
FIELDS = {"left": ["name", "phone", "note"], "right": ["title", "tel", "memo"]}
PAIRS = {"name": "title", "phone": "tel", "note": "memo"}

RULES = FlowRules.model_validate(dict(
    name="items", left_entity="items", right_entity="items", direction="both",
    conflict="arbitrary", ownership="revert",
    fields=[dict(left="key", right="code"), dict(left="name", right="title"),
            dict(left="phone", right="tel"),
            dict(left="note", right="memo", direction="left_to_right")],
    match=[dict(left="key", right="code", normalize="text")],
    delete=dict(to_right=dict(action="delete"), to_left=dict(action="delete")),
    delete_threshold=1.0, overlap_seconds=5, concurrency=3))


def _acting(actions: list) -> list:
    """The actions that do something (``Unchanged`` only counts). A record a lost create's
    look-up writes back to (a ``Recover``'s ``revert``) is written before the run reads, so
    the run reads the version the system gave it then, which a plan cannot know: its
    version (the pair's, and its writes') is not compared."""
    rewritten = {(a.source, a.source_id) for a in actions
                 if isinstance(a, Recover) and a.revert}

    def comparable(a):
        if not rewritten or not isinstance(getattr(a, "versions", None), dict) \
                or not hasattr(a, "writes"):
            return a
        return replace(a, versions={s: None if (s, a.ids.get(s)) in rewritten else v
                                    for s, v in a.versions.items()},
                       writes=tuple(replace(w, version=None) if (w.side, w.id) in rewritten
                                    else w for w in a.writes))
    return [comparable(a) for a in actions if not isinstance(a, Unchanged)]


def _no_link_id(action) -> str:
    import re
    return re.sub(r"link_id=-?\d+", "link_id=?", repr(action))


class Clock:
    """Coarse: time moves only when the machine says so, so many records share a timestamp."""

    def __init__(self) -> None:
        self.t = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.t


class Guarantees(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.url = self.state_url()
        self.db = make_engine(self.url)
        self.loop.run_until_complete(create_schema(self.db))
        self.clock = Clock()
        settings_ = MemoryConnector.Settings(page_size=3)
        self.sides = {"left": MemoryConnector("left", settings_, clock=self.clock),
                      "right": MemoryConnector("right", settings_, clock=self.clock)}
        self.sides["right"].normalize = True          # the CRM trims text: no echo allowed
        self.integ = Integration("sm", order_flows([RULES]), self.sides)
        self.pending: dict[tuple[str, str, str], object] = {}   # uncontested edits to check
        self.linked: dict[str, set[str]] = {"left": set(), "right": set()}
        self.held_empty = False

    def state_url(self) -> str:
        return f"sqlite:///{tempfile.mkdtemp()}/state.db"

    def drop(self) -> None:
        pass

    def teardown(self) -> None:
        if hasattr(self, "loop"):
            self.loop.run_until_complete(self.db.dispose())
            self.drop()
            self.loop.close()

    # --- users ---------------------------------------------------------------------------
    def _keys(self, side: str) -> set[str]:
        return {r["key" if side == "left" else "code"] for r in
                self.sides[side].values("items").values()}

    @rule(side=st.sampled_from(["left", "right"]), key=st.sampled_from(KEYS),
          a=VALUES, b=VALUES, c=VALUES)
    def create(self, side, key, a, b, c) -> None:
        STEPS["count"] += 1
        if key in self._keys(side):
            return
        names = FIELDS[side]
        self.sides[side].put("items", {("key" if side == "left" else "code"): key,
                                       names[0]: a, names[1]: b, names[2]: c})

    @rule(side=st.sampled_from(["left", "right"]), n=st.integers(0, 50),
          field=st.integers(0, 2), value=VALUES)
    def edit(self, side, n, field, value) -> None:
        STEPS["count"] += 1
        ids = sorted(self.sides[side].data["items"])
        if not ids:
            return
        rid = ids[n % len(ids)]
        name = FIELDS[side][field]
        self.sides[side].edit("items", rid, {name: value})
        if rid in self.linked[side]:          # a first link is decided by its own policy
            self.pending[(side, rid, name)] = value

    @rule(side=st.sampled_from(["left", "right"]), n=st.integers(0, 50))
    def delete(self, side, n) -> None:
        STEPS["count"] += 1
        ids = sorted(self.sides[side].data["items"])
        if ids:
            rid = ids[n % len(ids)]
            self.sides[side].remove("items", rid)
            self.pending = {k: v for k, v in self.pending.items() if k[1] != rid}

    @rule(seconds=st.sampled_from([0, 1, 2, 30]))
    def tick(self, seconds) -> None:
        STEPS["count"] += 1
        self.clock.t += timedelta(seconds=seconds)

    # --- syncs with faults ---------------------------------------------------------------
    def _sync(self, **kw):
        STEPS["syncs"] += 1
        try:
            return self.loop.run_until_complete(run(self.db, self.integ, RunOptions(**kw)))
        finally:
            links = self._links()
            self.linked = {"left": {x["left_id"] for x in links},
                           "right": {x["right_id"] for x in links}}

    @rule(side=st.sampled_from(["left", "right"]),
          faults=st.lists(st.sampled_from(["before", "after", "refuse", None]), min_size=1,
                          max_size=3))
    def sync_with_failing_writes(self, side, faults) -> None:
        STEPS["count"] += 1
        self.sides[side].fail_writes = [f for f in faults if f]
        self._sync()
        self.sides[side].fail_writes = []

    @rule(side=st.sampled_from(["left", "right"]))
    def sync_with_crash_after_create(self, side) -> None:
        STEPS["count"] += 1
        self.sides[side].crash_after_create = True
        try:
            self._sync()
        except Crash:
            pass
        self.sides[side].crash_after_create = False

    @rule(side=st.sampled_from(["left", "right"]), n=st.integers(0, 50), value=VALUES)
    def sync_while_a_record_is_edited_mid_page(self, side, n, value) -> None:
        STEPS["count"] += 1
        conn = self.sides[side]

        def edit_once():
            conn.on_page = None
            ids = sorted(conn.data["items"])
            if ids:
                rid = ids[n % len(ids)]
                name = FIELDS[side][1]
                conn.edit("items", rid, {name: value})
                if rid in self.linked[side]:
                    self.pending[(side, rid, name)] = value
        conn.on_page = edit_once
        self._sync()
        conn.on_page = None

    @rule()
    def sync_with_flaky_versions(self) -> None:
        STEPS["count"] += 1
        for c in self.sides.values():
            c.flaky_versions = True
        self._sync()
        for c in self.sides.values():
            c.flaky_versions = False

    @rule(side=st.sampled_from(["left", "right"]))
    def full_sync_with_one_side_suddenly_empty(self, side) -> None:
        STEPS["count"] += 1
        other = self.sides["right" if side == "left" else "left"]
        before = set(other.data["items"])
        self.sides[side].empty = True
        self._sync(full=True)
        self.sides[side].empty = False
        # nothing on the other side may be deleted because this side listed nothing
        assert before <= set(other.data["items"]), "a delete went through on an empty listing"
        self.held_empty = True

    @rule()
    def sync(self) -> None:
        STEPS["count"] += 1
        self._sync()

    # --- the invariants after a quiescent sync -------------------------------------------
    @precondition(lambda self: hasattr(self, "sides"))
    @rule()
    def quiescent_sync_checks(self) -> None:
        STEPS["count"] += 1
        self.clock.t += timedelta(seconds=10)
        if self.held_empty:
            self._approve_nothing()
        L, R = self.sides["left"], self.sides["right"]
        for _ in range(3):
            before = (L.writes, R.writes, self._links(), self._runs())
            plan = self._sync(dry_run=True, keep_actions=True)
            assert (L.writes, R.writes, self._links(), self._runs()) == before, \
                "a plan wrote something"
            result = self._sync(keep_actions=True)
            self._check_plan_is_what_ran(plan, result)
            if result.status == "ok":
                break
        assert result.status == "ok", result.message
        writes = (L.writes, R.writes)
        again = self._sync()
        assert again.status == "ok"
        assert (L.writes, R.writes) == writes, "a second sync wrote again (echo or ping-pong)"
        self._check_agreement()
        self.pending.clear()

    def _check_plan_is_what_ran(self, plan, result) -> None:
        """The plan taken before a quiescent sync is exactly what the sync then does: the
        same actions in the same order, and the same counts once carried out."""
        STEPS["plans"] = STEPS.get("plans", 0) + 1
        assert plan.run_id is None and plan.status == result.status, (plan, result)
        assert [s.flow for s in plan.steps] == [s.flow for s in result.steps]
        for p, r in zip(plan.steps, result.steps):
            # the same actions (a pair found again by a lost create's look-up is planned
            # after the others: the order of independent actions may differ)
            # (a link the run makes before reading has its id only once it is stored)
            # (a pair whose records equal their bases is unchanged: counted below, but a run
            # may leave it out of its chunks, where a plan, whose links are not stored yet,
            # decides it: ``Unchanged`` does nothing, so it is not compared as an action)
            assert sorted(map(_no_link_id, _acting(p.actions))) == sorted(
                map(_no_link_id, _acting(r.actions))), f"plan {p.actions} != run {r.actions}"
            # what was decided and done; not how much was read (a create found again is
            # written back before the run reads, so the run may read that record once more)
            done = lambda c: +Counter({k: v for k, v in c.items()  # noqa: E731
                                       if not k.startswith("read_")})
            assert done(p.counts) == done(r.counts), \
                f"plan {dict(p.counts)} != run {dict(r.counts)}"

    def _runs(self) -> int:
        async def q():
            async with self.db.connect() as conn:
                return len((await conn.execute(select(T["runs"].c.id))).all())
        return self.loop.run_until_complete(q())

    def _approve_nothing(self) -> None:
        """Nobody approves the held deletes; the next complete listing sees every record
        again, which lifts the holds, and nothing was deleted meanwhile."""
        self._sync(full=True)
        for hold in self._held_rows():           # what is left is a real delete: approve it
            gone = "right" if hold["target"] == "left" else "left"
            links = {x["id"]: x for x in self._links()}
            assert links[hold["link_id"]][f"{gone}_id"] not in self.sides[gone].data["items"]
        self._approve()
        self.held_empty = False

    def _held_rows(self) -> list[dict]:
        async def q():
            async with self.db.connect() as conn:
                return [dict(r) for r in
                        (await conn.execute(select(T["held_deletes"]))).mappings()]
        return self.loop.run_until_complete(q())

    def _approve(self) -> None:
        from sqlalchemy import update

        async def q():
            async with self.db.begin() as conn:
                await conn.execute(update(T["held_deletes"]).values(approved=True))
        self.loop.run_until_complete(q())

    def _links(self) -> list[dict]:
        async def q():
            async with self.db.connect() as conn:
                return [dict(r) for r in (await conn.execute(select(T["links"]))).mappings()]
        return self.loop.run_until_complete(q())

    def _held(self) -> set[int]:
        async def q():
            async with self.db.connect() as conn:
                rows = await conn.execute(select(T["held_deletes"].c.link_id))
                return {r[0] for r in rows}
        return self.loop.run_until_complete(q())

    def _check_agreement(self) -> None:
        L = self.sides["left"].values("items")
        R = self.sides["right"].values("items")
        links = self._links()
        held = self._held()
        # no duplicates: one link per record, no key twice on a side
        assert len({x["left_id"] for x in links}) == len(links)
        assert len({x["right_id"] for x in links}) == len(links)
        for side, rows in (("left", L), ("right", R)):
            keys = [r["key" if side == "left" else "code"] for r in rows.values()]
            assert len(keys) == len(set(keys)), f"a key was duplicated on the {side}"
        live = [x for x in links if x["left_id"] in L and x["right_id"] in R]
        # converge: every live record is linked (create always, both ways)
        assert not held, "deletes held without a reason"
        if True:
            assert {x["left_id"] for x in live} == set(L), "a left record was not synced"
            assert {x["right_id"] for x in live} == set(R), "a right record was not synced"
        for x in live:
            lv, rv = L[x["left_id"]], R[x["right_id"]]
            for lf, rf in [("key", "code")] + list(PAIRS.items()):
                a, b = lv.get(lf), rv.get(rf)
                a, b = (v.strip() if isinstance(v, str) else v for v in (a, b))  # CRM trims
                assert same(a, b), f"{lf}/{rf} disagree: {lv} vs {rv}"
        # no lost update: an edit that nobody contested arrived on the other side
        for (side, rid, name), value in self.pending.items():
            link = next((x for x in live if x[f"{side}_id"] == rid), None)
            if link is None:
                continue
            other = "right" if side == "left" else "left"
            oname = PAIRS[name] if side == "left" else {v: k for k, v in PAIRS.items()}[name]
            if (other, link[f"{other}_id"], oname) in self.pending:
                continue          # contested: the conflict policy decided
            if side == "right" and name == "memo":
                continue          # a one-way field: reverted to the owner's value
            current = (L if side == "left" else R)[rid].get(name)
            if not same(current, value):
                continue          # edited again later in the same window
            got = (R if other == "right" else L)[link[f"{other}_id"]].get(oname)
            got, want = (v.strip() if isinstance(v, str) else v for v in (got, value))
            assert same(got, want), f"lost update: {side} {rid} {name}={value!r}, got {got!r}"


Guarantees.TestCase.settings = settings(
    max_examples=int(os.environ.get("ACCORD_SM_EXAMPLES", "80")), stateful_step_count=40,
    deadline=None, suppress_health_check=list(HealthCheck),
    # in CI a failure is reported as found (shrinking it can take many minutes)
    phases=[Phase.explicit, Phase.reuse, Phase.generate] + ([] if os.environ.get("CI")
                                                            else [Phase.shrink]))
TestGuarantees = Guarantees.TestCase


@pytest.mark.parametrize("phone", ["", "a"])
def test_a_plan_over_a_lost_create_written_back_is_what_the_run_does(phone):
    """Found by the machine with 300 examples: a create lost to a failing write is found again
    by key on the next run (``Recover``), which writes a value back to its source before the
    run reads; the pair is then planned with the version the plan read and run with the one
    the write-back left (with a ``phone``, its update's write is conditional on it). The plan
    is still what the run does, once the versions only the system decides are set aside."""
    m = Guarantees()
    m.setup()
    try:
        m.create(side="right", key="k0", a="", b="", c="")
        m.sync_with_failing_writes(side="left", faults=["before"])
        m.create(side="left", key="k0", a="", b=phone, c="a")
        m.quiescent_sync_checks()
    finally:
        m.teardown()


def test_state_machine_ran_enough_steps():
    """Runs after the machine (same module, file order): the issue asks for >= 2,500 steps."""
    print(f"\nstate machine: {STEPS['count']} steps, {STEPS['syncs']} syncs, "
          f"{STEPS.get('plans', 0)} plans compared with the sync that followed")
    if STEPS["count"] == 0:
        pytest.skip("run together with TestGuarantees to count its steps")
    assert STEPS["count"] >= 2500, STEPS


class GuaranteesPostgres(Guarantees):
    """The same machine on PostgreSQL (asyncpg), a fresh database per example; fewer examples."""

    def state_url(self) -> str:
        return self.loop.run_until_complete(create_pg_database())

    def drop(self) -> None:
        self.loop.run_until_complete(drop_pg_database(self.url))


GuaranteesPostgres.TestCase.settings = settings(
    Guarantees.TestCase.settings,
    max_examples=int(os.environ.get("ACCORD_SM_PG_EXAMPLES", "15")))
TestGuaranteesPostgres = pytest.mark.postgres(
    pytest.mark.skipif(PG_URL is None, reason=NO_PG)(GuaranteesPostgres.TestCase))
