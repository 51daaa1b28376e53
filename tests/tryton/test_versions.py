"""Conditional writes against a real trytond: versions as read, Tryton's ``_timestamp`` lock
for the party and for each contact mechanism and address, and what a user edit made between
accord's read and its write leads to (a ConflictError, nothing written)."""
from __future__ import annotations

import pytest

from connectors.base import ConflictError, RecordError
from connectors.tryton.stamps import Stamps, VersionError, loads
from tests.tryton.conftest import make_connector
from tests.tryton.server import SyncRpc


@pytest.fixture(scope="module")
def versions_db(tryton_server):
    """One copy of the template for this module (its tests only add parties)."""
    name = tryton_server.copy("versions")
    yield name
    tryton_server.drop(name)


@pytest.fixture
async def connector(proxy, versions_db):
    c = make_connector(proxy.url, versions_db)
    await c.start()
    yield c
    await c.close()


@pytest.fixture
def user(tryton_server, versions_db):
    """Edits as a Tryton user would make them, straight to trytond."""
    return SyncRpc(tryton_server.url, versions_db)


def mechanisms(user: SyncRpc, party: str, kind: str) -> list[dict]:
    return user("party.contact_mechanism", "search_read",
                [("party", "=", int(party)), ("type", "=", kind)], 0, None,
                [["id", "ASC"]], ["value"])


async def read(connector, party: str):
    got, = await connector.get("parties", [party])
    return got


def test_a_version_round_trips_and_anything_else_is_refused():
    stamps = Stamps("1.5", {"phone": (12, "1.25")}, (3, None))
    assert loads(stamps.dumps()) == stamps
    for bad in ("", "{}", "[1]", '{"p": 1}', '{"p": "1", "cm": {"phone": [1]}}',
                '{"p": "1", "a": ["x", "1"]}', "not json"):
        with pytest.raises(VersionError):
            loads(bad)


async def test_every_record_read_carries_the_stamps_of_the_records_its_fields_come_from(
        connector, user):
    made = await connector.create("parties", {
        "name": "Stamped Ltd", "phone": "01 10", "website": "https://stamped.example",
        "invoice_address.city": "Leeds"})
    assert connector.capabilities.conditional_writes
    phone, = mechanisms(user, made.id, "phone")
    website, = mechanisms(user, made.id, "website")
    address, = user("party.address", "search", [("party", "=", int(made.id))], 0, None, None)
    stamps = loads(made.version)
    assert set(stamps.mechanisms) == {"phone", "website"}
    assert stamps.mechanisms["phone"][0] == phone["id"]
    assert stamps.mechanisms["website"][0] == website["id"]
    assert stamps.address[0] == address and stamps.main
    # the same version from get, find and changes
    found, = await connector.find("parties", "name", ["Stamped Ltd"])
    listed = {r.id: r for page in [p async for p in connector.changes("parties", None)]
              for r in page}
    assert found.version == made.version == listed[made.id].version == \
        (await read(connector, made.id)).version
    contact = await connector.create("contacts", {"email": "a@stamped.example",
                                                  "party": made.id})
    assert loads(contact.version).main


async def test_a_party_renamed_in_tryton_after_it_was_read_is_a_conflict_and_keeps_the_rename(
        connector, user, proxy):
    made = await connector.create("parties", {"name": "Renamed Ltd"})
    seen = await read(connector, made.id)
    user("party.party", "write", [int(made.id)], {"name": "Renamed Ltd (user)"})
    proxy.reset()
    with pytest.raises(ConflictError) as info:
        await connector.update("parties", made.id, {"name": "Renamed Ltd (crm)"},
                               version=seen.version)
    assert f"party.party {made.id}" in info.value.message
    assert "\n" not in info.value.message
    # the stamp came from the version: nothing read the party's _timestamp again
    assert "model.party.party.search_read" not in proxy.methods
    assert (await read(connector, made.id)).fields["name"] == "Renamed Ltd (user)"


async def test_a_phone_edited_in_tryton_after_it_was_read_is_a_conflict_and_nothing_is_written(
        connector, user):
    made = await connector.create("parties", {"name": "Phoned Ltd", "phone": "01 20"})
    seen = await read(connector, made.id)
    phone, = mechanisms(user, made.id, "phone")
    # the user edits the mechanism itself: the party's own stamp does not move
    user("party.contact_mechanism", "write", [phone["id"]], {"value": "01 21"})
    assert loads((await read(connector, made.id)).version).main == loads(seen.version).main
    with pytest.raises(ConflictError) as info:
        await connector.update("parties", made.id, {"name": "Phoned Ltd (crm)",
                                                    "phone": "01 22"}, version=seen.version)
    assert f"party.contact_mechanism {phone['id']}" in info.value.message
    after = await read(connector, made.id)
    # one transaction: the party's name was not written either
    assert (after.fields["name"], after.fields["phone"]) == ("Phoned Ltd", "01 21")


