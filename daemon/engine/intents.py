"""Creates whose outcome is unknown (a crash, a timeout, an answer lost after the request went
out): before anything is created again, look for what they may have made, by external id,
then by natural key. Reads only; the answer is a ``Recover`` action.

An intent with neither an external id nor a natural key cannot be checked: it is never
guessed away (that could create the record twice), it goes to review for a person.

A record found whose create would have been followed by a write-back to its source (a field
the target owns, ``owned_by``) asks the source first: deleted since, it gets no write-back
(the run reads its deletion next), so a plan says what the run then does.
"""
from __future__ import annotations

from typing import Any

from connectors.base import Record
from daemon.engine.actions import Recover
from daemon.engine.context import StepContext
from daemon.engine.merge import same
from daemon.engine.plan import owned_by
from daemon.engine.transforms import Context
from daemon.engine.rules import other
from daemon.engine.transforms import normalize  # noqa: E402
from daemon.store import queries as q


async def lookup(ctx: StepContext, intent: dict[str, Any]) -> Recover:
    target = intent["target"]
    source = other(target)
    conn = ctx.sides[target]
    entity = ctx.flow.rules.entity(target)
    keys = intent["keys"]
    sid = intent["source_id"]
    checkable = bool(keys.get("ext")) or bool(keys.get("match"))
    if not checkable:
        return Recover(source, sid, target, None, (),
                       "a create whose answer was lost has no external id or natural key to "
                       "check it by: look for it in the target, then `accord retry`",
                       keys.get("source_base", {}), unresolvable=True)
    found: list[Record] = []
    if keys.get("ext"):
        found = [r for r in await conn.find(entity, keys["ext"], [sid])
                 if r.fields.get(keys["ext"]) == sid]
    for path, norm, value in ([] if found else keys.get("match", [])):
        # a key of several fields was kept as lists: searched by its last part, compared whole
        paths, values = (path, value) if isinstance(path, list) else ([path], [value])
        want = [normalize(norm, v) for v in values]
        found = [r for r in await conn.find(entity, paths[-1], [values[-1]])
                 if [normalize(norm, r.fields.get(p)) for p in paths] == want
                 and not r.deleted]
        if found:
            break
    async with ctx.db.begin() as c:
        linked = await q.links_by_side(c, ctx.integration, ctx.flow.name, target,
                                       [r.id for r in found])
    found = [r for r in found if r.id not in linked]
    if len(found) > 1:
        return Recover(source, sid, target, None, tuple(r.id for r in found)[:50],
                       "an interrupted create matches several records",
                       keys.get("source_base", {}))
    if not found:
        return Recover(source, sid, target, None, (), "nothing was created",
                       keys.get("source_base", {}))
    rec = found[0]
    # the target's base is what the create sent, where the record no longer shows it: an
    # edit made there since the interrupted create is a change, not the base
    sent = keys.get("sent", {})
    target_base = {p: (rec.fields.get(p) if same(rec.fields.get(p), sent.get(p))
                       else sent.get(p)) for p in ctx.flow.base_paths[target]
                   if p in rec.fields or p in sent}
    source_base = keys.get("source_base", {})
    revert = owned_by(ctx.flow, target, rec.fields, source_base, Context())
    gone = False
    if revert:      # the write-back's record may have been deleted since: asked, not guessed
        there = await ctx.sides[source].get(ctx.flow.rules.entity(source), [sid])
        gone = not any(r.id == sid and not r.deleted for r in there)
    return Recover(source, sid, target, rec.id, source_base=source_base,
                   found_fields=dict(rec.fields), target_base=target_base,
                   revert={} if gone else revert, source_gone=gone)
