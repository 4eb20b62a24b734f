"""The SQLite schema of the local state, as SQLAlchemy 2 declarative models.

Everything the GUI shows (datasets, training runs, federations, rounds, votes, plots) is read
from these tables, so closing and reopening the app loses nothing. The Alembic migrations in
`core/state/migrations` must produce exactly this metadata (a test compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints let Alembic's batch mode (SQLite table rebuilds) find them in later migrations.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC as naive timestamps (SQLite keeps no zone) and hands back aware datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class FederationStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class RoundStatus(StrEnum):
    OPEN = "open"
    FINALIZED = "finalized"
    ABORTED = "aborted"


class ModelStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"


def _status(enum: type[Enum], name: str) -> SqlEnum:
    """A status column: stored as its lowercase value, checked by a named CHECK constraint."""
    return SqlEnum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Hospital(Base):
    """A hospital ever seen by this installation; its latest name and ledger account."""

    __tablename__ = "hospitals"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    account: Mapped[str | None] = mapped_column(String(64))
    malicious: Mapped[bool] = mapped_column(Boolean, default=False)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    """A dataset loaded on this machine (only its description: the data stays where it is)."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text, default="")
    samples: Mapped[int] = mapped_column(Integer)
    classes: Mapped[list[Any]] = mapped_column(JSON)
    class_counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    input_shape: Mapped[list[Any]] = mapped_column(JSON)
    load_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    loaded_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """One local training run; its per-epoch history rows feed the Training page's plots."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), index=True)
    architecture: Mapped[str] = mapped_column(String(64))
    epochs: Mapped[int] = mapped_column(Integer)
    batch_size: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[RunStatus] = mapped_column(_status(RunStatus, "run_status"), default=RunStatus.RUNNING)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_hash: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)

    dataset: Mapped[Dataset | None] = relationship()
    history: Mapped[list[EpochRecord]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True, order_by="EpochRecord.epoch"
    )


class EpochRecord(Base):
    """One epoch of a training run."""

    __tablename__ = "training_epochs"
    __table_args__ = (UniqueConstraint("run_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    # NULL where the value was not finite (a diverging run): SQLite cannot hold NaN.
    loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)

    run: Mapped[TrainingRun] = relationship(back_populates="history")


class Federation(Base):
    """One federation run (a `simulate` or a real deployment): its configuration and result."""

    __tablename__ = "federations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[FederationStatus] = mapped_column(
        _status(FederationStatus, "federation_status"), default=FederationStatus.RUNNING
    )
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    final_accuracy: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)

    members: Mapped[list[FederationMember]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="FederationMember.hospital_id"
    )
    rounds: Mapped[list[Round]] = relationship(
        back_populates="federation",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Round.number",
    )


class FederationMember(Base):
    """A hospital registered in one federation; `malicious` is that simulation's ground truth."""

    __tablename__ = "federation_members"

    federation_id: Mapped[int] = mapped_column(
        ForeignKey("federations.id", ondelete="CASCADE"), primary_key=True
    )
    hospital_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id"), primary_key=True)
    malicious: Mapped[bool] = mapped_column(Boolean, default=False)
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)

    hospital: Mapped[Hospital] = relationship()


class Round(Base):
    """One round of a federation; `previous_hash` is the global model it started from."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("federation_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    federation_id: Mapped[int] = mapped_column(ForeignKey("federations.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[RoundStatus] = mapped_column(
        _status(RoundStatus, "round_status"), default=RoundStatus.OPEN
    )
    previous_hash: Mapped[str | None] = mapped_column(String(64))
    global_hash: Mapped[str | None] = mapped_column(String(64))
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    durations: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    contributors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    abort_reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    federation: Mapped[Federation] = relationship(back_populates="rounds")
    models: Mapped[list[ModelRecord]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="ModelRecord.hospital_id"
    )
    votes: Mapped[list[VoteRecord]] = relationship(
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="(VoteRecord.candidate_id, VoteRecord.validator_id)",
    )
    failures: Mapped[list[FailureRecord]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="FailureRecord.id"
    )


class ModelRecord(Base):
    """A hospital's committed candidate in a round and the federation's verdict on it."""

    __tablename__ = "model_records"
    __table_args__ = (UniqueConstraint("round_id", "hospital_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    hospital_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id"), index=True)
    model_hash: Mapped[str] = mapped_column(String(64))
    share_commitments: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[ModelStatus] = mapped_column(
        _status(ModelStatus, "model_status"), default=ModelStatus.PENDING
    )
    accepts: Mapped[int] = mapped_column(Integer, default=0)
    rejects: Mapped[int] = mapped_column(Integer, default=0)
    registered: Mapped[int] = mapped_column(Integer, default=0)
    # Taken without a vote: the no-verification baseline of a simulation.
    unverified: Mapped[bool] = mapped_column(Boolean, default=False)
    committed_at: Mapped[datetime] = mapped_column(default=utcnow)


class VoteRecord(Base):
    """One validator's vote on one candidate, with the scores it learned."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("round_id", "validator_id", "candidate_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    validator_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id"))
    candidate_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id"))
    accept: Mapped[bool] = mapped_column(Boolean)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class FailureRecord(Base):
    """A hospital that dropped out of a round, and at which stage."""

    __tablename__ = "failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    hospital_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id"))
    stage: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)


class Metric(Base):
    """A named number of a round or of a training run (`step` orders a series), for plots."""

    __tablename__ = "metrics"
    __table_args__ = (CheckConstraint("(round_id IS NULL) != (run_id IS NULL)", name="one_owner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[int] = mapped_column(Integer, default=0)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvaluationReport(Base):
    """How a model did on a held-out set: accuracy, per-class precision/recall, confusion matrix."""

    __tablename__ = "evaluation_reports"
    __table_args__ = (CheckConstraint("(round_id IS NULL) != (run_id IS NULL)", name="one_owner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"), index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), index=True)
    accuracy: Mapped[float] = mapped_column(Float)
    class_names: Mapped[list[Any]] = mapped_column(JSON)
    precision: Mapped[list[Any]] = mapped_column(JSON)
    recall: Mapped[list[Any]] = mapped_column(JSON)
    confusion: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoleStateRecord(Base):
    """What a federation role (hospital node, coordinator, archive) keeps across restarts: its
    event cursor and its own ballots, one JSON document per role and federation."""

    __tablename__ = "role_states"

    federation_id: Mapped[int] = mapped_column(
        ForeignKey("federations.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
