"""audit: one row a write, its fields in it, instead of one row a field

A create of a record of seven fields wrote seven audit rows; the rows of a first sync's
chunk were most of its commit, which the next chunk's writes wait for. A row now holds the
write's fields as a JSON list of ``{"field", "old", "new", "rule"}`` (``old`` and ``new``
the values themselves, not JSON text). ``accord history`` still lists field by field.
Existing rows become rows of one field each: nothing is lost, nothing is regrouped.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 05:20:00
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: Union[str, None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

KEPT = "id, run_id, integration, flow, side, record_id"


def _table(fields: bool) -> None:
    columns = [sa.Column("id", sa.Integer(), nullable=False),
               sa.Column("run_id", sa.Integer(), nullable=False),
               sa.Column("integration", sa.String(), nullable=False),
               sa.Column("flow", sa.String(), nullable=False),
               sa.Column("side", sa.String(), nullable=False),
               sa.Column("record_id", sa.String(), nullable=False)]
    if fields:
        columns.append(sa.Column("fields", sa.Text(), nullable=False))
    else:
        columns += [sa.Column("field", sa.String(), nullable=False),
                    sa.Column("old", sa.Text(), nullable=True),
                    sa.Column("new", sa.Text(), nullable=True),
                    sa.Column("rule", sa.String(), nullable=False)]
    columns.append(sa.Column("at", sa.DateTime(timezone=True), nullable=False))
    op.create_table("audit", *columns, sa.PrimaryKeyConstraint("id"))
    op.create_index("ix_audit_record", "audit", ["integration", "record_id"], unique=False)


def _set_aside() -> None:
    op.drop_index("ix_audit_record", table_name="audit")
    op.rename_table("audit", "audit_before_0007")


def upgrade() -> None:
    _set_aside()
    _table(fields=True)
    if op.get_bind().dialect.name == "postgresql":
        one = ("json_build_array(json_build_object('field', field, 'old', CAST(old AS json), "
               "'new', CAST(new AS json), 'rule', rule))::text")
    else:
        one = ("json_array(json_object('field', field, 'old', json(old), 'new', json(new), "
               "'rule', rule))")
    op.execute(f"INSERT INTO audit ({KEPT}, fields, at) "
               f"SELECT {KEPT}, {one}, at FROM audit_before_0007")
    op.drop_table("audit_before_0007")
    if op.get_bind().dialect.name == "postgresql":     # ids go on from the copied ones
        op.execute("SELECT setval(pg_get_serial_sequence('audit', 'id'), "
                   "COALESCE((SELECT max(id) FROM audit), 0) + 1, false)")


def downgrade() -> None:
    _set_aside()
    _table(fields=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("INSERT INTO audit (run_id, integration, flow, side, record_id, field, old, "
                   "new, rule, at) SELECT a.run_id, a.integration, a.flow, a.side, "
                   "a.record_id, f->>'field', (f->'old')::text, (f->'new')::text, "
                   "f->>'rule', a.at FROM audit_before_0007 a, "
                   "json_array_elements(CAST(a.fields AS json)) f ORDER BY a.id")
    else:
        op.execute("INSERT INTO audit (run_id, integration, flow, side, record_id, field, old, "
                   "new, rule, at) SELECT a.run_id, a.integration, a.flow, a.side, "
                   "a.record_id, json_extract(f.value, '$.field'), "
                   "f.value -> '$.old', f.value -> '$.new', "     # JSON text (SQLite 3.38)
                   "json_extract(f.value, '$.rule'), "
                   "a.at FROM audit_before_0007 a, json_each(a.fields) f ORDER BY a.id, f.key")
    op.drop_table("audit_before_0007")
