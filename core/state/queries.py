"""Reads of the local state as plain dataclasses, and the writers for datasets and training runs.

The GUI and the CLI use only these: they never see an ORM object or hold a Session. Each
function is one unit of work on the `Database` it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from core.data.dataset import Dataset
from core.errors import StateError
from core.federation.policy import recorded_policy
from core.federation.roles.ballots import scores_from_dict
from core.state.db import Database
from core.state.models import (
    Dataset as DatasetRow,
)
from core.state.models import (
    EpochRecord,
    EvaluationReport,
    Federation,
    FederationMember,
    ModelRecord,
    ModelStatus,
    Round,
    RoundStatus,
    RunStatus,
    TrainingRun,
    utcnow,
)

# -- records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HospitalView:
    hospital_id: str
    name: str
    account: str | None
    malicious: bool


@dataclass(frozen=True)
class FederationView:
    """A federation run as listed on the Federation page."""

    id: int
    name: str
    status: str
    config: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    final_accuracy: float | None
    message: str | None
    hospitals: tuple[HospitalView, ...]
    rounds_total: int
    rounds_finalized: int


@dataclass(frozen=True)
class VoteView:
    validator_id: str
    candidate_id: str
    accept: bool
    scores: dict[str, float]


@dataclass(frozen=True)
class ModelView:
    """A hospital's candidate in a round, the verdict on it and every vote it received."""

    hospital_id: str
    hospital_name: str
    malicious: bool
    model_hash: str
    share_commitments: tuple[str, ...]
    status: str
    accepts: int
    rejects: int
    registered: int
    unverified: bool
    votes: tuple[VoteView, ...]


@dataclass(frozen=True)
class FailureView:
    hospital_id: str
    stage: str
    message: str
    occurred_at: datetime


@dataclass(frozen=True)
class RoundView:
    """One round with its candidates, votes and failures, for the Verification page."""

    federation_id: int
    number: int
    status: str
    previous_hash: str | None
    global_hash: str | None
    policy: dict[str, Any]
    metrics: dict[str, float]
    durations: dict[str, float]
    contributors: tuple[str, ...]
    abort_reason: str | None
    started_at: datetime
    finished_at: datetime | None
    models: tuple[ModelView, ...]
    failures: tuple[FailureView, ...]

    @property
    def accuracy(self) -> float | None:
        value = self.metrics.get("accuracy")
        return None if value is None else float(value)

    def model(self, hospital_id: str) -> ModelView | None:
        return next((m for m in self.models if m.hospital_id == hospital_id), None)

    def policy_verdicts(self) -> dict[tuple[str, str], list[str]]:
        """(validator, candidate) -> what the round's policy makes of that validator's scores:
        its reasons to reject, empty when it accepts. Each validator is judged on its whole row,
        as it voted; a vote recorded without scores, or a round without a readable policy, has
        no entry (an attacker's vote may differ from its verdict: that is what the audit flags)."""
        policy = recorded_policy(self.policy)
        if policy is None:
            return {}
        rows: dict[str, dict[str, Any]] = {}
        for m in self.models:
            for vote in m.votes:
                if vote.scores:
                    rows.setdefault(vote.validator_id, {})[m.hospital_id] = vote.scores
        verdicts: dict[tuple[str, str], list[str]] = {}
        for validator, row in rows.items():
            try:
                judged = policy.rejections({c: scores_from_dict(s) for c, s in row.items()})
            except (KeyError, TypeError, ValueError):
                continue
            verdicts |= {(validator, c): reasons for c, reasons in judged.items()}
        return verdicts


@dataclass(frozen=True)
class SeriesPoint:
    round_number: int
    value: float


@dataclass(frozen=True)
class StatusCounts:
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    pending: int = 0

    @property
    def decided(self) -> int:
        return self.accepted + self.rejected

    @property
    def accepted_ratio(self) -> float | None:
        """Accepted over decided candidates; None before any decision."""
        return self.accepted / self.decided if self.decided else None


