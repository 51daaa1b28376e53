"""The three-way merge: a pure function of (base, left, right, rules) -> writes. No I/O.

CHANGE-MATRIX.md is the specification. Per field, a side *changed* when its current value
differs from its base (the value as that system stored it at the last sync). ``None`` and
``""`` are the same value: systems disagree on how they store an empty field.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping

from daemon.engine.rules import FieldRule, FlowRules, Ownership, Policy, Side, other
from daemon.engine.transforms import Context, FieldRefused, compile_chain, condition_paths

EMPTY = (None, "")


def same(a: Any, b: Any) -> bool:
    return a == b or (a in EMPTY and b in EMPTY)


@dataclass(frozen=True)
class Field:
    """A field rule compiled for the merge."""
    name: str
    left: str
    right: str
    flows_lr: bool
    flows_rl: bool
    ownership: Ownership
    on_create_only: bool
    ref: str | None
    lr: Callable[[Any, Context], Any] | None
    rl: Callable[[Any, Context], Any] | None
    deps_left: tuple[str, ...] = ()      # left fields the value toward the right depends on
    deps_right: tuple[str, ...] = ()

    def path(self, side: Side) -> str:
        return self.left if side == "left" else self.right

    def deps(self, side: Side) -> tuple[str, ...]:
        return self.deps_left if side == "left" else self.deps_right

    def flows_from(self, side: Side) -> bool:
        return self.flows_lr if side == "left" else self.flows_rl

    def owner(self) -> Side | None:
        if self.flows_lr and not self.flows_rl:
            return "left"
        if self.flows_rl and not self.flows_lr:
            return "right"
        return None


def compile_fields(flow: FlowRules, owner: Side | None | str = "rules") -> list[Field]:
    """The flow's fields; ``owner`` overrides the flow's record owner (None: shared)."""
    owner = flow.owner if owner == "rules" else owner
    out = []
    for f in flow.fields:
        lr, rl = flow.flows(f, "left"), flow.flows(f, "right")
        if owner == "left":
            rl = False
        elif owner == "right":
            lr = False
        out.append(Field(f.name, f.left, f.right, lr, rl, f.ownership or flow.ownership,
                         f.on_create_only, f.ref, _chain(f, "to_right"), _chain(f, "to_left"),
                         tuple(condition_paths(f.to_right)), tuple(condition_paths(f.to_left))))
    return out


def _chain(f: FieldRule, attr: str):
    chain = compile_chain(getattr(f, attr))
    if f.ref is None:
        return chain
    source = "left" if attr == "to_right" else "right"
    key = (f.ref, source)

    def translate(v, ctx: Context):
        if v in EMPTY:
            return v
        target = ctx.options.get(key, {}).get(v)
        if target is None and v in ctx.planned.get(key, {}):
            target = ctx.planned[key][v]
            ctx.pending.add(f"{f.ref} {source} {v}")
        if target is None:
            raise FieldRefused(f"{f.name} {v!r} has no linked partner in flow {f.ref!r} yet")
        return target if chain is None else chain(target, ctx)
    return translate


def carry(fld: Field, source: Side, value: Any, ctx: Context) -> Any:
    """The value ``source`` holds, as it goes to the other side (``ctx.records`` holds the
    records being carried, for the transforms that look at the rest of the record)."""
    fn = fld.lr if source == "left" else fld.rl
    if fn is None:
        return value
    ctx.source = source
    return fn(value, ctx)


@dataclass
class Conflict:
    field: str
    left: Any
    right: Any
    winner: Side
    policy: str


@dataclass
class Violation:
    field: str
    side: Side          # the side whose edit broke the ownership
    value: Any
    action: Ownership


@dataclass
class Refusal:
    field: str
    target: Side
    message: str


@dataclass
class Decision:
    to_left: dict[str, Any] = field(default_factory=dict)
    to_right: dict[str, Any] = field(default_factory=dict)
    why: dict[tuple[Side, str], str] = field(default_factory=dict)   # (target, path) -> rule
    conflicts: list[Conflict] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    def writes(self, target: Side) -> dict[str, Any]:
        return self.to_left if target == "left" else self.to_right

    @property
    def empty(self) -> bool:
        return not self.to_left and not self.to_right


def arbitrary_winner(link_key: str, name: str, lv: Any, rv: Any) -> Side:
    """Deterministic across runs and processes: a hash of the link, the field and both values."""
    digest = hashlib.sha256(repr((link_key, name, lv, rv)).encode()).digest()
    return "left" if digest[0] % 2 == 0 else "right"


def pick_winner(policy: Policy | str, link_key: str, name: str, lv: Any, rv: Any,
                lmod: datetime | None, rmod: datetime | None) -> tuple[Side, str]:
    if policy == "left_wins":
        return "left", policy
    if policy == "right_wins":
        return "right", policy
    if policy == "newest_wins" and lmod is not None and rmod is not None and lmod != rmod:
        return ("left" if lmod > rmod else "right"), policy
    return arbitrary_winner(link_key, name, lv, rv), (
        "arbitrary" if policy == "arbitrary" else f"{policy} (tie: arbitrary)")


def news_to_both(fields: list[Field], side: Side, values: Mapping[str, Any],
                 base: Mapping[str, Any], other_base: Mapping[str, Any]) -> bool:
    """Whether ``side`` now sends a field that neither side's base knows (an answer left it
    out when the pair was last decided): news, not an edit, decided only with the other
    side's value in hand (see ``merge``)."""
    o = other(side)
    return any(f.path(side) in values and f.path(side) not in base
               and f.path(o) not in other_base for f in fields)


