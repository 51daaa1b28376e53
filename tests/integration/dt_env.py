"""End-to-end set-up for the D-Tools SI -> ConnectWise Manage preset (seed 000, DT-1..DT-10).

Both sandboxes run on free loopback ports with one shared clock (no sleeping); a config file
naming them is written to a temp directory with a real SQLite state file; ``App`` builds the
connectors and the integration from it; ``env.sync()`` is one ``runner.run`` over real HTTP.
An SI user "publishes" by queueing a message in the SI sandbox (``env.publish``).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from connectors.connectwise.sandbox import ConnectWiseSandbox
from connectors.dtools_si.sandbox import DToolsSiSandbox
from connectors.sandbox import Clock
from daemon.engine.runner import RunResult
from tests.integration.app_env import AppEnv, counts, ok  # noqa: F401 (the tests' helpers)

INTEG = "dt"
START = datetime(2024, 6, 3, 9, 0, 0, tzinfo=timezone.utc)
FLOWS = ["clients", "contacts", "products", "opportunities", "opportunity_products",
         "projects", "project_tickets", "ticket_products"]


def config_text(tmp: Path, si_url: str, cw_url: str, *, options: str = "",
                private_key: str = "sandbox-private", extra: str = "") -> str:
    return f"""
[daemon]
database = "sqlite:///{tmp / 'state.db'}"
log_format = "json"
log_level = "warning"

[systems.si]
type = "dtools_si"
api_key = "sandbox-key"
base_url = "{si_url}"
requests_per_window = 1000000             # the tests' pace is not D-Tools' quota

[systems.cw]
type = "connectwise"
company_id = "sandbox"
public_key = "sandbox-public"
private_key = "{private_key}"
client_id = "00000000-0000-0000-0000-00000000c11e"
base_url = "{cw_url}"
timeout = 5

[integrations.{INTEG}]
left = "si"
right = "cw"
preset = "dtools_connectwise"

[integrations.{INTEG}.options]
{options}
{extra}
"""


class Env(AppEnv):
    integ = INTEG

    def __init__(self, tmp: Path, si: DToolsSiSandbox, cw: ConnectWiseSandbox) -> None:
        super().__init__(tmp, si, cw)
        self.si, self.cw = si, cw

    def config_text(self, **kw: Any) -> str:
        return config_text(self.tmp, self.si.url, self.cw.url, **kw)

    async def start(self, **kw: Any) -> "Env":
        await self.build(**kw)
        return self

    async def sync(self, progress=None, **kw: Any) -> RunResult:
        return await self.run(progress, **kw)

    # --- the SI user's side ------------------------------------------------------------------
    def tick(self, seconds: float = 120) -> None:
        self.si.clock.advance(seconds)

    def publish(self, project: dict, **kw: Any) -> dict:
        self.tick(5)
        return self.si.publish(project, **kw)

    def new_project(self, **kw: Any) -> dict:
        return self.si.make_project(**kw)

    # --- Manage --------------------------------------------------------------------------------
    def cw_rows(self, table: str, **where: Any) -> list[dict]:
        return [r for r in self.cw.data[table].values()
                if all(_get(r, k) == v for k, v in where.items())]



def _get(rec: dict, path: str) -> Any:
    node: Any = rec
    for part in path.split("__"):
        node = node.get(part) if isinstance(node, dict) else None
    return node


async def make_env(tmp: Path, *, projects: int = 0, cw_records: int = 0) -> Env:
    clock = Clock(START)
    si = DToolsSiSandbox(seed=1, records=projects, clock=clock, items=6, locations=3)
    cw = ConnectWiseSandbox(seed=2, records=cw_records, clock=clock)
    await si.start(0)
    await cw.start(0)
    return Env(tmp, si, cw)


async def close_env(env: Env) -> None:
    await env.close()
