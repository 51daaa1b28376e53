"""Named transforms applied to a value on its way across, and the normalisers of matching.

A transform is written in a flow as a name (``"strip"``) or a one-key table
(``{ truncate = 40 }``, ``{ map = { A = "B" } }``, ``{ one_of = "salespersons" }``).
``one_of`` checks the value against reference data the target connector lists (UL-5); a value
that fails it raises :class:`FieldRefused`, a per-field error: the rest of the record goes.
``if`` looks at the rest of the source record:
``{ if = { when = [{ field = "STOCK_TYPE", value = "N" }], then = "-" } }`` sends ``"-"``
for a record meeting the conditions, and the value itself (or ``else``) for the others
(SG-17). The fields it looks at count as part of the field: a change to them is a change.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from daemon.engine.rules import Condition, Transform, holds


class FieldRefused(Exception):
    """A value that may not go across; the message says why, for the record error."""


class NeedsReference(Exception):
    """A transform consulted a reference list the run has not read yet (``UNREAD``): the
    step reads the lists and decides the record again. Not a refusal: nothing is decided
    from a list that was not read."""


class _Unread:
    def __repr__(self) -> str:
        return "UNREAD"


UNREAD = _Unread()      # in ``Context.options``: a list the run reads when a value needs it


def reference(ctx: "Context", option: str) -> Any:
    """The reference list ``option`` (None: the run has no such list)."""
    value = ctx.options.get(option)
    if value is UNREAD:
        raise NeedsReference(option)
    return value


@dataclass
class Context:
    """What transforms may consult: reference data by name (``UNREAD`` until a value needs
    it: read once per run, by the step), and the records being carried (set by the merge
    before it carries a value)."""
    options: dict[str, Any] = field(default_factory=dict)
    records: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = "left"
    # a plan: partners an earlier flow of the same plan would link or create, by (flow,
    # side) then id; ``pending`` collects those a decision used (it waits for them)
    planned: dict[Any, dict[str, str]] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)

    def source_record(self) -> Mapping[str, Any]:
        return self.records.get(self.source) or {}


Fn = Callable[[Any, Context], Any]


def _strip(v, ctx):
    return v.strip() if isinstance(v, str) else v


def _lower(v, ctx):
    return v.lower() if isinstance(v, str) else v


def _upper(v, ctx):
    return v.upper() if isinstance(v, str) else v


def _empty_to_none(v, ctx):
    return None if v == "" else v


def _truncate(n: int) -> Fn:
    return lambda v, ctx: v[:n] if isinstance(v, str) else v


def _default(d: Any) -> Fn:
    return lambda v, ctx: d if v in (None, "") else v


def _map(table: Mapping[str, Any]) -> Fn:
    def fn(v, ctx):
        key = "" if v is None else str(v)
        return table.get(key, table.get("*", v)) if table else v
    return fn


def _one_of(option: str, message: str | None = None) -> Fn:
    def fn(v, ctx):
        if v in (None, ""):
            return v
        allowed = reference(ctx, option)
        if allowed is None:
            raise FieldRefused(f"reference list {option!r} is not available")
        folded = {str(a).casefold(): a for a in allowed}
        hit = folded.get(str(v).casefold())
        if hit is None:
            raise FieldRefused(message.format(value=v) if message
                               else f"{v!r} is not one of the {option}")
        return hit
    return fn


def _lookup(option: str, default: Any = None, message: str | None = None) -> Fn:
    """A value mapped through reference data the target lists (``{name: value}``), compared
    as names are (case and white space do not matter); a value with no entry, or no value,
    gives ``default`` when one is set (DT-8: the member named like the owner resource, else
    the configured sales rep), and is refused otherwise."""
    def fn(v, ctx):
        table = reference(ctx, option)
        if table is None:
            raise FieldRefused(f"reference list {option!r} is not available")
        folded = {" ".join(str(k).split()).casefold(): x for k, x in dict(table).items()}
        hit = None if v in (None, "") else folded.get(" ".join(str(v).split()).casefold())
        if hit is not None:
            return hit
        if default is not None:
            return default
        if v in (None, ""):
            return v
        raise FieldRefused(message.format(value=v) if message
                           else f"{v!r} is not one of the {option}")
    return fn


def _first_name(v, ctx):
    """A person's first name from a full name (the first word)."""
    return v.split()[0] if isinstance(v, str) and v.split() else v


def _last_name(v, ctx):
    """A person's last name from a full name (the words after the first; the one word of a
    one-word name)."""
    if not isinstance(v, str) or not v.split():
        return v
    words = v.split()
    return " ".join(words[1:]) if len(words) > 1 else words[0]


def _url(v, ctx):
    if v in (None, ""):
        return v
    if not re.fullmatch(r"(https?://)?[\w.-]+\.[a-z]{2,}(/\S*)?", str(v), re.I):
        raise FieldRefused(f"{v!r} is not a web address")
    return v


