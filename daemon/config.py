"""The TOML configuration, validated at start-up, by ``accord check`` and by a reload.

Every error is one line naming the file, the key and the reason (``ConfigError``); ``load``
never lets another exception out for a bad file. Secrets come from ``${ENV}`` references
(in any string) or from ``<key>_file`` keys (the file's content, stripped); they are held as
pydantic ``SecretStr`` by the connectors' settings and never logged.

Relative paths in a config are relative to the config file's directory, not to the current
directory, so ``accord status`` run from elsewhere finds the daemon's state: ``*_file``
secrets, ``[daemon] database = "sqlite:///…"``, and in ``[systems.*]`` (settings and sandbox
options) any ``path`` or ``*_path`` key and any ``sqlite:///…`` URL. The default database,
when the key is absent, stays ``accord-state.db`` in the working directory: the state
directory of the systemd unit and of the Docker image, where ``/etc/accord`` is read-only.

Checked beyond the types: schedules (``every`` ≥ 10 s, ``jitter`` shorter than ``every``,
cron expressions of the integration and of its jobs), the state database URL (parsable, a
SQLite or PostgreSQL URL whose async driver is installed, a SQLite file whose directory
exists) and the config and secret files (readable UTF-8 text).
"""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, SecretStr, ValidationError,
                      field_validator, model_validator)

from daemon.durations import crontab, seconds
from daemon.engine.rules import Condition, FlowRules, Side
from daemon import presets as preset_lib
from daemon.errors import ConfigError
from daemon.registry import connector_class

MIN_EVERY = 10.0        # seconds: below this the runs go back to back and hammer the vendors
DEFAULT_DATABASE = "sqlite:///accord-state.db"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SandboxSpec(Strict):
    port: int = Field(default=0, ge=0, le=65535)
    records: int = Field(default=25, ge=0)
    seed: int = 0
    activity: str | None = None     # e.g. "30s": a random user-like edit this often (demo)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("activity")
    @classmethod
    def _activity(cls, v: str | None) -> str | None:
        if v is not None and seconds(v) <= 0:
            raise ValueError(f"{v!r}: must be longer than 0 s")
        return v


class SystemSpec(Strict):
    model_config = ConfigDict(extra="allow")
    type: str
    sandbox: SandboxSpec | None = None


class Schedule(Strict):
    every: str | None = "15m"
    cron: str | None = None             # wins over every
    jitter: str = "30s"
    run_at_start: bool = True

    @field_validator("every")
    @classmethod
    def _every(cls, v: str | None) -> str | None:
        if v is not None and seconds(v) < MIN_EVERY:
            raise ValueError(f"{v!r} is too short: at least {MIN_EVERY:g}s between runs")
        return v

    @field_validator("jitter")
    @classmethod
    def _jitter(cls, v: str) -> str:
        seconds(v)
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            crontab(v)
        return v

    @model_validator(mode="after")
    def _jitter_below_every(self) -> "Schedule":
        if self.cron is None and seconds(self.jitter) >= self.interval():
            if "jitter" not in self.model_fields_set:   # the default 30s, for a short every
                self.jitter = "0s"
            else:
                raise ValueError(f"jitter {self.jitter!r} must be shorter than every "
                                 f"{self.every or '15m'!r}")
        return self

    def interval(self) -> float:
        return seconds(self.every or "15m")


class Job(Strict):
    name: str
    flow: str
    cron: str
    full: bool = True
    enforce: dict[str, Side] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        crontab(v)
        return v


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
    database: str = DEFAULT_DATABASE
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


def _read_text(p: Path, what: str) -> str:
    """A file's text, or a ConfigError saying why not (``what`` names the key, or nothing for
    the config file itself)."""
    prefix = f"{what}: {p}" if what else str(p)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{prefix}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{prefix}: is a directory, not a file") from None
    except PermissionError:
        raise ConfigError(f"{prefix}: cannot read it: permission denied") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{prefix}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{prefix}: cannot read it: {exc.strerror or exc}") from None


def _resolve(value: Any, where: str, base: Path) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k.endswith("_file") and isinstance(v, str):
                target = k[: -len("_file")]
                p = Path(_resolve(v, f"{where}.{k}", base))
                p = p if p.is_absolute() else base / p
                out[target] = _read_text(p, f"{where}.{k}").strip()
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


_SQLITE = re.compile(r"^(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?$")


