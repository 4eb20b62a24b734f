"""Provisioning from the command line, as each site's IT person runs it: its own account (only
the address is printed), its own TLS identity (only the certificate is shown), and the admin's
consortium file shown once its signature checks out."""

from __future__ import annotations

import json
import re
from pathlib import Path

from eth_account import Account

from core.data.loading import load_dataset
from core.federation.consortium import write_consortium
from ledger.accounts import Keystore
from ledger.consortium import sign_consortium
from ledger.identity import OWN_ACCOUNT
from smpc.transport.identity import fingerprint
from tests.core.federation.consortium_sample import sample_consortium, secure_sample
from tests.test_main_cli import run

ADDRESS_LINE = re.compile(r"^0x[0-9a-fA-F]{40}\n$")
PASSWORD = "correct horse battery staple"


def test_account_create_prints_only_the_address_and_keeps_the_key_encrypted(tmp_path: Path) -> None:
    home = tmp_path / "st-mary"

    created = run("account", "create", "--home", str(home), home=home, timeout=120,
                  MEDFED_KEYSTORE_PASSWORD=PASSWORD)

    assert created.returncode == 0, created.stderr
    assert ADDRESS_LINE.match(created.stdout), created.stdout
    address = created.stdout.strip()
    keyfile = home / "keystore" / f"{OWN_ACCOUNT}.json"
    key = Keystore(home / "keystore", PASSWORD).unlock(OWN_ACCOUNT).key
    assert Account.from_key(key).address == address
    text = keyfile.read_text(encoding="utf-8")
    assert key.hex() not in text.lower() and key.hex() not in created.stdout + created.stderr
    assert json.loads(text)["crypto"]["kdf"] == "scrypt"
    assert keyfile.stat().st_mode & 0o077 == 0  # readable by its owner only

    shown = run("account", "show", "--home", str(home), home=home, timeout=120)
    assert shown.returncode == 0 and shown.stdout == created.stdout


def test_account_create_keeps_an_existing_account(tmp_path: Path) -> None:
    home = tmp_path / "site"
    first = run("account", "create", "--home", str(home), home=home, timeout=120, MEDFED_KEYSTORE_PASSWORD=PASSWORD)

    again = run("account", "create", "--home", str(home), home=home, timeout=120)  # no password needed

    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert "already holds this machine's account" in again.stderr


def test_account_create_without_a_password_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "site"
    result = run("account", "create", "--home", str(home), home=home, timeout=120)

    assert result.returncode == 2
    assert "MEDFED_KEYSTORE_PASSWORD" in result.stderr.strip().splitlines()[-1]
    assert not (home / "keystore").exists() or not any((home / "keystore").iterdir())


def test_account_show_without_an_account_says_what_to_run(tmp_path: Path) -> None:
    result = run("account", "show", "--home", str(tmp_path), home=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "account create" in result.stderr


def test_consortium_show_prints_a_verified_file_and_refuses_a_tampered_one(tmp_path: Path) -> None:
    admin = Account.from_key("0x" + "42" * 32)
    path = tmp_path / "consortium.json"
    write_consortium(path, sign_consortium(sample_consortium(load_dataset("breast_cancer"), admin=admin.address),
                                           admin))

    shown = run("consortium", "show", "--consortium", str(path), home=tmp_path, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "signed by its admin" in shown.stdout and "st-mary" in shown.stdout and admin.address in shown.stdout

    raw = json.loads(path.read_text())
    raw["members"][0]["hospital_id"] = "mallory"
    path.write_text(json.dumps(raw))
    refused = run("consortium", "show", "--consortium", str(path), home=tmp_path, timeout=120)
    assert refused.returncode == 2
    assert "changed after the admin signed it" in refused.stderr
    assert "mallory" not in refused.stdout


def test_tls_create_prints_the_fingerprint_and_certificate_and_refuses_a_second_time(tmp_path: Path) -> None:
    home = tmp_path / "server0"

    created = run("tls", "create", "--home", str(home), "--name", "server0", home=home, timeout=120)

    assert created.returncode == 0, created.stderr
    cert = home / "tls" / "tls-cert.pem"
    key = (home / "tls" / "tls-key.pem").read_text()
    assert created.stdout.splitlines() == [f"fingerprint  {fingerprint(cert.read_bytes())}", f"certificate  {cert}"]
    assert "PRIVATE KEY" not in created.stdout + created.stderr and key.splitlines()[1] not in created.stdout
    assert run("tls", "show", "--home", str(home), home=home, timeout=120).stdout == created.stdout

    again = run("tls", "create", "--home", str(home), home=home, timeout=120)
    assert again.returncode == 2
    assert "already has a TLS identity" in again.stderr
    assert (home / "tls" / "tls-key.pem").read_text() == key  # kept, not replaced


def test_consortium_show_lists_the_smpc_parties_and_each_members_fingerprint(tmp_path: Path) -> None:
    admin = Account.from_key("0x" + "42" * 32)
    path = tmp_path / "consortium.json"
    consortium = sign_consortium(secure_sample(load_dataset("breast_cancer"), admin=admin.address), admin)
    write_consortium(path, consortium)

    shown = run("consortium", "show", "--consortium", str(path), home=tmp_path, timeout=120)

    assert shown.returncode == 0, shown.stderr
    for party in consortium.parties():
        assert fingerprint(party.tls_cert) in shown.stdout, party.name
    assert "server2.example.org:4442" in shown.stdout and "(format 2)" in shown.stdout


def test_consortium_check_without_a_tls_identity_says_what_to_run(tmp_path: Path) -> None:
    admin = Account.from_key("0x" + "42" * 32)
    path = tmp_path / "consortium.json"
    write_consortium(path, sign_consortium(secure_sample(load_dataset("breast_cancer"), admin=admin.address),
                                           admin))
    home = tmp_path / "server1"

    result = run("consortium", "check", "--consortium", str(path), "--home", str(home), "--party", "server1",
                 home=home, timeout=120)

    assert result.returncode == 2
    assert "no TLS identity" in result.stderr and "pin it for 'server1'" in result.stderr
