"""Presets: the integrations of RULES.md as declarative flow files (``<name>.toml`` here).

A preset holds ``[options]`` (defaults the user's ``options`` table overrides), ``flows``,
``jobs`` and ``guards``. Any field, flow override, job or guard may carry
``when = "option"`` or ``when = "not option"``; it is kept only when that holds.
A flow's ``[[flows.overrides]]`` entries replace flow keys when their ``when`` holds.
A flow may carry ``when`` too (a flow an option turns off); the preset's jobs of a flow that
is turned off go with it (a user's own job naming a missing flow is still an error).
A ``[schedule]`` table is the integration's default schedule (the user's keys win), and a
top-level ``confirm_first_run`` the integration's default for it.

A user's flow table may add ``custom_fields`` (BB-8): fields selected by name, appended to the
preset's list instead of replacing it, each ``{ left, right, when = [...] }`` where ``when``
(optional) is a condition on the left record (``when = { left = [...], right = [...] }`` for
either side). ``accord fields INTEGRATION FLOW`` lists the candidates.
A ``[schedule]`` table is the integration's default schedule (the user's keys win).
A value written ``{ setting = "name" }`` anywhere in a flow, job or guard is that option's
value (a list of progress names, a status name: DT-7, DT-9), so rules can use options as
values, not only to switch things on and off.
"""
from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any


class PresetError(Exception):
    pass


def names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir()
                  if p.name.endswith(".toml"))


def load(name: str) -> dict[str, Any]:
    try:
        text = resources.files(__package__).joinpath(f"{name}.toml").read_text()
    except FileNotFoundError:
        raise PresetError(f"unknown preset {name!r} (known: {', '.join(names())})") from None
    return tomllib.loads(text)


def _holds(expr: str | None, options: dict[str, Any]) -> bool:
    if expr is None:
        return True
    expr = expr.strip()
    if expr.startswith("not "):
        return not options[expr[4:].strip()]
    return bool(options[expr])


def _keep(items: list[dict], options: dict[str, Any]) -> list[dict]:
    out = []
    for item in items:
        if _holds(item.get("when"), options):
            out.append({k: v for k, v in item.items() if k != "when"})
    return out


def settle(value: Any, options: dict[str, Any], where: str) -> Any:
    """``value`` with every ``{ setting = "name" }`` replaced by that option's value."""
    if isinstance(value, dict):
        if set(value) == {"setting"}:
            name = value["setting"]
            if name not in options:
                from daemon.errors import ConfigError
                raise ConfigError(f"{where}: setting {name!r} is not an option of the preset "
                                  f"(options: {', '.join(sorted(options))})")
            return options[name]
        return {k: settle(v, options, where) for k, v in value.items()}
    if isinstance(value, list):
        return [settle(v, options, where) for v in value]
    return value


def expand(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """An integration table naming a preset -> the same table with flows, jobs and guards."""
    from daemon.errors import ConfigError
    try:
        preset = load(spec["preset"])
    except PresetError as exc:
        raise ConfigError(f"{where}.preset: {exc}") from None
    options = dict(preset.get("options", {}))
    for key, value in (spec.get("options") or {}).items():
        if key not in options:
            raise ConfigError(f"{where}.options.{key}: not an option of preset "
                              f"{spec['preset']!r} (options: {', '.join(sorted(options))})")
        if type(value) is not type(options[key]):
            raise ConfigError(f"{where}.options.{key}: expected {type(options[key]).__name__}")
        options[key] = value
    flows = []
    for flow in _keep(preset.get("flows", []), options):
        flow = dict(flow)
        flow["fields"] = _keep(flow.get("fields", []), options)
        for override in _keep(flow.pop("overrides", []), options):
            flow.update(override)
        flows.append(flow)
    user_flows = {f["name"]: f for f in spec.get("flows", [])}
    for flow in flows:                  # the user's table may change any key of a preset flow
        user = dict(user_flows.pop(flow["name"], {}))
        extra = user.pop("custom_fields", [])
        flow.update(user)
        flow["fields"] = list(flow.get("fields", [])) + [custom_field(f) for f in extra]
    out = {k: v for k, v in spec.items() if k not in ("flows",)}
    out["options"] = options
    if "confirm_first_run" in preset:
        out.setdefault("confirm_first_run", preset["confirm_first_run"])
    if "schedule" in preset:            # the preset's schedule, each key the user's if given
        out["schedule"] = {**preset["schedule"], **(spec.get("schedule") or {})}
    out["flows"] = flows + list(user_flows.values())
    kept = {f.get("name") for f in out["flows"]}
    out["jobs"] = [j for j in _keep(preset.get("jobs", []), options)
                   if j.get("flow") in kept] + list(spec.get("jobs", []))
    out["guards"] = _keep(preset.get("guards", []), options) + list(spec.get("guards", []))
    for key in ("flows", "jobs", "guards"):
        out[key] = settle(out[key], options, f"{where}.{key}")
    return out


def custom_field(spec: dict[str, Any]) -> dict[str, Any]:
    """A selected custom field as a field rule: named ``custom:<left>``; a ``when`` list is a
    condition on the left (source) record."""
    from daemon.errors import ConfigError
    if not isinstance(spec, dict) or "left" not in spec or "right" not in spec:
        raise ConfigError(f"custom_fields: each entry needs left and right, not {spec!r}")
    out = {"name": f"custom:{spec['left']}", **spec}
    if isinstance(out.get("when"), list):
        out["when"] = {"left": out["when"]}
    return out
