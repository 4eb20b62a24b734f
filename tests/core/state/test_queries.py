"""Datasets, training runs and evaluations: the writers and the reads the GUI draws from."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.data.dataset import DataKind, Dataset
from core.errors import StateError
from core.models.weights import weights_hash
from core.state import queries
from core.state.db import Database
from core.state.queries import Evaluation
from core.state.recorder import SqliteRecorder
from tests.core.state.conftest import HOSPITALS, POLICY, make_round, make_weights


def small_table(name: str = "heart", source: str = "/data/heart.csv", n: int = 30) -> Dataset:
    rng = np.random.default_rng(3)
    return Dataset(
        name=name,
        kind=DataKind.TABLE,
        x=rng.normal(size=(n, 5)).astype(np.float32),
        y=np.arange(n, dtype=np.int64) % 2,
        class_names=("healthy", "disease"),
        feature_names=tuple(f"f{i}" for i in range(5)),
        source=source,
    )


def test_recorded_dataset_is_listed_and_reloading_updates_it(db: Database) -> None:
    first = queries.record_dataset(db, small_table(n=30))
    again = queries.record_dataset(db, small_table(n=40))
    other = queries.record_dataset(db, small_table(name="pneumonia", source="/data/xray"))

    assert again.id == first.id
    listed = queries.list_datasets(db)
    assert [d.name for d in listed] == ["pneumonia", "heart"]  # most recently loaded first
    heart = listed[1]
    assert heart.samples == 40
    assert heart.kind == "table"
    assert heart.classes == ("healthy", "disease")
    assert heart.class_counts == {"healthy": 20, "disease": 20}
    assert heart.input_shape == (5,)
    assert other.id != first.id


def test_training_run_with_history_and_evaluation(db: Database) -> None:
    dataset = queries.record_dataset(db, small_table())
    run_id = queries.start_training_run(
        db, architecture="tabular_cnn", epochs=3, batch_size=16, dataset_id=dataset.id, config={"lr": 0.01}
    )
    assert queries.get_training_run(db, run_id).status == "running"
    for epoch, (loss, acc) in enumerate([(0.9, 0.55), (0.6, 0.7), (0.4, 0.82)], start=1):
        queries.append_epoch(db, run_id, epoch, loss, acc, val_loss=loss + 0.1, val_accuracy=acc - 0.05)
    evaluation = Evaluation.from_confusion([[8, 2], [1, 9]], ("healthy", "disease"))

    finished = queries.finish_training_run(
        db, run_id, "completed", metrics={"accuracy": 0.85}, model_hash="d" * 64, evaluation=evaluation
    )

    assert finished.status == "completed" and finished.finished_at is not None
    assert finished.dataset_name == "heart"
    assert [e.epoch for e in finished.history] == [1, 2, 3]
    assert finished.history[-1].val_accuracy == pytest.approx(0.77)
    assert finished.evaluation is not None
    assert finished.evaluation.accuracy == pytest.approx(0.85)
    assert finished.evaluation.precision == pytest.approx((8 / 9, 9 / 11))
    assert finished.evaluation.recall == pytest.approx((0.8, 0.9))
    assert finished.evaluation.confusion == ((8, 2), (1, 9))
    (listed,) = queries.list_training_runs(db)
    assert listed == finished
    assert queries.latest_evaluations(db)[dataset.id].id == finished.evaluation.id


def test_finished_run_takes_no_more_epochs(db: Database) -> None:
    run_id = queries.start_training_run(db, architecture="tabular_cnn", epochs=2, batch_size=8)
    queries.finish_training_run(db, run_id, "cancelled", message="stopped by the user")

    with pytest.raises(StateError, match="already cancelled"):
        queries.append_epoch(db, run_id, 2, 0.5, 0.5)
    with pytest.raises(StateError, match="already cancelled"):
        queries.finish_training_run(db, run_id, "completed")
    assert queries.get_training_run(db, run_id).message == "stopped by the user"


def test_duplicate_epoch_is_refused_without_changing_history(db: Database) -> None:
    run_id = queries.start_training_run(db, architecture="tabular_cnn", epochs=2, batch_size=8)
    queries.append_epoch(db, run_id, 1, 0.7, 0.6)

    with pytest.raises(StateError):
        queries.append_epoch(db, run_id, 1, 0.1, 0.9)

    (epoch,) = queries.get_training_run(db, run_id).history
    assert (epoch.loss, epoch.accuracy) == (pytest.approx(0.7), pytest.approx(0.6))


def test_diverging_epoch_is_stored_as_missing_values(db: Database) -> None:
    run_id = queries.start_training_run(db, architecture="tabular_cnn", epochs=1, batch_size=8)

    queries.append_epoch(db, run_id, 1, math.nan, 0.5, val_loss=math.inf)

    (epoch,) = queries.get_training_run(db, run_id).history
    assert epoch.loss is None and epoch.val_loss is None and epoch.accuracy == pytest.approx(0.5)


def test_latest_evaluation_per_dataset_includes_rounds(db: Database) -> None:
    dataset = queries.record_dataset(db, small_table())
    run_id = queries.start_training_run(
        db, architecture="tabular_cnn", epochs=1, batch_size=8, dataset_id=dataset.id
    )
    queries.record_evaluation(
        db, Evaluation.from_confusion([[5, 5], [5, 5]], ("healthy", "disease")), run_id=run_id
    )
    recorder = SqliteRecorder(db)
    recorder.register_hospitals(HOSPITALS)
    previous = make_weights(1000)
    outcome, _ = make_round(1, previous)
    recorder.open_round(1, weights_hash(previous), previous, POLICY)
    recorder.finalize_round(outcome)

    view = queries.record_evaluation(
        db,
        Evaluation.from_confusion([[9, 1], [0, 10]], ("healthy", "disease")),
        federation_id=recorder.federation_id,
        round_number=1,
        dataset_id=dataset.id,
    )

    latest = queries.latest_evaluations(db)[dataset.id]
    assert latest == view
    assert (latest.federation_id, latest.round_number, latest.run_id) == (recorder.federation_id, 1, None)
    assert latest.accuracy == pytest.approx(0.95)
    assert latest.dataset_name == "heart"
    # By source: the local run's test stays reachable beside the newer federated one.
    assert queries.latest_evaluations(db, "federated")[dataset.id] == view
    local = queries.latest_evaluations(db, "local")[dataset.id]
    assert local.run_id == run_id and local.accuracy == pytest.approx(0.5)
    with pytest.raises(StateError):
        queries.latest_evaluations(db, "elsewhere")


def test_evaluation_needs_exactly_one_owner(db: Database) -> None:
    evaluation = Evaluation.from_confusion([[1, 0], [0, 1]], ("a", "b"))
    with pytest.raises(StateError, match="exactly one"):
        queries.record_evaluation(db, evaluation)
    with pytest.raises(StateError, match="no training run 7"):
        queries.record_evaluation(db, evaluation, run_id=7)


def test_confusion_matrix_must_be_square_for_the_classes() -> None:
    with pytest.raises(StateError, match="2x2"):
        Evaluation.from_confusion([[1, 2, 3], [4, 5, 6]], ("a", "b"))


def test_training_run_on_unknown_dataset_is_refused(db: Database) -> None:
    with pytest.raises(StateError, match="no dataset 3"):
        queries.start_training_run(db, architecture="tabular_cnn", epochs=1, batch_size=8, dataset_id=3)
    assert queries.list_training_runs(db) == []


def test_reads_of_missing_things_raise_state_error(db: Database) -> None:
    with pytest.raises(StateError):
        queries.get_federation(db, 1)
    with pytest.raises(StateError):
        queries.list_rounds(db, 1)
    with pytest.raises(StateError):
        queries.get_training_run(db, 1)
    assert queries.list_federations(db) == []

