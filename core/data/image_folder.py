"""Loads a folder of PNG/JPEG images, one sub-folder per class, into an image `Dataset`.

Also holds the pixel helpers the DICOM loader shares: conversion to float [0, 1], channel
conversion and resizing to a common size, so both loaders produce identical layouts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.data.dataset import DataKind, Dataset
from core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
# Files an operating system or viewer leaves behind; never worth reporting.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})
# Grayscale weights of ITU-R BT.601, the ones Pillow's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def check_image_options(image_size: tuple[int, int] | None, channels: int) -> None:
    """Rejects a target size or channel count no loader can honour."""
    if channels not in (1, 3):
        raise ConfigError(f"Channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
    if image_size is not None:
        if (
            len(image_size) != 2
            or not all(isinstance(v, (int, np.integer)) for v in image_size)
            or min(image_size) < 1
        ):
            raise ConfigError(
                f"Image size must be two positive integers (height, width), got {image_size!r}."
            )
        if max(image_size) > 1024:
            raise ConfigError(f"Image size {image_size} is too large for training; use at most 1024x1024.")


def is_visible_file(path: Path) -> bool:
    """False for hidden files and operating-system clutter such as Thumbs.db."""
    return path.is_file() and not path.name.startswith(".") and path.name.lower() not in _SYSTEM_FILES


def class_folders(root: Path) -> list[Path]:
    """The visible sub-folders of `root`, sorted by name: one per class."""
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )


def two_or_more_class_folders(root: Path, what: str, advice: str) -> list[Path]:
    """`class_folders(root)`, refused with a DataError naming `what` ("image folder") unless there
    are at least two; `advice` says how to lay the folder out when there are none."""
    folders = class_folders(root)
    if not folders:
        raise DataError(f"The {what} '{root}' has no class sub-folders. {advice}", path=str(root))
    if len(folders) < 2:
        raise DataError(
            f"The {what} '{root}' has only one class sub-folder ('{folders[0].name}'); "
            "a classifier needs at least two classes.",
            path=str(root),
        )
    return folders


def files_under(folder: Path) -> list[Path]:
    """Every visible file below `folder` (any depth), in a stable order."""
    return sorted(
        (p for p in folder.rglob("*") if is_visible_file(p) and not _in_hidden_dir(p, folder)),
        key=lambda p: p.relative_to(folder).as_posix(),
    )


def _in_hidden_dir(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts[:-1])


def to_layout(pixels: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, C) floats in [0, 1] -> (H, W, channels) float32."""
    arr = pixels.astype(np.float32, copy=False)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 4:  # drop alpha
        arr = arr[:, :, :3]
    if arr.shape[2] == 2:  # gray + alpha
        arr = arr[:, :, :1]
    if channels == 1 and arr.shape[2] == 3:
        arr = (arr @ _LUMA)[:, :, None]
    elif channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.clip(arr, 0.0, 1.0)


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W, C) float image to `size` = (height, width), per channel."""
    height, width = size
    if pixels.shape[:2] == (height, width):
        return pixels
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels[:, :, c], dtype=np.float32)).resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for c in range(pixels.shape[2])
    ]
    return np.clip(np.stack(planes, axis=2), 0.0, 1.0).astype(np.float32)


def stack_images(images: Iterable[np.ndarray]) -> np.ndarray:
    return np.stack(list(images), axis=0).astype(np.float32, copy=False)


def read_image(path: Path) -> np.ndarray:
    """A PNG/JPEG file as (H, W) or (H, W, 3) floats in [0, 1]; 16-bit grayscale keeps its depth."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                arr = np.asarray(img, dtype=np.float64)
                top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
                return np.clip(arr / top, 0.0, 1.0)
            if mode == "F":
                arr = np.asarray(img, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
            if mode in ("L", "1", "LA", "P;L"):
                return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
            return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"The image '{path}' cannot be read: it is corrupt, truncated or not a PNG/JPEG file.",
            path=str(path),
            detail=str(exc),
        ) from exc


def load_image_folder(
    path: str | Path, *, image_size: tuple[int, int] | None = None, channels: int = 1
) -> Dataset:
    """Loads `path/<class>/**/*.png|jpg`, resized to `image_size` (default: the first image's size)."""
    root = Path(path)
    check_image_options(image_size, channels)
    if not root.is_dir():
        raise DataError(f"'{root}' is not a folder.", path=str(root))
    loose = any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir())
    classes = two_or_more_class_folders(
        root,
        "image folder",
        ("The images lie directly in it; " if loose else "")
        + "Put the images of each class in a sub-folder named after the class (e.g. benign/, malignant/).",
    )

    files: list[tuple[Path, int]] = []
    ignored: list[Path] = []
    for label, folder in enumerate(classes):
        found = files_under(folder)
        images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
        ignored.extend(p for p in found if p.suffix.lower() not in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"The class folder '{folder}' contains no PNG or JPEG images.", path=str(folder))
        files.extend((p, label) for p in images)

    target = image_size
    pixels: list[np.ndarray] = []
    sizes: dict[tuple[int, int], int] = {}
    for file, _label in files:
        arr = to_layout(read_image(file), channels)
        size = (int(arr.shape[0]), int(arr.shape[1]))
        sizes[size] = sizes.get(size, 0) + 1
        if target is None:
            target = size
        pixels.append(resize(arr, target))

    notes: list[str] = []
    if len(sizes) > 1:
        assert target is not None
        shown = ", ".join(f"{n} at {h}x{w}" for (h, w), n in sorted(sizes.items(), key=lambda kv: -kv[1])[:4])
        notes.append(f"The images have {len(sizes)} different sizes ({shown}"
                     + (", ..." if len(sizes) > 4 else "")
                     + f"); all were resized to {target[0]}x{target[1]}.")
        logger.warning("%s: %s", root, notes[-1])
    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:5])
        notes.append(
            f"Ignored {len(ignored)} file(s) that are not PNG/JPEG images: {shown}"
            + (", ..." if len(ignored) > 5 else "")
        )
        logger.warning("%s: %s", root, notes[-1])
    assert target is not None
    notes.append(f"Images resized to {target[0]}x{target[1]} with {channels} channel(s).")
    return Dataset(
        name=root.name,
        kind=DataKind.IMAGE,
        x=stack_images(pixels),
        y=np.array([label for _f, label in files], dtype=np.int64),
        class_names=tuple(p.name for p in classes),
        source=str(root),
        notes=tuple(notes),
    )
