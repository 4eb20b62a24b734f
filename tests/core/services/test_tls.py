"""This machine's TLS identity as a party of a secure consortium: made once in its home, only the
certificate shown, and checked against the certificate the consortium pinned for the party."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.data.loading import load_dataset
from core.federation.consortium import (
    Consortium,
    ConsortiumError,
    TlsCertificateMismatch,
    TlsIdentityExists,
    TlsIdentityMissing,
)
from core.services.consortium import SmpcPlan, format_consortium, smpc_entry
from core.services.tls import check_tls_identity, create_tls_identity, read_certificate, tls_identity
from core.settings import Settings, load_settings
from tests.core.federation.consortium_sample import sample_consortium, secure_sample


def _home(tmp_path: Path, name: str) -> Settings:
    return load_settings(home=tmp_path / name)


@pytest.fixture
def homes(tmp_path: Path) -> dict[str, Settings]:
    """Every party's own data directory, each with the identity its `tls create` made."""
    homes = {name: _home(tmp_path, name) for name in ("server0", "server1", "server2", "driver", "st-mary")}
    for name, settings in homes.items():
        create_tls_identity(settings, name)
    return homes


def _pinned(homes: dict[str, Settings]) -> Consortium:
    certs = {name: (s.tls_dir / "tls-cert.pem").read_text() for name, s in homes.items()}
    return secure_sample(load_dataset("breast_cancer"), certs=certs)


def test_create_writes_a_private_key_and_shows_only_the_certificate(tmp_path: Path) -> None:
    settings = _home(tmp_path, "st-mary")

    made = create_tls_identity(settings, "st-mary")

    key = settings.tls_dir / "tls-key.pem"
    assert made.cert_path == settings.tls_dir / "tls-cert.pem" and made.name == "st-mary"
    assert key.stat().st_mode & 0o077 == 0
    assert "PRIVATE KEY" not in made.cert_path.read_text() and len(made.fingerprint) == 64
    assert tls_identity(settings) == made


def test_create_twice_is_refused_and_keeps_the_first_identity(tmp_path: Path) -> None:
    settings = _home(tmp_path, "st-mary")
    first = create_tls_identity(settings, "st-mary")

    with pytest.raises(TlsIdentityExists) as caught:
        create_tls_identity(settings, "st-mary")

    assert "already has a TLS identity" in caught.value.user_message
    assert caught.value.exit_code == 2  # as the other "already a member / already exists" refusals
    assert tls_identity(settings).fingerprint == first.fingerprint


def test_show_without_an_identity_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(TlsIdentityMissing, match="tls create --home DIR"):
        tls_identity(_home(tmp_path, "new"))


def test_each_party_passes_with_its_own_certificate(homes: dict[str, Settings]) -> None:
    consortium = _pinned(homes)

    for name, settings in homes.items():
        assert check_tls_identity(consortium, settings.tls_dir, name) == tls_identity(settings).fingerprint


def test_another_homes_certificate_is_refused_naming_the_party(homes: dict[str, Settings]) -> None:
    consortium = _pinned(homes)

    with pytest.raises(TlsCertificateMismatch) as caught:
        check_tls_identity(consortium, homes["server1"].tls_dir, "server0")

    assert caught.value.user_message.startswith(
        "This machine's TLS certificate is not the one the consortium pinned for 'server0'; ")
    assert caught.value.expected == tls_identity(homes["server0"]).fingerprint
    assert caught.value.actual == tls_identity(homes["server1"]).fingerprint
    assert isinstance(caught.value, ConsortiumError)


def test_a_home_without_an_identity_or_an_unknown_party_is_refused(homes: dict[str, Settings],
                                                                  tmp_path: Path) -> None:
    consortium = _pinned(homes)

    with pytest.raises(TlsIdentityMissing, match="pin it for 'st-mary'"):
        check_tls_identity(consortium, tmp_path / "empty" / "tls", "st-mary")
    with pytest.raises(ConsortiumError, match="no SMPC party 'server3'; its parties are server0, server1"):
        check_tls_identity(consortium, homes["server0"].tls_dir, "server3")
    with pytest.raises(ConsortiumError, match="is not secure"):
        check_tls_identity(sample_consortium(load_dataset("breast_cancer")), homes["server0"].tls_dir, "server0")


