"""Real rounds on a ledger for the audit tests: the simulation's roles, with one hospital's node
keeping its state (its ballots) in the home's SQLite, as a deployment site's node does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.federation.roles.runner import run_in_turn
from core.services.simulation import Federation, SimulationConfig, prepare_federation
from core.settings import Settings
from core.state.models import FederationStatus
from core.state.role_state import SqliteRoleState

SITE = "hospital-1"  # the hospital whose node state this home keeps


@dataclass(frozen=True)
class Recorded:
    federation_id: int
    report: list[dict[str, Any]]  # per round: previous and global hash, contributors


def small_config(**overrides: Any) -> SimulationConfig:
    values: dict[str, Any] = {"hospitals": 3, "malicious": 1, "attack": "scaling", "rounds": 2,
                              "local_epochs": 1, "seed": 0}
    return SimulationConfig(**(values | overrides))


def keep_site_state(federation: Federation, site: str = SITE) -> None:
    """`site`'s node saves its state (cursor-free: ballots, failures, checks) in the home's SQLite."""
    node = next(n for n in federation.nodes if n.hospital_id == site)
    node.state = SqliteRoleState(federation.sqlite.database, federation.sqlite.federation_id, "node")


def run_rounds(settings: Settings, config: SimulationConfig, *, site: str = SITE) -> Recorded:
    """Runs the federation's rounds; `site`'s node keeps its ballots in the home's SQLite."""
    federation = prepare_federation(config, settings)
    try:
        keep_site_state(federation, site)
        run_in_turn(federation.channel, federation.coordinator, federation.nodes, federation.archive)
        federation.sqlite.finish(FederationStatus.COMPLETED)
        report = [{"round": o.round_number, "previous_hash": o.previous_hash, "global_hash": o.global_hash,
                   "contributors": o.contributors} for o in federation.archive.outcomes]
        return Recorded(federation.sqlite.federation_id, report)
    finally:
        federation.close()

