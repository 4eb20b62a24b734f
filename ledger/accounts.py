"""Hospital and admin accounts in encrypted keystores (Ethereum keyfiles) in the data directory.

A private key never touches the disk in plaintext: each account is one keyfile, encrypted with
scrypt under a password the caller supplies (`MEDFED_KEYSTORE_PASSWORD`). Only the embedded
chain's simulated peers may fall back to the documented demo password.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from core.files import write_atomic
from ledger.errors import KeystoreError

PASSWORD_ENV = "MEDFED_KEYSTORE_PASSWORD"
# Only for the simulated hospitals of the embedded, single-machine demo; never for a real network.
DEMO_PASSWORD = "medfedchain-demo"
DEFAULT_SCRYPT_N = 2**15  # ~32 MiB and ~0.1 s per unlock: strong, yet 20 peers unlock in seconds

_LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def keystore_password(*, allow_demo: bool, environ: Mapping[str, str] | None = None) -> str:
    """The keystore password from MEDFED_KEYSTORE_PASSWORD, else the demo one where allowed."""
    value = (environ if environ is not None else os.environ).get(PASSWORD_ENV)
    if value:
        return value
    if allow_demo:
        return DEMO_PASSWORD
    raise KeystoreError(
        f"Set {PASSWORD_ENV} to the password of this hospital's ledger keystore.", path=PASSWORD_ENV
    )


class Keystore:
    """A directory of encrypted keyfiles, one per label (a hospital id, or 'admin')."""

    def __init__(self, directory: Path, password: str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
        if not password:
            raise KeystoreError("The keystore password must not be empty.", path=str(directory))
        self.directory = directory
        self._password = password
        self._scrypt_n = scrypt_n
        self._unlocked: dict[str, LocalAccount] = {}

    def path_of(self, label: str) -> Path:
        if not _LABEL.match(label):
            raise KeystoreError(
                "An account name may hold only letters, digits, '.', '_' and '-' (at most 64).",
                path=str(self.directory),
                detail=repr(label),
            )
        return self.directory / f"{label}.json"

    def exists(self, label: str) -> bool:
        return self.path_of(label).exists()

    def labels(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.json")) if self.directory.exists() else []

    def address_of(self, label: str) -> str:
        """The account's address, read from the keyfile without unlocking it."""
        path = self.path_of(label)
        try:
            return to_checksum_address("0x" + json.loads(path.read_text(encoding="utf-8"))["address"])
        except (OSError, ValueError, KeyError) as exc:
            raise KeystoreError(
                "A ledger keystore file is missing or damaged.", path=str(path), detail=str(exc)
            ) from exc

    def create(self, label: str, private_key: bytes | None = None) -> LocalAccount:
        """Creates (or imports) an account and writes its encrypted keyfile atomically."""
        path = self.path_of(label)
        if path.exists():
            raise KeystoreError("A keystore for this account already exists.", path=str(path))
        account: LocalAccount = Account.from_key(private_key) if private_key else Account.create()
        keyfile = Account.encrypt(account.key, self._password, kdf="scrypt", iterations=self._scrypt_n)
        write_atomic(path, json.dumps(keyfile), mode=0o600)
        self._unlocked[label] = account
        return account

    def unlock(self, label: str) -> LocalAccount:
        """Decrypts the account's keyfile; a wrong password raises KeystoreError."""
        if label in self._unlocked:
            return self._unlocked[label]
        path = self.path_of(label)
        try:
            keyfile = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise KeystoreError("No ledger keystore exists for this account.", path=str(path)) from exc
        except (OSError, ValueError) as exc:
            raise KeystoreError(
                "A ledger keystore file is unreadable.", path=str(path), detail=str(exc)
            ) from exc
        try:
            key = Account.decrypt(keyfile, self._password)
        except ValueError as exc:
            raise KeystoreError(
                f"The keystore password is wrong for '{label}' (check {PASSWORD_ENV}).", path=str(path)
            ) from exc
        account: LocalAccount = Account.from_key(key)
        self._unlocked[label] = account
        return account

    def unlock_or_create(self, label: str) -> LocalAccount:
        return self.unlock(label) if self.exists(label) else self.create(label)
