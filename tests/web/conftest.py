"""The web side against a real Service (scheduler paused, jobs fired by the test) with the
test's own sandboxes, on a free loopback port; requests through a real socket."""
from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from daemon.service import Service
from daemon.store.tables import T
from tests.test_cli import sandboxes, write_config  # noqa: F401
from tests.waiting import idle, until

TOKEN = "web-token-s3cret-9911"
SECRETS = ("sandbox-key", "sandbox-token", TOKEN)      # none may appear in a GET answer
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BAD_WEBSITE = "https://-shop-.example.com"             # the CRM takes it, Unleashed refuses it


def web_config(tmp: Path, ul, crm, *, token: str | None = TOKEN, ul_extra: str = "",
               web: str = "", **kw) -> str:
    lines = ["[web]", "port = 0"]
    if token is not None:
        lines.append(f'token = "{token}"')
    return write_config(tmp, ul_url=ul.url, crm_url=crm.url, ul_extra=ul_extra,
                        extra="\n".join(lines) + "\n" + web, **kw)


async def start_service(path: str) -> Service:
    svc = Service(path, configure_logging=False, activity=False)
    await svc.start(paused=True)
    assert svc.web is not None and svc.web.port
    return svc


async def until_idle(svc: Service, name: str = "ul", timeout: float = 30.0) -> None:
    """Wait (bounded) until no run of ``name`` is under way and no webhook is queued."""
    await until(idle(svc, name), "the run finishing", timeout)


@pytest.fixture
async def service(tmp_path, sandboxes):
    ul, crm = sandboxes
    svc = await start_service(web_config(tmp_path, ul, crm))
    yield svc
    await svc.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http, svc, path: str, status: int = 200):
    """GET through the socket; checks the status and that no secret is in the answer."""
    async with http.get(svc.web.url + path) as r:
        body = await r.text()
        assert r.status == status, body
        for secret in SECRETS:
            assert secret not in body, f"{secret!r} shown by GET {path}"
        return r, body


async def post(http, svc, path: str, *, headers=AUTH, json=None):
    async with http.post(svc.web.url + path, headers=headers, json=json) as r:
        return r.status, await r.json()


async def companies(svc) -> list[tuple[str, str]]:
    """(Unleashed guid, CRM key) of the linked companies, in order."""
    links = T["links"]
    async with svc.app.db.connect() as conn:
        return sorted(tuple(r) for r in await conn.execute(
            select(links.c.left_id, links.c.right_id).where(links.c.flow == "companies")))


async def refused_company(svc, crm) -> tuple[str, str, str]:
    """Sync, then give a linked CRM company a website Unleashed refuses and sync again: an
    open record error on the CRM side (UL-7). Returns (guid, key, the company's name)."""
    assert (await svc.run_job("sync:ul")).status == "ok"
    guid, key = (await companies(svc))[0]
    crm.modify("Companies", int(key), {"Website": BAD_WEBSITE})
    assert (await svc.run_job("sync:ul")).status == "errors"
    return guid, key, crm.data["Companies"][int(key)]["Name"]


# --- Sage BOB 50 <-> Sage CRM (seed 003) behind the daemon's web side -------------------------
def bb_config(tmp: Path, env, *, token: str | None = TOKEN) -> str:
    """tests/integration/bb_env.py's configuration with a ``[web]`` table."""
    from tests.integration.bb_env import config_text
    web = "\n[web]\nport = 0\n" + (f'token = "{token}"\n' if token else "")
    path = tmp / "accord.toml"
    path.write_text(config_text(tmp, bob_url=env.bob.url, crm_url=env.crm.url) + web)
    return str(path)


@pytest.fixture
async def bb(tmp_path):
    """The BB sandboxes (a BOB database file, the Sage CRM sandbox) and a Service on them
    (``env.svc``), its bob50 connector on the test's clock."""
    from tests.integration.bb_env import close_env, make_env
    env = await make_env(tmp_path)
    svc = await start_service(bb_config(tmp_path, env))
    env.tie_clock(svc.app)
    env.svc = svc
    yield env
    await svc.stop()
    await close_env(env)


async def bb_sync(env) -> str:
    """One run of the integration as the scheduler fires it, the clock stepped around it."""
    from tests.integration.bb_env import INTEG
    env.clock.advance(120)
    result = await env.svc.run_job(f"sync:{INTEG}")
    env.clock.advance(120)
    return result.status
