"""The connector contract for Ajera and Vantagepoint, each against its sandbox over loopback,
and what is particular to each: Ajera's 200-with-ResponseCode envelope, sessions per API
version, the baseline check, its dates; Vantagepoint's token refresh and cheap idle reads."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from connectors.ajera.client import AjeraConnector
from connectors.ajera.sandbox import AjeraSandbox
from connectors.ajera.wire import parse_date
from connectors.base import AuthError, ConflictError
from connectors.sandbox import Clock
from connectors.vantagepoint.client import VantagepointConnector
from connectors.vantagepoint.sandbox import VantagepointSandbox
from tests.connector_contract import ConnectorContract

START = datetime(2024, 6, 3, 13, 0, tzinfo=timezone.utc)


def ajera(sb: AjeraSandbox, password: str = "sandbox-password") -> AjeraConnector:
    return AjeraConnector("ajera", AjeraConnector.Settings(
        base_url=sb.url, api_id=sb.id_blob, username="sandbox", password=password,
        requests_per_second=1000, attempts=3, max_wait=0))


def vantagepoint(sb: VantagepointSandbox, password: str = "sandbox-password"):
    return VantagepointConnector("crm", VantagepointConnector.Settings(
        base_url=sb.url, username="sandbox", password=password, database="Vantagepoint",
        client_id="sandbox-client", client_secret="sandbox-secret", requests_per_second=1000,
        attempts=3, max_wait=0))


class _Served(ConnectorContract):
    """The contract's fixtures for a sandbox class and a connector factory
    (``make(sandbox, password)``)."""
    sandbox_class: type = AjeraSandbox
    make = staticmethod(ajera)

    @pytest.fixture
    async def sandbox(self):
        sb = self.sandbox_class(seed=1, records=2, clock=Clock(START))
        await sb.start(0)
        yield sb
        await sb.stop()

    @pytest.fixture
    async def connector(self, sandbox):
        c = self.make(sandbox)
        await c.start()
        yield c
        await c.close()

    @pytest.fixture
    async def bad_connector(self, sandbox):
        c = self.make(sandbox, "wrong-secret")
        await c.start()
        yield c
        await c.close()


class TestAjeraContract(_Served):
    entity = "clients"
    new_fields = {"Description": "Harbor County", "Status": "Active"}
    edit_fields = {"Phone": "555-0199"}
    invalid_fields = {"Status": "Sleeping"}


class TestVantagepointContract(_Served):
    sandbox_class = VantagepointSandbox
    make = staticmethod(vantagepoint)
    entity = "firm"
    new_fields = {"Name": "Harbor County", "Status": "A"}
    edit_fields = {"Phone": "555-0199"}
    invalid_fields = {"Status": "Z"}


def test_ajera_dates_in_all_three_forms_are_utc():
    assert parse_date("2023-09-27 09:57:49.607 GMT-04:00 (Eastern Daylight Time)") == \
        datetime(2023, 9, 27, 13, 57, 49, 607000, tzinfo=timezone.utc)
    assert parse_date("2015-03-11 16:22:54.229 GMT-0700") == \
        datetime(2015, 3, 11, 23, 22, 54, 229000, tzinfo=timezone.utc)
    assert parse_date("2015-03-11") == datetime(2015, 3, 11, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        parse_date("yesterday")


async def test_ajera_expired_session_is_renewed_and_versions_get_their_own_sessions():
    sb = AjeraSandbox(seed=1, records=3, clock=Clock(START))
    await sb.start(0)
    c = ajera(sb)
    await c.start()
    try:
        assert len(await c.get("projects", ["1"])) == 1          # a version 2 session
        assert len(await c.get("clients", ["1"])) == 1           # a version 1 session
        assert sorted(v for v, _ in sb.sessions.values()) == [1, 2]
        sb.clock.advance(3 * 3600)                               # both expired
        assert len(await c.get("projects", ["1"])) == 1
    finally:
        await c.close()
        await sb.stop()


async def test_ajera_each_run_ends_the_session_the_last_run_kept():
    """check() proves the credentials with a new session each run; the old one is ended
    first, so a daemon running every few minutes leaves one session open, not one a run."""
    sb = AjeraSandbox(seed=1, records=3, clock=Clock(START))
    await sb.start(0)
    c = ajera(sb)
    await c.start()
    try:
        for _ in range(3):
            await c.check()
            assert len(await c.get("clients", ["1"])) == 1
        assert [v for v, _ in sb.sessions.values()] == [1]
    finally:
        await c.close()
        assert sb.sessions == {}
        await sb.stop()


async def test_ajera_refuses_a_write_on_a_record_changed_since_it_was_read():
    sb = AjeraSandbox(seed=1, records=2, clock=Clock(START))
    await sb.start(0)
    c = ajera(sb)
    await c.start()
    try:
        read = (await c.get("projects", ["1"]))[0]
        sb.clock.advance(5)
        sb.edit("Projects", 1, Location="Elsewhere")             # a user saves meanwhile
        with pytest.raises(ConflictError):
            await c.update("projects", "1", {"Location": "Ours"}, version=read.version)
        assert sb.data["Projects"][1]["Location"] == "Elsewhere"
    finally:
        await c.close()
        await sb.stop()


async def test_ajera_failures_arrive_as_http_200_and_are_still_errors():
    sb = AjeraSandbox(seed=1, records=1, clock=Clock(START))
    await sb.start(0)
    c = ajera(sb, "wrong-secret")
    await c.start()
    try:
        with pytest.raises(AuthError) as info:
            await c.check()
        assert "wrong-secret" not in str(info.value)
    finally:
        await c.close()
        await sb.stop()


async def test_vantagepoint_lists_keys_newest_first_and_stops_at_the_cursor():
    """A change listing asks for keys newest first and stops at the first one older than the
    cursor: an idle run over a hub of many key pages is one request; a first read lists all."""
    sb = VantagepointSandbox(seed=1, records=30, clock=Clock(START))
    await sb.start(0)
    c = VantagepointConnector("crm", VantagepointConnector.Settings(
        base_url=sb.url, username="sandbox", password="sandbox-password",
        database="Vantagepoint", client_id="sandbox-client", client_secret="sandbox-secret",
        requests_per_second=1000, key_page_size=5))
    await c.start()
    try:
        await c.check()
        every = [r.id for p in [p async for p in c.changes("project", None)] for r in p]
        assert len(every) == 30
        sb.clock.advance(600)
        since = sb.clock.now()
        keys = lambda: [h for h in sb.hits if "fieldFilter=" in h.query]  # noqa: E731
        sb.reset_hits()
        assert [p async for p in c.changes("project", since)] == []
        assert len(keys()) == 1                                  # not six pages of keys
        sb.clock.advance(60)
        edited = sorted(every[3:10])
        for k in edited:
            sb.edit("project", k, LongName=f"edited {k}")
        sb.reset_hits()
        got = sorted(r.id for p in [p async for p in c.changes("project", since)] for r in p)
        assert got == edited
        assert len(keys()) == 2                                  # 7 changed: two pages of 5
    finally:
        await c.close()
        await sb.stop()


async def test_vantagepoint_idle_read_is_one_key_listing_and_an_expired_token_is_renewed():
    sb = VantagepointSandbox(seed=1, records=30, clock=Clock(START))
    await sb.start(0)
    c = vantagepoint(sb)
    await c.start()
    try:
        await c.check()
        sb.clock.advance(3600)                                   # the token expired
        sb.reset_hits()
        since = sb.clock.now()
        pages = [p async for p in c.changes("project", since)]
        assert pages == []
        gets = [h for h in sb.hits if h.method == "GET"]
        assert len(gets) <= 2 and all("fieldFilter=WBS1" in h.query for h in gets)
        assert await c.count("project", None) == 30
    finally:
        await c.close()
        await sb.stop()


# --- requests: what each read and write costs, counted at the sandboxes --------------------
class _Methods(AjeraSandbox):
    """The Ajera sandbox, noting the method of each call after a session (``methods``)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.methods: list[str] = []

    async def _call(self, method, version, args, body):
        self.methods.append(method)
        return await super()._call(method, version, args, body)