@dataclass(frozen=True)
class StatusRatio:
    """Candidates by status per round (every round), and overall (finalized rounds only)."""

    per_round: dict[int, StatusCounts]
    overall: StatusCounts


@dataclass(frozen=True)
class EpochView:
    epoch: int
    loss: float | None
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None


@dataclass(frozen=True)
class Evaluation:
    """An evaluation to record: accuracy, per-class precision/recall and the confusion matrix
    (rows: true class, columns: predicted class)."""

    class_names: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]
    accuracy: float
    precision: tuple[float, ...]
    recall: tuple[float, ...]

    @classmethod
    def from_confusion(cls, confusion: Sequence[Sequence[int]], class_names: Sequence[str]) -> Evaluation:
        """Derives accuracy, precision and recall from a confusion matrix (0 where undefined)."""
        k = len(class_names)
        matrix = tuple(tuple(int(v) for v in row) for row in confusion)
        if len(matrix) != k or any(len(row) != k for row in matrix):
            raise StateError(f"A confusion matrix for {k} classes must be {k}x{k}.")
        if any(v < 0 for row in matrix for v in row):
            raise StateError("A confusion matrix cannot hold negative counts.")
        total = sum(sum(row) for row in matrix)
        correct = sum(matrix[i][i] for i in range(k))
        predicted = [sum(matrix[r][c] for r in range(k)) for c in range(k)]
        actual = [sum(row) for row in matrix]
        return cls(
            class_names=tuple(class_names),
            confusion=matrix,
            accuracy=correct / total if total else 0.0,
            precision=tuple(matrix[i][i] / predicted[i] if predicted[i] else 0.0 for i in range(k)),
            recall=tuple(matrix[i][i] / actual[i] if actual[i] else 0.0 for i in range(k)),
        )


