"""Use cases of the Ledger page and the account part of the Settings page.

The ledger is opened read-only for each query (the chain may be written by a federation run at
the same time); keystore accounts are created or imported with a password the user types.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.services import ledger_audit
from core.settings import Settings
from ledger.accounts import Keystore
from ledger.errors import KeystoreError
from ledger.explorer import BlockView, EventView, TransactionView

__all__ = [
    "AccountView",
    "AuditResult",
    "BlockView",
    "EventView",
    "TransactionView",
    "account_label",
    "audit",
    "blocks",
    "create_account",
    "events",
    "ledger_exists",
    "list_accounts",
    "verify_model_hash",
]

_HASH = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
MIN_PASSWORD = 8

AuditResult = ledger_audit.LedgerAuditResult


@dataclass(frozen=True)
class AccountView:
    label: str
    address: str


def ledger_exists(settings: Settings) -> bool:
    """Whether there is a ledger to explore: a configured node, or an embedded chain in the home."""
    return bool(settings.rpc_url) or (settings.home / "ledger").exists()


def blocks(settings: Settings, limit: int = 50) -> list[BlockView]:
    """The most recent blocks, newest first, each transaction decoded to its contract call."""
    return ledger_audit.recent_blocks(settings, limit=limit)


def events(settings: Settings, limit: int = 500, name: str | None = None) -> list[EventView]:
    """The most recent contract events, newest first, in words (accounts as hospital ids, accept
    bitmaps as the candidates they accept and reject), optionally of one kind."""
    return ledger_audit.recent_events(settings, limit=limit, name=name)


def event_details(event: EventView) -> dict[str, Any]:
    """An event's arguments other than its round and actor, as the Ledger page shows them."""
    return dict(event.details)


def verify_model_hash(settings: Settings, model_hash: str) -> bool:
    """Whether the hash is a global model or a committed candidate recorded on the ledger."""
    text = model_hash.strip()
    if not _HASH.match(text):
        raise ConfigError("A model hash is 64 hexadecimal characters (a SHA-256 digest), optionally after 0x.")
    return ledger_audit.is_model_on_ledger(settings, text.lower())


def model_file_hash(path: Path) -> str:
    """The SHA-256 of a model file's bytes: what the ledger records for the weights it holds."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ConfigError(f"The model file {path} cannot be read.", detail=str(exc)) from exc
    return digest.hexdigest()


def audit(settings: Settings) -> AuditResult:
    """Replays the chain and compares it with the model blobs and this hospital's database."""
    return ledger_audit.audit_ledger(settings)


def account_label(hospital_name: str) -> str:
    """A hospital's keystore name: its name reduced to the characters a keyfile name allows."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", hospital_name).strip("-.")[:64]
    return label or "hospital"


def list_accounts(settings: Settings) -> list[AccountView]:
    """The accounts in the keystore folder (read without unlocking them)."""
    # Listing and reading addresses needs no password; a placeholder keeps Keystore's check happy.
    store = Keystore(settings.keystore_dir, "listing-only")
    accounts = []
    for label in store.labels():
        try:
            address = store.address_of(label)
        except KeystoreError as exc:  # one damaged keyfile must not hide the others
            address = f"unreadable: {exc.user_message}"
        accounts.append(AccountView(label, address))
    return accounts


def create_account(settings: Settings, password: str, private_key: str | None = None,
                   label: str | None = None) -> AccountView:
    """Creates a new account, or imports one from its hex private key, in an encrypted keyfile."""
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"Choose a keystore password of at least {MIN_PASSWORD} characters.")
    key: bytes | None = None
    if private_key:
        text = private_key.strip()
        if not _KEY.match(text):
            raise ConfigError("A private key is 64 hexadecimal characters, optionally after 0x.")
        key = bytes.fromhex(text.removeprefix("0x"))
    label = label or account_label(settings.hospital_name)
    account = Keystore(settings.keystore_dir, password).create(label, key)
    return AccountView(label, account.address)
