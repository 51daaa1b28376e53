"""An idle run on an unchanged, already synced pair (DESIGN.md, guarantee 7 "Bounded": an idle
run costs one change query per entity per side; guarantee 4/6: nothing is written)."""
from __future__ import annotations


from urllib.parse import unquote

from tests.integration.conftest import Env

WRITES = ("POST", "PUT", "PATCH", "DELETE")


def _is_listing(hit) -> bool:
    return "orderby" in unquote(hit.query).lower()


async def test_idle_third_run_reads_one_change_query_per_entity_and_writes_nothing(
        synced: Env):
    """Requests of the third run, by kind.

    Change queries (what the assertion "one per entity per side" is about):
    - Unleashed: customers -> one ``GET /Customers/1?...orderBy=LastModifiedOn...``; contacts
      -> one more such listing (Unleashed has no contact listing: the connector lists the
      customers changed since the cursor), plus one ``GET /Customers/{guid}/Contacts`` for each
      customer that listing returns. On an idle pair that is none: the cursor stands at the
      previous run's signpost (Unleashed's clock when it read), so the 60 s overlap window
      before it holds nothing the first sync wrote once the runs are minutes apart.
    - Prospect CRM: one ``GET /Companies?$filter=LastUpdatedTimestamp ge ...&$orderby=...`` and
      one ``GET /Contacts?...`` likewise.
    Extra reads, counted separately, one per side for the credentials, the instance and the
    account facts together:
    - Unleashed: ``check()`` reads ``GET /Companies``, which also answers which instance it
      reaches (its company Guid) and the account facts both UL-6 guards ask (read once a run).
    - Prospect: ``check()`` reads ``GET /Tenant``, which also answers which instance it is.
    - reference lists (Unleashed ``GET /SalesPersons/1`` for UL-5, Prospect ``GET /Users``):
      none. They are read when a record needs them, once per run, so an idle run reads none.
    """
    env = synced
    second = await env.sync()
    assert second.status == "ok"
    env.tick()
    env.reset_hits()

    third = await env.sync()
    assert third.status == "ok", third.message

    # no writes at all
    assert env.ul.writes() == 0 and env.crm.writes() == 0
    assert not [h for h in env.ul.hits + env.crm.hits if h.method in WRITES]

    # --- Unleashed ---
    ul = env.ul.hits
    listings = [h for h in ul if h.path == "/Customers/1" and _is_listing(h)]
    assert len(listings) == 2                          # customers, contacts: one each
    assert all("modifiedSince" in h.query for h in listings)   # incremental, not full
    contact_reads = [h for h in ul if h.path.endswith("/Contacts")]
    assert contact_reads == []                  # nothing re-read from the overlap window
    assert [h.path for h in ul if h.path == "/Companies"] == ["/Companies"]  # check, id, UL-6
    assert [h.path for h in ul if h.path.lower().startswith("/salespersons")] == []
    assert len(ul) == 2 + 1                                     # nothing else

    # --- Prospect CRM ---
    crm = env.crm.hits
    changes = {p: [h for h in crm if h.path == p and _is_listing(h)]
               for p in ("/Companies", "/Contacts")}
    assert {p: len(hs) for p, hs in changes.items()} == {"/Companies": 1, "/Contacts": 1}
    assert all("LastUpdatedTimestamp ge" in unquote(hs[0].query) for hs in changes.values())
    assert [h.path for h in crm if h.path == "/Users"] == []
    assert [h.path for h in crm if h.path == "/Tenant"] == ["/Tenant"]       # check and id
    assert len(crm) == 2 + 1                                    # nothing else

    # --- the run's own account of it ---
    for step in third.steps:
        c = step.counts
        assert step.status == "ok" and step.message == ""
        assert not {k: v for k, v in c.items()
                    if v and (k.startswith(("created_", "updated_", "deleted"))
                              or k in ("errors", "conflicts", "matched", "marked", "held",
                                       "recreated", "ownership", "review"))}, (step.flow, c)
    assert {s.flow for s in third.steps} == {"companies", "contacts"}
    assert [e for e in await env.errors()] == []


