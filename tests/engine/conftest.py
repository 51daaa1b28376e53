import pytest

from tests.dbs import state_url  # noqa: F401  (the fixture: SQLite and PostgreSQL)
from tests.engine import harness


@pytest.fixture(autouse=True)
async def dispose_pairs():
    """Close every state database a test opened (aiosqlite threads outlive the loop else)."""
    yield
    while harness.OPEN:
        await harness.OPEN.pop().dispose()
