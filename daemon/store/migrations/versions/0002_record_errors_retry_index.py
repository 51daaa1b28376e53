"""an index for the records to read again: record_errors(integration, flow, side, retry)

Each step asks for the failed writes of its flow and side to re-read (queries.revisit_ids);
the index answers that without scanning every open error of the integration.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:10:00
"""
from __future__ import annotations

from typing import Sequence, Union

from alembic import op

revision: str = "0002"
down_revision: Union[str, None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index("ix_record_errors_retry", "record_errors",
                    ["integration", "flow", "side", "retry"], unique=False, if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_record_errors_retry", table_name="record_errors")