def _conditions(spec: Mapping[str, Any]) -> list[Condition]:
    if "when" in spec:
        return [Condition(**c) for c in spec["when"]]
    return [Condition(field=spec["field"], op=spec.get("op", "eq"), value=spec.get("value"))]


def _if(spec: Mapping[str, Any]) -> Fn:
    unknown = set(spec) - {"when", "field", "op", "value", "then", "else"}
    if unknown or "then" not in spec:
        raise ValueError("if takes when (or field/op/value), then and else; "
                         f"got {sorted(spec)}")
    when = _conditions(spec)
    then, has_else, otherwise = spec["then"], "else" in spec, spec.get("else")

    def fn(v, ctx):
        if holds(when, ctx.source_record()):
            return then
        return otherwise if has_else else v
    return fn


def _text(v, ctx):
    """A number as text, as a person writes it: 12.0 -> "12", 2.5 -> "2.5"."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v) if isinstance(v, (int, float)) else v


SIMPLE: dict[str, Fn] = {"strip": _strip, "lower": _lower, "upper": _upper,
                         "empty_to_none": _empty_to_none, "url": _url, "text": _text,
                         "first_name": _first_name, "last_name": _last_name}
PARAMETRIC: dict[str, Callable[..., Fn]] = {"truncate": _truncate, "default": _default,
                                            "map": _map, "one_of": _one_of, "if": _if,
                                            "lookup": _lookup}


def compile_chain(specs: list[Transform]) -> Fn | None:
    """The transforms of one field and direction, as one function (None: identity)."""
    if not specs:
        return None
    fns: list[Fn] = []
    for spec in specs:
        if isinstance(spec, str):
            if spec not in SIMPLE:
                raise ValueError(f"unknown transform {spec!r}; known: "
                                 f"{sorted(SIMPLE) + sorted(PARAMETRIC)}")
            fns.append(SIMPLE[spec])
        else:
            if len(spec) != 1:
                raise ValueError(f"a transform table has one key, got {sorted(spec)}")
            (name, arg), = spec.items()
            if name not in PARAMETRIC:
                raise ValueError(f"unknown transform {name!r}")
            fns.append(PARAMETRIC[name](**arg)
                       if isinstance(arg, dict) and name not in ("map", "if")
                       else PARAMETRIC[name](arg))

    def chain(v, ctx):
        for fn in fns:
            v = fn(v, ctx)
        return v
    # a chain that gives a value for no value (a default, a lookup with a default) is carried
    # even when the source has none
    chain.fills_empty = any(  # type: ignore[attr-defined]
        isinstance(s, dict) and ("default" in s or (
            "lookup" in s and isinstance(s["lookup"], dict) and "default" in s["lookup"]))
        for s in specs)
    return chain


def options_needed(specs: list[Transform]) -> set[str]:
    out = set()
    for spec in specs:
        for name in ("one_of", "lookup"):
            if isinstance(spec, dict) and name in spec:
                arg = spec[name]
                out.add(arg["option"] if isinstance(arg, dict) else arg)
    return out


def condition_paths(specs: list[Transform]) -> list[str]:
    """The source fields the ``if`` transforms of a chain look at."""
    out: list[str] = []
    for spec in specs:
        if isinstance(spec, dict) and "if" in spec:
            out += [c.field for c in _conditions(spec["if"])]
    return out


# --- normalisers for natural keys ---------------------------------------------------------
def key_value(key: Any, side: str, values: Mapping[str, Any]) -> str | None:
    """A record's value for a match key (``rules.MatchKey``): its one path normalised, or,
    for a key of several paths, each part normalised and joined; None when a part is
    missing."""
    path = key.left if side == "left" else key.right
    if isinstance(path, str):                   # the usual key, one path: no list built
        return normalize(key.normalize, values.get(path))
    parts = [normalize(key.normalize, values.get(p)) for p in path]
    if any(p is None for p in parts):
        return None
    return parts[0] if len(parts) == 1 else "\x1f".join(parts)  # type: ignore[arg-type]


def find_path(key: Any, side: str) -> str:
    """The path a system is searched by for a key (``find``): its last part, the most
    selective of a composite key (a ticket's summary rather than its project)."""
    return key.paths(side)[-1]


def normalize(kind: str, value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    if kind == "exact":
        out = text
    elif kind == "email":
        out = text.strip().casefold()
    elif kind == "vat":
        out = re.sub(r"[\s.\-]", "", text).upper()
        out = re.sub(r"^[A-Z]{2}(?=\d)", "", out)
    elif kind == "phone":
        out = re.sub(r"[^\d+]", "", text)
    else:  # text, name: case and white space do not matter
        out = " ".join(text.split()).casefold()
    return out or None
