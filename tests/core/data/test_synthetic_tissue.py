"""The synthetic tissue images: deterministic, balanced, fast to make, and hard enough that a
scaling attack on unprotected FedAvg costs a federation clearly visible accuracy."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from core.data.dataset import DataKind
from core.data.loading import load_dataset
from core.data.synthetic_tissue import CLASS_NAMES, synthetic_tissue
from core.errors import ConfigError


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_same_seed_identical_bytes_other_seed_different() -> None:
    a, b, c = synthetic_tissue(300, seed=5), synthetic_tissue(300, seed=5), synthetic_tissue(300, seed=6)

    assert digest(a.x) == digest(b.x) and digest(a.y) == digest(b.y)
    assert digest(a.x) != digest(c.x)


def test_shape_classes_range_and_balance() -> None:
    ds = load_dataset("synthetic_tissue")

    assert ds.name == "synthetic_tissue" and ds.kind is DataKind.IMAGE
    assert ds.x.shape == (1800, 32, 32, 1) and ds.x.dtype == np.float32
    assert ds.class_names == CLASS_NAMES and len(CLASS_NAMES) == 6
    assert set(ds.class_counts().values()) == {300}
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    np.testing.assert_allclose(ds.x * 255, np.round(ds.x * 255), atol=1e-3)  # 8-bit levels


def test_uneven_counts_stay_within_one_and_other_sizes_and_rgb() -> None:
    ds = synthetic_tissue(40, image_size=(40, 48), channels=3)

    assert ds.x.shape == (40, 40, 48, 3)
    counts = ds.class_counts().values()
    assert max(counts) - min(counts) <= 1
    np.testing.assert_array_equal(ds.x[..., 0], ds.x[..., 2])


def test_mean_brightness_alone_does_not_solve_it() -> None:
    """The scanners' gains differ, so an image's brightness says little of its class: the best
    guess from it (the commonest class of each brightness decile of one set) is poor on another."""
    fit, held_out = synthetic_tissue(600, seed=1), synthetic_tissue(600, seed=2)
    brightness = fit.x.mean(axis=(1, 2, 3))
    edges = np.quantile(brightness, np.linspace(0.1, 0.9, 9))
    decile = np.digitize(brightness, edges)
    guess = np.array([np.bincount(fit.y[decile == d], minlength=fit.num_classes).argmax() for d in range(10)])

    predicted = guess[np.digitize(held_out.x.mean(axis=(1, 2, 3)), edges)]

    assert np.mean(predicted == held_out.y) < 0.4  # chance: 1/6


def test_two_thousand_images_in_well_under_two_seconds() -> None:
    synthetic_tissue(50)  # first-call overhead out of the measurement
    # CPU time, not wall time: other work on a shared machine must not fail the test (measured:
    # 0.3-0.7 s, depending on that load).
    start = time.process_time()
    synthetic_tissue(2000)
    assert time.process_time() - start < 1.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 5}, "at least 6 samples"),
        ({"num_samples": 100_001}, "limited to 100000"),
        ({"image_size": (8, 32)}, "between 16 and 256 pixels"),
        ({"channels": 2}, "Channels must be 1 or 3"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        synthetic_tissue(**kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_scaling_attack_on_unprotected_fedavg_costs_at_least_twenty_points(tmp_path: Path) -> None:
    """Issue 12: on this set an attack must visibly hurt. Two rounds of the default federation
    (5 hospitals, 5 local epochs) learn it well past chance (1/6); two scaling attackers wreck
    it. Measured clean / attacked after two rounds: 0.74 / 0.07 (CLI, seed 0), 0.80 / 0.28 and
    0.75 / 0.24 (seeds 1, 2); after five rounds 0.84 / 0.19."""
    # Imported here so that the fast tests above run without loading TensorFlow.
    from core.services.simulation import SimulationConfig, run_simulation
    from core.settings import load_settings

    def final_accuracy(malicious: int, attack: str, home: str) -> float:
        config = SimulationConfig(hospitals=5, malicious=malicious, attack=attack, rounds=2,
                                  dataset="synthetic_tissue", aggregator="fedavg", verifier="none",
                                  ledger=False)
        report = run_simulation(config, load_settings(home=tmp_path / home))
        return float(report["final_accuracy"])

    clean = final_accuracy(0, "none", "clean")
    attacked = final_accuracy(2, "scaling", "attacked")

    assert clean >= 0.5
    assert clean - attacked >= 0.20
