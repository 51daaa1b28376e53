"""The ids a step has staged on one side, remembered in a fixed amount of memory."""
from __future__ import annotations

from typing import Iterable


class SeenIds:
    """A Bloom filter of the ids staged so far (two bits an id in 2**23, one MiB): "not
    seen" is certain, "seen" may be wrong for a few ids in a hundred at a million ids.

    A record read twice in one step keeps its latest reading, so staging a page replaces
    the earlier reading of any id staged before. Asking the store for every id of every
    page cost about as much as inserting the page; with this filter only the ids that may
    have been staged are asked for. The memory is the same at ten records as at a million."""

    BITS = 1 << 23

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS >> 3)

    def add(self, ids: Iterable[str]) -> list[str]:
        """Note ``ids``; the ones that may have been noted before (in this call too)."""
        bits, mask, again = self._bits, self.BITS - 1, []
        for i in ids:
            h = hash(i)
            a, b = h & mask, (h >> 23) & mask
            ma, mb = 1 << (a & 7), 1 << (b & 7)
            if bits[a >> 3] & ma and bits[b >> 3] & mb:
                again.append(i)
            else:
                bits[a >> 3] |= ma
                bits[b >> 3] |= mb
        return again
