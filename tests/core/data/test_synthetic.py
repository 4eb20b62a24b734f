"""The synthetic lesion images: deterministic, balanced, and learnable but not trivial."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from core.data.dataset import DataKind
from core.data.partition import partition
from core.data.synthetic import synthetic_images
from core.errors import ConfigError


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_same_seed_identical_bytes_other_seed_different() -> None:
    a, b, c = synthetic_images(200, seed=5), synthetic_images(200, seed=5), synthetic_images(200, seed=6)

    assert digest(a.x) == digest(b.x) and digest(a.y) == digest(b.y)
    assert digest(a.x) != digest(c.x)


def test_shape_range_and_balance() -> None:
    ds = synthetic_images()

    assert ds.kind is DataKind.IMAGE
    assert ds.x.shape == (1200, 28, 28, 1) and ds.x.dtype == np.float32
    assert ds.class_names == ("benign", "malignant")
    assert ds.class_counts() == {"benign": 600, "malignant": 600}
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    np.testing.assert_allclose(ds.x * 255, np.round(ds.x * 255), atol=1e-3)  # 8-bit levels


def test_other_sizes_and_rgb() -> None:
    ds = synthetic_images(40, image_size=(32, 48), channels=3)
    assert ds.x.shape == (40, 32, 48, 3)


def test_mean_brightness_alone_does_not_solve_it() -> None:
    """The classes differ in shape, not simply in how bright the image is."""
    ds = synthetic_images()
    brightness = ds.x.mean(axis=(1, 2, 3))
    best = max(
        max(np.mean((brightness > t) == ds.y), np.mean((brightness <= t) == ds.y))
        for t in np.quantile(brightness, np.linspace(0.01, 0.99, 99))
    )
    assert best < 0.85


@pytest.mark.parametrize("kwargs", [{"num_samples": 2}, {"image_size": (8, 8)}, {"channels": 2}])
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        synthetic_images(**kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_image_cnn_learns_it_in_a_few_epochs() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from core.models.architecture import spec_for
    from core.models.keras_builder import build_keras_model

    ds = synthetic_images(seed=0)
    split = partition(ds, 1, test_fraction=0.2, validation_fraction=0.1, seed=0)
    train = split.hospitals[0].train
    model = build_keras_model(spec_for(ds), seed=0)

    model.fit(train.x, train.y, epochs=8, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(split.test.x, split.test.y, verbose=0)

    assert 0.85 <= accuracy < 1.0
