"""Canonical weight bytes and hashes: the identity of a model on the ledger."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelError
from core.models import weights as w

ROOT = Path(__file__).resolve().parents[3]


def sample() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.normal(size=(3, 1, 1, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32),
            rng.normal(size=(112, 16)).astype(np.float32)]


def test_round_trip_is_exact() -> None:
    original = sample()
    restored = w.from_bytes(w.to_bytes(original))
    assert len(restored) == len(original)
    for a, b in zip(original, restored, strict=True):
        assert a.shape == b.shape and np.array_equal(a, b)


def test_hash_ignores_memory_layout_and_dtype_width() -> None:
    original = sample()
    fortran = [np.asfortranarray(a) for a in original]
    doubles = [a.astype(np.float64) for a in original]
    assert w.weights_hash(original) == w.weights_hash(fortran) == w.weights_hash(doubles)


def test_hash_changes_with_one_bit_and_with_shape() -> None:
    original = sample()
    changed = [a.copy() for a in original]
    changed[1][0] = np.nextafter(changed[1][0], np.float32(np.inf))
    assert w.weights_hash(changed) != w.weights_hash(original)
    reshaped = [original[0].reshape(3, 8, 1, 1), *original[1:]]
    assert w.weights_hash(reshaped) != w.weights_hash(original)


def test_hash_is_the_same_in_another_process() -> None:
    code = (
        "import numpy as np\n"
        "from core.models import weights as w\n"
        "rng = np.random.default_rng(7)\n"
        "ws = [rng.normal(size=(3, 1, 1, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32),"
        " rng.normal(size=(112, 16)).astype(np.float32)]\n"
        "print(w.weights_hash(ws))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""})
    assert out.stdout.strip() == w.weights_hash(sample())


def test_nan_weights_are_refused() -> None:
    bad = sample()
    bad[2][5, 3] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        w.to_bytes(bad)


@pytest.mark.parametrize("cut", [3, 12, 40, -1])
def test_truncated_or_foreign_bytes_are_refused(cut: int) -> None:
    blob = w.to_bytes(sample())
    with pytest.raises(ModelError):
        w.from_bytes(blob[:cut])
    with pytest.raises(ModelError):
        w.from_bytes(b"PK\x03\x04" + blob[4:])
    with pytest.raises(ModelError, match="trailing"):
        w.from_bytes(blob + b"\x00")


def test_shape_mismatch_names_the_tensor() -> None:
    with pytest.raises(ModelError, match="tensor 1"):
        w.subtract(sample(), [sample()[0], np.zeros(9, np.float32), sample()[2]])


def test_flatten_unflatten_and_cosine() -> None:
    original = sample()
    again = w.unflatten(w.flatten(original), original)
    assert all(np.array_equal(a, b) for a, b in zip(original, again, strict=True))
    assert w.cosine(original, original) == pytest.approx(1.0)
    assert w.cosine(original, w.scale(original, -2.0)) == pytest.approx(-1.0)
    assert w.norm(w.scale(original, 3.0)) == pytest.approx(3.0 * w.norm(original), rel=1e-6)
