"""The correspondence table as people read it (BB-6, BB-7): each linked pair by its ids, names
and match keys, and whether "no sync" or "not this time" is set on it.

Shared by ``accord links`` and the status page's links page, so both say the same thing about a
pair; the pairs and the exclusions come from daemon/store/correspondence.py. The page reads the
table a keyset page at a time (a flow can hold 20,000 pairs).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.engine.rules import FlowRules
from daemon.store import correspondence as corr

PAGE = 100          # pairs on one page of the links page

# what each mode is called where people see it (the CLI's words, the page's buttons)
MODE_WORDS = {"never": "no sync", "skip_once": "not this time", None: "lifted"}


def pair_row(pair: dict[str, Any], flow: FlowRules) -> dict[str, Any]:
    """One pair of ``correspondence.pairs`` as shown: ids, names (the flow's ``title``
    fields), the match keys' values on each side, and its exclusion."""
    modes = (pair["left_excluded"], pair["right_excluded"])
    return {"link": pair["id"], "left": pair["left_id"], "right": pair["right_id"],
            "left_name": pair["left"].get(flow.title.get("left", ""), ""),
            "right_name": pair["right"].get(flow.title.get("right", ""), ""),
            "keys": [[pair["left"].get(k.left), pair["right"].get(k.right)]
                     for k in flow.match],
            "no_sync": "never" in modes, "not_this_time": "skip_once" in modes}


async def page(conn: AsyncConnection, integration: str, flow: FlowRules, *,
               after: int = 0, before: int | None = None, limit: int = PAGE) -> dict[str, Any]:
    """One keyset page of a flow's pairs: after a link id (forward) or before one (back).

    ``first``: the position of the page's first pair (1-based) among ``total``; ``after`` /
    ``before``: the link ids to ask for the next and previous pages (None: there is none).
    The excluded records that have no link yet (set from the preview) come with the first
    page only."""
    rows = await corr.pairs(conn, integration, flow.name, after=after, before=before,
                            limit=limit)
    total = await corr.count(conn, integration, flow.name)
    first = (await corr.count(conn, integration, flow.name, below=rows[0]["id"]) + 1
             if rows else (total + 1 if after else 1))
    nxt = rows and (await corr.pairs(conn, integration, flow.name, after=rows[-1]["id"],
                                     limit=1))
    prev = first > 1
    return {"integration": integration, "flow": flow.name, "total": total, "first": first,
            "pairs": [pair_row(p, flow) for p in rows],
            "keys": [[k.left, k.right] for k in flow.match],
            "after": rows[-1]["id"] if nxt else None,
            "before": rows[0]["id"] if prev and rows else None,
            "excluded_unlinked": (await corr.unlinked_exclusions(conn, integration, flow.name)
                                  if first == 1 else [])}
