"""Builds the SMPC verifier and aggregator of one federation around one shared session."""

from __future__ import annotations

from pathlib import Path

from core.models.architecture import ModelSpec
from smpc.aggregator import SmpcAggregator
from smpc.players import PlayerConfig
from smpc.session import SmpcSession
from smpc.verifier import SmpcVerifier

DEFAULT_BATCH_SIZE = 64
DEFAULT_TIMEOUT_S = 120.0


def build_secure_components(
    spec: ModelSpec,
    *,
    protocol: str = "securenn",
    players: Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    validator_capacity: int = 8,
) -> tuple[SmpcVerifier, SmpcAggregator]:
    """`players` None runs the three players in this process; otherwise it is a players.json."""
    config = PlayerConfig.load(players) if players is not None else None
    session = SmpcSession(
        spec,
        protocol=protocol,
        players=config,
        batch_size=batch_size,
        validator_capacity=validator_capacity,
        timeout_s=timeout_s,
    )
    return SmpcVerifier(session), SmpcAggregator(session)
