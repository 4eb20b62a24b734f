"""The permissioned Ethereum ledger: federation contract, chain client, `Web3Recorder`, model blobs, audit."""

from ledger.audit import AuditReport, audit_chain
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
