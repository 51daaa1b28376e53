"""The demo's files: the bundled sandboxes' records, the run file, and what a reset deletes.

A config whose systems have a ``sandbox`` table is a demo. Its files live next to its state
file (SQLite; with PostgreSQL, next to the config file) and are named after it, so that two
demos in one directory do not mix (``accord-state.db`` gives):

- ``accord-state.sandbox-<system>.json`` (an HTTP sandbox's records, see
  ``connectors/sandbox.py``) or ``.sqlite`` (the generated Sage 50 database file): read at
  start, written on change, so a restart, a reload and a second terminal see the same systems;
- ``accord-state.demo.json``, the run file: written by ``accord run`` once its sandboxes
  serve, removed when it stops (``{"pid", "config", "sandboxes": {system: {"type", "url"}}}``).
  A command beside the daemon (``check``, ``plan``, ``sync``, ``push``) that finds the
  daemon alive and each sandbox answering at its URL as the right kind of sandbox uses them
  rather than starting a second copy; otherwise it starts them from their files and stops
  them after.

``accord demo reset`` deletes all of these, the state file and what a sandboxed system's
``state_path`` names (the ids it has seen), so that the demo starts afresh.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog
from sqlalchemy.engine import make_url

from daemon.config import Config, system_settings
from daemon.registry import sandbox_class

log = structlog.get_logger("accord.demo")
PROBE_TIMEOUT = 2.0         # seconds a live daemon's sandbox has to answer


@dataclass(frozen=True)
class DemoFiles:
    directory: Path
    stem: str
    state: Path | None          # the SQLite state file, None for another database

    @property
    def run_file(self) -> Path:
        return self.directory / f"{self.stem}.demo.json"

    def sandbox_file(self, system: str, suffix: str = ".json") -> Path:
        return self.directory / f"{self.stem}.sandbox-{system}{suffix}"


def files(cfg: Config) -> DemoFiles:
    url = make_url(cfg.daemon.database)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        state = Path(url.database)
        return DemoFiles(state.parent, state.stem, state)
    base = Path(cfg.path).parent if cfg.path else Path(".")
    return DemoFiles(base, "accord", None)


def sandboxed(cfg: Config) -> list[str]:
    """The systems the config serves from bundled sandboxes."""
    return [name for name, spec in cfg.systems.items() if spec.sandbox is not None]


def sandbox_file(cfg: Config, system: str) -> Path:
    """Where a sandboxed system keeps its records: its ``path`` option (a database sandbox
    given a file of its own), else a file next to the state."""
    spec = cfg.systems[system]
    given = spec.sandbox.options.get("path") if spec.sandbox is not None else None
    if isinstance(given, str) and given:
        return Path(given)
    suffix = getattr(sandbox_class(spec.type), "store_suffix", ".json")
    return files(cfg).sandbox_file(system, suffix)


# --- the run file --------------------------------------------------------------------------------
def write_run_file(cfg: Config, sandboxes: dict[str, Any]) -> Path:
    path = files(cfg).run_file
    doc = {"pid": os.getpid(), "config": str(Path(cfg.path).resolve()) if cfg.path else "",
           "sandboxes": {name: {"type": cfg.systems[name].type, "url": sb.url}
                         for name, sb in sandboxes.items()}}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
    return path


def remove_run_file(cfg: Config) -> None:
    """Remove the run file if this process wrote it."""
    path = files(cfg).run_file
    if _read(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def daemon_pid(cfg: Config) -> int | None:
    """The pid of a live daemon serving this demo (per its run file), else None."""
    pid = _read(files(cfg).run_file).get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    return pid


async def running_sandboxes(cfg: Config) -> dict[str, str]:
    """System -> URL of the sandboxes a live daemon serves for this config and that answer
    there now as the sandbox the config names (see the module docstring)."""
    if daemon_pid(cfg) is None:
        return {}
    served = _read(files(cfg).run_file).get("sandboxes")
    if not isinstance(served, dict):
        return {}
    out: dict[str, str] = {}
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for name in sandboxed(cfg):
            entry = served.get(name)
            spec = cfg.systems[name]
            if not isinstance(entry, dict) or entry.get("type") != spec.type \
                    or not isinstance(entry.get("url"), str):
                continue
            url = entry["url"]
            port = spec.sandbox.port if spec.sandbox else 0
            if url.startswith("http"):
                if port and not url.endswith(f":{port}"):
                    continue
                if await _answers(session, url, sandbox_class(spec.type)):
                    out[name] = url
            elif url.startswith("sqlite:///") and Path(url[len("sqlite:///"):]).exists():
                out[name] = url             # a database file: shared as it is
    return out


async def _answers(session: aiohttp.ClientSession, url: str, cls) -> bool:
    try:
        async with session.get(f"{url}/_sandbox/stats") as resp:
            doc = await resp.json(content_type=None) if resp.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("system") == getattr(cls, "system", None)


def _read(path: Path) -> dict:
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- reset ---------------------------------------------------------------------------------------
class NotADemo(Exception):
    """The config is not (only) a demo: a reset would delete real state."""


def reset_plan(cfg: Config) -> list[Path]:
    """The files a reset deletes (those that exist). NotADemo unless every system is a
    bundled sandbox."""
    real = [name for name, spec in cfg.systems.items() if spec.sandbox is None]
    if real or not cfg.systems:
        raise NotADemo(f"systems.{real[0]} is not a sandbox" if real else "no systems")
    f = files(cfg)
    paths: list[Path] = []
    if f.state is not None:
        paths.append(f.state)
    for name in sandboxed(cfg):
        paths.append(sandbox_file(cfg, name))
        state_path = system_settings(cfg.systems[name]).get("state_path")
        if isinstance(state_path, str) and state_path:
            paths.append(Path(state_path))
    paths.append(f.run_file)
    out: list[Path] = []
    for p in paths:
        for candidate in (p, *(p.with_name(p.name + s) for s in ("-wal", "-shm", "-journal",
                                                               ".tmp"))):
            if candidate.exists() and candidate not in out:
                out.append(candidate)
    return out


def delete(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)
