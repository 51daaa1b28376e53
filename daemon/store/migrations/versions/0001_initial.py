"""initial: the tables of accord before migrations (daemon/store/tables.py as it was)

The base revision. A database made by an accord from before migrations (metadata.create_all)
has exactly these tables; ``accord migrate`` stamps it at 0001 and upgrades from there.
Timestamps are TIMESTAMP WITH TIME ZONE on PostgreSQL (aware UTC values); JSON is text.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 03:06:20
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: Union[str, None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLES = ("audit", "cursors", "exclusions", "held_deletes", "intents", "links", "parked",
          "pushes", "record_errors", "reviews", "runs", "staged", "staged_keys", "steps")


def upgrade() -> None:
    op.create_table('audit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('integration', sa.String(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('side', sa.String(), nullable=False),
    sa.Column('record_id', sa.String(), nullable=False),
    sa.Column('field', sa.String(), nullable=False),
    sa.Column('old', sa.Text(), nullable=True),
    sa.Column('new', sa.Text(), nullable=True),
    sa.Column('rule', sa.String(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_audit_record', 'audit', ['integration', 'record_id'], unique=False)
    op.create_table('cursors',
    sa.Column('integration', sa.String(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('side', sa.String(), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('integration', 'flow', 'side')
    )
    op.create_table('exclusions',
    sa.Column('integration', sa.String(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('side', sa.String(), nullable=False),
    sa.Column('record_id', sa.String(), nullable=False),
    sa.Column('mode', sa.String(), nullable=False),
    sa.Column('reason', sa.String(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('integration', 'flow', 'side', 'record_id')
    )
    op.create_table('held_deletes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('integration', sa.String(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('link_id', sa.Integer(), nullable=False),
    sa.Column('target', sa.String(), nullable=False),
    sa.Column('record_id', sa.String(), nullable=False),
    sa.Column('action', sa.String(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('approved', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_held_deletes_integration', 'held_deletes', ['integration'], unique=False)
    op.create_table('intents',
    sa.Column('integration', sa.String(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('target', sa.String(), nullable=False),
    sa.Column('source_id', sa.String(), nullable=False),
    sa.Column('keys', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('integration', 'flow', 'target', 'source_id')
    )
    op.create_table('links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('integration', sa.String(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('left_id', sa.String(), nullable=False),
    sa.Column('right_id', sa.String(), nullable=False),
    sa.Column('left_base', sa.Text(), nullable=False),
    sa.Column('right_base', sa.Text(), nullable=False),
    sa.Column('left_hash', sa.String(), nullable=False),
    sa.Column('right_hash', sa.String(), nullable=False),
    sa.Column('left_version', sa.String(), nullable=True),
    sa.Column('right_version', sa.String(), nullable=True),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('integration', 'flow', 'left_id', name='uq_links_left'),
    sa.UniqueConstraint('integration', 'flow', 'right_id', name='uq_links_right')
    )
    op.create_table('parked',
    sa.Column('integration', sa.String(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('side', sa.String(), nullable=False),
    sa.Column('record_id', sa.String(), nullable=False),
    sa.Column('hash', sa.String(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('integration', 'flow', 'side', 'record_id')
    )
    op.create_table('pushes',
    sa.Column('integration', sa.String(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('side', sa.String(), nullable=False),
    sa.Column('record_id', sa.String(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('integration', 'flow', 'side', 'record_id')
    )
    op.create_table('record_errors',
    sa.Column('integration', sa.String(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('side', sa.String(), nullable=False),
    sa.Column('record_id', sa.String(), nullable=False),
    sa.Column('message', sa.String(), nullable=False),
    sa.Column('retry', sa.Boolean(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('integration', 'flow', 'side', 'record_id')
    )
    op.create_table('reviews',
    sa.Column('integration', sa.String(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('side', sa.String(), nullable=False),
    sa.Column('record_id', sa.String(), nullable=False),
    sa.Column('candidates', sa.Text(), nullable=False),
    sa.Column('reason', sa.String(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('integration', 'flow', 'side', 'record_id')
    )
    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('integration', sa.String(), nullable=False),
    sa.Column('trigger', sa.String(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('message', sa.String(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_runs_integration', 'runs', ['integration'], unique=False)
    op.create_table('staged',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('side', sa.String(), nullable=False),
    sa.Column('record_id', sa.String(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('modified', sa.String(), nullable=True),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('passes', sa.Boolean(), nullable=False),
    sa.Column('excluded', sa.Boolean(), nullable=False),
    sa.Column('pushed', sa.Boolean(), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.Column('hash', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'flow', 'side', 'record_id')
    )
    op.create_index('ix_staged_seq', 'staged', ['seq'], unique=False)
    op.create_table('staged_keys',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('side', sa.String(), nullable=False),
    sa.Column('record_id', sa.String(), nullable=False),
    sa.Column('key', sa.String(), nullable=False),
    sa.Column('value', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'flow', 'side', 'record_id', 'key')
    )
    op.create_index('ix_staged_keys_lookup', 'staged_keys', ['run_id', 'flow', 'side', 'key', 'value'], unique=False)
    op.create_table('steps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('flow', sa.String(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('counts', sa.Text(), nullable=False),
    sa.Column('message', sa.String(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_steps_run_id', 'steps', ['run_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_steps_run_id', table_name='steps')
    op.drop_table('steps')
    op.drop_index('ix_staged_keys_lookup', table_name='staged_keys')
    op.drop_table('staged_keys')
    op.drop_index('ix_staged_seq', table_name='staged')
    op.drop_table('staged')
    op.drop_index('ix_runs_integration', table_name='runs')
    op.drop_table('runs')
    op.drop_table('reviews')
    op.drop_table('record_errors')
    op.drop_table('pushes')
    op.drop_table('parked')
    op.drop_table('links')
    op.drop_table('intents')
    op.drop_index('ix_held_deletes_integration', table_name='held_deletes')
    op.drop_table('held_deletes')
    op.drop_table('exclusions')
    op.drop_table('cursors')
    op.drop_index('ix_audit_record', table_name='audit')
    op.drop_table('audit')
