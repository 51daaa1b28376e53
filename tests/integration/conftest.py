"""End-to-end set-up for the Unleashed <-> Prospect CRM preset (seed 004, rules UL-1..UL-12).

Both vendor sandboxes are started by the test on free loopback ports with a few seeded records
and a fixed clock; a config file naming them is written to a temp directory (with a real SQLite
state file) and loaded by ``daemon.config.load``; ``App(cfg).start(sandboxes=False)`` builds the
connectors and the integration from it. ``env.sync(...)`` is one ``runner.run`` over real HTTP.
Edits "as a user would" are made directly in the sandboxes' data (as their UI would), bumping
the vendor's modification time from the sandbox clock, which the test steps (no sleeping).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import structlog

from connectors.prospect_crm.sandbox import ProspectSandbox
from connectors.sandbox import Clock
from connectors.unleashed.sandbox import UnleashedSandbox
from daemon.engine.runner import RunResult
from tests.integration.app_env import AppEnv

INTEG = "ul"
START = datetime(2024, 6, 3, 9, 0, 0, tzinfo=timezone.utc)


def config_text(tmp: Path, *, ul_url: str, crm_url: str, options: str = "",
                extra: str = "") -> str:
    """A config for the Unleashed <-> Prospect preset pointing at the test's own sandboxes
    (the same shape as tests/test_cli.py's ``config_text``)."""
    return f"""
[daemon]
database = "sqlite:///{tmp / 'state.db'}"
log_format = "json"
log_level = "info"

[systems.unleashed]
type = "unleashed"
api_id = "sandbox"
api_key = "sandbox-key"
base_url = "{ul_url}"

[systems.prospect]
type = "prospect_crm"
token = "sandbox-token"
base_url = "{crm_url}"

[integrations.{INTEG}]
left = "unleashed"
right = "prospect"
preset = "unleashed_crm"
schedule = {{ every = "10m", jitter = "30s" }}

[integrations.{INTEG}.options]
{options}
{extra}
"""


def options_text(**options: Any) -> str:
    return "\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}"
                     for k, v in options.items())


@pytest.fixture
def logs():
    """Every structlog event (any level) as a dict, whatever the suite's log set-up."""
    old = structlog.get_config()
    cap = structlog.testing.LogCapture()
    structlog.configure(processors=[cap], cache_logger_on_first_use=False,
                        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield cap.entries
    structlog.configure(**old)


class Env(AppEnv):
    """Two sandboxes, a state file, and (after ``start``) an App built from a config file."""
    integ = INTEG

    def __init__(self, tmp: Path, ul: UnleashedSandbox, crm: ProspectSandbox) -> None:
        super().__init__(tmp, ul, crm)
        self.ul, self.crm = ul, crm

    # --- the daemon side -----------------------------------------------------------------
    def config_text(self, **options: Any) -> str:
        return config_text(self.tmp, ul_url=self.ul.url, crm_url=self.crm.url,
                           options=options_text(**options))

    async def start(self, **options: Any) -> "Env":
        """(Re)build the App from a config with these preset options; the state file stays."""
        await self.build(**options)
        return self

    async def sync(self, **kw: Any) -> RunResult:
        return await self.run(**kw)

    # --- the user's side: Unleashed ------------------------------------------------------
    def tick(self, seconds: float = 120) -> None:
        """Time passes on both systems (they share one clock)."""
        self.ul.clock.advance(seconds)

    def customer(self, guid: str) -> dict:
        return self.ul.customers[guid]

    def ul_edit_customer(self, guid: str, **fields: Any) -> dict:
        c = self.ul.customers[guid]
        c.update(fields)
        c["LastModifiedOn"] = self.ul._now()
        return c

    def ul_default_address(self, guid: str) -> dict:
        addresses = self.ul.customers[guid]["Addresses"]
        return next((a for a in addresses if a.get("IsDefault")), addresses[0])

    def ul_edit_address(self, guid: str, **fields: Any) -> dict:
        self.ul_default_address(guid).update(fields)
        return self.ul_edit_customer(guid)

    def ul_set_salesperson(self, guid: str, full_name: str) -> dict:
        sp = next(s for s in self.ul.salespersons.values() if s["FullName"] == full_name)
        return self.ul_edit_customer(guid, SalesPerson=self.ul._sp_ref(sp))

    def ul_contacts(self, guid: str | None = None) -> dict[str, dict]:
        if guid is not None:
            return self.ul.contacts.get(guid, {})
        return {k: c for cs in self.ul.contacts.values() for k, c in cs.items()}

    def ul_owner(self, contact_guid: str) -> str:
        return next(g for g, cs in self.ul.contacts.items() if contact_guid in cs)

    def ul_edit_contact(self, contact_guid: str, **fields: Any) -> dict:
        customer = self.ul.customers[self.ul_owner(contact_guid)]
        c = self.ul.contacts[customer["Guid"]][contact_guid]
        c.update(fields)
        now = self.ul._now()
        c["LastModifiedOn"] = customer["LastModifiedOn"] = now
        return c

    def ul_add_contact(self, customer_guid: str, **fields: Any) -> dict:
        import uuid
        customer = self.ul.customers[customer_guid]
        now = self.ul._now()
        c = {"Guid": str(uuid.uuid4()), "FirstName": "", "LastName": "", "EmailAddress": "",
             "PhoneNumber": "", "MobilePhone": "", "FaxNumber": "", **fields,
             "CreatedOn": now, "LastModifiedOn": now}
        self.ul.contacts.setdefault(customer_guid, {})[c["Guid"]] = c
        customer["LastModifiedOn"] = now
        return c

    # --- the user's side: Prospect CRM -----------------------------------------------------
    def company(self, key: str | int) -> dict:
        return self.crm.data["Companies"][int(key)]

    def contact(self, key: str | int) -> dict:
        return self.crm.data["Contacts"][int(key)]

    def crm_edit_company(self, key: str | int, **fields: Any) -> dict:
        return self.crm.modify("Companies", int(key), fields)

    def crm_edit_contact(self, key: str | int, **fields: Any) -> dict:
        return self.crm.modify("Contacts", int(key), fields)

    def crm_contacts_of(self, company: str | int) -> dict[int, dict]:
        return {k: c for k, c in self.crm.data["Contacts"].items()
                if c["CompanyId"] == int(company) and c["StatusFlag"] == "A"}

    def user_code(self, name: str) -> str:
        return next(u["UserCode"] for u in self.crm.data["Users"].values()
                    if u["UserName"] == name)


async def make_env(tmp: Path, **sandbox_kw: Any):
    """Unleashed: 3 customers (with contacts, generated up to 30 days before), Prospect: 2
    companies of its own (with contacts) made a day before START; one shared clock, at START."""
    clock = Clock(START - timedelta(days=1))
    ul = UnleashedSandbox(seed=1, records=3, clock=clock, **sandbox_kw)
    crm = ProspectSandbox(seed=2, records=2, clock=clock)
    clock.set(START)
    await ul.start(0)
    await crm.start(0)
    return Env(tmp, ul, crm)


async def close_env(env: Env) -> None:
    await env.close()


@pytest.fixture
async def env(tmp_path):
    """Sandboxes up, nothing built yet: a test calls ``await env.start(**options)``."""
    e = await make_env(tmp_path)
    yield e
    await close_env(e)


@pytest.fixture
async def synced(env):
    """Default options (two-way, account managers, addresses), after a first full sync."""
    await env.start()
    first = await env.sync()
    assert first.status == "ok", first.message
    env.tick()
    return env
