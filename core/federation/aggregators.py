"""Plaintext aggregators: FedAvg (McMahan et al. 2017) and the Byzantine-robust baselines the
verified federation is compared with: Krum / multi-Krum (Blanchard et al. 2017), coordinate-wise
median and trimmed mean (Yin et al. 2018) and FLTrust (Cao et al. 2021).

Each combines the accepted candidates' deltas into new global weights = global + aggregate.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Sequence
from numbers import Integral, Real

import numpy as np

from core.errors import ConfigError, FederationError, ModelError
from core.federation.interfaces import Aggregator
from core.federation.types import Candidate, Commitment, sample_weights
from core.models.weights import Weights, as_weights, check_compatible, flatten, unflatten

log = logging.getLogger(__name__)

RootUpdate = Callable[[Weights], Weights]


def _checked_global(global_weights: Sequence[np.ndarray]) -> Weights:
    try:
        return as_weights(global_weights)
    except ModelError as exc:
        raise ModelError("The global model contains NaN or infinite values.", detail=exc.detail) from exc


def _checked_update(global_weights: Weights, delta: Sequence[np.ndarray], owner: str) -> np.ndarray:
    """The update flattened to float64, after refusing a foreign architecture or NaN values."""
    try:
        check_compatible(global_weights, delta)
    except ModelError as exc:
        raise ModelError(
            f"The update of {owner} does not match the federation's architecture.", detail=exc.detail
        ) from exc
    flat = flatten(delta).astype(np.float64)
    if not np.all(np.isfinite(flat)):
        bad = int(np.count_nonzero(~np.isfinite(flat)))
        raise ModelError(
            f"The update of {owner} contains NaN or infinite values and cannot be aggregated.",
            detail=f"{bad} of {flat.size} values",
        )
    return flat


def check_commitments(accepted: Sequence[Candidate], commitments: Sequence[Commitment]) -> None:
    """Raises FederationError unless each accepted candidate is the one its commitment names."""
    if len(commitments) != len(accepted):
        raise FederationError(
            "The aggregator was given a different number of commitments than accepted updates.",
            detail=f"{len(commitments)} commitments for {len(accepted)} updates",
        )
    for cand, com in zip(accepted, commitments, strict=True):
        if (cand.hospital_id, cand.round_number, cand.model_hash) != (
            com.hospital_id,
            com.round_number,
            com.model_hash,
        ):
            raise FederationError(
                f"The update of {cand.hospital_id} is not the one committed to; it is not aggregated.",
                detail=f"candidate {cand.hospital_id}/{cand.round_number}/{cand.model_hash[:12]} vs "
                f"commitment {com.hospital_id}/{com.round_number}/{com.model_hash[:12]}",
            )


class StackedAggregator(Aggregator):
    """Shared checks: commitments match, shapes match, no NaN; then the rule sees the deltas as
    rows of an (n, parameters) float64 matrix."""

    def aggregate(
        self,
        global_weights: Weights,
        accepted: Sequence[Candidate],
        commitments: Sequence[Commitment],
    ) -> Weights:
        glob = _checked_global(global_weights)
        check_commitments(accepted, commitments)
        if not accepted:
            log.info("%s: no accepted updates; the global model stays as it is", self.name)
            return [w.copy() for w in glob]  # as_weights does not copy float32 input
        updates = np.stack([_checked_update(glob, c.delta, c.hospital_id) for c in accepted])
        combined = self.combine(glob, list(accepted), updates)
        new_flat = flatten(glob).astype(np.float64) + combined
        if not np.all(np.abs(new_flat) <= np.finfo(np.float32).max):
            raise ModelError(
                f"Aggregating with {self.name} overflowed: the new global model would contain "
                "infinite values. An accepted update is far too large."
            )
        return as_weights(unflatten(new_flat.astype(np.float32), glob))

    @abstractmethod
    def combine(self, global_weights: Weights, accepted: list[Candidate], updates: np.ndarray) -> np.ndarray:
        """The aggregate update (flat, float64) of the rows of `updates`, one per candidate."""


class FedAvg(StackedAggregator):
    """Federated averaging (McMahan et al. 2017): the mean of the updates weighted by each
    hospital's number of training samples. Not robust: one update can move it arbitrarily."""

    name = "fedavg"

    def combine(self, global_weights: Weights, accepted: list[Candidate], updates: np.ndarray) -> np.ndarray:
        return sample_weights(accepted) @ updates


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


