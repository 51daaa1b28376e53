"""Assembly: from a validated Config to running resources.

``App`` owns the state database, the bundled sandboxes a config asks for, one connector per
system (one HTTP session each, opened at start, closed at stop) and the integrations.

Sandboxes keep their records in files next to the state (``daemon/demo.py``). ``start`` takes
``running`` (URLs of sandboxes a live daemon serves: used, not started again) and ``adopt``
(sandbox objects handed over by the App a reload replaces: ``detach_sandboxes``). With
``run_file`` (the daemon) the App publishes its sandboxes' URLs for the commands beside it.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.base import Connector
from daemon import demo
from daemon.config import Config, IntegrationSpec, system_settings
from daemon.durations import seconds
from daemon.engine.runner import Guard, Integration, order_flows
from daemon.registry import connector_class, sandbox_class
from daemon.store import schema
from daemon.store.db import make_engine

log = structlog.get_logger("accord.app")


@dataclass
class App:
    cfg: Config
    db: AsyncEngine | None = None
    sandboxes: dict[str, Any] = field(default_factory=dict)
    connectors: dict[str, Connector] = field(default_factory=dict)
    integrations: dict[str, Integration] = field(default_factory=dict)
    run_file: bool = False              # publish the sandboxes (the daemon: daemon/demo.py)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    async def start(self, *, sandboxes: bool = True, activity: bool = True,
                    running: dict[str, str] | None = None,
                    adopt: dict[str, Any] | None = None, state: bool = True) -> "App":
        """``state=False``: the systems only (``accord check`` looks at the state database
        itself, without migrating or creating it)."""
        adopt = dict(adopt or {})
        try:
            if state:
                await self._open_state()
            await self._start_systems(sandboxes, activity, running or {}, adopt)
        except BaseException:
            for sb in adopt.values():   # not taken over: stopped, their files keep the records
                await sb.stop()
            await self.close()
            raise
        return self

    async def _open_state(self) -> None:
        self.db = make_engine(self.cfg.daemon.database)
        # an empty database is migrated; one that is behind is refused (SchemaBehind)
        try:
            await schema.check(self.db, config_path=self.cfg.path or None)
        except OSError as exc:                  # unreachable (or a timeout): say which one
            await self.db.dispose()
            self.db = None
            where = make_url(self.cfg.daemon.database).render_as_string(hide_password=True)
            raise OSError(f"state database {where}: {exc.strerror or exc}") from None
        except BaseException:
            await self.db.dispose()
            self.db = None
            raise

    async def _start_systems(self, sandboxes: bool, activity: bool, running: dict[str, str],
                             adopt: dict[str, Any]) -> None:
        for name, spec in self.cfg.systems.items():
            settings = system_settings(spec)
            if spec.sandbox is not None and sandboxes:
                url = running.get(name)
                if url is None:
                    url = (await self._start_sandbox(name, spec, activity,
                                                     adopt.pop(name, None))).url
                settings.pop("base_url", None)
                # an HTTP sandbox gives a base URL; a database sandbox a database URL
                settings[getattr(sandbox_class(spec.type), "url_setting", "base_url")] = url
            cls = connector_class(spec.type)
            conn = cls(name, cls.Settings.model_validate(settings))
            await conn.start()
            self.connectors[name] = conn
        for name, spec in self.cfg.integrations.items():
            if spec.enabled:
                self.integrations[name] = build_integration(name, spec, self.connectors)
        if self.run_file and self.sandboxes:
            demo.write_run_file(self.cfg, self.sandboxes)

    async def _start_sandbox(self, name: str, spec, activity: bool, adopted: Any = None):
        sbspec = spec.sandbox
        sb = adopted if adopted is not None else await self._new_sandbox(name, spec)
        self.sandboxes[name] = sb
        if activity and sbspec.activity:
            self._tasks.append(asyncio.create_task(
                _activity(name, sb, seconds(sbspec.activity), random.Random(sbspec.seed + 1))))
        return sb

    async def _new_sandbox(self, name: str, spec):
        """A sandbox from its file next to the state (its records as they were left), or
        generated when there is none yet (then written there at once)."""
        sbspec = spec.sandbox
        cls = sandbox_class(spec.type)
        settings = system_settings(spec)
        creds = {k: (v if isinstance(v, str) else v) for k, v in settings.items()
                 if k in _credential_keys(cls)}
        options = dict(sbspec.options)
        store = demo.sandbox_file(self.cfg, name).resolve()
        kept = store.exists()
        if not hasattr(cls, "keep_in") and "path" in _credential_keys(cls):
            options["path"] = str(store)            # a database sandbox: its file is the store
        sb = cls(seed=sbspec.seed, records=0 if kept else sbspec.records, **creds, **options)
        if hasattr(sb, "keep_in"):
            sb.keep_in(store)
        await sb.start(port=sbspec.port)
        log.info("sandbox.started", system=name, type=spec.type, url=sb.url,
                 records="kept" if kept else sbspec.records, file=str(store))
        return sb

    def detach_sandboxes(self, cfg: Config) -> dict[str, Any]:
        """The sandboxes ``cfg`` configures exactly as this App's config does, taken out of
        this App: its ``close()`` leaves them serving and the next App adopts them
        (``start(adopt=...)``), so a reload keeps the demo's systems, records and ports."""
        kept: dict[str, Any] = {}
        for name in list(self.sandboxes):
            old, new = self.cfg.systems.get(name), cfg.systems.get(name)
            if old is not None and new is not None and new.sandbox is not None \
                    and old.model_dump() == new.model_dump():
                kept[name] = self.sandboxes.pop(name)
        return kept

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for conn in self.connectors.values():
            await conn.close()
        self.connectors.clear()
        for sb in self.sandboxes.values():
            await sb.stop()
        self.sandboxes.clear()
        if self.run_file:
            demo.remove_run_file(self.cfg)
        if self.db is not None:
            await self.db.dispose()
            self.db = None

    async def __aenter__(self) -> "App":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def integration(self, name: str) -> Integration:
        if name not in self.integrations:
            raise KeyError(f"no integration named {name!r} "
                           f"(configured: {', '.join(sorted(self.integrations)) or 'none'})")
        return self.integrations[name]


