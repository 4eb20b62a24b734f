"""Use case: load a hospital's local dataset, record it in SQLite, and load it again later.

The database keeps a dataset's description (`record_dataset`); how it was loaded (which CSV
column is the label, which columns were left out) is kept beside it in the data directory so
that training or a federation run after a restart reads the same data the user chose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.data.csv_loader import read_table
from core.data.dataset import DataKind, Dataset
from core.data.loading import BUILTIN_DATASETS, detect_format, load_dataset
from core.errors import DataError, StateError
from core.state.db import Database
from core.state.queries import DatasetView, list_datasets, record_dataset

log = logging.getLogger(__name__)

PREVIEW_ROWS = 50
THUMBNAILS_PER_CLASS = 8


@dataclass(frozen=True)
class LoadRequest:
    """What to load: a built-in name or a path, the options of a CSV table, and for a DICOM
    folder the attribute that holds the class (None: the class sub-folders)."""

    source: str
    label_column: str | None = None
    drop_columns: tuple[str, ...] = ()
    missing: str = "error"
    dicom_label_tag: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "label_column": self.label_column,
                "drop_columns": list(self.drop_columns), "missing": self.missing,
                "dicom_label_tag": self.dicom_label_tag}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LoadRequest:
        return cls(source=str(values["source"]), label_column=values.get("label_column"),
                   drop_columns=tuple(values.get("drop_columns") or ()), missing=values.get("missing", "error"),
                   dicom_label_tag=values.get("dicom_label_tag"))

    def load(self) -> Dataset:
        """Reads the data as asked (DataError on bad files)."""
        return load_dataset(self.source, label_column=self.label_column, drop_columns=self.drop_columns,
                            missing=self.missing, dicom_label_tag=self.dicom_label_tag)


@dataclass(frozen=True)
class TablePreview:
    """The first rows of a table, as text, with its column names."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    total_rows: int


@dataclass(frozen=True)
class Thumbnail:
    class_name: str
    pixels: np.ndarray  # (height, width) or (height, width, 3), uint8


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset in memory, its row in the database, and what the Data page previews of it."""

    view: DatasetView
    dataset: Dataset
    request: LoadRequest
    table: TablePreview | None = None
    thumbnails: tuple[Thumbnail, ...] = field(default=())


def builtin_datasets() -> dict[str, str]:
    """The bundled datasets by name, with a one-line description."""
    return dict(BUILTIN_DATASETS)


def source_kind(path: Path) -> str:
    """ "csv", "npz", "images" or "dicom" for a file or folder the user picked (DataError if none)."""
    return detect_format(path)


def csv_preview(path: Path, rows: int = PREVIEW_ROWS) -> TablePreview:
    """The columns and first rows of a CSV file, before the user picks its label column."""
    table = read_table(path)
    return TablePreview(columns=tuple(table.header),
                        rows=tuple(tuple(r) for r in table.rows[:rows]), total_rows=len(table.rows))


def table_preview(dataset: Dataset, rows: int = PREVIEW_ROWS) -> TablePreview:
    """The first rows of a table dataset as the model sees them (standardised), with the label."""
    shown = min(rows, dataset.num_samples)
    columns = (*dataset.feature_names, "class") if dataset.feature_names else (
        *(f"feature {i + 1}" for i in range(dataset.input_shape[0])), "class")
    body = tuple(
        (*(f"{v:.3f}" for v in dataset.x[i]), dataset.class_names[int(dataset.y[i])]) for i in range(shown)
    )
    return TablePreview(columns=tuple(columns), rows=body, total_rows=dataset.num_samples)


def thumbnails(dataset: Dataset, per_class: int = THUMBNAILS_PER_CLASS) -> tuple[Thumbnail, ...]:
    """A few images of each class, as 8-bit pixels, for the image preview."""
    out: list[Thumbnail] = []
    for label, name in enumerate(dataset.class_names):
        for index in np.flatnonzero(dataset.y == label)[:per_class]:
            image = np.clip(dataset.x[index] * 255.0, 0, 255).astype(np.uint8)
            out.append(Thumbnail(name, image[..., 0] if image.shape[-1] == 1 else np.ascontiguousarray(image)))
    return tuple(out)


def request_for(view: DatasetView) -> LoadRequest:
    """How a recorded dataset was loaded (a built-in by name, or a file with default options)."""
    if view.load_options:
        return LoadRequest.from_dict(view.load_options)
    if view.name in BUILTIN_DATASETS:
        return LoadRequest(view.name)
    return LoadRequest(view.source)


def load_and_record(db: Database, request: LoadRequest) -> LoadedDataset:
    """Loads the data (DataError on bad files), records it, and prepares its preview."""
    dataset = request.load()
    view = record_dataset(db, dataset, request.as_dict())
    log.info("Loaded dataset %s (%d samples) from %s", dataset.name, dataset.num_samples, request.source)
    return _loaded(view, dataset, request)


def _loaded(view: DatasetView, dataset: Dataset, request: LoadRequest) -> LoadedDataset:
    if dataset.kind is DataKind.TABLE:
        return LoadedDataset(view, dataset, request, table=table_preview(dataset))
    return LoadedDataset(view, dataset, request, thumbnails=thumbnails(dataset))


def load_recorded(db: Database, dataset_id: int) -> LoadedDataset:
    """Loads a recorded dataset again from where it came from, with the options chosen then."""
    view = next((d for d in list_datasets(db) if d.id == dataset_id), None)
    if view is None:
        raise StateError(f"There is no dataset {dataset_id} in the local database.")
    request = request_for(view)
    try:
        dataset = request.load()
    except DataError as exc:
        raise DataError(f"The dataset '{view.name}' could not be read again from {request.source}: "
                        f"{exc.user_message}", path=request.source) from exc
    return _loaded(view, dataset, request)
