"""Alembic migrations of the operational database (see ledger_pipeline/state/database.py)."""
