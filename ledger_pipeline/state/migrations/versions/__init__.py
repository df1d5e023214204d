"""Alembic revisions of the operational database, oldest first (down_revision chains them)."""
