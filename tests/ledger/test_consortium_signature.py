"""The admin's EIP-191 signature over the consortium file: it verifies as written, and any change
an attacker makes to the file (a member, the policy, the admin) is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from core.data.loading import load_dataset
from core.federation.policy import VerificationPolicy
from core.federation.consortium import (
    ConsortiumSignatureInvalid,
    load_consortium,
    write_consortium,
)
from ledger.consortium import recover_signer, sign_consortium
from ledger.errors import WrongAdmin
from tests.core.federation.consortium_sample import sample_consortium, secure_sample, tls_cert

ADMIN = Account.from_key("0x" + "42" * 32)
MALLORY = Account.from_key("0x" + "66" * 32)


@pytest.fixture
def signed_file(tmp_path: Path) -> Path:
    consortium = sign_consortium(sample_consortium(load_dataset("breast_cancer"), admin=ADMIN.address), ADMIN)
    path = tmp_path / "consortium.json"
    write_consortium(path, consortium)
    return path


def test_a_signed_file_verifies_and_names_its_admin(signed_file: Path) -> None:
    consortium = load_consortium(signed_file, recover_signer)
    assert consortium.admin == ADMIN.address
    assert recover_signer(consortium.canonical_bytes(), consortium.signature) == ADMIN.address


def _looser_policy(raw: dict) -> None:
    """What a tamperer who knows the format does: a looser threshold and its matching digest,
    so that only the signature can catch it."""
    thresholds = {**raw["policy"]["thresholds"], "max_norm_ratio": 100.0}
    raw["policy"] = {"thresholds": thresholds, "digest": VerificationPolicy(**thresholds).digest()}


def _tamper(path: Path, change) -> None:
    raw = json.loads(path.read_text(encoding="utf-8"))
    change(raw)
    path.write_text(json.dumps(raw, indent=2), encoding="utf-8")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda raw: raw["members"][0].update(address=MALLORY.address), id="changed member"),
        pytest.param(lambda raw: raw["members"][0].update(store_url="http://mallory:8601"), id="changed store"),
        pytest.param(lambda raw: raw["members"].append(
            {"address": MALLORY.address, "hospital_id": "mallory", "store_url": "http://mallory:1"}), id="added member"),
        pytest.param(_looser_policy, id="changed policy"),
        pytest.param(lambda raw: raw["timing"].update(vote_seconds=1), id="changed timing"),
        pytest.param(lambda raw: raw.update(admin=MALLORY.address), id="changed admin"),
    ],
)
def test_a_tampered_file_is_refused(signed_file: Path, change) -> None:
    _tamper(signed_file, change)

    with pytest.raises(ConsortiumSignatureInvalid) as caught:
        load_consortium(signed_file, recover_signer)
    assert "changed after the admin signed it" in caught.value.user_message


def test_a_file_re_signed_by_someone_else_is_refused(signed_file: Path) -> None:
    consortium = load_consortium(signed_file, recover_signer)
    signature = MALLORY.sign_message(encode_defunct(primitive=consortium.canonical_bytes())).signature
    forged = consortium.with_signature(signature.to_0x_hex())
    write_consortium(signed_file, forged)

    with pytest.raises(ConsortiumSignatureInvalid) as caught:
        load_consortium(signed_file, recover_signer)
    assert caught.value.recovered == MALLORY.address


def test_a_garbage_signature_is_refused_not_crashed_on(signed_file: Path) -> None:
    _tamper(signed_file, lambda raw: raw.update(signature="0x" + "00" * 65))
    with pytest.raises(ConsortiumSignatureInvalid):
        load_consortium(signed_file, recover_signer)


def test_only_the_named_admin_signs() -> None:
    consortium = sample_consortium(load_dataset("breast_cancer"), admin=ADMIN.address)
    with pytest.raises(WrongAdmin):
        sign_consortium(consortium, MALLORY)


def test_a_file_signed_before_format_2_still_verifies_and_reads_back_byte_for_byte() -> None:
    # Written and signed by the format-1 code, before the smpc section existed.
    path = Path(__file__).parent / "data" / "consortium-v1.json"

    consortium = load_consortium(path, recover_signer)

    assert consortium.admin == ADMIN.address and consortium.format_version == 1
    assert not consortium.secure and consortium.members[0].tls_cert is None
    assert consortium.to_json() == path.read_text(encoding="utf-8")


MALLORY_CERT = tls_cert("mallory")


@pytest.fixture
def secure_file(tmp_path: Path) -> Path:
    consortium = sign_consortium(secure_sample(load_dataset("breast_cancer"), admin=ADMIN.address), ADMIN)
    path = tmp_path / "consortium.json"
    write_consortium(path, consortium)
    return path


def _downgrade(raw: dict) -> None:
    """An attacker who strips the TLS pinning to make the federation run without it."""
    raw.pop("smpc")
    raw["format_version"] = 1
    for member in raw["members"]:
        member.pop("tls_cert")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda raw: raw["smpc"]["players"][0].update(address="mallory.example.org:4440"),
                     id="moved player"),
        pytest.param(lambda raw: raw["smpc"]["players"][2].update(tls_cert=MALLORY_CERT), id="player cert"),
        pytest.param(lambda raw: raw["smpc"]["driver"].update(tls_cert=MALLORY_CERT), id="driver cert"),
        pytest.param(lambda raw: raw["smpc"]["driver"].update(address="mallory.example.org:1"), id="driver address"),
        pytest.param(lambda raw: raw["members"][0].update(tls_cert=MALLORY_CERT), id="member cert"),
        pytest.param(_downgrade, id="pinning stripped"),
    ],
)
def test_a_tampered_secure_file_is_refused(secure_file: Path, change) -> None:
    load_consortium(secure_file, recover_signer)  # as signed, it verifies
    _tamper(secure_file, change)

    with pytest.raises(ConsortiumSignatureInvalid) as caught:
        load_consortium(secure_file, recover_signer)
    assert "changed after the admin signed it" in caught.value.user_message