async def test_a_phone_added_in_tryton_after_it_was_read_is_a_conflict_not_a_second_phone(
        connector, user):
    made = await connector.create("parties", {"name": "Added Ltd"})
    seen = await read(connector, made.id)
    user("party.contact_mechanism", "create", [{"party": int(made.id), "type": "phone",
                                                "value": "01 30"}])
    with pytest.raises(ConflictError) as info:
        await connector.update("parties", made.id, {"phone": "01 31"}, version=seen.version)
    assert "phone" in info.value.message
    assert [m["value"] for m in mechanisms(user, made.id, "phone")] == ["01 30"]


async def test_a_phone_deleted_in_tryton_after_it_was_read_is_not_created_again(
        connector, user):
    made = await connector.create("parties", {"name": "Cleared Ltd", "phone": "01 40"})
    seen = await read(connector, made.id)
    phone, = mechanisms(user, made.id, "phone")
    user("party.contact_mechanism", "delete", [phone["id"]])
    with pytest.raises(ConflictError):
        await connector.update("parties", made.id, {"phone": "01 41"}, version=seen.version)
    assert mechanisms(user, made.id, "phone") == []


async def test_an_address_edited_in_tryton_after_it_was_read_is_a_conflict(connector, user):
    made = await connector.create("parties", {"name": "Moved Ltd",
                                              "invoice_address.city": "York"})
    seen = await read(connector, made.id)
    address, = user("party.address", "search", [("party", "=", int(made.id))], 0, None, None)
    user("party.address", "write", [address], {"city": "Hull"})
    with pytest.raises(ConflictError) as info:
        await connector.update("parties", made.id, {"invoice_address.city": "Leeds"},
                               version=seen.version)
    assert f"party.address {address}" in info.value.message
    assert (await read(connector, made.id)).fields["invoice_address.city"] == "Hull"


async def test_an_update_with_a_fresh_version_goes_through_and_returns_a_new_version(
        connector, user):
    made = await connector.create("parties", {"name": "Fresh Ltd", "phone": "01 50"})
    seen = await read(connector, made.id)
    updated = await connector.update("parties", made.id, {
        "name": "Fresh Ltd (crm)", "phone": "01 51", "website": "https://fresh.example",
        "invoice_address.city": "Bath"}, version=seen.version)
    assert (updated.fields["name"], updated.fields["phone"], updated.fields["website"],
            updated.fields["invoice_address.city"]) == (
        "Fresh Ltd (crm)", "01 51", "https://fresh.example", "Bath")
    assert updated.version != seen.version
    assert updated.version == (await read(connector, made.id)).version
    # the new version is the one to write with next; the old one now names stale stamps
    again = await connector.update("parties", made.id, {"phone": ""},
                                   version=updated.version)
    assert again.fields["phone"] is None
    with pytest.raises(ConflictError):
        await connector.update("parties", made.id, {"name": "Stale"}, version=seen.version)
    # a contact (an e-mail mechanism of its own) is locked by its own stamp
    contact = await connector.create("contacts", {"email": "b@fresh.example",
                                                  "party": made.id})
    edited = await connector.update("contacts", contact.id, {"last_name": "Lee"},
                                    version=contact.version)
    assert edited.fields["name"] == "Lee" and edited.version != contact.version
    user("party.contact_mechanism", "write", [int(contact.id)], {"name": "Jo Lee"})
    with pytest.raises(ConflictError):
        await connector.update("contacts", contact.id, {"last_name": "Smith"},
                               version=edited.version)
    assert (await connector.get("contacts", [contact.id]))[0].fields["name"] == "Jo Lee"


async def test_a_phone_update_does_not_refuse_or_undo_a_rename_made_meanwhile(
        connector, user):
    """Only the records written are locked: the phone's, not the party's."""
    made = await connector.create("parties", {"name": "Apart Ltd", "phone": "01 60"})
    seen = await read(connector, made.id)
    user("party.party", "write", [int(made.id)], {"name": "Apart Ltd (user)"})
    updated = await connector.update("parties", made.id, {"phone": "01 61"},
                                     version=seen.version)
    assert (updated.fields["name"], updated.fields["phone"]) == ("Apart Ltd (user)", "01 61")


async def test_without_a_version_nothing_is_locked_and_no_stamp_is_fetched(
        connector, user, proxy):
    made = await connector.create("parties", {"name": "Unlocked Ltd"})
    user("party.party", "write", [int(made.id)], {"name": "Unlocked Ltd (user)"})
    proxy.reset()
    updated = await connector.update("parties", made.id, {"name": "Unlocked Ltd (crm)"})
    assert updated.fields["name"] == "Unlocked Ltd (crm)"
    assert proxy.methods.count("model.party.party.search_read") == 1     # the read-back


async def test_a_version_the_connector_did_not_write_is_refused_and_nothing_is_written(
        connector):
    made = await connector.create("parties", {"name": "Garbled Ltd"})
    with pytest.raises(RecordError) as info:
        await connector.update("parties", made.id, {"name": "Garbled"}, version="etag-1")
    assert not isinstance(info.value, ConflictError)
    assert (await read(connector, made.id)).fields["name"] == "Garbled Ltd"
