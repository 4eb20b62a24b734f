"""Label flipping (Tolpegin et al. 2020, "Data Poisoning Attacks Against Federated Learning
Systems"): the attacker trains honestly on data whose labels it has remapped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from numbers import Integral, Real

import numpy as np

from core.attacks.base import Attack
from core.data.dataset import Dataset
from core.errors import ConfigError


class LabelFlipAttack(Attack):
    """Remaps the labels of a `fraction` of the samples the remapping changes.

    Default mapping: class y becomes k-1-y (every class is confused with its mirror). A
    `source`/`target` pair flips only that class (Tolpegin et al.'s targeted setting); a
    `mapping` gives any partial remapping, classes not named keep their label.
    """

    name = "label_flip"

    def __init__(
        self,
        fraction: float = 1.0,
        *,
        mapping: Mapping[int, int] | None = None,
        source: int | None = None,
        target: int | None = None,
    ) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0.0 < fraction <= 1.0:
            raise ConfigError(f"Label flipping: fraction must lie in (0, 1], got {fraction!r}.")
        if (source is None) != (target is None):
            raise ConfigError("Label flipping: give both source and target classes, or neither.")
        if mapping is not None and source is not None:
            raise ConfigError("Label flipping: give either a mapping or a source/target pair, not both.")
        if source is not None:
            mapping = {source: target}  # type: ignore[dict-item]
        if mapping is not None:
            mapping = dict(mapping)
            if not mapping:
                raise ConfigError("Label flipping: the label mapping is empty.")
            for k, v in mapping.items():
                for label in (k, v):
                    if isinstance(label, bool) or not isinstance(label, Integral) or label < 0:
                        raise ConfigError(
                            f"Label flipping: class labels must be integers >= 0, got {label!r}."
                        )
            if all(k == v for k, v in mapping.items()):
                raise ConfigError("Label flipping: the label mapping changes no class.")
            mapping = {int(k): int(v) for k, v in mapping.items()}
        self.fraction: float = float(fraction)
        self.mapping: dict[int, int] | None = mapping

    def label_map(self, num_classes: int) -> np.ndarray:
        """The remapping as a lookup table: `table[y]` is the label class y is trained as."""
        table = np.arange(num_classes, dtype=np.int64)
        if self.mapping is None:
            return table[::-1].copy()
        for k, v in self.mapping.items():
            if k >= num_classes or v >= num_classes:
                raise ConfigError(
                    f"Label flipping maps class {k} to {v}, but the dataset has only "
                    f"{num_classes} classes (0..{num_classes - 1})."
                )
            table[k] = v
        return table

    def poison_data(self, data: Dataset, rng: np.random.Generator) -> Dataset:
        table = self.label_map(data.num_classes)
        flipped = table[data.y]
        eligible = np.flatnonzero(flipped != data.y)
        count = round(self.fraction * eligible.size)
        chosen = rng.choice(eligible, size=count, replace=False) if count else eligible[:0]
        y = data.y.copy()
        y[chosen] = flipped[chosen]
        return replace(data, y=y)
