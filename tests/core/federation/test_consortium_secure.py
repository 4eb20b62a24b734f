"""A secure consortium's record: the SMPC players, the driver and every hospital pinned to their TLS
certificates; what it accepts, what it refuses, and that a plain (format 1) record is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.data.dataset import Dataset
from core.data.loading import load_dataset
from core.federation.consortium import (
    SECURE_FORMAT,
    ConsortiumError,
    ConsortiumFileInvalid,
    MemberEntry,
    parse_consortium,
    read_consortium,
    write_consortium,
)
from tests.core.federation.consortium_sample import sample_consortium, secure_sample, tls_cert

FAKE_SIGNATURE = "0x" + "11" * 65


@pytest.fixture(scope="module")
def table() -> Dataset:
    return load_dataset("breast_cancer")


@pytest.fixture(scope="module")
def certs() -> dict[str, str]:
    return {name: tls_cert(name) for name in ("server0", "server1", "server2", "driver", "st-mary", "st-anne")}


def test_a_secure_record_round_trips_and_lists_its_parties(table: Dataset, certs: dict[str, str],
                                                           tmp_path: Path) -> None:
    consortium = secure_sample(table, certs=certs, signature=FAKE_SIGNATURE)
    path = tmp_path / "consortium.json"

    write_consortium(path, consortium)
    again = read_consortium(path)

    assert again == consortium and again.canonical_bytes() == consortium.canonical_bytes()
    assert again.secure and again.format_version == SECURE_FORMAT
    parties = again.parties()
    assert [(p.name, p.role) for p in parties] == [
        ("server0", "player"), ("server1", "player"), ("server2", "player"), ("driver", "driver"),
        ("st-mary", "hospital")]
    assert parties[1].address == "server1.example.org:4441" and parties[3].address is None
    assert parties[4].tls_cert == certs["st-mary"]
    assert again.party("server2") == parties[2] and again.party("mallory") is None


def test_the_signed_form_covers_the_players_the_driver_and_the_member_certificates(
        table: Dataset, certs: dict[str, str]) -> None:
    consortium = secure_sample(table, certs=certs)
    smpc = consortium.smpc
    assert smpc is not None
    moved_player = smpc.players[0].model_copy(update={"address": "mallory.example.org:4440"})
    changes = {
        "player address": {"smpc": smpc.model_copy(update={"players": (moved_player, *smpc.players[1:])})},
        "driver certificate": {"smpc": smpc.model_copy(
            update={"driver": smpc.driver.model_copy(update={"tls_cert": tls_cert("mallory")})})},
        "member certificate": {"members": (consortium.members[0].model_copy(
            update={"tls_cert": tls_cert("mallory")}),)},
    }
    for what, change in changes.items():
        assert consortium.model_copy(update=change).canonical_bytes() != consortium.canonical_bytes(), what
    assert json.loads(consortium.canonical_bytes())["smpc"]["players"][0]["tls_cert"] == certs["server0"]


def test_a_plain_record_keeps_format_1_and_its_file_has_no_new_keys(table: Dataset) -> None:
    consortium = sample_consortium(table, signature=FAKE_SIGNATURE)

    raw = json.loads(consortium.to_json())

    assert consortium.format_version == 1 and not consortium.secure and consortium.parties() == []
    assert "smpc" not in raw and "tls_cert" not in raw["members"][0]
    assert b"smpc" not in consortium.canonical_bytes() and b"tls_cert" not in consortium.canonical_bytes()


def test_a_certificate_wrapped_otherwise_is_the_same_certificate(table: Dataset, certs: dict[str, str]) -> None:
    body = "".join(certs["st-mary"].splitlines()[1:-1])
    rewrapped = "-----BEGIN CERTIFICATE-----\r\n" + body + "\r\n-----END CERTIFICATE-----"

    member = MemberEntry(address="0x" + "b1" * 20, hospital_id="st-mary", store_url="https://h:1",
                         tls_cert=rewrapped)

    assert member.tls_cert == certs["st-mary"]


def _raw(table: Dataset, certs: dict[str, str]) -> dict:
    return json.loads(secure_sample(table, certs=certs, signature=FAKE_SIGNATURE).to_json())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw, c: raw["members"][0].pop("tls_cert"), "hospital 'st-mary' has no tls_cert"),
        (lambda raw, c: raw["smpc"]["players"].pop(), "must be exactly server0, server1, server2 in this order, got server0, server1"),
        (lambda raw, c: raw["smpc"]["players"].reverse(), "got server2, server1, server0"),
        (lambda raw, c: raw["smpc"]["players"][0].update(address="server0.example.org"), "is not host:port"),
        (lambda raw, c: raw["smpc"]["players"][0].update(address="server0:99999"), "is not host:port"),
        (lambda raw, c: raw["smpc"]["players"][1].update(tls_cert="not a certificate"), "is not one PEM certificate"),
        (lambda raw, c: raw["smpc"]["players"][1].update(
            tls_cert="-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"), "is not one PEM certificate"),
        (lambda raw, c: raw["smpc"]["players"][1].update(
            tls_cert="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "not a DER certificate"),
        (lambda raw, c: raw["smpc"]["driver"].update(tls_cert=c["server1"]),
         "the same TLS certificate is pinned for 'server1' and 'driver'"),
        (lambda raw, c: raw["members"][0].update(tls_cert=c["server0"]), "pinned for 'server0' and 'st-mary'"),
        (lambda raw, c: raw["members"][0].update(hospital_id="driver"), "the party name 'driver' is used twice"),
        (lambda raw, c: raw["smpc"].update(protocol="pond"), "smpc.protocol"),
        (lambda raw, c: raw.update(format_version=1), "a secure consortium is format version 2"),
        (lambda raw, c: raw["smpc"]["driver"].update(api_key="x"), "smpc.driver.api_key is not allowed"),
        (lambda raw, c: raw["members"][0].update(store_url="http://st-mary:8601"),
         "hospital 'st-mary''s model store serves over mutual TLS: its URL must be https://HOST:PORT"),
        (lambda raw, c: raw["coordinator"].update(store_url="http://coordinator:8600"),
         "the coordinator's model store serves over mutual TLS: its URL must be https://HOST:PORT"),
    ],
)
def test_an_invalid_secure_record_is_refused_with_the_field_named(table: Dataset, certs: dict[str, str],
                                                                   change, message: str) -> None:
    raw = _raw(table, certs)
    change(raw, certs)

    with pytest.raises(ConsortiumFileInvalid) as caught:
        parse_consortium(json.dumps(raw), source="consortium.json")

    assert message in caught.value.user_message


def test_a_hospital_without_a_certificate_cannot_join_a_secure_consortium(table: Dataset,
                                                                           certs: dict[str, str]) -> None:
    consortium = secure_sample(table, certs=certs, signature=FAKE_SIGNATURE)
    new = MemberEntry(address="0x" + "b2" * 20, hospital_id="st-anne", store_url="https://st-anne:8601")

    with pytest.raises(ConsortiumError, match="hospital 'st-anne' needs its TLS certificate"):
        consortium.with_member(new)
    with pytest.raises(ConsortiumError, match="pinned for 'server2' and 'st-anne'"):
        consortium.with_member(new.model_copy(update={"tls_cert": certs["server2"]}))
    extended = consortium.with_member(new.model_copy(update={"tls_cert": certs["st-anne"]}))

    assert [p.name for p in extended.parties()][-2:] == ["st-mary", "st-anne"]
    assert extended.signature == ""


def test_a_secure_consortium_refuses_a_plain_http_store_and_a_plain_one_keeps_it(table: Dataset,
                                                                                 certs: dict[str, str]) -> None:
    new = MemberEntry(address="0x" + "b2" * 20, hospital_id="st-anne", store_url="http://st-anne:8601",
                      tls_cert=certs["st-anne"])

    with pytest.raises(ConsortiumError, match="must be https://HOST:PORT, not 'http://st-anne:8601'"):
        secure_sample(table, certs=certs).with_member(new)
    plain = sample_consortium(table).with_member(new.model_copy(update={"tls_cert": None}))
    assert plain.members[-1].store_url == "http://st-anne:8601" and plain.coordinator.store_url.startswith("http://")


def test_a_plain_record_takes_format_2_once_a_member_has_a_certificate(table: Dataset) -> None:
    consortium = sample_consortium(table, signature=FAKE_SIGNATURE)
    new = MemberEntry(address="0x" + "b2" * 20, hospital_id="st-anne", store_url="https://st-anne:8601",
                      tls_cert=tls_cert("st-anne"))

    assert consortium.with_member(new).format_version == SECURE_FORMAT
    assert consortium.with_member(new.model_copy(update={"tls_cert": None})).format_version == 1
