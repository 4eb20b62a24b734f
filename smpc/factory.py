"""Builds the parts of a secure federation: the driver, the share holders' services, and one
owner verifier per hospital.

In process (`simulate --secure`, the demo) the three players are devices of this process and
the holders' services are plain objects; in a deployment each part lives in its own process
(`smpc.player` for a player, the coordinator's process for the driver, each node for its
owner) and reaches the others through `smpc.remote`. The parts and their code are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.models.architecture import ModelSpec
from core.models.keras_builder import build_keras_model
from smpc.aggregation import SecureAggregate
from smpc.driver import SmpcDriver
from smpc.owner import PlayerLink, SmpcOwner
from smpc.player_service import LedgerFacts, PlayerService
from smpc.players import ROLES
from smpc.session import FIXED, SmpcSession

DEFAULT_BATCH_SIZE = 64
DEFAULT_TIMEOUT_S = 120.0
HOLDERS = ROLES[:2]


def weight_shapes(spec: ModelSpec) -> list[tuple[int, ...]]:
    return [tuple(w.shape) for w in build_keras_model(spec).get_weights()]


@dataclass
class SecureFederation:
    """Every SMPC part of a federation run in one process."""

    driver: SmpcDriver
    holders: list[PlayerService]

    def owner(self, hospital_id: str) -> SmpcOwner:
        return owner_verifier(hospital_id, self.driver.session.spec, self.holders)

    def global_check(self) -> SecureAggregate:
        """What a node checks a published global model against: the holders' weighted sum."""
        return SecureAggregate(self.holders, FIXED)

    def close(self) -> None:
        self.driver.close()


def owner_verifier(hospital_id: str, spec: ModelSpec, holders: Sequence[PlayerLink]) -> SmpcOwner:
    return SmpcOwner(hospital_id, spec, FIXED, holders)


def build_in_process(
    spec: ModelSpec,
    ledger: LedgerFacts,
    *,
    protocol: str = "securenn",
    batch_size: int = DEFAULT_BATCH_SIZE,
    validator_capacity: int = 8,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SecureFederation:
    """The driver and both share holders on this process's devices; `ledger` is what the holders
    read of the round state (the channel the roles use)."""
    session = SmpcSession(spec, protocol=protocol, batch_size=batch_size,
                          validator_capacity=validator_capacity, timeout_s=timeout_s)
    shapes = weight_shapes(spec)
    session.open(shapes)
    holders = [
        PlayerService(name, p, spec, shapes, session.fmt, session.holder_access(p), ledger)
        for p, name in enumerate(HOLDERS)
    ]
    return SecureFederation(SmpcDriver(session, holders), holders)
