"""The one place that picks implementations: verifier, aggregator, recorders and state.

Everything else talks to the interfaces of `core.federation.interfaces`; the embedded default
and a real deployment differ only in what is built here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from core.errors import ConfigError
from core.federation.aggregators import create_aggregator
from core.federation.channel import Phase, RoundChannel
from core.federation.consortium import Consortium
from core.federation.interfaces import Aggregator, SecureScoring, Verifier
from core.federation.memory_channel import InMemoryLedger
from core.federation.plaintext_verifier import NoVerifier, PlaintextVerifier
from core.models.architecture import ModelSpec
from core.models.weights import Weights
from core.settings import Settings
from core.state.db import Database, open_database

if TYPE_CHECKING:
    from ledger.session import LedgerSettings

log = logging.getLogger(__name__)

VERIFIERS = ("plaintext", "none")


def open_state(settings: Settings) -> Database:
    """Opens (creating and migrating if needed) the local SQLite state."""
    return open_database(settings.db_path)


def build_plaintext(
    verifier: str,
    aggregator: str,
    spec: ModelSpec,
    *,
    num_malicious: int = 0,
    root_update: Callable[[Weights], Weights] | None = None,
) -> tuple[Verifier, Aggregator]:
    if verifier == "plaintext":
        chosen: Verifier = PlaintextVerifier(spec)
    elif verifier == "none":
        chosen = NoVerifier()
    else:
        raise ConfigError(f"Unknown verifier '{verifier}'; choose one of {', '.join(VERIFIERS)}.")
    return chosen, create_aggregator(aggregator, num_malicious=num_malicious, root_update=root_update)


@dataclass
class SecureParts:
    """The SMPC parts of a simulated federation, all in this process: one owner verifier per
    hospital node, the driver's scoring and aggregation, and what closes them."""

    owner: Callable[[str], Verifier]
    scoring: SecureScoring
    aggregator: Aggregator
    global_check: Aggregator  # a node's check of a published global model: the holders' weighted sum
    close: Callable[[], None]


def build_secure_simulation(spec: ModelSpec, settings: Settings, channel: RoundChannel) -> SecureParts:
    """The three players on this process's devices; the share holders read the hospitals'
    share commitments from `channel`, as a deployment's players read them from the chain."""
    from smpc.factory import build_in_process  # TensorFlow-Encrypted loads only when asked for

    federation = build_in_process(spec, ChannelFacts(channel), protocol=settings.smpc_protocol)
    return SecureParts(federation.owner, federation.driver, federation.driver, federation.global_check(),
                       federation.close)


class ChannelFacts:
    """What an SMPC share holder reads of the round state, from the channel (the chain)."""

    def __init__(self, channel: RoundChannel) -> None:
        self.channel = channel

    def share_commitments(self, round_number: int, hospital_id: str) -> tuple[str, ...]:
        view = self.channel.round(round_number)
        commitment = view.commitment_of(hospital_id) if view is not None else None
        return tuple(commitment.share_commitments) if commitment is not None else ()

    def accepted_samples(self, round_number: int) -> dict[str, int] | None:
        view = self.channel.round(round_number)
        if view is None or view.phase not in (Phase.AGGREGATE, Phase.FINAL):
            return None
        counts = {}
        for hid in view.accepted:
            commitment = view.commitment_of(hid)
            counts[hid] = commitment.num_samples if commitment is not None else 0
        return counts


class ChannelSet(Protocol):
    """The channels of every role of one simulated federation, each acting as its identity."""

    def channel(self, identity: str) -> RoundChannel: ...

    def close(self) -> None: ...


class InMemoryChannels:
    """Every role of a simulation on one in-memory round state (`--no-ledger`)."""

    def __init__(self, hospital_ids: Sequence[str]) -> None:
        self.ledger = InMemoryLedger()
        for hospital_id in hospital_ids:
            self.ledger.register(hospital_id)

    def channel(self, identity: str) -> RoundChannel:
        return self.ledger.channel(identity)

    def close(self) -> None:
        """Nothing to release."""


def build_simulation_channels(settings: Settings, hospital_ids: Sequence[str], *, ledger: bool,
                              rpc_url: str | None = None) -> ChannelSet:
    """The round state of a simulation: in memory, or the embedded chain (or a JSON-RPC node),
    every hospital with its own keystore account in the data directory."""
    if not ledger:
        return InMemoryChannels(hospital_ids)
    from ledger.federation import SimulationLedger

    return SimulationLedger(_ledger_settings(settings, rpc_url or settings.rpc_url), hospital_ids)


