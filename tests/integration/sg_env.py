"""End-to-end set-up for the Sage 50 FR <-> Sage Sales Management preset (seed 002, SG-1..24).

The Sage 50 side is a generated SQLite database file (``Sage50FrSandbox``, the default layout)
read and written by the ``sage50fr`` connector; the Sales Management side is its sandbox,
served on a free loopback port. A config naming both is written to a temp directory (with a
real SQLite state file), loaded by ``daemon.config.load`` and built by ``App``. One clock
drives both systems and the SQL connector's own stamps; tests step it (no sleeping). Edits
"as a user would" go straight into the sandboxes' data, as their UIs would.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from connectors.sage50fr.sandbox import Sage50FrSandbox
from connectors.sage_sales_management.sandbox import SageSalesManagementSandbox
from connectors.sandbox import Clock
from daemon.engine.runner import RunResult
from tests.integration.app_env import AppEnv

INTEG = "sg"
START = datetime(2025, 3, 3, 9, 0, 0, tzinfo=timezone.utc)


def config_text(tmp: Path, *, sage_url: str, ssm_url: str, options: str = "") -> str:
    return f"""
[daemon]
database = "sqlite:///{tmp / 'state.db'}"
log_format = "json"

[systems.sage50]
type = "sage50fr"
url = "{sage_url}"
state_path = "{tmp / 'sage50-ids.sqlite'}"

[systems.ssm]
type = "sage_sales_management"
base_url = "{ssm_url}"
public_key = "sandbox-public"
private_key = "sandbox-private"

[integrations.{INTEG}]
left = "sage50"
right = "ssm"
preset = "sage50fr_sales_management"

[integrations.{INTEG}.options]
{options}
"""


class SgEnv(AppEnv):
    integ = INTEG
    trigger = "schedule"

    def __init__(self, tmp: Path, clock: Clock, sage: Sage50FrSandbox,
                 ssm: SageSalesManagementSandbox) -> None:
        super().__init__(tmp, ssm, sage)
        self.clock, self.sage, self.ssm = clock, sage, ssm

    def config_text(self, options: str = "") -> str:
        return config_text(self.tmp, sage_url=self.sage.url, ssm_url=self.ssm.url,
                           options=options)

    async def open(self, options: str = "") -> "SgEnv":
        app = await self.build("accord.toml", options=options)
        self.cfg = app.cfg
        app.connectors["sage50"].now = self.clock.now      # type: ignore[attr-defined]
        return self

    async def sync(self, **kw: Any) -> RunResult:
        self.clock.advance(120)
        result = await self.run(**kw)
        self.clock.advance(120)
        return result

    # --- Sales Management, as its users and its API see it ------------------------------------
    def account(self, code: str) -> dict | None:
        """The live Sales Management account whose extId is a Sage 50 account code."""
        return self.ssm.by_ext("accounts", code)

    def type_of(self, row: dict) -> str:
        return self.ssm.account_types[row["typeId"]]["descriptionEN"]

    def live(self, entity: str) -> list[dict]:
        return [r for r in self.ssm.records(entity) if not r["deleted"]]

    def counts(self, result: RunResult, flow: str) -> dict:
        return next(s.counts for s in result.steps if s.flow == flow)
