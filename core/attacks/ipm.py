"""Inner-product manipulation (Xie, Koyejo and Gupta, UAI 2019, "Fall of Empires: Breaking
Byzantine-tolerant SGD by Inner Product Manipulation"): the colluders send -epsilon times the
benign mean, so the aggregate's inner product with the true gradient turns negative (gradient
descent stops descending) while, for small epsilon, each malicious update stays close to the
benign ones and passes median- and distance-based defences."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from core.attacks.base import Attack, AttackContext
from core.attacks.benign import benign_matrix
from core.errors import ConfigError
from core.models.weights import Weights, unflatten


class IPMAttack(Attack):
    """Submits -epsilon x the mean of the round's benign updates.

    - `epsilon`: default 0.1, the paper's small epsilon (its experiments use 0.1 against Krum and
      coordinate-wise median, where a small reversed update looks benign, and 100 against
      averaging-like rules, where only a large one outweighs the honest majority).

    Every colluder sends the same update. Needs two benign updates (see `core.attacks.benign`).
    """

    name = "ipm"
    wants_peer_updates = True

    def __init__(self, epsilon: float = 0.1) -> None:
        if isinstance(epsilon, bool) or not isinstance(epsilon, Real) or not (math.isfinite(epsilon) and epsilon > 0):
            raise ConfigError(f"IPM: epsilon must be a positive number, got {epsilon!r}.")
        self.epsilon: float = float(epsilon)

    def poison_update(self, ctx: AttackContext) -> Weights:
        benign = benign_matrix(ctx, self.name, own_is_benign=True)
        if benign is None:
            return ctx.honest_delta
        return unflatten((-self.epsilon * benign.mean(axis=0)).astype(np.float32), ctx.honest_delta)
