"""Reproducible fake updates shaped like a small tabular CNN's weights."""

from __future__ import annotations

import numpy as np

from core.models.weights import Weights


def make_delta(seed: int, scale: float = 0.01) -> Weights:
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(3, 1, 1, 8)) * scale).astype(np.float32),
        (rng.normal(size=8) * scale).astype(np.float32),
        (rng.normal(size=(16, 2)) * scale).astype(np.float32),
    ]
