"""Use cases: train a model on this hospital's data, and test a federation's global model.

Both write what they produce to SQLite as it happens (the run, each epoch, the evaluation), so
the Training and Verification pages, and a restart, show exactly what was recorded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from core.data.partition import partition
from core.errors import Cancelled, CoreError, StateError
from core.federation.policy import VerificationPolicy
from core.models.architecture import spec_for
from core.models.weights import weights_hash
from core.progress import CancelToken, Progress, ProgressSink, Stage, ignore_progress
from core.services.datasets import LoadRequest, load_and_record, load_recorded
from core.services.recovery import process_marker
from core.settings import Settings
from core.state.blobs import BlobStore
from core.state.db import Database
from core.state.models import RunStatus
from core.state.queries import (
    Evaluation,
    EvaluationView,
    FederationView,
    TrainingRunView,
    append_epoch,
    finish_training_run,
    get_federation,
    latest_evaluations,
    list_federations,
    list_rounds,
    record_evaluation,
    start_training_run,
)

if TYPE_CHECKING:
    from core.services.simulation import SimulationConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRequest:
    """A local training run: which recorded dataset, which network and its settings."""

    dataset_id: int
    architecture: str | None = None  # None: the default for the dataset's kind
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.005
    seed: int = 0


def train_locally(db: Database, request: TrainingRequest,
                  progress: ProgressSink = ignore_progress, cancel: CancelToken | None = None) -> TrainingRunView:
    """Trains on 60% of the dataset, validates each epoch on 20%, tests on the held-out 20%.

    The run is recorded before the first epoch and closed as completed, cancelled or failed,
    so no run is left "running" by this function.
    """
    # Keras loads here, not at import: the app's window opens without waiting for TensorFlow.
    from core.models.evaluation import ModelEvaluator
    from core.models.training import TrainingConfig, train_model

    cancel = cancel or CancelToken()
    config = TrainingConfig(epochs=request.epochs, batch_size=request.batch_size,
                            learning_rate=request.learning_rate, seed=request.seed)
    progress(Progress(Stage.LOADING, "loading the dataset"))
    loaded = load_recorded(db, request.dataset_id)
    dataset = loaded.dataset
    dataset.require_trainable()
    spec = spec_for(dataset, request.architecture)
    split = partition(dataset, 1, seed=request.seed)
    local = split.hospitals[0]
    run_id = start_training_run(
        db, architecture=spec.architecture, epochs=config.epochs, batch_size=config.batch_size,
        dataset_id=request.dataset_id,
        config={"learning_rate": config.learning_rate, "seed": config.seed, "model": spec.describe(),
                "train_samples": local.train.num_samples, "validation_samples": local.validation.num_samples,
                "test_samples": split.test.num_samples, "process": process_marker()},
    )

    def record_epoch(event: Progress) -> None:
        if event.values:
            epoch = round((event.fraction or 0.0) * config.epochs)
            append_epoch(db, run_id, epoch, event.values.get("loss", float("nan")),
                         event.values.get("accuracy", float("nan")),
                         event.values.get("val_loss"), event.values.get("val_accuracy"))
        progress(event)

    try:
        result = train_model(spec, local.train, config, validation=local.validation,
                             progress=record_epoch, cancel=cancel)
        progress(Progress(Stage.EVALUATION, "testing on the held-out data"))
        report = ModelEvaluator(spec).evaluate(result.weights, split.test)
    except Cancelled:
        finish_training_run(db, run_id, RunStatus.CANCELLED, message="Cancelled by the user.")
        raise
    except CoreError as exc:
        finish_training_run(db, run_id, RunStatus.FAILED, message=exc.user_message)
        raise
    except BaseException as exc:
        finish_training_run(db, run_id, RunStatus.FAILED, message=f"Unexpected error: {exc}")
        raise
    last = result.history[-1] if result.history else None
    metrics = {"test_accuracy": report.accuracy}
    if last is not None:
        metrics.update(loss=last.loss, accuracy=last.accuracy)
        if last.val_loss is not None and last.val_accuracy is not None:
            metrics.update(val_loss=last.val_loss, val_accuracy=last.val_accuracy)
    view = finish_training_run(db, run_id, RunStatus.COMPLETED, metrics=metrics,
                               model_hash=weights_hash(result.weights),
                               evaluation=Evaluation.from_confusion(report.confusion, report.class_names))
    progress(Progress(Stage.DONE, f"test accuracy {report.accuracy:.3f}", fraction=1.0))
    return view


def evaluate_federation(db: Database, settings: Settings, federation_id: int) -> EvaluationView | None:
    """Tests a federation's last global model on the run's held-out test set and records it.

    None when no round finalised. The test set is rebuilt from the run's configuration (same
    dataset, hospitals and seed), exactly the set the rounds' accuracy was measured on.
    """
    from core.models.evaluation import ModelEvaluator

    federation = get_federation(db, federation_id)
    finalized = [r for r in list_rounds(db, federation_id) if r.status == "finalized" and r.global_hash]
    if not finalized:
        return None
    last = finalized[-1]
    config = federation.config
    request = LoadRequest(str(config["dataset"]), label_column=config.get("label_column"),
                          drop_columns=tuple(config.get("drop_columns") or ()))
    loaded = load_and_record(db, request)
    dataset = loaded.dataset
    split = partition(dataset, int(config["hospitals"]), scheme=config.get("partition", "iid"),
                      alpha=float(config.get("alpha", 0.5)), seed=int(config.get("seed", 0)))
    spec = spec_for(dataset, config.get("architecture"))
    assert last.global_hash is not None
    global_weights = BlobStore(settings.blob_dir).get_weights(last.global_hash)
    report = ModelEvaluator(spec).evaluate(global_weights, split.test)
    return record_evaluation(db, Evaluation.from_confusion(report.confusion, report.class_names),
                             federation_id=federation_id, round_number=last.number, dataset_id=loaded.view.id)


def _simulation_config(values: dict[str, Any], **changes: Any) -> SimulationConfig:
    """A run's recorded configuration as a `SimulationConfig`, with `changes` applied."""
    from core.services.simulation import SimulationConfig  # imports Keras: only when running

    known = {f.name for f in fields(SimulationConfig)}
    config = {k: v for k, v in values.items() if k in known}
    config["drop_columns"] = tuple(config.get("drop_columns") or ())
    config["measure_triggers"] = tuple(config.get("measure_triggers") or ())
    if isinstance(config.get("policy"), dict):
        config["policy"] = VerificationPolicy.from_record(config["policy"])
    config.update(changes)
    return SimulationConfig(**config)