@dataclass(frozen=True)
class EvaluationView:
    id: int
    accuracy: float
    class_names: tuple[str, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    confusion: tuple[tuple[int, ...], ...]
    created_at: datetime
    dataset_id: int | None
    dataset_name: str | None
    run_id: int | None
    federation_id: int | None
    round_number: int | None


@dataclass(frozen=True)
class TrainingRunView:
    id: int
    dataset_id: int | None
    dataset_name: str | None
    architecture: str
    epochs: int
    batch_size: int
    config: dict[str, Any]
    status: str
    started_at: datetime
    finished_at: datetime | None
    metrics: dict[str, Any]
    model_hash: str | None
    message: str | None
    history: tuple[EpochView, ...] = field(default=())
    evaluation: EvaluationView | None = None


@dataclass(frozen=True)
class DatasetView:
    id: int
    name: str
    kind: str
    source: str
    samples: int
    classes: tuple[str, ...]
    class_counts: dict[str, int]
    input_shape: tuple[int, ...]
    loaded_at: datetime
    load_options: dict[str, Any] = field(default_factory=dict)


# -- conversions -----------------------------------------------------------------------------------


def _hospital_views(federation: Federation) -> tuple[HospitalView, ...]:
    return tuple(
        HospitalView(
            hospital_id=m.hospital_id,
            name=m.hospital.name,
            account=m.hospital.account,
            malicious=m.malicious,
        )
        for m in federation.members
    )


def _federation_view(federation: Federation) -> FederationView:
    return FederationView(
        id=federation.id,
        name=federation.name,
        status=federation.status.value,
        config=dict(federation.config),
        started_at=federation.started_at,
        finished_at=federation.finished_at,
        final_accuracy=federation.final_accuracy,
        message=federation.message,
        hospitals=_hospital_views(federation),
        rounds_total=len(federation.rounds),
        rounds_finalized=sum(1 for r in federation.rounds if r.status is RoundStatus.FINALIZED),
    )


def _round_view(round_: Round, hospitals: Mapping[str, HospitalView]) -> RoundView:
    votes_by_candidate: dict[str, list[VoteView]] = {}
    for vote in round_.votes:
        votes_by_candidate.setdefault(vote.candidate_id, []).append(
            VoteView(vote.validator_id, vote.candidate_id, vote.accept, dict(vote.scores))
        )
    models = []
    for record in round_.models:
        hospital = hospitals.get(record.hospital_id)
        models.append(
            ModelView(
                hospital_id=record.hospital_id,
                hospital_name=hospital.name if hospital else record.hospital_id,
                malicious=hospital.malicious if hospital else False,
                model_hash=record.model_hash,
                share_commitments=tuple(record.share_commitments),
                status=record.status.value,
                accepts=record.accepts,
                rejects=record.rejects,
                registered=record.registered,
                unverified=record.unverified,
                votes=tuple(votes_by_candidate.get(record.hospital_id, ())),
            )
        )
    return RoundView(
        federation_id=round_.federation_id,
        number=round_.number,
        status=round_.status.value,
        previous_hash=round_.previous_hash,
        global_hash=round_.global_hash,
        policy=dict(round_.policy),
        metrics={k: float(v) for k, v in round_.metrics.items()},
        durations={k: float(v) for k, v in round_.durations.items()},
        contributors=tuple(round_.contributors),
        abort_reason=round_.abort_reason,
        started_at=round_.started_at,
        finished_at=round_.finished_at,
        models=tuple(models),
        failures=tuple(
            FailureView(f.hospital_id, f.stage, f.message, f.occurred_at) for f in round_.failures
        ),
    )


def _evaluation_view(session: Session, report: EvaluationReport) -> EvaluationView:
    dataset_name = None
    if report.dataset_id is not None:
        dataset = session.get(DatasetRow, report.dataset_id)
        dataset_name = dataset.name if dataset else None
    federation_id = round_number = None
    if report.round_id is not None:
        round_ = session.get_one(Round, report.round_id)
        federation_id, round_number = round_.federation_id, round_.number
    return EvaluationView(
        id=report.id,
        accuracy=report.accuracy,
        class_names=tuple(report.class_names),
        precision=tuple(float(v) for v in report.precision),
        recall=tuple(float(v) for v in report.recall),
        confusion=tuple(tuple(int(v) for v in row) for row in report.confusion),
        created_at=report.created_at,
        dataset_id=report.dataset_id,
        dataset_name=dataset_name,
        run_id=report.run_id,
        federation_id=federation_id,
        round_number=round_number,
    )


def _run_view(session: Session, run: TrainingRun) -> TrainingRunView:
    report = session.scalars(
        select(EvaluationReport)
        .where(EvaluationReport.run_id == run.id)
        .order_by(EvaluationReport.created_at.desc(), EvaluationReport.id.desc())
    ).first()
    return TrainingRunView(
        id=run.id,
        dataset_id=run.dataset_id,
        dataset_name=run.dataset.name if run.dataset else None,
        architecture=run.architecture,
        epochs=run.epochs,
        batch_size=run.batch_size,
        config=dict(run.config),
        status=run.status.value,
        started_at=run.started_at,
        finished_at=run.finished_at,
        metrics=dict(run.metrics),
        model_hash=run.model_hash,
        message=run.message,
        history=tuple(
            EpochView(e.epoch, e.loss, e.accuracy, e.val_loss, e.val_accuracy) for e in run.history
        ),
        evaluation=_evaluation_view(session, report) if report is not None else None,
    )


def _dataset_view(row: DatasetRow) -> DatasetView:
    return DatasetView(
        id=row.id,
        name=row.name,
        kind=row.kind,
        source=row.source,
        samples=row.samples,
        classes=tuple(row.classes),
        class_counts={k: int(v) for k, v in row.class_counts.items()},
        input_shape=tuple(int(d) for d in row.input_shape),
        loaded_at=row.loaded_at,
        load_options=dict(row.load_options or {}),
    )


def _federation(session: Session, federation_id: int) -> Federation:
    federation = session.get(Federation, federation_id)
    if federation is None:
        raise StateError(f"There is no federation {federation_id} in the local database.")
    return federation


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# -- federations and rounds ----------------------------------------------------------------------------


def list_federations(db: Database) -> list[FederationView]:
    """Every federation run, newest first."""
    with db.session(read_only=True) as session:
        federations = session.scalars(
            select(Federation)
            .options(selectinload(Federation.members).selectinload(FederationMember.hospital))
            .options(selectinload(Federation.rounds))
            .order_by(Federation.started_at.desc(), Federation.id.desc())
        ).all()
        return [_federation_view(f) for f in federations]


def get_federation(db: Database, federation_id: int) -> FederationView:
    with db.session(read_only=True) as session:
        return _federation_view(_federation(session, federation_id))


def find_federation(db: Database, name: str) -> FederationView | None:
    """The federation recorded under `name` (a consortium this site follows), or None."""
    with db.session(read_only=True) as session:
        federation = session.scalars(
            select(Federation).where(Federation.name == name).order_by(Federation.id)
        ).first()
        return _federation_view(federation) if federation is not None else None


def list_rounds(db: Database, federation_id: int) -> list[RoundView]:
    """The rounds of a federation in order, each with per-model status, votes and scores."""
    with db.session(read_only=True) as session:
        federation = _federation(session, federation_id)
        hospitals = {h.hospital_id: h for h in _hospital_views(federation)}
        rounds = session.scalars(
            select(Round)
            .where(Round.federation_id == federation_id)
            .options(selectinload(Round.models), selectinload(Round.votes), selectinload(Round.failures))
            .order_by(Round.number)
        ).all()
        return [_round_view(r, hospitals) for r in rounds]


def get_round(db: Database, federation_id: int, round_number: int) -> RoundView:
    with db.session(read_only=True) as session:
        federation = _federation(session, federation_id)
        round_ = session.scalars(
            select(Round).where(Round.federation_id == federation_id, Round.number == round_number)
        ).one_or_none()
        if round_ is None:
            raise StateError(f"Federation {federation_id} has no round {round_number}.")
        return _round_view(round_, {h.hospital_id: h for h in _hospital_views(federation)})


def metric_series(db: Database, federation_id: int, key: str) -> list[SeriesPoint]:
    """A round metric over the finalized rounds, in round order (aborted rounds have none)."""
    with db.session(read_only=True) as session:
        _federation(session, federation_id)
        rows = session.execute(
            select(Round.number, Round.metrics)
            .where(Round.federation_id == federation_id, Round.status == RoundStatus.FINALIZED)
            .order_by(Round.number)
        ).all()
    return [SeriesPoint(number, float(metrics[key])) for number, metrics in rows if key in metrics]


def accuracy_series(db: Database, federation_id: int) -> list[SeriesPoint]:
    """Global-model accuracy after each finalized round, for the Federation page's plot."""
    return metric_series(db, federation_id, "accuracy")


def status_ratio(db: Database, federation_id: int) -> StatusRatio:
    """Accepted vs rejected (and failed, pending) candidates per round and overall."""
    with db.session(read_only=True) as session:
        _federation(session, federation_id)
        rows = session.execute(
            select(Round.number, Round.status, ModelRecord.status)
            .join(ModelRecord, ModelRecord.round_id == Round.id)
            .where(Round.federation_id == federation_id)
        ).all()
        numbers = session.scalars(select(Round.number).where(Round.federation_id == federation_id)).all()
    per_round: dict[int, dict[str, int]] = {n: {} for n in sorted(numbers)}
    overall: dict[str, int] = {}
    for number, round_status, model_status in rows:
        counts = per_round[number]
        counts[model_status.value] = counts.get(model_status.value, 0) + 1
        if round_status is RoundStatus.FINALIZED:
            overall[model_status.value] = overall.get(model_status.value, 0) + 1
    return StatusRatio(
        per_round={n: StatusCounts(**c) for n, c in per_round.items()},
        overall=StatusCounts(**overall),
    )


# -- datasets ----------------------------------------------------------------------------------------------


def record_dataset(db: Database, dataset: Dataset, load_options: Mapping[str, Any] | None = None) -> DatasetView:
    """Records a loaded dataset and how it was loaded; the same name and source again updates
    its row."""
    with db.session() as session:
        row = session.scalars(
            select(DatasetRow).where(DatasetRow.name == dataset.name, DatasetRow.source == dataset.source)
        ).one_or_none()
        if row is None:
            row = DatasetRow(name=dataset.name, source=dataset.source)
            session.add(row)
        row.kind = dataset.kind.value
        row.samples = dataset.num_samples
        row.classes = list(dataset.class_names)
        row.class_counts = dataset.class_counts()
        row.input_shape = list(dataset.input_shape)
        row.load_options = dict(load_options or {})
        row.loaded_at = utcnow()
        session.flush()
        return _dataset_view(row)


def list_datasets(db: Database) -> list[DatasetView]:
    """Datasets recorded on this machine, most recently loaded first."""
    with db.session(read_only=True) as session:
        rows = session.scalars(select(DatasetRow).order_by(DatasetRow.loaded_at.desc(), DatasetRow.id.desc()))
        return [_dataset_view(r) for r in rows]


# -- training runs ------------------------------------------------------------------------------------------


def start_training_run(
    db: Database,
    *,
    architecture: str,
    epochs: int,
    batch_size: int,
    dataset_id: int | None = None,
    config: Mapping[str, Any] | None = None,
) -> int:
    """Records a run as running and returns its id."""
    if epochs < 1 or batch_size < 1:
        raise StateError("A training run needs at least one epoch and a positive batch size.")
    with db.session() as session:
        if dataset_id is not None and session.get(DatasetRow, dataset_id) is None:
            raise StateError(f"There is no dataset {dataset_id} in the local database.")
        run = TrainingRun(
            dataset_id=dataset_id,
            architecture=architecture,
            epochs=epochs,
            batch_size=batch_size,
            config=dict(config or {}),
            status=RunStatus.RUNNING,
        )
        session.add(run)
        session.flush()
        return run.id


def _running(session: Session, run_id: int) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise StateError(f"There is no training run {run_id} in the local database.")
    if run.status is not RunStatus.RUNNING:
        raise StateError(f"Training run {run_id} is already {run.status.value}.")
    return run


def append_epoch(
    db: Database,
    run_id: int,
    epoch: int,
    loss: float | None,
    accuracy: float | None,
    val_loss: float | None = None,
    val_accuracy: float | None = None,
) -> None:
    """Records one finished epoch of a running run (non-finite values are stored as missing)."""
    with db.session() as session:
        _running(session, run_id)
        session.add(
            EpochRecord(
                run_id=run_id,
                epoch=epoch,
                loss=_finite(loss),
                accuracy=_finite(accuracy),
                val_loss=_finite(val_loss),
                val_accuracy=_finite(val_accuracy),
            )
        )


def _add_evaluation(
    session: Session,
    evaluation: Evaluation,
    *,
    run_id: int | None,
    round_id: int | None,
    dataset_id: int | None,
) -> EvaluationReport:
    report = EvaluationReport(
        run_id=run_id,
        round_id=round_id,
        dataset_id=dataset_id,
        accuracy=float(evaluation.accuracy),
        class_names=list(evaluation.class_names),
        precision=[float(v) for v in evaluation.precision],
        recall=[float(v) for v in evaluation.recall],
        confusion=[list(row) for row in evaluation.confusion],
    )
    session.add(report)
    session.flush()
    return report


def finish_training_run(
    db: Database,
    run_id: int,
    status: RunStatus | str,
    *,
    metrics: Mapping[str, Any] | None = None,
    model_hash: str | None = None,
    evaluation: Evaluation | None = None,
    message: str | None = None,
) -> TrainingRunView:
    """Closes a running run with its final metrics and, optionally, its evaluation report."""
    status = RunStatus(status)
    if status is RunStatus.RUNNING:
        raise StateError("A training run cannot be finished as 'running'.")
    with db.session() as session:
        run = _running(session, run_id)
        run.status = status
        run.finished_at = utcnow()
        run.metrics = {k: (_finite(v) if isinstance(v, float) else v) for k, v in (metrics or {}).items()}
        run.model_hash = model_hash
        run.message = message
        if evaluation is not None:
            _add_evaluation(session, evaluation, run_id=run.id, round_id=None, dataset_id=run.dataset_id)
        session.flush()
        return _run_view(session, run)


def record_evaluation(
    db: Database,
    evaluation: Evaluation,
    *,
    run_id: int | None = None,
    federation_id: int | None = None,
    round_number: int | None = None,
    dataset_id: int | None = None,
) -> EvaluationView:
    """Attaches an evaluation to a training run, or to a round (federation id and number)."""
    if (run_id is None) == (federation_id is None or round_number is None):
        raise StateError("An evaluation belongs to exactly one training run or one round.")
    with db.session() as session:
        round_id = None
        if run_id is not None:
            run = session.get(TrainingRun, run_id)
            if run is None:
                raise StateError(f"There is no training run {run_id} in the local database.")
            dataset_id = dataset_id if dataset_id is not None else run.dataset_id
        else:
            round_ = session.scalars(
                select(Round).where(Round.federation_id == federation_id, Round.number == round_number)
            ).one_or_none()
            if round_ is None:
                raise StateError(f"Federation {federation_id} has no round {round_number}.")
            round_id = round_.id
        report = _add_evaluation(session, evaluation, run_id=run_id, round_id=round_id, dataset_id=dataset_id)
        return _evaluation_view(session, report)


def list_training_runs(db: Database, dataset_id: int | None = None) -> list[TrainingRunView]:
    """Training runs with their history and latest evaluation, newest first."""
    with db.session(read_only=True) as session:
        query = (
            select(TrainingRun)
            .options(selectinload(TrainingRun.history), selectinload(TrainingRun.dataset))
            .order_by(TrainingRun.started_at.desc(), TrainingRun.id.desc())
        )
        if dataset_id is not None:
            query = query.where(TrainingRun.dataset_id == dataset_id)
        return [_run_view(session, run) for run in session.scalars(query)]


def get_training_run(db: Database, run_id: int) -> TrainingRunView:
    with db.session(read_only=True) as session:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise StateError(f"There is no training run {run_id} in the local database.")
        return _run_view(session, run)


def latest_evaluations(db: Database, source: str | None = None) -> dict[int, EvaluationView]:
    """The most recent evaluation of each dataset, by dataset id; `source` "local" keeps only
    local training runs' tests, "federated" only federations' global models."""
    if source not in (None, "local", "federated"):
        raise StateError(f"Unknown evaluation source '{source}'.")
    query = select(EvaluationReport).where(EvaluationReport.dataset_id.is_not(None))
    if source == "local":
        query = query.where(EvaluationReport.run_id.is_not(None))
    elif source == "federated":
        query = query.where(EvaluationReport.run_id.is_(None))
    with db.session(read_only=True) as session:
        reports = session.scalars(
            query.order_by(EvaluationReport.created_at.desc(), EvaluationReport.id.desc())
        ).all()
        latest: dict[int, EvaluationView] = {}
        for report in reports:
            assert report.dataset_id is not None
            if report.dataset_id not in latest:
                latest[report.dataset_id] = _evaluation_view(session, report)
        return latest


__all__ = [
    "DatasetView",
    "EpochView",
    "Evaluation",
    "EvaluationView",
    "FailureView",
    "FederationView",
    "HospitalView",
    "ModelStatus",
    "ModelView",
    "RoundView",
    "SeriesPoint",
    "StatusCounts",
    "StatusRatio",
    "TrainingRunView",
    "VoteView",
    "accuracy_series",
    "append_epoch",
    "finish_training_run",
    "get_federation",
    "get_round",
    "get_training_run",
    "latest_evaluations",
    "list_datasets",
    "list_federations",
    "list_rounds",
    "list_training_runs",
    "metric_series",
    "record_dataset",
    "record_evaluation",
    "start_training_run",
    "status_ratio",
]
