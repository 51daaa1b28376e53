"""The SQLite connections a state engine opens: WAL (the CLI reads while the daemon writes),
foreign keys, and a page cache bounded at CACHE_KIB per connection (memory flat in the
number of records: bench/perf_bench.py)."""
from __future__ import annotations

from sqlalchemy import text

from daemon.store.engine import CACHE_KIB, make_engine


async def test_every_connection_is_wal_with_a_bounded_page_cache(tmp_path):
    db = make_engine(f"sqlite:///{tmp_path}/state.db")
    try:
        for _ in range(2):                  # a fresh pooled connection each time is the same
            async with db.connect() as a, db.connect() as b:
                for conn in (a, b):
                    got = {p: (await conn.execute(text(f"PRAGMA {p}"))).scalar()
                           for p in ("journal_mode", "foreign_keys", "cache_size")}
                    assert got == {"journal_mode": "wal", "foreign_keys": 1,
                                   "cache_size": -CACHE_KIB}
    finally:
        await db.dispose()
