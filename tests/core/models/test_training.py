"""Builders, local training with progress and cancel, and evaluation reports."""

from __future__ import annotations

import numpy as np
import pytest

from core.data.dataset import DataKind, Dataset
from core.errors import Cancelled, ModelError
from core.models.architecture import image_cnn_spec, spec_for, tabular_cnn_spec
from core.models.evaluation import ModelEvaluator, report_from_predictions
from core.models.keras_builder import build_keras_model
from core.models.training import TrainingConfig, initial_weights, train_model
from core.models.weights import weights_hash
from core.progress import CancelToken, Progress

SMPC_LAYERS = {"reshape", "conv2d", "relu", "avg_pool", "flatten", "dense"}


def separable_table(n: int = 200, features: int = 10, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, features)).astype(np.float32) + (y[:, None] * 1.5).astype(np.float32)
    return Dataset("t", DataKind.TABLE, x, y.astype(np.int64), ("neg", "pos"))


def test_architectures_use_only_layers_tf_encrypted_evaluates() -> None:
    for spec in (tabular_cnn_spec(30, 2), image_cnn_spec((28, 28, 1), 3)):
        assert {layer.kind for layer in spec.layers} <= SMPC_LAYERS
        model = build_keras_model(spec)
        assert model.output_shape == (None, spec.num_classes)


def test_spec_for_picks_by_kind_and_refuses_mismatch() -> None:
    table = separable_table()
    assert spec_for(table).architecture == "tabular_cnn"
    with pytest.raises(ModelError):
        spec_for(table, "image_cnn")
    with pytest.raises(ModelError):
        tabular_cnn_spec(2, 2)


def test_initial_weights_are_deterministic_per_seed() -> None:
    spec = tabular_cnn_spec(10, 2)
    assert weights_hash(initial_weights(spec, 3)) == weights_hash(initial_weights(spec, 3))
    assert weights_hash(initial_weights(spec, 3)) != weights_hash(initial_weights(spec, 4))


def test_training_learns_reports_progress_and_is_repeatable() -> None:
    data = separable_table()
    spec = spec_for(data)
    events: list[Progress] = []
    config = TrainingConfig(epochs=4, batch_size=16, learning_rate=0.01, seed=1)

    result = train_model(spec, data, config, validation=data, progress=events.append)
    again = train_model(spec, data, config)

    assert [m.epoch for m in result.history] == [1, 2, 3, 4]
    assert result.history[-1].accuracy > 0.85
    assert [e.fraction for e in events] == [0.25, 0.5, 0.75, 1.0]
    assert "val_accuracy" in events[-1].values
    assert weights_hash(result.weights) == weights_hash(again.weights)
    assert ModelEvaluator(spec).accuracy(result.weights, data) > 0.85


def test_cancel_stops_training_and_raises() -> None:
    data = separable_table()
    cancel = CancelToken()
    seen: list[Progress] = []

    def progress(event: Progress) -> None:
        seen.append(event)
        cancel.cancel()

    with pytest.raises(Cancelled):
        train_model(spec_for(data), data, TrainingConfig(epochs=50), progress=progress, cancel=cancel)
    assert len(seen) == 1  # stopped after the first epoch, not after fifty


def test_wrong_input_shape_is_refused() -> None:
    data = separable_table(features=10)
    with pytest.raises(ModelError, match="shape"):
        train_model(tabular_cnn_spec(12, 2), data, TrainingConfig(epochs=1))


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"learning_rate": 0.0}, {"learning_rate": 2.0}])
def test_bad_training_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ModelError):
        TrainingConfig(**kwargs)  # type: ignore[arg-type]


def test_evaluation_report_counts_per_class() -> None:
    report = report_from_predictions(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), ("a", "b"))
    assert report.accuracy == pytest.approx(0.6)
    assert report.confusion == ((1, 1), (1, 2))
    assert report.precision == pytest.approx((0.5, 2 / 3))
    assert report.recall == pytest.approx((0.5, 2 / 3))
    assert report_from_predictions(np.array([0]), np.array([0]), ("a", "b")).recall == (1.0, 0.0)


def test_wide_tables_pool_before_the_activation_and_narrow_ones_do_not() -> None:
    wide = [layer.kind for layer in tabular_cnn_spec(30, 2).layers]
    narrow = [layer.kind for layer in tabular_cnn_spec(6, 3).layers]
    assert wide[:4] == ["reshape", "conv2d", "avg_pool", "relu"]
    assert "avg_pool" not in narrow
    assert build_keras_model(tabular_cnn_spec(30, 2)).layers[2].output.shape[1:] == (7, 1, 8)
