"""Rules UL-1 ... UL-12 (RULES.md, seed 004) end to end: the bundled ``unleashed_crm`` preset,
both vendor sandboxes over loopback HTTP, a real SQLite state file, ``runner.run``.

Left is Unleashed (customers, contacts), right is Prospect CRM (companies, contacts). The
``synced`` fixture has done one full sync with the default options (two_way, account_managers
and addresses on): the three Unleashed customers are linked to three CRM companies (created
from them), the CRM's own two companies stay unlinked (companies are never created in
Unleashed).
"""
from __future__ import annotations

from urllib.parse import unquote

import pytest

from daemon import cli
from daemon.config import ConfigError, load
from daemon.store.db import now
from daemon.store.tables import T
from tests.integration.conftest import INTEG, close_env, make_env

# a website the CRM accepts but Unleashed refuses (a DNS label may not start with "-")
BAD_WEBSITE = "https://-shop-.example.com"


async def first_pair(env) -> tuple[str, str]:
    links = await env.links("companies")
    guid = sorted(links)[0]
    return guid, links[guid]


def counts(result, flow: str) -> dict:
    return dict(next(s for s in result.steps if s.flow == flow).counts)


def ok(result) -> None:
    assert result.status == "ok", (result.status, result.message,
                                   [(s.flow, dict(s.counts)) for s in result.steps])


# --- UL-1: companies two-way -------------------------------------------------------------------
# (name, Unleashed edit, CRM check, CRM edit, Unleashed check)
COMPANY_FIELDS = {
    "name": (
        lambda e, g: e.ul_edit_customer(g, CustomerName="Kauri Ridge Traders Ltd"),
        lambda c: c["Name"] == "Kauri Ridge Traders Ltd",
        lambda e, k: e.crm_edit_company(k, Name="Kauri Ridge Trading Co"),
        lambda u: u["CustomerName"] == "Kauri Ridge Trading Co"),
    "phone": (
        lambda e, g: e.ul_edit_customer(g, PhoneNumber="+64 9 555 0101"),
        lambda c: c["Telephone"] == "+64 9 555 0101",
        lambda e, k: e.crm_edit_company(k, Telephone="+64 9 555 0202"),
        lambda u: u["PhoneNumber"] == "+64 9 555 0202"),
    "website": (
        lambda e, g: e.ul_edit_customer(g, Website="https://kauri.example.co.nz"),
        lambda c: c["Website"] == "https://kauri.example.co.nz",
        lambda e, k: e.crm_edit_company(k, Website="www.kauri-ridge.example.com"),
        lambda u: u["Website"] == "www.kauri-ridge.example.com"),
    "account_manager": (
        lambda e, g: e.ul_set_salesperson(g, "Chloe King"),
        lambda c: c["AccountManagerId"] == "CK",
        lambda e, k: e.crm_edit_company(k, AccountManagerId="DL"),
        lambda u: u["SalesPerson"]["FullName"] == "Dev Lal"),
    "address": (
        lambda e, g: e.ul_edit_address(g, StreetAddress="7 Lambton Quay",
                                       StreetAddress2="Level 3", City="Wellington",
                                       Region="Wellington", PostalCode="6011",
                                       Country="New Zealand"),
        lambda c: c["MainAddress"] | {"AddressLine5": None} == {
            "AddressLine1": "7 Lambton Quay", "AddressLine2": "Level 3",
            "AddressLine3": "Wellington", "AddressLine4": "Wellington", "AddressLine5": None,
            "Postcode": "6011", "Country": "New Zealand"},
        lambda e, k: e.crm_edit_company(k, MainAddress={
            "AddressLine1": "1 Beach Road", "AddressLine2": "Unit 4",
            "AddressLine3": "Christchurch", "AddressLine4": "Canterbury",
            "Postcode": "8011", "Country": "New Zealand"}),
        lambda u: {k: u["Addresses"][0][k] for k in (
            "StreetAddress", "StreetAddress2", "City", "Region", "PostalCode", "Country")} == {
            "StreetAddress": "1 Beach Road", "StreetAddress2": "Unit 4", "City": "Christchurch",
            "Region": "Canterbury", "PostalCode": "8011", "Country": "New Zealand"}),
}


