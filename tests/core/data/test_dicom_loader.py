"""DICOM folders: real pydicom test files (plain and compressed), synthetic files with known
pixels, labels from folders or attributes, and damaged or undecodable files reported."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from core.data.dataset import DataKind
from core.data.dicom_loader import load_dicom_folder, parse_tag
from core.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[3]


def sample_file(name: str) -> Path:
    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"pydicom's test file {name} is not in the installed wheel")
    return Path(str(found))


def copy(name: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample_file(name), target)
    return target


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    sex: str | None = "F",
    slope: float | None = None,
    intercept: float = 0.0,
    photometric: str = "MONOCHROME2",
    transfer_syntax: UID = ExplicitVRLittleEndian,
) -> Path:
    """A small secondary-capture DICOM file holding uint16 `pixels`, (rows, cols) or (frames, rows, cols)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = "TEST-0001"
    ds.Modality = "OT"
    if sex is not None:
        ds.PatientSex = sex
    ds.set_pixel_data(pixels.astype(np.uint16), photometric_interpretation=photometric, bits_stored=16)
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(rows: int = 16, cols: int = 16) -> np.ndarray:
    return (np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) * 7) % 1800


def test_real_files_plain_and_compressed(tmp_path: Path) -> None:
    root = tmp_path / "study"
    copy("CT_small.dcm", root / "ct" / "ct1.dcm")
    copy("JPEG2000.dcm", root / "ct" / "nm_j2k.dcm")  # JPEG 2000
    copy("JPGExtended.dcm", root / "ct" / "nm_jpeg_ext.dcm")  # JPEG extended, 12-bit
    copy("MR_small.dcm", root / "mr" / "mr1.dcm")
    copy("MR_small_RLE.dcm", root / "mr" / "mr_rle.dcm")  # RLE
    copy("MR_small_jpeg_ls_lossless.dcm", root / "mr" / "mr_jls.dcm")  # JPEG-LS
    copy("SC_rgb_jpeg_dcmtk.dcm", root / "mr" / "sc_jpeg.dcm")  # JPEG baseline, YBR colour

    ds = load_dicom_folder(root, image_size=(32, 32))

    assert ds.kind is DataKind.IMAGE
    assert ds.x.shape == (7, 32, 32, 1)
    assert ds.class_names == ("ct", "mr")
    assert ds.class_counts() == {"ct": 3, "mr": 4}
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    for image in ds.x:
        assert image.max() - image.min() > 0.3 and image.std() > 0.01  # really decoded, not blank


def test_lossless_compressions_decode_to_the_uncompressed_image(tmp_path: Path) -> None:
    root = tmp_path / "mr"
    names = ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
    for i, name in enumerate(names):
        copy(name, root / "a" / f"{i}.dcm")
    write_dicom(root / "b" / "other.dcm", ramp(64, 64))

    ds = load_dicom_folder(root)

    assert ds.x.shape == (5, 64, 64, 1)
    for i in range(1, 4):
        np.testing.assert_allclose(ds.x[i], ds.x[0], atol=1e-6, err_msg=names[i])


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda u: u.name)
def test_synthetic_compressed_files_round_trip(tmp_path: Path, syntax: UID) -> None:
    pixels = ramp(64, 64)  # OpenJPEG needs enough pixels for its default resolution levels
    write_dicom(tmp_path / "d" / "a" / "x.dcm", pixels, transfer_syntax=syntax)
    write_dicom(tmp_path / "d" / "b" / "y.dcm", pixels[::-1])

    ds = load_dicom_folder(tmp_path / "d")

    expected = (pixels - pixels.min()) / (pixels.max() - pixels.min())
    np.testing.assert_allclose(ds.x[0, :, :, 0], expected, atol=1e-6)


def test_rescale_slope_is_applied(tmp_path: Path) -> None:
    pixels = ramp()
    write_dicom(tmp_path / "d" / "a" / "plain.dcm", pixels, slope=1.0, intercept=-1024.0)
    write_dicom(tmp_path / "d" / "b" / "negative.dcm", pixels, slope=-2.0, intercept=5.0)

    ds = load_dicom_folder(tmp_path / "d")

    np.testing.assert_allclose(ds.x[1], 1.0 - ds.x[0], atol=1e-6)


