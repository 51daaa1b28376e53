"""Waiting for something real (a socket answered, a task moved on, a run finished), bounded.

Not a sleep standing in for a duration: ``until`` polls a condition on the event loop and
fails with ``what`` if it does not hold within ``timeout`` seconds. The condition may be a
plain function or a coroutine function (an HTTP status poll)."""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

POLL = 0.01


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0,
                poll: float = POLL) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        done = check()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        assert loop.time() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(poll)


def idle(svc: Any, name: str) -> Callable[[], bool]:
    """A service has no run of ``name`` under way and no webhook or trigger queued."""
    return lambda: not (svc.locks[name].locked() or name in svc.web._drainers
                        or any(not t.done() for t in svc.web._tasks))
