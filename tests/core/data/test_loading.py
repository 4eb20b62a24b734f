"""The single entry point: built-in names, each kind of path detected, options checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from core.data.dataset import DataKind
from core.data.loading import BUILTIN_DATASETS, dataset_summary, load_dataset
from core.errors import ConfigError, DataError


def test_builtin_names() -> None:
    assert set(BUILTIN_DATASETS) == {"breast_cancer", "diabetes", "synthetic_images", "synthetic_tissue"}
    assert load_dataset("breast_cancer").class_names == ("malignant", "benign")
    assert load_dataset("synthetic_images", image_size=(32, 32), channels=3).input_shape == (32, 32, 3)


def test_csv_path(tmp_path: Path) -> None:
    path = tmp_path / "wdbc.csv"
    path.write_text("id,diagnosis,r,t\n1,M,1.0,2\n2,B,2.0,3\n3,B,2.5,1\n")

    ds = load_dataset(path, label_column="diagnosis", drop_columns=["id"])

    assert ds.kind is DataKind.TABLE and ds.class_names == ("B", "M")


def test_npz_path(tmp_path: Path) -> None:
    path = tmp_path / "set.npz"
    np.savez(path, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.array([[0], [1], [0], [1]]))

    ds = load_dataset(str(path), split="train")

    assert ds.input_shape == (28, 28, 1)


def test_image_folder_path(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "imgs" / cls / "x.png")

    ds = load_dataset(tmp_path / "imgs", image_size=(28, 28))

    assert ds.x.shape == (2, 28, 28, 1)


def test_dicom_folder_detected_by_content(tmp_path: Path) -> None:
    for cls, name in (("ct", "CT_small.dcm"), ("mr", "MR_small.dcm")):
        (tmp_path / "scans" / cls).mkdir(parents=True)
        shutil.copyfile(str(get_testdata_file(name)), tmp_path / "scans" / cls / "IM0001")  # no suffix

    ds = load_dataset(tmp_path / "scans", image_size=(28, 28))

    assert ds.class_names == ("ct", "mr") and ds.x.shape == (2, 28, 28, 1)


def test_unknown_source_lists_builtins(tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match="neither an existing file or folder nor a built-in dataset "
        "\\(breast_cancer, diabetes, synthetic_images, synthetic_tissue\\)",
    ):
        load_dataset("breast-cancer")


def test_unsupported_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "report.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match="not a supported file"):
        load_dataset(tmp_path / "report.xlsx")
    (tmp_path / "docs" / "a").mkdir(parents=True)
    (tmp_path / "docs" / "a" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="neither PNG/JPEG images nor DICOM files"):
        load_dataset(tmp_path / "docs")


def test_single_dicom_file_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    shutil.copyfile(str(get_testdata_file("CT_small.dcm")), path)
    with pytest.raises(DataError, match="single DICOM file; choose the folder"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("source", "kwargs", "match"),
    [
        ("breast_cancer", {"image_size": (28, 28)}, "image_size do not apply to the built-in table"),
        ("synthetic_images", {"label_column": "x"}, "label_column do not apply"),
        (
            "synthetic_tissue",
            {"split": "train"},
            "split do not apply to the synthetic image set 'synthetic_tissue'",
        ),
        (
            "diabetes",
            {"dicom_label_tag": "PatientSex", "split": "train"},
            "dicom_label_tag, split do not apply",
        ),
    ],
)
def test_options_that_do_not_apply_are_refused(source: str, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_dataset(source, **kwargs)  # type: ignore[arg-type]


def test_csv_refuses_image_options(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,x\n3,4,y\n")
    with pytest.raises(ConfigError, match="channels do not apply to a CSV table"):
        load_dataset(path, channels=3)


def test_summary_is_json_ready() -> None:
    summary = dataset_summary(load_dataset("diabetes"))

    assert json.loads(json.dumps(summary)) == summary
    assert summary["name"] == "diabetes"
    assert summary["kind"] == "table"
    assert summary["samples"] == 442
    assert summary["input_shape"] == [10]
    assert summary["class_counts"] == {"low": 221, "high": 221}
    assert any("median" in note for note in summary["notes"])
