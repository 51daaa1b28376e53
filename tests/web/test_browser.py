"""The status page in a real browser (issue 4, DT-10): headless Chromium (Debian's packages)
loads the page while a run is under way and must show a running step with live counts, then
the finished run, without a reload. Saves ``artifacts/status-page.png``.

The sandbox answers slowly (``faults.latency``) and pages one record at a time, so the run
takes several seconds; the test polls the DOM with bounded waits, it never sleeps. Selenium is
blocking, so it runs in a thread while the event loop serves the page and runs the sync.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from connectors.prospect_crm.sandbox import ProspectSandbox
from connectors.unleashed.sandbox import UnleashedSandbox
from tests.test_cli import ROOT
from tests.web.conftest import SECRETS, TOKEN, start_service, until_idle, web_config

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOT = ROOT / "artifacts" / "status-page.png"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM) or not os.path.exists(CHROMEDRIVER),
                       reason="needs Debian's chromium and chromium-driver "
                              "(apt-get install -y chromium chromium-driver)"),
]


def browse(url: str, user_data: str) -> dict:
    """In a thread: load the page during the run, wait for live counts, screenshot."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={user_data}",
                 "--window-size=1200,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=opts)
    seen: dict = {}
    try:
        driver.set_page_load_timeout(20)
        driver.get(url + "/")
        seen["title"] = driver.title

        def running_with_counts(d):
            for row in d.find_elements(By.CSS_SELECTOR, "tr.step[data-status=running]"):
                counts = row.find_element(By.CSS_SELECTOR, "td.counts").text
                if "read_" in counts:
                    return row.get_attribute("data-flow"), counts
            return False

        seen["running"] = WebDriverWait(driver, 30, poll_frequency=0.2).until(
            running_with_counts)
        seen["steps"] = [(r.get_attribute("data-flow"), r.get_attribute("data-status"))
                         for r in driver.find_elements(By.CSS_SELECTOR, "tr.step")]
        seen["badge"] = driver.find_element(By.CSS_SELECTOR, "section h2 .b.running").text
        seen["refresh_note"] = driver.find_element(By.CSS_SELECTOR, "#status p.muted").text
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOT))
        # the page goes on refreshing by itself: the run ends, the steps say ok
        WebDriverWait(driver, 60, poll_frequency=0.2).until(
            lambda d: d.find_element(By.ID, "status").get_attribute("data-running") == "0")
        seen["final"] = [(r.get_attribute("data-flow"), r.get_attribute("data-status"))
                         for r in driver.find_elements(By.CSS_SELECTOR, "tr.step")]
        seen["source"] = driver.page_source
    finally:
        driver.quit()
    return seen


async def test_status_page_shows_the_run_under_way_in_a_browser(tmp_path):
    ul = UnleashedSandbox(seed=1, records=6)
    crm = ProspectSandbox(seed=2, records=2)
    await ul.start(0)
    await crm.start(0)
    svc = await start_service(web_config(tmp_path, ul, crm, ul_extra="page_size = 1"))
    user_data = tempfile.mkdtemp(prefix="accord-chromium-")
    try:
        ul.faults.latency = 0.25                # each Unleashed request: a quarter of a second
        run = asyncio.create_task(svc.run_job("sync:ul"))
        for _ in range(1000):                   # the run is under way before the page loads
            if svc.live.running("ul"):
                break
            await asyncio.sleep(0.01)
        assert svc.live.running("ul"), "the run never started"
        seen = await asyncio.to_thread(browse, svc.web.url, user_data)
        result = await run
        await until_idle(svc)
    finally:
        ul.faults.latency = 0
        await svc.stop()
        await ul.stop()
        await crm.stop()
        shutil.rmtree(user_data, ignore_errors=True)
    assert seen["title"] == "accord — status"
    flow, counts = seen["running"]
    assert flow in ("companies", "contacts") and "read_left" in counts
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
    assert TOKEN not in seen["source"]
    assert SHOT.exists() and SHOT.stat().st_size > 10_000
