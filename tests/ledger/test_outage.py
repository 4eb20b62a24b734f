"""A node that stops mid-round gives a clear error; the round completes once it is back."""

from __future__ import annotations

import pytest

from ledger.anvil import AnvilNode
from ledger.audit import audit_chain
from ledger.errors import NodeUnavailable
from ledger.recorder import Web3Recorder
from ledger.session import LedgerSettings
from tests.ledger.conftest import FAST_RETRY, FAST_SCRYPT
from tests.ledger.rounds import POLICY, honest_except, hospitals, initial_weights, plan_round

pytestmark = pytest.mark.anvil

MEMBERS = hospitals(4)


def test_round_resumes_after_the_node_restarts(anvil: AnvilNode, tmp_path) -> None:
    settings = LedgerSettings(
        home=tmp_path / "home",
        rpc_url=anvil.url,
        keystore_password="pw",
        scrypt_n=FAST_SCRYPT,
        retry=FAST_RETRY,
        receipt_timeout=10.0,
    )
    recorder = Web3Recorder.open(settings)
    recorder.register_hospitals(MEMBERS)
    planned = plan_round(1, initial_weights(), MEMBERS, honest_except("hospital-3"))
    recorder.open_round(1, planned.start_hash, planned.start, POLICY)
    for c in planned.commitments:
        recorder.record_commitment(c)
    recorder.record_votes(planned.votes[:4])  # hospital-0's ballots reach the chain

    anvil.stop()
    with pytest.raises(NodeUnavailable) as exc:
        recorder.record_votes(planned.votes)
    assert exc.value.endpoint == anvil.url
    assert "cannot be reached" in exc.value.user_message

    anvil.start()  # same port, state reloaded from its state file
    recorder.record_votes(planned.votes)  # resumes: hospital-0's votes are not sent again
    recorder.record_decisions(planned.decisions)
    recorder.finalize_round(planned.outcome)
    report, history = audit_chain(recorder.client, recorder.blobs)
    assert report.ok, report.discrepancies
    (entry,) = history.rounds
    assert entry.state == "finalized" and len(entry.votes) == 16
    assert entry.contributors == ["hospital-0", "hospital-1", "hospital-2"]
    recorder.close()


def test_unreachable_node_at_start_is_a_clear_error(tmp_path) -> None:
    from ledger.anvil import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(NodeUnavailable, match="cannot be reached"):
        Web3Recorder.open(
            LedgerSettings(home=tmp_path, rpc_url=url, keystore_password="pw", retry=FAST_RETRY)
        )


def test_a_configured_funder_keystore_pays_for_gas(anvil: AnvilNode, tmp_path) -> None:
    """On a network without unlocked dev accounts, a funder keystore tops up the hospitals."""
    from ledger.accounts import Keystore
    from ledger.anvil import DEV_PRIVATE_KEY
    from ledger.session import FUNDING

    home = tmp_path / "home"
    Keystore(home / "keystore", "pw", scrypt_n=FAST_SCRYPT).create(
        "funder", bytes.fromhex(DEV_PRIVATE_KEY[2:])
    )
    settings = LedgerSettings(
        home=home,
        rpc_url=anvil.url,
        keystore_password="pw",
        scrypt_n=FAST_SCRYPT,
        retry=FAST_RETRY,
        funder="funder",
    )
    recorder = Web3Recorder.open(settings)
    recorder.register_hospitals(MEMBERS)
    w3 = recorder.client.w3
    assert all(w3.eth.get_balance(recorder.address_of(h.hospital_id)) == FUNDING for h in MEMBERS)
    funder = recorder.session.keystore.address_of("funder")
    assert w3.eth.get_transaction_count(funder) == 1 + len(MEMBERS)  # the admin and each hospital
    recorder.close()


def test_a_transaction_never_mined_times_out_clearly(anvil_binary, tmp_path) -> None:
    from ledger.errors import ReceiptTimeout

    with AnvilNode(anvil_binary, extra_args=("--no-mining",)) as node:
        settings = LedgerSettings(
            home=tmp_path,
            rpc_url=node.url,
            keystore_password="pw",
            scrypt_n=FAST_SCRYPT,
            retry=FAST_RETRY,
            receipt_timeout=1.0,
        )
        with pytest.raises(ReceiptTimeout) as exc:
            Web3Recorder.open(settings)
    assert exc.value.tx_hash.startswith("0x") and "did not confirm" in exc.value.user_message
