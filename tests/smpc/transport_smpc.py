"""The SMPC protocol graph the transport tests allow: the programs an SMPC session runs."""

from __future__ import annotations

from typing import Any

from core.models.architecture import tabular_cnn_spec
from core.models.training import initial_weights

SPEC = tabular_cnn_spec(12, 2)
BATCH = 8
CAPACITY = 2


def protocol_graph() -> Any:  # tf.Graph
    """Every program of a session (scoring, publishing, aggregation, connecting), built without
    players: what a player's gateway allows."""
    from smpc.session import SmpcSession

    session = SmpcSession(SPEC, batch_size=BATCH, validator_capacity=CAPACITY)
    return session.protocol_graph([w.shape for w in initial_weights(SPEC, 3)])
