"""Derived records: a list inside a source record read as records of their own.

A flow whose side has ``derive`` (``rules.Derive``) does not stage the records its connector
lists, but what is derived from them: each entry of ``entries`` (a project's items or locations),
or the record itself seen as another kind (a project's client), with the parent's fields at
hand under a prefix. Each derived record has its own id, link, base, errors and audit.

- ``scope = "parent"``: the id is ``<parent id>/<entry id>``. A parent read again that no
  longer has an entry is a delete of that entry's derived record (staged as a tombstone), and
  a deleted parent deletes them all. A parent whose list the vendor did not send (unknown,
  not empty) derives nothing and deletes nothing.
- ``scope = "global"``: the id is the entry's key alone (the distinct catalog products of all
  projects). It is staged once per step, from the first parent that lists it (the parents
  that list it are remembered, for acknowledging a feed), and never deleted by absence.
  Reading one again by id is not possible (no parent is known): it is read again when one of
  its parents is delivered again.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from connectors.base import Record, flatten
from daemon.engine.rules import Derive

SEP = "/"


def _join(values: Sequence[Any]) -> str | None:
    if any(v in (None, "") for v in values):
        return None
    return SEP.join(str(v) for v in values)


class Deriver:
    def __init__(self, spec: Derive) -> None:
        self.spec = spec
        self.seen: set[str] = set()                  # global ids staged this step
        self.origin: dict[str, set[str]] = {}        # global id -> parents listing it

    def expand(self, parents: Sequence[Record]) -> tuple[list[Record], list[str]]:
        """The derived records of ``parents``, and the ids of the parents whose list was
        known (their derived records not produced now are gone)."""
        spec = self.spec
        out: list[Record] = []
        known: list[str] = []
        for p in parents:
            if p.deleted:
                known.append(p.id)
                continue
            entries: Any = p.fields.get(spec.entries) if spec.entries else [{}]
            if not isinstance(entries, list):
                continue                               # not sent: unknown, nothing inferred
            known.append(p.id)
            above = {f"{spec.parent}.{k}": v for k, v in p.fields.items()
                     if not isinstance(v, list)}
            for entry in entries:
                fields = {**above, **(flatten(entry) if isinstance(entry, Mapping) else {})}
                key = _join([fields.get(path) for path in spec.id])
                if key is None:
                    continue
                for name, paths in spec.keys.items():
                    fields[name] = _join([fields.get(path) for path in paths])
                if spec.scope == "global":
                    self.origin.setdefault(key, set()).add(p.id)
                    if key in self.seen:
                        continue
                    self.seen.add(key)
                    rid = key
                else:
                    rid = f"{p.id}{SEP}{key}"
                out.append(Record(id=rid, fields=fields, modified=p.modified,
                                  version=p.version))
        return out, known if self.spec.scope == "parent" else []

    def parent_ids(self, ids: Sequence[str]) -> list[str]:
        """The parents to read again for derived ids (none for a global scope)."""
        if self.spec.scope == "global":
            return []
        return list(dict.fromkeys(i.split(SEP, 1)[0] for i in ids))

    def parents_of(self, record_id: str) -> set[str]:
        """The parents a derived record came from (for acknowledging a feed)."""
        if self.spec.scope == "global":
            return set(self.origin.get(record_id, ()))
        return {record_id.split(SEP, 1)[0]}