@pytest.mark.parametrize("field", list(COMPANY_FIELDS))
async def test_ul01_company_field_flows_both_ways(synced, field):
    env = synced
    ul_edit, crm_has, crm_edit, ul_has = COMPANY_FIELDS[field]
    guid, key = await first_pair(env)

    ul_edit(env, guid)
    result = await env.sync()
    ok(result)
    assert crm_has(env.company(key)), env.company(key)
    assert counts(result, "companies").get("updated_right") == 1

    env.tick()
    crm_edit(env, key)
    result = await env.sync()
    ok(result)
    assert ul_has(env.customer(guid)), env.customer(guid)
    assert counts(result, "companies").get("updated_left") == 1
    # and nothing echoes back: the next run writes nothing
    env.tick()
    env.reset_hits()
    ok(await env.sync())
    assert env.ul.writes() == 0 and env.crm.writes() == 0


# --- UL-2: contacts two-way --------------------------------------------------------------------
CONTACT_FIELDS = [  # (Unleashed field, CRM field, value set in Unleashed, value set in the CRM)
    ("FirstName", "Forename", "Aroha", "Mere"),
    ("LastName", "Surname", "Ngata", "Parata"),
    ("EmailAddress", "Email", "aroha.ngata@example.co.nz", "mere.parata@example.co.nz"),
    ("PhoneNumber", "PhoneNumber", "+64 4 555 0111", "+64 4 555 0222"),
    ("MobilePhone", "MobilePhoneNumber", "+64 21 555 0333", "+64 21 555 0444"),
    ("FaxNumber", "Fax", "+64 4 555 0555", "+64 4 555 0666"),
]


@pytest.mark.parametrize("ul_field,crm_field,ul_value,crm_value", CONTACT_FIELDS,
                         ids=[f[0] for f in CONTACT_FIELDS])
async def test_ul02_contact_field_flows_both_ways(synced, ul_field, crm_field, ul_value,
                                                  crm_value):
    env = synced
    links = await env.links("contacts")
    guid = sorted(links)[0]
    key = links[guid]

    env.ul_edit_contact(guid, **{ul_field: ul_value})
    result = await env.sync()
    ok(result)
    assert env.contact(key)[crm_field] == ul_value
    assert counts(result, "contacts").get("updated_right") == 1

    env.tick()
    env.crm_edit_contact(key, **{crm_field: crm_value})
    result = await env.sync()
    ok(result)
    assert env.ul_contacts()[guid][ul_field] == crm_value
    assert counts(result, "contacts").get("updated_left") == 1
    assert (await env.links("contacts"))[guid] == key       # still the same pair


# --- UL-3: contact creation ---------------------------------------------------------------------
async def test_ul03_contact_created_in_unleashed_is_created_in_crm_under_its_company(synced):
    env = synced
    guid, company = await first_pair(env)
    made = env.ul_add_contact(guid, FirstName="Tane", LastName="Mahuta",
                              EmailAddress="tane.mahuta@example.co.nz", PhoneNumber="+64 9 1")
    result = await env.sync()
    ok(result)
    assert counts(result, "contacts").get("created_right") == 1
    key = (await env.links("contacts"))[made["Guid"]]
    crm = env.contact(key)
    assert (crm["Forename"], crm["Surname"], crm["Email"], crm["CompanyId"]) == (
        "Tane", "Mahuta", "tane.mahuta@example.co.nz", int(company))
    # once only
    env.tick()
    before = len(env.crm.data["Contacts"])
    ok(await env.sync())
    assert len(env.crm.data["Contacts"]) == before


async def _push(env, contact_id: str):
    """What `accord push ul contacts right <id>` does: a pushes row, then a targeted run."""
    async with env.app.db.begin() as conn:
        await conn.execute(T["pushes"].insert().values(
            integration=INTEG, flow="contacts", side="right", record_id=contact_id,
            created_at=now()))
    return await env.sync(trigger="push", flows=["contacts"],
                          only={"contacts": {"right": [contact_id]}})


