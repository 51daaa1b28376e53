"""Reference data: the lists a flow maps or checks values against (sales persons, users ...).

Read at most once per run, and only when a value being decided needs one (a transform that
checks or maps against a list, a create default naming one): an idle run reads none, and
neither does a run whose changes touch no such field (a phone edited in the CRM does not
read Unleashed's sales persons). Until then a step's transforms find ``UNREAD`` in their
place, raise ``NeedsReference``, and the step reads the lists and decides the record again.
A guard's option (read before anything, to refuse a run) is shared, not read twice. A list
the system cannot give stops each step that needs it, with the system's message, and is not
asked again in the same run.
"""
from __future__ import annotations

from typing import Any, Mapping

from connectors.base import Connector, ConnectorError
from daemon.engine.rules import Side
from daemon.engine.transforms import UNREAD


class ReferenceUnavailable(Exception):
    """A reference list a flow needs could not be read: the step stops with this message."""


class ReferenceData:
    def __init__(self, sides: Mapping[Side, Connector], needed: Mapping[Side, set[str]],
                 known: Mapping[tuple[Side, str], Any] | None = None) -> None:
        self._sides = sides
        self._needed = {side: sorted(names) for side, names in needed.items()}
        self._lists: dict[Side, dict[str, Any]] = {"left": {}, "right": {}}
        for (side, name), value in (known or {}).items():
            if name in self._needed.get(side, ()):
                self._lists[side][name] = value
        self._failed: str | None = None
        self._read = False

    def fill(self, options: dict[Any, Any]) -> None:
        """Put this run's lists in a step's ``options``: those read so far, ``UNREAD`` for
        the rest (read by ``lists`` when a value needs them)."""
        for names in self._needed.values():
            options.update(dict.fromkeys(names, UNREAD))
        for lists in self._lists.values():
            options.update(lists)

    async def lists(self) -> dict[Side, dict[str, Any]]:
        """Each side's lists by name, read on the first call of the run."""
        if self._failed is not None:
            raise ReferenceUnavailable(self._failed)
        if not self._read:
            for side, names in self._needed.items():
                for name in names:
                    if name in self._lists[side]:
                        continue
                    try:
                        self._lists[side][name] = await self._sides[side].options(name)
                    except (ConnectorError, KeyError) as exc:
                        self._failed = f"{side} system cannot list {name}: {exc}"
                        raise ReferenceUnavailable(self._failed) from None
            self._read = True
        return self._lists
