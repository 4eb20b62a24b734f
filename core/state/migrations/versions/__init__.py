"""Alembic revisions of the local state, oldest first."""
