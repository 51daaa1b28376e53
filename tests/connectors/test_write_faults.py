"""The write path end to end, through sockets: real connectors against their sandboxes on
loopback, with the sandbox fault knobs of ``connectors/sandbox.py``.

- "stored, then 500" and "stored, then no answer before the client's timeout" (client timeout
  0.3 s): a create or update that may have been applied raises OutcomeUnknownError and is sent
  once, so the system holds exactly one record (Unleashed's writes are upserts by a Guid the
  client chose: sent again, still one record);
- "answer without some fields": the Record leaves those keys out (unknown, not empty), and a
  write made after such a read blanks nothing;
- "clock ahead": ``clock()`` follows the vendor's own clock (the Date header), not the stamps
  of a record saved by a workstation with a fast clock;
- ``identity()`` is stable for one generated sandbox and differs between two, even with the
  same seed.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from connectors.base import OutcomeUnknownError, RecordError
from connectors.prospect_crm import ProspectCrmConnector
from connectors.prospect_crm.sandbox import ProspectSandbox
from connectors.sage_sales_management import SageSalesManagementConnector
from connectors.sage_sales_management.sandbox import SageSalesManagementSandbox
from connectors.sandbox import Clock
from connectors.unleashed import UnleashedConnector
from connectors.unleashed.sandbox import UnleashedSandbox

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
TIMEOUT = 0.3              # the client's timeout; a stalled write is given up after it
HOUR = 3600


def near(when: datetime | None, expected: datetime) -> bool:
    """``clock()`` is the last Date header plus the real time elapsed since (a fraction of a
    second here); the Date header has whole seconds."""
    return when is not None and expected <= when < expected + timedelta(seconds=5)


async def read_all(connector, entity):
    return [r async for page in connector.changes(entity, None) for r in page]


# --- Prospect CRM ------------------------------------------------------------------------------

def prospect(sb: ProspectSandbox, token: str = "sandbox-token") -> ProspectCrmConnector:
    return ProspectCrmConnector("crm", ProspectCrmConnector.Settings(
        base_url=sb.url, token=token, timeout=TIMEOUT, attempts=3, max_wait=0.01))


@pytest.fixture
async def crm_sandbox():
    sb = ProspectSandbox(seed=4, records=3, clock=Clock(T0))
    await sb.start()
    yield sb
    await sb.stop()


@pytest.fixture
async def crm(crm_sandbox):
    c = prospect(crm_sandbox)
    await c.start()
    yield c
    await c.close()


def named(sb: ProspectSandbox, name: str) -> list[dict]:
    return [c for c in sb.data["Companies"].values() if c["Name"] == name]


async def test_prospect_create_stored_then_500_is_outcome_unknown_and_stored_once(
        crm, crm_sandbox):
    crm_sandbox.faults.fail_after_commit(1)
    with pytest.raises(OutcomeUnknownError) as info:
        await crm.create("companies", {"Name": "Harbour Foods Ltd"})
    assert "POST /Companies" in str(info.value) and "sandbox-token" not in str(info.value)
    assert len(named(crm_sandbox, "Harbour Foods Ltd")) == 1
    assert crm_sandbox.count("POST") == 1


async def test_prospect_create_stored_then_no_answer_before_the_timeout_is_stored_once(
        crm, crm_sandbox):
    crm_sandbox.faults.hang_after_commit(1)
    with pytest.raises(OutcomeUnknownError, match="timeout"):
        await crm.create("companies", {"Name": "Kestrel Marine LLP"})
    assert len(named(crm_sandbox, "Kestrel Marine LLP")) == 1
    assert crm_sandbox.count("POST") == 1
    # the connector goes on with the next write as usual
    assert (await crm.create("companies", {"Name": "Summit Print plc"})).fields["Name"] \
        == "Summit Print plc"


@pytest.mark.parametrize("stall", ["fail_after_commit", "hang_after_commit"])
async def test_prospect_update_that_may_have_been_applied_is_sent_once(crm, crm_sandbox, stall):
    getattr(crm_sandbox.faults, stall)(1)
    with pytest.raises(OutcomeUnknownError):
        await crm.update("companies", "1", {"Telephone": "01392 000111"})
    assert crm_sandbox.data["Companies"][1]["Telephone"] == "01392 000111"
    assert crm_sandbox.count("PATCH") == 1


async def test_prospect_answer_without_some_fields_gives_records_without_those_keys(
        crm, crm_sandbox):
    crm_sandbox.faults.drop_fields(1, "Telephone", "MainAddress.Postcode", "AccountManager")
    partial = {r.id: r for r in await read_all(crm, "companies")}
    complete = {r.id: r for r in await read_all(crm, "companies")}     # the knob is spent
    assert partial.keys() == complete.keys() and partial
    for id_, record in partial.items():
        for gone in ("Telephone", "MainAddress.Postcode", "AccountManager.UserName"):
            assert gone not in record.fields and gone in complete[id_].fields
        assert record.fields["Name"] == complete[id_].fields["Name"]
        assert record.fields["MainAddress.AddressLine3"] \
            == complete[id_].fields["MainAddress.AddressLine3"]


async def test_prospect_write_answer_without_a_field_leaves_it_out(crm, crm_sandbox):
    crm_sandbox.faults.drop_fields(1, "Website")
    created = await crm.create("companies", {"Name": "Tamar Joinery", "Website":
                                             "https://tamar.example.co.uk"})
    assert "Website" not in created.fields and created.fields["Name"] == "Tamar Joinery"
    assert crm_sandbox.data["Companies"][int(created.id)]["Website"] \
        == "https://tamar.example.co.uk"


async def test_prospect_null_values_stay_none_not_absent(crm, crm_sandbox):
    created = await crm.create("companies", {"Name": "No Phone Ltd"})
    assert created.fields["Telephone"] is None
    assert created.fields["AccountManager.UserName"] is None


async def test_prospect_clock_follows_the_sandbox_clock_not_a_fast_workstations_stamps(
        crm_sandbox):
    c = prospect(crm_sandbox)
    await c.start()
    try:
        assert c.http.server_time() is None
        assert near(await c.clock(), T0)           # one cheap request to learn it
        assert crm_sandbox.count() == 1
        crm_sandbox.faults.clock_ahead(HOUR)
        created = await c.create("companies", {"Name": "Fast Clock Ltd"})
        assert created.modified == T0 + timedelta(hours=1)
        assert near(await c.clock(), T0)
        crm_sandbox.clock.set(T0 + timedelta(minutes=10))
        await c.get("companies", [created.id])
        assert near(await c.clock(), T0 + timedelta(minutes=10))
    finally:
        await c.close()


async def test_prospect_clock_is_none_when_the_service_cannot_be_reached():
    sb = ProspectSandbox(clock=Clock(T0))
    await sb.start()
    c = prospect(sb)
    await sb.stop()                                 # nothing listens there any more
    await c.start()
    try:
        assert await c.clock() is None
    finally:
        await c.close()


async def test_prospect_identity_is_stable_and_differs_between_two_generations():
    one, two = ProspectSandbox(seed=4, records=2), ProspectSandbox(seed=4, records=2)
    await one.start()
    await two.start()
    conns = [prospect(one), prospect(one), prospect(two)]
    try:
        for c in conns:
            await c.start()
        a, again, b = [await c.identity() for c in conns]
        assert a == again == await conns[0].identity()
        assert a != b and a == f"prospect_crm:tenant/{one.instance_id}"
        assert "sandbox-token" not in a
    finally:
        for c in conns:
            await c.close()
        await one.stop()
        await two.stop()


async def test_a_stalled_write_does_not_hold_the_sandbox_shutdown(crm_sandbox):
    c = prospect(crm_sandbox)
    await c.start()
    crm_sandbox.faults.hang_after_commit(1, seconds=HOUR)
    try:
        with pytest.raises(OutcomeUnknownError):
            await c.create("companies", {"Name": "Stalled Ltd"})
    finally:
        await c.close()
    await asyncio.wait_for(crm_sandbox.stop(), 5)   # the hour-long stall ends at stop()


# --- Unleashed ---------------------------------------------------------------------------------

def unleashed(sb: UnleashedSandbox) -> UnleashedConnector:
    c = UnleashedConnector("unleashed", UnleashedConnector.Settings(
        base_url=sb.url, api_id="sandbox", api_key="sandbox-key", timeout=TIMEOUT))
    c.http.attempts, c.http.max_wait = 3, 0.01
    return c


@pytest.fixture
async def ul_sandbox():
    sb = UnleashedSandbox(seed=3, records=4, clock=Clock(T0))
    await sb.start()
    yield sb
    await sb.stop()


@pytest.fixture
async def ul(ul_sandbox):
    c = unleashed(ul_sandbox)
    await c.start()
    yield c
    await c.close()


@pytest.mark.parametrize("stall", ["fail_after_commit", "hang_after_commit"])
async def test_unleashed_create_that_may_have_been_applied_is_sent_again_to_the_same_guid(
        ul, ul_sandbox, stall):
    """Unleashed creates are upserts by a Guid the client chose: repeating one cannot
    duplicate, so it is retried like a read and the run gets the stored record."""
    getattr(ul_sandbox.faults, stall)(1)
    created = await ul.create("customers", {"CustomerName": "Weka Wholesale"})
    same = [c for c in ul_sandbox.customers.values() if c["CustomerName"] == "Weka Wholesale"]
    assert [c["Guid"] for c in same] == [created.id]
    posts = [h.path for h in ul_sandbox.hits if h.method == "POST"]
    assert posts == [f"/Customers/{created.id}"] * 2


async def test_unleashed_contact_create_sent_again_is_one_contact(ul, ul_sandbox):
    customer = sorted(ul_sandbox.customers)[0]
    before = len(ul_sandbox.contacts[customer])
    ul_sandbox.faults.hang_after_commit(1)
    contact = await ul.create("contacts", {"CustomerGuid": customer, "FirstName": "Aroha",
                                           "LastName": "Reid"})
    assert len(ul_sandbox.contacts[customer]) == before + 1
    assert contact.id in ul_sandbox.contacts[customer]


async def test_unleashed_answer_without_some_fields_gives_records_without_those_keys(
        ul, ul_sandbox):
    guid = sorted(ul_sandbox.customers)[0]
    ul_sandbox.faults.drop_fields(1, "PhoneNumber", "SalesPerson", "Addresses")
    partial = (await ul.get("customers", [guid]))[0]
    complete = (await ul.get("customers", [guid]))[0]
    gone = {"PhoneNumber", "SalesPerson.FullName", "SalesPerson.Guid", "Address.City",
            "Address.PostalCode"}
    assert not gone & partial.fields.keys() and gone <= complete.fields.keys()
    assert partial.fields["CustomerName"] == complete.fields["CustomerName"]


async def test_unleashed_contact_update_after_a_read_without_the_email_keeps_the_email(
        ul, ul_sandbox):
    """The measured loss: a contact read without EmailAddress and then written lost it."""
    customer = next(g for g, cs in sorted(ul_sandbox.contacts.items())
                    if any(c["EmailAddress"] for c in cs.values()))
    contact = next(c for c in ul_sandbox.contacts[customer].values() if c["EmailAddress"])
    email = contact["EmailAddress"]
    await ul.get("contacts", [contact["Guid"]])     # the connector learns the contact's owner
    ul_sandbox.faults.drop_fields(1, "EmailAddress")
    listed = await ul.get("contacts", [contact["Guid"]])
    assert listed and "EmailAddress" not in listed[0].fields
    ul_sandbox.faults.drop_fields(1, "EmailAddress")        # the read before the write too
    updated = await ul.update("contacts", contact["Guid"], {"PhoneNumber": "+64 9 555 0303"})
    assert ul_sandbox.contacts[customer][contact["Guid"]]["EmailAddress"] == email
    assert updated.fields["EmailAddress"] == email and updated.fields["PhoneNumber"] \
        == "+64 9 555 0303"


async def test_unleashed_address_is_not_written_over_addresses_it_was_not_shown(
        ul, ul_sandbox):
    guid = sorted(ul_sandbox.customers)[0]
    addresses = [dict(a) for a in ul_sandbox.customers[guid]["Addresses"]]
    ul_sandbox.faults.drop_fields(1, "Addresses")
    with pytest.raises(RecordError) as info:
        await ul.update("customers", guid, {"Address.City": "Dunedin"})
    assert info.value.fields == ("Address.City",)
    assert ul_sandbox.customers[guid]["Addresses"] == addresses


async def test_unleashed_clock_follows_the_sandbox_clock_not_a_fast_workstations_stamps(
        ul, ul_sandbox):
    assert near(await ul.clock(), T0)
    ul_sandbox.faults.clock_ahead(HOUR)
    created = await ul.create("customers", {"CustomerName": "Fast Clock Traders"})
    assert created.modified == T0 + timedelta(hours=1)
    assert near(await ul.clock(), T0)


async def test_unleashed_identity_is_stable_and_differs_between_two_generations():
    one, two = UnleashedSandbox(seed=3, records=2), UnleashedSandbox(seed=3, records=2)
    await one.start()
    await two.start()
    conns = [unleashed(one), unleashed(two)]
    try:
        for c in conns:
            await c.start()
        a, b = [await c.identity() for c in conns]
        assert a == await conns[0].identity() == f"unleashed:company/{one.instance_id}"
        assert a != b and "sandbox-key" not in a and "sandbox" not in a.split("/")[-1]
    finally:
        for c in conns:
            await c.close()
        await one.stop()
        await two.stop()


# --- Sage Sales Management (the same base sandbox) ---------------------------------------------

def ssm(sb: SageSalesManagementSandbox) -> SageSalesManagementConnector:
    return SageSalesManagementConnector("ssm", SageSalesManagementConnector.Settings(
        base_url=sb.url, public_key="sandbox-public", private_key="sandbox-private",
        timeout=TIMEOUT, attempts=3, max_wait=0.01))


@pytest.fixture
async def ssm_sandbox():
    sb = SageSalesManagementSandbox(seed=4, records=3, clock=Clock(T0))
    await sb.start()
    yield sb
    await sb.stop()


@pytest.fixture
async def sm(ssm_sandbox):
    c = ssm(ssm_sandbox)
    await c.start()
    yield c
    await c.close()


@pytest.mark.parametrize("stall", ["fail_after_commit", "hang_after_commit"])
async def test_ssm_create_that_may_have_been_applied_is_outcome_unknown_and_stored_once(
        sm, ssm_sandbox, stall):
    await sm.check()
    getattr(ssm_sandbox.faults, stall)(1)
    with pytest.raises(OutcomeUnknownError):
        await sm.create("accounts", {"name": "Atelier Girard"})
    assert [a["name"] for a in ssm_sandbox.records("accounts")].count("Atelier Girard") == 1
    assert ssm_sandbox.count("POST", "/api/v4/accounts") == 1


async def test_ssm_login_is_retried_like_a_read(ssm_sandbox):
    c = ssm(ssm_sandbox)
    await c.start()
    try:
        ssm_sandbox.faults.fail_next(1, 503)
        await c.check()
        assert ssm_sandbox.count("POST", "/api/v4/login") == 2
    finally:
        await c.close()


async def test_ssm_answer_without_some_fields_gives_records_without_those_keys(
        sm, ssm_sandbox):
    account = ssm_sandbox.records("accounts")[0]["id"]
    await sm.check()
    ssm_sandbox.faults.drop_fields(1, "phone", "salesRepId")
    partial = (await sm.get("accounts", [str(account)]))[0]
    complete = (await sm.get("accounts", [str(account)]))[0]
    gone = {"phone", "salesRepId.id", "salesRepId.value", "salesRep.fullName"}
    assert not gone & partial.fields.keys() and gone <= complete.fields.keys()
    assert partial.fields["name"] == complete.fields["name"]


async def test_ssm_clock_and_identity(sm, ssm_sandbox):
    ssm_sandbox.faults.clock_ahead(HOUR)
    created = await sm.create("accounts", {"name": "Horloge Rapide SARL"})
    assert created.modified == T0 + timedelta(hours=1)
    assert near(await sm.clock(), T0)
    other = SageSalesManagementSandbox(seed=4, records=3, clock=Clock(T0))
    await other.start()
    c = ssm(other)
    await c.start()
    try:
        mine = await sm.identity()
        assert mine == await sm.identity() \
            == f"sage_sales_management:implementation/{ssm_sandbox.instance_id}"
        assert await c.identity() != mine and "sandbox-p" not in mine
    finally:
        await c.close()
        await other.stop()
