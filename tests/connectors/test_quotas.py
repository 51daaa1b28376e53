"""Each connector carries its vendor's published request quota as its default (issue 14), and
its client-side window keeps a load under the quota the sandbox enforces: the request past the
quota waits for the window instead of meeting a 429."""
from __future__ import annotations

import asyncio

import pytest

from connectors.ajera.client import AjeraConnector
from connectors.connectwise import ConnectWiseConnector
from connectors.connectwise.sandbox import ConnectWiseSandbox
from connectors.dtools_si import DToolsSiConnector
from connectors.dtools_si.sandbox import DToolsSiSandbox
from connectors.prospect_crm.client import ProspectCrmConnector
from connectors.sage_crm.client import SageCrmConnector
from connectors.sage_sales_management.client import SageSalesManagementConnector
from connectors.unleashed.client import UnleashedConnector
from connectors.vantagepoint.client import VantagepointConnector

CW = {"company_id": "sandbox", "public_key": "sandbox-public",
      "private_key": "sandbox-private", "client_id": "00000000-0000-0000-0000-00000000c11e"}


def _make(cls, **settings):
    return cls("x", cls.Settings.model_validate(settings))


# (connector, the quota: requests, seconds) as each vendor publishes it; None: none published
QUOTAS = {
    "prospect_crm": (lambda: _make(ProspectCrmConnector, token="t"), (1200, 600)),
    "sage_sales_management": (lambda: _make(SageSalesManagementConnector, public_key="p",
                                            private_key="k"), (900, 60)),
    "dtools_si": (lambda: _make(DToolsSiConnector, api_key="k"), (120, 60)),
    "connectwise": (lambda: _make(ConnectWiseConnector, **CW), (1000, 60)),
    "ajera": (lambda: _make(AjeraConnector, api_id="a", username="u", password="p"), (9, 1)),
    "vantagepoint": (lambda: _make(VantagepointConnector, username="u", password="p",
                                   database="d", client_id="c", client_secret="s",
                                   base_url="https://vp.test/api"), (10, 1)),
    "unleashed": (lambda: _make(UnleashedConnector, api_id="a", api_key="k"), None),
    "sage_crm": (lambda: _make(SageCrmConnector, base_url="https://crm.test", username="u",
                               password="p"), None),
}


@pytest.mark.parametrize("system", sorted(QUOTAS))
def test_each_connector_defaults_to_its_vendors_published_quota(system):
    make, quota = QUOTAS[system]
    c = make()
    if quota is None:
        assert c.http.limiter is None and c.capabilities.requests_per_second is None
        return
    limit, window = quota
    assert (c.http.limiter.limit, c.http.limiter.window) == (limit, window)
    assert c.capabilities.requests_per_second == pytest.approx(limit / window)


def test_a_quota_that_none_is_published_for_can_be_set():
    c = _make(SageCrmConnector, base_url="https://crm.test", username="u", password="p",
              requests_per_window=300, window_seconds=60)
    assert (c.http.limiter.limit, c.http.limiter.window) == (300, 60)
    assert c.capabilities.requests_per_second == 5


@pytest.mark.parametrize("system", ["dtools_si", "connectwise"])
async def test_the_request_past_the_quota_waits_for_the_window_not_for_a_429(system):
    if system == "dtools_si":
        sb = DToolsSiSandbox(seed=1, records=1, rate_limit=3, rate_window=600)
        make = lambda: DToolsSiConnector("si", {"api_key": "sandbox-key",  # noqa: E731
                                                "base_url": sb.url, "requests_per_window": 3,
                                                "window_seconds": 600})
    else:
        sb = ConnectWiseSandbox(seed=1, records=1, rate_limit=3, rate_window=600)
        make = lambda: ConnectWiseConnector("cw", {**CW, "base_url": sb.url,  # noqa: E731
                                                   "requests_per_window": 3,
                                                   "window_seconds": 600})
    await sb.start(0)
    c = make()
    await c.start()
    try:
        while c.http.requests < 3:             # a check is one request or two
            await asyncio.wait_for(c.check(), 5)
        assert c.http.requests == 3
        with pytest.raises(asyncio.TimeoutError):          # the next waits for the window
            await asyncio.wait_for(c.check(), 0.2)
        assert c.http.throttled == 0
        if system == "dtools_si":
            assert sb.rejected == 0
    finally:
        await c.close()
        await sb.stop()


async def test_a_connectors_own_reads_are_paced_by_its_quota_not_a_fixed_number():
    """D-Tools' detail reads: at most ``concurrency`` in flight, and no more than its quota
    keeps busy (rate x latency): at 120 a minute and a loopback's latency, one at a time."""
    sb = DToolsSiSandbox(seed=2, records=6, items=2, locations=1)
    await sb.start(0)
    c = DToolsSiConnector("si", {"api_key": "sandbox-key", "base_url": sb.url})
    await c.start()
    try:
        assert c.pace.ceiling == 16
        records = await c.get("projects", [str(m["Id"]) for m in sb.messages])
        assert len(records) == 6
        assert c.pace.average is not None           # every read went through the pace
        assert c.pace.limit == 1 and c.pace.active == 0
    finally:
        await c.close()
        await sb.stop()
