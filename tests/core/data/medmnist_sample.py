"""Archives in exactly the layout of MedMNIST's `.npz` downloads, made here instead of fetched.

The layout: `train_images`/`train_labels`, `val_images`/`val_labels`, `test_images`/`test_labels`;
images uint8 (n, side, side) for grayscale sets or (n, side, side, 3) for RGB ones such as
PathMNIST, side 28 or, for MedMNIST+, 64, 128 or 224; labels uint8 (n, 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


def medmnist_arrays(
    rgb: bool = False,
    sizes: tuple[int, int, int] = (30, 10, 12),
    *,
    classes: int = 3,
    side: int = 28,
) -> dict[str, np.ndarray]:
    """The six arrays of one MedMNIST set; labels cycle through `classes`, and each class's
    pixels are noise in a band of brightness of its own, so a model can learn them."""
    rng = np.random.default_rng(0)
    band = 256 // classes
    arrays: dict[str, np.ndarray] = {}
    for split, n in zip(SPLITS, sizes, strict=True):
        labels = (np.arange(n) % classes).astype(np.uint8)
        shape = (n, side, side, 3) if rgb else (n, side, side)
        level = labels.reshape((n,) + (1,) * (len(shape) - 1)).astype(np.int64) * band
        arrays[f"{split}_images"] = (level + rng.integers(0, band, shape)).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(n, 1)
    return arrays


def save(tmp_path: Path, arrays: dict[str, np.ndarray], name: str = "pathmnist.npz") -> Path:
    """Writes the arrays as MedMNIST does, compressed, and returns the file."""
    path = tmp_path / name
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return path
