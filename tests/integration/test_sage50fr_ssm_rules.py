"""SG-1 .. SG-24 (RULES.md, seed 002): Sage 50 FR <-> Sage Sales Management, end to end.

Every test goes through a real SQLite database file (the Sage 50 side, read and written by
the ``sage50fr`` connector with SQLAlchemy), real HTTP on loopback (the Sales Management
sandbox) and a real SQLite state file; see ``sg_env.py``.
"""
from __future__ import annotations

import base64

import pytest

from connectors.sage50fr.sandbox import Sage50FrSandbox, tiny_png
from connectors.sage_sales_management.sandbox import SageSalesManagementSandbox
from connectors.sandbox import Clock
from tests.integration.sg_env import START, SgEnv


@pytest.fixture
async def env(tmp_path):
    clock = Clock(START)
    sage = Sage50FrSandbox(clock=clock, path=tmp_path / "sage50.sqlite")
    ssm = SageSalesManagementSandbox(clock=clock)
    await sage.start()
    await ssm.start()
    e = SgEnv(tmp_path, clock, sage, ssm)
    await e.open()
    yield e
    await e.close()


def customer(env: SgEnv, code: str = "C000101", **cols) -> dict:
    return env.sage.insert("third_parties", **{"ACCOUNT_CODE": code, "TYPE": "C",
                                               "NAME": f"Client {code}", "CITY": "Lyon",
                                               **cols})


def prospect(env: SgEnv, code: str = "C000201", **cols) -> dict:
    return env.sage.insert("third_parties", **{"ACCOUNT_CODE": code, "TYPE": "P",
                                               "NAME": f"Prospect {code}", **cols})


def contact(env: SgEnv, code: str, last: str, *, is_contact: int = 1, **cols) -> dict:
    return env.sage.insert("contacts", **{"ACCOUNT_CODE": code, "IS_CONTACT": is_contact,
                                          "FIRST_NAME": "Anne", "LAST_NAME": last,
                                          "EMAIL": f"{last.lower()}@example.fr", **cols})


def ssm_company(env: SgEnv, name: str, kind: str, **fields) -> dict:
    return env.ssm.add("accounts", name=name, typeId=env.ssm.type_id(kind), **fields)


# --- clients ------------------------------------------------------------------------------------
async def test_sg01_the_account_code_is_the_key_on_both_sides(env):
    customer(env, "C000101")
    existing = ssm_company(env, "Already there", "Client", extId="C000102")
    customer(env, "C000102", NAME="Client C000102")
    r = await env.sync()
    assert r.status == "ok"
    made = env.account("C000101")
    assert made is not None and made["name"] == "Client C000101"
    # an account that already carries the code is linked, not duplicated
    assert env.account("C000102")["id"] == existing["id"]
    assert env.account("C000102")["name"] == "Client C000102"       # Sage 50 wins
    assert len(env.live("accounts")) == 2
    r = await env.sync()
    assert env.counts(r, "companies")["created_right"] == 0
    assert len(env.live("accounts")) == 2


async def test_sg02_accounts_from_sage_are_read_only_and_their_edits_do_not_flow_back(env):
    customer(env, "C000101", PHONE="01 11 11 11 11")
    await env.sync()
    acc = env.account("C000101")
    assert acc["readOnly"] is True
    env.ssm.edit("accounts", acc["id"], force=True, name="Renamed in Sales Management",
                 phone="09 99 99 99 99")
    r = await env.sync()
    assert r.status == "ok"
    row = env.sage.row("third_parties", "C000101")
    assert row["NAME"] == "Client C000101" and row["PHONE"] == "01 11 11 11 11"
    env.sage.update("third_parties", "C000101", PHONE="01 22 22 22 22")
    await env.sync()
    assert env.account("C000101")["phone"] == "01 22 22 22 22"