async def test_ul03_crm_contact_is_created_in_unleashed_only_by_a_push(synced):
    env = synced
    guid, company = await first_pair(env)
    made = env.crm.insert("Contacts", {"CompanyId": int(company), "Forename": "Pushy",
                                       "Surname": "McPush", "Email": "pushy@example.com",
                                       "PhoneNumber": "+64 9 555 0777"})
    cid = str(made["ContactId"])
    env.reset_hits()
    result = await env.sync()
    ok(result)
    assert env.ul.writes() == 0
    assert counts(result, "contacts").get("created_left", 0) == 0
    assert counts(result, "contacts").get("not_created", 0) >= 1
    assert not any(c["EmailAddress"] == "pushy@example.com" for c in env.ul_contacts().values())

    env.tick()
    result = await _push(env, cid)
    ok(result)
    assert counts(result, "contacts").get("created_left") == 1
    made_ul = [c for c in env.ul_contacts(guid).values()
               if c["EmailAddress"] == "pushy@example.com"]
    assert len(made_ul) == 1
    assert (made_ul[0]["FirstName"], made_ul[0]["LastName"], made_ul[0]["PhoneNumber"]) == (
        "Pushy", "McPush", "+64 9 555 0777")
    assert (await env.links("contacts"))[made_ul[0]["Guid"]] == cid
    assert await env.rows("pushes") == []

    # a second push, and the next ordinary runs, create nothing more
    env.tick()
    ok(await _push(env, cid))
    env.tick()
    ok(await env.sync())
    assert sum(c["EmailAddress"] == "pushy@example.com" for c in env.ul_contacts().values()) == 1


async def test_ul03_push_of_a_contact_whose_company_is_not_linked_is_refused(synced):
    env = synced
    links = await env.links("companies")
    unlinked = next(k for k in env.crm.data["Companies"] if str(k) not in links.values())
    orphan = env.crm.insert("Contacts", {"CompanyId": unlinked, "Forename": "Lone",
                                         "Surname": "Wolf", "Email": "lone@example.com"})
    before = len(env.ul_contacts())
    env.reset_hits()
    result = await _push(env, str(orphan["ContactId"]))
    assert env.ul.writes() == 0
    assert len(env.ul_contacts()) == before
    assert counts(result, "contacts").get("created_left", 0) == 0
    errors = await env.errors("contacts")
    assert [e["record_id"] for e in errors] == [str(orphan["ContactId"])]
    message = errors[0]["message"]
    assert "company" in message and "no linked partner" in message, message


async def test_ul03_push_via_the_cli_creates_once_and_refuses_an_unlinked_company(
        synced, capsys):
    env = synced
    guid, company = await first_pair(env)
    links = await env.links("companies")
    unlinked = next(k for k in env.crm.data["Companies"] if str(k) not in links.values())
    ok_ = env.crm.insert("Contacts", {"CompanyId": int(company), "Forename": "Cli",
                                      "Surname": "Pusher", "Email": "cli.pusher@example.com"})
    orphan = env.crm.insert("Contacts", {"CompanyId": unlinked, "Forename": "Cli",
                                         "Surname": "Orphan", "Email": "cli.orphan@ex.com"})
    capsys.readouterr()
    code = await cli.amain(["push", INTEG, "contacts", "right", str(orphan["ContactId"]),
                            "--config", env.cfg_path])
    out = capsys.readouterr().out
    assert code == 1 and out.startswith("not pushed:") and "company" in out
    assert not any(c["LastName"] == "Orphan" for c in env.ul_contacts().values())

    code = await cli.amain(["push", INTEG, "contacts", "right", str(ok_["ContactId"]),
                            "--config", env.cfg_path])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("created left contacts record"), out
    assert sum(c["LastName"] == "Pusher" for c in env.ul_contacts(guid).values()) == 1
    code = await cli.amain(["push", INTEG, "contacts", "right", str(ok_["ContactId"]),
                            "--config", env.cfg_path])
    assert code == 0 and "already linked" in capsys.readouterr().out
    assert sum(c["LastName"] == "Pusher" for c in env.ul_contacts().values()) == 1


