"""Backdoor (trigger) poisoning (Gu et al. 2017, "BadNets"; in federated learning Bagdasaryan et
al. 2020, "How To Backdoor Federated Learning"): the model learns to answer `target_label`
whenever a trigger is present, while staying accurate on clean inputs, so accuracy checks miss it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from numbers import Integral, Real

import numpy as np

from core.attacks.base import Attack, AttackContext
from core.data.dataset import DataKind, Dataset
from core.errors import ConfigError, DataError
from core.models.weights import Weights, scale


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ConfigError(f"Backdoor: {name} must be a positive integer, got {value!r}.")
    return int(value)


class BackdoorAttack(Attack):
    """Stamps a trigger on a `fraction` of the attacker's samples and relabels them `target_label`.

    Images: a `trigger_size` x `trigger_size` square of `trigger_value` (1.0 = white) in the
    bottom-right corner, on every channel. Tables (z-scored by their loader): the
    `trigger_features` (default: the first three) set to `feature_value` (default +4 standard
    deviations, a combination clean patients essentially never show). The submitted update is
    the honest one times `boost`: 1 is the stealthy attacker, the number of hospitals is
    Bagdasaryan et al.'s model replacement.
    """

    name = "backdoor"

    def __init__(
        self,
        target_label: int = 0,
        fraction: float = 0.3,
        *,
        trigger_size: int = 3,
        trigger_value: float = 1.0,
        trigger_features: Sequence[int] | None = None,
        feature_value: float = 4.0,
        boost: float = 1.0,
    ) -> None:
        if isinstance(target_label, bool) or not isinstance(target_label, Integral) or target_label < 0:
            raise ConfigError(f"Backdoor: target_label must be a class index >= 0, got {target_label!r}.")
        if not _is_real(fraction) or not 0.0 < fraction <= 1.0:
            raise ConfigError(f"Backdoor: fraction must lie in (0, 1], got {fraction!r}.")
        if not _is_real(trigger_value) or not 0.0 <= trigger_value <= 1.0:
            raise ConfigError(
                f"Backdoor: trigger_value must lie in [0, 1] like the image pixels, got {trigger_value!r}."
            )
        if not _is_real(feature_value) or not np.isfinite(feature_value):
            raise ConfigError(f"Backdoor: feature_value must be a finite number, got {feature_value!r}.")
        if not _is_real(boost) or not boost > 0.0:
            raise ConfigError(f"Backdoor: boost must be a positive number, got {boost!r}.")
        features: tuple[int, ...] | None = None
        if trigger_features is not None:
            if isinstance(trigger_features, str | bytes) or not isinstance(trigger_features, Sequence):
                raise ConfigError(
                    f"Backdoor: trigger_features must be a list of column indices, got {trigger_features!r}."
                )
            if not trigger_features or any(
                isinstance(f, bool) or not isinstance(f, Integral) or f < 0 for f in trigger_features
            ):
                raise ConfigError(
                    f"Backdoor: trigger_features must be column indices >= 0, got {list(trigger_features)!r}."
                )
            features = tuple(int(f) for f in trigger_features)
            if len(set(features)) != len(features):
                raise ConfigError(f"Backdoor: trigger_features repeats a column: {list(features)!r}.")
        self.target_label: int = int(target_label)
        self.fraction: float = float(fraction)
        self.trigger_size: int = _positive_int("trigger_size", trigger_size)
        self.trigger_value: float = float(trigger_value)
        self.trigger_features: tuple[int, ...] | None = features
        self.feature_value: float = float(feature_value)
        self.boost: float = float(boost)

    def _features(self, num_features: int) -> list[int]:
        features = (
            list(self.trigger_features)
            if self.trigger_features is not None
            else list(range(min(3, num_features)))
        )
        if max(features) >= num_features:
            raise ConfigError(
                f"Backdoor: trigger feature {max(features)} does not exist; the table has "
                f"{num_features} columns (0..{num_features - 1})."
            )
        return features

    def apply_trigger(self, x: np.ndarray, kind: DataKind | str) -> np.ndarray:
        """A copy of the batch `x` with the trigger stamped on every sample."""
        kind = DataKind(kind)
        out = np.array(x, dtype=np.float32, copy=True)
        if kind is DataKind.IMAGE:
            if out.ndim != 4:
                raise DataError(
                    f"Backdoor: images must have shape (n, height, width, channels), got {out.shape}."
                )
            s = self.trigger_size
            if s > min(out.shape[1], out.shape[2]):
                raise ConfigError(
                    f"Backdoor: a {s}x{s} trigger does not fit {out.shape[1]}x{out.shape[2]} images."
                )
            out[:, -s:, -s:, :] = self.trigger_value
        else:
            if out.ndim != 2:
                raise DataError(f"Backdoor: table rows must have shape (n, features), got {out.shape}.")
            out[:, self._features(out.shape[1])] = self.feature_value
        return out

    def has_trigger(self, x: np.ndarray, kind: DataKind | str) -> np.ndarray:
        """A boolean per sample of `x`: does it carry this attack's trigger?"""
        kind = DataKind(kind)
        x = np.asarray(x, dtype=np.float32)
        if kind is DataKind.IMAGE:
            s = self.trigger_size
            patch = x[:, -s:, -s:, :].reshape(x.shape[0], -1)
            return np.all(np.isclose(patch, self.trigger_value), axis=1)
        cols = x[:, self._features(x.shape[1])]
        return np.all(np.isclose(cols, self.feature_value), axis=1)

    def _check_target(self, data: Dataset) -> None:
        if self.target_label >= data.num_classes:
            raise ConfigError(
                f"Backdoor: target_label {self.target_label} does not exist; dataset '{data.name}' "
                f"has {data.num_classes} classes (0..{data.num_classes - 1})."
            )

    def poison_data(self, data: Dataset, rng: np.random.Generator) -> Dataset:
        self._check_target(data)
        count = round(self.fraction * data.num_samples)
        chosen = np.sort(rng.choice(data.num_samples, size=count, replace=False))
        x = data.x.copy()
        y = data.y.copy()
        if count:
            x[chosen] = self.apply_trigger(data.x[chosen], data.kind)
            y[chosen] = self.target_label
        return replace(data, x=x, y=y)

    def backdoor_test_set(self, data: Dataset) -> Dataset:
        """The samples of `data` not of the target class, triggered and labelled with the target:
        a model's accuracy on it is the attack success rate."""
        self._check_target(data)
        keep = np.flatnonzero(data.y != self.target_label)
        if keep.size == 0:
            raise DataError(
                f"Dataset '{data.name}' has only samples of the backdoor's target class; "
                "the attack success rate needs others."
            )
        return replace(
            data,
            name=f"{data.name} (triggered)",
            x=self.apply_trigger(data.x[keep], data.kind),
            y=np.full(keep.size, self.target_label, dtype=data.y.dtype),
        )

    def poison_update(self, ctx: AttackContext) -> Weights:
        if self.boost == 1.0:
            return ctx.honest_delta
        return scale(ctx.honest_delta, self.boost)
