"""The Tryton connector against a real trytond: the contract every connector passes, and
what is particular to Tryton (typed values, keyset paging, deletes from ir.model.log,
archives, contact mechanisms and addresses, errors, a refused session)."""
from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from connectors.base import AuthError, NotFoundError, RecordError
from connectors.tryton.wire import decode, encode, error_message
from tests.connector_contract import ConnectorContract
from tests.tryton.conftest import make_connector
from tests.tryton.server import PASSWORD, SyncRpc


@pytest.fixture(scope="module")
def shared_db(tryton_server):
    """The contract tests share one copy of the template (they only add records)."""
    name = tryton_server.copy("contract")
    yield name
    tryton_server.drop(name)


@pytest.fixture
async def sandbox(proxy):
    """The "sandbox" of the contract is the real server behind the fault proxy: it has the
    contract's ``faults``; the one test that steps a sandbox clock is overridden below."""
    return proxy


@pytest.fixture
async def connector(proxy, shared_db):
    c = make_connector(proxy.url, shared_db)
    await c.start()
    yield c
    await c.close()


@pytest.fixture
async def bad_connector(tryton_server, shared_db):
    c = make_connector(tryton_server.url, shared_db, password="not-the-secret")
    await c.start()
    yield c
    await c.close()


class TestTrytonContract(ConnectorContract):
    entity = "parties"
    new_fields = {"name": "Contract Co", "email": "contract@example.com",
                  "phone": "+44 20 7946 0000", "invoice_address.street1": "1 High Street",
                  "invoice_address.city": "Leeds",
                  "invoice_address.country": "United Kingdom"}
    edit_fields = {"phone": "+44 20 7946 0999", "invoice_address.street1": "2 Low Road"}
    invalid_fields = {"code": "1"}          # the template company's party has code 1: unique

    async def test_changes_since_leaves_older_records_out(self, connector, sandbox):
        """Tryton keeps its own clock: ``since`` is taken just after the older record's
        stored ``last_modified_at`` instead of stepping a sandbox clock."""
        old = await connector.create(self.entity, dict(self.new_fields))
        since = old.modified + timedelta(microseconds=1)
        new = await connector.create(self.entity, dict(self.new_fields))
        assert new.modified >= since
        ids = {r.id for r in await self._all(connector, since)}
        assert new.id in ids and old.id not in ids


def test_typed_values_round_trip():
    at = datetime(2024, 6, 3, 9, 30, 1, 250, tzinfo=timezone.utc)
    value = {"a": at, "b": date(2024, 2, 29), "c": Decimal("12.50"), "d": [b"x", 1, "t"]}
    wire = encode(value)
    assert wire["a"] == {"__class__": "datetime", "year": 2024, "month": 6, "day": 3,
                         "hour": 9, "minute": 30, "second": 1, "microsecond": 250}
    assert wire["c"] == {"__class__": "Decimal", "decimal": "12.50"}
    assert decode(wire) == value
    # aware datetimes in another zone go over as naive UTC
    paris = at.astimezone(timezone(timedelta(hours=2)))
    assert encode(paris) == wire["a"]


def test_error_members_become_messages():
    assert error_message(["UserError", ["The code must be unique.", "Pick another.", None]]) \
        == ("UserError", "The code must be unique. Pick another.")
    assert error_message(["ConcurrencyException", "Records were modified in the meanwhile"]) \
        == ("ConcurrencyException", "Records were modified in the meanwhile")
    assert error_message(["KeyError: 'x'", "Traceback..."])[0] == "ServerError"


async def _all(c, entity, since=None):
    out = []
    async for page in c.changes(entity, since):
        out.extend(page)
    return out