async def test_ul03_push_under_an_obsolete_unleashed_customer_is_refused(synced):
    """"Only when its company has an *active* Unleashed account": obsolete = not active."""
    env = synced
    guid, company = await first_pair(env)
    env.ul_edit_customer(guid, Obsolete=True)
    ok(await env.sync())
    env.tick()
    made = env.crm.insert("Contacts", {"CompanyId": int(company), "Forename": "Late",
                                       "Surname": "Comer", "Email": "late@example.com"})
    await _push(env, str(made["ContactId"]))
    assert not any(c["LastName"] == "Comer" for c in env.ul_contacts().values())
    errors = await env.errors("contacts")
    assert [e["record_id"] for e in errors] == [str(made["ContactId"])]
    assert "no linked partner" in errors[0]["message"]


# --- UL-4: CRM -> Unleashed at once, by a targeted run ---------------------------------------
async def test_ul04_targeted_run_syncs_just_that_record_without_listing_the_feed(synced):
    env = synced
    links = await env.links("companies")
    (g1, k1), (g2, k2) = sorted(links.items())[:2]
    phone2 = env.customer(g2)["PhoneNumber"]
    env.crm_edit_company(k1, Telephone="+64 3 555 0001")
    env.crm_edit_company(k2, Telephone="+64 3 555 0002")
    env.reset_hits()
    result = await env.sync(trigger="webhook", flows=["companies"],
                            only={"companies": {"right": [k1]}})
    ok(result)
    assert env.customer(g1)["PhoneNumber"] == "+64 3 555 0001"
    assert env.customer(g2)["PhoneNumber"] == phone2          # not this record's run
    assert [s.flow for s in result.steps] == ["companies"]
    assert counts(result, "companies") == {"updated_left": 1}
    # no change listing on either side: the CRM read is one by-key filter; on Unleashed only
    # check(), the UL-6 guards and the customer's read-before-write. No reference list (users,
    # sales persons): the phone went across, no field that is checked against one
    assert [(h.path, unquote(h.query)) for h in env.crm.hits] == [
        ("/Tenant", ""),        # check(), and which instance it reaches (the state's gate)
        ("/Companies", f"$filter=(CompanyId eq {k1}) and StatusFlag ne 'D'"
                       "&$expand=AccountManager($select=UserName)&$top=200")]
    assert not [h for h in env.ul.hits if h.path.lower().startswith("/salespersons")]
    assert not [h for h in env.ul.hits if "orderBy" in h.query or h.path.endswith("Contacts")]
    assert [(h.method, h.path) for h in env.ul.hits if h.path.startswith("/Customers/")
            and h.path != "/Customers/1"] == [("GET", f"/Customers/{g1}"),
                                             ("POST", f"/Customers/{g1}")]
    assert env.ul.writes() == 1 and env.crm.writes() == 0
    # the periodic run then brings the other record over
    env.tick()
    ok(await env.sync())
    assert env.customer(g2)["PhoneNumber"] == "+64 3 555 0002"


# --- UL-5: account managers need a matching sales person ----------------------------------
async def test_ul05_manager_without_sales_person_is_refused_rest_still_syncs(synced):
    env = synced
    guid, key = await first_pair(env)
    sales_person = env.customer(guid)["SalesPerson"]
    env.crm_edit_company(key, AccountManagerId=env.user_code("Emma Wright"),
                         Telephone="+64 9 555 0303")
    env.reset_hits()
    result = await env.sync()
    assert result.status == "errors"
    assert env.customer(guid)["PhoneNumber"] == "+64 9 555 0303"
    assert env.customer(guid)["SalesPerson"] == sales_person
    errors = await env.errors("companies")
    assert len(errors) == 1 and errors[0]["record_id"] == key and errors[0]["side"] == "right"
    assert "Emma Wright" in errors[0]["message"]
    assert "no matching Unleashed sales person" in errors[0]["message"]
    # nothing was sent to Unleashed naming her
    assert not any("Emma" in str(s.get("SalesPerson")) for s in env.ul.customers.values())


