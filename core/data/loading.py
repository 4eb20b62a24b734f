"""One entry point that loads any supported dataset: a built-in name, a CSV or .npz file, or a
folder of images or DICOM files (detected from its contents), plus a summary for the faces."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.data.builtin import BUILTIN_DATASETS, IMAGE_BUILTINS, load_builtin
from core.data.csv_loader import load_csv
from core.data.dataset import Dataset
from core.data.dicom_loader import load_dicom_folder
from core.data.image_folder import IMAGE_SUFFIXES, files_under, load_image_folder
from core.data.npz_loader import load_npz
from core.errors import ConfigError, DataError

__all__ = ["BUILTIN_DATASETS", "detect_format", "load_dataset", "dataset_summary"]

TABLE_SUFFIXES = frozenset({".csv", ".tsv"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_SNIFF_LIMIT = 500  # files looked at to tell a DICOM folder from an image folder


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def detect_format(path: Path) -> str:
    """ "csv", "npz", "images" or "dicom" for an existing file or folder."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in TABLE_SUFFIXES:
            return "csv"
        if suffix == ".npz":
            return "npz"
        if suffix in DICOM_SUFFIXES:
            raise DataError(
                f"'{path}' is a single DICOM file; choose the folder that holds the DICOM files "
                "(one sub-folder per class, or all files with a label attribute).",
                path=str(path),
            )
        raise DataError(
            f"'{path}' is not a supported file: choose a .csv table, a .npz image archive, "
            "or a folder of images or DICOM files.",
            path=str(path),
        )
    files = files_under(path)[:_SNIFF_LIMIT]
    if any(_is_dicom_file(f) for f in files):
        return "dicom"
    if any(f.suffix.lower() in IMAGE_SUFFIXES for f in files):
        return "images"
    raise DataError(f"The folder '{path}' holds neither PNG/JPEG images nor DICOM files.", path=str(path))


def _refuse(options: dict[str, bool], what: str) -> None:
    given = [name for name, is_given in options.items() if is_given]
    if given:
        raise ConfigError(f"The option(s) {', '.join(given)} do not apply to {what}.")


def load_dataset(
    source: str | Path,
    *,
    label_column: str | None = None,
    drop_columns: Sequence[str] = (),
    missing: str = "error",
    image_size: tuple[int, int] | None = None,
    channels: int = 1,
    dicom_label_tag: str | None = None,
    split: str | None = None,
) -> Dataset:
    """Loads a built-in dataset by name (see `BUILTIN_DATASETS`) or a file/folder by path.

    Options that do not apply to the detected kind of source are refused rather than ignored.
    For .npz files, `channels` converts only when it is 3 (the default keeps stored channels).
    """
    table_options = {
        "label_column": label_column is not None,
        "drop_columns": bool(drop_columns),
        "missing": missing != "error",
    }
    image_options = {"image_size": image_size is not None, "channels": channels != 1}
    dicom_options = {"dicom_label_tag": dicom_label_tag is not None}
    npz_options = {"split": split is not None}

    path = Path(source)
    if isinstance(source, str) and source in BUILTIN_DATASETS and not path.exists():
        if source in IMAGE_BUILTINS:
            _refuse(table_options | dicom_options | npz_options, f"the synthetic image set '{source}'")
        else:
            _refuse(
                table_options | image_options | dicom_options | npz_options, f"the built-in table '{source}'"
            )
        return load_builtin(source, image_size=image_size, channels=channels)
    if not path.exists():
        raise DataError(
            f"'{source}' is neither an existing file or folder nor a built-in dataset "
            f"({', '.join(BUILTIN_DATASETS)}).",
            path=str(source),
        )

    kind = detect_format(path)
    if kind == "csv":
        _refuse(image_options | dicom_options | npz_options, "a CSV table")
        return load_csv(path, label_column=label_column, drop_columns=drop_columns, missing=missing)
    if kind == "npz":
        _refuse(table_options | dicom_options, "an .npz image archive")
        return load_npz(path, split, image_size=image_size, channels=channels if channels != 1 else None)
    if kind == "images":
        _refuse(table_options | dicom_options | npz_options, "an image folder")
        return load_image_folder(path, image_size=image_size, channels=channels)
    _refuse(table_options | npz_options, "a DICOM folder")
    return load_dicom_folder(path, image_size=image_size, channels=channels, label_tag=dicom_label_tag)


def dataset_summary(dataset: Dataset) -> dict[str, Any]:
    """What the CLI prints and the GUI shows about a loaded dataset (JSON-serialisable)."""
    return {
        "name": dataset.name,
        "kind": dataset.kind.value,
        "source": dataset.source,
        "samples": dataset.num_samples,
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
        "class_counts": dataset.class_counts(),
        "features": list(dataset.feature_names),
        "notes": list(dataset.notes),
    }