def test_show_lists_every_partys_fingerprint(homes: dict[str, Settings]) -> None:
    lines = format_consortium(_pinned(homes)).splitlines()

    def shown(name: str) -> list[str]:
        return next(line for line in lines if line.split()[:1] == [name]).split()

    assert shown("server1") == ["server1", "player", "server1.example.org:4441",
                                tls_identity(homes["server1"]).fingerprint]
    assert shown("driver") == ["driver", "driver", "(dials", "out)", tls_identity(homes["driver"]).fingerprint]
    member = lines.index(next(line for line in lines if line.split()[:1] == ["st-mary"]))
    assert lines[member + 1].split() == ["tls", tls_identity(homes["st-mary"]).fingerprint]
    assert any(line.split()[:2] == ["smpc", "securenn,"] for line in lines)


def test_a_plain_consortium_shows_no_pinning(tmp_path: Path) -> None:
    assert "smpc          none" in format_consortium(sample_consortium(load_dataset("breast_cancer")))


def test_the_admin_reads_certificates_from_files_and_refuses_what_is_not_one(homes: dict[str, Settings],
                                                                          tmp_path: Path) -> None:
    players = [(name, f"{name}.example.org:4440", homes[name].tls_dir / "tls-cert.pem")
               for name in ("server2", "server0", "server1")]
    driver = homes["driver"].tls_dir / "tls-cert.pem"

    smpc = smpc_entry(SmpcPlan(players=players, driver_cert=driver, driver_address="127.0.0.1:4449"))

    assert [p.name for p in smpc.players] == ["server0", "server1", "server2"]  # protocol order
    assert smpc.driver.tls_cert == driver.read_text()

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\n" + "A" * 128 + "\n-----END CERTIFICATE-----\n")
    cases = [
        (SmpcPlan(players=players[:2], driver_cert=driver, driver_address="127.0.0.1:4449"), "missing: server1"),
        (SmpcPlan(players=[*players, players[0]], driver_cert=driver, driver_address="127.0.0.1:4449"), "'server2' is given twice"),
        (SmpcPlan(players=[*players[:2], ("server9", "h:1", driver)], driver_cert=driver, driver_address="127.0.0.1:4449"), "Unknown SMPC player"),
        (SmpcPlan(players=players, driver_cert=tmp_path / "missing.pem", driver_address="127.0.0.1:4449"), "for the SMPC driver cannot be read"),
        (SmpcPlan(players=players, driver_cert=homes["driver"].tls_dir / "tls-key.pem", driver_address="127.0.0.1:4449"), "holds a private key"),
        (SmpcPlan(players=players, driver_cert=garbage, driver_address="127.0.0.1:4449"), "not a readable X.509 certificate"),
        (SmpcPlan(players=players, driver_cert=players[0][2], driver_address="127.0.0.1:4449"), "pinned for 'server2' and 'driver'"),
        (SmpcPlan(players=[("server0", "nowhere", players[1][2]), *players[::2]], driver_cert=driver, driver_address="127.0.0.1:4449"),
         "is not host:port"),
    ]
    for plan, message in cases:
        with pytest.raises(ConsortiumError) as caught:
            smpc_entry(plan)
        assert message in caught.value.user_message, caught.value.user_message
    with pytest.raises(ConsortiumError, match="for hospital 'x' cannot be read"):
        read_certificate(tmp_path / "nope.pem", whose="hospital 'x'")


def test_the_stores_tls_lets_the_coordinator_fetch_from_a_hospitals_store(tmp_path: Path,
                                                                        homes: dict[str, Settings]) -> None:
    """What the deployment wires: St Mary's store serves with her pinned identity, the coordinator's
    (its home holds the driver's identity) fetches with its own; a home holding another party's
    identity is refused before anything is served."""
    from core.federation.channel import COORDINATOR
    from core.services.tls import store_tls
    from core.state.blobs import BlobStore
    from ledger.blobs import BlobServer, fetch_blob

    consortium = _pinned(homes)
    mary = store_tls(consortium, homes["st-mary"].tls_dir, "st-mary")
    coordinator = store_tls(consortium, homes["driver"].tls_dir, COORDINATOR)

    assert coordinator.stores[COORDINATOR] == tls_identity(homes["driver"]).fingerprint
    assert mary.clients == {tls_identity(s).fingerprint for s in homes.values()}  # every pinned party
    store = BlobStore(tmp_path / "mary-blobs")
    digest = store.put(b"an update")
    with BlobServer(store, tls=mary) as server:
        assert fetch_blob(server.url, digest, BlobStore(tmp_path / "c"), timeout=5, tls=coordinator,
                          owner="st-mary") == b"an update"
    with pytest.raises(TlsCertificateMismatch):
        store_tls(consortium, homes["server0"].tls_dir, COORDINATOR)