def check_entities(integration: str, flow, sides: dict[str, Connector]) -> None:
    """What a flow asks of its systems' entities, against what they say they can do: a
    ``batch_size`` needs an entity read in order (the cursor stops after the last record
    taken), and a related entity must exist. Refused before anything runs (``accord check``,
    start, reload)."""
    where = f"integrations.{integration}.flows.{flow.name}"
    for side, conn in sides.items():
        entities = conn.capabilities.entities
        entity = flow.entity(side)
        info = entities.get(entity)
        if info is None:
            continue                    # the connector says so itself, by name, when used
        if flow.batch_size and not info.ordered and flow.batch_on in (None, side):
            raise ValueError(f"{where}.batch_size: {conn.name} cannot read {entity} in order, "
                             "so a run cannot stop after a batch and go on from there")
    for rel in flow.related:
        conn = sides[rel.side]
        if rel.entity not in conn.capabilities.entities:
            raise ValueError(f"{where}.related: {conn.name} has no entity {rel.entity!r} "
                             f"(it has {', '.join(conn.capabilities.entities)})")


def _credential_keys(sandbox_cls) -> set[str]:
    import inspect
    params = inspect.signature(sandbox_cls.__init__).parameters
    return {p for p in params if p not in ("self", "seed", "records", "clock")}


async def _activity(name: str, sandbox, every: float, rng: random.Random) -> None:
    """Demo only: a user editing records in the sandbox now and then."""
    while True:
        await asyncio.sleep(every * (0.5 + rng.random()))
        what = sandbox.touch(rng)
        changed = getattr(sandbox, "changed", None)     # written to its file (daemon/demo.py)
        if changed is not None:
            changed()
        log.info("sandbox.activity", system=name, did=what)


def build_integration(name: str, spec: IntegrationSpec,
                      connectors: dict[str, Connector]) -> Integration:
    sides = {"left": connectors[spec.left], "right": connectors[spec.right]}
    for flow in spec.flows:
        check_entities(name, flow, sides)
    return Integration(
        name=name, flows=order_flows(spec.flows),
        sides={"left": connectors[spec.left], "right": connectors[spec.right]},
        guards=[Guard(g.side, g.option, g.refuse_when, g.message) for g in spec.guards],
        confirm_first_run=spec.confirm_first_run)