async def test_ul05_account_managers_off_the_field_is_not_synced(env):
    await env.start(account_managers=False)
    ok(await env.sync())
    env.tick()
    links = await env.links("companies")
    (g1, k1), (g2, k2) = sorted(links.items())[:2]
    sp1 = env.customer(g1)["SalesPerson"]
    am2 = env.company(k2)["AccountManagerId"]
    env.crm_edit_company(k1, AccountManagerId=env.user_code("Emma Wright"))
    env.crm_edit_company(k1, AccountManagerId=env.user_code("Dev Lal"))
    env.ul_set_salesperson(g2, "Chloe King" if am2 != "CK" else "Alice Morgan")
    env.ul_edit_customer(g2, PhoneNumber="+64 9 555 0404")
    result = await env.sync()
    ok(result)
    assert env.customer(g1)["SalesPerson"] == sp1
    assert env.company(k2)["AccountManagerId"] == am2
    assert env.company(k2)["Telephone"] == "+64 9 555 0404"
    assert await env.errors() == []
    # and Emma Wright is no error at all with the field off
    env.tick()
    env.crm_edit_company(k1, AccountManagerId=env.user_code("Emma Wright"))
    ok(await env.sync())
    assert await env.errors() == []


# --- UL-6: two-way refused for several operating companies / advanced ledgers ---------------
@pytest.mark.parametrize("knob,value,words", [
    ("operating_companies", 2, "several operating companies"),
    ("advanced_ledgers", True, "advanced ledgers"),
])
async def test_ul06_two_way_refused(env, logs, knob, value, words):
    setattr(env.ul, knob, value)
    await env.start()
    result = await env.sync()
    assert result.status == "failed"
    assert words in result.message and "two_way = false" in result.message
    assert result.steps == []
    assert env.crm.writes() == 0 and env.ul.writes() == 0
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1 and errors[0]["event"] == "run.end"
    assert words in errors[0]["message"]


@pytest.mark.parametrize("knob,value", [("operating_companies", 3), ("advanced_ledgers", True)])
async def test_ul06_one_way_import_still_runs(env, knob, value):
    setattr(env.ul, knob, value)
    await env.start(two_way=False)
    result = await env.sync()
    ok(result)
    assert counts(result, "companies").get("created_right") == 3
    assert len(await env.links("companies")) == 3


# --- UL-7: a website Unleashed refuses -------------------------------------------------------
async def test_ul07_refused_website_is_not_synced_rest_is_and_refusal_reported(synced):
    env = synced
    guid, key = await first_pair(env)
    website = env.customer(guid)["Website"]
    env.crm_edit_company(key, Website=BAD_WEBSITE, Telephone="+64 9 555 0505")
    assert env.company(key)["Website"] == BAD_WEBSITE            # the CRM took it
    result = await env.sync()
    assert result.status == "errors"
    assert env.customer(guid)["PhoneNumber"] == "+64 9 555 0505"
    assert env.customer(guid)["Website"] == website
    errors = await env.errors("companies")
    # reported on the CRM record whose value was refused: it clears once that is fixed
    assert [(e["side"], e["record_id"]) for e in errors] == [("right", key)]
    # the vendor's own words
    assert f"Website {BAD_WEBSITE!r} is not a valid URL." in errors[0]["message"]
    assert "Website" in errors[0]["message"]


# --- UL-8: conflicts ------------------------------------------------------------------------
async def _conflict_scenario(tmp, logs) -> tuple[str, str, str, list[dict]]:
    env = await make_env(tmp)
    try:
        await env.start()
        ok(await env.sync())
        env.tick()
        guid, key = await first_pair(env)
        env.ul_edit_customer(guid, PhoneNumber="+64 9 555 1111")
        env.tick(10)
        env.crm_edit_company(key, Telephone="+64 9 555 2222")
        logs.clear()
        result = await env.sync()
        ok(result)
        assert counts(result, "companies").get("conflicts") == 1
        conflicts = [dict(e) for e in logs if e["event"] == "conflict"]
        return (env.customer(guid)["PhoneNumber"], env.company(key)["Telephone"],
                f"{guid}/{key}", conflicts)
    finally:
        await close_env(env)


