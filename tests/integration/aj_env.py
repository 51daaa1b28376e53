"""End-to-end set-up for the Ajera -> Vantagepoint CRM preset (seed 001, rules AJ-1..AJ-5).

Both vendor sandboxes run on free loopback ports with one shared, fixed clock; a config file
naming them (and a real SQLite state file) is loaded by ``daemon.config.load`` and built by
``App``; ``env.sync()`` is one ``runner.run`` over real HTTP. Users' edits are made in the
sandboxes' data as their UIs would, stamped from the shared clock, which tests step.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select

from connectors.ajera.sandbox import AjeraSandbox
from connectors.sandbox import Clock
from connectors.vantagepoint.sandbox import VantagepointSandbox
from daemon.app import App
from daemon.config import load
from daemon.engine.runner import RunOptions, RunResult, run
from daemon.store.tables import T

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


class Env:
    def __init__(self, tmp: Path, aj: AjeraSandbox, vp: VantagepointSandbox) -> None:
        self.tmp, self.aj, self.vp = tmp, aj, vp
        self.app: App | None = None
        self.cfg_path = ""

    async def start(self, extra: str = "", **options: Any) -> "Env":
        if self.app is not None:
            await self.app.close()
        text = "\n".join(f"{k} = {str(v).lower()}" for k, v in options.items())
        path = self.tmp / "config.toml"
        path.write_text(config_text(self.tmp, self.aj.url, self.aj.id_blob, self.vp.url,
                                    text, extra))
        self.cfg_path = str(path)
        self.app = await App(load(path)).start(sandboxes=False, activity=False)
        return self

    @property
    def integration(self):
        return self.app.integration(INTEG)

    async def sync(self, **kw: Any) -> RunResult:
        kw.setdefault("trigger", "manual")
        return await run(self.app.db, self.integration, RunOptions(**kw))

    async def rows(self, table: str) -> list[dict]:
        async with self.app.db.connect() as conn:
            return [dict(r) for r in (await conn.execute(select(T[table]))).mappings()]

    async def links(self, flow: str) -> dict[str, str]:
        return {r["left_id"]: r["right_id"] for r in await self.rows("links")
                if r["flow"] == flow}

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
    if env.app is not None:
        await env.app.close()
    await env.aj.stop()
    await env.vp.stop()


def step(result: RunResult, flow: str):
    return next(s for s in result.steps if s.flow == flow)


def ok(result: RunResult) -> None:
    assert result.status == "ok", (result.status, result.message,
                                   [(s.flow, s.status, s.message, dict(s.counts))
                                    for s in result.steps])
