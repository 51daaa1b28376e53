"""Does the state database answer, and does it take writes?

``answers`` is cheap (``SELECT 1``) and is what readiness asks while all is well. ``writable``
is asked after a run crashed and while the state is known to be down: an ``UPDATE`` that
matches no row still takes SQLite's write lock, so it fails on a read-only file (a full disk,
a remounted volume, an immutable file) where ``SELECT 1`` would not. Both raise on failure.
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.store.schema import VERSION_TABLE


async def answers(db: AsyncEngine) -> None:
    async with db.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def writable(db: AsyncEngine) -> None:
    async with db.begin() as conn:
        await conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = version_num "
                                f"WHERE version_num IS NULL"))