async def test_party_fields_mechanisms_and_invoicing_address(connector, tryton_server,
                                                             shared_db):
    created = await connector.create("parties", {
        "name": "  Fields Ltd ", "email": "a@fields.example", "mobile": "+33 6 12 34 56 78",
        "website": "https://fields.example", "invoice_address.street1": "1 Rue A",
        "invoice_address.street2": "Bâtiment B", "invoice_address.postal_code": "75001",
        "invoice_address.city": "Paris", "invoice_address.country": "FR"})
    f = created.fields
    assert f["name"] == "Fields Ltd" and f["code"] and f["active"] is True
    assert f["invoice_address.street"] == "1 Rue A\nBâtiment B"
    assert f["invoice_address.country"] == "France" and f["phone"] is None
    rpc = SyncRpc(tryton_server.url, shared_db)
    mechs = rpc("party.contact_mechanism", "search_read", [("party", "=", int(created.id))],
                0, None, None, ["type", "value"])
    assert {(m["type"], m["value"]) for m in mechs} == {
        ("email", "a@fields.example"), ("mobile", "+33 6 12 34 56 78"),
        ("website", "https://fields.example")}
    # clearing a mechanism deletes it; a second address without the flag is not the one used
    rpc("party.address", "create", [{"party": int(created.id), "city": "Elsewhere"}])
    updated = await connector.update("parties", created.id, {
        "mobile": "", "invoice_address.city": "Lyon"})
    assert updated.fields["mobile"] is None and updated.fields["invoice_address.city"] == "Lyon"
    assert updated.fields["email"] == "a@fields.example"
    found = await connector.find("parties", "email", ["A@FIELDS.example"])
    assert [r.id for r in found] == [created.id]
    with pytest.raises(RecordError) as info:
        await connector.update("parties", created.id, {"invoice_address.country": "Atlantis"})
    assert info.value.fields == ("invoice_address.country",)


async def test_keyset_paging_rereads_a_record_edited_while_pages_are_read(
        proxy, shared_db, tryton_server):
    c = make_connector(proxy.url, shared_db, page_size=2)
    await c.start()
    try:
        start = datetime.now(timezone.utc) - timedelta(seconds=5)
        made = [await c.create("parties", {"name": f"Page {i}"}) for i in range(5)]
        rpc = SyncRpc(tryton_server.url, shared_db)
        seen: list[str] = []
        async for page in c.changes("parties", made[0].modified):
            seen.extend(r.id for r in page)
            if len(seen) == 2:                       # a user edits the first one meanwhile
                rpc("party.party", "write", [int(made[0].id)], {"name": "Page 0 edited"})
        assert seen.count(made[0].id) == 2 and set(seen) >= {m.id for m in made}
        assert start < made[0].modified
    finally:
        await c.close()


async def test_a_mechanism_or_address_edit_alone_marks_the_party_changed(
        connector, tryton_server, shared_db):
    created = await connector.create("parties", {"name": "Mech Ltd", "phone": "01 23"})
    rpc = SyncRpc(tryton_server.url, shared_db)
    mech, = rpc("party.contact_mechanism", "search", [("party", "=", int(created.id))],
                0, None, None)
    since = created.modified + timedelta(microseconds=1)
    assert created.id not in {r.id for r in await _all(connector, "parties", since)}
    rpc("party.contact_mechanism", "write", [mech], {"value": "01 24"})
    got = {r.id: r for r in await _all(connector, "parties", since)}
    assert got[created.id].fields["phone"] == "01 24"
    assert got[created.id].modified > created.modified


async def test_deletes_come_from_ir_model_log_and_archives_from_active(
        connector, tryton_server, shared_db):
    a = await connector.create("parties", {"name": "Gone Ltd"})
    b = await connector.create("parties", {"name": "Archived Ltd"})
    c = await connector.create("parties", {"name": "Newest Gone Ltd"})
    since = c.modified + timedelta(microseconds=1)
    await connector.delete("parties", a.id)
    await connector.delete("parties", c.id)            # the highest id: above every left one
    await connector.update("parties", b.id, {"active": False})
    got = {r.id: r for r in await _all(connector, "parties", since)}
    assert got[a.id].deleted and got[c.id].deleted and got[a.id].modified >= since
    assert not got[b.id].deleted and got[b.id].fields["active"] is False
    assert await connector.get("parties", [a.id]) == []
    assert [r.id for r in await connector.get("parties", [b.id])] == [b.id]
    with pytest.raises(NotFoundError):
        await connector.delete("parties", a.id)
    # a quiet window costs one search_count on the log
    later = datetime.now(timezone.utc) + timedelta(seconds=5)
    assert await _all(connector, "parties", later) == []


