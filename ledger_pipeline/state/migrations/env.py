"""Alembic environment of the operational database (LEDGER_OPS_DATABASE_URL).

Run by `ledger_pipeline.state.database.upgrade` with an open connection in `config.attributes["connection"]`
(inside the caller's transaction and lock), or by hand: `alembic -c ledger_pipeline/state/migrations/alembic.ini
upgrade head` (`current`, `history`, `stamp`), which connects to LEDGER_OPS_DATABASE_URL, or to `-x url=...`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from ledger_pipeline.state.models import OpsBase

config = context.config
target_metadata = OpsBase.metadata


def _configure_and_run(connection) -> None:  # noqa: ANN001
    # render_as_batch: SQLite cannot ALTER most things in place; batch mode copies the table (autogenerate too)
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("the operational database's migrations inspect the live schema: run them online "
                     "(without --sql)")

connection = config.attributes.get("connection")
if connection is not None:
    _configure_and_run(connection)
else:
    from ledger_pipeline.settings import load_settings

    url = context.get_x_argument(as_dictionary=True).get("url") or load_settings().ops_database_url
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _configure_and_run(conn)
            conn.commit()
    finally:
        engine.dispose()
