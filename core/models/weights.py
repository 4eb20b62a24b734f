"""Model weights as plain numpy arrays: arithmetic, validation and a canonical hash.

A model's weights travel between layers (engine, SMPC, ledger) as `Weights`, a list of
float32 arrays in Keras' `get_weights()` order. The byte form below is canonical so that the
same weights hash the same in any process, on any machine: the ledger relies on it.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Sequence

import numpy as np

from core.errors import ModelError

Weights = list[np.ndarray]

_MAGIC = b"MFCW1"


def as_weights(arrays: Sequence[np.ndarray]) -> Weights:
    """Copies arrays into canonical float32 C-order form, refusing NaN or infinite values."""
    out: Weights = []
    for i, a in enumerate(arrays):
        arr = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
        if not np.all(np.isfinite(arr)):
            raise ModelError(
                "The model weights contain NaN or infinite values and cannot be used.",
                detail=f"tensor {i} of shape {arr.shape}",
            )
        out.append(arr)
    return out


def check_compatible(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> None:
    """Raises ModelError when two weight lists do not describe the same architecture."""
    if len(a) != len(b):
        raise ModelError(
            "The model does not match the federation's architecture.",
            detail=f"{len(a)} tensors vs {len(b)}",
        )
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if np.shape(x) != np.shape(y):
            raise ModelError(
                "The model does not match the federation's architecture.",
                detail=f"tensor {i}: shape {np.shape(x)} vs {np.shape(y)}",
            )


def subtract(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> Weights:
    check_compatible(a, b)
    return [np.asarray(x, np.float32) - np.asarray(y, np.float32) for x, y in zip(a, b, strict=True)]


def add(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> Weights:
    check_compatible(a, b)
    return [np.asarray(x, np.float32) + np.asarray(y, np.float32) for x, y in zip(a, b, strict=True)]


def scale(a: Sequence[np.ndarray], factor: float) -> Weights:
    return [np.asarray(x, np.float32) * np.float32(factor) for x in a]


def flatten(a: Sequence[np.ndarray]) -> np.ndarray:
    if not a:
        return np.zeros(0, np.float32)
    return np.concatenate([np.asarray(x, np.float32).ravel() for x in a])


def unflatten(vector: np.ndarray, like: Sequence[np.ndarray]) -> Weights:
    out: Weights = []
    offset = 0
    for ref in like:
        size = int(np.prod(np.shape(ref), dtype=np.int64))
        out.append(np.asarray(vector[offset : offset + size], np.float32).reshape(np.shape(ref)))
        offset += size
    if offset != vector.size:
        raise ModelError("Flat weight vector has the wrong length.", detail=f"{vector.size} vs {offset}")
    return out


def norm(a: Sequence[np.ndarray]) -> float:
    return float(np.linalg.norm(flatten(a).astype(np.float64)))


def cosine(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    va, vb = flatten(a).astype(np.float64), flatten(b).astype(np.float64)
    na, nb = np.linalg.norm(va), np.linalg.norm(vb)
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(va, vb) / (na * nb))


def parameter_count(a: Sequence[np.ndarray]) -> int:
    return int(sum(np.size(x) for x in a))


def to_bytes(weights: Sequence[np.ndarray]) -> bytes:
    """Canonical serialisation: magic, tensor count, then per tensor rank, dims, float32 LE data."""
    checked = as_weights(weights)
    buf = io.BytesIO()
    buf.write(_MAGIC)
    buf.write(struct.pack("<I", len(checked)))
    for arr in checked:
        buf.write(struct.pack("<I", arr.ndim))
        buf.write(struct.pack(f"<{arr.ndim}Q", *arr.shape))
        buf.write(arr.astype("<f4", copy=False).tobytes(order="C"))
    return buf.getvalue()


def from_bytes(blob: bytes) -> Weights:
    """Inverse of `to_bytes`; raises ModelError on anything truncated or foreign."""
    view = memoryview(blob)
    if bytes(view[: len(_MAGIC)]) != _MAGIC:
        raise ModelError("This file is not a MedFedChain model (bad header).")
    pos = len(_MAGIC)
    try:
        (count,) = struct.unpack_from("<I", view, pos)
        pos += 4
        out: Weights = []
        for _ in range(count):
            (ndim,) = struct.unpack_from("<I", view, pos)
            pos += 4
            shape = struct.unpack_from(f"<{ndim}Q", view, pos)
            pos += 8 * ndim
            size = int(np.prod(shape, dtype=np.int64)) * 4
            if pos + size > len(view):
                raise ModelError("The model file is truncated.")
            out.append(np.frombuffer(view[pos : pos + size], dtype="<f4").reshape(shape).astype(np.float32))
            pos += size
    except struct.error as exc:
        raise ModelError("The model file is truncated.", detail=str(exc)) from exc
    if pos != len(view):
        raise ModelError("The model file has trailing bytes and may be corrupt.")
    return as_weights(out)


def weights_hash(weights: Sequence[np.ndarray]) -> str:
    """Hex SHA-256 of the canonical serialisation; the identity of a model everywhere."""
    return hashlib.sha256(to_bytes(weights)).hexdigest()