def absolute_sqlite_url(url: str, base: Path) -> str:
    """``sqlite:///state.db`` -> ``sqlite:////<base>/state.db``; anything else as it is."""
    m = _SQLITE.match(url)
    if not m or not m.group(2) or m.group(2) == ":memory:" or Path(m.group(2)).is_absolute():
        return url
    return f"{m.group(1)}{base / m.group(2)}{m.group(3) or ''}"


def _paths(value: Any, base: Path, key: str = "") -> Any:
    """Relative paths of a system's settings and sandbox options, made absolute."""
    if isinstance(value, dict):
        return {k: _paths(v, base, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_paths(v, base) for v in value]
    if isinstance(value, str):
        if value.startswith("sqlite"):
            return absolute_sqlite_url(value, base)
        if (key == "path" or key.endswith("_path")) and value and not Path(value).is_absolute():
            return str(base / value)
    return value


def _loc(err: dict) -> str:
    return ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))


def _msg(err: dict) -> str:
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def load(path: str | Path) -> Config:
    """Read, resolve and validate; raises ConfigError naming the file and the key, and
    nothing else for a bad file."""
    path = Path(path)
    base = path.absolute().parent
    raw = _toml(path)
    try:
        data = _resolve(raw, "", base)
        daemon = data.get("daemon")
        if isinstance(daemon, dict) and isinstance(daemon.get("database"), str):
            daemon["database"] = absolute_sqlite_url(daemon["database"], base)
        if isinstance(data.get("systems"), dict):
            data["systems"] = _paths(data["systems"], base)
        for name, spec in (data.get("integrations") or {}).items():
            if isinstance(spec, dict) and spec.get("preset"):
                data["integrations"][name] = preset_lib.expand(spec, f"integrations.{name}")
        cfg = Config.model_validate({**data, "path": str(path)})
        _check(cfg)
        return cfg
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first(exc)}") from None


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(_read_text(path, ""))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _first(exc: ValidationError, prefix: str = "") -> str:
    """The first error of a validation, at its key (under ``prefix``), and how many more."""
    first = exc.errors()[0]
    where = ".".join(p for p in (prefix, _loc(first)) if p)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {_msg(first)}{more}"


def load_web(path: str | Path) -> WebSpec:
    """Only the ``[web]`` table of a config, read and validated as ``load`` does it: what
    ``accord health`` needs to find the daemon's /healthz. The rest of the file is not
    looked at, so an edit that breaks an integration, made while the daemon runs the
    configuration it loaded before, does not make the running daemon look unhealthy."""
    path = Path(path)
    raw = _toml(path)
    try:
        web = _resolve(raw.get("web", {}), "web", path.absolute().parent)
        return WebSpec.model_validate(web)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first(exc, 'web')}") from None


def check_database(url: str, where: str = "daemon.database") -> None:
    """The state database URL: parsable, SQLite or PostgreSQL, its async driver installed,
    a SQLite file's directory there. Nothing is opened or created. The URL is never
    repeated in a message (it may hold a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    from daemon.store.db import to_async_url
    try:
        u = make_url(to_async_url(url))
    except (ArgumentError, ValueError):
        raise ConfigError(f"{where}: not a database URL (use sqlite:///PATH or "
                          f"postgresql://USER:PASSWORD@HOST:PORT/DATABASE)") from None
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"{where}: {backend} is not supported: accord keeps its state in "
                          f"SQLite or PostgreSQL")
    try:
        dialect = u.get_dialect(_is_async=True)
        dialect.import_dbapi()
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"{where}: the database driver for {u.drivername} is not installed "
                          f"({exc})") from None
    if not getattr(dialect, "is_async", False):
        raise ConfigError(f"{where}: {u.drivername} is not an asyncio driver (use "
                          f"sqlite:/// or postgresql://, which use aiosqlite and asyncpg)")
    if backend == "sqlite" and u.database and u.database != ":memory:":
        file = Path(u.database)
        if file.is_dir():
            raise ConfigError(f"{where}: {file} is a directory, not a SQLite file")
        if not file.parent.is_dir():
            raise ConfigError(f"{where}: the directory {file.parent} does not exist "
                              f"(SQLite creates the file, not its directory)")


def _check(cfg: Config) -> None:
    check_database(cfg.daemon.database)
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
            raise ConfigError(f"systems.{name}.{_loc(first)}: {_msg(first)}") from None
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