async def test_ul08_conflict_resolved_deterministically_and_logged_with_both_values(
        tmp_path, logs):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ul1, crm1, pair1, conflicts1 = await _conflict_scenario(tmp_path / "a", logs)
    ul2, crm2, pair2, conflicts2 = await _conflict_scenario(tmp_path / "b", logs)
    assert ul1 == crm1 and ul1 in ("+64 9 555 1111", "+64 9 555 2222")   # both sides equal
    assert (ul2, crm2, pair2) == (ul1, crm1, pair1)                       # same winner
    assert len(conflicts1) == 1
    c = conflicts1[0]
    assert (c["field"], c["left"], c["right"]) == (
        "PhoneNumber", "+64 9 555 1111", "+64 9 555 2222")
    assert (c["left_id"], c["right_id"]) == tuple(pair1.split("/"))
    assert c["policy"] == "arbitrary" and c["log_level"] == "warning"
    assert c["winner"] in ("left", "right")
    assert ul1 == {"left": "+64 9 555 1111", "right": "+64 9 555 2222"}[c["winner"]]
    assert {k: c[k] for k in ("field", "left", "right", "winner")} == \
        {k: conflicts2[0][k] for k in ("field", "left", "right", "winner")}


# --- UL-9: one setting for both flows -------------------------------------------------------
async def test_ul09_two_way_governs_both_flows(env):
    await env.start(two_way=True)
    assert {f.name: f.rules.direction for f in env.integration.flows} == {
        "companies": "both", "contacts": "both"}
    await env.start(two_way=False)
    assert {f.name: f.rules.direction for f in env.integration.flows} == {
        "companies": "left_to_right", "contacts": "left_to_right"}


@pytest.mark.parametrize("key", ["contacts", "two_way_contacts", "contact_sync"])
def test_ul09_there_is_no_option_for_contacts_alone(env, key):
    path = env.write_config(**{key: False})
    with pytest.raises(ConfigError) as err:
        load(path)
    assert f"options.{key}" in str(err.value) and "not an option" in str(err.value)


async def test_ul09_two_way_off_stops_crm_edits_of_companies_and_contacts(env):
    await env.start()
    ok(await env.sync())
    env.tick()
    await env.start(two_way=False)
    guid, key = await first_pair(env)
    contacts = await env.links("contacts")
    cguid = sorted(contacts)[0]
    env.crm_edit_company(key, Telephone="+64 9 555 0606")
    env.crm_edit_contact(contacts[cguid], PhoneNumber="+64 9 555 0707")
    env.reset_hits()
    ok(await env.sync())
    assert env.ul.writes() == 0
    assert env.customer(guid)["PhoneNumber"] != "+64 9 555 0606"
    assert env.ul_contacts()[cguid]["PhoneNumber"] != "+64 9 555 0707"


# --- UL-10: contacts follow their customer's linked company --------------------------------
async def test_ul10_contacts_land_under_the_company_linked_to_their_customer(synced):
    env = synced
    companies = await env.links("companies")
    contacts = await env.links("contacts")
    assert len(contacts) == sum(len(env.ul_contacts(g)) for g in companies) > 0
    for cguid, ckey in contacts.items():
        owner = env.ul_owner(cguid)
        assert env.contact(ckey)["CompanyId"] == int(companies[owner]), (cguid, owner)
    # a new contact of another customer goes to that customer's company
    guid, key = sorted(companies.items())[-1]
    made = env.ul_add_contact(guid, FirstName="Hemi", LastName="Walker",
                              EmailAddress="hemi.walker@example.co.nz")
    ok(await env.sync())
    new_key = (await env.links("contacts"))[made["Guid"]]
    assert env.contact(new_key)["CompanyId"] == int(key)


async def test_ul10_crm_contact_pushed_goes_to_the_customer_linked_to_its_company(synced):
    env = synced
    companies = await env.links("companies")
    guid, key = sorted(companies.items())[-1]
    made = env.crm.insert("Contacts", {"CompanyId": int(key), "Forename": "Ruby",
                                       "Surname": "Moana", "Email": "ruby.moana@example.com"})
    ok(await _push(env, str(made["ContactId"])))
    assert [c["LastName"] for c in env.ul_contacts(guid).values()].count("Moana") == 1


