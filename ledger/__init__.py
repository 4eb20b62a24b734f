"""The permissioned Ethereum ledger: federation contract, chain client, `Web3Recorder`, model blobs, audit."""

# The blob store and its errors live in core (`core.state.blobs`); re-exported for the ledger's users.
from core.errors import BlobMismatch, BlobNotFound
from core.state.blobs import BlobStore
from ledger.audit import AuditReport, audit_chain
from ledger.blobs import BlobServer, fetch_blob
from ledger.errors import (
    DecisionMismatch,
    KeystoreError,
    LedgerError,
    NodeUnavailable,
    TransactionReverted,
    UnknownAccount,
)
from ledger.history import LedgerHistory, replay
from ledger.recorder import Web3Recorder
from ledger.session import LedgerSession, LedgerSettings, open_ledger

__all__ = [
    "AuditReport",
    "BlobMismatch",
    "BlobNotFound",
    "BlobServer",
    "BlobStore",
    "DecisionMismatch",
    "KeystoreError",
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