async def _ajera_counted(records: int, **settings):
    sb = _Methods(seed=1, records=records, clock=Clock(START))
    await sb.start(0)
    c = AjeraConnector("ajera", AjeraConnector.Settings(
        base_url=sb.url, api_id=sb.id_blob, username="sandbox", password="sandbox-password",
        requests_per_second=1000, attempts=3, max_wait=0, **settings))
    await c.start()
    await c.get("projects", ["1"])               # both sessions open: they are not counted
    await c.get("clients", ["1"])
    sb.methods.clear()
    sb.reset_hits()
    return sb, c


async def test_ajera_count_is_one_request_of_one_row_whatever_the_backlog():
    """count() asks for one-row pages: the answer's PageCount is the backlog. It was the
    listing again, one request per list_page_size rows (4 here for 7 rows)."""
    sb, c = await _ajera_counted(7, list_page_size=2)
    try:
        assert await c.count("projects", None) == 7
        assert sb.methods == ["ListProjects"] and len(sb.hits) == 1        # was 4
        sb.methods.clear()
        assert await c.count("time", None) == 7
        assert sb.methods == ["ListProjectTransactions"]                  # was 4
        sb.clock.advance(60)
        since = sb.clock.now()
        assert await c.count("projects", since) == 0
        for key in (2, 4, 6):
            sb.edit("Projects", key, Location="Elsewhere")
        sb.methods.clear()
        assert await c.count("projects", since) == 3
        assert await c.count("clients", since) == 0
        assert sb.methods == ["ListProjects", "ListClients"]              # was 2 and 1
        assert await c.count("projects", since) == \
            sum([len(p) async for p in c.changes("projects", since)])
    finally:
        await c.close()
        await sb.stop()


