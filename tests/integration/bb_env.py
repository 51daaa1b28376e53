"""End-to-end set-up for the Sage BOB 50 <-> Sage CRM preset (seed 003, BB-1..BB-10).

The BOB side is a generated SQLite database file (``Bob50Sandbox``, the default layout) read
and written by the ``bob50`` connector; the CRM side is the Sage CRM SData sandbox on a free
loopback port. A config naming both is written to a temp directory (with a real SQLite state
file), loaded by ``daemon.config.load`` and built by ``App``. One clock drives both systems and
the SQL connector's own stamps; tests step it (no sleeping). Edits "as a user would" go
straight into the sandboxes' data.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from connectors.bob50.sandbox import Bob50Sandbox
from connectors.sage_crm.sandbox import PASSWORD, USER, SageCrmSandbox
from connectors.sandbox import Clock
from daemon.app import App
from daemon.engine.runner import RunResult
from tests.integration.app_env import AppEnv

INTEG = "bb"
FLOW = "third_parties"
START = datetime(2025, 4, 7, 8, 0, 0, tzinfo=timezone.utc)


def config_text(tmp: Path, *, bob_url: str, crm_url: str, extra: str = "") -> str:
    return f"""
[daemon]
database = "sqlite:///{tmp / 'state.db'}"
log_format = "json"

[systems.bob]
type = "bob50"
url = "{bob_url}"
state_path = "{tmp / 'bob-ids.sqlite'}"

[systems.crm]
type = "sage_crm"
base_url = "{crm_url}"
username = "{USER}"
password = "{PASSWORD}"

[integrations.{INTEG}]
left = "bob"
right = "crm"
preset = "bob50_sage_crm"
{extra}
"""


class BbEnv(AppEnv):
    integ = INTEG

    def __init__(self, tmp: Path, clock: Clock, bob: Bob50Sandbox, crm: SageCrmSandbox) -> None:
        super().__init__(tmp, crm, bob)
        self.clock, self.bob, self.crm = clock, bob, crm

    def config_text(self, extra: str = "") -> str:
        return config_text(self.tmp, bob_url=self.bob.url, crm_url=self.crm.url, extra=extra)

    async def open(self, extra: str = "") -> "BbEnv":
        self.tie_clock(await self.build("accord.toml", extra=extra))
        return self

    def tie_clock(self, app: App) -> None:
        """The test's clock drives the bob50 connector's stamps and its ``clock()``."""
        bob = app.connectors["bob"]
        bob.now = self.clock.now                              # type: ignore[attr-defined]

        async def clock():
            # SQLite's clock is the machine's: in these tests the sandbox clock is the machine's
            return self.clock.now()
        bob.clock = clock                                     # type: ignore[method-assign]

    async def sync(self, **kw: Any) -> RunResult:
        self.clock.advance(120)
        result = await self.run(**kw)
        self.clock.advance(120)
        return result

    async def confirmed(self, **kw: Any) -> RunResult:
        """BB-9: the first run waits; approving its plan lets the next one go."""
        first = await self.sync(**kw)
        assert first.status == "waiting", first.message
        await self.approve()
        return await self.sync(**kw)

    async def approve(self) -> None:
        from daemon.store import gates
        async with self.app.db.begin() as conn:
            await gates.approve(conn, INTEG)

    async def links(self, flow: str = FLOW) -> dict[str, str]:
        return await super().links(flow)

    # --- the users' side -------------------------------------------------------------------
    def customer(self, code: str, vat: str | None, **cols: Any) -> dict:
        return self.bob.insert("third_parties", **{"TP_ID": code, "TP_TYPE": "C",
                                                   "NAME": f"Klant {code}", "VAT_NUMBER": vat,
                                                   "BOBSYNC": 1, **cols})

    def company(self, name: str, vat: str | None, *, kind: str = "Customer",
                bobsync: str | None = "Y", **fields: Any) -> dict:
        return self.crm.add("Company", comp_name=name, comp_type=kind, comp_vatnumber=vat,
                            comp_bobsync=bobsync, **fields)

    def crm_company(self, rid: str | int) -> dict:
        return self.crm.data["Company"][int(rid)]

    def counts(self, result: RunResult) -> dict:
        return next(s.counts for s in result.steps if s.flow == FLOW)


async def make_env(tmp: Path) -> BbEnv:
    clock = Clock(START)
    bob = Bob50Sandbox(clock=clock, path=tmp / "bob50.sqlite")
    crm = SageCrmSandbox(clock=clock)
    await bob.start()
    await crm.start()
    return BbEnv(tmp, clock, bob, crm)


async def close_env(env: BbEnv) -> None:
    await env.close()
