"""End to end: the preset "Tryton <-> Prospect CRM" over a real trytond and the CRM sandbox.

Each test gets a fresh Tryton database (a copy of the session's template) behind the fault
proxy (which logs the JSON-RPC methods called) and a fresh Prospect CRM sandbox on real time;
a config file naming both is loaded by ``daemon.config.load`` and ``App`` builds the
integration from it, with a real SQLite state file. Edits "as a user would" go to trytond
directly over JSON-RPC (not through the proxy) and to the CRM sandbox's data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connectors.prospect_crm.sandbox import ProspectSandbox
from connectors.sandbox import Clock
from daemon.app import App
from daemon.config import load
from daemon.engine.runner import RunOptions, RunResult, run
from daemon.store.tables import T
from tests.tryton.server import PASSWORD, FaultProxy, SyncRpc

INTEG = "erp"


def config_text(tmp: Path, *, tryton_url: str, database: str, crm_url: str,
                page_size: int = 200, options: str = "", login: str = "admin",
                password: str = PASSWORD) -> str:
    return f"""
[daemon]
database = "sqlite:///{tmp / 'state.db'}"
log_format = "json"
log_level = "info"

[systems.tryton]
type = "tryton"
base_url = "{tryton_url}"
database = "{database}"
login = "{login}"
password = "{password}"
page_size = {page_size}
attempts = 3
max_wait = 0.1

[systems.prospect]
type = "prospect_crm"
token = "sandbox-token"
base_url = "{crm_url}"

[integrations.{INTEG}]
left = "tryton"
right = "prospect"
preset = "tryton_crm"