async def test_sg03_sales_management_deletes_stay_there_sage_deletes_mark_it_deleted(env):
    customer(env, "C000101")
    customer(env, "C000102")
    await env.sync()
    env.ssm.remove("accounts", env.account("C000101")["id"])
    gone = env.account("C000102")["id"]
    env.sage.delete("third_parties", "C000102")
    r = await env.sync()
    assert r.status == "ok"
    assert env.sage.row("third_parties", "C000101") is not None      # not propagated
    marked = env.ssm.data["accounts"][gone]
    assert marked["deleted"] is True and marked["dateDeleted"] is not None
    await env.sync()
    assert env.sage.row("third_parties", "C000101") is not None
    assert env.account("C000101") is None                             # nor re-created


async def test_sg04_a_client_made_in_sales_management_is_created_in_sage_then_read_only(env):
    acc = ssm_company(env, "Nouvelle Société SAS", "Client", city="Nantes", salesRepId=2)
    r = await env.sync()
    assert r.status == "ok"
    (row,) = [x for x in env.sage.rows("third_parties") if x["NAME"] == "Nouvelle Société SAS"]
    assert row["TYPE"] == "C" and row["CITY"] == "Nantes"
    assert row["CRM_ID"] == str(acc["id"])
    stored = env.ssm.data["accounts"][acc["id"]]
    assert stored["extId"] == row["ACCOUNT_CODE"]          # SG-1: the new code is written back
    assert stored["readOnly"] is True
    env.ssm.edit("accounts", acc["id"], force=True, city="Brest")
    await env.sync()
    assert env.sage.row("third_parties", row["ACCOUNT_CODE"])["CITY"] == "Nantes"
    assert len(env.sage.rows("third_parties")) == 1


async def test_sg05_admin_assigned_only_at_creation_and_only_without_a_sales_rep(env):
    admin = await env.app.connectors["ssm"].options("admin")
    customer(env, "C000101")
    ssm_company(env, "Linked, no rep", "Client", extId="C000102")
    customer(env, "C000102")
    await env.sync()
    created = env.account("C000101")
    assert str(created["salesRepId"]) == admin
    assert env.account("C000102")["salesRepId"] is None      # linked, not created: untouched
    env.ssm.edit("accounts", created["id"], force=True, salesRepId=3)   # reassigned there
    env.sage.update("third_parties", "C000101", NAME="Client renamed")
    await env.sync()
    again = env.account("C000101")
    assert again["name"] == "Client renamed" and again["salesRepId"] == 3   # never reassigned


async def test_sg06_the_sales_reps_full_name_goes_to_sales_rep(env):
    rep = env.ssm.add_user("Hélène", "Rousseau", level=2)
    ssm_company(env, "Client avec commercial", "Client", salesRepId=rep["id"])
    await env.sync()
    (row,) = env.sage.rows("third_parties")
    assert row["SALES_REP"] == "Hélène Rousseau"


# --- prospects ----------------------------------------------------------------------------------
async def test_sg07_prospects_are_created_and_edited_on_both_sides(env):
    prospect(env, "C000201", PHONE="01 00 00 00 01")
    made_there = ssm_company(env, "Prospect de Sales Management", "Prospect")
    await env.sync()
    acc = env.account("C000201")
    assert env.type_of(acc) == "Prospect" and acc["readOnly"] is False
    (row,) = [x for x in env.sage.rows("third_parties") if x["CRM_ID"] == str(made_there["id"])]
    assert row["TYPE"] == "P"
    env.ssm.edit("accounts", acc["id"], phone="01 00 00 00 02")
    env.sage.update("third_parties", row["ACCOUNT_CODE"], CITY="Dijon")
    await env.sync()
    assert env.sage.row("third_parties", "C000201")["PHONE"] == "01 00 00 00 02"
    assert env.ssm.data["accounts"][made_there["id"]]["city"] == "Dijon"


