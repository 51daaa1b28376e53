"""A Tryton user short of a permission, against a real trytond: one AuthError line naming the
model, the permission and what grants it in trytond 8.2; granting exactly that fixes it."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import count

import pytest

from connectors.base import AuthError, RecordError
from tests.tryton.conftest import make_connector
from tests.tryton.server import SyncRpc

SECRET = "Accord-Secret-42"
LOGINS = (f"accord{i}" for i in count(1))     # users cannot be deleted: one per test


@pytest.fixture(scope="module")
def perms_db(tryton_server):
    name = tryton_server.copy("perms")
    yield name
    tryton_server.drop(name)


@pytest.fixture
def admin(tryton_server, perms_db):
    return SyncRpc(tryton_server.url, perms_db)


@pytest.fixture
def plain_user(admin) -> tuple[int, str]:
    """A new user with no group and without the Administrator box: (id, login)."""
    login = next(LOGINS)
    uid, = admin("res.user", "create", [{"name": "Accord", "login": login,
                                         "password": SECRET}])
    return uid, login


@pytest.fixture
async def connector(proxy, perms_db, plain_user):
    c = make_connector(proxy.url, perms_db, login=plain_user[1], password=SECRET)
    await c.start()
    yield c
    await c.close()


async def _all(c, entity, since=None):
    return [r async for page in c.changes(entity, since) for r in page]


async def test_a_user_who_may_not_search_the_delete_log_gets_one_auth_error_line_naming_it(
        connector, admin, plain_user):
    await connector.check()
    assert await _all(connector, "parties")           # a first, full read needs no log
    since = datetime.now(timezone.utc) - timedelta(minutes=5)
    with pytest.raises(AuthError) as info:
        await _all(connector, "parties", since)
    message = info.value.message
    assert "ir.model.log" in message and "Administrator" in message
    assert repr(plain_user[1]) in message
    assert "\n" not in message and SECRET not in message
    assert "Administration'" not in message           # no such group in trytond 8.2
    # what the message says is what it takes
    admin("res.user", "write", [plain_user[0]], {"administrator": True})
    assert await _all(connector, "parties", since) is not None


async def test_a_user_without_the_group_for_invoices_gets_an_auth_error_naming_it(
        connector, admin, plain_user):
    with pytest.raises(AuthError) as info:
        await connector.get("invoices", ["1"])
    message = info.value.message
    assert "read account.invoice" in message
    assert "'Accounting' or 'Sales'" in message and "\n" not in message
    sales, = admin("res.group", "search", [("name", "=", "Sales")], 0, 1, None)
    admin("res.user", "write", [plain_user[0]], {"groups": [["add", [sales]]]})
    assert await connector.get("invoices", ["1"]) == []


async def test_a_validation_error_of_that_user_stays_a_record_error(connector):
    with pytest.raises(RecordError) as info:
        await connector.create("parties", {"name": "Dup", "code": "1"})
    assert not isinstance(info.value, AuthError)
