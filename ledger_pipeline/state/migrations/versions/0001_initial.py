"""The operational schema of 0.2.0: integrations, oauth_states, postings, shard_assignments, ledger_entries.

Tolerant of a database that already holds these tables, as 0.2.0 created them without Alembic (ad-hoc CREATE and
ALTER TABLE ADD COLUMN, in R2a's database by default): a missing table is created, a missing nullable column added,
a missing index created, and what exists is kept as it is. Running it on such a copy adopts it (no `alembic stamp`
needed).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The schema as of this revision, frozen here (never imported from the live models, which move on).
schema = sa.MetaData()
sa.Table(
    "integrations", schema,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("source_system", sa.String(20), primary_key=True),
    sa.Column("company_id", sa.String(64)),
    sa.Column("access_token", sa.Text),
    sa.Column("refresh_token", sa.Text),
    sa.Column("expires_at", sa.DateTime),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("status_detail", sa.Text),
    sa.Column("token_version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime),
    sa.Column("extra", sa.Text),
)
sa.Table(
    "oauth_states", schema,
    sa.Column("state", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("redirect_uri", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
)
sa.Table(
    "postings", schema,
    sa.Column("system", sa.String(20), primary_key=True),
    sa.Column("custom_id", sa.String(120), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("period", sa.Date, nullable=False),
    sa.Column("remote_id", sa.String(120)),
    sa.Column("remote_line_ids", sa.Text),
    sa.Column("remote_state", sa.Text),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("posted_at", sa.DateTime),
    sa.Column("verified_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime),
    sa.Column("run_id", sa.String(64)),
    sa.Index("ix_postings_period_tenant", "period", "tenant_id"),
)
sa.Table(
    "shard_assignments", schema,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("shard", sa.String(20), nullable=False),
    sa.Column("assigned_at", sa.DateTime),
)
sa.Table(
    "ledger_entries", schema,
    sa.Column("custom_id", sa.String(120), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("period", sa.Date, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
    sa.Column("transaction_date", sa.Date),
    sa.Column("memo", sa.Text),
    sa.Column("currency", sa.String(3)),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("lines", sa.Text),
    sa.Column("run_id", sa.String(64)),
    sa.Index("ix_ledger_entries_period_tenant", "period", "tenant_id"),
)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    for table in schema.sorted_tables:
        if table.name not in existing:
            table.create(bind)
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and column.nullable:  # what 0.2.0's ad-hoc ALTERs added
                op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))
        indexes = {ix["name"] for ix in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)


def downgrade() -> None:
    for table in reversed(schema.sorted_tables):
        op.drop_table(table.name)
