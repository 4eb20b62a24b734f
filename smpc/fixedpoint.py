"""Fixed-point encoding and two-out-of-two additive sharing of numpy arrays over Z_2^64.

Inputs are shared where their owner runs, before anything reaches TensorFlow: the hospital
encodes its update (the validator its data) as integers, draws one share uniformly from the
OS CSPRNG (`secrets`) and computes the other by subtraction modulo 2^64. The encoding matches
tf-encrypted's: value * base^fractional, so the shares feed its protocols directly.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass

import numpy as np

from smpc.errors import FixedPointOverflow


@dataclass(frozen=True)
class FixedPointFormat:
    """A fixed-point number format over the ring Z_2^64.

    `max_abs` is the largest magnitude a shared value, and the result of every product before
    its truncation, may take: beyond it tf-encrypted's truncation and decoding go wrong without
    any error, so we refuse such values up front.
    """

    base: int
    fractional: int
    integral: int
    ring_bits: int = 64

    @property
    def scale(self) -> int:
        return self.base**self.fractional

    @property
    def resolution(self) -> float:
        return 1.0 / self.scale

    @property
    def max_abs(self) -> float:
        return float(self.base**self.integral)

    @property
    def max_norm(self) -> float:
        """Largest L2 norm of a vector entering an untruncated dot product (kept at scale^2):
        by Cauchy-Schwarz two such vectors give |dot| * scale^2 < 2^(ring_bits - 3), no wrap."""
        return math.sqrt(float(2 ** (self.ring_bits - 3))) / self.scale

    @property
    def max_sum_abs(self) -> float:
        """Largest magnitude an accumulated (untruncated) sum may reach before the ring wraps."""
        return float(2 ** (self.ring_bits - 2)) / self.scale

    def check_norm(self, values: np.ndarray, *, what: str) -> None:
        """Refuses a vector whose dot products could wrap the ring (see `max_norm`)."""
        size = float(np.linalg.norm(np.asarray(values, np.float64).ravel()))
        if not np.isfinite(size) or size >= self.max_norm:
            raise FixedPointOverflow(
                f"The {what} is too large for secure comparison of updates "
                f"(its norm must stay below {self.max_norm:.4g}).",
                what=what,
                max_abs=size,
                bound=self.max_norm,
            )

    def check_range(self, values: np.ndarray, *, what: str, bound: float | None = None) -> None:
        """Raises FixedPointOverflow unless every value lies strictly within the safe bound."""
        arr = np.asarray(values)
        limit = self.max_abs if bound is None else bound
        peak = float(np.max(np.abs(arr))) if arr.size else 0.0
        if not np.isfinite(peak) or peak >= limit:
            raise FixedPointOverflow(
                f"The {what} contain values too large for secure computation "
                f"(the fixed-point format holds magnitudes below {limit:.4g}).",
                what=what,
                max_abs=peak,
                bound=limit,
            )

    def encode(self, values: np.ndarray, *, what: str, bound: float | None = None) -> np.ndarray:
        """Integers representing `values`; raises FixedPointOverflow beyond the safe bound."""
        self.check_range(values, what=what, bound=bound)
        return np.rint(np.asarray(values, dtype=np.float64) * self.scale).astype(np.int64)

    def decode(self, encoded: np.ndarray | int, *, scaled: bool = True) -> np.ndarray:
        arr = np.asarray(encoded, dtype=np.int64).astype(np.float64)
        return arr / self.scale if scaled else arr

    def check_sum(self, value: float, *, what: str, squared_scale: bool = False) -> None:
        """Refuses a revealed sum whose magnitude means the ring may have wrapped."""
        bound = self.max_sum_abs / (2 * (self.scale if squared_scale else 1))
        if not np.isfinite(value) or abs(value) >= bound:
            raise FixedPointOverflow(
                f"The {what} overflowed the fixed-point ring during secure computation.",
                what=what,
                max_abs=abs(value),
                bound=bound,
            )


# tf-encrypted's `fixed64`, the configuration its SecureNN and Pond use on int64 backing.
FIXED64 = FixedPointFormat(base=3, fractional=8, integral=7)


def random_ring_elements(shape: tuple[int, ...]) -> np.ndarray:
    """Uniform elements of Z_2^64 (as int64) from the OS CSPRNG."""
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(secrets.token_bytes(8 * count), dtype=np.int64).reshape(shape).copy()


def share(encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two additive shares of `encoded` modulo 2^64: each alone is uniform, whatever the secret."""
    secret = np.ascontiguousarray(encoded, dtype=np.int64)
    share0 = random_ring_elements(secret.shape)
    share1 = (secret.view(np.uint64) - share0.view(np.uint64)).view(np.int64)
    return share0, share1


def reconstruct(share0: np.ndarray, share1: np.ndarray) -> np.ndarray:
    return (np.asarray(share0, np.int64).view(np.uint64) + np.asarray(share1, np.int64).view(np.uint64)).view(
        np.int64
    )


def new_salt() -> bytes:
    return secrets.token_bytes(32)


def share_commitment(salt: bytes, context: str, shares: list[np.ndarray]) -> str:
    """Hex SHA-256 binding one player's shares of a candidate, salted so equal shares of
    different rounds or hospitals never hash alike and short updates cannot be brute-forced."""
    digest = hashlib.sha256()
    digest.update(b"MFC-SHARE1")
    digest.update(len(salt).to_bytes(2, "little") + salt)
    ctx = context.encode()
    digest.update(len(ctx).to_bytes(4, "little") + ctx)
    for arr in shares:
        a = np.ascontiguousarray(arr, dtype="<i8")
        digest.update(len(a.shape).to_bytes(4, "little"))
        for dim in a.shape:
            digest.update(int(dim).to_bytes(8, "little"))
        digest.update(a.tobytes())
    return digest.hexdigest()
