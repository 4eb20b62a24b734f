"""What min-max and min-sum share (Shejwalkar and Houmansadr, NDSS 2021, "Manipulating the
Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated Learning", section
IV-C, the aggregation-agnostic attacks): the malicious update mean + gamma x perturbation, with
gamma the largest that keeps the update's distances to the benign updates within what the benign
updates show among themselves."""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable

import numpy as np

from core.attacks.base import Attack, AttackContext
from core.attacks.benign import benign_matrix
from core.errors import ConfigError
from core.models.weights import Weights, unflatten

log = logging.getLogger(__name__)

PERTURBATIONS = ("unit_vec", "sign", "std")  # the paper's inverse unit vector, inverse sign, inverse std
_SEARCH_STEPS = 60  # bisection steps: gamma to ~1e-18 of its bracket


def perturbation(benign: np.ndarray, kind: str) -> np.ndarray:
    """The direction the paper's gamma scales (all point away from the benign mean's way):
    -mean/||mean|| ("unit_vec"), -sign(mean) ("sign") or -std ("std", unbiased as in its code)."""
    mean = benign.mean(axis=0)
    if kind == "unit_vec":
        length = np.linalg.norm(mean)
        return -mean / length if length > 0 else np.zeros_like(mean)
    if kind == "sign":
        return -np.sign(mean)
    if kind == "std":
        return -benign.std(axis=0, ddof=1)
    raise ConfigError(f"Unknown perturbation {kind!r}; choose one of {', '.join(PERTURBATIONS)}.")


def squared_distances(point: np.ndarray, benign: np.ndarray) -> np.ndarray:
    """||point - b_i||^2 for every benign row b_i."""
    diff = benign - point
    return np.einsum("ij,ij->i", diff, diff)


def pairwise_squared_distances(benign: np.ndarray) -> np.ndarray:
    """The k x k matrix of ||b_i - b_j||^2."""
    sq = np.einsum("ij,ij->i", benign, benign)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * benign @ benign.T, 0.0)


def largest_gamma(fits: Callable[[float], bool], start: float = 1.0) -> float:
    """The largest gamma >= 0 with `fits(gamma)`, for a feasible set [0, gamma*] (the distances
    are convex in gamma and gamma = 0, the mean, fits). Doubles from `start` to bracket gamma*,
    then bisects, as the paper's search does; returns the last gamma that fits."""
    low, high = 0.0, start
    while fits(high):
        low, high = high, 2.0 * high
        if high > 1e30:
            return low
    for _ in range(_SEARCH_STEPS):
        mid = 0.5 * (low + high)
        if fits(mid):
            low = mid
        else:
            high = mid
    return low


class DistanceBoundedAttack(Attack):
    """Base of min-max and min-sum: `score` the candidate against the benign updates, accept it
    while the score stays within `threshold`, the benign updates' own worst."""

    wants_peer_updates = True

    def __init__(self, perturbation: str = "std") -> None:
        if perturbation not in PERTURBATIONS:
            raise ConfigError(f"{type(self).__name__}: perturbation must be one of {', '.join(PERTURBATIONS)}, "
                              f"got {perturbation!r}.")
        self.perturbation: str = perturbation

    @abstractmethod
    def score(self, candidate: np.ndarray, benign: np.ndarray) -> float:
        """How far the candidate lies from the benign updates."""

    @abstractmethod
    def threshold(self, benign: np.ndarray) -> float:
        """The score the candidate may reach: the largest any benign update has."""

    def gamma(self, benign: np.ndarray, direction: np.ndarray) -> float:
        """The largest scale of `direction` that keeps the score within the threshold."""
        mean, threshold = benign.mean(axis=0), self.threshold(benign)
        return largest_gamma(lambda g: self.score(mean + g * direction, benign) <= threshold)

    def poison_update(self, ctx: AttackContext) -> Weights:
        benign = benign_matrix(ctx, self.name, own_is_benign=True)
        if benign is None:
            return ctx.honest_delta
        direction = perturbation(benign, self.perturbation)
        if not np.any(direction):
            log.warning("round %d: %s: the benign updates give a zero %s perturbation; it submits their mean.",
                        ctx.round_number, self.name, self.perturbation)
            return unflatten(benign.mean(axis=0).astype(np.float32), ctx.honest_delta)
        gamma = self.gamma(benign, direction)
        log.info("round %d: %s scales the %s perturbation by gamma %.4g", ctx.round_number, self.name,
                 self.perturbation, gamma)
        return unflatten((benign.mean(axis=0) + gamma * direction).astype(np.float32), ctx.honest_delta)
