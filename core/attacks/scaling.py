"""Model replacement (Bagdasaryan et al. 2020, "How To Backdoor Federated Learning"): the
attacker boosts its update so that averaging with the others leaves roughly its own model."""

from __future__ import annotations

from numbers import Real

from core.attacks.base import Attack, AttackContext
from core.errors import ConfigError
from core.models.weights import Weights, scale


class ScalingAttack(Attack):
    """Submits factor x the honest update; factor defaults to the number of hospitals, the
    boost that makes FedAvg over equally sized hospitals return the attacker's model."""

    name = "scaling"

    def __init__(self, factor: float | None = None) -> None:
        if factor is not None and (
            isinstance(factor, bool) or not isinstance(factor, Real) or not factor > 0.0
        ):
            raise ConfigError(f"Scaling: factor must be a positive number, got {factor!r}.")
        self.factor: float | None = None if factor is None else float(factor)

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
