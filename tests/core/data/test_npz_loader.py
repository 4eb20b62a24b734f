"""MedMNIST-style .npz archives: splits, class names and every damaged layout refused clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data.dataset import DataKind
from core.data.npz_loader import load_npz
from core.errors import ConfigError, DataError
from tests.core.data.medmnist_sample import medmnist_arrays, save


def test_all_splits_concatenated_in_order(tmp_path: Path) -> None:
    arrays = medmnist_arrays()
    path = save(tmp_path, arrays)

    ds = load_npz(path)

    assert ds.kind is DataKind.IMAGE
    assert ds.x.shape == (52, 28, 28, 1) and ds.x.dtype == np.float32
    assert ds.class_names == ("class 0", "class 1", "class 2")
    np.testing.assert_allclose(ds.x[30, :, :, 0], arrays["val_images"][0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y[40:], arrays["test_labels"][:, 0])
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0


def test_one_split(tmp_path: Path) -> None:
    path = save(tmp_path, medmnist_arrays())

    ds = load_npz(path, split="val")

    assert ds.num_samples == 10
    assert ds.name == "pathmnist (val)"


def test_rgb_and_class_names(tmp_path: Path) -> None:
    arrays = medmnist_arrays(rgb=True)
    arrays["class_names"] = np.array(["adipose", "background", "debris"])
    path = save(tmp_path, arrays)

    ds = load_npz(path, split="train")

    assert ds.x.shape == (30, 28, 28, 3)
    assert ds.class_names == ("adipose", "background", "debris")


@pytest.mark.parametrize("rgb", [False, True])
@pytest.mark.parametrize("side", [28, 64, 128, 224])
def test_every_medmnist_size_grayscale_and_rgb_nine_classes(tmp_path: Path, side: int, rgb: bool) -> None:
    arrays = medmnist_arrays(rgb, (18, 9, 9), classes=9, side=side)
    assert arrays["train_labels"].shape == (18, 1) and arrays["train_labels"].dtype == np.uint8
    path = save(tmp_path, arrays)

    ds = load_npz(path)

    assert ds.x.shape == (36, side, side, 3 if rgb else 1) and ds.x.dtype == np.float32
    assert ds.num_classes == 9 and ds.class_counts() == {f"class {i}": 4 for i in range(9)}
    np.testing.assert_allclose(ds.x[0], np.atleast_3d(arrays["train_images"][0]) / 255.0, rtol=1e-6)


def test_resize_and_channel_conversion(tmp_path: Path) -> None:
    path = save(tmp_path, medmnist_arrays())

    ds = load_npz(path, split="test", image_size=(16, 20), channels=3)

    assert ds.x.shape == (12, 16, 20, 3)


def test_unknown_split(tmp_path: Path) -> None:
    path = save(tmp_path, medmnist_arrays())
    with pytest.raises(ConfigError, match="Unknown split 'validation'"):
        load_npz(path, split="validation")


def test_missing_keys_are_named(tmp_path: Path) -> None:
    arrays = medmnist_arrays()
    del arrays["val_labels"]
    path = save(tmp_path, arrays)

    with pytest.raises(DataError) as info:
        load_npz(path)

    assert "lacks the array(s) val_labels" in info.value.user_message
    # The split that is complete still loads on its own.
    assert load_npz(path, split="train").num_samples == 30


def test_no_expected_keys(tmp_path: Path) -> None:
    path = save(tmp_path, {"images": np.zeros((3, 8, 8), np.uint8)})
    with pytest.raises(DataError, match="none of the expected arrays .* it holds: images"):
        load_npz(path)


def test_mismatched_lengths(tmp_path: Path) -> None:
    arrays = medmnist_arrays()
    arrays["test_labels"] = arrays["test_labels"][:-2]
    path = save(tmp_path, arrays)
    with pytest.raises(DataError, match="test_images has 12 images but test_labels has 10 labels"):
        load_npz(path)


@pytest.mark.parametrize("shape", [(5, 28), (5, 28, 28, 2), (5, 2, 28, 28, 1)])
def test_wrong_image_rank(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = save(
        tmp_path, {"train_images": np.zeros(shape, np.uint8), "train_labels": np.zeros((5, 1), np.uint8)}
    )
    with pytest.raises(DataError, match=f"has shape \\({shape[0]}, "):
        load_npz(path)


def test_multilabel_refused(tmp_path: Path) -> None:
    path = save(
        tmp_path, {"train_images": np.zeros((5, 8, 8), np.uint8), "train_labels": np.zeros((5, 14), np.uint8)}
    )
    with pytest.raises(DataError, match="multi-label"):
        load_npz(path)


def test_image_sizes_differ_between_splits(tmp_path: Path) -> None:
    arrays = medmnist_arrays()
    arrays["test_images"] = np.zeros((12, 32, 32), np.uint8)
    path = save(tmp_path, arrays)
    with pytest.raises(DataError, match="test_images are"):
        load_npz(path)


def test_float_pixels_outside_unit_range(tmp_path: Path) -> None:
    path = save(tmp_path, {"train_images": np.full((4, 8, 8), 3.0), "train_labels": np.array([0, 1, 0, 1])})
    with pytest.raises(DataError, match="outside \\[0, 1\\]"):
        load_npz(path)


def test_pickled_object_array_is_refused(tmp_path: Path) -> None:
    labels = np.empty((4,), dtype=object)
    labels[:] = [0, 1, 0, 1]
    path = save(tmp_path, {"train_images": np.zeros((4, 8, 8), np.uint8), "train_labels": labels})

    with pytest.raises(DataError, match="pickled Python objects"):
        load_npz(path)


def test_truncated_archive(tmp_path: Path) -> None:
    path = save(tmp_path, medmnist_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(DataError) as info:
        load_npz(path)

    assert str(path) in info.value.user_message


def test_corrupt_member_inside_a_valid_zip(tmp_path: Path) -> None:
    path = tmp_path / "stored.npz"
    np.savez(path, train_images=np.zeros((50, 28, 28), np.uint8), train_labels=np.zeros((50, 1), np.uint8))
    data = bytearray(path.read_bytes())
    data[2000:2100] = b"\xff" * 100  # inside train_images' bytes: the CRC no longer matches
    path.write_bytes(bytes(data))

    with pytest.raises(DataError, match="corrupt or truncated"):
        load_npz(path)


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    path.write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz archive"):
        load_npz(path)


def test_single_npy_renamed(tmp_path: Path) -> None:
    path = tmp_path / "single.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match="single array"):
        load_npz(path)


def test_labels_beyond_class_names(tmp_path: Path) -> None:
    path = save(
        tmp_path,
        {
            "train_images": np.zeros((4, 8, 8), np.uint8),
            "train_labels": np.array([0, 1, 2, 1]),
            "class_names": np.array(["a", "b"]),
        },
    )
    with pytest.raises(DataError, match="labels up to 2 but only 2 class names"):
        load_npz(path)


def test_a_file_too_big_for_memory_is_refused_before_any_pixel_is_read(tmp_path: Path) -> None:
    # A pathmnist-224-sized header (300 GB as float32) with no pixels behind it: the refusal must
    # come from the header alone, not from running out of memory.
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (200_000, 224, 224, 3)})
    labels = io.BytesIO()
    np.save(labels, np.zeros((200_000, 1), np.uint8))
    path = tmp_path / "pathmnist_224.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train_images.npy", header.getvalue())
        archive.writestr("train_labels.npy", labels.getvalue())

    with pytest.raises(DataError, match=r"need about \d+\.\d GiB of memory to load.*MedMNIST\+ comes in 28, 64"):
        load_npz(path)
