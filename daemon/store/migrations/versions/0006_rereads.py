"""rereads: linked records to read again by id, once, because an answer left a field out

A record whose answer did not carry a field that flows from it, while the other side's value
is known, is read again by the next run of its flow (``queries.add_rereads``, taken with the
other revisits by ``queries.revisit_ids``), so the field does not stay unsynced until the
record happens to change.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 10:30:00
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "rereads",
        sa.Column("integration", sa.String(), nullable=False),
        sa.Column("flow", sa.String(), nullable=False),
        sa.Column("side", sa.String(), nullable=False),
        sa.Column("record_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("integration", "flow", "side", "record_id"),
    )


def downgrade() -> None:
    op.drop_table("rereads")
