"""Field discovery (BB-8): the custom fields of a flow's left system that have a counterpart
in the right one, matched by label (case, spaces and punctuation aside), then by name without
its system prefix (``PF_SECTOR`` / ``comp_sector``)."""
from __future__ import annotations

import re
from typing import Any

from connectors.base import FieldInfo, system_fields
from daemon.engine.rules import FlowRules


def _key(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.casefold())


def _bare(name: str) -> str:
    return _key(name.split("_", 1)[1] if "_" in name else name)


def pair_fields(left: list[FieldInfo], right: list[FieldInfo]) -> list[tuple[FieldInfo,
                                                                             FieldInfo]]:
    """Each custom left field with its right counterpart (custom fields first)."""
    ordered = sorted(right, key=lambda f: not f.custom)
    out = []
    for lf in (f for f in left if f.custom):
        match = next((r for r in ordered if _key(r.label) == _key(lf.label)), None) or \
            next((r for r in ordered if _bare(r.name) == _bare(lf.name)), None)
        if match is not None:
            out.append((lf, match))
    return out


async def counterparts(left_conn: Any, right_conn: Any, flow: FlowRules) -> list[dict]:
    left = await system_fields(left_conn, flow.left_entity) or []
    right = await system_fields(right_conn, flow.right_entity) or []
    selected = {(f.left, f.right) for f in flow.fields}
    return [{"left": lf.name, "label": lf.label, "right": rf.name, "right_label": rf.label,
             "type": lf.type, "selected": (lf.name, rf.name) in selected}
            for lf, rf in pair_fields(left, right)]
