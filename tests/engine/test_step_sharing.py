"""How steps share the staging table and read their sides. Two integrations of one daemon may
have flows of the same name (two clients on one preset: both have "companies"). A step
starting in one must not touch the records another integration's step has staged meanwhile:
before, a step cleared every staged row of its flow name, so the other step, its reading
gone, planned nothing and its cursor moved on past records it had never written (lost until
they changed again).
A step reads its two sides at once."""
from __future__ import annotations

import asyncio

from connectors.memory import MemoryConnector
from daemon.engine.rules import FlowRules
from daemon.engine.runner import Integration, RunOptions, order_flows, run
from tests.engine.harness import item_flow, make_pair


class Paused(MemoryConnector):
    """Its listing waits for ``go`` once ``reached`` is set (after the other side staged)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.reached, self.go = asyncio.Event(), asyncio.Event()

    async def changes(self, entity, since):
        self.reached.set()
        await self.go.wait()
        async for page in super().changes(entity, since):
            yield page


async def test_a_step_leaves_another_integrations_staged_records_alone(state_url):
    pair = await make_pair(state_url, [item_flow()])
    s = MemoryConnector.Settings(entities=["items"])
    paused = Paused("right", s, clock=pair.clock)
    a = Integration("a", order_flows([FlowRules.model_validate(item_flow())]),
                    {"left": pair.L, "right": paused})
    for i in range(3):
        pair.L.put("items", {"key": f"k{i}", "name": f"n{i}", "phone": str(i)})
    first = asyncio.create_task(run(pair.db, a, RunOptions(trigger="test")))
    await paused.reached.wait()             # a's left side is staged, its right side next
    other = Integration("b", order_flows([FlowRules.model_validate(item_flow())]),
                        {"left": MemoryConnector("l2", s, clock=pair.clock),
                         "right": MemoryConnector("r2", s, clock=pair.clock)})
    assert (await run(pair.db, other, RunOptions(trigger="test"))).status == "ok"
    paused.go.set()
    result = await first
    assert result.status == "ok", result.message
    assert result.steps[0].counts["created_right"] == 3
    assert sorted(r["fields"]["code"] for r in paused.data["items"].values()) == ["k0", "k1", "k2"]


async def test_a_plan_starts_from_an_empty_staging_under_its_scratch_id(state_url,
                                                                        monkeypatch):
    """A plan stages under a random negative run id and clears it when it ends; a plan that
    was killed leaves its rows. A later plan that draws the same id starts without them
    (its staging would otherwise meet its own records' ids already there)."""
    import random
    pair = await make_pair(state_url, [item_flow()])
    pair.L.put("items", {"key": "k1", "name": "n1", "phone": "1"}, id="l1")
    await pair.insert("staged", run_id=-5, flow="items", side="left", record_id="l1", seq=1,
                      data="{}", hash="h")
    monkeypatch.setattr(random, "randrange", lambda *a: 5)
    result = await pair.sync(dry_run=True)
    assert result.status == "ok", result.message
    assert result.steps[0].counts["created_right"] == 1
    assert await pair.rows("staged") == []


class Waiting(MemoryConnector):
    """Its listing starts only once ``other`` has started listing."""

    def __init__(self, *a, other: "Started", **kw) -> None:
        super().__init__(*a, **kw)
        self.other = other

    async def changes(self, entity, since):
        await self.other.listing.wait()
        async for page in super().changes(entity, since):
            yield page


class Started(MemoryConnector):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.listing = asyncio.Event()

    async def changes(self, entity, since):
        self.listing.set()
        async for page in super().changes(entity, since):
            yield page


async def test_both_sides_are_read_at_once(state_url):
    """A step reads its two sides at the same time, so a run takes as long as its slower
    side, not the sum: here the left side's listing waits for the right side's to start
    (read one after the other, the step would never end)."""
    pair = await make_pair(state_url, [item_flow()])
    s = MemoryConnector.Settings(entities=["items"])
    right = Started("right", s, clock=pair.clock)
    left = Waiting("left", s, clock=pair.clock, other=right)
    left.put("items", {"key": "k1", "name": "n1", "phone": "1"})
    right.put("items", {"code": "k2", "title": "n2", "tel": "2"})
    integ = Integration("t", order_flows([FlowRules.model_validate(item_flow())]),
                        {"left": left, "right": right})
    result = await asyncio.wait_for(run(pair.db, integ, RunOptions(trigger="test")), 10)
    assert result.status == "ok", result.message
    assert result.steps[0].counts["created_right"] == 1
    assert result.steps[0].counts["created_left"] == 1
