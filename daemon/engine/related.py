"""Changes that come from elsewhere: related records whose changes count as changes of the
record they name (``FlowRules.related``; AJ-3: time entered on a closed project).

Each related entity has its own cursor, kept inside the flow's cursor for that side (the
``related`` key of its JSON), with the same signpost rule as the main read (``cursor.py``).
Reads only; the records named are read again by id and decided like any other, so a related
change that leaves the record's mapped values as they were writes nothing.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from connectors.base import Connector, utc
from daemon.engine.cursor import Cursor, Progress
from daemon.engine.flow import holds
from daemon.engine.rules import FlowRules, Side


async def named_by_related(conn: Connector, rules: FlowRules, side: Side,
                           stored: Mapping[str, Any] | None, signpost: datetime | None,
                           catch_up: bool) -> tuple[list[str], dict[str, Any]]:
    """The ids of ``side`` records whose related records changed since their cursors, and
    the related cursors to keep. ``catch_up``: the main read covers every record this run
    (no cursor yet, or a full read), so the related entities are not read, only their
    cursors set to the signpost."""
    kept: dict[str, Any] = dict((stored or {}).get("related") or {})
    ids: dict[str, None] = {}
    for rel in rules.related:
        if rel.side != side:
            continue
        start = Cursor.load(kept.get(rel.entity))
        progress = Progress(start, signpost)
        if not catch_up and start.at is not None:
            since = start.since(rules.overlap_seconds)
            async for page in conn.changes(rel.entity, since):
                for rec in page:
                    progress.observe(utc(rec.modified) if rec.modified else None, rec.id)
                    if holds(rel.when, rec.fields):
                        parent = rec.fields.get(rel.key)
                        if parent not in (None, ""):
                            ids[str(parent)] = None
        elif signpost is None:
            continue                    # no clock and nothing read: nowhere to start from
        else:
            kept[rel.entity] = Cursor(signpost).dump()
            continue
        done = progress.finish(False)
        if done.at is not None:
            kept[rel.entity] = done.dump()
    return list(ids), kept
