"""A flow compiled for running: its rules, merged fields, and what each side needs read."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

import orjson

from daemon.engine.merge import Field, compile_fields
from daemon.engine.rules import Condition, FlowRules, Side
from daemon.engine.transforms import options_needed


@dataclass
class Flow:
    rules: FlowRules
    fields: list[Field]
    read_paths: dict[Side, list[str]]     # what staging keeps of each record
    options: dict[Side, set[str]]         # reference lists each side's connector supplies

    @property
    def name(self) -> str:
        return self.rules.name


def compile_flow(rules: FlowRules) -> Flow:
    fields = compile_fields(rules)
    read: dict[Side, list[str]] = {}
    for side in ("left", "right"):
        paths = [f.path(side) for f in fields]
        paths += [c.field for c in rules.filter.get(side, [])]
        paths += list(rules.soft_delete.get(side, {}))
        paths += [getattr(k, side) for k in rules.match]
        paths += [c.field for k in rules.match for c in k.when] if side == "left" else []
        paths += [c.field for c in rules.create.toward("right" if side == "left"
                                                        else "left").when]
        if side in rules.external_id:
            paths.append(rules.external_id[side])
        read[side] = list(dict.fromkeys(paths))
    options: dict[Side, set[str]] = {"left": set(), "right": set()}
    for f in rules.fields:
        # a transform toward the right checks against the right system's lists, and so on
        options["right"] |= options_needed(f.to_right)
        options["left"] |= options_needed(f.to_left)
    return Flow(rules, fields, read, options)


def holds(conditions: list[Condition], values: Mapping[str, Any]) -> bool:
    for c in conditions:
        v = values.get(c.field)
        if c.op == "eq" and v != c.value:
            return False
        if c.op == "ne" and v == c.value:
            return False
        if c.op == "in" and v not in (c.value or []):
            return False
        if c.op == "not_in" and v in (c.value or []):
            return False
        if c.op == "truthy" and not v:
            return False
        if c.op == "falsy" and v:
            return False
        if c.op == "longer_than" and not (isinstance(v, str) and len(v) > int(c.value)):
            return False
        if c.op == "not_longer_than" and isinstance(v, str) and len(v) > int(c.value):
            return False
    return True


def is_soft_deleted(rules: FlowRules, side: Side, values: Mapping[str, Any]) -> bool:
    flags = rules.soft_delete.get(side)
    return bool(flags) and all(values.get(k) == v for k, v in flags.items())


def value_hash(paths: list[str], values: Mapping[str, Any]) -> str:
    """A stable digest of the mapped values: a re-read record with the same values is no change."""
    import hashlib
    raw = orjson.dumps([values.get(p) for p in paths], default=str)
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def mapped(paths: list[str], values: Mapping[str, Any]) -> dict[str, Any]:
    return {p: values.get(p) for p in paths}


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()
