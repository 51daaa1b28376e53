"""Words for people: a flow in a sentence, a step's counts with labels, a record by its name.

The engine speaks of ``left`` and ``right``; people know their systems by name. Everything
here takes the systems' names (``{"left": "unleashed", "right": "prospect"}``) and the flow's
rules, and returns text. Pure: no database, no I/O.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from daemon.engine.rules import FlowRules

Names = Mapping[str, str]           # side -> system name

# The step counts the engine keeps, in the order a person reads them. {left}/{right}: system
# names. A key not listed (a newer engine's) is shown as its words.
COUNT_LABELS: dict[str, str] = {
    "read_left": "read from {left}", "read_right": "read from {right}",
    "created_left": "created in {left}", "created_right": "created in {right}",
    "updated_left": "updated in {left}", "updated_right": "updated in {right}",
    "deleted": "deleted", "marked": "marked deleted", "unlinked": "unlinked",
    "recreated": "recreated", "dropped": "gone from both",
    "delete_ignored": "deletes not passed on", "matched": "matched by key",
    "recovered": "interrupted creates found", "unchanged": "unchanged",
    "excluded": "excluded", "filtered": "left out by the filter",
    "not_created": "not created (rules)", "create_held": "creates held back",
    "review": "ambiguous matches", "conflicts": "conflicts decided",
    "ownership": "edits of owned fields", "held": "deletes held", "errors": "record errors",
}
# counts that need a person's eye
ATTENTION = {"errors", "review", "held", "create_held", "ownership"}

_DIRECTION = {"both": "both ways", "left_to_right": "{left} → {right} only",
              "right_to_left": "{right} → {left} only"}
_ARROW = {"both": "⇄", "left_to_right": "→", "right_to_left": "←"}
_CONFLICT = {"left_wins": "{left} wins", "right_wins": "{right} wins",
             "newest_wins": "the newest change wins",
             "arbitrary": "one side wins, the same way every time"}


def count_label(key: str, names: Names) -> str:
    label = COUNT_LABELS.get(key)
    if label is None:
        label = key.replace("_left", " {left}").replace("_right", " {right}").replace("_", " ")
    return label.format(left=names["left"], right=names["right"])


def labelled_counts(counts: Mapping[str, Any], names: Names) -> list[tuple[str, str, Any]]:
    """``[(key, label, value)]`` of the non-zero counts, in COUNT_LABELS order."""
    order = {k: i for i, k in enumerate(COUNT_LABELS)}
    items = [(k, v) for k, v in counts.items() if v]
    items.sort(key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    return [(k, count_label(k, names), v) for k, v in items]


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe_flow(rules: FlowRules, names: Names) -> str:
    """One sentence: what goes where, matched how, what creates, deletes and conflicts do."""
    fmt = dict(left=names["left"], right=names["right"])
    arrow = _ARROW[rules.direction]
    parts = [f"{names['left']} {rules.left_entity} {arrow} {names['right']} "
             f"{rules.right_entity}, {_DIRECTION[rules.direction].format(**fmt)}"]
    fields = [f.name for f in rules.fields]
    shown = (_list(fields) if len(fields) <= 6
             else ", ".join(fields[:6]) + f" and {len(fields) - 6} more")
    parts.append(f"{len(fields)} field{'s' if len(fields) != 1 else ''} ({shown})")
    if rules.match:
        parts.append("matched on " + _list([f"{m.left} = {m.right}" for m in rules.match]))
    creates = []
    for target in ("right", "left"):
        mode = rules.create.toward(target).mode
        source = names["left" if target == "right" else "right"]
        if mode == "always":
            creates.append(f"new {source} records are created in {names[target]}")
        elif mode == "filter":
            creates.append(f"some new {source} records are created in {names[target]}")
        elif mode == "push":
            creates.append(f"{source} records are created in {names[target]} on a push")
    parts.append(_list(creates) if creates else "nothing is created")
    deletes = []
    for target in ("right", "left"):
        action = rules.delete.toward(target).action
        source = names["left" if target == "right" else "right"]
        if action != "ignore":
            verb = {"delete": "deletes", "mark": "marks deleted", "unlink": "unlinks"}[action]
            deletes.append(f"a {source} delete {verb} the {names[target]} record")
    parts.append(_list(deletes) if deletes else "deletes are not passed on")
    if rules.owner is not None:
        parts.append(f"{names[rules.owner]} owns the records"
                     + (" it marks as its own" if rules.owner_when else ""))
    if rules.direction == "both":
        parts.append("conflicts: " + _CONFLICT[rules.conflict].format(**fmt))
    return "; ".join(parts) + "."


# --- records by name ---------------------------------------------------------------------------
def _segment(path: str) -> str:
    return re.sub(r"[^a-z]", "", path.rsplit(".", 1)[-1].lower())


_FIRST = {"firstname", "forename", "givenname"}
_LAST = {"lastname", "surname", "familyname"}
_NOT_A_NAME = {"username", "filename", "firstname", "lastname", "forename", "surname",
               "givenname", "familyname"}
_FALLBACK = ("title", "description", "subject", "number", "code")


def name_paths(rules: FlowRules, side: str) -> list[str]:
    """The field paths that make a record's name on ``side``: a top-level "...name" field,
    else first + last name, else a title, description, number or code."""
    paths = list(dict.fromkeys(rules.paths(side)))     # type: ignore[arg-type]
    top = [p for p in paths if "." not in p]
    for p in top:
        seg = _segment(p)
        if seg.endswith("name") and seg not in _NOT_A_NAME:
            return [p]
    first = [p for p in top if _segment(p) in _FIRST]
    last = [p for p in top if _segment(p) in _LAST]
    if first or last:
        return first[:1] + last[:1]
    for word in _FALLBACK:
        for p in top:
            if _segment(p).endswith(word):
                return [p]
    return []


def key_path(rules: FlowRules, side: str) -> str | None:
    """The flow's first match key on ``side`` (or its external id field)."""
    if rules.match:
        return getattr(rules.match[0], side)
    return rules.external_id.get(side)   # type: ignore[call-overload]


def record_label(rules: FlowRules, side: str, base: Mapping[str, Any] | None) -> dict:
    """``{"name": ..., "key": "path = value"}`` from what a link keeps of the record (either
    may be None: a record with no link yet, or no such field)."""
    if not base:
        return {"name": None, "key": None}
    paths = name_paths(rules, side)
    name = " ".join(str(base[p]) for p in paths if base.get(p) not in (None, "")) or None
    kp = key_path(rules, side)
    key = None
    if kp and base.get(kp) not in (None, "") and kp not in paths:
        key = f"{kp} {base[kp]}"
    return {"name": name, "key": key}
