"""The one place that picks implementations: verifier, aggregator, recorders and state.

Everything else talks to the interfaces of `core.federation.interfaces`; the embedded default
and a real deployment differ only in what is built here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from core.errors import ConfigError
from core.federation.aggregators import create_aggregator
from core.federation.interfaces import Aggregator, Recorder, Verifier
from core.federation.plaintext_verifier import NoVerifier, PlaintextVerifier
from core.models.architecture import ModelSpec
from core.models.weights import Weights
from core.settings import Settings
from core.state.db import Database, open_database

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


def build_secure(spec: ModelSpec, settings: Settings) -> tuple[Verifier, Aggregator]:
    """The SMPC verifier and aggregator sharing one session, in-process or over the players of
    `settings.smpc_players`."""
    from smpc.factory import build_secure_components  # TensorFlow-Encrypted loads only when asked for

    return build_secure_components(spec, protocol=settings.smpc_protocol, players=settings.smpc_players)


def build_ledger_recorder(settings: Settings, *, rpc_url: str | None = None) -> Recorder:
    """The chain recorder: the embedded chain in the data directory, or a JSON-RPC node."""
    from ledger.recorder import Web3Recorder

    url = rpc_url or settings.rpc_url
    if url:
        return Web3Recorder.rpc(settings.home, url, keystore_dir=settings.keystore_dir, blob_dir=settings.blob_dir)
    return Web3Recorder.embedded(settings.home, keystore_dir=settings.keystore_dir, blob_dir=settings.blob_dir)
