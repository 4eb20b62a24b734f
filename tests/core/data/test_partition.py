"""Partitioning into hospitals: disjoint, complete, stratified, deterministic, and skewed on request."""

from __future__ import annotations

import numpy as np
import pytest

from core.data.builtin import breast_cancer
from core.data.dataset import DataKind, Dataset
from core.data.partition import MIN_VALIDATION_SAMPLES, FederatedSplit, partition
from core.errors import ConfigError, DataError


def table(n: int = 600, classes: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    return Dataset(
        name="t",
        kind=DataKind.TABLE,
        x=rng.normal(size=(n, 4)).astype(np.float32),
        y=y.astype(np.int64),
        class_names=tuple(f"c{i}" for i in range(classes)),
    )


def all_indices(split: FederatedSplit) -> list[np.ndarray]:
    parts = [split.test_indices]
    for h in split.hospitals:
        parts += [h.train_indices, h.validation_indices]
    return parts


def assert_disjoint_and_complete(split: FederatedSplit, n: int) -> None:
    joined = np.concatenate(all_indices(split))
    assert joined.size == n
    assert np.unique(joined).size == n  # no sample in two places
    assert set(joined.tolist()) == set(range(n))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_no_overlap_and_nothing_lost(scheme: str) -> None:
    ds = breast_cancer()

    split = partition(ds, 4, scheme=scheme, alpha=1.0, seed=3)

    assert_disjoint_and_complete(split, ds.num_samples)
    assert [h.hospital_id for h in split.hospitals] == [
        "hospital-1",
        "hospital-2",
        "hospital-3",
        "hospital-4",
    ]
    for h in split.hospitals:  # the datasets hold exactly the rows their indices name
        np.testing.assert_array_equal(h.train.x, ds.x[h.train_indices])
        np.testing.assert_array_equal(h.validation.y, ds.y[h.validation_indices])
    np.testing.assert_array_equal(split.test.y, ds.y[split.test_indices])


def test_iid_is_equal_and_stratified() -> None:
    ds = table(600, 3)

    split = partition(ds, 5, validation_fraction=0.25, test_fraction=0.2)

    assert split.test.num_samples == 120
    assert split.test.class_counts() == {"c0": 40, "c1": 40, "c2": 40}
    sizes = [h.train.num_samples + h.validation.num_samples for h in split.hospitals]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 480
    for h in split.hospitals:
        train_counts = np.array(list(h.train.class_counts().values()))
        assert train_counts.max() - train_counts.min() <= 1
        val_counts = np.array(list(h.validation.class_counts().values()))
        assert val_counts.max() - val_counts.min() <= 1
        assert h.validation.num_samples == 24


@pytest.mark.parametrize(("classes", "hospitals"), [(2, 20), (2, 4), (3, 6), (3, 9), (2, 7)])
def test_iid_gives_every_hospital_every_class_whatever_their_number(classes: int, hospitals: int) -> None:
    ds = table(1200, classes)

    split = partition(ds, hospitals, seed=1)

    for h in split.hospitals:
        counts = np.array(list(h.train.class_counts().values()))
        assert counts.min() > 0, (h.hospital_id, h.train.class_counts())
        assert counts.max() - counts.min() <= 2
    sizes = [h.train.num_samples + h.validation.num_samples for h in split.hospitals]
    assert max(sizes) - min(sizes) <= 1


def test_test_set_keeps_class_proportions_of_imbalanced_data() -> None:
    ds = breast_cancer()  # 212 malignant, 357 benign

    split = partition(ds, 3, test_fraction=0.2)

    counts = split.test.class_counts()
    assert sum(counts.values()) == 114
    assert abs(counts["malignant"] - 114 * 212 / 569) <= 1


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_same_seed_same_split_other_seed_other_split(scheme: str) -> None:
    ds = table()

    a = partition(ds, 4, scheme=scheme, seed=11)
    b = partition(ds, 4, scheme=scheme, seed=11)
    c = partition(ds, 4, scheme=scheme, seed=12)

    for x, y in zip(all_indices(a), all_indices(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(all_indices(a), all_indices(c), strict=False))


def skew(split: FederatedSplit) -> float:
    """Mean total-variation distance between each hospital's class mix and the overall mix."""
    counts = np.array([list(h.train.class_counts().values()) for h in split.hospitals], dtype=float)
    overall = counts.sum(axis=0) / counts.sum()
    local = counts / counts.sum(axis=1, keepdims=True)
    return float(0.5 * np.abs(local - overall).sum(axis=1).mean())


def test_smaller_alpha_gives_more_skew() -> None:
    ds = table(1500, 3)

    def mean_skew(scheme: str, alpha: float) -> float:
        return float(np.mean([skew(partition(ds, 5, scheme=scheme, alpha=alpha, seed=s)) for s in range(8)]))

    iid, wide, medium, narrow = (
        mean_skew("iid", 1.0),
        mean_skew("dirichlet", 100.0),
        mean_skew("dirichlet", 1.0),
        mean_skew("dirichlet", 0.1),
    )

    assert iid < 0.01
    assert wide < medium < narrow
    assert narrow > 0.3 and wide < 0.1


def test_dirichlet_respects_minimum_sizes() -> None:
    ds = table(600, 2)

    for seed in range(5):
        split = partition(ds, 6, scheme="dirichlet", alpha=0.2, min_samples=20, seed=seed)
        for h in split.hospitals:
            assert h.train.num_samples >= 20
            assert h.validation.num_samples >= MIN_VALIDATION_SAMPLES


def test_dirichlet_gives_up_with_a_clear_error() -> None:
    ds = table(300, 2)
    with pytest.raises(DataError, match="No Dirichlet\\(alpha=0.01\\) split .* larger alpha"):
        partition(ds, 10, scheme="dirichlet", alpha=0.01, min_samples=15)


def test_too_many_hospitals() -> None:
    ds = table(100, 2)
    with pytest.raises(DataError, match="10 hospitals need at least 150"):
        partition(ds, 10)


def test_one_class_dataset_is_refused() -> None:
    ds = Dataset(
        name="one",
        kind=DataKind.TABLE,
        x=np.zeros((50, 3), np.float32),
        y=np.zeros(50, np.int64),
        class_names=("M",),
    )
    with pytest.raises(DataError, match="only one class"):
        partition(ds, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha must be a positive"),
        ({"scheme": "dirichlet", "alpha": float("nan")}, "alpha must be a positive"),
        ({"scheme": "shards"}, "Unknown partition scheme"),
        ({"validation_fraction": 0.0}, "validation fraction"),
        ({"test_fraction": 1.0}, "test fraction"),
        ({"min_samples": 0}, "at least 1"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        partition(table(), 3, **kwargs)  # type: ignore[arg-type]


def test_zero_hospitals() -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        partition(table(), 0)


def test_classes_too_scarce_per_hospital_are_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    many = table(n=600, classes=50)  # 12 cases a class: about 2 per hospital's training set over 3

    with caplog.at_level("WARNING"):
        partition(many, 3, seed=0)

    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "50 of the 50 classes" in warning and "'c0'" in warning and "3 hospitals" in warning


def test_enough_cases_per_class_give_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        partition(table(n=600, classes=3), 3, seed=0)
        partition(breast_cancer(), 5, scheme="dirichlet", alpha=1.0, seed=0)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
