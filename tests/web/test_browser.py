"""The status page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium.

- DT-10: loaded while a run is under way, the page shows the running step with live counts,
  then the finished run, without a reload.
- An operator's round: the buttons answer 401 until the token is typed in; Run now; open an
  older run's drill-down (it stays open through the refreshes); Retry a record error shown by
  the company's name; Pause and Resume.
- Sage BOB 50 <-> Sage CRM: the first run's preview, "The synchronisation data is correct",
  Run now, then the flow's linked pairs: "No sync" on a pair and "Lift" (BB-9, BB-6).
Screenshots go to ``artifacts/`` (gitignored). The sandboxes answer slowly where a run must be
seen under way (``faults.latency``); the test polls the DOM with bounded waits, it never
sleeps. Selenium blocks, so it runs in a thread while the event loop serves the page and runs
the syncs.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select

from connectors.prospect_crm.sandbox import ProspectSandbox
from connectors.unleashed.sandbox import UnleashedSandbox
from daemon.store import operator
from daemon.store.tables import T
from tests.test_cli import ROOT
from tests.waiting import until
from tests.web.conftest import (SECRETS, TOKEN, bb_sync, refused_company, start_service,
                                until_idle, web_config)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "artifacts"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM) or not os.path.exists(CHROMEDRIVER),
                       reason="needs Debian's chromium and chromium-driver "
                              "(apt-get install -y chromium chromium-driver)"),
]


def chromium(user_data: str, size: str = "1280,1400"):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={user_data}",
                 f"--window-size={size}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    return driver


def shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


@pytest.fixture
def user_data():
    path = tempfile.mkdtemp(prefix="accord-chromium-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- DT-10: a run under way ---------------------------------------------------------------------
def watch_a_run(url: str, user_data: str) -> dict:
    """In a thread: load the page during the run, wait for live counts, screenshot."""
    from selenium.common.exceptions import (NoSuchElementException,
                                            StaleElementReferenceException)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium(user_data)
    seen: dict = {}

    def wait(cond, timeout: float = 60):
        return WebDriverWait(driver, timeout, poll_frequency=0.2,
                             ignored_exceptions=(NoSuchElementException,
                                                 StaleElementReferenceException)).until(cond)
    try:
        driver.get(url + "/")
        seen["title"] = driver.title

        def running_with_counts(d):
            """What the page shows at one moment while a step runs with its live counts (the
            body is swapped every 2 s: a stale read is simply tried again)."""
            for row in d.find_elements(By.CSS_SELECTOR,
                                       "details.run[open] tr.step[data-status=running]"):
                counts = row.find_element(By.CSS_SELECTOR, "td.counts").text
                if "read from unleashed" in counts:
                    return {
                        "running": (row.get_attribute("data-flow"), counts),
                        "steps": [(r.get_attribute("data-flow"), r.get_attribute("data-status"))
                                  for r in d.find_elements(By.CSS_SELECTOR,
                                                           "details.run[open] tr.step")],
                        "badge": d.find_element(By.CSS_SELECTOR, "section h2 .b.running").text,
                        "refresh_note": d.find_element(By.ID, "updated").text}
            return False

        seen.update(wait(running_with_counts))
        seen["shot"] = shot(driver, "status-page-running")
        # the page goes on refreshing by itself: the run ends, the steps say ok
        wait(lambda d: d.find_element(By.ID, "status").get_attribute("data-running") == "0")
        seen["final"] = wait(lambda d: [
            (r.get_attribute("data-flow"), r.get_attribute("data-status"))
            for r in d.find_elements(By.CSS_SELECTOR, "details.run[open] tr.step")])
        seen["source"] = driver.page_source
    finally:
        driver.quit()
    return seen


async def test_status_page_shows_the_run_under_way_in_a_browser(tmp_path, user_data):
    ul = UnleashedSandbox(seed=1, records=6)
    crm = ProspectSandbox(seed=2, records=2)
    await ul.start(0)
    await crm.start(0)
    svc = await start_service(web_config(tmp_path, ul, crm, ul_extra="page_size = 1"))
    try:
        ul.faults.latency = 0.25                # each Unleashed request: a quarter of a second
        run = asyncio.create_task(svc.run_job("sync:ul"))
        # the run is under way before the page loads
        await until(lambda: svc.live.running("ul"), "the run starting", 10)
        seen = await asyncio.to_thread(watch_a_run, svc.web.url, user_data)
        result = await run
        await until_idle(svc)
    finally:
        ul.faults.latency = 0
        await svc.stop()
        await ul.stop()
        await crm.stop()
    assert seen["title"] == "accord — status"
    flow, counts = seen["running"]
    assert flow in ("companies", "contacts") and "read from unleashed" in counts
    # every flow of the run is listed: done ones ok, the one under way running, later waiting
    statuses = dict(seen["steps"])
    assert list(statuses) == [s.flow for s in result.steps] and statuses[flow] == "running"
    order = [statuses[f] for f in statuses]
    assert order == sorted(order, key=["ok", "running", "waiting"].index)
    assert seen["badge"] == "running" and "2 s" in seen["refresh_note"]
    assert result.status == "ok"
    assert seen["final"] == [(s.flow, "ok") for s in result.steps]
    for secret in SECRETS:
        assert secret not in seen["source"]
    assert seen["shot"].stat().st_size > 10_000


# --- an operator's round -----------------------------------------------------------------------
def operate(url: str, user_data: str, key: str) -> dict:
    """In a thread: the clicks an operator makes, with what the page shows after each."""
    from selenium.common.exceptions import (NoSuchElementException,
                                            StaleElementReferenceException)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium(user_data)
    seen: dict = {}

    def wait(cond, timeout: float = 30):
        # the page swaps its body in on each refresh: an element found may go stale
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException,
                                                 StaleElementReferenceException)).until(cond)

    def click(find) -> None:
        def done(_):
            find().click()
            return True
        wait(done)

    def msg_says(text: str):
        return wait(lambda d: text in d.find_element(By.ID, "msg").text
                    and d.find_element(By.ID, "msg").text)

    def button(section_css: str, label: str):
        for b in driver.find_elements(By.CSS_SELECTOR, f"{section_css} button.act"):
            if b.text == label and b.is_displayed():
                return b
        raise AssertionError(f"no visible button {label!r} in {section_css}")

    def run_open(run: str) -> bool:
        return driver.find_element(By.CSS_SELECTOR, f'details.run[data-run="{run}"]'
                                   ).get_attribute("open") is not None

    try:
        driver.get(url + "/")
        section = 'section[data-name="ul"]'
        # without the token: refused, and the page says so and points at the field
        click(lambda: button(section, "Pause"))
        seen["no_token"] = msg_says("token")
        seen["focus"] = driver.switch_to.active_element.get_attribute("id")
        driver.find_element(By.ID, "token").send_keys(TOKEN, Keys.TAB)

        # run now: a new run appears, the newest open (it still meets the refused website)
        click(lambda: button(section, "Run now"))
        seen["run_now"] = msg_says("started")
        wait(lambda d: d.find_elements(By.CSS_SELECTOR,
                                       'details.run[data-run="3"][data-status="errors"]'))
        seen["open_runs"] = wait(lambda d: [r for r in ("1", "2", "3") if run_open(r)])

        # drill down into run #2
        click(lambda: driver.find_element(By.CSS_SELECTOR, 'details.run[data-run="2"] summary'))
        step = 'details.run[data-run="2"] tr.step[data-flow="companies"]'
        seen["run2_counts"] = wait(lambda d: d.find_element(By.CSS_SELECTOR, step).is_displayed()
                                   and d.find_element(By.CSS_SELECTOR, f"{step} td.counts").text)
        # an open record error is listed under the last run that met it
        seen["run2_errors"] = len(driver.find_elements(By.CSS_SELECTOR,
                                                       'details.run[data-run="2"] ul.run-errors'))
        seen["run3_errors"] = wait(lambda d: d.find_element(
            By.CSS_SELECTOR, 'details.run[data-run="3"] ul.run-errors').text)
        shot(driver, "status-page-drilldown")

        # retry the record error, found by the company's name
        row = f'tr.record-error[data-record="{key}"]'
        seen["error_row"] = wait(lambda d: d.find_element(By.CSS_SELECTOR, row).text)
        click(lambda: driver.find_element(By.CSS_SELECTOR, f"{row} button.retry"))
        seen["retry"] = msg_says("marked for retry")
        wait(lambda d: "retry queued" in d.find_element(
            By.CSS_SELECTOR, f'tr.record-error[data-record="{key}"]').text)
        seen["open_after_refresh"] = wait(lambda d: [r for r in ("1", "2", "3") if run_open(r)])
        shot(driver, "status-page-retry")

        # pause, then resume
        click(lambda: button(section, "Pause"))
        seen["pause"] = msg_says("ul paused:")
        wait(lambda d: d.find_element(By.CSS_SELECTOR, section).get_attribute(
            "data-paused") == "1")
        seen["paused_notice"] = wait(lambda d: d.find_element(By.CSS_SELECTOR,
                                                              ".notice.paused").text)
        seen["badges"] = wait(lambda d: d.find_element(By.CSS_SELECTOR, f"{section} h2").text)
        shot(driver, "status-page-paused")
        click(lambda: button(section, "Resume"))
        seen["resume"] = msg_says("ul resumed:")      # not "... until it is resumed"
        wait(lambda d: d.find_element(By.CSS_SELECTOR, section).get_attribute(
            "data-paused") == "0")
        seen["notices_after"] = len(driver.find_elements(By.CSS_SELECTOR, ".notice.paused"))
        seen["source"] = driver.page_source
    finally:
        driver.quit()
    return seen


async def test_an_operator_clicks_through_the_page(service, sandboxes, user_data):
    _, crm = sandboxes
    _, key, name = await refused_company(service, crm)          # runs #1 and #2
    seen = await asyncio.to_thread(operate, service.web.url, user_data, key)
    await until_idle(service)
    assert "missing or wrong token" in seen["no_token"] and seen["focus"] == "token"
    assert seen["run_now"] == "run #3 of ul started"
    assert seen["open_runs"] == ["3"]                          # the newest run shows open
    assert "read from prospect 6" in seen["run2_counts"]
    assert "record errors 1" in seen["run2_counts"]
    assert seen["run2_errors"] == 0
    assert name in seen["run3_errors"] and "is not a valid URL" in seen["run3_errors"]
    assert name in seen["error_row"] and f"id {key}" in seen["error_row"]
    assert "is not a valid URL" in seen["error_row"]
    assert seen["retry"] == (f"prospect companies record {key}: 1 record error marked for retry; "
                             f"the next run reads it again")
    assert seen["open_after_refresh"] == ["2", "3"]            # what was opened stays open
    assert seen["pause"].startswith("ul paused") and "paused" in seen["badges"]
    assert "scheduled runs and webhooks wait" in seen["paused_notice"]
    assert seen["resume"].startswith("ul resumed") and seen["notices_after"] == 0
    async with service.app.db.connect() as conn:
        assert await operator.is_paused(conn, "ul") is False
    for secret in SECRETS:
        assert secret not in seen["source"]
    for png in ("drilldown", "retry", "paused"):
        assert (ARTIFACTS / f"status-page-{png}.png").stat().st_size > 10_000


# --- Sage BOB 50 <-> Sage CRM: confirm the first run, no sync on a pair (BB-9, BB-6) -----------
def confirm_then_no_sync(url: str, user_data: str) -> dict:
    """In a thread: the accountant reads the preview, says the synchronisation data is
    correct, runs it, opens the flow's linked pairs, sets "no sync" on one and lifts it."""
    from selenium.common.exceptions import (NoSuchElementException,
                                            StaleElementReferenceException)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium(user_data)
    seen: dict = {}

    def wait(cond, timeout: float = 30):
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException,
                                                 StaleElementReferenceException)).until(cond)

    def click(css: str, label: str) -> None:
        def done(d):
            for b in d.find_elements(By.CSS_SELECTOR, css):
                if b.text == label and b.is_displayed():
                    b.click()
                    return True
            return False
        wait(done)

    def msg_says(text: str):
        return wait(lambda d: text in d.find_element(By.ID, "msg").text
                    and d.find_element(By.ID, "msg").text)

    def whole_page(name: str) -> Path:
        driver.set_window_size(1280, 600)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 140, 4000))
        return shot(driver, name)

    try:
        driver.get(url + "/")
        driver.find_element(By.ID, "token").send_keys(TOKEN, Keys.TAB)
        gate = 'section[data-name="bb"] .gate[data-kind="first_run"]'
        seen["preview"] = wait(lambda d: d.find_element(By.CSS_SELECTOR, f"{gate} .preview").text)
        whole_page("status-page-bb-preview")
        click(f"{gate} button.act", "The synchronisation data is correct")
        seen["approved"] = msg_says("is correct")
        seen["gate"] = wait(lambda d: "approved" in d.find_element(By.CSS_SELECTOR,
                                                                   f"{gate} h3").text
                            and d.find_element(By.CSS_SELECTOR, f"{gate} h3").text)
        click('section[data-name="bb"] .head button.act', "Run now")
        msg_says("started")
        wait(lambda d: d.find_elements(By.CSS_SELECTOR, 'details.run[data-status="ok"]')
             and not d.find_elements(By.CSS_SELECTOR, gate))
        driver.find_element(By.CSS_SELECTOR, 'li[data-flow="third_parties"] a.links').click()
        pair = 'tr.pair[data-left="C00001"]'
        seen["title"] = wait(lambda d: d.find_elements(By.CSS_SELECTOR, pair) and d.title)
        seen["pair"] = driver.find_element(By.CSS_SELECTOR, pair).text
        click(f"{pair} button.act", "No sync")
        seen["no_sync"] = msg_says("no sync:")
        seen["mode"] = wait(lambda d: d.find_element(By.CSS_SELECTOR, pair)
                            .get_attribute("data-mode"))
        seen["pair_no_sync"] = driver.find_element(By.CSS_SELECTOR, pair).text
        whole_page("status-page-bb-no-sync")
        click(f"{pair} button.act", "Lift")
        seen["lifted"] = msg_says("lifted:")
        wait(lambda d: d.find_element(By.CSS_SELECTOR, pair).get_attribute("data-mode") == "")
        seen["source"] = driver.page_source
    finally:
        driver.quit()
    return seen


