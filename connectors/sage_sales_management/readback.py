"""Reading back what concurrent writes stored, in one list request instead of one each.

Sales Management answers a create or an update with the record's id only, so the connector
reads the record back (the engine keeps as base exactly what the system stored). When the
engine writes several records at once, their read-backs wait a moment (``window``) and go as
one ``where=id IN (...)`` request: one request instead of N, and one look-up of the computed
fields (contacts' account types) for the lot.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Hashable, Sequence

Fetch = Callable[[Any, Sequence[int]], Awaitable[dict[int, Any]]]


class ReadBacks:
    def __init__(self, fetch: Fetch, *, window: float, size: int) -> None:
        self.fetch, self.window, self.size = fetch, window, size
        self._queues: dict[Hashable, tuple[Any, list[tuple[int, asyncio.Future]]]] = {}
        self._tasks: set[asyncio.Task] = set()

    async def get(self, group: Hashable, target: Any, key: int) -> Any:
        """The record ``key`` of ``target`` (KeyError when the system does not have it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        _, queue = self._queues.setdefault(group, (target, []))
        queue.append((key, future))
        if len(queue) >= self.size:
            self._fire(group)
        elif len(queue) == 1:
            loop.call_later(self.window, self._fire, group)
        return await future

    def _fire(self, group: Hashable) -> None:
        entry = self._queues.pop(group, None)
        if entry is None:
            return
        task = asyncio.get_running_loop().create_task(self._run(*entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, target: Any, queue: list[tuple[int, asyncio.Future]]) -> None:
        try:
            found = await self.fetch(target, list(dict.fromkeys(k for k, _ in queue)))
        except asyncio.CancelledError:
            for _, future in queue:
                future.cancel()
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to every writer that waits
            for _, future in queue:
                if not future.done():
                    future.set_exception(exc)
            return
        for key, future in queue:
            if future.done():               # its writer gave up waiting
                continue
            if key in found:
                future.set_result(found[key])
            else:
                future.set_exception(KeyError(key))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