class Krum(StackedAggregator):
    """Krum (Blanchard et al. 2017): keeps the update whose n - f - 2 nearest neighbours are
    closest (sum of squared distances); multi-Krum averages the `multi` best-scoring ones.

    Its guarantee needs n >= 2f + 3 updates; with fewer, the neighbourhood shrinks to at least
    one (as Flower does) and a warning is logged. `last_selected` names the chosen hospitals.
    """

    name = "krum"

    def __init__(self, num_malicious: int = 0, *, multi: int = 1) -> None:
        self.num_malicious: int = _count("Krum: the assumed number of malicious hospitals", num_malicious, 0)
        self.multi: int = _count("Krum: the number of updates to keep (multi)", multi, 1)
        self.last_selected: list[str] = []

    def scores(self, updates: np.ndarray) -> np.ndarray:
        """Krum score of each row: the sum of squared distances to its nearest neighbours."""
        n = updates.shape[0]
        if n == 1:
            return np.zeros(1)
        # Row by row rather than through the Gram matrix, which cancels badly for close updates.
        dist = np.stack([np.sum((updates - row) ** 2, axis=1) for row in updates])
        np.fill_diagonal(dist, np.inf)
        if n < 2 * self.num_malicious + 3:
            log.warning(
                "Krum with f=%d needs at least %d updates for its guarantee, has %d",
                self.num_malicious,
                2 * self.num_malicious + 3,
                n,
            )
        neighbours = max(1, n - self.num_malicious - 2)
        nearest = np.sort(dist, axis=1)[:, :neighbours]
        return nearest.sum(axis=1)

    def combine(self, global_weights: Weights, accepted: list[Candidate], updates: np.ndarray) -> np.ndarray:
        order = np.argsort(self.scores(updates), kind="stable")
        chosen = order[: min(self.multi, len(accepted))]
        self.last_selected = [accepted[i].hospital_id for i in chosen]
        log.info("%s selected %s", self.name, ", ".join(self.last_selected))
        return updates[chosen].mean(axis=0)


class CoordinateMedian(StackedAggregator):
    """Coordinate-wise median (Yin et al. 2018): each weight moves by the median of the
    hospitals' changes to it, which fewer than half of the hospitals cannot drag away."""

    name = "median"

    def combine(self, global_weights: Weights, accepted: list[Candidate], updates: np.ndarray) -> np.ndarray:
        return np.median(updates, axis=0)


