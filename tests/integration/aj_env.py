"""End-to-end set-up for the Ajera -> Vantagepoint CRM preset (seed 001, rules AJ-1..AJ-5).

Both vendor sandboxes run on free loopback ports with one shared, fixed clock; a config file
naming them (and a real SQLite state file) is loaded by ``daemon.config.load`` and built by
``App``; ``env.sync()`` is one ``runner.run`` over real HTTP. Users' edits are made in the
sandboxes' data as their UIs would, stamped from the shared clock, which tests step.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from connectors.ajera.sandbox import AjeraSandbox
from connectors.sandbox import Clock
from connectors.vantagepoint.sandbox import VantagepointSandbox
from daemon.engine.runner import RunResult
from tests.integration.app_env import AppEnv, ok, step  # noqa: F401 (the tests' helpers)

INTEG = "aj"
START = datetime(2024, 6, 3, 13, 0, 0, tzinfo=timezone.utc)


def config_text(tmp: Path, aj_url: str, aj_id: str, vp_url: str, options: str = "",
                extra: str = "") -> str:
    return f"""
[daemon]
database = "sqlite:///{tmp / 'state.db'}"
log_format = "json"

[systems.ajera]
type = "ajera"
base_url = "{aj_url}"
api_id = "{aj_id}"
username = "sandbox"
password = "sandbox-password"
requests_per_second = 1000

[systems.crm]
type = "vantagepoint"
base_url = "{vp_url}"
username = "sandbox"
password = "sandbox-password"
database = "Vantagepoint"
client_id = "sandbox-client"
client_secret = "sandbox-secret"
requests_per_second = 1000

[integrations.{INTEG}]
left = "ajera"
right = "crm"
preset = "ajera_vantagepoint"

[integrations.{INTEG}.options]
{options}
{extra}
"""


class Env(AppEnv):
    integ = INTEG
    trigger = "manual"

    def __init__(self, tmp: Path, aj: AjeraSandbox, vp: VantagepointSandbox) -> None:
        super().__init__(tmp, aj, vp)
        self.aj, self.vp = aj, vp

    def config_text(self, options: str = "", extra: str = "") -> str:
        return config_text(self.tmp, self.aj.url, self.aj.id_blob, self.vp.url, options, extra)

    async def start(self, extra: str = "", **options: Any) -> "Env":
        text = "\n".join(f"{k} = {str(v).lower()}" for k, v in options.items())
        await self.build(options=text, extra=extra)
        return self

    async def sync(self, **kw: Any) -> RunResult:
        return await self.run(**kw)

    def tick(self, seconds: float = 120) -> None:
        self.aj.clock.advance(seconds)

    # --- Ajera, as its users edit it ---------------------------------------------------
    def project(self, description: str, *, status: str = "Active", sync: bool = True,
                **fields: Any) -> dict:
        self.aj.clock.advance(1)          # each saved at its own time, as people do
        return self.aj.add("Projects", Description=description, Status=status,
                           SyncToCRM=sync, **fields)

    def crm_project(self, wbs1: str | None = None, **fields: Any) -> dict:
        if wbs1 is not None:
            fields["WBS1"] = wbs1
        fields.setdefault("Status", "A")
        fields.setdefault("AjeraSync", "N")
        return self.vp.add("project", **fields)

    def crm(self, hub: str) -> dict[str, dict]:
        return self.vp.data[hub]

    def crm_writes(self) -> int:
        """Writes to the CRM's records (a token request is not one)."""
        return self.vp.count(predicate=lambda h: h.method in ("POST", "PUT", "DELETE")
                             and h.path != "/api/token")


async def make_env(tmp: Path) -> Env:
    clock = Clock(START)
    aj = AjeraSandbox(seed=1, clock=clock)
    vp = VantagepointSandbox(seed=2, clock=clock)
    await aj.start(0)
    await vp.start(0)
    return Env(tmp, aj, vp)


async def close_env(env: Env) -> None:
    await env.close()
