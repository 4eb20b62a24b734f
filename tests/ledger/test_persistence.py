"""The embedded chain survives the process: blocks, balances, contract storage and logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.models.weights import from_bytes
from ledger.client import RoundState
from ledger.errors import LedgerError
from ledger.history import replay
from ledger.recorder import Web3Recorder
from ledger.session import LedgerSettings, open_ledger
from tests.ledger.conftest import FAST_SCRYPT
from tests.ledger.rounds import honest_except, hospitals, initial_weights, plan_round, record

MEMBERS = hospitals(3)


def _settings(home: Path) -> LedgerSettings:
    return LedgerSettings(home=home, keystore_password="pw", scrypt_n=FAST_SCRYPT)


def test_rounds_survive_reopening_the_data_directory(tmp_path: Path) -> None:
    recorder = Web3Recorder.open(_settings(tmp_path))
    recorder.register_hospitals(MEMBERS)
    first = plan_round(1, initial_weights(), MEMBERS, honest_except("hospital-2"))
    record(recorder, first)
    w3 = recorder.client.w3
    before = {
        "head": w3.eth.block_number,
        "head_hash": w3.eth.get_block("latest")["hash"],
        "balance": w3.eth.get_balance(recorder.address_of("hospital-0")),
        "address": recorder.client.address,
        "events": [(e.name, e.block_number, e.args) for e in recorder.client.events()],
    }
    recorder.close()

    reopened = Web3Recorder.open(_settings(tmp_path))
    w3 = reopened.client.w3
    assert w3.eth.block_number == before["head"]
    assert w3.eth.get_block("latest")["hash"] == before["head_hash"]
    assert w3.eth.get_balance(reopened.address_of("hospital-0")) == before["balance"]
    assert reopened.client.address == before["address"]
    assert [(e.name, e.block_number, e.args) for e in reopened.client.events()] == before["events"]
    assert reopened.client.round(1).state == RoundState.FINALIZED
    assert reopened.client.round(1).global_hash == first.outcome.global_hash
    # ... and the chain continues from there, with the same accounts.
    second = plan_round(2, first.outcome.global_weights, MEMBERS, honest_except())
    record(reopened, second)
    assert [r.number for r in replay(reopened.client).finalized()] == [1, 2]
    reopened.close()


def test_read_only_session_sees_history_and_needs_no_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Web3Recorder.open(_settings(tmp_path))
    recorder.register_hospitals(MEMBERS)
    record(recorder, plan_round(1, initial_weights(), MEMBERS, honest_except()))
    recorder.close()
    monkeypatch.delenv("MEDFED_KEYSTORE_PASSWORD", raising=False)
    session = open_ledger(LedgerSettings(home=tmp_path), read_only=True)
    assert [r.state for r in replay(session.client).rounds] == ["finalized"]
    session.close()


def test_a_second_writer_is_refused_while_the_first_holds_the_chain(tmp_path: Path) -> None:
    first = open_ledger(_settings(tmp_path))
    with pytest.raises(LedgerError, match="in use by another"):
        open_ledger(_settings(tmp_path))
    reader = open_ledger(_settings(tmp_path), read_only=True)
    assert reader.client.address == first.client.address
    reader.close()
    first.close()
    open_ledger(_settings(tmp_path)).close()


def test_read_only_without_a_ledger_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="nothing has been recorded"):
        open_ledger(_settings(tmp_path), read_only=True)


_WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from ledger.recorder import Web3Recorder
from ledger.session import LedgerSettings
from tests.ledger.rounds import honest_except, hospitals, initial_weights, plan_round, record
recorder = Web3Recorder.open(LedgerSettings(home=Path({home!r}), keystore_password="pw", scrypt_n=1024))
members = hospitals(4)
recorder.register_hospitals(members)
weights = initial_weights()
print("ready", flush=True)
for number in range(1, 1000):
    planned = plan_round(number, weights, members, honest_except("hospital-3"))
    record(recorder, planned)
    weights = planned.outcome.global_weights
"""


@pytest.mark.slow
def test_a_killed_writer_leaves_a_consistent_chain(tmp_path: Path) -> None:
    """SIGKILL in the middle of recording: the chain reopens at a whole block and carries on."""
    import signal
    import subprocess
    import sys
    import time

    root = str(Path(__file__).resolve().parents[2])
    script = _WRITER.format(root=root, home=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=root)
    assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
    time.sleep(2.5)  # a few rounds in, mid-transaction at some point
    process.send_signal(signal.SIGKILL)
    process.wait()

    recorder = Web3Recorder.open(_settings(tmp_path))
    history = replay(recorder.client)
    assert history.problems == []
    assert len(history.finalized()) >= 1
    members = hospitals(4)
    recorder.register_hospitals(members)
    last = history.finalized()[-1]
    weights = from_bytes(recorder.blobs.get(last.global_hash))
    # The same round again, as a restarted engine would run it: a round the kill left open with the
    # same start is resumed (only what is missing is sent), any other is superseded.
    record(recorder, plan_round(last.number + 1, weights, members, honest_except("hospital-3")))
    after = replay(recorder.client)
    assert after.problems == [] and after.finalized()[-1].number == last.number + 1
    recorder.close()