async def test_ajera_find_lists_by_the_documented_filter_and_reads_only_what_it_lists():
    """find by projects' Description or ID, or clients' Description, lists that value only
    (FilterByDescriptionEquals, FilterByIDLike, FilterByNameEquals) and reads what it lists;
    it listed and read the whole entity (30 projects in pages of 5: 13 requests)."""
    sb, c = await _ajera_counted(30, page_size=5)
    try:
        name = sb.data["Projects"][7]["Description"]
        found = await c.find("projects", "Description", [f"  {name.upper()} "])
        assert [r.id for r in found] == ["7"] and found[0].fields["Totals.SpentLabor"] > 0
        assert sb.methods == ["ListProjects", "GetProjects", "GetProjectTotals"]  # was 13
        sb.methods.clear()
        assert [r.id for r in await c.find("projects", "ID", ["24-00012"])] == ["12"]
        assert sb.methods == ["ListProjects", "GetProjects", "GetProjectTotals"]  # was 13
        sb.methods.clear()
        assert await c.find("projects", "ID", ["24-99999"]) == []
        assert sb.methods == ["ListProjects"]                                     # was 13
        sb.methods.clear()
        client = sb.data["Clients"][3]["Description"]
        assert [r.id for r in await c.find("clients", "Description", [client])] == ["3"]
        assert sb.methods == ["ListClients", "GetClients"]                        # was 4
        sb.methods.clear()
        # two values: the first page of the whole listing gives its size (30: 12 reads);
        # two filtered listings and their reads (4) are cheaper
        names = [sb.data["Projects"][k]["Description"] for k in (3, 25)]
        assert sorted(r.id for r in await c.find("projects", "Description", names)) == \
            ["25", "3"]
        assert sb.methods == ["ListProjects"] * 3 + ["GetProjects", "GetProjectTotals"]
        sb.methods.clear()
        # e-mail has no documented filter: the whole entity, as before (1 + 30 / 5)
        email = sb.data["Employees"][9]["Email"]
        assert [r.id for r in await c.find("employees", "Email", [email])] == ["9"]
        assert sb.methods == ["ListEmployees"] + ["GetEmployees"] * 6
    finally:
        await c.close()
        await sb.stop()


