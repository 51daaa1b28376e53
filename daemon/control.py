"""What the web side (daemon/web.py, daemon/metrics.py) asks of the running daemon: a
protocol, so that they need not import daemon/service.py, which starts them. ``Service``
answers it as it is (a test checks that it still does)."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from daemon.app import App
    from daemon.config import Config
    from daemon.engine.runner import RunOptions, RunResult
    from daemon.statewatch import StateWatch
    from daemon.status import LiveProgress


@runtime_checkable
class Daemon(Protocol):
    cfg: Config | None                      # the configuration in force
    app: App | None                         # its integrations and the state database
    scheduler: AsyncIOScheduler | None
    locks: dict[str, asyncio.Lock]          # one per integration: a run under way holds it
    live: LiveProgress                      # the counts of the steps under way
    state: StateWatch                       # whether the state database takes writes

    @property
    def stopping(self) -> bool:
        """A graceful stop is under way: no new runs."""

    def run_under_way(self, name: str) -> asyncio.Task | None:
        """The task of the integration's run under way, if any."""

    async def trigger(self, name: str, options: RunOptions | None = None, *,
                      scheduled: bool = False) -> RunResult | None:
        """Run one integration now, unless a run of it is under way (then None)."""
