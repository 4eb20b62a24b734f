"""Splits one dataset into a held-out test set and N hospitals' train/validation sets.

`iid` gives every hospital an equal, stratified share; `dirichlet` draws each class's shares
across hospitals from Dir(alpha), the usual way to simulate hospitals whose patients differ
(smaller alpha, more skew). The same seed always gives the same split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from core.data.dataset import Dataset
from core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SCHEMES = ("iid", "dirichlet")
# Fewer training cases of a class than this in an average hospital, and local training can hardly
# learn the class (50 classes over 3 small hospitals trains to chance level).
MIN_CASES_PER_CLASS = 5
MIN_VALIDATION_SAMPLES = 3
MAX_DIRICHLET_ATTEMPTS = 1000


@dataclass(frozen=True, eq=False)
class HospitalSplit:
    """One hospital's private data; the indices point into the partitioned dataset."""

    hospital_id: str
    train: Dataset
    validation: Dataset
    train_indices: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    validation_indices: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class FederatedSplit:
    """The held-out test set (for reporting only) and the hospitals' splits."""

    test: Dataset
    hospitals: list[HospitalSplit]
    test_indices: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    scheme: str = "iid"
    alpha: float | None = None
    seed: int = 0

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Training class counts per hospital, for showing how skewed the split is."""
        return {h.hospital_id: h.train.class_counts() for h in self.hospitals}


def _stratified_order(indices: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`indices` reordered so that every prefix holds the classes in their overall proportions."""
    if indices.size == 0:
        return indices
    keys = np.empty(indices.size)
    labels = y[indices]
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(members.size)]
        keys[members] = (np.arange(members.size) + rng.uniform(0.0, 1.0)) / members.size
    tie_break = rng.permutation(indices.size)
    return indices[np.lexsort((tie_break, keys))]


