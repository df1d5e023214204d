"""The company's multicurrency setting and when its currency was last read (`connection_health.multicurrency`,
`.currency_checked_at`), beside `home_currency` (0002); see ledger_pipeline/connections.py.

Tolerant like 0001-0003: a column that already exists is kept.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (("multicurrency", sa.Integer), ("currency_checked_at", sa.DateTime))


def upgrade() -> None:
    existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("connection_health")}
    with op.batch_alter_table("connection_health") as batch:
        for name, type_ in COLUMNS:
            if name not in existing:
                batch.add_column(sa.Column(name, type_))


def downgrade() -> None:
    with op.batch_alter_table("connection_health") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