async def test_sg08_a_prospect_converted_in_sage_keeps_its_data_and_becomes_read_only(env):
    prospect(env, "C000201")
    await env.sync()
    acc = env.account("C000201")
    env.ssm.edit("accounts", acc["id"], comment="met at the fair", web="www.example.fr")
    await env.sync()
    env.sage.update("third_parties", "C000201", TYPE="C")
    await env.sync()
    acc = env.account("C000201")
    assert env.type_of(acc) == "Client" and acc["readOnly"] is True
    assert acc["comment"] == "met at the fair"              # its information is kept
    assert env.sage.row("third_parties", "C000201")["WEBSITE"] == "www.example.fr"
    env.ssm.edit("accounts", acc["id"], force=True, web="www.changed.fr")
    await env.sync()
    assert env.sage.row("third_parties", "C000201")["WEBSITE"] == "www.example.fr"


async def test_sg09_prospects_are_deleted_only_from_sage(env):
    prospect(env, "C000201")
    prospect(env, "C000202")
    await env.sync()
    env.ssm.remove("accounts", env.account("C000202")["id"])
    gone = env.account("C000201")["id"]
    env.sage.delete("third_parties", "C000201")
    await env.sync()
    assert env.ssm.data["accounts"][gone]["deleted"] is True
    assert env.sage.row("third_parties", "C000202") is not None


async def test_sg10_prospects_and_clients_share_the_accounts_table_others_stay_out(env):
    customer(env, "C000101")
    prospect(env, "C000201")
    ssm_company(env, "A competitor", "Competitor")
    await env.sync()
    types = sorted(env.type_of(a) for a in env.live("accounts") if a.get("extId"))
    assert types == ["Client", "Prospect"]
    assert [r["NAME"] for r in env.sage.rows("third_parties")
            if r["NAME"] == "A competitor"] == []


async def test_sg11_contacts_of_a_prospect_wait_until_it_is_a_client(env):
    prospect(env, "C000201")
    contact(env, "C000201", "Lemaire")
    await env.sync()
    assert env.live("contacts") == []
    env.sage.update("third_parties", "C000201", TYPE="C")   # only the third party changes
    await env.sync()
    (c,) = env.live("contacts")
    assert c["lastName"] == "Lemaire" and c["accountId"] == env.account("C000201")["id"]


async def test_sg12_clients_are_modified_only_in_sage_and_never_duplicated(env):
    customer(env, "C000101", NAME="Original")
    await env.sync()
    acc = env.account("C000101")
    env.ssm.edit("accounts", acc["id"], force=True, name="Edited there")
    for _ in range(3):
        r = await env.sync()
        assert env.counts(r, "companies")["created_left"] == 0
        assert env.counts(r, "companies")["created_right"] == 0
    assert env.sage.row("third_parties", "C000101")["NAME"] == "Original"
    assert len(env.sage.rows("third_parties")) == 1 and len(env.live("accounts")) == 1


async def test_sg13_runs_are_automatic_every_15_minutes(env):
    from daemon.service import schedule_trigger
    spec = env.cfg.integrations["sg"]           # the config names no schedule: the preset's
    assert spec.schedule.every == "15m"
    assert schedule_trigger(spec).interval.total_seconds() == 900
    jobs = {j.name: j for j in spec.jobs}        # contacts made under a prospect catch up
    assert jobs["contacts-nightly"].full is True


# --- contacts -----------------------------------------------------------------------------------
async def test_sg14_contacts_are_created_and_edited_on_both_sides(env):
    customer(env, "C000101")
    sage_contact = contact(env, "C000101", "Durand")
    await env.sync()
    acc = env.account("C000101")
    made = env.ssm.add("contacts", firstName="Paul", lastName="Roux", accountId=acc["id"],
                       email="paul.roux@example.fr")
    (there,) = [c for c in env.live("contacts") if c["lastName"] == "Durand"]
    env.ssm.edit("contacts", there["id"], phone1="04 78 00 00 00")
    await env.sync()
    rows = {r["LAST_NAME"]: r for r in env.sage.rows("contacts")}
    assert rows["Durand"]["PHONE"] == "04 78 00 00 00"
    assert rows["Roux"]["ACCOUNT_CODE"] == "C000101"
    assert rows["Roux"]["CRM_ID"] == str(made["id"])
    env.sage.update("contacts", rows["Roux"]["CONTACT_ID"], FUNCTION="Gérant")
    await env.sync()
    assert env.ssm.data["contacts"][made["id"]]["position"] == "Gérant"
    assert env.ssm.data["contacts"][made["id"]]["extId"] == str(rows["Roux"]["CONTACT_ID"])
    del sage_contact


