"""A secure consortium set up on a real anvil node through the CLI: every SMPC party and hospital
makes its TLS identity in its own home, only certificates reach the admin, and each site's check
at start refuses a home whose certificate is not the one pinned for it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.federation.consortium import load_consortium
from core.services import consortium as service
from core.services.tls import create_tls_identity, tls_identity
from core.settings import Settings, load_settings
from ledger.anvil import AnvilNode
from ledger.client import LedgerClient
from ledger.consortium import recover_signer
from ledger.node import connect_rpc
from main import main

pytestmark = pytest.mark.anvil

PASSWORD = "test-password"
PLAYERS = ("server0", "server1", "server2")


@dataclass
class SecureFederation:
    node: AnvilNode
    path: Path
    admin: Path
    homes: dict[str, Settings]  # every party's own home: players, driver, hospitals

    def cert(self, name: str) -> Path:
        return self.homes[name].tls_dir / "tls-cert.pem"

    def check(self, name: str, *extra: str) -> int:
        return main(["consortium", "check", "--consortium", str(self.path), "--home", str(self.homes[name].home),
                     *extra])


def _party(tmp_path: Path, name: str, *, account: bool = False) -> Settings:
    settings = load_settings(home=tmp_path / name)
    assert main(["tls", "create", "--home", str(settings.home), "--name", name]) == 0
    if account:
        service.create_account(settings, lambda: PASSWORD)
    return settings


def _init_args(anvil: AnvilNode, tmp_path: Path, path: Path, coordinator: str, certs: dict[str, Path]) -> list[str]:
    players = [f"--smpc-player={name}={name}.example.org:{4440 + i}={certs[name]}" for i, name in enumerate(PLAYERS)]
    return ["consortium", "init", "--rpc", anvil.url, "--home", str(tmp_path / "admin"), "--out", str(path),
            "--name", "Secure consortium", "--dataset", "breast_cancer", "--coordinator", coordinator,
            "--coordinator-store", "https://coordinator:8600", *players, "--smpc-driver-address",
            "driver.example.org:4450", "--smpc-driver", str(certs["driver"])]


@pytest.fixture
def federation(anvil: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Iterator[SecureFederation]:
    monkeypatch.setenv("MEDFED_KEYSTORE_PASSWORD", PASSWORD)
    homes = {name: _party(tmp_path, name) for name in (*PLAYERS, "driver")}
    homes.update({name: _party(tmp_path, name, account=True) for name in ("st-mary", "st-anne")})
    coordinator = load_settings(home=tmp_path / "coordinator")
    service.create_account(coordinator, lambda: PASSWORD)
    path = tmp_path / "kit" / "consortium.json"
    certs = {name: s.tls_dir / "tls-cert.pem" for name, s in homes.items()}

    assert main(_init_args(anvil, tmp_path, path, service.account_address(coordinator), certs)) == 0
    assert main(["consortium", "add-hospital", "--consortium", str(path), "--home", str(tmp_path / "admin"),
                 "--rpc", anvil.url, service.account_address(homes["st-mary"]), "st-mary",
                 "--store-url", "https://st-mary:8601", "--tls-cert", str(certs["st-mary"])]) == 0
    capsys.readouterr()
    yield SecureFederation(anvil, path, tmp_path / "admin", homes)


def test_the_file_pins_the_certificates_each_home_made(federation: SecureFederation) -> None:
    consortium = load_consortium(federation.path, recover_signer)

    assert consortium.secure and consortium.format_version == 2
    assert [(p.name, p.role) for p in consortium.parties()] == [
        ("server0", "player"), ("server1", "player"), ("server2", "player"), ("driver", "driver"),
        ("st-mary", "hospital")]
    for party in consortium.parties():
        assert party.tls_cert == federation.cert(party.name).read_text()
    assert consortium.smpc is not None and consortium.smpc.players[2].address == "server2.example.org:4442"


def test_each_party_passes_its_check_at_start(federation: SecureFederation,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert federation.check("st-mary", "--rpc", federation.node.url) == 0
    out = capsys.readouterr().out
    assert "is its hospital 'st-mary'" in out
    assert f"TLS certificate {tls_identity(federation.homes['st-mary']).fingerprint} is the one" in out

    assert federation.check("server1", "--party", "server1", "--rpc", federation.node.url) == 0
    assert "verified on chain 31337: this machine is its player 'server1'" in capsys.readouterr().out
    assert federation.check("driver", "--party", "driver") == 0  # no ledger node known: signature and TLS
    assert "the chain not checked" in capsys.readouterr().out


def test_a_home_with_another_certificate_is_refused(federation: SecureFederation,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert federation.check("server1", "--party", "server0") == 2
    assert "not the one the consortium pinned for 'server0'" in capsys.readouterr().err

    # st-mary's home given a fresh identity (a reinstalled machine): its account still checks, its TLS not.
    shutil.rmtree(federation.homes["st-mary"].tls_dir)
    create_tls_identity(federation.homes["st-mary"], "st-mary")
    assert federation.check("st-mary", "--rpc", federation.node.url) == 2
    assert "pinned for 'st-mary'" in capsys.readouterr().err

    assert federation.check("st-anne", "--party", "server3") == 2
    assert "no SMPC party 'server3'" in capsys.readouterr().err


def test_a_hospital_without_a_certificate_is_refused_and_nothing_is_written(
        federation: SecureFederation, capsys: pytest.CaptureFixture[str]) -> None:
    before = federation.path.read_bytes()
    add = ["consortium", "add-hospital", "--consortium", str(federation.path), "--home", str(federation.admin),
           "--rpc", federation.node.url, service.account_address(federation.homes["st-anne"]), "st-anne",
           "--store-url", "https://st-anne:8602"]

    assert main(add) == 2
    assert "hospital 'st-anne' needs its TLS certificate" in capsys.readouterr().err
    assert main([*add, "--tls-cert", str(federation.admin / "missing.pem")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main([*add, "--tls-cert", str(federation.cert("server0"))]) == 2
    assert "pinned for 'server0' and 'st-anne'" in capsys.readouterr().err
    plain_store = [*add[:-1], "http://st-anne:8602", "--tls-cert", str(federation.cert("st-anne"))]
    assert main(plain_store) == 2
    assert "model store serves over mutual TLS: its URL must be https://" in capsys.readouterr().err

    assert federation.path.read_bytes() == before
    contract = load_consortium(federation.path, recover_signer).contract.address
    client = LedgerClient(connect_rpc(federation.node.url), contract, endpoint=federation.node.url)
    assert [m.hospital_id for m in client.members()] == ["st-mary"]  # nothing registered either

    assert main([*add, "--tls-cert", str(federation.cert("st-anne"))]) == 0
    assert federation.check("st-anne", "--rpc", federation.node.url) == 0


def test_init_with_a_missing_certificate_deploys_nothing(anvil: AnvilNode, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MEDFED_KEYSTORE_PASSWORD", PASSWORD)
    certs = {name: _party(tmp_path, name).tls_dir / "tls-cert.pem" for name in (*PLAYERS, "driver")}
    certs["server2"] = tmp_path / "nowhere.pem"
    path = tmp_path / "consortium.json"

    assert main(_init_args(anvil, tmp_path, path, "0x" + "c0" * 20, certs)) == 2
    assert "SMPC player 'server2' cannot be read" in capsys.readouterr().err
    assert main(_init_args(anvil, tmp_path, path, "0x" + "c0" * 20, certs)[:-2]) == 2  # no --smpc-driver
    assert "--smpc-driver CERT.pem" in capsys.readouterr().err
    fixed = {**certs, "server2": _party(tmp_path, "server2-again").tls_dir / "tls-cert.pem"}
    no_address = _init_args(anvil, tmp_path, path, "0x" + "c0" * 20, fixed)
    del no_address[-4:-2]
    assert main(no_address) == 2
    assert "--smpc-driver-address" in capsys.readouterr().err
    plain_store = _init_args(anvil, tmp_path, path, "0x" + "c0" * 20, fixed)
    plain_store[plain_store.index("--coordinator-store") + 1] = "http://coordinator:8600"
    assert main(plain_store) == 2
    assert "the coordinator's model store serves over mutual TLS: its URL must be https://" in capsys.readouterr().err
    assert connect_rpc(anvil.url).eth.block_number == 0 and not path.exists()
