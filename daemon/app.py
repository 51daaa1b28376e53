"""Assembly: from a validated Config to running resources.

``App`` owns the state database, the bundled sandboxes a config asks for, one connector per
system (one HTTP session each, opened at start, closed at stop) and the integrations.
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
    _tasks: list[asyncio.Task] = field(default_factory=list)

    async def start(self, *, sandboxes: bool = True, activity: bool = True,
                    state: bool = True) -> "App":
        """``state=False``: the systems only (``accord check`` looks at the state database
        itself, without migrating or creating it)."""
        if state:
            await self._open_state()
        for name, spec in self.cfg.systems.items():
            settings = system_settings(spec)
            if spec.sandbox is not None and sandboxes:
                sb = await self._start_sandbox(name, spec, activity)
                settings.pop("base_url", None)
                # an HTTP sandbox gives a base URL; a database sandbox a database URL
                settings[getattr(sb, "url_setting", "base_url")] = sb.url
            cls = connector_class(spec.type)
            conn = cls(name, cls.Settings.model_validate(settings))
            await conn.start()
            self.connectors[name] = conn
        for name, spec in self.cfg.integrations.items():
            if spec.enabled:
                self.integrations[name] = build_integration(name, spec, self.connectors)
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

    async def _start_sandbox(self, name: str, spec, activity: bool):
        sbspec = spec.sandbox
        cls = sandbox_class(spec.type)
        settings = system_settings(spec)
        creds = {k: (v if isinstance(v, str) else v) for k, v in settings.items()
                 if k in _credential_keys(cls)}
        sb = cls(seed=sbspec.seed, records=sbspec.records, **creds, **sbspec.options)
        await sb.start(port=sbspec.port)
        self.sandboxes[name] = sb
        log.info("sandbox.started", system=name, type=spec.type, url=sb.url,
                 records=sbspec.records)
        if activity and sbspec.activity:
            self._tasks.append(asyncio.create_task(
                _activity(name, sb, seconds(sbspec.activity), random.Random(sbspec.seed + 1))))
        return sb

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in self.connectors.values():
            await conn.close()
        for sb in self.sandboxes.values():
            await sb.stop()
        if self.db is not None:
            await self.db.dispose()

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
