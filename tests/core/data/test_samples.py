"""The demo samples the GUI offers are reproducible and load through the one entry point."""

from __future__ import annotations

import hashlib
import importlib.util
import time
from pathlib import Path
from types import ModuleType

from core.data.loading import load_dataset

SCRIPT = Path(__file__).resolve().parents[3] / "resources" / "samples" / "make_samples.py"


def sample_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_samples", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_digest(root: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        sha.update(path.relative_to(root).as_posix().encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def test_samples_load_and_are_reproducible(tmp_path: Path) -> None:
    make_samples = sample_module().make_samples

    csv_path, npz_path, png_dir, dicom_dir = make_samples(tmp_path / "a")
    time.sleep(1.1)  # archives stamped with the clock would now differ
    make_samples(tmp_path / "b")

    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert not list((tmp_path / "a").rglob("*.tmp"))

    table = load_dataset(csv_path, label_column="diagnosis", drop_columns=["id"])
    assert table.class_counts() == {"B": 357, "M": 212}
    assert table.input_shape == (30,)
    assert "radius_se" in table.feature_names

    archive = load_dataset(npz_path)
    assert archive.class_names == ("benign", "malignant") and archive.num_samples == 300

    pngs = load_dataset(png_dir)
    assert pngs.x.shape == (40, 28, 28, 1)

    by_folder = load_dataset(dicom_dir)
    by_sex = load_dataset(dicom_dir, dicom_label_tag="PatientSex")
    assert by_folder.class_counts() == {"benign": 10, "malignant": 10}
    assert by_sex.class_names == ("F", "M")
