"""A real trytond for the tests: a template database, a server process, a fault proxy.

Nothing is installed at run time: trytond 8.2 and its modules come with the test extras.
Once per session, ``trytond-admin`` creates a SQLite database ``template`` with the modules
the connector needs and an ``admin`` user; the server (``tests/tryton/serve.py``, trytond's
own WSGI app) is started on 127.0.0.1 with a free port; currency, company, the admin's
company and a few countries are set up over JSON-RPC, as a person would through the client.
Each test then gets a copy of the template file under a new database name.

Building the template takes 20-50 s (trytond-admin loads every module's data), so a finished
template is also kept in a cache file named after the installed trytond distributions and this
file's content (``~/.cache/accord/``, or ``ACCORD_TRYTON_CACHE``, a directory; ``off`` builds
it every session). A later session copies it instead of building it again; any upgrade of
trytond or its modules, or an edit of this file, builds a new one.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from importlib import metadata
from itertools import count
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

from connectors.sandbox import Faults
from connectors.tryton.wire import decode, encode

MODULES = ["party", "company", "currency", "country", "product", "account", "account_product",
           "account_invoice", "stock", "account_invoice_stock", "sale", "sale_opportunity"]
PASSWORD = "admin"
TEMPLATE = "template"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


class TrytonServer:
    """One trytond process serving every database file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "trytond.conf"
        self.config.write_text(
            "[database]\nuri = sqlite://\npath = {}\n\n[web]\nlisten = 127.0.0.1:{}\n\n"
            "[session]\nmax_attempt = 1000\n".format(directory, self.port))
        self.process: subprocess.Popen | None = None
        self.log = directory / "trytond.log"
        self._copies = count(1)

    # --- the template --------------------------------------------------------------------
    @staticmethod
    def cache_file() -> Path | None:
        where = os.environ.get("ACCORD_TRYTON_CACHE", "")
        if where.lower() in ("off", "0", "no", "false"):
            return None
        folder = Path(where) if where else Path.home() / ".cache" / "accord"
        versions = sorted(f"{d.metadata['Name']}=={d.version}"
                          for d in metadata.distributions()
                          if (d.metadata["Name"] or "").lower().replace("-", "_")
                          .startswith("trytond"))
        digest = hashlib.sha256("\n".join(
            [*versions, *MODULES, Path(__file__).read_text()]).encode()).hexdigest()[:16]
        return folder / f"tryton-template-{digest}.sqlite"

    def prepare_template(self) -> None:
        """The template database: from the cache, or built (and then cached)."""
        cached = self.cache_file()
        target = self.dir / f"{TEMPLATE}.sqlite"
        if cached is not None and cached.is_file():
            _backup(cached, target)
            self.start()
            return
        self.create_template()
        self.start()
        self.set_up_template()
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.part")
            _backup(target, partial)
            os.replace(partial, cached)          # atomic: parallel sessions see all or none

    def create_template(self) -> None:
        (self.dir / f"{TEMPLATE}.sqlite").touch()
        passfile = self.dir / "admin.pass"
        passfile.write_text(PASSWORD)
        env = {**os.environ, "TRYTONPASSFILE": str(passfile)}
        done = subprocess.run(
            [_bin("trytond-admin"), "-c", str(self.config), "-d", TEMPLATE, "--all",
             "--email", "admin@example.com", "-u", *MODULES],
            env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"trytond-admin failed:\n{done.stderr[-3000:]}")

    def set_up_template(self) -> None:
        """Currency, company and countries, over JSON-RPC as the admin."""
        rpc = SyncRpc(self.url, TEMPLATE)
        eur, = rpc("currency.currency", "create", [{"name": "Euro", "code": "EUR",
                                                    "symbol": "€", "digits": 2}])
        rpc("currency.currency", "create", [{"name": "Pound Sterling", "code": "GBP",
                                             "symbol": "£", "digits": 2}])
        rpc("country.country", "create", [
            {"name": "United Kingdom", "code": "GB"}, {"name": "France", "code": "FR"},
            {"name": "Germany", "code": "DE"}, {"name": "New Zealand", "code": "NZ"}])
        party, = rpc("party.party", "create", [{"name": "Accord Test Ltd"}])
        company, = rpc("company.company", "create", [{"party": party, "currency": eur}])
        rpc("res.user", "write", [rpc.uid], {"companies": [["add", [company]]],
                                             "company": company})

    def copy(self, prefix: str = "t") -> str:
        """A fresh database (a copy of the template file); its name."""
        name = f"{prefix}{next(self._copies)}"
        _backup(self.dir / f"{TEMPLATE}.sqlite", self.dir / f"{name}.sqlite")
        return name

    def drop(self, name: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            (self.dir / f"{name}.sqlite{suffix}").unlink(missing_ok=True)

    # --- the process ---------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        self._out = open(self.log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.tryton.serve", str(self.config)],
            cwd=str(ROOT), stdout=self._out, stderr=subprocess.STDOUT,
            env={**os.environ, "TRYTOND_LOGGING_LEVEL": "40"})
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"trytond exited ({self.process.returncode}); see {self.log}")
            try:
                body = _post(f"{self.url}/rpc/", {"id": 0, "method": "common.server.version",
                                                  "params": []}, timeout=2)
                if "result" in body:
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"trytond did not answer within {timeout}s; see {self.log}")
            time.sleep(0.1)                          # poll interval only

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if getattr(self, "_out", None):
            self._out.close()