def test_multi_frame_takes_the_middle_frame(tmp_path: Path) -> None:
    frames = np.zeros((5, 8, 8), np.uint16)
    for k in range(5):
        frames[k, k, :] = 1000  # frame k: bright row k
    write_dicom(tmp_path / "d" / "a" / "cine.dcm", frames)
    write_dicom(tmp_path / "d" / "b" / "single.dcm", ramp(8, 8))

    ds = load_dicom_folder(tmp_path / "d")

    assert np.flatnonzero(ds.x[0, :, 0, 0]).tolist() == [2]


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = ramp()
    write_dicom(tmp_path / "d" / "a" / "m2.dcm", pixels)
    write_dicom(tmp_path / "d" / "b" / "m1.dcm", pixels, photometric="MONOCHROME1")

    ds = load_dicom_folder(tmp_path / "d")

    np.testing.assert_allclose(ds.x[1], 1.0 - ds.x[0], atol=1e-6)


def test_rgb_kept_with_three_channels(tmp_path: Path) -> None:
    copy("SC_rgb_jpeg_dcmtk.dcm", tmp_path / "d" / "a" / "rgb.dcm")  # JPEG baseline, YBR colour bars
    copy("MR_small.dcm", tmp_path / "d" / "b" / "mr.dcm")

    ds = load_dicom_folder(tmp_path / "d", channels=3, image_size=(28, 28))

    assert ds.x.shape == (2, 28, 28, 3)
    assert np.abs(ds.x[0, :, :, 0] - ds.x[0, :, :, 2]).max() > 0.2  # colour survived
    np.testing.assert_allclose(ds.x[1, :, :, 0], ds.x[1, :, :, 1])  # gray repeated


@pytest.mark.parametrize("tag", ["PatientSex", "0010,0040", "(0010,0040)", "00100040", "0x00100040"])
def test_class_from_attribute(tmp_path: Path, tag: str) -> None:
    root = tmp_path / "flat"
    for i in range(3):
        write_dicom(root / f"f{i}.dcm", ramp() + i, sex="F")
    for i in range(2):
        write_dicom(root / "nested" / f"m{i}.dcm", ramp() + i, sex="M")

    ds = load_dicom_folder(root, label_tag=tag)

    assert ds.class_names == ("F", "M")
    assert ds.class_counts() == {"F": 3, "M": 2}
    assert "Classes taken from PatientSex (0010,0040)." in ds.notes


def test_attribute_missing_in_some_files(tmp_path: Path) -> None:
    write_dicom(tmp_path / "d" / "a.dcm", ramp(), sex="F")
    write_dicom(tmp_path / "d" / "b.dcm", ramp(), sex=None)
    write_dicom(tmp_path / "d" / "c.dcm", ramp(), sex="")

    with pytest.raises(DataError) as info:
        load_dicom_folder(tmp_path / "d", label_tag="PatientSex")

    assert "2 DICOM file(s)" in info.value.user_message
    assert "no value for PatientSex" in info.value.user_message
    assert "b.dcm, c.dcm" in info.value.user_message


def test_attribute_with_a_single_value(tmp_path: Path) -> None:
    write_dicom(tmp_path / "d" / "a.dcm", ramp(), sex="F")
    write_dicom(tmp_path / "d" / "b.dcm", ramp(), sex="F")
    with pytest.raises(DataError, match="PatientSex \\(0010,0040\\) = 'F'"):
        load_dicom_folder(tmp_path / "d", label_tag="PatientSex")


def test_parse_tag() -> None:
    assert parse_tag("PatientSex") == 0x00100040
    assert parse_tag(" (0008, 0060) ") == 0x00080060
    with pytest.raises(ConfigError, match="'Sex' is not a DICOM attribute"):
        parse_tag("Sex")


