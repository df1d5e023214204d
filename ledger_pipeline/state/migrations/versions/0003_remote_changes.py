"""Changes made by hand in the accounting systems (`remote_changes`) and the per-tenant policy that decides what the
close does with them (`remote_change_policies`); see ledger_pipeline/remote_changes.py.

Tolerant like 0001 and 0002: a table that already exists is kept.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

schema = sa.MetaData()  # frozen here, never imported from the live models
sa.Table(
    "remote_changes", schema,
    sa.Column("system", sa.String(20), primary_key=True),
    sa.Column("custom_id", sa.String(120), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("period", sa.Date, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("action", sa.String(20)),
    sa.Column("remote_id", sa.String(120)),
    sa.Column("diff", sa.Text),
    sa.Column("remote_hash", sa.String(64)),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("locked", sa.Integer, nullable=False),
    sa.Column("found_by", sa.String(20)),
    sa.Column("found_at", sa.DateTime),
    sa.Column("resolution", sa.Text),
    sa.Column("resolved_at", sa.DateTime),
    sa.Column("run_id", sa.String(64)),
    sa.Index("ix_remote_changes_period_tenant", "period", "tenant_id"),
)
sa.Table(
    "remote_change_policies", schema,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("on_edit", sa.String(20), nullable=False),
    sa.Column("on_delete", sa.String(20), nullable=False),
    sa.Column("updated_at", sa.DateTime),
)


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for table in schema.sorted_tables:
        if table.name not in existing:
            table.create(bind)


def downgrade() -> None:
    for table in reversed(schema.sorted_tables):
        op.drop_table(table.name)