def _backup(source: Path, target: Path) -> None:
    """Copy a SQLite file; trytond keeps it in WAL mode, and the backup API copies what the
    WAL holds too (a plain file copy would miss the last commits)."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def _post(url: str, payload: dict, headers: dict | None = None, timeout: float = 60) -> Any:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={
        "Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class SyncRpc:
    """A blocking JSON-RPC client for set-up and for edits "as a user would" in tests."""

    def __init__(self, url: str, database: str, login: str = "admin",
                 password: str = PASSWORD) -> None:
        self.url = f"{url}/{database}/rpc/"
        body = _post(self.url, {"id": 0, "method": "common.db.login",
                                "params": [login, {"password": password}]})
        self.uid, key = body["result"][0], body["result"][1]
        self.auth = "Session " + base64.b64encode(f"{login}:{self.uid}:{key}".encode()).decode()
        self.context = decode(self._call("model.res.user.get_preferences", [True, {}]))
        self.context["active_test"] = False

    def _call(self, method: str, params: list) -> Any:
        body = _post(self.url, {"id": 1, "method": method, "params": encode(params)},
                     {"Authorization": self.auth})
        if body.get("error"):
            raise RuntimeError(f"{method}: {body['error']}")
        return decode(body["result"])

    def __call__(self, model: str, method: str, *args: Any) -> Any:
        return self._call(f"model.{model}.{method}", [*args, self.context])


class FaultProxy:
    """Loopback HTTP in front of trytond: fault knobs (connectors.sandbox.Faults) and a log
    of the JSON-RPC methods called, so tests can count reads and writes."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.faults = Faults()
        self.methods: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    async def start(self) -> "FaultProxy":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        self._session = ClientSession()
        return self

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def reset(self) -> None:
        self.methods.clear()

    def writes(self) -> list[str]:
        return [m for m in self.methods
                if m.rsplit(".", 1)[-1] in ("create", "write", "delete")]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if self.faults._fail:
            status, retry_after = self.faults._fail.pop(0)
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return web.Response(status=status, text="injected fault", headers=headers)
        body = await request.read()
        try:
            self.methods.append(json.loads(body).get("method", ""))
        except ValueError:
            pass
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "content-type", "accept")}
        async with self._session.request(request.method, self.target + request.rel_url.path,
                                         data=body, headers=headers) as resp:
            data = await resp.read()
            return web.Response(status=resp.status, body=data,
                                content_type=resp.content_type or "application/json")
