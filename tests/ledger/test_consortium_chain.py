"""Provisioning on a real anvil node: the admin sets up the consortium and adds hospitals, each
site checks the file against the chain at start, and every mismatch an IT person could meet
(wrong node, reset chain, other contract, forged admin, account never added) is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.federation.consortium import Consortium, ConsortiumError, load_consortium, write_consortium
from core.services import consortium as service
from core.settings import Settings, load_settings
from ledger.anvil import AnvilNode
from ledger.client import LedgerClient
from ledger.consortium import recover_signer, sign_consortium
from ledger.errors import (
    ConsortiumMismatch,
    RoundInProgress,
    UnregisteredAccount,
    WrongAdmin,
    WrongChain,
    WrongContract,
)
from ledger.identity import unlock_own_account
from ledger.node import connect_rpc
from ledger.session import fund_account
from main import main

pytestmark = pytest.mark.anvil

PASSWORD = "test-password"


@dataclass
class Federation:
    node: AnvilNode
    path: Path
    admin: Settings
    coordinator: Settings
    hospitals: dict[str, Settings]

    def site(self, settings: Settings) -> service.Site:
        return service.check_consortium(self.path, settings=settings, rpc_url=self.node.url)

    def client(self) -> LedgerClient:
        consortium = load_consortium(self.path, recover_signer)
        return LedgerClient(connect_rpc(self.node.url), consortium.contract.address, endpoint=self.node.url)


def _home(tmp_path: Path, name: str) -> Settings:
    settings = load_settings(home=tmp_path / name)
    service.create_account(settings, lambda: PASSWORD)
    return settings


@pytest.fixture
def federation(anvil: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Iterator[Federation]:
    """Set up as the admin would, through the CLI: init, then two hospitals added."""
    monkeypatch.setenv("MEDFED_KEYSTORE_PASSWORD", PASSWORD)
    coordinator = _home(tmp_path, "coordinator")
    hospitals = {name: _home(tmp_path, name) for name in ("st-mary", "st-anne")}
    admin_home, path = tmp_path / "admin", tmp_path / "kit" / "consortium.json"
    coordinator_address = service.account_address(coordinator)

    assert main(["consortium", "init", "--rpc", anvil.url, "--home", str(admin_home), "--out", str(path),
                 "--name", "Breast cancer consortium", "--dataset", "breast_cancer",
                 "--coordinator", coordinator_address, "--coordinator-store", "http://coordinator:8600",
                 "--commit-seconds", "60", "--vote-seconds", "60", "--aggregate-seconds", "120"]) == 0
    for port, (name, settings) in enumerate(hospitals.items(), start=8601):
        assert main(["consortium", "add-hospital", "--consortium", str(path), "--home", str(admin_home),
                     "--rpc", anvil.url, service.account_address(settings), name,
                     "--store-url", f"http://{name}:{port}"]) == 0
    capsys.readouterr()
    yield Federation(anvil, path, load_settings(home=admin_home), coordinator, hospitals)


def test_init_and_add_hospital_give_a_signed_file_that_matches_the_chain(federation: Federation) -> None:
    consortium = load_consortium(federation.path, recover_signer)  # the signature verifies
    client = federation.client()

    assert consortium.admin == service.account_address(federation.admin) == client.admin()
    assert consortium.chain_id == 31337 and consortium.contract.code_hash == client.code_hash()
    assert consortium.coordinator.address == service.account_address(federation.coordinator)
    assert client.coordinator().account == consortium.coordinator.address
    listed = [(m.address, m.hospital_id, m.store_url) for m in consortium.members]
    assert listed == [(service.account_address(s), name, f"http://{name}:{port}")
                      for port, (name, s) in enumerate(federation.hospitals.items(), start=8601)]
    assert [(m.account, m.hospital_id, m.store_url) for m in client.members()] == listed
    assert consortium.input_schema.input_shape == (30,) and consortium.input_schema.num_classes == 2
    assert consortium.round_timing().aggregate_seconds == 120

    st_mary = federation.site(federation.hospitals["st-mary"])
    assert st_mary.hospital_id == "st-mary"
    assert federation.site(federation.coordinator).hospital_id is None  # the coordinator's own role


def test_check_cli_names_this_machines_role(federation: Federation, capsys: pytest.CaptureFixture[str]) -> None:
    home = federation.hospitals["st-anne"].home
    assert main(["consortium", "check", "--consortium", str(federation.path), "--home", str(home),
                 "--rpc", federation.node.url]) == 0
    assert "is its hospital 'st-anne'" in capsys.readouterr().out


def test_check_cli_refuses_a_dataset_that_does_not_fit(federation: Federation,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    home = federation.hospitals["st-mary"].home
    args = ["consortium", "check", "--consortium", str(federation.path), "--home", str(home),
            "--rpc", federation.node.url, "--dataset"]

    assert main([*args, "breast_cancer"]) == 0
    assert main([*args, "diabetes"]) == 3  # the documented code for unusable data
    assert "it has 10 feature columns, the consortium's model takes 30" in capsys.readouterr().err


def test_an_account_never_added_is_refused(federation: Federation, tmp_path: Path) -> None:
    stranger = _home(tmp_path, "stranger")
    with pytest.raises(UnregisteredAccount) as caught:
        federation.site(stranger)
    assert "unregistered account" in caught.value.user_message
    assert main(["consortium", "check", "--consortium", str(federation.path), "--home", str(stranger.home),
                 "--rpc", federation.node.url]) == 8


def test_a_node_of_another_chain_is_refused(federation: Federation, anvil_binary: Path, tmp_path: Path) -> None:
    with AnvilNode(anvil_binary, extra_args=("--chain-id", "4242")) as other:
        with pytest.raises(WrongChain) as caught:
            service.check_consortium(federation.path, settings=federation.hospitals["st-mary"], rpc_url=other.url)
    assert "wrong chain" in caught.value.user_message and caught.value.actual == 4242


def test_a_reset_chain_without_the_contract_is_refused(federation: Federation, anvil_binary: Path) -> None:
    with AnvilNode(anvil_binary) as fresh:  # same chain id, nothing deployed
        with pytest.raises(WrongContract) as caught:
            service.check_consortium(federation.path, settings=federation.hospitals["st-mary"], rpc_url=fresh.url)
    assert "no contract" in caught.value.user_message and caught.value.actual is None


def test_other_code_at_the_contract_address_is_refused(federation: Federation) -> None:
    client = federation.client()
    client.w3.provider.make_request("anvil_setCode", [client.address, "0x600160005260206000f3"])  # type: ignore[arg-type]

    with pytest.raises(WrongContract) as caught:
        federation.site(federation.hospitals["st-mary"])
    assert "code hash differs" in caught.value.user_message


def test_a_file_signed_by_someone_other_than_the_contracts_admin_is_refused(
    federation: Federation, tmp_path: Path
) -> None:
    # Mallory copies the kit, names herself admin and signs it: the signature checks out, the chain does not.
    mallory = _home(tmp_path, "mallory")
    key = unlock_own_account(mallory.keystore_dir, PASSWORD)
    genuine = load_consortium(federation.path, recover_signer)
    forged = Consortium.model_validate({**genuine.model_dump(), "admin": key.address, "signature": ""})
    write_consortium(federation.path, sign_consortium(forged, key))

    with pytest.raises(WrongAdmin) as caught:
        federation.site(federation.hospitals["st-mary"])
    assert "not the account that signed" in caught.value.user_message


def test_a_file_listing_a_hospital_the_chain_does_not_is_refused(federation: Federation) -> None:
    # The admin signs a listing the chain does not hold (a store URL that was never registered).
    admin = unlock_own_account(federation.admin.keystore_dir, PASSWORD)
    genuine = load_consortium(federation.path, recover_signer)
    members = [m.model_dump() for m in genuine.members]
    members[1]["store_url"] = "http://elsewhere:9999"
    changed = Consortium.model_validate({**genuine.model_dump(), "members": members, "signature": ""})
    write_consortium(federation.path, sign_consortium(changed, admin))

    with pytest.raises(ConsortiumMismatch, match="as the ledger does not"):
        federation.site(federation.hospitals["st-mary"])


def test_add_hospital_is_refused_while_a_round_is_open_and_by_anyone_but_the_admin(
    federation: Federation, tmp_path: Path
) -> None:
    newcomer = _home(tmp_path, "st-paul")
    coordinator = unlock_own_account(federation.coordinator.keystore_dir, PASSWORD)
    client = federation.client()
    fund_account(client.w3, coordinator.address, funder=None, timeout=20, endpoint=federation.node.url)
    now = int(time.time())
    client.open_round(coordinator, 1, "00" * 32, load_consortium(federation.path, recover_signer).policy.digest,
                      now + 60, now + 120, now + 240)
    before = federation.path.read_bytes()

    with pytest.raises(RoundInProgress, match="only between rounds"):
        service.add_hospital(federation.path, settings=federation.admin, rpc_url=federation.node.url,
                             address=service.account_address(newcomer), hospital_id="st-paul",
                             store_url="http://st-paul:8603", password=lambda: PASSWORD)
    with pytest.raises(WrongAdmin, match="Only the consortium's admin"):
        service.add_hospital(federation.path, settings=federation.hospitals["st-mary"],
                             rpc_url=federation.node.url, address=service.account_address(newcomer),
                             hospital_id="st-paul", store_url="http://st-paul:8603", password=lambda: PASSWORD)
    assert federation.path.read_bytes() == before
    assert len(client.members()) == 2


def test_init_refuses_a_dataset_or_coordinator_it_cannot_use_before_deploying(
    anvil: AnvilNode, tmp_path: Path
) -> None:
    admin = load_settings(home=tmp_path / "admin")
    plan = service.ConsortiumPlan(name="x", dataset="breast_cancer", coordinator="0x12",
                                  coordinator_store_url="http://c:1")
    with pytest.raises(ConsortiumError, match="coordinator is not valid: address .*not an Ethereum address"):
        service.init_consortium(plan, settings=admin, rpc_url=anvil.url, out=tmp_path / "c.json",
                                password=lambda: PASSWORD)
    assert connect_rpc(anvil.url).eth.block_number == 0  # nothing was sent
    assert not (tmp_path / "c.json").exists()


def test_a_node_refuses_to_start_with_a_clear_message(federation: Federation, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """What `python main.py node` says before it does anything: the ledger node down, this
    account not a member, the hospital's data not the consortium's task."""
    from ledger.anvil import free_port

    home = federation.hospitals["st-mary"].home
    node = ["node", "--consortium", str(federation.path), "--home", str(home), "--dataset", "breast_cancer"]

    assert main([*node, "--rpc", f"http://127.0.0.1:{free_port()}"]) == 8
    assert "cannot be reached" in capsys.readouterr().err

    stranger = _home(tmp_path, "outsider")
    assert main(["node", "--consortium", str(federation.path), "--home", str(stranger.home),
                 "--dataset", "breast_cancer", "--rpc", federation.node.url]) == 8
    assert "unregistered account" in capsys.readouterr().err

    assert main([*node[:-1], "diabetes", "--rpc", federation.node.url]) == 3
    assert "the consortium's model takes 30" in capsys.readouterr().err

    assert main(["node", "--consortium", str(federation.path), "--home", str(federation.coordinator.home),
                 "--dataset", "breast_cancer", "--rpc", federation.node.url]) == 2
    assert "coordinator, not a hospital" in capsys.readouterr().err