async def test_a_refused_session_logs_in_again_once(connector, proxy):
    await connector.check()
    assert connector.logins == 1
    connector._session = "bm90OmEtc2Vzc2lvbg=="          # expired / logged out elsewhere
    assert await connector.get("parties", ["1"])
    assert connector.logins == 2


async def test_login_with_a_wrong_password_is_an_auth_error_without_the_secret(bad_connector):
    with pytest.raises(AuthError) as info:
        await bad_connector.get("parties", ["1"])
    assert "not-the-secret" not in str(info.value)


async def test_tryton_user_error_is_a_record_error_with_its_message(connector):
    with pytest.raises(RecordError) as info:
        await connector.create("parties", {"name": "Dup", "code": "1"})
    assert "code" in info.value.message.lower() or "unique" in info.value.message.lower()


async def test_products_and_customer_invoices_are_read_with_typed_values(connector, tryton_server, shared_db):
    rpc = SyncRpc(tryton_server.url, shared_db)
    unit, = rpc("product.uom", "search", [("name", "=", "Unit")], 0, 1, None)
    rpc("product.template", "create", [{
        "name": "Widget", "default_uom": unit, "type": "goods",
        "list_price": Decimal("12.50"), "products": [["create", [{"suffix_code": "W-1"}]]]}])
    products = await _all(connector, "products")
    widget = next(p for p in products if p.fields["name"] == "Widget")
    assert widget.fields["list_price"] == Decimal("12.50")
    assert widget.fields["code"] == "W-1" and widget.fields["uom"] == "Unit"
    with pytest.raises(RecordError):
        await connector.create("products", {"name": "No"})

    # a draft customer invoice: a minimal chart (receivable, revenue), the demo journal
    company = rpc.context["company"]
    rtype, = rpc("account.account.type", "create", [{
        "name": "Receivable", "statement": "balance", "assets": True, "receivable": True,
        "company": company}])
    vtype, = rpc("account.account.type", "create", [{
        "name": "Revenue", "statement": "income", "revenue": True, "company": company}])
    receivable, = rpc("account.account", "create", [{
        "name": "Customers", "code": "411", "type": rtype, "reconcile": True,
        "party_required": True, "company": company}])
    revenue, = rpc("account.account", "create", [{
        "name": "Sales", "code": "701", "type": vtype, "company": company}])
    party = await connector.create("parties", {"name": "Invoiced Ltd",
                                               "invoice_address.city": "Leeds"})
    address, = rpc("party.address", "search", [("party", "=", int(party.id))], 0, 1, None)
    journal, = rpc("account.journal", "search", [("type", "=", "revenue")], 0, 1, None)
    eur, = rpc("currency.currency", "search", [("code", "=", "EUR")], 0, 1, None)
    invoice, = rpc("account.invoice", "create", [{
        "type": "out", "party": int(party.id), "invoice_address": address,
        "account": receivable, "journal": journal, "currency": eur, "company": company,
        "invoice_date": date(2024, 6, 3), "reference": "PO-1",
        "lines": [["create", [{"type": "line", "description": "Widget", "quantity": 2,
                               "unit_price": Decimal("12.50"), "account": revenue,
                               "currency": eur, "company": company}]]]}])
    got, = await _all(connector, "invoices")
    assert got.id == str(invoice) and got.modified is not None
    assert {k: got.fields[k] for k in ("party", "invoice_date", "state", "currency",
                                       "reference", "total_amount", "untaxed_amount")} == {
        "party": party.id, "invoice_date": date(2024, 6, 3), "state": "draft",
        "currency": "EUR", "reference": "PO-1", "total_amount": Decimal("25.00"),
        "untaxed_amount": Decimal("25.00")}
    assert [r.id for r in await connector.get("invoices", [str(invoice)])] == [str(invoice)]


