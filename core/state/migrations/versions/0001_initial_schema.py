"""Initial schema: hospitals, datasets, training runs, federations, rounds, models, votes,
failures, metrics and evaluation reports.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25 01:38:34

Timestamps are plain DATETIME columns holding UTC (the models' UtcDateTime adds the zone on
read); a revision never imports the models, which keep changing after it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("class_counts", sa.JSON(), nullable=False),
        sa.Column("input_shape", sa.JSON(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("name", "source", name=op.f("uq_datasets_name_source")),
    )
    op.create_table(
        "federations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "running",
                "completed",
                "cancelled",
                "failed",
                name="federation_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("final_accuracy", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federations")),
    )
    op.create_table(
        "hospitals",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=True),
        sa.Column("malicious", sa.Boolean(), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hospitals")),
    )
    op.create_table(
        "federation_members",
        sa.Column("federation_id", sa.Integer(), nullable=False),
        sa.Column("hospital_id", sa.String(length=128), nullable=False),
        sa.Column("malicious", sa.Boolean(), nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["federation_id"],
            ["federations.id"],
            name=op.f("fk_federation_members_federation_id_federations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospitals.id"], name=op.f("fk_federation_members_hospital_id_hospitals")
        ),
        sa.PrimaryKeyConstraint("federation_id", "hospital_id", name=op.f("pk_federation_members")),
    )
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("federation_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "open",
                "finalized",
                "aborted",
                name="round_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("previous_hash", sa.String(length=64), nullable=True),
        sa.Column("global_hash", sa.String(length=64), nullable=True),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("durations", sa.JSON(), nullable=False),
        sa.Column("contributors", sa.JSON(), nullable=False),
        sa.Column("abort_reason", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["federation_id"],
            ["federations.id"],
            name=op.f("fk_rounds_federation_id_federations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rounds")),
        sa.UniqueConstraint("federation_id", "number", name=op.f("uq_rounds_federation_id_number")),
    )
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("architecture", sa.String(length=64), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "running",
                "completed",
                "cancelled",
                "failed",
                name="run_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("model_hash", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_training_runs_dataset_id_datasets"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_runs")),
    )
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_training_runs_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "evaluation_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("class_names", sa.JSON(), nullable=False),
        sa.Column("precision", sa.JSON(), nullable=False),
        sa.Column("recall", sa.JSON(), nullable=False),
        sa.Column("confusion", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "(round_id IS NULL) != (run_id IS NULL)", name=op.f("ck_evaluation_reports_one_owner")
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_evaluation_reports_dataset_id_datasets"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["rounds.id"],
            name=op.f("fk_evaluation_reports_round_id_rounds"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["training_runs.id"],
            name=op.f("fk_evaluation_reports_run_id_training_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_reports")),
    )
    with op.batch_alter_table("evaluation_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_evaluation_reports_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_evaluation_reports_round_id"), ["round_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_evaluation_reports_run_id"), ["run_id"], unique=False)

    op.create_table(
        "failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("hospital_id", sa.String(length=128), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospitals.id"], name=op.f("fk_failures_hospital_id_hospitals")
        ),
        sa.ForeignKeyConstraint(
            ["round_id"], ["rounds.id"], name=op.f("fk_failures_round_id_rounds"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failures")),
    )
    with op.batch_alter_table("failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_failures_round_id"), ["round_id"], unique=False)

    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("(round_id IS NULL) != (run_id IS NULL)", name=op.f("ck_metrics_one_owner")),
        sa.ForeignKeyConstraint(
            ["round_id"], ["rounds.id"], name=op.f("fk_metrics_round_id_rounds"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["training_runs.id"], name=op.f("fk_metrics_run_id_training_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metrics")),
    )
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_metrics_round_id"), ["round_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_metrics_run_id"), ["run_id"], unique=False)

    op.create_table(
        "model_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("hospital_id", sa.String(length=128), nullable=False),
        sa.Column("model_hash", sa.String(length=64), nullable=False),
        sa.Column("share_commitments", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "accepted",
                "rejected",
                "failed",
                name="model_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("accepts", sa.Integer(), nullable=False),
        sa.Column("rejects", sa.Integer(), nullable=False),
        sa.Column("registered", sa.Integer(), nullable=False),
        sa.Column("unverified", sa.Boolean(), nullable=False),
        sa.Column("committed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospitals.id"], name=op.f("fk_model_records_hospital_id_hospitals")
        ),
        sa.ForeignKeyConstraint(
            ["round_id"], ["rounds.id"], name=op.f("fk_model_records_round_id_rounds"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_records")),
        sa.UniqueConstraint("round_id", "hospital_id", name=op.f("uq_model_records_round_id_hospital_id")),
    )
    with op.batch_alter_table("model_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_records_hospital_id"), ["hospital_id"], unique=False)

    op.create_table(
        "training_epochs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("val_loss", sa.Float(), nullable=True),
        sa.Column("val_accuracy", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["training_runs.id"],
            name=op.f("fk_training_epochs_run_id_training_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_epochs")),
        sa.UniqueConstraint("run_id", "epoch", name=op.f("uq_training_epochs_run_id_epoch")),
    )
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("validator_id", sa.String(length=128), nullable=False),
        sa.Column("candidate_id", sa.String(length=128), nullable=False),
        sa.Column("accept", sa.Boolean(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["hospitals.id"], name=op.f("fk_votes_candidate_id_hospitals")
        ),
        sa.ForeignKeyConstraint(
            ["round_id"], ["rounds.id"], name=op.f("fk_votes_round_id_rounds"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["validator_id"], ["hospitals.id"], name=op.f("fk_votes_validator_id_hospitals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_votes")),
        sa.UniqueConstraint(
            "round_id",
            "validator_id",
            "candidate_id",
            name=op.f("uq_votes_round_id_validator_id_candidate_id"),
        ),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("votes")
    op.drop_table("training_epochs")
    with op.batch_alter_table("model_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_records_hospital_id"))

    op.drop_table("model_records")
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_metrics_run_id"))
        batch_op.drop_index(batch_op.f("ix_metrics_round_id"))

    op.drop_table("metrics")
    with op.batch_alter_table("failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_failures_round_id"))

    op.drop_table("failures")
    with op.batch_alter_table("evaluation_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evaluation_reports_run_id"))
        batch_op.drop_index(batch_op.f("ix_evaluation_reports_round_id"))
        batch_op.drop_index(batch_op.f("ix_evaluation_reports_dataset_id"))

    op.drop_table("evaluation_reports")
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_training_runs_dataset_id"))

    op.drop_table("training_runs")
    op.drop_table("rounds")
    op.drop_table("federation_members")
    op.drop_table("hospitals")
    op.drop_table("federations")
    op.drop_table("datasets")
