"""Min-sum (Shejwalkar and Houmansadr, NDSS 2021, "Manipulating the Byzantine", Eq. 5): the
malicious update's summed squared distance to the benign updates is no more than any benign
update's own, so it passes a defence that scores by total distance (Krum's score, a mean
distance check) as one of them."""

from __future__ import annotations

import numpy as np

from core.attacks.distance_bounded import DistanceBoundedAttack, pairwise_squared_distances, squared_distances


class MinSumAttack(DistanceBoundedAttack):
    """Submits mean + gamma x perturbation of the round's benign updates b_i, with gamma the
    largest such that sum_i ||malicious - b_i||^2 <= max_i sum_j ||b_i - b_j||^2, found by
    doubling and bisection.

    - `perturbation`: "std" (-std, default), "unit_vec" (-mean/||mean||) or "sign" (-sign(mean)).

    Stealthier than min-max (a sum is a tighter budget than a max). Every colluder sends the
    same update. Needs two benign updates (see `core.attacks.benign`).
    """

    name = "min_sum"

    def score(self, candidate: np.ndarray, benign: np.ndarray) -> float:
        return float(squared_distances(candidate, benign).sum())

    def threshold(self, benign: np.ndarray) -> float:
        return float(pairwise_squared_distances(benign).sum(axis=1).max())
