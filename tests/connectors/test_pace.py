"""The step's write pacing (connectors/pace.py), driven by a hand-moved clock."""
from __future__ import annotations

import asyncio

import pytest

from connectors.pace import AdaptiveLimit


class Hand:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def answers(limit: AdaptiveLimit, n: int, latency: float, ok: bool = True) -> None:
    for _ in range(n):
        limit.observe(latency, ok)


def test_grows_while_answers_stay_fast_up_to_the_ceiling():
    limit = AdaptiveLimit(ceiling=20, start=4)
    answers(limit, 4, 0.010)
    assert limit.limit == 8                     # slow start: doubles each round trip
    answers(limit, 2000, 0.010)
    assert limit.limit == 20                    # never above the flow's concurrency


def test_after_the_first_queue_it_grows_by_one_a_round():
    limit = AdaptiveLimit(ceiling=64, start=4)
    answers(limit, 10, 0.010)
    answers(limit, 40, 0.050)                   # a queue: slow start is over
    answers(limit, 40, 0.010)                   # fast again: the average comes down
    before = limit.limit
    answers(limit, int(limit.limit), 0.010)
    assert limit.limit == before + 1            # one more a round, no longer doubling


def test_cuts_when_the_other_side_queues_or_fails():
    limit = AdaptiveLimit(ceiling=64, start=4)
    answers(limit, 400, 0.010)
    grown = limit.limit
    answers(limit, 100, 0.050)                  # five times slower: a queue builds up there
    assert limit.limit < grown * 0.8
    before = limit.limit
    limit.observe(0.010, ok=False)              # no answer in time: cut at once
    assert limit.limit <= max(1.0, before * 0.7)
    answers(limit, 500, 5.0, ok=False)
    assert limit.limit == 1.0                   # never below one


def test_a_rate_limit_caps_what_is_in_flight_by_littles_law():
    # 2 requests a second answering in 0.5 s: one or two in flight keep it busy
    limit = AdaptiveLimit(ceiling=32, rate=2.0, start=4)
    answers(limit, 1000, 0.5)
    assert limit.limit == 2.0                   # ceil(2 x 0.5 x 1.5)
    fast = AdaptiveLimit(ceiling=32, rate=1000.0, start=4)
    answers(fast, 2000, 0.010)
    assert fast.limit == 15.0                   # ceil(1000 x 0.01 x 1.5)


async def test_holds_writes_beyond_the_limit_until_one_answers():
    clock = Hand()
    limit = AdaptiveLimit(ceiling=8, start=2, clock=clock)
    started = [await limit.acquire(), await limit.acquire()]
    third = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    assert not third.done() and limit.active == 2
    clock.t = 0.01
    limit.release(started[0])
    assert await third == 0.01 and limit.active == 2 and limit.peak == 2


async def test_together_answers_in_order_and_a_fault_stops_the_others():
    from connectors.base import AuthError
    from connectors.pace import together
    started, never = asyncio.Event(), asyncio.Event()
    stopped = []

    async def value(v):
        return v

    async def waits():
        started.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            stopped.append(True)
            raise

    async def fails():
        await started.wait()
        raise AuthError("refused", status=401)
    assert await together(value(v) for v in (3, 1, 2)) == [3, 1, 2]
    with pytest.raises(AuthError):
        await together([waits(), fails()])
    assert stopped == [True]            # cancelled and awaited before the fault is raised


def test_a_queue_of_a_few_milliseconds_is_the_daemons_own_not_a_cut():
    # a system answering in half a millisecond, measured through a busy event loop: the
    # average is several times the best, but by milliseconds, not by a queue over there
    limit = AdaptiveLimit(ceiling=32, start=4)
    answers(limit, 4, 0.0005)
    answers(limit, 300, 0.004)
    assert limit.limit == 32                    # (cut to 1 when any 2x was a queue)
    answers(limit, 200, 0.040)                  # forty milliseconds more: that is a queue
    assert limit.limit < 32 * 0.8
