"""pauses: the integrations an operator paused (the status page's Pause, kept across restarts)

One row per paused integration; resuming deletes it. The service asks
``daemon.store.operator.is_paused`` before each scheduled run.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 09:00:00
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "pauses",
        sa.Column("integration", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("integration"),
    )


def downgrade() -> None:
    op.drop_table("pauses")
