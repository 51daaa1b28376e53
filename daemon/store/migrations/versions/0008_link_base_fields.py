"""links: how many fields each side's base holds, kept beside the base

A listing's page tells a record equal to its linked base (a quiet record) by the link's state,
the base's digest and how many fields the base holds: a digest takes a field the base lacks for
an empty one, the count tells them apart. The count was taken from the base's JSON for every
record read (``json_each``), half the cost of the look-up; it is now written with the base
(``apply.base_row``), and existing links are counted once here.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 06:00:00
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: Union[str, None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.add_column(sa.Column("left_fields", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("right_fields", sa.Integer(), nullable=True))
    for side in ("left", "right"):
        count = (f"(SELECT count(*) FROM json_object_keys(CAST({side}_base AS json)))"
                 if op.get_bind().dialect.name == "postgresql" else
                 f"(SELECT count(*) FROM json_each({side}_base))")
        op.execute(f"UPDATE links SET {side}_fields = {count}")


def downgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.drop_column("right_fields")
        batch.drop_column("left_fields")