async def test_bb09_bb06_confirm_the_first_run_and_set_no_sync_in_a_browser(bb, user_data):
    bb.customer("C00001", "BE0412345678", NAME="Bakkerij Peeters")
    bb.customer("C00002", "BE0400000002", NAME="Alleen in BOB")
    bb.company("Peeters in CRM", "0412.345.678")
    bb.company("Alleen in CRM", "BE0499999999")
    assert await bb_sync(bb) == "waiting"
    seen = await asyncio.to_thread(confirm_then_no_sync, bb.svc.web.url, user_data)
    await until_idle(bb.svc, "bb")
    assert "bob → crm: 1 to create, 1 to update" in seen["preview"]
    assert "crm → bob: 1 to create, 0 to update" in seen["preview"]
    assert "Alleen in BOB" in seen["preview"] and "Peeters in CRM" in seen["preview"]
    assert seen["approved"] == ("approved: the synchronisation data of bb is correct; the next "
                                "run synchronises")
    assert "(approved: the next run goes on)" in seen["gate"]
    assert sorted(c["comp_name"] for c in bb.crm.live()) == \
        ["Alleen in BOB", "Alleen in CRM", "Bakkerij Peeters"]
    assert seen["title"] == "accord — bb · third_parties: linked pairs"
    assert "Bakkerij Peeters" in seen["pair"] and "BE0412345678 = BE0412345678" in seen["pair"]
    crm_id = next(c["comp_companyid"] for c in bb.crm.live()
                  if c["comp_name"] == "Bakkerij Peeters")
    assert seen["no_sync"] == \
        f"no sync: bob C00001 and crm {crm_id} never synchronised until lifted"
    assert seen["mode"] == "never" and "no sync" in seen["pair_no_sync"]
    assert seen["lifted"].startswith("lifted: bob C00001")
    ex = T["exclusions"]
    async with bb.svc.app.db.connect() as conn:
        modes = sorted(tuple(r) for r in await conn.execute(
            select(ex.c.side, ex.c.record_id, ex.c.mode)))
    assert modes == [("left", "C00001", "revisit"), ("right", str(crm_id), "revisit")]
    for secret in SECRETS:
        assert secret not in seen["source"]
    for png in ("bb-preview", "bb-no-sync"):
        assert (ARTIFACTS / f"status-page-{png}.png").stat().st_size > 10_000