def _ledger_settings(settings: Settings, rpc_url: str | None, password: str | None = None) -> LedgerSettings:
    from ledger.session import LedgerSettings

    return LedgerSettings(home=settings.home, rpc_url=rpc_url, keystore_path=settings.keystore_dir,
                          blob_path=settings.blob_dir, keystore_password=password)


def open_deployment_channel(settings: Settings, consortium: Consortium, identity: str, *, rpc_url: str | None,
                            serve: tuple[str, int], closers: list[Callable[[], None]],
                            password: str | None = None) -> RoundChannel:
    """One site's channel on the consortium's chain, with its model store served at `serve`; its
    account unlocked with `password` (None: MEDFED_KEYSTORE_PASSWORD). In a secure consortium the
    store serves, and the channel fetches, over mutual TLS with the consortium's pinned certificates."""
    from core.services.tls import store_tls
    from ledger.federation import open_site_channel

    tls = store_tls(consortium, settings.tls_dir, identity) if consortium.secure else None
    return open_site_channel(_ledger_settings(settings, rpc_url or settings.rpc_url, password),
                             consortium.contract.address, identity, serve, closers, store_tls=tls)


def smpc_directory(consortium: Consortium):  # -> smpc.transport.parties.PartyDirectory
    """The consortium's pinned SMPC parties, as the gateways and their clients look them up."""
    from smpc.deployment import directory_of

    return directory_of((p.name, p.role, p.address, p.tls_cert) for p in consortium.parties())


def _own_tls_identity(settings: Settings, party: str):  # -> smpc.transport.identity.TlsIdentity
    from smpc.transport.identity import load_identity

    return load_identity(settings.tls_dir, name=party)


@dataclass
class SecureNode:
    """A hospital node's SMPC parts in a secure consortium, over one pair of mutual-TLS links to
    the two share holders: its verifier (shares its own inputs, collects its own scores) and its
    check of each published global model (the holders' weighted sum of what the chain accepted)."""

    verifier: Verifier
    global_check: Aggregator


def secure_node(consortium: Consortium, settings: Settings, hospital_id: str,
                closers: list[Callable[[], None]]) -> SecureNode:
    from smpc.aggregation import SecureAggregate
    from smpc.deployment import owner_links
    from smpc.factory import owner_verifier
    from smpc.session import FIXED

    links = owner_links(_own_tls_identity(settings, hospital_id), smpc_directory(consortium))
    closers.extend(link.close for link in links)
    return SecureNode(owner_verifier(hospital_id, consortium.model_spec(), links), SecureAggregate(links, FIXED))


@dataclass
class SecureDriver:
    scoring: SecureScoring
    aggregator: Aggregator


def open_secure_driver(consortium: Consortium, settings: Settings, closers: list[Callable[[], None]]) -> SecureDriver:
    """The SMPC driver in this (the coordinator's) process, which runs under the loopback shim."""
    from smpc.deployment import open_remote_driver

    remote = open_remote_driver(consortium.model_spec(), _own_tls_identity(settings, "driver"),
                                smpc_directory(consortium))
    closers.append(remote.close)
    return SecureDriver(remote.driver, remote.driver)


def open_secure_player(consortium: Consortium, settings: Settings, name: str, channel: RoundChannel,
                       closers: list[Callable[[], None]]) -> None:
    """SMPC player `name` in this process (under the loopback shim), reading the hospitals' share
    commitments from `channel`; serves until the process stops."""
    from smpc.deployment import PlayerProcess

    player = PlayerProcess(name, _own_tls_identity(settings, name), smpc_directory(consortium),
                           consortium.model_spec(), ChannelFacts(channel))
    player.start()
    closers.append(player.stop)


def open_reader_channel(settings: Settings, consortium: Consortium, *, rpc_url: str | None,
                        closers: list[Callable[[], None]]) -> RoundChannel:
    """A read-only channel on the consortium's chain, for a party without a ledger account (an SMPC
    player reads share commitments; it fetches no model, so it has no model store TLS)."""
    from ledger.federation import open_reader_channel as open_reader

    return open_reader(_ledger_settings(settings, rpc_url or settings.rpc_url), consortium.contract.address,
                       closers)
