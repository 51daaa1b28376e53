"""The preview of a plan per direction (BB-3): what goes left -> right and right -> left
(created, updated), and the pairs linked, with the linked data. A pure function of a stored
plan's rows (``describe`` rows with their flow), shared by ``accord plan --stored`` and the
status page."""
from __future__ import annotations

from typing import Any, Mapping


def by_direction(rows: list[dict[str, Any]], titles: Mapping[str, Mapping[str, str]]
                 ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{"to_right": {"create": [...], "update": [...]}, "to_left": {...}, "link": [...],
    "other": [...]}``; ``titles``: flow -> side -> the field naming a record."""
    out: dict[str, Any] = {"to_right": {"create": [], "update": []},
                           "to_left": {"create": [], "update": []}, "link": [], "other": []}
    for row in rows:
        action = row.get("action")
        title = titles.get(row.get("flow", ""), {})
        if action == "create":
            out[f"to_{row['side']}"]["create"].append(
                {"flow": row.get("flow"), "from": row.get("from"), "fields": row.get("fields"),
                 "name": _name(row.get("fields") or {}, title.get(row["side"]))})
        elif action == "update":
            for w in row.get("writes") or [row]:
                out[f"to_{w['side']}"]["update"].append(
                    {"flow": row.get("flow"), "id": w.get("id"), "fields": w.get("fields")})
        elif action == "link":
            data = row.get("data") or {}
            out["link"].append({
                "flow": row.get("flow"), "left": row.get("left"), "right": row.get("right"),
                "left_name": _name(data.get("left") or {}, title.get("left")),
                "right_name": _name(data.get("right") or {}, title.get("right")),
                "data": data})
            for w in row.get("writes") or []:
                out[f"to_{w['side']}"]["update"].append(
                    {"flow": row.get("flow"), "id": w.get("id"), "fields": w.get("fields"),
                     "linked": True})
        else:
            out["other"].append(row)
    return out


def _name(values: Mapping[str, Any], path: str | None) -> str:
    return "" if path is None else str(values.get(path) or "")


def lines(preview: dict[str, Any], left: str, right: str) -> list[str]:
    """The preview as text, one section per direction."""
    out: list[str] = []
    for key, head in (("to_right", f"{left} -> {right}"), ("to_left", f"{right} -> {left}")):
        part = preview[key]
        out.append(f"{head}: {len(part['create'])} to create, {len(part['update'])} to update")
        for r in part["create"]:
            out.append(f"  create  {r['name'] or '(no name)'}  from {r['from']}  "
                       + ", ".join(f"{k}={v}" for k, v in (r["fields"] or {}).items()))
        for r in part["update"]:
            out.append(f"  update  {r['id']}  " + ", ".join(
                f"{k}={v}" for k, v in (r["fields"] or {}).items()))
    out.append(f"linked: {len(preview['link'])}")
    for r in preview["link"]:
        out.append(f"  {left} {r['left']} {r['left_name']}  <->  {right} {r['right']} "
                   f"{r['right_name']}")
    for r in preview["other"]:
        out.append(f"  {r.get('action')}  {r.get('side', '')} {r.get('id', '')}  "
                   f"{r.get('why', '')}")
    return out