# --- the demo: config.example.toml as a user runs it ------------------------------------------
def demo_config(tmp: Path) -> Path:
    """config.example.toml with free ports and its files in ``tmp`` (nothing else changed)."""
    text = (ROOT / "config.example.toml").read_text()
    for port in ("8701", "8702", "8703", "8711", "8712", "8721", "8722", "8731", "8080"):
        text = text.replace(f"port = {port}", "port = 0")
    text = text.replace("sqlite:///accord-state.db", f"sqlite:///{tmp / 'accord-state.db'}")
    text = text.replace('"accord-sage50-ids.sqlite"', f'"{tmp / "accord-sage50-ids.sqlite"}"')
    path = tmp / "config.toml"
    path.write_text(text)
    return path


def look_at_the_demo(url: str, user_data: str) -> dict:
    """In a thread: the whole page as one screenshot, and what it shows."""
    from selenium.webdriver.common.by import By
    driver = chromium(user_data)
    try:
        driver.get(url + "/")
        height, chrome = driver.execute_script(
            "return [document.documentElement.scrollHeight, "
            "window.outerHeight - window.innerHeight]")
        driver.set_window_size(1280, min(int(height) + int(chrome) + 16, 6000))
        seen = {"sections": [s.get_attribute("data-name") for s in driver.find_elements(
                    By.CSS_SELECTOR, "section.integration")],
                "systems": [p.text for p in driver.find_elements(By.CSS_SELECTOR,
                                                                 "p.systems")],
                "errors": [r.text for r in driver.find_elements(By.CSS_SELECTOR,
                                                                "tr.record-error")],
                "jobs": [r.text for r in driver.find_elements(By.CSS_SELECTOR, "tr.job")],
                "token_field": driver.find_element(By.ID, "token").get_attribute("type"),
                "shot": shot(driver, "status-page-demo"), "source": driver.page_source}
    finally:
        driver.quit()
    return seen