async def test_idle_runs_do_not_move_what_they_stored(synced: Env):
    """Idempotent: the third run leaves the links' stored bases and the audit trail as they were."""
    env = synced
    await env.sync()
    env.tick()
    links_before = await env.rows("links")
    audit_before = await env.rows("audit")
    await env.sync()
    assert await env.rows("audit") == audit_before
    strip = ("updated_at", "seen_at", "synced_at")
    assert [{k: v for k, v in r.items() if k not in strip} for r in await env.rows("links")] \
        == [{k: v for k, v in r.items() if k not in strip} for r in links_before]


async def test_idle_run_does_not_look_up_recent_unlinked_records_again(env: Env):
    """The CRM's own two companies (never created in Unleashed: create to_left = never) and
    their contacts were edited just before the first sync, so they sit in the overlap window."""
    for key in list(env.crm.data["Companies"]):
        env.crm_edit_company(key, Telephone=f"+44 1632 96000{key}")
    for key in list(env.crm.data["Contacts"]):
        env.crm_edit_contact(key, JobTitle="Buyer")
    await env.start()
    assert (await env.sync()).status == "ok"
    env.tick()
    assert (await env.sync()).status == "ok"
    env.tick()
    env.reset_hits()
    third = await env.sync()
    assert third.status == "ok"
    assert env.ul.writes() == 0 and env.crm.writes() == 0
    lookups = [h for h in env.ul.hits if "customerName=" in h.query or "contactEmail=" in h.query]
    assert lookups == []


async def test_reference_lists_are_read_once_by_a_run_that_has_records_to_decide(synced: Env):
    """Reference data is read when a value needs it, and then once for the whole run: three
    customers given another sales person (each mapped through the CRM's users, UL-5) and two
    companies with a new website cost one ``GET /SalesPersons`` and one ``GET /Users``."""
    env = synced
    await env.sync()
    env.tick()
    guids = sorted(env.ul.customers)[:3]
    for guid in guids:
        now = env.customer(guid)["SalesPerson"]["FullName"]
        env.ul_set_salesperson(guid, "Chloe King" if now != "Chloe King" else "Alice Morgan")
    for key in list(env.crm.data["Companies"])[:2]:
        env.crm_edit_company(key, Website=f"https://example{key}.test")
    env.tick()
    env.reset_hits()
    run = await env.sync()
    assert run.status == "ok", run.message
    assert sum(s.counts["updated_right"] for s in run.steps) == 3
    assert [h.path for h in env.ul.hits if h.path.lower().startswith("/salespersons")] == [
        "/SalesPersons/1"]
    assert [h.path for h in env.crm.hits if h.path == "/Users"] == ["/Users"]


async def test_edits_no_reference_list_checks_read_no_reference_list(synced: Env):
    """Phones edited in Unleashed and a website in the CRM: no value that goes across is
    checked or mapped against a list, so neither ``GET /SalesPersons`` nor ``GET /Users`` is
    made (each would be a request above the edits themselves). The edits still arrive."""
    env = synced
    await env.sync()
    env.tick()
    links = await env.links("companies")
    guids, (other,) = sorted(links)[:2], sorted(links)[2:3]
    for i, guid in enumerate(guids):
        env.ul_edit_customer(guid, PhoneNumber=f"+64 9 555 01{i}")
    env.crm_edit_company(links[other], Website="https://example-other.test")
    env.tick()
    env.reset_hits()
    run = await env.sync()
    assert run.status == "ok", run.message
    assert sum(s.counts["updated_right"] for s in run.steps) == 2
    assert sum(s.counts["updated_left"] for s in run.steps) == 1
    assert not [h for h in env.ul.hits if h.path.lower().startswith("/salespersons")]
    assert not [h for h in env.crm.hits if h.path == "/Users"]
    assert [env.crm.data["Companies"][int(links[g])]["Telephone"] for g in guids] == [
        "+64 9 555 010", "+64 9 555 011"]
    assert env.customer(other)["Website"] == "https://example-other.test"