def is_comparison_of(candidate: FederationView, federation: FederationView) -> bool:
    """Whether `candidate` is the unprotected twin of `federation`: same run, no verification."""
    mine = {k: v for k, v in federation.config.items() if k not in _COMPARISON_KEYS}
    theirs = {k: v for k, v in candidate.config.items() if k not in _COMPARISON_KEYS}
    return (candidate.id != federation.id and candidate.config.get("verifier") == "none"
            and not candidate.config.get("secure") and mine == theirs and candidate.rounds_finalized > 0)


_COMPARISON_KEYS = {"verifier", "secure", "policy", "ledger", "rpc_url"}


def find_comparison(db: Database, federation_id: int) -> FederationView | None:
    """The newest recorded unprotected-FedAvg run of the same configuration, if any."""
    federations = list_federations(db)
    federation = next((f for f in federations if f.id == federation_id), None)
    if federation is None:
        raise StateError(f"There is no federation {federation_id} in the local database.")
    return next((f for f in federations if is_comparison_of(f, federation)), None)


def run_comparison(db: Database, settings: Settings, federation_id: int,
                   progress: ProgressSink = ignore_progress, cancel: CancelToken | None = None) -> int:
    """Runs the same federation with no verification (plain FedAvg of every update) and records it.

    It goes on the ledger like any run, so the audit finds every local round there. Returns the
    comparison run's federation id.
    """
    from core.services.simulation import run_simulation

    federation = get_federation(db, federation_id)
    config = _simulation_config(federation.config, verifier="none", secure=False, aggregator="fedavg")
    report = run_simulation(config, settings, progress, cancel)
    # Not tested on its own: a what-if beside the real run, not a model anyone should use.
    return int(report["federation_id"])


@dataclass(frozen=True)
class TestedModels:
    """One dataset's latest tested models: trained here alone, and the federation's global model."""

    dataset_id: int
    dataset_name: str
    local: EvaluationView | None
    federated: EvaluationView | None


def tested_models(db: Database) -> list[TestedModels]:
    """Per dataset, the latest local-training evaluation beside the latest federated one."""
    local = latest_evaluations(db, "local")
    federated = latest_evaluations(db, "federated")
    out = []
    for dataset_id in sorted(set(local) | set(federated)):
        view = local.get(dataset_id) or federated[dataset_id]
        out.append(TestedModels(dataset_id, view.dataset_name or f"dataset {dataset_id}",
                                local.get(dataset_id), federated.get(dataset_id)))
    return out
