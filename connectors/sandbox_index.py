"""Indexes for the sandboxes, so that a benchmark through a sandbox measures accord, not the
sandbox: a table of rows kept in one order (a modified-at stamp, then the key) and, on demand,
by the lower-cased value of a field.

A ``Table`` is a dict (key -> row) that indexes its ``Row`` values: a row tells its table
when an indexed field is set (``row[field] = ...``, ``row.update(...)``), whoever sets it (the
sandbox's routes, its seeding, a test stepping a record's stamp), so the indexes never go
stale. A plain dict stored in a table (a test building a row by hand) is "loose": it is not
indexed but offered to every query, so answers stay right, only slower. Queries take the
index's answer as candidates and still test every candidate with the real filter: an index
only ever narrows.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable, Iterable, Iterator

from sortedcontainers import SortedList


def _folded(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _sortable(value: Any) -> tuple:
    """An order for values that may be None (first), as the sandboxes' listings sort them."""
    return (0, 0) if value is None else (1, value)


class Row(dict):
    """A sandbox record that keeps its table's indexes current."""
    __slots__ = ("table", "key")

    def __setitem__(self, name: str, value: Any) -> None:
        table = getattr(self, "table", None)
        if table is None or name not in table.watched:
            super().__setitem__(name, value)
            return
        table._unindex(self.key, self)
        super().__setitem__(name, value)
        table._index(self.key, self)

    def update(self, *args: Any, **kw: Any) -> None:
        for name, value in dict(*args, **kw).items():
            self[name] = value

    def setdefault(self, name: str, value: Any = None) -> Any:
        if name not in self:
            self[name] = value
        return self[name]

    def __delitem__(self, name: str) -> None:
        table = getattr(self, "table", None)
        if table is not None and name in table.watched:
            table._unindex(self.key, self)
            super().__delitem__(name)
            table._index(self.key, self)
        else:
            super().__delitem__(name)

    def pop(self, name: str, *default: Any) -> Any:
        if name in self:
            value = self[name]
            del self[name]
            return value
        return super().pop(name, *default)

    def copy(self) -> dict:
        return dict(self)


class Table(dict):
    """key -> row, ordered by (``order_field``, key); value indexes on ``lookup`` fields are
    built on their first use and kept up to date from then on."""

    def __init__(self, order_field: str, *, rows: Iterable[tuple[Any, dict]] = ()) -> None:
        super().__init__()
        self.order_field = order_field
        self.order = SortedList()               # ((0|1, stamp), key)
        self.lookups: dict[str, dict[Any, set]] = {}
        self.watched = {order_field}
        self.loose: set = set()
        for key, row in rows:
            self[key] = row

    # --- the dict -----------------------------------------------------------------------------
    def __setitem__(self, key: Any, row: dict) -> None:
        if key in self:
            self._detach(key)
        if isinstance(row, Row) and getattr(row, "table", None) in (None, self):
            row.table, row.key = self, key
            self._index(key, row)
        else:
            self.loose.add(key)
        super().__setitem__(key, row)

    def __delitem__(self, key: Any) -> None:
        self._detach(key)
        super().__delitem__(key)

    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            row = self[key]
            del self[key]
            return row
        return super().pop(key, *default)

    def setdefault(self, key: Any, row: Any = None) -> Any:
        if key not in self:
            self[key] = row
        return self[key]

    def update(self, *args: Any, **kw: Any) -> None:
        for key, row in dict(*args, **kw).items():
            self[key] = row

    def clear(self) -> None:
        for key in list(self):
            del self[key]

    def popitem(self) -> tuple[Any, Any]:
        key = next(reversed(self))
        return key, self.pop(key)

    def __reduce__(self):                       # copies and pickles are plain dicts
        return (dict, (dict(self),))

    # --- the indexes ------------------------------------------------------------------------
    def _detach(self, key: Any) -> None:
        row = dict.get(self, key)
        if key in self.loose:
            self.loose.discard(key)
        elif isinstance(row, Row):
            self._unindex(key, row)
            row.table = None

    def _index(self, key: Any, row: dict) -> None:
        self.order.add((_sortable(row.get(self.order_field)), key))
        for name, index in self.lookups.items():
            index.setdefault(_folded(row.get(name)), set()).add(key)

    def _unindex(self, key: Any, row: dict) -> None:
        self.order.discard((_sortable(row.get(self.order_field)), key))
        for name, index in self.lookups.items():
            folded = _folded(row.get(name))
            keys = index.get(folded)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[folded]

    # --- queries ----------------------------------------------------------------------------
    def matching(self, name: str, value: Any) -> set:
        """Keys of the rows whose ``name`` is ``value`` ignoring case (a superset of the rows
        equal to it, and exactly the rows whose lower-cased value is ``value``), loose rows
        included."""
        index = self.lookups.get(name)
        if index is None:
            index = self.lookups[name] = {}
            self.watched.add(name)
            for key, row in self.items():
                if key not in self.loose:
                    index.setdefault(_folded(row.get(name)), set()).add(key)
        return set(index.get(_folded(value), ())) | self.loose

    def since(self, stamp: Any, key: Any = None, skip: int = 0) -> Iterator[Any]:
        """Keys of the rows whose order field is ``stamp`` or later (None: every row), in
        (order field, key) order, loose rows merged in; with ``key``, those at ``stamp``
        start from that key (a keyset page over rows that share a stamp starts where the
        last one stopped, not at the first of them); the first ``skip`` of them left out (a
        numbered page starts at its place in the index, not by walking the pages before)."""
        start_at = None if stamp is None else \
            ((1, stamp),) if key is None else ((1, stamp), key)
        start = 0 if start_at is None else self.order.bisect_left(start_at)
        if not self.loose:
            return (k for _, k in self.order.islice(start + skip))
        loose = sorted((_sortable(self[k].get(self.order_field)), k) for k in self.loose)
        if start_at is not None:
            loose = [x for x in loose if x >= start_at]
        merged = heapq.merge(self.order.islice(start), loose)
        return (k for _, k in itertools.islice(merged, skip, None))

    def count_since(self, stamp: Any) -> int:
        start = 0 if stamp is None else self.order.bisect_left(((1, stamp),))
        loose = sum(1 for k in self.loose if stamp is None or
                    _sortable(self[k].get(self.order_field)) >= (1, stamp))
        return len(self.order) - start + loose


def first(keys: Iterator[Any], table: Table, test: Callable[[dict], bool], n: int) -> list:
    """The first ``n`` rows of ``keys`` that pass ``test``."""
    out = []
    for key in keys:
        row = table[key]
        if test(row):
            out.append(row)
            if len(out) >= n:
                break
    return out