@pytest.mark.slow
async def test_the_demo_page(tmp_path, user_data, monkeypatch):
    """The page of the demo configuration after its first runs, one refused website in it:
    ``artifacts/status-page-demo.png`` is the README's docs/status-page.png."""
    from daemon.service import Service
    from tests.web.conftest import BAD_WEBSITE
    monkeypatch.chdir(tmp_path)        # the files it names relatively (the state, BOB's file)
    svc = Service(demo_config(tmp_path), configure_logging=False, activity=False)
    await svc.start(paused=True)
    try:
        for name in ("unleashed-prospect", "sage50-salesmgmt"):
            assert (await svc.run_job(f"sync:{name}")).status == "ok", name
        links = T["links"]
        async with svc.app.db.connect() as conn:
            key = (await conn.execute(select(func.min(links.c.right_id)).where(
                links.c.integration == "unleashed-prospect",
                links.c.flow == "companies"))).scalar_one()
        svc.app.sandboxes["prospect"].modify("Companies", int(key), {"Website": BAD_WEBSITE})
        assert (await svc.run_job("sync:unleashed-prospect")).status == "errors"
        soon = datetime.now(timezone.utc) + timedelta(minutes=1)
        for job in svc.jobs():                     # next runs as the daemon would show them
            if job.id.startswith("sync:"):
                svc.scheduler.modify_job(job.id, next_run_time=soon)
        svc.scheduler.resume()
        seen = await asyncio.to_thread(look_at_the_demo, svc.web.url, user_data)
    finally:
        await svc.stop()
    assert seen["sections"] == ["unleashed-prospect", "sage50-salesmgmt", "bob-crm",
                                "ajera-vantagepoint", "dtools-manage"]
    assert "a run is under way" not in seen["source"]
    assert seen["systems"] == ["unleashed ⇄ prospect (prospect_crm)",
                               "sage50 (sage50fr) ⇄ salesmgmt (sage_sales_management)",
                               "bob (bob50) ⇄ sagecrm (sage_crm)",
                               "ajera ⇄ vantagepoint",
                               "dtools (dtools_si) ⇄ manage (connectwise)"]
    assert len(seen["errors"]) == 1 and "not a valid URL" in seen["errors"][0]
    assert any("contacts-nightly" in j for j in seen["jobs"])
    assert seen["token_field"] == "password"          # the demo has a token: buttons work
    for secret in ("sandbox-key", "sandbox-token", "sandbox-private", "demo-token"):
        assert secret not in seen["source"]
    assert seen["shot"].stat().st_size > 50_000
