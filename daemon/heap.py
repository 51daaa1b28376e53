"""The daemon's heap and Python's cyclic garbage collector.

A process that has imported accord holds a few hundred thousand objects that live as long
as it does: the modules of SQLAlchemy, aiohttp, pydantic, structlog and accord itself. The
collector's full passes walk every one of them again and again while a sync allocates (a
tenth of the engine's CPU in a first sync, measured with ``bench.perf_bench``). Moving what
exists once the modules are imported into the collector's permanent generation
(``gc.freeze``) ends that; objects made later, an App and what a reload replaces included,
are collected as before.

The youngest generation is collected after 5,000 new container objects instead of 700: a
sync allocates a chunk's rows, records and actions in bursts of thousands that mostly die
by reference counting, and the default threshold ran a young collection, and every tenth an
older one, many times a chunk. Engine alone, 20,000 creates: the collector's time went from
1.05 s to 0.55 s with the freeze and to 0.35 s with both, of about 8 s of CPU; what waits
uncollected is at most those 5,000 objects.
"""
from __future__ import annotations

import gc


YOUNG = 5_000          # new container objects between two young collections (Python: 700)


def freeze_startup() -> None:
    """Collect once, then leave what exists now out of every later collection, and collect
    the young generation less often. Called once, after the imports and before any
    configuration is read: what a configuration builds may become garbage in a reload, and
    a frozen cycle would never be collected."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)
