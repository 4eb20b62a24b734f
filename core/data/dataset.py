"""The in-memory dataset every loader produces and every trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from core.errors import DataError


class DataKind(str, Enum):
    TABLE = "table"  # x: (n, features) float32
    IMAGE = "image"  # x: (n, height, width, channels) float32 in [0, 1]


@dataclass(frozen=True)
class Dataset:
    """Features and integer labels 0..k-1 with the names of the classes and features.

    `x` is float32 and already scaled for training (tables are z-scored by their loader,
    images are in [0, 1]); `y` is int64.
    """

    name: str
    kind: DataKind
    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...] = ()
    source: str = ""
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"Dataset '{self.name}' has {self.x.shape[0]} samples but {self.y.shape[0]} labels."
            )
        if self.x.shape[0] == 0:
            raise DataError(f"Dataset '{self.name}' is empty.")
        expected_rank = 2 if self.kind is DataKind.TABLE else 4
        if self.x.ndim != expected_rank:
            raise DataError(
                f"Dataset '{self.name}' has features of shape {self.x.shape}; "
                f"a {self.kind.value} dataset needs rank {expected_rank}."
            )
        if not np.all(np.isfinite(self.x)):
            raise DataError(f"Dataset '{self.name}' contains NaN or infinite feature values.")
        if self.y.size and (self.y.min() < 0 or self.y.max() >= len(self.class_names)):
            raise DataError(f"Dataset '{self.name}' has labels outside 0..{len(self.class_names) - 1}.")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.y, minlength=self.num_classes)
        return {name: int(c) for name, c in zip(self.class_names, counts, strict=True)}

    def subset(self, indices: np.ndarray, name: str | None = None) -> Dataset:
        return Dataset(
            name=name or self.name,
            kind=self.kind,
            x=self.x[indices],
            y=self.y[indices],
            class_names=self.class_names,
            feature_names=self.feature_names,
            source=self.source,
            notes=self.notes,
        )

    def require_trainable(self) -> None:
        """Refuses data that cannot train a classifier (fewer than two classes present)."""
        present = int(np.count_nonzero(np.bincount(self.y, minlength=self.num_classes)))
        if present < 2:
            raise DataError(
                f"Dataset '{self.name}' has only one class present; a classifier needs at least two."
            )
