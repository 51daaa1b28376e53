"""What the Tryton connector reads once per run, counted on the wire (the fault proxy logs
every JSON-RPC method): ``identity()`` and ``options("account")`` share one
``company.company`` read, and a new run (``check()``) reads it again."""
from __future__ import annotations

import pytest

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
