"""Real medical tables that ship with scikit-learn, and the synthetic image sets, by name.

They need no network: scikit-learn bundles both tables in its wheel, the images are generated.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes

from core.data.csv_loader import standardize
from core.data.dataset import DataKind, Dataset
from core.data.synthetic import synthetic_images
from core.data.synthetic_tissue import synthetic_tissue
from core.errors import DataError

BUILTIN_DATASETS: dict[str, str] = {
    "breast_cancer": "Wisconsin diagnostic breast cancer: 569 patients, 30 cell-nucleus features, "
    "malignant vs benign (scikit-learn).",
    "diabetes": "Diabetes: 442 patients, 10 baseline features, disease progression after one year "
    "split at the median into low vs high (scikit-learn).",
    "synthetic_images": "Synthetic 28x28 grayscale lesion images, benign vs malignant "
    "(generated, not patient data).",
    "synthetic_tissue": "Synthetic 32x32 grayscale ultrasound-like breast tissue from 4 scanners, 6 classes: "
    "normal, cyst, fibroadenoma, carcinoma, calcification, inflammation; harder, so attacks show "
    "(generated, not patient data).",
}
# The generated image sets, which alone take an image size and channel count.
IMAGE_BUILTINS: dict[str, Callable[..., Dataset]] = {
    "synthetic_images": synthetic_images,
    "synthetic_tissue": synthetic_tissue,
}


def _table(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    class_names: tuple[str, ...],
    feature_names: tuple[str, ...],
    source: str,
    notes: list[str],
) -> Dataset:
    scaled, constant = standardize(x)
    if constant:
        notes.append("Constant column(s) set to 0: " + ", ".join(feature_names[i] for i in constant) + ".")
    notes.append("Features z-scored with the dataset's own mean and standard deviation.")
    return Dataset(
        name=name,
        kind=DataKind.TABLE,
        x=scaled,
        y=y.astype(np.int64),
        class_names=class_names,
        feature_names=feature_names,
        source=source,
        notes=tuple(notes),
    )


def breast_cancer() -> Dataset:
    """Wisconsin diagnostic breast cancer: 0 = malignant, 1 = benign (scikit-learn's coding)."""
    bunch = load_breast_cancer()
    return _table(
        "breast_cancer",
        np.asarray(bunch.data, dtype=np.float64),
        np.asarray(bunch.target),
        tuple(str(n) for n in bunch.target_names),
        tuple(str(n) for n in bunch.feature_names),
        "scikit-learn load_breast_cancer (UCI Wisconsin Diagnostic Breast Cancer)",
        [],
    )


def diabetes() -> Dataset:
    """Diabetes progression one year after baseline, split at the median: 0 = low (<= median), 1 = high."""
    bunch = load_diabetes(scaled=False)
    target = np.asarray(bunch.target, dtype=np.float64)
    median = float(np.median(target))
    return _table(
        "diabetes",
        np.asarray(bunch.data, dtype=np.float64),
        (target > median).astype(np.int64),
        ("low", "high"),
        tuple(str(n) for n in bunch.feature_names),
        "scikit-learn load_diabetes (Efron et al., 2004)",
        [f"Disease progression split at its median {median:g}: 'low' <= median < 'high'."],
    )


def load_builtin(name: str, *, image_size: tuple[int, int] | None = None, channels: int = 1) -> Dataset:
    """The built-in dataset `name`; `image_size` (None: the set's own) and `channels` only apply
    to the generated image sets (`IMAGE_BUILTINS`)."""
    if name == "breast_cancer":
        return breast_cancer()
    if name == "diabetes":
        return diabetes()
    if name in IMAGE_BUILTINS:
        size = {} if image_size is None else {"image_size": image_size}
        return IMAGE_BUILTINS[name](channels=channels, **size)
    raise DataError(f"There is no built-in dataset '{name}'; choose one of {', '.join(BUILTIN_DATASETS)}.")
