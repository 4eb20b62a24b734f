"""Image folders: class sub-folders, resizing, channels, and unreadable files named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.dataset import DataKind
from core.data.image_folder import load_image_folder
from core.errors import ConfigError, DataError


def save_image(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_folder(root: Path) -> Path:
    """benign/: two dark 20x30 grayscale PNGs; malignant/: one bright RGB JPEG and one PNG in a sub-folder."""
    save_image(root / "benign" / "a.png", np.full((20, 30), 10, np.uint8))
    save_image(root / "benign" / "b.png", np.full((20, 30), 20, np.uint8))
    save_image(root / "malignant" / "c.jpg", np.full((40, 40, 3), 250, np.uint8))
    save_image(root / "malignant" / "patient-7" / "d.png", np.full((10, 10), 255, np.uint8))
    return root


def test_loads_classes_sizes_and_values(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "lesions")

    ds = load_image_folder(root)

    assert ds.kind is DataKind.IMAGE
    assert ds.class_names == ("benign", "malignant")
    assert ds.x.shape == (4, 20, 30, 1)  # the first image's size
    assert ds.x.dtype == np.float32
    assert ds.y.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(ds.x[0], 10 / 255, atol=1e-6)
    np.testing.assert_allclose(ds.x[3], 1.0, atol=1e-6)
    assert ds.x[2].mean() > 0.95  # bright JPEG, resized and made grayscale


def test_given_size_and_rgb(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "lesions")

    ds = load_image_folder(root, image_size=(28, 28), channels=3)

    assert ds.x.shape == (4, 28, 28, 3)
    np.testing.assert_allclose(ds.x[0, :, :, 0], ds.x[0, :, :, 2])


def test_rgb_to_gray_uses_luminance(tmp_path: Path) -> None:
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    save_image(tmp_path / "r" / "red" / "1.png", red)
    save_image(tmp_path / "r" / "black" / "1.png", np.zeros((8, 8, 3), np.uint8))

    ds = load_image_folder(tmp_path / "r")

    np.testing.assert_allclose(ds.x[ds.class_names.index("red")], 0.299, atol=1e-4)


def test_sixteen_bit_png_keeps_its_range(tmp_path: Path) -> None:
    save_image(tmp_path / "d" / "a" / "x.png", np.full((8, 8), 32768, np.uint16))
    save_image(tmp_path / "d" / "b" / "y.png", np.full((8, 8), 65535, np.uint16))

    ds = load_image_folder(tmp_path / "d")

    np.testing.assert_allclose(ds.x[0], 32768 / 65535, atol=1e-4)
    np.testing.assert_allclose(ds.x[1], 1.0, atol=1e-6)


def test_other_files_are_ignored_and_noted(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "lesions")
    (root / "benign" / "readme.txt").write_text("notes")
    (root / "benign" / "Thumbs.db").write_bytes(b"\x00")
    (root / ".cache").mkdir()

    ds = load_image_folder(root)

    assert ds.num_samples == 4
    assert any("Ignored 1 file(s) that are not PNG/JPEG images: benign/readme.txt" in n for n in ds.notes)


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "lesions")
    bad = root / "malignant" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")

    with pytest.raises(DataError) as info:
        load_image_folder(root)

    assert str(bad) in info.value.user_message
    assert info.value.path == str(bad)


def test_truncated_image_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "lesions")
    rng = np.random.default_rng(0)
    good = save_image(root / "benign" / "noise.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    good.write_bytes(good.read_bytes()[:300])

    with pytest.raises(DataError, match="noise.png' cannot be read"):
        load_image_folder(root)


def test_no_class_folders(tmp_path: Path) -> None:
    save_image(tmp_path / "flat" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="no class sub-folders. The images lie directly in it"):
        load_image_folder(tmp_path / "flat")


def test_single_class(tmp_path: Path) -> None:
    save_image(tmp_path / "one" / "benign" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="only one class sub-folder \\('benign'\\)"):
        load_image_folder(tmp_path / "one")


def test_empty_class_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "lesions")
    (root / "unknown").mkdir()
    (root / "unknown" / "list.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown' contains no PNG or JPEG images"):
        load_image_folder(root)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a folder"):
        load_image_folder(tmp_path / "missing")


@pytest.mark.parametrize(("size", "channels"), [((0, 28), 1), ((28,), 1), ((28, 28), 2), ((4096, 4096), 1)])
def test_bad_options(tmp_path: Path, size: tuple[int, ...], channels: int) -> None:
    root = make_folder(tmp_path / "lesions")
    with pytest.raises(ConfigError):
        load_image_folder(root, image_size=size, channels=channels)  # type: ignore[arg-type]


def test_mixed_sizes_are_resized_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_folder(tmp_path / "lesions")  # 20x30, 40x40 and 10x10 images

    with caplog.at_level("WARNING"):
        ds = load_image_folder(root)

    assert ds.x.shape == (4, 20, 30, 1)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "3 different sizes" in warning and "resized to 20x30" in warning
    assert "3 different sizes" in " ".join(ds.notes)


def test_images_of_one_size_load_without_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    save_image(tmp_path / "r" / "a" / "1.png", np.zeros((8, 8), np.uint8))
    save_image(tmp_path / "r" / "b" / "1.png", np.full((8, 8), 9, np.uint8))
    with caplog.at_level("WARNING"):
        load_image_folder(tmp_path / "r")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