async def test_contacts_are_named_email_mechanisms_of_a_party(connector):
    party = await connector.create("parties", {"name": "Contacts Ltd", "phone": "01 11"})
    made = await connector.create("contacts", {"first_name": "Ann Marie", "last_name": "Smith",
                                               "email": "ann@contacts.example",
                                               "party": party.id})
    assert made.fields == {"name": "Ann Marie Smith", "first_name": "Ann Marie",
                           "last_name": "Smith", "email": "ann@contacts.example",
                           "party": party.id, "active": True}
    edited = await connector.update("contacts", made.id, {"last_name": "Jones"})
    assert edited.fields["name"] == "Ann Marie Jones"
    listed = {r.id for r in await _all(connector, "contacts", made.modified)}
    assert made.id in listed
    found = await connector.find("contacts", "email", ["ANN@contacts.example"])
    assert [r.id for r in found] == [made.id]
    # the party's phone is a phone mechanism, not a contact
    assert all(r.fields["email"] for r in await _all(connector, "contacts"))
    with pytest.raises(RecordError):
        await connector.create("contacts", {"last_name": "NoParty", "email": "x@y.example"})
    await connector.delete("contacts", made.id)
    gone = {r.id: r for r in await _all(connector, "contacts", made.modified)}
    assert gone[made.id].deleted


async def test_concurrent_calls_share_one_new_login(connector):
    await connector.check()
    connector._session = "bm90OmEtc2Vzc2lvbg=="
    results = await asyncio.gather(*(connector.get("parties", ["1"]) for _ in range(5)))
    assert all(r for r in results)
    assert connector.logins == 2          # one new login for the five refused calls


class TestTrytonContactsContract(ConnectorContract):
    """The contract again, for e-mail contacts (party 1 is the template company's party)."""
    entity = "contacts"
    new_fields = {"first_name": "Ann", "last_name": "Lee", "email": "ann.lee@example.com",
                  "party": "1"}
    edit_fields = {"email": "ann@lee.example", "last_name": "Lee-Smith"}
    # a party that does not exist (PostgreSQL-backed Tryton refuses it by foreign key; on
    # SQLite the connector checks it, see _contact_values)
    invalid_fields = {"party": "999999"}

    async def test_changes_since_leaves_older_records_out(self, connector, sandbox):
        old = await connector.create(self.entity, dict(self.new_fields))
        since = old.modified + timedelta(microseconds=1)
        new = await connector.create(self.entity, dict(self.new_fields))
        ids = {r.id for r in await self._all(connector, since)}
        assert new.id in ids and old.id not in ids


async def test_clock_is_the_date_tryton_last_answered_with(tryton_server, shared_db):
    c = make_connector(tryton_server.url, shared_db)
    await c.start()
    try:
        before = datetime.now(timezone.utc).replace(microsecond=0)
        first = await c.clock()             # nothing answered yet: one common.server.version
        assert c.http.requests == 1
        assert first.tzinfo is not None and before <= first <= datetime.now(timezone.utc)
        made = await c.create("parties", {"name": "Clocked Ltd"})
        sent = c.http.requests
        now = await c.clock()               # the Date of the read-back: no request of its own
        assert c.http.requests == sent
        assert made.modified.replace(microsecond=0) <= now <= datetime.now(timezone.utc)
    finally:
        await c.close()


async def test_identity_is_the_database_and_company_stable_and_without_the_password(
        tryton_server, shared_db, tryton_db):
    a = make_connector(tryton_server.url, shared_db)
    b = make_connector(tryton_server.url, tryton_db)
    for c in (a, b):
        await c.start()
    try:
        mine = await a.identity()
        assert repr(shared_db) in mine and "company 1 created" in mine
        assert PASSWORD not in mine.replace(f"'{shared_db}'", "")
        await a.check()                               # a new login, the same instance
        assert await a.identity() == mine
        other = await b.identity()
        assert other != mine and repr(tryton_db) in other
        # renaming the company changes nothing: the name is not part of it
        SyncRpc(tryton_server.url, tryton_db)("party.party", "write", [1],
                                              {"name": "Renamed Company"})
        assert await b.identity() == other
    finally:
        for c in (a, b):
            await c.close()