# --- UL-11: options: nightly account-manager fix, addresses ---------------------------------
async def test_ul11_nightly_job_sets_crm_account_managers_back_to_unleashed(env):
    await env.start(fix_account_managers_overnight=True)
    jobs = env.app.cfg.integrations[INTEG].jobs
    assert [(j.name, j.flow, j.full, j.enforce) for j in jobs] == [
        ("fix-account-managers", "companies", True, {"account_manager": "left"})]
    ok(await env.sync())
    env.tick()
    links = await env.links("companies")
    names = {u["UserCode"]: u["UserName"] for u in env.crm.data["Users"].values()}
    expected = {k: env.customer(g)["SalesPerson"]["FullName"] for g, k in links.items()}
    for g, k in links.items():
        current = names[env.company(k)["AccountManagerId"]]
        other = "Dev Lal" if current != "Dev Lal" else "Chloe King"
        env.crm_edit_company(k, AccountManagerId=env.user_code(other))
    before = {g: dict(env.customer(g)["SalesPerson"]) for g in links}
    job = jobs[0]
    result = await env.sync(trigger="job", flows=[job.flow], full=job.full,
                            enforce=dict(job.enforce))
    ok(result)
    assert {k: names[env.company(k)["AccountManagerId"]] for k in links.values()} == expected
    assert {g: env.customer(g)["SalesPerson"] for g in links} == before
    assert counts(result, "companies").get("updated_left", 0) == 0
    assert counts(result, "companies").get("updated_right") == len(links)
    # the next ordinary run does not undo it (the CRM edits were overridden, not pending)
    env.tick()
    env.reset_hits()
    ok(await env.sync())
    assert {k: names[env.company(k)["AccountManagerId"]] for k in links.values()} == expected
    assert {g: env.customer(g)["SalesPerson"] for g in links} == before
    assert env.ul.writes() == 0


async def test_ul11_job_absent_when_option_off(env):
    await env.start()
    assert env.app.cfg.integrations[INTEG].jobs == []


async def test_ul11_addresses_on_main_address_both_ways(synced):
    env = synced
    guid, key = await first_pair(env)
    env.ul_edit_address(guid, City="Dunedin", PostalCode="9016")
    ok(await env.sync())
    assert (env.company(key)["MainAddress"]["AddressLine3"],
            env.company(key)["MainAddress"]["Postcode"]) == ("Dunedin", "9016")
    env.tick()
    env.crm_edit_company(key, MainAddress={"AddressLine1": "9 Princes Street"})
    ok(await env.sync())
    assert env.ul_default_address(guid)["StreetAddress"] == "9 Princes Street"
    assert env.ul_default_address(guid)["City"] == "Dunedin"


async def test_ul11_addresses_off_not_synced(env):
    await env.start(addresses=False)
    result = await env.sync()
    ok(result)
    links = await env.links("companies")
    guid, key = sorted(links.items())[0]
    # created without an address
    assert all(v is None for v in env.company(key)["MainAddress"].values())
    env.tick()
    street = env.ul_default_address(guid)["StreetAddress"]
    env.ul_edit_address(guid, City="Dunedin")
    env.ul_edit_customer(guid, PhoneNumber="+64 3 555 0808")
    env.crm_edit_company(key, MainAddress={"AddressLine1": "9 Princes Street"})
    ok(await env.sync())
    assert env.company(key)["Telephone"] == "+64 3 555 0808"
    assert env.company(key)["MainAddress"]["AddressLine3"] is None
    assert env.ul_default_address(guid)["StreetAddress"] == street