async def test_a_phone_left_out_of_the_first_sync_then_emptied_in_the_crm_ends_agreed(env: Env):
    """Found by the real-write-path state machine: the first sync's answers left the phone
    out on both sides, so neither base knows it; the CRM's phone is then emptied. A value
    news to both bases (the CRM's empty phone: it could be the value the company was created
    with) is not taken for an edit: the run reads the Unleashed customer by id at once and
    decides the phone from both values as on a first link; both systems agree afterwards."""
    env.ul.faults.drop_fields(20, "PhoneNumber")
    env.crm.faults.drop_fields(20, "Telephone")
    await env.start()
    assert (await env.sync()).status == "ok"
    env.ul.faults.clear()
    env.crm.faults.clear()
    links = await env.links("companies")
    emptied = [g for g, k in links.items() if env.customer(g)["PhoneNumber"]][:2]
    assert emptied
    for guid in emptied:
        env.crm_edit_company(links[guid], Telephone="")
    env.tick()
    env.reset_hits()
    run = await env.sync()
    assert run.status == "ok", run.message
    read_by_id = {h.path.split("/")[-1] for h in env.ul.hits
                  if h.method == "GET" and h.path.count("/") == 2
                  and h.path.split("/")[-1] in links}
    # two or more at once: the whole listing is fewer requests than a read each
    listed = [h for h in env.ul.hits if h.method == "GET" and h.path == "/Customers/1"
              and "modifiedSince" not in h.query and "pageSize=1000" in h.query]
    for guid in emptied:
        ul, crm = env.customer(guid)["PhoneNumber"], env.company(links[guid])["Telephone"]
        assert (ul or "") == (crm or ""), (guid, ul, crm)
        assert guid in read_by_id or (len(emptied) > 1 and listed)


async def test_a_phone_left_out_of_unleashed_answers_reaches_the_crm_on_the_next_run(env: Env):
    """Unleashed's answers leave the phone out during the first sync (the CRM's answers are
    whole): the companies are created without it, and the CRM's empty phone is known while
    Unleashed's is not. Each such customer is read again by id, once, in the next run, and
    its phone reaches the CRM (an empty value never wins over news of a value)."""
    env.ul.faults.drop_fields(20, "PhoneNumber")
    await env.start()
    assert (await env.sync()).status == "ok"
    env.ul.faults.clear()
    links = await env.links("companies")
    phoned = [g for g in links if env.customer(g)["PhoneNumber"]]
    assert phoned and all(not env.company(links[g])["Telephone"] for g in phoned)
    env.tick()
    env.reset_hits()
    assert (await env.sync()).status == "ok"
    by_id = [(h.method, h.path) for h in env.ul.hits]
    listed = [h for h in env.ul.hits if h.method == "GET" and h.path == "/Customers/1"
              and "modifiedSince" not in h.query and "pageSize=1000" in h.query]
    for guid in phoned:
        assert env.company(links[guid])["Telephone"] == env.customer(guid)["PhoneNumber"]
        # read again: by id, or (two or more) in the whole listing, fewer requests
        assert ("GET", f"/Customers/{guid}") in by_id or (len(phoned) > 1 and listed)
    env.tick()
    env.reset_hits()
    idle = await env.sync()                  # read again once, not every run
    assert idle.status == "ok"
    assert not [h for h in env.ul.hits if h.path.split("/")[-1] in links]
    assert await env.rows("rereads") == []


async def test_crm_edits_reach_unleashed_with_one_listing_read_for_the_chunk(synced: Env):
    """Unleashed has no partial update, so each customer is read before it is written. The
    engine tells the connector which customers the chunk updates; with the whole listing on
    one page, three edits made in the CRM cost one listing read and three POSTs, not three
    reads by id and three POSTs. Each POST keeps what the CRM did not change."""
    env = synced
    await env.sync()
    env.tick()
    links = await env.links("companies")
    guids = sorted(links)[:3]
    before = {g: dict(env.customer(g)) for g in guids}
    for n, guid in enumerate(guids):
        env.crm_edit_company(links[guid], Telephone=f"+64 9 555 07{n:02d}")
    env.tick()
    env.reset_hits()
    run = await env.sync()
    assert run.status == "ok", run.message
    assert sum(s.counts["updated_left"] for s in run.steps) == 3
    ul = env.ul.hits
    assert [h for h in ul if h.method == "GET" and h.path.count("/") == 2
            and h.path.split("/")[-1] in links] == []
    listing = [h for h in ul if h.method == "GET" and h.path == "/Customers/1"
               and "modifiedSince" not in h.query]
    assert len(listing) == 1 and "pageSize=1000" in listing[0].query
    assert sorted(h.path.split("/")[-1] for h in ul if h.method == "POST") == guids
    for n, guid in enumerate(guids):
        after = env.customer(guid)
        assert after["PhoneNumber"] == f"+64 9 555 07{n:02d}"
        assert after["Addresses"] == before[guid]["Addresses"]
        assert after["CustomerName"] == before[guid]["CustomerName"]