def merge(fields: list[Field], policy: Policy | str,
          base_l: Mapping[str, Any] | None, base_r: Mapping[str, Any] | None,
          left: Mapping[str, Any], right: Mapping[str, Any], *, ctx: Context,
          link_key: str, lmod: datetime | None = None, rmod: datetime | None = None,
          initial: Side | None = None, enforce: Mapping[str, Side] | None = None,
          unread: frozenset[Side] = frozenset()) -> Decision:
    """Decide the writes for one linked pair.

    ``base_l``/``base_r`` None means a first link (no base): every differing field is decided
    by ``initial`` (the record owner or the flow's initial side) or, failing that, ``policy``.
    ``enforce`` maps field names to a side whose value is written wherever the two differ,
    changed or not (the nightly account-manager fix, UL-11). ``unread``: the sides not read
    again this run (their values are their bases).
    """
    d = Decision()
    ctx.records = {"left": left, "right": right}
    first = base_l is None or base_r is None
    for fld in fields:
        if fld.on_create_only:
            continue
        # a field a side did not send is unknown there: it is not a change of that side
        # (it neither flows nor decides), though a value may flow to it
        la, ra = fld.left not in left, fld.right not in right
        if la and ra:
            continue
        lv, rv = left.get(fld.left), right.get(fld.right)
        if enforce and fld.name in enforce:
            if not (la if enforce[fld.name] == "left" else ra):
                _enforce(d, fld, enforce[fld.name], lv, rv, ctx)
            continue
        # known now, never known before (the base lacks it: an answer left it out): news,
        # not an edit. Both values known: decided as on a first link, an empty value never
        # winning over a value. The other side not
        # read this run (the step reads such a side first, see ``news_to_both``): nothing is
        # decided. A side read that does not carry the field takes the value, as before.
        lnew = not first and not la and fld.left not in base_l
        rnew = not first and not ra and fld.right not in base_r
        if (lnew or rnew) and not ((la and "left" not in unread)
                                   or (ra and "right" not in unread)):
            if la or ra:
                continue
            owner = fld.owner()
            if owner is None and not (fld.flows_lr or fld.flows_rl):
                continue
            # one of the two empty (perhaps the value a record was created with): the value
            # is kept, never blanked by news
            keep = None if same(lv, None) == same(rv, None) else (
                "right" if same(lv, None) else "left")
            _both_changed(d, fld, owner, policy, lv, rv, ctx, link_key, lmod, rmod, keep, True)
            continue
        if first:
            lc, rc = not la, not ra
        else:
            lc = not la and (not same(lv, base_l.get(fld.left)) or any(
                not same(left.get(p), base_l.get(p)) for p in fld.deps_left))
            rc = not ra and (not same(rv, base_r.get(fld.right)) or any(
                not same(right.get(p), base_r.get(p)) for p in fld.deps_right))
        if not lc and not rc:
            continue
        owner = fld.owner()
        if owner is None and not (fld.flows_lr or fld.flows_rl):
            continue
        if lc and rc:
            _both_changed(d, fld, owner, policy, lv, rv, ctx, link_key, lmod, rmod,
                          initial if first else None, first)
        else:
            _one_changed(d, fld, owner, "left" if lc else "right", lv, rv, ctx)
    return d


