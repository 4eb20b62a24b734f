"""Min-max (Shejwalkar and Houmansadr, NDSS 2021, "Manipulating the Byzantine", Eq. 4): the
malicious update lies no farther from any benign update than the two farthest benign updates lie
from each other, so distance-based defences (Krum, Bulyan, a validator's distance check) cannot
tell it from a benign outlier."""

from __future__ import annotations

import numpy as np

from core.attacks.distance_bounded import DistanceBoundedAttack, pairwise_squared_distances, squared_distances


class MinMaxAttack(DistanceBoundedAttack):
    """Submits mean + gamma x perturbation of the round's benign updates b_i, with gamma the
    largest such that max_i ||malicious - b_i||^2 <= max_{i,j} ||b_i - b_j||^2, found by
    doubling and bisection.

    - `perturbation`: "std" (-std, default, the paper's strongest in most settings), "unit_vec"
      (-mean/||mean||) or "sign" (-sign(mean)).

    Every colluder sends the same update. Needs two benign updates (see `core.attacks.benign`).
    """

    name = "min_max"

    def score(self, candidate: np.ndarray, benign: np.ndarray) -> float:
        return float(squared_distances(candidate, benign).max())

    def threshold(self, benign: np.ndarray) -> float:
        return float(pairwise_squared_distances(benign).max())