[integrations.{INTEG}.options]
{options}
"""


class Env:
    def __init__(self, tmp: Path, server, database: str, proxy: FaultProxy,
                 crm: ProspectSandbox) -> None:
        self.tmp, self.server, self.database = tmp, server, database
        self.proxy, self.crm = proxy, crm
        self.rpc = SyncRpc(server.url, database)
        self.app: App | None = None

    async def start(self, page_size: int = 200, login: str = "admin",
                    password: str = PASSWORD, **options: Any) -> "Env":
        if self.app is not None:
            await self.app.close()
        path = self.tmp / "config.toml"
        path.write_text(config_text(
            self.tmp, tryton_url=self.proxy.url, database=self.database, crm_url=self.crm.url,
            page_size=page_size, login=login, password=password,
            options="\n".join(f"{k} = {str(v).lower()}" for k, v in options.items())))
        self.app = await App(load(str(path))).start(sandboxes=False, activity=False)
        return self

    @property
    def integration(self):
        return self.app.integration(INTEG)

    async def sync(self, **kw: Any) -> RunResult:
        kw.setdefault("trigger", "test")
        result = await run(self.app.db, self.integration, RunOptions(**kw))
        return result

    async def rows(self, table: str) -> list[dict]:
        async with self.app.db.connect() as conn:
            return [dict(r) for r in (await conn.execute(select(T[table]))).mappings()]

    async def links(self, flow: str) -> dict[str, str]:
        return {r["left_id"]: r["right_id"] for r in await self.rows("links")
                if r["flow"] == flow and r["integration"] == INTEG}

    async def errors(self) -> list[dict]:
        return await self.rows("record_errors")

    # --- Tryton, as a user would ------------------------------------------------------
    def party(self, name: str, *, phone: str | None = None, website: str | None = None,
              street: str | None = None, city: str | None = None,
              postal_code: str | None = None, country: str | None = None) -> int:
        values: dict[str, Any] = {"name": name}
        mechs = [{"type": t, "value": v} for t, v in (("phone", phone), ("website", website))
                 if v]
        if mechs:
            values["contact_mechanisms"] = [["create", mechs]]
        if street or city:
            address: dict[str, Any] = {"street": street or "", "city": city or "",
                                       "postal_code": postal_code or "", "invoice": True}
            if country:
                address["country"], = self.rpc("country.country", "search",
                                               [("name", "=", country)], 0, 1, None)
            values["addresses"] = [["create", [address]]]
        party, = self.rpc("party.party", "create", [values])
        return party

    def read_party(self, party: int) -> dict:
        row, = self.rpc("party.party", "read", [party], ["name", "phone", "website", "active"])
        return row

    def invoice_city(self, party: int) -> str:
        row, = self.rpc("party.address", "search_read", [("party", "=", party)], 0, 1,
                        [["sequence", "ASC"], ["id", "ASC"]], ["city"])
        return row["city"]

    # --- the CRM ------------------------------------------------------------------------
    def company(self, key: str | int) -> dict:
        return self.crm.data["Companies"][int(key)]

    def crm_edit_company(self, key: str | int, **fields: Any) -> dict:
        return self.crm.modify("Companies", int(key), fields)

    def reset_hits(self) -> None:
        self.proxy.reset()
        self.crm.reset_hits()


@pytest.fixture
async def env(tmp_path, tryton_server, tryton_db):
    proxy = await FaultProxy(tryton_server.url).start()
    crm = ProspectSandbox(seed=2, records=0, clock=Clock())
    await crm.start(0)
    e = Env(tmp_path, tryton_server, tryton_db, proxy, crm)
    try:
        yield e
    finally:
        if e.app is not None:
            await e.app.close()
        await crm.stop()
        await proxy.stop()


async def _first(env: Env, **options: Any) -> None:
    await env.start(**options)
    result = await env.sync()
    assert result.status == "ok", (result.message, await env.errors())


async def test_a_party_created_in_tryton_appears_in_the_crm(env):
    party = env.party("Harbour Tools Ltd", phone="+44 113 496 0000",
                      website="https://harbour.example", street="1 Dock Road\nUnit 4",
                      city="Leeds", postal_code="LS1 4AP", country="United Kingdom")
    await _first(env)
    links = await env.links("companies")
    company = env.company(links[str(party)])
    assert company["Name"] == "Harbour Tools Ltd"
    assert company["Telephone"] == "+44 113 496 0000"
    assert company["Website"] == "https://harbour.example"
    assert company["MainAddress"]["AddressLine1"] == "1 Dock Road"
    assert company["MainAddress"]["AddressLine2"] == "Unit 4"
    assert company["MainAddress"]["AddressLine3"] == "Leeds"
    assert company["MainAddress"]["Postcode"] == "LS1 4AP"
    assert company["MainAddress"]["Country"] == "United Kingdom"
    # the template's own company party went across too; nothing came back to Tryton
    assert env.proxy.writes() == []


async def test_an_edit_on_each_side_flows_the_other_way(env):
    party = env.party("Northwind", phone="0113 000 0001")
    await _first(env)
    key = (await env.links("companies"))[str(party)]
    env.rpc("party.party", "write", [party], {"name": "Northwind Traders"})
    env.crm_edit_company(key, Telephone="0113 000 0002")
    result = await env.sync()
    assert result.status == "ok", result.message
    assert env.company(key)["Name"] == "Northwind Traders"
    assert env.read_party(party)["phone"] == "0113 000 0002"
    # and a company made in the CRM becomes a party with a Tryton customer code
    made = env.crm.insert("Companies", {"Name": "Made In CRM Ltd"})
    result = await env.sync()
    assert result.status == "ok", result.message
    left = {v: k for k, v in (await env.links("companies")).items()}
    new = env.rpc("party.party", "read", [int(left[str(made["CompanyId"])])],
                  ["name", "code"])[0]
    assert new["name"] == "Made In CRM Ltd" and new["code"]


async def test_a_crm_edit_of_the_tryton_owned_address_is_reverted(env):
    party = env.party("Owned Address Co", street="5 Mill Lane", city="York")
    await _first(env)
    key = (await env.links("companies"))[str(party)]
    env.crm_edit_company(key, MainAddress={"AddressLine3": "Hull"})
    env.reset_hits()
    result = await env.sync()
    assert result.status == "ok", result.message
    assert env.company(key)["MainAddress"]["AddressLine3"] == "York"     # written back
    assert env.invoice_city(party) == "York"                             # Tryton untouched
    assert env.proxy.writes() == []


async def test_a_party_deleted_in_tryton_is_marked_deleted_in_the_crm(env):
    keep = env.party("Stays Ltd")
    gone = env.party("Goes Ltd")
    archived = env.party("Archived Ltd")
    await _first(env)
    links = await env.links("companies")
    env.rpc("party.party", "delete", [gone])
    env.rpc("party.party", "write", [archived], {"active": False})    # archived: the same
    result = await env.sync()
    assert result.status == "ok", result.message
    assert env.company(links[str(gone)])["StatusFlag"] == "D"
    assert env.company(links[str(archived)])["StatusFlag"] == "D"
    assert env.company(links[str(keep)])["StatusFlag"] == "A"
    # a CRM delete is not propagated to Tryton
    env.crm.data["Companies"][int(links[str(keep)])]["StatusFlag"] = "D"
    env.crm_edit_company(links[str(keep)], Website="https://stays.example")
    result = await env.sync()
    assert result.status == "ok", result.message
    assert env.rpc("party.party", "search", [("id", "=", keep)], 0, None, None) == [keep]


async def test_an_idle_run_makes_zero_writes(env):
    env.party("Idle One", phone="01 01")
    env.party("Idle Two", street="2 Quiet Street", city="Bath")
    await _first(env)
    for _ in range(2):              # the overlap window re-reads the first run's writes too
        env.reset_hits()
        result = await env.sync()
        assert result.status == "ok", result.message
        assert env.proxy.writes() == [], env.proxy.methods
        assert env.crm.writes() == 0
    # the run's check logs in and asks which instance it reached (the company); then per
    # flow a changes query (the parties read within the overlap window bring their
    # addresses and mechanisms) and one look at the delete log
    assert set(env.proxy.methods) <= {
        "common.db.login", "model.res.user.get_preferences", "model.company.company.search_read",
        "model.party.party.search_read",
        "model.party.address.search_read", "model.party.contact_mechanism.search_read",
        "model.ir.model.log.search_count"}, env.proxy.methods
    assert env.proxy.methods.count("model.party.party.search_read") == 1


async def test_a_party_edited_in_tryton_while_a_run_reads_its_page_is_not_lost(env):
    parties = [env.party(f"Paged {i}") for i in range(4)]
    await env.start(page_size=1)
    connector = env.integration.sides["left"]
    original = connector.changes
    edited: list[int] = []

    async def changes(entity, since):
        async for page in original(entity, since):
            yield page
            if entity == "parties" and not edited and \
                    any(r.id == str(parties[0]) for r in page):
                env.rpc("party.party", "write", [parties[0]], {"name": "Paged 0 renamed"})
                edited.append(parties[0])

    connector.changes = changes
    result = await env.sync()
    assert result.status == "ok", result.message
    assert edited
    connector.changes = original
    result = await env.sync()
    assert result.status == "ok", result.message
    key = (await env.links("companies"))[str(parties[0])]
    assert env.company(key)["Name"] == "Paged 0 renamed"


async def test_an_email_contact_goes_to_the_crm_under_its_company(env):
    party = env.party("Contact Holder Ltd")
    mech, = env.rpc("party.contact_mechanism", "create", [{
        "party": party, "type": "email", "value": "jo@holder.example", "name": "Jo Bloggs"}])
    await _first(env)
    company = (await env.links("companies"))[str(party)]
    contact_key = (await env.links("contacts"))[str(mech)]
    contact = env.crm.data["Contacts"][int(contact_key)]
    assert (contact["Forename"], contact["Surname"], contact["Email"]) == \
        ("Jo", "Bloggs", "jo@holder.example")
    assert contact["CompanyId"] == int(company)
    env.crm.modify("Contacts", int(contact_key), {"Email": "jo.bloggs@holder.example"})
    result = await env.sync()
    assert result.status == "ok", result.message
    row, = env.rpc("party.contact_mechanism", "read", [mech], ["value", "name"])
    assert row["value"] == "jo.bloggs@holder.example" and row["name"] == "Jo Bloggs"


async def test_contacts_deleted_with_their_party_are_marked_deleted_by_the_nightly_full_run(
        env):
    """Tryton cascades a party's delete to its contact mechanisms without logging them: the
    ordinary run cannot see those deletes; the preset's nightly full run of the contacts
    (job ``reconcile-contacts``) finds them gone."""
    party = env.party("Contact Holder Ltd")
    other = env.party("Other Ltd")
    mech, = env.rpc("party.contact_mechanism", "create", [{
        "party": party, "type": "email", "value": "jo@holder.example", "name": "Jo Bloggs"}])
    env.rpc("party.contact_mechanism", "create", [{
        "party": other, "type": "email", "value": "al@other.example", "name": "Al Other"}])
    await _first(env)
    contact_key = int((await env.links("contacts"))[str(mech)])
    env.rpc("party.party", "delete", [party])
    result = await env.sync()
    assert result.status == "ok", result.message
    assert env.crm.data["Contacts"][contact_key]["StatusFlag"] == "A"     # not seen yet
    job, = [j for j in env.app.cfg.integrations[INTEG].jobs if j.name == "reconcile-contacts"]
    assert job.flow == "contacts" and job.full
    result = await env.sync(full=job.full, flows=[job.flow], trigger="job")
    assert result.status == "ok", result.message
    assert env.crm.data["Contacts"][contact_key]["StatusFlag"] == "D"


async def test_a_party_renamed_in_tryton_between_the_runs_read_and_write_keeps_the_tryton_name(
        env):
    """The CRM's rename is older than the Tryton user's, made after the run read the party
    and before it wrote: the write is refused (ConflictError), the next run reads both
    edits again and the Tryton one, the newest, is kept on both sides."""
    party = env.party("Interleaved Ltd", phone="01 70")
    await _first(env)
    key = (await env.links("companies"))[str(party)]
    env.crm_edit_company(key, Name="Interleaved Ltd (crm)")
    connector = env.integration.sides["left"]
    original = connector.update
    edited: list[str] = []

    async def update(entity, id, fields, *args, **kwargs):
        if entity == "parties" and id == str(party) and not edited:
            env.rpc("party.party", "write", [party], {"name": "Interleaved Ltd (tryton)"})
            edited.append(id)
        return await original(entity, id, fields, *args, **kwargs)

    connector.update = update
    await env.sync()
    connector.update = original
    assert edited, "the run did not write the CRM's rename to Tryton"
    assert env.read_party(party)["name"] == "Interleaved Ltd (tryton)"
    result = await env.sync()
    assert result.status == "ok", (result.message, await env.errors())
    assert env.read_party(party)["name"] == "Interleaved Ltd (tryton)"
    assert env.company(key)["Name"] == "Interleaved Ltd (tryton)"


async def test_a_user_who_may_not_search_the_delete_log_stops_the_run_with_one_line(env):
    """The first run reads everything (no delete log); the next one stops on the log with
    one line saying what to grant, instead of a traceback."""
    env.rpc("res.user", "create", [{"name": "Accord", "login": "accord",
                                    "password": "Accord-Secret-42"}])
    gone = env.party("Soon Gone Ltd")
    await env.start(login="accord", password="Accord-Secret-42")
    result = await env.sync()
    assert result.status == "ok", (result.message, await env.errors())
    env.rpc("party.party", "delete", [gone])
    result = await env.sync()
    assert result.status == "failed"
    assert "ir.model.log" in result.message and "Administrator" in result.message
    assert "Traceback" not in result.message and "Accord-Secret-42" not in result.message