def _write(d: Decision, fld: Field, source: Side, value: Any, current_target: Any,
           ctx: Context, why: str) -> None:
    target = other(source)
    try:
        out = carry(fld, source, value, ctx)
    except FieldRefused as exc:
        d.refusals.append(Refusal(fld.name, target, str(exc)))
        return
    if not same(out, current_target):
        d.writes(target)[fld.path(target)] = out
        d.why[(target, fld.path(target))] = why


def _one_changed(d: Decision, fld: Field, owner: Side | None, changed: Side,
                 lv: Any, rv: Any, ctx: Context) -> None:
    values = {"left": lv, "right": rv}
    if fld.flows_from(changed):
        _write(d, fld, changed, values[changed], values[other(changed)], ctx,
               f"{changed} changed")
        return
    # the changed side does not own this field: an ownership violation
    d.violations.append(Violation(fld.name, changed, values[changed], fld.ownership))
    if fld.ownership == "revert" and owner is not None:
        _write(d, fld, owner, values[owner], values[changed], ctx,
               f"revert: {fld.name} belongs to {owner}")


def _both_changed(d: Decision, fld: Field, owner: Side | None, policy: str, lv, rv,
                  ctx: Context, link_key: str, lmod, rmod, initial: Side | None,
                  first: bool) -> None:
    if owner is not None:
        if not first and not _agrees(fld, owner, lv, rv, ctx):
            d.violations.append(Violation(fld.name, other(owner),
                                          rv if owner == "left" else lv, fld.ownership))
        _write(d, fld, owner, lv if owner == "left" else rv, rv if owner == "left" else lv,
               ctx, f"{owner} owns {fld.name}" + (" (first link)" if first else ""))
        return
    if _agrees(fld, "left", lv, rv, ctx) or _agrees(fld, "right", lv, rv, ctx):
        return
    if initial is not None:
        winner, rule = initial, f"first link: {initial} wins"
    else:
        winner, rule = pick_winner(policy, link_key, fld.name, lv, rv, lmod, rmod)
        if first:
            rule = f"first link: {rule}"
    d.conflicts.append(Conflict(fld.name, lv, rv, winner, rule))
    _write(d, fld, winner, lv if winner == "left" else rv, rv if winner == "left" else lv,
           ctx, f"conflict: {rule}")


def _agrees(fld: Field, source: Side, lv, rv, ctx: Context) -> bool:
    try:
        out = carry(fld, source, lv if source == "left" else rv, ctx)
    except FieldRefused:
        return False
    return same(out, rv if source == "left" else lv)


def _enforce(d: Decision, fld: Field, side: Side, lv, rv, ctx: Context) -> None:
    values = {"left": lv, "right": rv}
    _write(d, fld, side, values[side], values[other(side)], ctx, f"enforce: {side}'s {fld.name}")


def create_fields(fields: list[Field], source: Side, values: Mapping[str, Any],
                  ctx: Context) -> tuple[dict[str, Any], list[Refusal]]:
    """The fields of a new record made in the other system from ``values``."""
    target = other(source)
    out: dict[str, Any] = {}
    refused: list[Refusal] = []
    ctx.records = {source: values}
    for fld in fields:
        if not fld.flows_from(source):
            continue
        value = values.get(fld.path(source))
        fn = fld.lr if source == "left" else fld.rl
        if value in EMPTY and not fld.deps(source) and not getattr(fn, "fills_empty", False):
            continue
        try:
            carried = carry(fld, source, value, ctx)
        except FieldRefused as exc:
            refused.append(Refusal(fld.name, target, str(exc)))
            continue
        if value not in EMPTY or carried not in EMPTY:    # an if transform may give a value
            out[fld.path(target)] = carried
    return out, refused
