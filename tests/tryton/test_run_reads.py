"""What the Tryton connector reads once per run, counted on the wire (the fault proxy logs
every JSON-RPC method): ``identity()`` and ``options("account")`` share one
``company.company`` read, and a new run (``check()``) reads it again."""
from __future__ import annotations

import pytest

from connectors.base import NotFoundError

from tests.tryton.conftest import make_connector

COMPANY_READ = "model.company.company.search_read"


@pytest.fixture
async def connector(proxy, tryton_db):
    c = make_connector(proxy.url, tryton_db)
    await c.start()
    yield c
    await c.close()


async def test_identity_and_account_options_share_one_company_read_per_run(
        connector, proxy, tryton_db, tryton_rpc):
    await connector.check()
    proxy.reset()
    mine = await connector.identity()
    account = await connector.options("account")
    assert await connector.identity() == mine
    assert await connector.options("account") == account
    assert proxy.methods.count(COMPANY_READ) == 1, proxy.methods
    assert proxy.methods == [COMPANY_READ]
    assert repr(tryton_db) in mine and "company 1 created" in mine
    assert account == {"database": tryton_db, "companies": 1, "company": 1,
                       "company_names": ["Accord Test Ltd"]}

    # a new run reads it again (the other way round this time): nothing is kept across runs
    tryton_rpc("party.party", "write", [1], {"name": "Renamed Company"})
    await connector.check()
    proxy.reset()
    again = await connector.options("account")
    assert await connector.identity() == mine         # the name is not part of it
    assert proxy.methods.count(COMPANY_READ) == 1, proxy.methods
    assert again == {**account, "company_names": ["Renamed Company"]}


async def test_each_check_starts_a_run_that_reads_the_companies_once(connector, proxy):
    counts = []
    for _ in range(3):
        await connector.check()
        proxy.reset()
        await connector.options("account")
        await connector.identity()
        await connector.options("account")
        counts.append(proxy.methods.count(COMPANY_READ))
    assert counts == [1, 1, 1]


async def test_a_chunks_party_updates_read_what_they_need_together(connector, proxy):
    """Three party updates told together: the existence check, the addresses and the
    mechanisms are three calls for the three, not three each; each update still keeps what
    it did not write (the other mechanisms, the address)."""
    made = [await connector.create("parties", {
        "name": f"Ahead {n} Ltd", "email": f"a{n}@ahead.example", "phone": f"01 0{n}",
        "invoice_address.city": "Paris"}) for n in range(3)]
    proxy.reset()
    await connector.will_update("parties", {p.id: {"phone"} for p in made})
    told = list(proxy.methods)
    assert told == ["model.party.party.search", "model.party.address.search_read",
                    "model.party.contact_mechanism.search_read"]
    for n, p in enumerate(made):
        got = await connector.update("parties", p.id, {"phone": f"02 0{n}"}, p.version)
        assert got.fields["phone"] == f"02 0{n}"
        assert got.fields["email"] == f"a{n}@ahead.example"
        assert got.fields["invoice_address.city"] == "Paris"
    assert proxy.methods.count("model.party.address.search_read") == 1 + 3   # + read-backs
    assert "model.party.party.search" not in proxy.methods[len(told):]
    # one more update of the first: read on its own again, never from the kept copy
    proxy.reset()
    await connector.update("parties", made[0].id, {"phone": "03 00"})
    assert proxy.methods[0] == "model.party.party.search"


async def test_a_chunks_contact_updates_read_them_in_one_call(connector, proxy):
    party = await connector.create("parties", {"name": "Ahead Contacts Ltd"})
    made = [await connector.create("contacts", {
        "first_name": f"Ann {n}", "last_name": "Smith", "email": f"ann{n}@ahead.example",
        "party": party.id}) for n in range(3)]
    proxy.reset()
    await connector.will_update("contacts", {c.id: {"last_name"} for c in made})
    assert len(proxy.methods) == 1
    proxy.reset()
    for c in made:
        got = await connector.update("contacts", c.id, {"last_name": "Jones"})
        assert got.fields["name"] == f"{c.fields['first_name']} Jones"
    # each update: the write and the read-back, nothing read first
    assert [m.rsplit(".", 1)[-1] for m in proxy.methods] == ["write", "search_read"] * 3


async def test_a_party_gone_before_its_update_is_still_refused(connector, proxy, tryton_rpc):
    a, b = [await connector.create("parties", {"name": f"Gone {n} Ltd"}) for n in range(2)]
    tryton_rpc("party.party", "delete", [int(b.id)])
    await connector.will_update("parties", {a.id: {"name"}, b.id: {"name"}})
    assert (await connector.update("parties", a.id, {"name": "Kept Ltd"})).fields["name"] \
        == "Kept Ltd"
    with pytest.raises(NotFoundError):
        await connector.update("parties", b.id, {"name": "Back Ltd"})
