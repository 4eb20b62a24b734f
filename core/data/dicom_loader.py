"""Loads a folder of DICOM files into an image `Dataset`, with the class taken from a
sub-folder or from a DICOM attribute such as PatientSex.

Pixels are decoded by pydicom 3 (compressed transfer syntaxes through its decoder plugins),
put on the modality scale (rescale slope/intercept), reduced to the middle frame, scaled to
[0, 1] per image and resized to a common size.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_rescale, get_decoder, pixel_array
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from core.data.dataset import DataKind, Dataset
from core.data.image_folder import (
    check_image_options,
    class_folders,
    files_under,
    resize,
    stack_images,
    to_layout,
    two_or_more_class_folders,
)
from core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

# Which PyPI package decodes what, for the message when no installed plugin can.
_PLUGIN_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg and pylibjpeg-libjpeg (or pillow)",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg and pylibjpeg-libjpeg (or pillow)",  # JPEG extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "pyjpegls (or pylibjpeg and pylibjpeg-libjpeg)",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls (or pylibjpeg and pylibjpeg-libjpeg)",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg and pylibjpeg-openjpeg (or pillow)",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg and pylibjpeg-openjpeg (or pillow)",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg and pylibjpeg-openjpeg",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg and pylibjpeg-openjpeg",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg and pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle",  # RLE (pydicom decodes it natively too)
}
_HEX_TAG = re.compile(r"^\(?\s*(?:0x)?([0-9a-fA-F]{4})\s*,?\s*([0-9a-fA-F]{4})\s*\)?$")
_PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def parse_tag(text: str) -> BaseTag:
    """A DICOM attribute given as a keyword (`PatientSex`) or a hex tag (`0010,0040`, `(0010,0040)`,
    `00100040`, `0x00100040`)."""
    candidate = text.strip()
    tag = tag_for_keyword(candidate)
    if tag is not None:
        return Tag(tag)
    match = _HEX_TAG.match(candidate)
    if match is None and re.fullmatch(r"(?:0x)?[0-9a-fA-F]{8}", candidate):
        digits = candidate[-8:]
        match = _HEX_TAG.match(f"{digits[:4]},{digits[4:]}")
    if match is None:
        raise ConfigError(
            f"'{text}' is not a DICOM attribute: give a keyword such as PatientSex "
            "or a tag such as 0010,0040."
        )
    return Tag(int(match.group(1), 16), int(match.group(2), 16))


def _describe_tag(tag: BaseTag) -> str:
    keyword = keyword_for_tag(tag)
    return f"{keyword} {tag}" if keyword else str(tag)


def _read_dicom(path: Path) -> pydicom.Dataset | None:
    """The parsed file, or None if it is not a DICOM file at all."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
    except InvalidDicomError:
        return None
    except Exception as exc:  # pydicom raises many types for damaged files
        raise DataError(
            f"The DICOM file '{path}' cannot be parsed; it is damaged or truncated.",
            path=str(path),
            detail=f"{type(exc).__name__}: {exc}",
        ) from exc
    ended_early = [str(w.message) for w in caught if "end of file" in str(w.message).lower()]
    for w in caught:
        if str(w.message) not in ended_early:
            logger.warning("%s: %s", path, w.message)
    if ended_early or len(ds) == 0:
        raise DataError(
            f"The DICOM file '{path}' is truncated or damaged: it ends before its data does.",
            path=str(path),
            detail="; ".join(ended_early) or "no data elements after the file meta information",
        )
    return ds


