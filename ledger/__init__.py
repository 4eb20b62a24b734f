"""The permissioned Ethereum ledger: federation contract, chain client, `LedgerChannel`, model blobs, audit.

The v1 recorder, history and audit modules are loaded only when asked for (PEP 562), so the
rest of the package imports without them while they are ported to contract v2.
"""

from importlib import import_module
from typing import Any

from ledger.blobs import BlobServer, BlobStore, fetch_blob
from ledger.errors import (
    BlobMismatch,
    BlobNotFound,
    DecisionMismatch,
    KeystoreError,
    LedgerError,
    NodeUnavailable,
    TransactionReverted,
    UnknownAccount,
)
from ledger.session import LedgerSession, LedgerSettings, open_ledger

_LAZY = {
    "AuditReport": "ledger.audit",
    "audit_chain": "ledger.audit",
    "LedgerHistory": "ledger.history",
    "replay": "ledger.history",
    "Web3Recorder": "ledger.recorder",
    "LedgerChannel": "ledger.channel",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ledger' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "AuditReport",
    "BlobMismatch",
    "BlobNotFound",
    "BlobServer",
    "BlobStore",
    "DecisionMismatch",
    "KeystoreError",
    "LedgerChannel",
    "LedgerError",
    "LedgerHistory",
    "LedgerSession",
    "LedgerSettings",
    "NodeUnavailable",
    "TransactionReverted",
    "UnknownAccount",
    "Web3Recorder",
    "audit_chain",
    "fetch_blob",
    "open_ledger",
    "replay",
]
