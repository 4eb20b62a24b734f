"""Evaluation of a model on labelled data: accuracy, per-class precision/recall, confusion."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np

from core.data.dataset import Dataset
from core.models.architecture import ModelSpec
from core.models.keras_builder import build_keras_model
from core.models.weights import Weights, check_compatible


@dataclass(frozen=True)
class EvaluationReport:
    accuracy: float
    samples: int
    class_names: tuple[str, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows: true class, columns: predicted class

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["precision"] = list(self.precision)
        d["recall"] = list(self.recall)
        d["confusion"] = [list(r) for r in self.confusion]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> EvaluationReport:
        return EvaluationReport(
            accuracy=float(d["accuracy"]),
            samples=int(d["samples"]),
            class_names=tuple(d["class_names"]),
            precision=tuple(float(v) for v in d["precision"]),
            recall=tuple(float(v) for v in d["recall"]),
            confusion=tuple(tuple(int(v) for v in r) for r in d["confusion"]),
        )


def report_from_predictions(y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...]) -> EvaluationReport:
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true.astype(np.int64), y_pred.astype(np.int64)), 1)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    diag = np.diag(confusion)
    precision = np.divide(diag, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(diag, actual, out=np.zeros(k), where=actual > 0)
    total = int(confusion.sum())
    return EvaluationReport(
        accuracy=float(diag.sum() / total) if total else 0.0,
        samples=total,
        class_names=class_names,
        precision=tuple(float(v) for v in precision),
        recall=tuple(float(v) for v in recall),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
    )


class ModelEvaluator:
    """Keeps one Keras model per architecture and swaps weights in, so that scoring many
    candidates does not rebuild (and retrace) a model each time."""

    def __init__(self, spec: ModelSpec, batch_size: int = 512) -> None:
        self.spec = spec
        self._model: keras.Model = build_keras_model(spec)
        self._batch_size = batch_size

    def logits(self, weights: Weights, x: np.ndarray) -> np.ndarray:
        check_compatible(self._model.get_weights(), weights)
        self._model.set_weights(weights)
        outputs = [
            np.asarray(self._model(x[i : i + self._batch_size], training=False))
            for i in range(0, x.shape[0], self._batch_size)
        ]
        return np.concatenate(outputs, axis=0)

    def predict(self, weights: Weights, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(weights, x), axis=1)

    def correct(self, weights: Weights, data: Dataset) -> int:
        return int(np.sum(self.predict(weights, data.x) == data.y))

    def accuracy(self, weights: Weights, data: Dataset) -> float:
        return self.correct(weights, data) / data.num_samples

    def evaluate(self, weights: Weights, data: Dataset) -> EvaluationReport:
        return report_from_predictions(data.y, self.predict(weights, data.x), data.class_names)
