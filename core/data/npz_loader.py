"""Loads image sets stored as `.npz` in the MedMNIST layout into an image `Dataset`.

The layout: `train_images`/`train_labels`, `val_images`/`val_labels`, `test_images`/`test_labels`,
images uint8 (n, H, W) or (n, H, W, 3), labels (n, 1); an optional `class_names` string array.
Pickled arrays are refused (`allow_pickle=False`): a pickle can run code when loaded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import psutil

from core.data.dataset import DataKind, Dataset
from core.data.image_folder import check_image_options, resize, to_layout
from core.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
# Loading holds each split as read, its float32 pixels and the concatenation of all splits.
_COPIES_WHILE_LOADING = 2.5


def _image_bytes(archive: np.lib.npyio.NpzFile, key: str) -> int:
    """The float32 size of the images stored under `key`, read from the .npy header alone."""
    try:
        with archive.zip.open(f"{key}.npy") as member:
            major, _ = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(member)
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError):
        return 0  # unreadable here: reading the array itself says what is wrong
    return int(np.prod(shape, dtype=np.int64)) * 4


def _check_memory(archive: np.lib.npyio.NpzFile, keys: list[str], path: Path) -> None:
    """Refuses, before reading any pixel, a file whose images do not fit in the free memory
    (a MedMNIST+ file at 224 pixels is tens of GB as float32) instead of being killed midway."""
    needed = _COPIES_WHILE_LOADING * sum(_image_bytes(archive, k) for k in keys)
    available = psutil.virtual_memory().available
    if needed > available:
        raise DataError(
            f"The images in '{path}' need about {needed / 2**30:.1f} GiB of memory to load, and this "
            f"machine has {available / 2**30:.1f} GiB free. Use a smaller image size of the set (MedMNIST+ "
            "comes in 28, 64, 128 and 224 pixels), or load one split only.",
            path=str(path),
        )


def _open(path: Path) -> np.lib.npyio.NpzFile:
    if not path.is_file():
        raise DataError(f"The file '{path}' does not exist.", path=str(path))
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataError(
            f"The file '{path}' is not a readable .npz archive (corrupt, truncated or another format).",
            path=str(path),
            detail=str(exc),
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"The file '{path}' holds a single array (.npy), not an .npz archive of named splits.",
            path=str(path),
        )
    return archive


def _array(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        arr = archive[key]
    except ValueError as exc:
        # numpy raises ValueError for object arrays when allow_pickle=False.
        raise DataError(
            f"The array '{key}' in '{path}' is stored as pickled Python objects, which are refused "
            "for safety; store it as a plain numeric or string array.",
            path=str(path),
            detail=str(exc),
        ) from exc
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise DataError(
            f"The array '{key}' in '{path}' cannot be read; the file is corrupt or truncated.",
            path=str(path),
            detail=str(exc),
        ) from exc
    if arr.dtype == object:
        raise DataError(f"The array '{key}' in '{path}' holds Python objects; it is refused.", path=str(path))
    return arr


def _images(arr: np.ndarray, key: str, path: Path) -> np.ndarray:
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[3] not in (1, 3):
        raise DataError(
            f"'{key}' in '{path}' has shape {arr.shape}; images must be (n, height, width) or "
            "(n, height, width, 3).",
            path=str(path),
        )
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or arr.min(initial=0.0) < 0.0 or arr.max(initial=0.0) > 1.0:
            raise DataError(
                f"'{key}' in '{path}' holds floating-point pixels outside [0, 1] or NaN values.",
                path=str(path),
            )
        return arr.astype(np.float32)
    raise DataError(
        f"'{key}' in '{path}' has pixel type {arr.dtype}; expected uint8 (0-255) or floats in [0, 1].",
        path=str(path),
    )


def _labels(arr: np.ndarray, key: str, path: Path) -> np.ndarray:
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        hint = " (multi-label sets such as ChestMNIST are not supported)" if arr.ndim == 2 else ""
        raise DataError(
            f"'{key}' in '{path}' has shape {arr.shape}; labels must be (n, 1) or (n,){hint}.",
            path=str(path),
        )
    if not np.issubdtype(arr.dtype, np.integer):
        if (
            np.issubdtype(arr.dtype, np.floating)
            and np.all(np.isfinite(arr))
            and np.all(arr == np.round(arr))
        ):
            arr = arr.astype(np.int64)
        else:
            raise DataError(
                f"'{key}' in '{path}' must hold integer class numbers, not {arr.dtype}.", path=str(path)
            )
    if arr.size and arr.min() < 0:
        raise DataError(f"'{key}' in '{path}' holds negative class numbers.", path=str(path))
    return arr.astype(np.int64)


def load_npz(
    path: str | Path,
    split: str | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> Dataset:
    """Loads one split ("train", "val", "test") or, with `split=None`, every split present
    concatenated in that order. `image_size`/`channels` convert the images; None keeps them."""
    file = Path(path)
    if split is not None and split not in SPLITS:
        raise ConfigError(f"Unknown split '{split}'; choose one of {', '.join(SPLITS)} (or none for all).")
    check_image_options(image_size, channels or 1)
    archive = _open(file)
    with archive:
        keys = set(archive.files)
        wanted = (
            [split]
            if split is not None
            else [s for s in SPLITS if f"{s}_images" in keys or f"{s}_labels" in keys]
        )
        if not wanted:
            raise DataError(
                f"The file '{file}' has none of the expected arrays "
                f"({', '.join(f'{s}_images, {s}_labels' for s in SPLITS)}); it holds: "
                f"{', '.join(sorted(keys)) or 'nothing'}.",
                path=str(file),
            )
        missing = [k for s in wanted for k in (f"{s}_images", f"{s}_labels") if k not in keys]
        if missing:
            raise DataError(
                f"The file '{file}' lacks the array(s) {', '.join(missing)}; "
                f"it holds: {', '.join(sorted(keys))}.",
                path=str(file),
            )
        _check_memory(archive, [f"{s}_images" for s in wanted], file)
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        for s in wanted:
            x = _images(_array(archive, f"{s}_images", file), f"{s}_images", file)
            y = _labels(_array(archive, f"{s}_labels", file), f"{s}_labels", file)
            if x.shape[0] != y.shape[0]:
                raise DataError(
                    f"In '{file}', {s}_images has {x.shape[0]} images "
                    f"but {s}_labels has {y.shape[0]} labels.",
                    path=str(file),
                )
            if x.shape[0] == 0:
                raise DataError(f"In '{file}', the '{s}' split is empty.", path=str(file))
            if xs and x.shape[1:] != xs[0].shape[1:]:
                raise DataError(
                    f"In '{file}', {s}_images are {x.shape[1:]} "
                    f"but {wanted[0]}_images are {xs[0].shape[1:]}.",
                    path=str(file),
                )
            xs.append(x)
            ys.append(y)
        names_arr = _array(archive, "class_names", file) if "class_names" in keys else None

    y_all = np.concatenate(ys)
    if names_arr is not None:
        if names_arr.ndim != 1 or names_arr.dtype.kind not in "US":
            raise DataError(f"'class_names' in '{file}' must be a 1-D array of strings.", path=str(file))
        class_names = tuple(str(n.decode() if isinstance(n, bytes) else n) for n in names_arr)
        if int(y_all.max()) >= len(class_names):
            raise DataError(
                f"'{file}' has labels up to {int(y_all.max())} but only {len(class_names)} class names.",
                path=str(file),
            )
    else:
        class_names = tuple(f"class {i}" for i in range(int(y_all.max()) + 1))

    x_all = np.concatenate(xs)
    notes = [f"Splits loaded: {', '.join(wanted)}."]
    if image_size is not None or (channels is not None and channels != x_all.shape[3]):
        target = image_size or (int(x_all.shape[1]), int(x_all.shape[2]))
        ch = channels or int(x_all.shape[3])
        x_all = np.stack([resize(to_layout(img, ch), target) for img in x_all]).astype(np.float32)
        notes.append(f"Images converted to {target[0]}x{target[1]} with {ch} channel(s).")
    return Dataset(
        name=file.stem if split is None else f"{file.stem} ({split})",
        kind=DataKind.IMAGE,
        x=x_all,
        y=y_all,
        class_names=class_names,
        source=str(file),
        notes=tuple(notes),
    )
