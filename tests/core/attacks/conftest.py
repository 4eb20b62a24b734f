"""Small generated datasets and attack contexts shared by the attack tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from core.attacks.base import AttackContext
from core.data.dataset import DataKind, Dataset
from core.models.architecture import tabular_cnn_spec
from core.models.weights import Weights
from tests.core.attacks.deltas import make_delta


@pytest.fixture
def table() -> Dataset:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 40).astype(np.int64)  # 120 rows, 3 balanced classes
    x = rng.normal(size=(120, 6)).astype(np.float32)
    return Dataset("clinic", DataKind.TABLE, x, y, ("low", "mid", "high"), tuple(f"f{i}" for i in range(6)))


@pytest.fixture
def images() -> Dataset:
    rng = np.random.default_rng(2)
    x = rng.uniform(0.0, 0.5, size=(50, 12, 12, 1)).astype(np.float32)
    y = np.tile(np.arange(2), 25).astype(np.int64)
    return Dataset("xray", DataKind.IMAGE, x, y, ("normal", "pneumonia"))


@pytest.fixture
def context(table: Dataset) -> Callable[..., AttackContext]:
    def build(
        honest: Weights | None = None, peers: Sequence[Weights] = (), num_hospitals: int = 5, **kw: Any
    ) -> AttackContext:
        honest = honest if honest is not None else make_delta(10)
        return AttackContext(
            round_number=1,
            num_hospitals=num_hospitals,
            global_weights=[np.zeros_like(t) for t in honest],
            spec=tabular_cnn_spec(6, 3),
            train_data=table,
            honest_delta=honest,
            peer_deltas=tuple(peers),
            rng=kw.pop("rng", np.random.default_rng(7)),
        )

    return build
