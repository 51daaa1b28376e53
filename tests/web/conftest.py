"""The web side against a real Service (scheduler paused, jobs fired by the test) with the
test's own sandboxes, on a free loopback port; requests through a real socket."""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from daemon.service import Service
from tests.test_cli import sandboxes, write_config  # noqa: F401

TOKEN = "web-token-s3cret-9911"
SECRETS = ("sandbox-key", "sandbox-token", TOKEN)      # none may appear in a GET answer


def web_config(tmp: Path, ul, crm, *, token: str | None = TOKEN, ul_extra: str = "",
               web: str = "") -> str:
    lines = ["[web]", "port = 0"]
    if token is not None:
        lines.append(f'token = "{token}"')
    return write_config(tmp, ul_url=ul.url, crm_url=crm.url, ul_extra=ul_extra,
                        extra="\n".join(lines) + "\n" + web)


async def start_service(path: str) -> Service:
    svc = Service(path, configure_logging=False, activity=False)
    await svc.start(paused=True)
    assert svc.web is not None and svc.web.port
    return svc


async def until_idle(svc: Service, name: str = "ul", timeout: float = 30.0) -> None:
    """Wait (bounded) until no run of ``name`` is under way and no webhook is queued."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (svc.locks[name].locked() or name in svc.web._drainers
           or any(not t.done() for t in svc.web._tasks)):
        assert loop.time() < deadline, "the run did not finish in time"
        await asyncio.sleep(0.01)


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
