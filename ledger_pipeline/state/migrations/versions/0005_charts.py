"""Charts of accounts in the operational database, their one home (ledger_pipeline/charts.py): each tenant's latest
chart (`gl_accounts`), the outcome of its last read (`gl_ingest_status`) and the changes found between reads
(`gl_account_changes`). Until 0.3.0 they lived only in DuckDB; the first chart refresh after the upgrade reads every
tenant's chart again (none is fresh here yet), so nothing is copied from DuckDB.

Tolerant like 0001-0004: a table that already exists is kept.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

schema = sa.MetaData()  # frozen here, never imported from the live models
sa.Table(
    "gl_accounts", schema,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(120), primary_key=True),
    sa.Column("system", sa.String(20), nullable=False),
    sa.Column("number", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("category", sa.Text),
    sa.Column("parent_id", sa.String(120)),
    sa.Column("archived", sa.Boolean, nullable=False),
    sa.Column("fetched_at", sa.DateTime),
    sa.Column("run_id", sa.String(64)),
)
sa.Table(
    "gl_ingest_status", schema,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("system", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("accounts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("checked_at", sa.DateTime),
    sa.Column("run_id", sa.String(64)),
)
sa.Table(
    "gl_account_changes", schema,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("system", sa.String(20), nullable=False),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("account_id", sa.String(120), nullable=False),
    sa.Column("change", sa.String(20), nullable=False),
    sa.Column("number", sa.Text),
    sa.Column("name", sa.Text),
    sa.Column("previous_name", sa.Text),
    sa.Column("archived", sa.Boolean),
    sa.Column("detected_at", sa.DateTime),
    sa.Column("run_id", sa.String(64)),
    sa.Index("ix_gl_account_changes_tenant", "tenant_id"),
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
