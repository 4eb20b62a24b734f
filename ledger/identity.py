"""This machine's own ledger account: one encrypted keyfile in the data directory's keystore.

Every site of a real federation (hospital, coordinator, admin) makes its account where it runs;
only the address leaves the machine, the key never does.
"""

from __future__ import annotations

from pathlib import Path

from eth_account.signers.local import LocalAccount

from ledger.accounts import DEFAULT_SCRYPT_N, PASSWORD_ENV, Keystore
from ledger.errors import KeystoreError

OWN_ACCOUNT = "account"  # keystore/account.json


def own_address(keystore_dir: Path) -> str | None:
    """The address of this machine's account, read without unlocking it; None if it has none."""
    keystore = Keystore(keystore_dir, "unused: addresses are read without the password")
    return keystore.address_of(OWN_ACCOUNT) if keystore.exists(OWN_ACCOUNT) else None


def create_own_account(keystore_dir: Path, password: str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> str:
    """Makes this machine's account and returns its address; refuses if one exists."""
    return Keystore(keystore_dir, password, scrypt_n=scrypt_n).create(OWN_ACCOUNT).address


def unlock_own_account(keystore_dir: Path, password: str) -> LocalAccount:
    """This machine's account, decrypted with `password`."""
    keystore = Keystore(keystore_dir, password)
    if not keystore.exists(OWN_ACCOUNT):
        raise KeystoreError(
            "This data directory has no ledger account yet: run `account create --home DIR` first "
            f"(with {PASSWORD_ENV} set).",
            path=str(keystore.path_of(OWN_ACCOUNT)),
        )
    return keystore.unlock(OWN_ACCOUNT)
