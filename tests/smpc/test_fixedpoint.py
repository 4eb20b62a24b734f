"""Fixed-point encoding and numpy-side sharing: exact reconstruction, independence, overflow."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from smpc.errors import FixedPointOverflow
from smpc.fixedpoint import FIXED64, reconstruct, share, share_commitment
from smpc.session import FIXED


def test_reconstruction_is_exact_within_resolution() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(scale=50.0, size=(64, 9))
    encoded = FIXED.encode(values, what="test values")
    s0, s1 = share(encoded)
    np.testing.assert_array_equal(reconstruct(s0, s1), encoded)
    assert np.max(np.abs(FIXED.decode(reconstruct(s0, s1)) - values)) <= FIXED.resolution / 2 + 1e-12


def test_format_is_documented_as_configured() -> None:
    assert FIXED.scale == 3**9 and FIXED.max_abs == 3**7
    assert FIXED.resolution < 6e-5
    assert FIXED64.scale == 3**8  # tf-encrypted's own fixed64, for comparison


def _unit(shares: np.ndarray) -> np.ndarray:
    return shares.view(np.uint64).astype(np.float64) / 2.0**64


def test_a_single_share_does_not_depend_on_the_secret() -> None:
    small = share(np.zeros(20_000, np.int64))[0]
    large = share(FIXED.encode(np.full(20_000, 2000.0), what="test"))[1]
    # Kolmogorov-Smirnov: both look uniform on the ring and alike.
    assert stats.kstest(_unit(small), "uniform").pvalue > 1e-6
    assert stats.ks_2samp(_unit(small), _unit(large)).pvalue > 1e-6
    # Every bit of a share is a fair coin, whatever the secret.
    bits = np.unpackbits(large.view(np.uint8)).reshape(-1, 64).mean(axis=0)
    assert np.all(np.abs(bits - 0.5) < 0.02)


def test_values_beyond_the_bound_raise_before_sharing() -> None:
    with pytest.raises(FixedPointOverflow) as info:
        FIXED.encode(np.array([1.0, -3000.0]), what="update of hospital h1")
    assert "update of hospital h1" in info.value.user_message
    assert info.value.max_abs == 3000.0
    with pytest.raises(FixedPointOverflow):
        FIXED.encode(np.array([np.inf]), what="data")


def test_norm_bound_guards_untruncated_dot_products() -> None:
    FIXED.check_norm(np.full(100, 1.0), what="update")
    with pytest.raises(FixedPointOverflow):
        FIXED.check_norm(np.full(4, FIXED.max_norm), what="update")
    # At the bound, a dot product kept at scale^2 still fits the signed ring.
    assert (FIXED.max_norm * FIXED.scale) ** 2 < 2.0**63


def test_commitments_are_salted_and_bind_the_shares() -> None:
    shares = [np.arange(6, dtype=np.int64).reshape(2, 3)]
    a = share_commitment(b"s" * 32, "round=1;hospital=h;player=p", shares)
    assert a == share_commitment(b"s" * 32, "round=1;hospital=h;player=p", [shares[0].copy()])
    assert a != share_commitment(b"t" * 32, "round=1;hospital=h;player=p", shares)
    assert a != share_commitment(b"s" * 32, "round=2;hospital=h;player=p", shares)
    changed = [shares[0].copy()]
    changed[0][1, 2] += 1
    assert a != share_commitment(b"s" * 32, "round=1;hospital=h;player=p", changed)


def test_overflow_is_a_hospital_failure_for_the_engine() -> None:
    from core.errors import CoreError
    from smpc.errors import SmpcError

    with pytest.raises(CoreError) as info:
        FIXED.encode(np.array([1e9]), what="update of hospital h2")
    assert isinstance(info.value, SmpcError)
    assert info.value.user_message.startswith("The update of hospital h2")
    assert "1e+09" in str(info.value)
