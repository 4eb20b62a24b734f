"""The small tabular SecureNN round the transport tests run through the gateways."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.federation.types import Candidate, ValidatorInput
from core.models.architecture import tabular_cnn_spec
from core.models.training import initial_weights
from core.models.weights import Weights, add, weights_hash
from tests.smpc.scenarios import tabular_data

SPEC = tabular_cnn_spec(12, 2)
BATCH = 8
CAPACITY = 2


def tabular_round() -> tuple[Weights, list[Candidate], list[ValidatorInput]]:
    glob = initial_weights(SPEC, 3)
    rng = np.random.default_rng(3)
    candidates = []
    for i in range(2):
        delta = [rng.normal(scale=0.1, size=w.shape).astype(np.float32) for w in glob]
        candidates.append(Candidate(f"h{i}", 1, delta, 5, weights_hash(add(glob, delta))))
    validators = [
        ValidatorInput(f"v{i}", tabular_data(8, seed=20 + i), candidates[i].delta) for i in range(2)
    ]
    return glob, candidates, validators


def protocol_graph() -> Any:  # tf.Graph
    """The verifier's graph after an in-process round: scoring adds ops (Tile) after `open`,
    so an allow list taken from the freshly opened graph would refuse the real round."""
    from core.progress import CancelToken, ignore_progress
    from smpc.factory import build_secure_components

    glob, candidates, validators = tabular_round()
    verifier, _ = build_secure_components(SPEC, batch_size=BATCH, validator_capacity=CAPACITY)
    try:
        verifier.begin_round(1, glob)
        for candidate in candidates:
            verifier.commit(candidate)
        verifier.score(candidates, validators, ignore_progress, CancelToken())
        return verifier.session._graph  # noqa: SLF001
    finally:
        verifier.close()
