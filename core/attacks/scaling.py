"""Model replacement (Bagdasaryan et al. 2020, "How To Backdoor Federated Learning"): the
attacker trains a poisoned model and boosts its update so that averaging with the others leaves
roughly the attacker's model in place of the global one."""

from __future__ import annotations

from numbers import Real

import numpy as np

from core.attacks.base import Attack, AttackContext
from core.attacks.label_flip import LabelFlipAttack
from core.data.dataset import Dataset
from core.errors import ConfigError
from core.models.weights import Weights, scale


class ScalingAttack(Attack):
    """Submits factor x its update; factor defaults to the number of hospitals, the boost that
    makes FedAvg over equally sized hospitals return the attacker's model. The model it boosts
    is trained on label-flipped data (`flip_labels`, the replacement of the paper) or, with
    `flip_labels=False`, honestly: then the boost only overshoots, which hurts far less."""

    name = "scaling"

    def __init__(self, factor: float | None = None, *, flip_labels: bool = True) -> None:
        if factor is not None and (
            isinstance(factor, bool) or not isinstance(factor, Real) or not factor > 0.0
        ):
            raise ConfigError(f"Scaling: factor must be a positive number, got {factor!r}.")
        self.factor: float | None = None if factor is None else float(factor)
        self.flip_labels = bool(flip_labels)
        self._flip = LabelFlipAttack()

    def poison_data(self, data: Dataset, rng: np.random.Generator) -> Dataset:
        return self._flip.poison_data(data, rng) if self.flip_labels else data

    def effective_factor(self, num_hospitals: int) -> float:
        """The boost applied in a federation of `num_hospitals` hospitals."""
        if self.factor is not None:
            return self.factor
        if num_hospitals < 1:
            raise ConfigError(
                f"Scaling: the federation must have at least one hospital, got {num_hospitals}."
            )
        return float(num_hospitals)

    def poison_update(self, ctx: AttackContext) -> Weights:
        return scale(ctx.honest_delta, self.effective_factor(ctx.num_hospitals))
