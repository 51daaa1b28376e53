"""The TOML configuration, validated at start-up.

Every error names the file, the key and the reason. Secrets come from ``${ENV}`` references
(in any string) or from ``<key>_file`` keys (the file's content, stripped); they are held as
pydantic ``SecretStr`` by the connectors' settings and never logged.
"""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, SecretStr, ValidationError,
                      field_validator)

from daemon.engine.rules import Condition, FlowRules, Side
from daemon import presets as preset_lib
from daemon.registry import connector_class


class ConfigError(Exception):
    """A configuration that cannot be used; ``str()`` is one clear line."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SandboxSpec(Strict):
    port: int = Field(default=0, ge=0, le=65535)
    records: int = Field(default=25, ge=0)
    seed: int = 0
    activity: str | None = None     # e.g. "30s": a random user-like edit this often (demo)
    options: dict[str, Any] = Field(default_factory=dict)


class SystemSpec(Strict):
    model_config = ConfigDict(extra="allow")
    type: str
    sandbox: SandboxSpec | None = None


class Schedule(Strict):
    every: str | None = "15m"
    cron: str | None = None
    jitter: str = "30s"
    run_at_start: bool = True


class Job(Strict):
    name: str
    flow: str
    cron: str
    full: bool = True
    enforce: dict[str, Side] = Field(default_factory=dict)


class Guard(Strict):
    side: Side
    option: str
    refuse_when: list[Condition]
    message: str


class IntegrationSpec(Strict):
    left: str
    right: str
    preset: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    flows: list[FlowRules] = Field(default_factory=list)
    jobs: list[Job] = Field(default_factory=list)
    guards: list[Guard] = Field(default_factory=list)
    schedule: Schedule = Schedule()
    enabled: bool = True
    # the first run stores its plan and waits for `accord approve` before writing anything
    confirm_first_run: bool = False


class DaemonSpec(Strict):
    database: str = "sqlite:///accord-state.db"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # several daemons on one PostgreSQL database: one runs each integration (daemon/lease.py);
    # a no-op on SQLite
    lease: bool = True
    lease_holder: str | None = None     # who holds it, in logs and pg_stat_activity
                                        # (default hostname:pid)


class WebSpec(Strict):
    """The status page, JSON API, metrics and health checks (daemon/web.py)."""
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    token: SecretStr | None = None      # POST endpoints; ``${ENV}`` or ``token_file``

    @field_validator("token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is None or v.get_secret_value() else None


class Config(Strict):
    daemon: DaemonSpec = DaemonSpec()
    web: WebSpec = WebSpec()
    systems: dict[str, SystemSpec]
    integrations: dict[str, IntegrationSpec]
    path: str = ""

    @field_validator("integrations")
    @classmethod
    def _names(cls, v: dict) -> dict:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(f"integration name {name!r}: use letters, digits, - _ .")
        return v


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _resolve(value: Any, where: str, base: Path) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k.endswith("_file") and isinstance(v, str):
                target = k[: -len("_file")]
                p = Path(_resolve(v, f"{where}.{k}", base))
                p = p if p.is_absolute() else base / p
                try:
                    out[target] = p.read_text().strip()
                except OSError as exc:
                    raise ConfigError(f"{where}.{k}: cannot read {p}: {exc.strerror}") from None
            else:
                out[k] = _resolve(v, f"{where}.{k}" if where else k, base)
        return out
    if isinstance(value, list):
        return [_resolve(v, f"{where}[{i}]", base) for i, v in enumerate(value)]
    if isinstance(value, str):
        def sub(m):
            name = m.group(1)
            if name not in os.environ:
                raise ConfigError(f"{where}: environment variable {name} is not set")
            return os.environ[name]
        return _ENV.sub(sub, value)
    return value


def _loc(err: dict) -> str:
    return ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))


def load(path: str | Path) -> Config:
    """Read, resolve and validate; raises ConfigError naming the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        data = _resolve(raw, "", path.parent)
        for name, spec in (data.get("integrations") or {}).items():
            if isinstance(spec, dict) and spec.get("preset"):
                data["integrations"][name] = preset_lib.expand(spec, f"integrations.{name}")
        cfg = Config.model_validate({**data, "path": str(path)})
        _check(cfg)
        return cfg
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{path}: {_loc(first)}: {first['msg']}{more}") from None


def _check(cfg: Config) -> None:
    for name, spec in cfg.systems.items():
        try:
            cls = connector_class(spec.type)
        except KeyError as exc:
            raise ConfigError(f"systems.{name}.type: {exc.args[0]}") from None
        settings = system_settings(spec)
        try:
            cls.Settings.model_validate(settings)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"systems.{name}.{_loc(first)}: {first['msg']}") from None
    for name, integ in cfg.integrations.items():
        where = f"integrations.{name}"
        for side in ("left", "right"):
            sysname = getattr(integ, side)
            if sysname not in cfg.systems:
                raise ConfigError(f"{where}.{side}: no system named {sysname!r} "
                                  f"(defined: {', '.join(sorted(cfg.systems))})")
        if not integ.flows:
            raise ConfigError(f"{where}: no flows (name a preset or list flows)")
        names = [f.name for f in integ.flows]
        for i, flow in enumerate(integ.flows):
            for dep in flow.depends_on:
                if dep not in names:
                    raise ConfigError(f"{where}.flows[{i}].depends_on: no flow named {dep!r}")
            for f in flow.fields:
                if f.ref and f.ref not in names:
                    raise ConfigError(f"{where}.flows[{i}].fields.{f.name}.ref: "
                                      f"no flow named {f.ref!r}")
            for target in ("left", "right"):
                if flow.create.toward(target).mode != "never" and not flow.match \
                        and target not in flow.external_id:
                    raise ConfigError(
                        f"{where}.flows[{i}].create.to_{target}: creating records needs "
                        f"`match` keys or an `external_id`, so that an interrupted create is "
                        f"found again instead of made twice")
        for job in integ.jobs:
            if job.flow not in names:
                raise ConfigError(f"{where}.jobs.{job.name}.flow: no flow named {job.flow!r}")


def system_settings(spec: SystemSpec) -> dict[str, Any]:
    settings = {k: v for k, v in (spec.model_extra or {}).items()}
    if spec.sandbox is not None:
        # where the bundled sandbox will be; the daemon puts the real address when it starts it
        from daemon.registry import sandbox_class
        try:
            key = getattr(sandbox_class(spec.type), "url_setting", "base_url")
        except KeyError:
            key = "base_url"
        settings.setdefault(key, f"http://127.0.0.1:{spec.sandbox.port}"
                            if key == "base_url" else "sqlite://")
    return settings