async def test_sg15_contact_deletes_go_from_sage_only_and_mark_it_deleted(env):
    customer(env, "C000101")
    a = contact(env, "C000101", "Aubert")
    contact(env, "C000101", "Blanc")
    await env.sync()
    by_name = {c["lastName"]: c for c in env.live("contacts")}
    env.ssm.remove("contacts", by_name["Blanc"]["id"])
    env.sage.delete("contacts", a["CONTACT_ID"])
    await env.sync()
    assert env.ssm.data["contacts"][by_name["Aubert"]["id"]]["deleted"] is True
    assert [r["LAST_NAME"] for r in env.sage.rows("contacts")] == ["Blanc"]


async def test_sg16_only_contact_addresses_become_contacts_and_back(env):
    customer(env, "C000101")
    contact(env, "C000101", "Contact", is_contact=1)
    contact(env, "C000101", "Livraison", is_contact=0)
    await env.sync()
    assert [c["lastName"] for c in env.live("contacts")] == ["Contact"]
    env.ssm.add("contacts", lastName="Venu de SSM", accountId=env.account("C000101")["id"])
    await env.sync()
    (row,) = [r for r in env.sage.rows("contacts") if r["LAST_NAME"] == "Venu de SSM"]
    assert row["IS_CONTACT"] == 1


# --- products -----------------------------------------------------------------------------------
def item(env: SgEnv, code: str, **cols) -> dict:
    return env.sage.insert("items", **{"ITEM_CODE": code, "DESCRIPTION": f"Article {code}",
                                       "STOCK_TYPE": "S", "STOCK_QTY": 12, "SALE_PRICE": 9.5,
                                       "ACTIVE": 1, **cols})


async def test_sg17_stock_shows_a_dash_where_stock_does_not_apply(env):
    item(env, "ART1", STOCK_QTY=12)
    item(env, "ART2", STOCK_TYPE="N", STOCK_QTY=None)
    await env.sync()
    stock = {p["extId"]: p["stock"] for p in env.live("products")}
    assert stock == {"ART1": "12", "ART2": "-"}
    env.sage.update("items", "ART1", STOCK_TYPE="N")           # only the stock type changes
    env.sage.update("items", "ART2", STOCK_TYPE="S", STOCK_QTY=3)
    await env.sync()
    stock = {p["extId"]: p["stock"] for p in env.live("products")}
    assert stock == {"ART1": "-", "ART2": "3"}


async def test_sg18_product_images_come_from_sage(env):
    import random
    png = tiny_png(random.Random(1))
    item(env, "ART1", IMAGE=png)
    await env.sync()
    (p,) = env.live("products")
    assert base64.b64decode(p["image"]) == png
    other = tiny_png(random.Random(2))
    env.sage.update("items", "ART1", IMAGE=other)
    await env.sync()
    assert base64.b64decode(env.live("products")[0]["image"]) == other


async def test_sg19_product_deletes_go_from_sage_only(env):
    item(env, "ART1")
    item(env, "ART2")
    await env.sync()
    by_ext = {p["extId"]: p for p in env.live("products")}
    env.sage.delete("items", "ART1")
    env.ssm.remove("products", by_ext["ART2"]["id"])
    await env.sync()
    assert env.ssm.data["products"][by_ext["ART1"]["id"]]["deleted"] is True
    assert env.sage.row("items", "ART2") is not None
    assert env.live("products") == []                           # nor re-created


async def test_sg20_an_inactive_product_is_not_available(env):
    item(env, "ART1", ACTIVE=0)
    item(env, "ART2", ACTIVE=1)
    await env.sync()
    avail = {p["extId"]: p["notAvailable"] for p in env.live("products")}
    assert avail == {"ART1": True, "ART2": False}
    env.sage.update("items", "ART1", ACTIVE=1)
    await env.sync()
    assert {p["extId"]: p["notAvailable"] for p in env.live("products")}["ART1"] is False


