"""Sign flipping: the attacker submits its update reversed and enlarged, pushing the global model
up the loss surface (the sign-flipping attack of Li et al. 2019, "RSA"; the omniscient form
reverses the benign mean, as the full-knowledge attacks of Fang et al. 2020 do)."""

from __future__ import annotations

from numbers import Real

from core.attacks.base import Attack, AttackContext
from core.errors import ConfigError
from core.models.weights import Weights, add, scale


class SignFlipAttack(Attack):
    """Submits -factor x the honest update, or, when `omniscient`, -factor x the mean of the
    round's honest updates (its own and its peers').

    The default factor 4 makes the update outweigh three honest hospitals under FedAvg; with
    factor 1 the attacker only cancels its own contribution.
    """

    name = "sign_flip"

    def __init__(self, factor: float = 4.0, *, omniscient: bool = False) -> None:
        if isinstance(factor, bool) or not isinstance(factor, Real) or not factor > 0.0:
            raise ConfigError(f"Sign flipping: factor must be a positive number, got {factor!r}.")
        if not isinstance(omniscient, bool):
            raise ConfigError(f"Sign flipping: omniscient must be true or false, got {omniscient!r}.")
        self.factor: float = float(factor)
        self.omniscient: bool = omniscient

    def poison_update(self, ctx: AttackContext) -> Weights:
        base = ctx.honest_delta
        if self.omniscient and ctx.peer_deltas:
            total = ctx.honest_delta
            for peer in ctx.peer_deltas:
                total = add(total, peer)
            base = scale(total, 1.0 / (len(ctx.peer_deltas) + 1))
        return scale(base, -self.factor)
