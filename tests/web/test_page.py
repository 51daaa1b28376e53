"""The status page's words and HTML (daemon/page.py, daemon/describe.py): systems by name, flows
in a sentence, relative times with the absolute one in the title, labelled counts, the last 20
runs, record errors by name with their buttons, failures with their reason, jobs."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import insert

from daemon import describe, page
from daemon.engine.rules import FlowRules
from daemon.store.tables import T
from tests.web.conftest import companies, get, refused_company, start_service, web_config

NAMES = {"left": "sage50", "right": "salesmgmt"}
NOW = datetime(2026, 5, 4, 12, 0, 0, tzinfo=timezone.utc)


def contacts() -> FlowRules:
    return FlowRules.model_validate({
        "name": "contacts", "left_entity": "contacts", "right_entity": "contacts",
        "direction": "left_to_right", "match": [{"left": "EMAIL", "right": "email"}],
        "create": {"to_left": {"mode": "never"}},
        "delete": {"to_right": {"action": "mark", "mark": {"deleted": True}}},
        "fields": [{"left": "FIRST_NAME", "right": "firstName"},
                   {"left": "LAST_NAME", "right": "lastName"},
                   {"left": "EMAIL", "right": "email"},
                   {"left": "SalesRep.FullName", "right": "salesRep.name", "name": "rep"}]})


# --- words -------------------------------------------------------------------------------------
def test_relative_times():
    assert page.relative(NOW - timedelta(seconds=2), NOW) == "just now"
    assert page.relative(NOW - timedelta(seconds=42), NOW) == "42 s ago"
    assert page.relative(NOW - timedelta(minutes=3, seconds=10), NOW) == "3 min ago"
    assert page.relative(NOW - timedelta(hours=2, minutes=5), NOW) == "2 h 5 min ago"
    assert page.relative(NOW - timedelta(days=3), NOW) == "3 days ago"
    assert page.relative(NOW + timedelta(minutes=14, seconds=50), NOW) == "in 14 min"
    html = page.ago("2026-05-04T11:57:00+00:00", NOW)
    assert html == ('<time datetime="2026-05-04T11:57:00+00:00" title="2026-05-04 11:57:00 UTC">'
                    '3 min ago</time>')
    assert page.ago(None, NOW) == '<span class="muted">—</span>'
    assert page.ago("not scheduled", NOW) == "not scheduled"
    assert page.took({"started_at": "2026-05-04T11:57:00+00:00",
                      "finished_at": "2026-05-04T11:58:30+00:00"}) == "1 min"
    assert page.took({"seconds": 2.53, "started_at": "2026-05-04T11:57:00+00:00",
                      "finished_at": "2026-05-04T11:57:03+00:00"}) == "2.5 s"
    assert page.took({"started_at": "2026-05-04T11:57:00+00:00", "finished_at": None}) == ""


def test_a_flow_in_a_sentence_in_the_systems_names():
    text = describe.describe_flow(contacts(), NAMES)
    assert text == (
        "sage50 contacts → salesmgmt contacts, sage50 → salesmgmt only; 4 fields (FIRST_NAME, "
        "LAST_NAME, EMAIL and rep); matched on EMAIL = email; new sage50 records are created in "
        "salesmgmt; a sage50 delete marks deleted the salesmgmt record.")


def test_counts_have_labels_in_the_systems_names():
    counts = {"errors": 1, "read_left": 10, "created_right": 2, "unchanged": 0,
              "brand_new_left": 3}
    assert describe.labelled_counts(counts, NAMES) == [
        ("read_left", "read from sage50", 10), ("created_right", "created in salesmgmt", 2),
        ("errors", "record errors", 1), ("brand_new_left", "brand new sage50", 3)]


def test_a_record_by_name_and_key():
    rules = contacts()
    base = {"FIRST_NAME": "Ana", "LAST_NAME": "Silva", "EMAIL": "ana@example.com"}
    assert describe.record_label(rules, "left", base) == {
        "name": "Ana Silva", "key": "EMAIL ana@example.com"}
    assert describe.record_label(rules, "left", None) == {"name": None, "key": None}
    companies = FlowRules.model_validate({
        "name": "companies", "left_entity": "customers", "right_entity": "companies",
        "match": [{"left": "CustomerName", "right": "Name"}],
        "fields": [{"left": "CustomerCode", "right": "Code"},
                   {"left": "CustomerName", "right": "Name"},
                   {"left": "SalesPerson.FullName", "right": "AccountManager.UserName"}]})
    # the key is the name: said once
    assert describe.record_label(companies, "right", {"Name": "Acme", "Code": "A1"}) == {
        "name": "Acme", "key": None}


# --- the page of a real daemon -----------------------------------------------------------------
async def test_the_page_names_systems_labels_counts_and_dates_relatively(service, http):
    assert (await service.run_job("sync:ul")).status == "ok"
    _, html = await get(http, service, "/")
    assert "<b>unleashed</b>" in html and "<b>prospect</b>" in html and "(prospect_crm)" in html
    assert re.search(r"<b>companies</b>: unleashed customers ⇄ prospect companies, both ways; "
                     r"\d+ fields", html)
    assert "created in prospect <b>4</b>" in html and "read from unleashed" in html
    # what a person reads: the text between the style and the script
    text = re.sub(r"<[^>]+>", " ", html.split("</style>")[1].split("<script>")[0])
    assert "created_right" not in text and "read_left" not in text
    assert not re.search(r"\b(left|right)\b", text)
    # relative, with the absolute UTC time in the title
    assert re.search(r'Last run: <b>#1</b> <span class="b ok">ok</span> <time datetime="[^"]+" '
                     r'title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC">(just now|\d+ s ago)</time>',
                     html)
    assert '<details class="run" data-run="1" data-status="ok" open>' in html


async def test_the_last_20_runs_with_their_steps(service, http):
    runs, steps = T["runs"], T["steps"]
    at = datetime.now(timezone.utc) - timedelta(hours=2)
    async with service.app.db.begin() as conn:
        for i in range(25):
            run_id = (await conn.execute(insert(runs).values(
                integration="ul", trigger="schedule", status="ok",
                started_at=at + timedelta(minutes=i),
                finished_at=at + timedelta(minutes=i, seconds=3)))).inserted_primary_key[0]
            await conn.execute(insert(steps).values(
                run_id=run_id, flow="companies", status="ok",
                counts=json.dumps({"read_left": i, "updated_right": 1}),
                started_at=at + timedelta(minutes=i),
                finished_at=at + timedelta(minutes=i, seconds=3)))
    _, html = await get(http, service, "/")
    shown = re.findall(r'<details class="run" data-run="(\d+)"', html)
    assert shown == [str(n) for n in range(25, 5, -1)]
    assert "Recent runs (20)" in html and "took 3.0 s" in html
    assert "updated in prospect 1" in html                      # the summary of a closed run


async def test_a_record_error_by_name_with_retry_and_exclude(service, http, sandboxes):
    _, crm = sandboxes
    _, key, name = await refused_company(service, crm)
    _, html = await get(http, service, "/")
    row = re.search(r'<tr class="record-error" data-flow="companies" data-side="right" '
                    rf'data-record="{key}">(.*?)</tr>', html, re.S).group(1)
    assert f'<b class="name">{name.replace("&", "&amp;")}</b>' in row
    assert f"id {key}" in row and "is not a valid URL" in row
    assert ('data-url="/api/integrations/ul/retry" data-body="{&quot;flow&quot;:&quot;'
            'companies&quot;,&quot;side&quot;:&quot;right&quot;,&quot;id&quot;:&quot;'
            f'{key}&quot;}}">Retry</button>') in row
    assert ">Exclude</button>" in row
    # the run's drill-down lists it too
    assert "Record errors still open from this run (1)" in html
    _, doc = await get(http, service, "/api/status")
    [err] = json.loads(doc)["integrations"]["ul"]["record_errors"]
    assert err["name"] == name and err["record"] == key and err["run"] == 2


async def test_a_failing_integration_says_why(service, http, sandboxes):
    _, crm = sandboxes
    assert (await service.run_job("sync:ul")).status == "ok"
    crm.faults.fail_next(100, 401)
    for _ in range(2):
        assert (await service.run_job("sync:ul")).status == "failed"
    crm.faults.clear()
    _, html = await get(http, service, "/")
    notice = re.search(r'<div class="notice failure">(.*?)</div>', html, re.S).group(1)
    assert "<b>Failing</b> since" in notice and "(2 runs in a row)" in notice
    assert "run #3" in notice and "stopped: right system prospect" in notice
    assert '<span class="b failed">failing</span>' in html


async def test_jobs_held_deletes_and_exclusions_with_their_buttons(tmp_path, sandboxes, http):
    ul, crm = sandboxes
    svc = await start_service(web_config(tmp_path, ul, crm,
                                         options="fix_account_managers_overnight = true"))
    try:
        assert (await svc.run_job("sync:ul")).status == "ok"
        (g1, k1), (g2, k2) = (await companies(svc))[:2]
        async with svc.app.db.begin() as conn:
            await conn.execute(insert(T["held_deletes"]).values(
                integration="ul", flow="companies", link_id=1, target="right", record_id=k1,
                action="delete", run_id=1, created_at=datetime.now(timezone.utc)))
            await conn.execute(insert(T["exclusions"]).values(
                integration="ul", flow="companies", side="left", record_id=g2, mode="never",
                reason="test account", created_at=datetime.now(timezone.utc)))
        _, html = await get(http, svc, "/")
    finally:
        await svc.stop()
    job = re.search(r'<tr class="job">(.*?)</tr>', html, re.S).group(1)
    assert "fix-account-managers" in job and "<code>0 3 * * *</code>" in job
    assert re.search(r"<time [^>]*>in \d+ (h|min)", job)        # the scheduler's next time
    assert "Deletes held by the circuit-breaker (1 waiting)" in html
    assert 'data-url="/api/integrations/ul/approve">Approve 1 held delete</button>' in html
    held = re.search(r'<tr class="held" data-flow="companies">(.*?)</tr>', html, re.S).group(1)
    assert '<b class="name">' in held and f"id {k1}" in held
    ex = re.search(rf'<tr class="exclusion" data-record="{g2}">(.*?)</tr>', html, re.S).group(1)
    assert "left out until included" in ex and "test account" in ex
    assert '<b class="name">' in ex and ">Include</button>" in ex