async def test_ajera_find_of_several_values_on_a_small_entity_reads_it_whole():
    """Where reading everything costs no more than a filtered listing per value, the first
    page of the whole listing serves it: the same three requests as before."""
    sb, c = await _ajera_counted(30)
    try:
        names = [sb.data["Projects"][k]["Description"] for k in (3, 25)]
        assert sorted(r.id for r in await c.find("projects", "Description", names)) == \
            ["25", "3"]
        assert sb.methods == ["ListProjects", "GetProjects", "GetProjectTotals"]
    finally:
        await c.close()
        await sb.stop()


async def test_ajera_project_update_reads_back_without_its_totals():
    """The engine takes from an update's answer only the fields it wrote, and the totals
    are read only: the read back skips GetProjectTotals (three requests, not four). A create
    keeps it: the engine keeps the whole created record as its base."""
    sb, c = await _ajera_counted(3)
    try:
        updated = await c.update("projects", "1", {"Location": "Ours"})
        assert updated.fields["Location"] == "Ours" and updated.version
        assert not any(k.startswith("Totals.") for k in updated.fields)
        assert sb.methods == ["GetProjects", "UpdateProjects", "GetProjects"]     # was 4
        sb.methods.clear()
        again = await c.update("projects", "1", {"Location": "Theirs", "Totals.Billed": 5.0})
        assert again.fields["Totals.Billed"] == 0.0               # asked for: read, as stored
        assert sb.methods == ["GetProjects", "UpdateProjects", "GetProjects",
                              "GetProjectTotals"]
        sb.methods.clear()
        created = await c.create("projects", {"Description": "Harbor Annex", "Status": "Active"})
        assert created.fields["Totals.SpentLabor"] == 0.0
        assert sb.methods == ["UpdateProjects", "GetProjects", "GetProjectTotals"]
    finally:
        await c.close()
        await sb.stop()


async def test_vantagepoint_a_listing_that_counted_the_hub_reads_it_by_pages():
    """When the key listing went to the hub's end, it knows the hub's size: 30 projects are
    one page (page_size 500), not 30 reads one by one. Stopped at a cursor, the size is not
    known and up to FEW changed records are still read one by one."""
    sb = VantagepointSandbox(seed=1, records=30, clock=Clock(START))
    await sb.start(0)
    c = vantagepoint(sb)
    await c.start()
    try:
        await c.check()
        sb.reset_hits()
        every = [r for p in [p async for p in c.changes("project", None)] for r in p]
        assert len(every) == 30 and all(r.fields.get("Name") for r in every)
        gets = [h for h in sb.hits if h.method == "GET"]
        assert len(gets) == 2                                     # was 31: keys + 30 reads
        assert "fieldFilter=" in gets[0].query and gets[1].path == "/api/project"
        sb.clock.advance(600)
        since = sb.clock.now()
        sb.clock.advance(60)
        for r in every[3:10]:
            sb.edit("project", r.id, LongName=f"edited {r.id}")
        sb.reset_hits()
        got = [r for p in [p async for p in c.changes("project", since)] for r in p]
        assert sorted(r.id for r in got) == sorted(r.id for r in every[3:10])
        reads = [h for h in sb.hits if h.method == "GET"]
        assert len(reads) == 8                                    # keys + 7 one by one
        assert all(h.path.startswith("/api/project/") for h in reads[1:])
    finally:
        await c.close()
        await sb.stop()
