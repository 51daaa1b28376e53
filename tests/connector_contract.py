"""The contract every connector passes, against its sandbox over real loopback HTTP.

A connector's test module subclasses ``ConnectorContract`` and provides the fixtures
``sandbox`` (started), ``connector`` (started, pointed at the sandbox) and
``bad_connector`` (wrong credentials), plus the class attributes below.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from connectors.base import (AuthError, NotFoundError, Record, RecordError, system_clock,
                             system_identity)


class ConnectorContract:
    entity: str = ""                  # an entity that can be created, updated, listed
    new_fields: dict = {}             # valid fields for create()
    edit_fields: dict = {}            # a valid partial update
    invalid_fields: dict = {}         # fields the vendor refuses (validation)

    async def _all(self, connector, since=None) -> list[Record]:
        out: list[Record] = []
        async for page in connector.changes(self.entity, since):
            out.extend(page)
        return out

    async def test_check_accepts_good_credentials(self, connector):
        await connector.check()

    async def test_check_refuses_bad_credentials_with_auth_error(self, bad_connector):
        with pytest.raises(AuthError) as info:
            await bad_connector.check()
        assert "secret" not in str(info.value).lower()

    async def test_create_returns_the_stored_record_and_it_is_listed(self, connector):
        created = await connector.create(self.entity, dict(self.new_fields))
        assert created.id
        for key, value in self.new_fields.items():
            assert created.fields.get(key) == value, key
        listed = {r.id: r for r in await self._all(connector)}
        assert created.id in listed
        got = await connector.get(self.entity, [created.id])
        assert [r.id for r in got] == [created.id]

    async def test_update_is_partial_and_returns_what_was_stored(self, connector):
        created = await connector.create(self.entity, dict(self.new_fields))
        updated = await connector.update(self.entity, created.id, dict(self.edit_fields))
        for key, value in self.edit_fields.items():
            assert updated.fields.get(key) == value, key
        for key, value in self.new_fields.items():
            if key not in self.edit_fields:
                assert updated.fields.get(key) == value, key

    async def test_changes_since_leaves_older_records_out(self, connector, sandbox):
        old = await connector.create(self.entity, dict(self.new_fields))
        sandbox.clock.advance(3600)
        since = sandbox.clock.now() - timedelta(seconds=1)
        new = await connector.create(self.entity, dict(self.new_fields))
        ids = {r.id for r in await self._all(connector, since)}
        assert new.id in ids and old.id not in ids

    async def test_get_leaves_missing_ids_out(self, connector):
        assert await connector.get(self.entity, ["00000000-0000-0000-0000-000000000000"]) == []

    async def test_update_of_a_missing_record_is_not_found(self, connector):
        with pytest.raises(NotFoundError):
            await connector.update(self.entity, "00000000-0000-0000-0000-000000000000",
                                   dict(self.edit_fields))

    async def test_invalid_record_is_a_record_error_with_the_vendor_message(self, connector):
        if not self.invalid_fields:
            pytest.skip("this entity has no vendor validation to trip")
        with pytest.raises(RecordError) as info:
            await connector.create(self.entity, {**self.new_fields, **self.invalid_fields})
        assert info.value.message

    async def test_transient_faults_are_retried(self, connector, sandbox):
        sandbox.faults.fail_next(2, 503)
        await connector.check()

    async def test_429_honours_retry_after(self, connector, sandbox):
        sandbox.faults.fail_next(1, 429, retry_after=0)
        await connector.check()
        assert connector.http.throttled >= 1

    async def test_clock_is_the_systems_time_as_aware_utc_or_none(self, connector):
        now = await system_clock(connector)
        assert now is None or (isinstance(now, datetime) and now.utcoffset() == timedelta(0))

    async def test_identity_is_a_stable_string_or_none(self, connector):
        first = await system_identity(connector)
        assert first is None or (isinstance(first, str) and first.strip())
        assert await system_identity(connector) == first
