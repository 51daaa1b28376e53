"""perf indexes: the staging order and one flow's links by id, for keyset chunks

``ix_staged_order`` (run_id, flow, side, seq) replaces ``ix_staged_seq`` (seq alone): the
chunk queries (``staged_linked_chunk``, ``staged_unlinked_chunk``) read the next rows of one
side after a ``seq`` straight from it instead of sorting every staged row of the side for each
chunk. ``ix_links_order`` (integration, flow, id) serves the keyset over one flow's links
(``unseen_links``, ``links_of``) when the database holds several integrations.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:00:00
"""
from __future__ import annotations

from typing import Sequence, Union

from alembic import op

revision: str = "0005"
down_revision: Union[str, None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.drop_index("ix_staged_seq", table_name="staged")
    op.create_index("ix_staged_order", "staged", ["run_id", "flow", "side", "seq"],
                    unique=False)
    op.create_index("ix_links_order", "links", ["integration", "flow", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_links_order", table_name="links")
    op.drop_index("ix_staged_order", table_name="staged")
    op.create_index("ix_staged_seq", "staged", ["seq"], unique=False)