# --- UL-12: two_way off keeps the one-way import --------------------------------------------
async def test_ul12_one_way_import_creates_and_updates_and_ignores_crm_edits(env):
    await env.start(two_way=False)
    result = await env.sync()
    ok(result)
    assert counts(result, "companies").get("created_right") == 3
    assert counts(result, "contacts").get("created_right") == len(env.ul_contacts())
    env.tick()
    guid, key = await first_pair(env)
    contacts = await env.links("contacts")
    cguid = sorted(contacts)[0]
    # Unleashed edits and a new contact flow to the CRM
    env.ul_edit_customer(guid, CustomerName="Southern Cross Supplies Ltd")
    env.ul_edit_contact(cguid, EmailAddress="new.address@example.co.nz")
    made = env.ul_add_contact(guid, FirstName="Kiri", LastName="Lee",
                              EmailAddress="kiri.lee@example.co.nz")
    # CRM edits do not reach Unleashed
    other_guid, other_key = sorted((await env.links("companies")).items())[1]
    env.crm_edit_company(other_key, Telephone="+64 9 555 0909")
    env.crm_edit_contact(contacts[sorted(contacts)[-1]], Surname="Changed")
    env.crm.insert("Contacts", {"CompanyId": int(key), "Forename": "Only", "Surname": "Crm",
                                "Email": "only.crm@example.com"})
    env.reset_hits()
    result = await env.sync()
    ok(result)
    assert env.company(key)["Name"] == "Southern Cross Supplies Ltd"
    assert env.contact(contacts[cguid])["Email"] == "new.address@example.co.nz"
    assert env.contact((await env.links("contacts"))[made["Guid"]])["Surname"] == "Lee"
    assert env.ul.writes() == 0
    assert env.customer(other_guid)["PhoneNumber"] != "+64 9 555 0909"
    assert not any(c["LastName"] in ("Changed", "Crm") for c in env.ul_contacts().values())


# --- refusals must stay visible while the sides differ (UL-5, UL-7; guarantee 3) ----------
_CLEARED = (
    "a refused field's record error (retry=False) is deleted by the very next run although "
    "nothing changed and the two sides still differ in that field: the next run re-reads the "
    "pair (cursor overlap), finds both hashes equal to the link's stored bases (the refused "
    "value was taken into the base), counts it 'unchanged' and appends the ids to "
    "batch.cleared, so Batch.commit -> q.clear_errors removes the error "
    "(daemon/engine/apply.py linked_unit, the 'unchanged' early return ~line 153-160). "
    "Result: `status` shows no open error while the CRM keeps a value Unleashed refused "
    "(DESIGN guarantee 3: 'still pending with a visible error')")


async def test_ul07_refused_website_alone_stays_reported_while_it_differs(synced):
    """Website the only change: the whole update is refused, kept as a retried record error."""
    env = synced
    guid, key = await first_pair(env)
    env.crm_edit_company(key, Website=BAD_WEBSITE)
    for _ in range(3):
        assert (await env.sync()).status == "errors"
        errors = await env.errors("companies")
        assert [(e["side"], e["record_id"]) for e in errors] == [("right", key)]
        assert f"Website {BAD_WEBSITE!r} is not a valid URL." in errors[0]["message"]
        assert env.customer(guid)["Website"] != BAD_WEBSITE
        env.tick()


async def test_ul07_refused_website_with_other_fields_stays_reported_while_it_differs(synced):
    env = synced
    guid, key = await first_pair(env)
    env.crm_edit_company(key, Website=BAD_WEBSITE, Telephone="+64 9 555 0505")
    assert (await env.sync()).status == "errors"
    env.tick()
    await env.sync()                                   # no edits anywhere
    assert env.company(key)["Website"] != env.customer(guid)["Website"]
    assert [e["record_id"] for e in await env.errors("companies")] in ([guid], [key])


async def test_ul05_refused_account_manager_stays_reported_until_fixed(synced):
    env = synced
    guid, key = await first_pair(env)
    env.crm_edit_company(key, AccountManagerId=env.user_code("Emma Wright"))
    assert (await env.sync()).status == "errors"
    env.tick()
    await env.sync()                                   # no edits anywhere
    assert env.company(key)["AccountManagerId"] == "EW"
    assert env.customer(guid)["SalesPerson"]["FullName"] != "Emma Wright"
    assert [e["record_id"] for e in await env.errors("companies")] in ([guid], [key])
