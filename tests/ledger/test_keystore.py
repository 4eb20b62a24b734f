"""Keystores: encrypted at rest, a wrong password is a clear error, passwords come from the caller."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.accounts import DEFAULT_SCRYPT_N, DEMO_PASSWORD, Keystore, keystore_password
from ledger.errors import KeystoreError


def test_keyfile_holds_no_plaintext_key(tmp_path: Path) -> None:
    store = Keystore(tmp_path, "correct horse")
    account = store.create("hospital-0")
    raw = (tmp_path / "hospital-0.json").read_text()
    key_hex = account.key.hex().removeprefix("0x")
    assert key_hex not in raw.lower()
    assert bytes(account.key) not in (tmp_path / "hospital-0.json").read_bytes()
    crypto = json.loads(raw)["crypto"]
    assert crypto["kdf"] == "scrypt" and crypto["kdfparams"]["n"] == DEFAULT_SCRYPT_N
    assert (tmp_path / "hospital-0.json").stat().st_mode & 0o077 == 0
    assert Keystore(tmp_path, "correct horse").unlock("hospital-0").address == account.address
    assert store.address_of("hospital-0") == account.address


def test_wrong_password_is_a_clear_error(tmp_path: Path) -> None:
    Keystore(tmp_path, "right", scrypt_n=2**10).create("admin")
    with pytest.raises(KeystoreError, match="password is wrong for 'admin'") as exc:
        Keystore(tmp_path, "wrong", scrypt_n=2**10).unlock("admin")
    assert exc.value.path.endswith("admin.json")


def test_existing_keystore_is_never_overwritten(tmp_path: Path) -> None:
    store = Keystore(tmp_path, "pw", scrypt_n=2**10)
    first = store.create("admin")
    with pytest.raises(KeystoreError, match="already exists"):
        store.create("admin")
    assert Keystore(tmp_path, "pw").unlock("admin").address == first.address


def test_password_comes_from_the_environment_and_demo_only_where_allowed() -> None:
    assert keystore_password(allow_demo=False, environ={"MEDFED_KEYSTORE_PASSWORD": "s3cret"}) == "s3cret"
    assert keystore_password(allow_demo=True, environ={}) == DEMO_PASSWORD
    with pytest.raises(KeystoreError, match="MEDFED_KEYSTORE_PASSWORD"):
        keystore_password(allow_demo=False, environ={})


def test_unsafe_account_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="account name"):
        Keystore(tmp_path, "pw").create("../escape")
