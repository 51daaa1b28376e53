"""A flow compiled for running: its rules, merged fields, and what each side needs read."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property
from typing import Any, Mapping

import orjson

from daemon.engine.merge import Field, compile_fields
from daemon.engine.rules import (FlowRules, Side, condition_fields,  # noqa: F401
                                 holds)
from daemon.engine.transforms import UNREAD, NeedsReference, options_needed


@dataclass
class Flow:
    rules: FlowRules
    fields: list[Field]                   # as the rules say (the owner owns every record)
    read_paths: dict[Side, list[str]]     # what staging keeps of each record
    options: dict[Side, set[str]]         # reference lists each side's connector supplies
    base_paths: dict[Side, list[str]]     # what a link's base keeps: fields and what they need
    shared: list[Field] | None = None     # with owner_when: records the owner does not own
    revert_lists: bool = False            # a create's write-back may consult reference lists

    @property
    def name(self) -> str:
        return self.rules.name

    def owns(self, side: Side, values: Mapping[str, Any] | None) -> bool:
        """Whether ``side`` owns the record whose ``side`` values are given (SG-2, SG-8)."""
        if self.rules.owner != side:
            return False
        return not self.rules.owner_when or (
            values is not None and holds(self.rules.owner_when, values))

    def fields_of(self, left: Mapping[str, Any] | None,
                  right: Mapping[str, Any] | None) -> list[Field]:
        """The fields of a pair (or a record about to be created: the absent side None),
        each narrowed to the sides its values may flow from for these records."""
        fields = self.fields_for(left if self.rules.owner == "left" else right)
        return self.narrow(fields, {"left": left, "right": right})

    def flows_from(self, side: Side, values: Mapping[str, Any] | None) -> bool:
        """Whether a record of ``side`` with these values may flow to the other side at all
        (``flows_when``); None (no record there) flows nowhere anyway, and is not narrowed."""
        conds = self.rules.flows_when.get(side)
        return not conds or values is None or holds(conds, values)

    def narrow(self, fields: list[Field], values: Mapping[Side, Mapping[str, Any] | None]
               ) -> list[Field]:
        whens = self._whens
        if whens is None:
            return fields
        blocked = {s for s in ("left", "right") if not self.flows_from(s, values[s])}
        out = []
        for fld in fields:
            lr, rl = fld.flows_lr, fld.flows_rl
            off = set(blocked)
            for side, conds in whens.get(fld.name, {}).items():
                if values[side] is not None and not holds(conds, values[side]):
                    off.add(side)
            lr, rl = lr and "left" not in off, rl and "right" not in off
            out.append(fld if (lr, rl) == (fld.flows_lr, fld.flows_rl)
                       else replace(fld, flows_lr=lr, flows_rl=rl))
        return out

    @cached_property
    def _whens(self) -> dict[str, Any] | None:
        """Each field's ``when`` conditions by name; None when neither the fields nor the
        flow have any (then nothing is narrowed), computed once per flow."""
        rules = self.rules
        if not rules.flows_when and not any(f.when for f in rules.fields):
            return None
        return {f.name: f.when for f in rules.fields}

    def fields_for(self, owner_values: Mapping[str, Any] | None) -> list[Field]:
        """The fields of one record: owned or shared, by its owner-side values (None: the
        owner side has no record yet, so nothing is owned)."""
        if self.shared is None:
            return self.fields
        owner = self.rules.owner
        return self.fields if owner is not None and self.owns(owner, owner_values) \
            else self.shared


def compile_flow(rules: FlowRules) -> Flow:
    fields = compile_fields(rules)
    shared = compile_fields(rules, owner=None) if rules.owner_when else None
    base: dict[Side, list[str]] = {}
    for side in ("left", "right"):
        # the field paths as they always were (a link's hash is made of them), then what the
        # if transforms and owner_when look at
        paths = [f.path(side) for f in fields]
        extra = [p for f in fields for p in f.deps(side)]
        if side == rules.owner:
            extra += [c.field for c in rules.owner_when]
        # what decides whether a record's values may flow: kept with the base, so a pair
        # whose side was not read again is decided on the same values
        extra += condition_fields(rules.flows_when.get(side, []))
        extra += [p for f in rules.fields for p in condition_fields(f.when.get(side, []))]
        base[side] = paths + [p for p in dict.fromkeys(extra) if p not in paths]
    read: dict[Side, list[str]] = {}
    for side in ("left", "right"):
        paths = list(base[side])
        paths += condition_fields(rules.filter.get(side, []))
        paths += [p for r in rules.require if r.side == side
                  for p in condition_fields(r.when)]
        paths += list(rules.soft_delete.get(side, {}))
        paths += [p for k in rules.match for p in k.paths(side)]
        paths += [p for k in rules.match for p in condition_fields(k.when)] \
            if side == "left" else []
        paths += condition_fields(rules.create.toward("right" if side == "left"
                                                      else "left").when)
        if side in rules.external_id:
            paths.append(rules.external_id[side])
        paths += list(rules.link_marks.get(side, {}))
        read[side] = list(dict.fromkeys(paths))
    options: dict[Side, set[str]] = {"left": set(), "right": set()}
    for f in rules.fields:
        # a transform toward the right checks against the right system's lists, and so on
        options["right"] |= options_needed(f.to_right)
        options["left"] |= options_needed(f.to_left)
    for side, defaults in rules.create_defaults.items():
        options[side] |= {v["option"] for v in defaults.values() if _option_ref(v)}
    # a create's write-back (``plan.owned_by``) carries one-way fields back through their
    # transforms: where one consults a list, the lists are read before a chunk's creates
    revert_lists = any((f.ownership or rules.ownership) == "revert"
                       and (options_needed(f.to_left) or options_needed(f.to_right))
                       for f in rules.fields)
    return Flow(rules, fields, read, options, base, shared, revert_lists)


def _option_ref(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"option"}


def create_default(value: Any, options: Mapping[Any, Any]) -> Any:
    """A create default as written, or the reference data it names (``{ option = ... }``;
    ``NeedsReference`` while the run has not read it)."""
    if not _option_ref(value):
        return value
    got = options.get(value["option"])
    if got is UNREAD:
        raise NeedsReference(value["option"])
    return got


def is_soft_deleted(rules: FlowRules, side: Side, values: Mapping[str, Any]) -> bool:
    flags = rules.soft_delete.get(side)
    if not flags:
        return False
    for k, v in flags.items():
        if values.get(k) != v:
            return False
    return True


def value_hash(paths: list[str], values: Mapping[str, Any]) -> str:
    """A stable digest of the mapped values: a re-read record with the same values is no change."""
    raw = orjson.dumps([values.get(p) for p in paths], default=str)
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def mapped(paths: list[str], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``paths`` the record carries: a path it does not carry stays absent
    (unknown), it is not made empty."""
    return {p: values[p] for p in paths if p in values}


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()