# --- invoices -----------------------------------------------------------------------------------
def invoice(env: SgEnv, number: str, code: str = "C000101", **cols) -> dict:
    return env.sage.insert("invoices", **{"NUMBER": number, "ACCOUNT_CODE": code,
                                          "DATE": "2025-03-01", "DUE_DATE": "2025-03-31",
                                          "TOTAL_EXCL_TAX": 100.0, "TOTAL_INCL_TAX": 120.0,
                                          "STATUS": "A régler", **cols})


async def test_sg21_invoices_created_or_changed_in_sage_reach_sales_management(env):
    customer(env, "C000101")
    inv = invoice(env, "FA000001")
    await env.sync()
    (made,) = env.live("invoices")
    assert made["number"] == "FA000001" and made["totalInclTax"] == 120.0
    assert made["accountId"] == env.account("C000101")["id"] and made["date"] == "2025-03-01"
    env.sage.update("invoices", inv["INVOICE_ID"], STATUS="Réglée")
    await env.sync()
    assert env.live("invoices")[0]["status"] == "Réglée"
    assert len(env.live("invoices")) == 1


async def test_sg22_an_invoice_deleted_in_sage_is_marked_deleted(env):
    customer(env, "C000101")
    inv = invoice(env, "FA000001")
    await env.sync()
    (made,) = env.live("invoices")
    env.sage.delete("invoices", inv["INVOICE_ID"])
    await env.sync()
    assert env.ssm.data["invoices"][made["id"]]["deleted"] is True


async def test_sg23_a_synced_invoice_is_marked_synced_and_read_only(env):
    customer(env, "C000101")
    invoice(env, "FA000001")
    await env.sync()
    (made,) = env.live("invoices")
    assert made["synced"] is True and made["readOnly"] is True


async def test_sg24_the_sage_invoice_id_has_a_field_of_its_own(env):
    customer(env, "C000101")
    inv = invoice(env, "FA000007")
    await env.sync()
    (made,) = env.live("invoices")
    assert made["sage50InvoiceId"] == str(inv["INVOICE_ID"])


# --- bad input: a per-record error with the vendor's message; bad keys stop with one line -------
async def test_sg_a_record_refused_by_sales_management_is_reported_and_the_run_goes_on(env):
    customer(env, "C000101", EMAIL="not an e-mail")
    customer(env, "C000102")
    r = await env.sync()
    assert r.status == "errors"
    assert env.account("C000102") is not None
    # the rest of the record still goes; the refused field is reported on the Sage record
    assert env.account("C000101")["email"] is None
    from sqlalchemy import select
    from daemon.store.tables import T
    async with env.app.db.connect() as conn:
        errors = (await conn.execute(select(T["record_errors"]))).mappings().all()
    assert any("not a valid e-mail" in e["message"] and "email" in e["message"]
               and e["record_id"] == "C000101" for e in errors)


async def test_sg_bad_sales_management_keys_stop_the_integration_with_one_line(env):
    env.ssm.private_key = "changed"
    env.ssm.expire_sessions()
    customer(env, "C000101")
    logins = env.ssm.logins
    r = await env.sync()
    assert r.status == "failed"
    assert "sandbox-public" not in (r.message or "") and "changed" not in (r.message or "")
    assert env.ssm.logins - logins == 1


def test_sg_options_turn_the_product_and_invoice_flows_off(tmp_path):
    from daemon.config import load
    from tests.integration.sg_env import config_text
    path = tmp_path / "accord.toml"
    path.write_text(config_text(tmp_path, sage_url="sqlite:///sage.sqlite",
                                ssm_url="http://127.0.0.1:1",
                                options="products = false\ninvoices = false"))
    flows = [f.name for f in load(path).integrations["sg"].flows]
    assert flows == ["companies", "contacts"]
