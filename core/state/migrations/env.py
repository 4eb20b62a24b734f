"""Alembic environment: migrates the connection `core.state.db` hands over, against the models.

There is no alembic.ini and no URL here: the caller owns the connection and its transaction, so a
migration commits together with the checks around it, or not at all.
"""

from __future__ import annotations

from alembic import context

from core.state.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("MedFedChain migrations run through core.state.db.open_database only.")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by rebuilding them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("MedFedChain migrations run online, on an open SQLite connection.")
run_migrations_online()
