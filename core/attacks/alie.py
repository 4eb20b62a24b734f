"""'A little is enough' (Baruch, Baruch and Goldberg, NeurIPS 2019, "A Little Is Enough:
Circumventing Defenses For Distributed Learning"): every colluder sends the benign mean shifted
by z standard deviations per coordinate, a shift small enough to hide among the benign updates
yet, repeated by every colluder in every round, enough to steer the model."""

from __future__ import annotations

import math
from numbers import Real
from statistics import NormalDist

import numpy as np

from core.attacks.base import Attack, AttackContext
from core.attacks.benign import benign_matrix
from core.errors import ConfigError
from core.models.weights import Weights, unflatten


def alie_z(num_hospitals: int, num_colluders: int) -> float:
    """The paper's z_max: with s = floor(n/2 + 1) - m hospitals the colluders must win over for a
    majority, z = Phi^-1((n - s) / n), the largest shift that still leaves s benign updates
    farther from the mean than the colluders' (Baruch et al., section 3, Algorithm 3).

    When the colluders are already a majority (s <= 0) the formula is unbounded; z is then that
    of s = 1, the most any one hospital needs to be outdone by.
    """
    if num_hospitals < 1 or not 1 <= num_colluders <= num_hospitals:
        raise ConfigError(f"ALIE: {num_colluders} colluders in a federation of {num_hospitals} hospitals "
                          "is not a federation it can attack.")
    s = max(math.floor(num_hospitals / 2 + 1) - num_colluders, 1)
    return NormalDist().inv_cdf((num_hospitals - s) / num_hospitals) if s < num_hospitals else 0.0


class ALIEAttack(Attack):
    """Submits mean - z x std of the round's benign updates, coordinate by coordinate.

    - `z`: the shift in standard deviations; default None: the paper's z_max from the number of
      hospitals n and of colluders m (`alie_z`), e.g. 0.43 for n=3, m=1 and 0.25 for n=5, m=1.

    The std is the unbiased one (ddof=1), as the authors' code computes it. Every colluder sends
    the same update: all see the same benign updates (those of the non-colluding hospitals).
    Needs two benign updates; with fewer it adds its own honest update, and with none it submits
    that honest update (see `core.attacks.benign`).
    """

    name = "alie"
    wants_peer_updates = True

    def __init__(self, z: float | None = None) -> None:
        if z is not None and (isinstance(z, bool) or not isinstance(z, Real) or not math.isfinite(z)):
            raise ConfigError(f"ALIE: z must be a finite number (standard deviations), got {z!r}.")
        self.z: float | None = None if z is None else float(z)

    def effective_z(self, ctx: AttackContext) -> float:
        """The shift used in this federation: `z`, or the paper's z_max."""
        return self.z if self.z is not None else alie_z(ctx.num_hospitals, ctx.num_colluders)

    def poison_update(self, ctx: AttackContext) -> Weights:
        benign = benign_matrix(ctx, self.name, own_is_benign=True)
        if benign is None:
            return ctx.honest_delta
        malicious = benign.mean(axis=0) - self.effective_z(ctx) * benign.std(axis=0, ddof=1)
        return unflatten(malicious.astype(np.float32), ctx.honest_delta)
