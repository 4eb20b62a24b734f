"""The built-in scikit-learn tables and generated image sets load offline with the documented classes."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_diabetes

from core.data.builtin import BUILTIN_DATASETS, breast_cancer, diabetes, load_builtin
from core.data.dataset import DataKind


def test_breast_cancer() -> None:
    ds = breast_cancer()

    assert ds.kind is DataKind.TABLE
    assert ds.x.shape == (569, 30) and ds.x.dtype == np.float32
    assert ds.class_names == ("malignant", "benign")
    assert ds.class_counts() == {"malignant": 212, "benign": 357}
    assert ds.feature_names[0] == "mean radius"
    np.testing.assert_allclose(ds.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x.std(axis=0), 1.0, atol=1e-4)
    ds.require_trainable()


def test_diabetes_split_at_the_median() -> None:
    ds = diabetes()
    target = load_diabetes().target

    assert ds.x.shape == (442, 10)
    assert ds.class_names == ("low", "high")
    np.testing.assert_array_equal(ds.y, (target > np.median(target)).astype(np.int64))
    assert ds.class_counts() == {"low": 221, "high": 221}
    assert any("median 140.5" in note for note in ds.notes)


def test_every_builtin_loads_by_name_with_its_own_shape() -> None:
    loaded = {name: load_builtin(name) for name in BUILTIN_DATASETS}

    assert {name: ds.name for name, ds in loaded.items()} == {name: name for name in BUILTIN_DATASETS}
    assert {name: (ds.input_shape, ds.num_classes) for name, ds in loaded.items()} == {
        "breast_cancer": ((30,), 2),
        "diabetes": ((10,), 2),
        "synthetic_images": ((28, 28, 1), 2),
        "synthetic_tissue": ((32, 32, 1), 6),
    }


def test_an_image_set_takes_a_size_and_channels() -> None:
    assert load_builtin("synthetic_tissue", image_size=(40, 40), channels=3).input_shape == (40, 40, 3)
