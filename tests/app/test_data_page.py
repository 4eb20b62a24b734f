"""The Data page: loading the bundled set, a CSV with chosen columns, and refusing bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog
from pytestqt.qtbot import QtBot

from app.main_window import MainWindow
from core.state.queries import list_datasets
from tests.app.gui import choose, click, column, go_to, load_bundled, message_boxes


def test_bundled_dataset_is_previewed_counted_and_recorded(qtbot: QtBot, window: MainWindow) -> None:
    load_bundled(qtbot, window)

    page = window.data
    qtbot.waitUntil(lambda: page.preview_table.rowCount() > 0, timeout=20_000)
    assert page.preview.currentWidget() is page.preview_table
    assert page.preview_table.horizontalHeaderItem(0).text() == "mean radius"
    bars = page.balance_bars.opts["height"]
    assert sorted(int(h) for h in bars) == [212, 357]  # malignant, benign
    assert "569 cases" in page.status.text()
    [recorded] = list_datasets(window.model.db)
    assert (recorded.name, recorded.samples) == ("breast_cancer", 569)


def _write_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = ["patient_id,age,size,density,margin,diagnosis"]
    for i in range(60):
        label = "malignant" if i % 3 == 0 else "benign"
        values = rng.normal(size=4) + (1.5 if label == "malignant" else 0.0)
        lines.append(f"P{i:03d}," + ",".join(f"{v:.3f}" for v in values) + f",{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_is_loaded_with_the_chosen_label_and_without_the_left_out_column(
    qtbot: QtBot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = _write_csv(tmp_path / "patients.csv")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(csv), ""))
    page = go_to(qtbot, window, "Data")

    click(qtbot, page.open_csv)
    assert page.csv_box.isVisible()
    assert page.preview_table.rowCount() == 50  # the raw rows, before choosing
    choose(qtbot, page.label_column, "diagnosis")
    ids = page.drop_columns.item(0)
    assert ids.text() == "patient_id"
    qtbot.mouseClick(page.drop_columns.viewport(), Qt.MouseButton.LeftButton,
                     pos=page.drop_columns.visualItemRect(ids).center())
    qtbot.keyClick(page.drop_columns, Qt.Key.Key_Space)
    assert ids.checkState() == Qt.CheckState.Checked
    click(qtbot, page.load_csv)

    qtbot.waitUntil(lambda: "patients" in column(page.table, 0), timeout=20_000)
    [recorded] = list_datasets(window.model.db)
    assert recorded.input_shape == (4,)  # patient_id left out, diagnosis is the label
    assert recorded.class_counts == {"benign": 40, "malignant": 20}
    assert not page.csv_box.isVisible()
    assert not message_boxes(window)


def test_a_corrupt_csv_is_refused_with_a_clear_message(
    qtbot: QtBot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corrupt = tmp_path / "export.csv"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(corrupt), ""))
    page = go_to(qtbot, window, "Data")

    click(qtbot, page.open_csv)

    [box] = message_boxes(window)
    assert "binary data" in box.text() and "export the table" in box.text()
    assert not page.csv_box.isVisible()
    assert list_datasets(window.model.db) == []


def test_a_damaged_npz_archive_is_refused_and_nothing_is_recorded(
    qtbot: QtBot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    damaged = tmp_path / "pathmnist.npz"
    damaged.write_bytes(b"PK\x03\x04 this archive was cut off in transfer")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(damaged), ""))
    page = go_to(qtbot, window, "Data")

    click(qtbot, page.open_npz)

    qtbot.waitUntil(lambda: bool(message_boxes(window)), timeout=20_000)
    [box] = message_boxes(window)
    assert "pathmnist.npz" in box.text()
    assert "nothing was recorded" in page.status.text()
    assert list_datasets(window.model.db) == []


def test_an_image_folder_is_shown_as_thumbnails_per_class(
    qtbot: QtBot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for label, brightness in (("benign", 60), ("malignant", 190)):
        folder = tmp_path / "scans" / label
        folder.mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(brightness, 20, size=(16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{label}-{i}.png")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "scans"))
    page = go_to(qtbot, window, "Data")

    click(qtbot, page.open_images)

    qtbot.waitUntil(lambda: page.thumbnails.count() > 0, timeout=20_000)
    assert page.preview.currentWidget() is page.thumbnails
    labels = [page.thumbnails.item(i).text() for i in range(page.thumbnails.count())]
    assert labels == ["benign"] * 8 + ["malignant"] * 8
    [recorded] = list_datasets(window.model.db)
    assert (recorded.kind, recorded.samples) == ("image", 24)


def test_a_medmnist_archive_is_loaded_with_its_splits(
    qtbot: QtBot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(2)
    archive = tmp_path / "breastmnist.npz"
    arrays = {}
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(archive, **arrays)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(archive), ""))
    page = go_to(qtbot, window, "Data")

    click(qtbot, page.open_npz)

    qtbot.waitUntil(lambda: page.thumbnails.count() == 16, timeout=20_000)
    [recorded] = list_datasets(window.model.db)
    assert (recorded.kind, recorded.samples, recorded.input_shape) == ("image", 60, (28, 28, 1))
    assert sorted(recorded.class_counts.values()) == [30, 30]


@pytest.mark.parametrize(("tag", "classes"), [("", ("benign", "malignant")), ("PatientSex", ("F", "M"))])
def test_a_dicom_folder_takes_its_classes_from_sub_folders_or_from_the_chosen_attribute(
    qtbot: QtBot, window: MainWindow, monkeypatch: pytest.MonkeyPatch, tag: str, classes: tuple[str, ...]
) -> None:
    folder = Path(__file__).resolve().parents[2] / "resources" / "samples" / "lesions_dicom"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    page = go_to(qtbot, window, "Data")

    if tag:
        qtbot.keyClicks(page.dicom_tag, tag)
    click(qtbot, page.open_dicom)

    qtbot.waitUntil(lambda: page.thumbnails.count() > 0, timeout=30_000)
    [recorded] = list_datasets(window.model.db)
    assert (recorded.kind, recorded.samples, recorded.classes) == ("image", 20, classes)
    assert recorded.load_options["dicom_label_tag"] == (tag or None)
