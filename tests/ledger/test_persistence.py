"""The embedded chain survives the process: blocks, balances, contract storage and logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.services.ledger_audit import audit_ledger
from core.settings import load_settings
from ledger.errors import LedgerError
from ledger.history import replay
from ledger.session import LedgerSettings, open_ledger
from tests.ledger.conftest import FAST_SCRYPT
from tests.ledger.federations import run_rounds, small_config


def _settings(home: Path) -> LedgerSettings:
    return LedgerSettings(home=home, keystore_password="pw", scrypt_n=FAST_SCRYPT)


def _snapshot(home: Path) -> dict[str, object]:
    session = open_ledger(_settings(home), read_only=True)
    try:
        w3, client = session.w3, session.client
        return {"head": w3.eth.block_number, "head_hash": w3.eth.get_block("latest")["hash"],
                "address": client.address,
                "events": [(e.name, e.block_number, e.args) for e in client.events()]}
    finally:
        session.close()


def test_rounds_survive_the_process_and_a_later_run_continues_from_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDFED_KEYSTORE_PASSWORD", raising=False)  # read-only needs no password
    settings = load_settings(home=tmp_path)
    first = run_rounds(settings, small_config(rounds=1))
    before = _snapshot(tmp_path)
    assert _snapshot(tmp_path) == before  # reopened: the same blocks, contract and logs

    # A later run in the same home continues the chain with round 2, from round 1's global model.
    run_rounds(settings, small_config(rounds=2))
    session = open_ledger(_settings(tmp_path), read_only=True)
    try:
        history = replay(session.client)
        assert session.client.address == before["address"]
        assert session.w3.eth.get_block(int(before["head"]))["hash"] == before["head_hash"]  # type: ignore[call-overload]
    finally:
        session.close()
    assert history.problems == []
    assert [(r.number, r.previous_hash) for r in history.finalized()][1] == (2, first.report[0]["global_hash"])
    result = audit_ledger(settings)  # both runs' records agree with the chain
    assert result.ok, result.discrepancies
    assert result.rounds_compared == 3


def test_a_second_writer_is_refused_while_the_first_holds_the_chain(tmp_path: Path) -> None:
    first = open_ledger(_settings(tmp_path))
    with pytest.raises(LedgerError, match="in use by another"):
        open_ledger(_settings(tmp_path))
    reader = open_ledger(_settings(tmp_path), read_only=True)
    assert reader.client.address == first.client.address
    reader.close()
    first.close()
    open_ledger(_settings(tmp_path)).close()


HOLD_THE_CHAIN = """
import sys, time
from pathlib import Path
from ledger.session import LedgerSettings, open_ledger
from tests.ledger.conftest import FAST_SCRYPT
session = open_ledger(LedgerSettings(home=Path(sys.argv[1]), keystore_password="pw", scrypt_n=FAST_SCRYPT))
print("holding", flush=True)
time.sleep(600)
"""


def test_a_writer_killed_while_it_holds_the_chain_leaves_it_to_the_next(tmp_path: Path) -> None:
    """The lock is the operating system's: a killed holder (no close, no cleanup) releases it."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_CHAIN, str(tmp_path)], cwd=root, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(LedgerError, match="in use by another"):
            open_ledger(_settings(tmp_path))
    finally:
        holder.kill()  # SIGKILL: the holder never reaches its close()
        holder.communicate(timeout=60)

    session = open_ledger(_settings(tmp_path))
    try:
        assert session.w3.eth.block_number > 0  # the holder's chain, its contract deployed
    finally:
        session.close()


def test_read_only_without_a_ledger_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="nothing has been recorded"):
        open_ledger(_settings(tmp_path), read_only=True)


@pytest.mark.slow
def test_a_killed_simulation_leaves_a_chain_the_next_run_carries_on(tmp_path: Path) -> None:
    """SIGKILL in the middle of a run: the chain reopens at a whole block, the next run finishes
    the round the kill left open, and the home passes the audit."""
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MEDFED_HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MEDFED_KEYSTORE_PASSWORD", None)
    process = subprocess.Popen([sys.executable, "main.py", "simulate", "--hospitals", "3", "--rounds", "50",
                                "--epochs", "1"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deployments = tmp_path / "ledger" / "deployments"
    deadline = time.monotonic() + 120
    while not _rounds_on_chain(tmp_path, deployments) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)  # somewhere inside a round
    process.send_signal(signal.SIGKILL)
    process.wait()

    session = open_ledger(_settings(tmp_path), read_only=True)
    try:
        history = replay(session.client)
    finally:
        session.close()
    assert history.problems == []
    done = len(history.finalized())
    assert history.rounds, "the run was killed before its first round opened"
    resumed = subprocess.run([sys.executable, "main.py", "simulate", "--hospitals", "3", "--rounds", str(done + 1),
                              "--epochs", "1"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    audit = subprocess.run([sys.executable, "main.py", "ledger", "audit"], cwd=root, env=env, capture_output=True,
                           text=True, timeout=300)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def _rounds_on_chain(home: Path, deployments: Path) -> bool:
    if not deployments.exists():
        return False
    try:
        session = open_ledger(_settings(home), read_only=True)
    except LedgerError:
        return False
    try:
        return session.client.round_count() > 0
    finally:
        session.close()
