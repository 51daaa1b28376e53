"""Fixtures around a real trytond (see server.py): one server and one template per session,
a fresh copy of the template per test that needs one, a fault proxy in front of it."""
from __future__ import annotations

import pytest

from connectors.tryton import TrytonConnector
from tests.tryton.server import PASSWORD, FaultProxy, SyncRpc, TrytonServer


@pytest.fixture(scope="session")
def tryton_server(tmp_path_factory):
    server = TrytonServer(tmp_path_factory.mktemp("trytond"))
    try:
        server.prepare_template()
        yield server
    finally:
        server.stop()


@pytest.fixture
def tryton_db(tryton_server):
    """A fresh database, copied from the template; dropped after the test."""
    name = tryton_server.copy()
    yield name
    tryton_server.drop(name)


@pytest.fixture
def tryton_rpc(tryton_server, tryton_db):
    """Edits "as a user would", straight to trytond (not through the proxy)."""
    return SyncRpc(tryton_server.url, tryton_db)


@pytest.fixture
async def proxy(tryton_server):
    p = await FaultProxy(tryton_server.url).start()
    yield p
    await p.stop()


def make_connector(url: str, database: str, password: str = PASSWORD, login: str = "admin",
                   **settings) -> TrytonConnector:
    return TrytonConnector("tryton", TrytonConnector.Settings(
        base_url=url, database=database, login=login, password=password,
        attempts=3, max_wait=0.05, **settings))
