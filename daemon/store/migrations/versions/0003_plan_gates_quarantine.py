"""gates, instances, flow_state; quarantine on record_errors; the version read on staged

- ``gates``: what stops an integration until approved (first-run confirmation, a changed
  system instance);
- ``instances``: the identity of the system each side reached;
- ``flow_state``: the fingerprint of each flow's mapped fields, for back-fills;
- ``record_errors.quarantined`` / ``hash``: a record failing the same way run after run;
- ``staged.version``: the version read, for conditional writes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 07:00:00
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: Union[str, None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "gates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("flow", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("message", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"))
    op.create_index(op.f("ix_gates_integration"), "gates", ["integration"], unique=False)
    op.create_table(
        "instances",
        sa.Column("integration", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("side", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("identity", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("integration", "side"))
    op.create_table(
        "flow_state",
        sa.Column("integration", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("flow", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("integration", "flow"))
    with op.batch_alter_table("record_errors") as batch:
        batch.add_column(sa.Column("quarantined", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    with op.batch_alter_table("record_errors") as batch:
        batch.alter_column("quarantined", server_default=None)
    with op.batch_alter_table("staged") as batch:
        batch.add_column(sa.Column("version", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("staged") as batch:
        batch.drop_column("version")
    with op.batch_alter_table("record_errors") as batch:
        batch.drop_column("hash")
        batch.drop_column("quarantined")
    op.drop_table("flow_state")
    op.drop_table("instances")
    op.drop_index(op.f("ix_gates_integration"), table_name="gates")
    op.drop_table("gates")
