"""Exchange rates (`exchange_rates`, loaded by `ledger-pipeline rates load`) and the connection service's tables
(`service_link_uses`, `service_flows`, `connection_health`, used by `ledger-pipeline serve`).

Tolerant like 0001: a table that already exists (a pre-release build created these with `create_all`) is kept.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

schema = sa.MetaData()  # frozen here, never imported from the live models
sa.Table(
    "exchange_rates", schema,
    sa.Column("rate_date", sa.Date, primary_key=True),
    sa.Column("from_currency", sa.String(3), primary_key=True),
    sa.Column("to_currency", sa.String(3), primary_key=True),
    sa.Column("rate", sa.String(48), nullable=False),
    sa.Column("source", sa.Text),
    sa.Column("loaded_at", sa.DateTime),
)
sa.Table(
    "service_link_uses", schema,
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("system", sa.String(20), nullable=False),
    sa.Column("used_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
)
sa.Table(
    "service_flows", schema,
    sa.Column("state", sa.String(64), primary_key=True),
    sa.Column("system", sa.String(20), nullable=False),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("nonce", sa.String(64), nullable=False),
    sa.Column("flags", sa.String(20), nullable=False),
    sa.Column("binding_sha256", sa.String(64), nullable=False),
    sa.Column("link_expires_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
)
sa.Table(
    "connection_health", schema,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("system", sa.String(20), primary_key=True),
    sa.Column("company_name", sa.Text),
    sa.Column("home_currency", sa.String(3)),
    sa.Column("last_ok_at", sa.DateTime),
    sa.Column("last_check_at", sa.DateTime),
    sa.Column("last_check_ok", sa.Integer),
    sa.Column("last_check_detail", sa.Text),
    sa.Column("connected_at", sa.DateTime),
    sa.Column("connected_via", sa.String(20)),
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