def test_non_dicom_and_imageless_files_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_dicom(root / "a" / "x.dcm", ramp())
    write_dicom(root / "b" / "y.dcm", ramp())
    (root / "b" / "README.txt").write_text("exported by PACS")
    copy("rtplan.dcm", root / "a" / "plan.dcm")  # a DICOM file without an image

    ds = load_dicom_folder(root)

    assert ds.num_samples == 2
    assert "Skipped 1 file(s) that are not DICOM: b/README.txt." in ds.notes
    assert "Skipped 1 DICOM file(s) without an image: a/plan.dcm." in ds.notes


def test_folder_without_dicom_images(tmp_path: Path) -> None:
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir(parents=True)
    (tmp_path / "d" / "a" / "x.txt").write_text("x")
    (tmp_path / "d" / "b" / "y.txt").write_text("y")
    with pytest.raises(DataError, match="contains no DICOM images \\(Skipped 2 file"):
        load_dicom_folder(tmp_path / "d")


def test_class_folder_with_only_non_dicom_files(tmp_path: Path) -> None:
    write_dicom(tmp_path / "d" / "a" / "x.dcm", ramp())
    (tmp_path / "d" / "b").mkdir()
    (tmp_path / "d" / "b" / "y.txt").write_text("y")
    with pytest.raises(DataError, match="'b' in .* contain no DICOM images"):
        load_dicom_folder(tmp_path / "d")


def test_truncated_pixel_data_names_the_file(tmp_path: Path) -> None:
    copy("MR_small.dcm", tmp_path / "d" / "a" / "good.dcm")
    bad = copy("MR_truncated.dcm", tmp_path / "d" / "b" / "cut.dcm")

    with pytest.raises(DataError) as info:
        load_dicom_folder(tmp_path / "d")

    assert str(bad) in info.value.user_message
    assert info.value.path == str(bad)


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    copy("MR_small.dcm", tmp_path / "d" / "a" / "good.dcm")
    bad = write_dicom(tmp_path / "d" / "b" / "half.dcm", ramp(64, 64), transfer_syntax=RLELossless)
    bad.write_bytes(bad.read_bytes()[:900])

    with pytest.raises(DataError) as info:
        load_dicom_folder(tmp_path / "d")

    assert str(bad) in info.value.user_message


def test_encoding_no_plugin_decodes_is_reported(tmp_path: Path) -> None:
    copy("MR_small.dcm", tmp_path / "d" / "a" / "good.dcm")
    # 12-bit lossy JPEG with a marker neither pylibjpeg nor Pillow accepts.
    bad = copy("JPEG-lossy.dcm", tmp_path / "d" / "b" / "lossy.dcm")

    with pytest.raises(DataError) as info:
        load_dicom_folder(tmp_path / "d")

    assert str(bad) in info.value.user_message
    assert "JPEG Extended" in info.value.user_message


def test_missing_decoder_plugin_names_the_package(tmp_path: Path) -> None:
    """Runs where the JPEG-LS plugins cannot be imported, as on a machine without them."""
    copy("MR_small.dcm", tmp_path / "d" / "a" / "good.dcm")
    copy("MR_small_jpeg_ls_lossless.dcm", tmp_path / "d" / "b" / "jls.dcm")
    script = textwrap.dedent(
        f"""
        import sys
        for name in ("jpeg_ls", "libjpeg", "pylibjpeg", "gdcm"):
            sys.modules[name] = None  # makes the import fail like an absent package
        from core.data.dicom_loader import load_dicom_folder
        from core.errors import DataError
        try:
            load_dicom_folder({str(tmp_path / "d")!r})
        except DataError as exc:
            print(exc.user_message)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    message = result.stdout
    assert "jls.dcm' cannot be decoded" in message
    assert "JPEG-LS Lossless Image Compression" in message
    assert "install pyjpegls" in message


def test_folder_layout_errors(tmp_path: Path) -> None:
    write_dicom(tmp_path / "flat" / "x.dcm", ramp())
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dicom_folder(tmp_path / "flat")
    write_dicom(tmp_path / "one" / "a" / "x.dcm", ramp())
    with pytest.raises(DataError, match="only one class sub-folder"):
        load_dicom_folder(tmp_path / "one")
    (tmp_path / "one" / "b").mkdir()
    with pytest.raises(DataError, match="class folder .* is empty"):
        load_dicom_folder(tmp_path / "one")
