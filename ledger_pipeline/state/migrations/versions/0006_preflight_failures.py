"""The last preflight's failed checks as data (`connection_health.last_check_failures`: a JSON list of
{"name", "detail", "fix"}), beside the operator's text (`last_check_detail`), so the close's readiness check reads the
period verdict instead of parsing the text (ledger_pipeline/service/preflight_check.py).

Tolerant like 0001-0004: a column that already exists is kept.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("connection_health")}
    if "last_check_failures" not in existing:
        with op.batch_alter_table("connection_health") as batch:
            batch.add_column(sa.Column("last_check_failures", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("connection_health") as batch:
        batch.drop_column("last_check_failures")
