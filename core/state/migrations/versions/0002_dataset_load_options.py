"""Datasets remember how they were loaded (label column, left-out columns, missing-value rule),
so the app reloads a CSV exactly as the user chose.

Revision ID: 0002_dataset_load_options
Revises: 0001_initial
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_dataset_load_options"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("load_options", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("load_options")