def _deal_stratified(pool: np.ndarray, y: np.ndarray, num_hospitals: int,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Deals each class's members round-robin, continuing where the previous class stopped, so
    shares are equal (+-1) and stratified whatever the number of hospitals. (Dealing the
    class-interleaved pool itself would hand every hospital one class when the class period
    divides the number of hospitals.)"""
    hands: list[list[int]] = [[] for _ in range(num_hospitals)]
    dealt = 0
    labels = y[pool]
    for c in np.unique(labels):
        for index in pool[labels == c]:
            hands[dealt % num_hospitals].append(int(index))
            dealt += 1
    return [rng.permutation(np.array(hand, dtype=np.int64)) for hand in hands]


def _validation_size(n: int, fraction: float) -> int:
    return max(MIN_VALIDATION_SAMPLES, int(round(fraction * n)))


def _check_arguments(
    dataset: Dataset,
    num_hospitals: int,
    scheme: str,
    alpha: float,
    validation_fraction: float,
    test_fraction: float,
    min_samples: int,
) -> None:
    if scheme not in SCHEMES:
        raise ConfigError(f"Unknown partition scheme '{scheme}'; choose one of {', '.join(SCHEMES)}.")
    if not isinstance(num_hospitals, (int, np.integer)) or num_hospitals < 1:
        raise ConfigError(f"The number of hospitals must be a positive integer, got {num_hospitals!r}.")
    if scheme == "dirichlet" and not (np.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"The Dirichlet concentration alpha must be a positive number, got {alpha!r}.")
    for label, value in (("validation", validation_fraction), ("test", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"The {label} fraction must be between 0 and 1 (exclusive), got {value!r}.")
    if min_samples < 1:
        raise ConfigError(
            f"The minimum number of training samples per hospital must be at least 1, got {min_samples}."
        )
    dataset.require_trainable()


def _split_hospital(
    dataset: Dataset,
    hospital_id: str,
    indices: np.ndarray,
    validation_fraction: float,
    rng: np.random.Generator,
) -> HospitalSplit:
    order = _stratified_order(indices, dataset.y, rng)
    n_val = _validation_size(order.size, validation_fraction)
    validation, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return HospitalSplit(
        hospital_id=hospital_id,
        train=dataset.subset(train, name=f"{dataset.name} / {hospital_id} / train"),
        validation=dataset.subset(validation, name=f"{dataset.name} / {hospital_id} / validation"),
        train_indices=train,
        validation_indices=validation,
    )


def _fits(size: int, validation_fraction: float, min_samples: int) -> bool:
    return size - _validation_size(size, validation_fraction) >= min_samples


def _dirichlet_shares(
    pool: np.ndarray,
    y: np.ndarray,
    num_hospitals: int,
    alpha: float,
    validation_fraction: float,
    min_samples: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    by_class = [pool[y[pool] == c] for c in np.unique(y[pool])]
    for _attempt in range(MAX_DIRICHLET_ATTEMPTS):
        shares: list[list[np.ndarray]] = [[] for _ in range(num_hospitals)]
        for members in by_class:
            members = members[rng.permutation(members.size)]
            proportions = rng.dirichlet(np.full(num_hospitals, alpha))
            cuts = np.round(np.cumsum(proportions)[:-1] * members.size).astype(int)
            for h, part in enumerate(np.split(members, cuts)):
                shares[h].append(part)
        merged = [np.concatenate(parts) for parts in shares]
        if all(_fits(part.size, validation_fraction, min_samples) for part in merged):
            return merged
    raise DataError(
        f"No Dirichlet(alpha={alpha:g}) split of {pool.size} samples over {num_hospitals} hospitals "
        f"gave every hospital at least {min_samples} training and {MIN_VALIDATION_SAMPLES} validation "
        f"samples in {MAX_DIRICHLET_ATTEMPTS} attempts. "
        "Use a larger alpha, fewer hospitals or a smaller minimum."
    )


def _warn_of_scarce_classes(dataset: Dataset, hospitals: list[HospitalSplit]) -> None:
    totals = np.zeros(dataset.num_classes)
    for hospital in hospitals:
        totals += np.bincount(hospital.train.y, minlength=dataset.num_classes)[: dataset.num_classes]
    per_hospital = totals / len(hospitals)
    scarce = [int(c) for c in np.flatnonzero(per_hospital < MIN_CASES_PER_CLASS)]
    if not scarce:
        return
    names = ", ".join(f"'{dataset.class_names[c]}'" for c in scarce[:5])
    names += ", ..." if len(scarce) > 5 else ""
    logger.warning(
        "%d of the %d classes of '%s' (%s) have fewer than %d training cases per hospital (as few as "
        "%.1f over %d hospitals): the model can hardly learn them. Use fewer hospitals, fewer classes "
        "or more data.",
        len(scarce), dataset.num_classes, dataset.name, names, MIN_CASES_PER_CLASS,
        float(per_hospital[scarce].min()), len(hospitals))


def partition(
    dataset: Dataset,
    num_hospitals: int,
    *,
    scheme: str = "iid",
    alpha: float = 0.5,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    min_samples: int = 10,
) -> FederatedSplit:
    """Holds out a stratified `test_fraction`, then gives each of `num_hospitals` hospitals
    ("hospital-1".."hospital-N") a share of the rest, split stratified into train/validation."""
    _check_arguments(dataset, num_hospitals, scheme, alpha, validation_fraction, test_fraction, min_samples)
    rng = np.random.Generator(np.random.PCG64(seed))
    everything = _stratified_order(np.arange(dataset.num_samples), dataset.y, rng)
    n_test = max(dataset.num_classes, int(round(test_fraction * dataset.num_samples)))
    per_hospital = min_samples + MIN_VALIDATION_SAMPLES
    if dataset.num_samples - n_test < num_hospitals * per_hospital:
        raise DataError(
            f"Dataset '{dataset.name}' has {dataset.num_samples} samples; {num_hospitals} hospitals "
            f"need at least {num_hospitals * per_hospital + n_test} ({per_hospital} each plus "
            f"{n_test} held out for testing). "
            "Use fewer hospitals or more data."
        )
    test_indices = np.sort(everything[:n_test])
    pool = everything[n_test:]

    if scheme == "iid":
        shares = _deal_stratified(pool, dataset.y, num_hospitals, rng)
        if not all(_fits(s.size, validation_fraction, min_samples) for s in shares):
            raise DataError(
                f"Dataset '{dataset.name}' is too small for {num_hospitals} hospitals with at least "
                f"{min_samples} training samples each after validation; use fewer hospitals."
            )
    else:
        shares = _dirichlet_shares(
            pool, dataset.y, num_hospitals, alpha, validation_fraction, min_samples, rng
        )

    hospitals = [
        _split_hospital(dataset, f"hospital-{h + 1}", share, validation_fraction, rng)
        for h, share in enumerate(shares)
    ]
    _warn_of_scarce_classes(dataset, hospitals)
    return FederatedSplit(
        test=dataset.subset(test_indices, name=f"{dataset.name} / test"),
        hospitals=hospitals,
        test_indices=test_indices,
        scheme=scheme,
        alpha=alpha if scheme == "dirichlet" else None,
        seed=seed,
    )