class TrimmedMean(StackedAggregator):
    """Coordinate-wise trimmed mean (Yin et al. 2018): per weight, drops the largest and smallest
    `beta` fraction of the changes and averages the rest.

    With `num_trimmed` it drops exactly that many at each end instead (Yin et al. need at least
    the number of malicious hospitals), at most (n - 1) // 2 so that one value always remains.
    """

    name = "trimmed_mean"

    def __init__(self, beta: float = 0.1, *, num_trimmed: int | None = None) -> None:
        if isinstance(beta, bool) or not isinstance(beta, Real) or not 0.0 <= beta < 0.5:
            raise ConfigError(f"Trimmed mean: beta must lie in [0, 0.5), got {beta!r}.")
        self.beta: float = float(beta)
        self.num_trimmed: int | None = (
            None if num_trimmed is None else _count("Trimmed mean: num_trimmed", num_trimmed, 0)
        )

    def trim_count(self, n: int) -> int:
        """How many values are dropped at each end when `n` updates are combined."""
        if self.num_trimmed is None:
            return int(np.floor(self.beta * n))
        k = min(self.num_trimmed, (n - 1) // 2)
        if k < self.num_trimmed:
            log.warning(
                "Trimmed mean: %d updates allow trimming only %d per side, not %d", n, k, self.num_trimmed
            )
        return k

    def combine(self, global_weights: Weights, accepted: list[Candidate], updates: np.ndarray) -> np.ndarray:
        n = updates.shape[0]
        k = self.trim_count(n)
        kept = np.sort(updates, axis=0)[k : n - k]
        return kept.mean(axis=0)


class FLTrust(StackedAggregator):
    """FLTrust (Cao et al. 2021): the server trains its own root update g0 on a small trusted
    dataset; each update gets trust ReLU(cosine(update, g0)), is rescaled to g0's norm, and the
    aggregate is their trust-weighted mean. Reversed or unrelated updates get no weight.

    `root_update(global_weights)` returns g0 (a delta, like every update). `last_trust` holds
    each hospital's trust score of the last round.
    """

    name = "fltrust"

    def __init__(self, root_update: RootUpdate) -> None:
        if not callable(root_update):
            raise ConfigError("FLTrust needs a root_update function that trains on the trusted root data.")
        self.root_update = root_update
        self.last_trust: dict[str, float] = {}

    def combine(self, global_weights: Weights, accepted: list[Candidate], updates: np.ndarray) -> np.ndarray:
        root = _checked_update(
            global_weights, self.root_update([w.copy() for w in global_weights]), "the trusted root dataset"
        )
        root_norm = float(np.linalg.norm(root))
        norms = np.linalg.norm(updates, axis=1)
        trust = np.zeros(len(accepted))
        if root_norm > 0.0:
            nonzero = norms > 0.0
            trust[nonzero] = np.maximum(updates[nonzero] @ root / (norms[nonzero] * root_norm), 0.0)
        self.last_trust = {c.hospital_id: float(t) for c, t in zip(accepted, trust, strict=True)}
        total = float(trust.sum())
        if total == 0.0:
            log.warning("FLTrust: no update points the way of the root update; the global model stays")
            return np.zeros(updates.shape[1])
        rescaled = updates * (root_norm / np.where(norms > 0.0, norms, 1.0))[:, None]
        return (trust / total) @ rescaled


# The names `create_aggregator` builds: the one list the CLI, the services and the GUI offer.
AGGREGATORS = tuple(cls.name for cls in (FedAvg, Krum, CoordinateMedian, TrimmedMean, FLTrust))


def create_aggregator(
    name: str,
    *,
    num_malicious: int = 0,
    root_update: RootUpdate | None = None,
    beta: float | None = None,
    multi: int = 1,
) -> Aggregator:
    """The aggregator called `name` (one of AGGREGATORS), set up for `num_malicious` attackers.

    Krum assumes f = num_malicious; the trimmed mean drops num_malicious values per side (or a
    `beta` fraction when given, default 0.1 without attackers); FLTrust needs `root_update`.
    """
    num_malicious = _count("The assumed number of malicious hospitals", num_malicious, 0)
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
    if key == FedAvg.name:
        return FedAvg()
    if key == Krum.name:
        return Krum(num_malicious, multi=multi)
    if key == CoordinateMedian.name:
        return CoordinateMedian()
    if key == TrimmedMean.name:
        if beta is not None:
            return TrimmedMean(beta)
        return TrimmedMean(num_trimmed=num_malicious) if num_malicious else TrimmedMean()
    if key == FLTrust.name:
        if root_update is None:
            raise ConfigError(
                "FLTrust needs a trusted root dataset to compute its root update; none was given."
            )
        return FLTrust(root_update)
    raise ConfigError(f"Unknown aggregator '{name}'; choose one of {', '.join(AGGREGATORS)}.")
