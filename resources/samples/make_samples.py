"""Writes the small sample datasets the GUI offers as demos, one of each supported kind.

Run `python resources/samples/make_samples.py [target-folder]` from the repository root; the
output is deterministic. No patient data: the CSV is scikit-learn's public Wisconsin
breast-cancer table (with made-up sequential ids), the images are `core.data.synthetic` lesions.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:
    sys.path.insert(0, str(HERE.parents[1]))

from core.data.synthetic import CLASS_NAMES, synthetic_images  # noqa: E402

# Fixed UIDs under pydicom's root so the files are byte-for-byte reproducible.
_UID_ROOT = "1.2.826.0.1.3680043.8.498.99"


def _write_atomic(path: Path, data: bytes) -> None:
    """Writes to a temporary name in the same folder, then renames: no half-written samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _uci_name(name: str) -> str:
    """scikit-learn's "mean radius" / "radius error" / "worst radius" -> the UCI file's
    "radius_mean" / "radius_se" / "radius_worst"."""
    for prefix, suffix in (("mean ", "_mean"), ("worst ", "_worst")):
        if name.startswith(prefix):
            return name[len(prefix) :].replace(" ", "_") + suffix
    if name.endswith(" error"):
        return name[: -len(" error")].replace(" ", "_") + "_se"
    return name.replace(" ", "_")


def write_breast_cancer_csv(path: Path) -> None:
    """The layout of the widely used Kaggle/UCI `data.csv`: id, diagnosis (M/B), 30 features."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    names = [_uci_name(str(name)) for name in bunch.feature_names]
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", "diagnosis", *names])
    for i, (row, target) in enumerate(zip(bunch.data, bunch.target, strict=True)):
        writer.writerow([100001 + i, "M" if target == 0 else "B", *(f"{v:.6g}" for v in row)])
    _write_atomic(path, text.getvalue().encode("utf-8"))


def write_lesions_npz(path: Path, num_samples: int = 300) -> None:
    """Synthetic lesions in the MedMNIST layout (train/val/test, uint8, labels (n, 1))."""
    ds = synthetic_images(num_samples, seed=1)
    pixels = np.round(ds.x[..., 0] * 255).astype(np.uint8)
    labels = ds.y.reshape(-1, 1).astype(np.uint8)
    n_train, n_val = int(num_samples * 0.7), int(num_samples * 0.1)
    bounds = {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, num_samples),
    }
    arrays: dict[str, np.ndarray] = {"class_names": np.array(CLASS_NAMES)}
    for split, (lo, hi) in bounds.items():
        arrays[f"{split}_images"] = pixels[lo:hi]
        arrays[f"{split}_labels"] = labels[lo:hi]
    buffer = io.BytesIO()
    # np.savez stamps members with the current time; fixed stamps keep the file reproducible.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    _write_atomic(path, buffer.getvalue())


def write_lesion_pngs(folder: Path, per_class: int = 20) -> None:
    ds = synthetic_images(4 * per_class, seed=2)
    for c, name in enumerate(CLASS_NAMES):
        for k, i in enumerate(np.flatnonzero(ds.y == c)[:per_class]):
            buffer = io.BytesIO()
            Image.fromarray(np.round(ds.x[i, :, :, 0] * 255).astype(np.uint8)).save(buffer, format="PNG")
            _write_atomic(folder / name / f"{name}_{k:03d}.png", buffer.getvalue())


def write_lesion_dicoms(folder: Path, per_class: int = 10) -> None:
    """RLE-compressed secondary-capture files; PatientSex alternates so it can serve as a label too."""
    ds = synthetic_images(4 * per_class, seed=3)
    serial = 0
    for c, name in enumerate(CLASS_NAMES):
        for k, i in enumerate(np.flatnonzero(ds.y == c)[:per_class]):
            serial += 1
            uid = UID(f"{_UID_ROOT}.{serial}")
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
            meta.MediaStorageSOPInstanceUID = uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            dcm = FileDataset(f"{name}_{k:03d}.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
            dcm.SOPClassUID = SecondaryCaptureImageStorage
            dcm.SOPInstanceUID = uid
            dcm.StudyInstanceUID = f"{_UID_ROOT}.0"
            dcm.SeriesInstanceUID = f"{_UID_ROOT}.0.{c}"
            dcm.PatientID = f"SYNTH-{serial:04d}"
            dcm.PatientName = "Synthetic^Lesion"
            dcm.PatientSex = "F" if serial % 2 else "M"
            dcm.Modality = "OT"
            dcm.ImageComments = f"Synthetic {name} lesion (not patient data)"
            pixels = np.round(ds.x[i, :, :, 0] * 4095).astype(np.uint16)
            dcm.set_pixel_data(
                pixels, photometric_interpretation="MONOCHROME2", bits_stored=12, generate_instance_uid=False
            )
            dcm.compress(RLELossless, generate_instance_uid=False)
            buffer = io.BytesIO()
            dcm.save_as(buffer, enforce_file_format=True)
            _write_atomic(folder / name / f"{name}_{k:03d}.dcm", buffer.getvalue())


def make_samples(target: Path = HERE) -> list[Path]:
    """Writes every sample under `target` and returns what it wrote (one path per dataset)."""
    outputs = [
        target / "breast_cancer_wdbc.csv",
        target / "lesions_medmnist.npz",
        target / "lesions_png",
        target / "lesions_dicom",
    ]
    write_breast_cancer_csv(outputs[0])
    write_lesions_npz(outputs[1])
    write_lesion_pngs(outputs[2])
    write_lesion_dicoms(outputs[3])
    return outputs


if __name__ == "__main__":
    for written in make_samples(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(written)