def _transfer_syntax(ds: pydicom.Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return UID(uid) if uid else UID("1.2.840.10008.1.2")  # implicit VR little endian by default


def _decoder_problem(ts: UID) -> str | None:
    """Why no installed plugin can decode `ts`, or None if one can."""
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return f"pydicom has no decoder for the transfer syntax '{ts.name}' ({ts})"
    if decoder.is_available:
        return None
    package = _PLUGIN_PACKAGES.get(str(ts), "a pydicom decoder plugin")
    return f"no decoder for '{ts.name}' ({ts}) is installed; install {package} from PyPI"


def _frame_count(ds: pydicom.Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def dicom_pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """The (middle frame of the) image as floats in [0, 1], (H, W) or (H, W, 3)."""
    ts = _transfer_syntax(ds)
    problem = _decoder_problem(ts)
    if problem is not None:
        raise DataError(f"The DICOM file '{path}' cannot be decoded: {problem}.", path=str(path))
    frames = _frame_count(ds)
    index = frames // 2 if frames > 1 else None
    try:
        arr = pixel_array(ds, index=index)
        photometric = str(ds.get("PhotometricInterpretation", "")).upper()
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
        elif int(ds.get("SamplesPerPixel", 1) or 1) == 1:
            arr = apply_rescale(arr, ds)
    except Exception as exc:  # decoder plugins raise RuntimeError, ValueError, ... for bad data
        raise DataError(
            f"The pixel data of the DICOM file '{path}' ({ts.name}) cannot be decoded; "
            "the file is damaged or uses an encoding the installed decoders do not support.",
            path=str(path),
            detail=f"{type(exc).__name__}: {exc}",
        ) from exc
    values = np.asarray(arr, dtype=np.float64)
    if values.ndim == 3 and values.shape[2] not in (3, 4):
        values = values[values.shape[0] // 2]  # frames not announced by NumberOfFrames
    if values.ndim not in (2, 3) or not np.all(np.isfinite(values)):
        raise DataError(
            f"The DICOM file '{path}' has an unusable image of shape {values.shape}.", path=str(path)
        )
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    if photometric == "MONOCHROME1":  # 0 is white: invert so bright means the same in every file
        scaled = 1.0 - scaled
    return scaled


def _label_value(ds: pydicom.Dataset, tag: BaseTag) -> str | None:
    element = ds.get(tag)
    if element is None or element.value is None:
        return None
    value = element.value
    if isinstance(value, (list, tuple, MultiValue)):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _shown(paths: list[Path], root: Path, limit: int = 5) -> str:
    names = ", ".join(str(p.relative_to(root)) for p in paths[:limit])
    return names + (", ..." if len(paths) > limit else "")


def load_dicom_folder(
    path: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    channels: int = 1,
    label_tag: str | None = None,
) -> Dataset:
    """Loads every DICOM image under `path`. Classes come from the sub-folders of `path`, or,
    with `label_tag` (keyword or hex tag), from that attribute's value in each file."""
    root = Path(path)
    check_image_options(image_size, channels)
    if not root.is_dir():
        raise DataError(f"'{root}' is not a folder.", path=str(root))
    tag = parse_tag(label_tag) if label_tag is not None else None

    candidates: list[tuple[Path, str | None]] = []  # file, class folder (folder mode)
    if tag is None:
        folders = two_or_more_class_folders(
            root,
            "DICOM folder",
            "Put the files of each class in a sub-folder named after the class, "
            "or take the class from a DICOM attribute (label tag).",
        )
        for folder in folders:
            files = files_under(folder)
            if not files:
                raise DataError(f"The class folder '{folder}' is empty.", path=str(folder))
            candidates.extend((f, folder.name) for f in files)
    else:
        candidates = [(f, None) for f in files_under(root)]
        if not candidates:
            raise DataError(f"The DICOM folder '{root}' contains no files.", path=str(root))

    not_dicom: list[Path] = []
    no_image: list[Path] = []
    no_label: list[Path] = []
    images: list[np.ndarray] = []
    labels: list[str] = []
    target = image_size
    for file, folder_class in candidates:
        ds = _read_dicom(file)
        if ds is None:
            not_dicom.append(file)
            continue
        if not any(t in ds for t in _PIXEL_DATA_TAGS):
            if "Rows" in ds and "Columns" in ds:
                raise DataError(
                    f"The DICOM file '{file}' describes an image but holds no pixel data; "
                    "it is probably truncated.",
                    path=str(file),
                )
            no_image.append(file)
            continue
        if tag is not None:
            value = _label_value(ds, tag)
            if value is None:
                no_label.append(file)
                continue
            label = value
        else:
            assert folder_class is not None
            label = folder_class
        arr = to_layout(dicom_pixels(ds, file), channels)
        if target is None:
            target = (int(arr.shape[0]), int(arr.shape[1]))
        images.append(resize(arr, target))
        labels.append(label)

    if no_label:
        assert tag is not None
        raise DataError(
            f"{len(no_label)} DICOM file(s) in '{root}' have no value for {_describe_tag(tag)}, "
            f"so their class is unknown: {_shown(no_label, root)}.",
            path=str(root),
        )
    notes: list[str] = []
    if not_dicom:
        notes.append(f"Skipped {len(not_dicom)} file(s) that are not DICOM: {_shown(not_dicom, root)}.")
    if no_image:
        notes.append(f"Skipped {len(no_image)} DICOM file(s) without an image: {_shown(no_image, root)}.")
    for note in notes:
        logger.warning("%s: %s", root, note)
    if not images:
        raise DataError(
            f"The folder '{root}' contains no DICOM images"
            + (f" ({'; '.join(notes)})" if notes else "")
            + ".",
            path=str(root),
        )

    if tag is None:
        class_names = tuple(f.name for f in class_folders(root))
        present = set(labels)
        empty = [c for c in class_names if c not in present]
        if empty:
            raise DataError(
                f"The class folder(s) {', '.join(repr(c) for c in empty)} in '{root}' "
                "contain no DICOM images.",
                path=str(root),
            )
    else:
        class_names = tuple(sorted(set(labels)))
        if len(class_names) < 2:
            raise DataError(
                f"Every DICOM image in '{root}' has {_describe_tag(tag)} = '{class_names[0]}'; "
                "a classifier needs at least two classes.",
                path=str(root),
            )
        notes.append(f"Classes taken from {_describe_tag(tag)}.")
    index = {name: i for i, name in enumerate(class_names)}
    assert target is not None
    notes.append(f"Images: middle frame, rescaled, per-image [0, 1], resized to {target[0]}x{target[1]}.")
    return Dataset(
        name=root.name,
        kind=DataKind.IMAGE,
        x=stack_images(images),
        y=np.array([index[label] for label in labels], dtype=np.int64),
        class_names=class_names,
        source=str(root),
        notes=tuple(notes),
    )
