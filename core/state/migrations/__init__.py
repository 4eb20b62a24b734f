"""Alembic migrations of the local state; run in code by `core.state.db.open_database`."""
