"""Federation roles keep their event cursor and their own ballots across restarts.

Revision ID: 0003_role_states
Revises: 0002_dataset_load_options
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_role_states"
down_revision: str | Sequence[str] | None = "0002_dataset_load_options"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "role_states",
        sa.Column("federation_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["federation_id"], ["federations.id"], name="fk_role_states_federation_id_federations",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("federation_id", "role", name="pk_role_states"),
    )


def downgrade() -> None:
    op.drop_table("role_states")
