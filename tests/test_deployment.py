"""A real federation on one machine: anvil, a coordinator process and four hospital processes,
each with its own data directory, keystore and records (tests/deployment.py).

Over three rounds: the label-flipping hospital, which votes dishonestly, is rejected and every
honest hospital accepted; the coordinator killed while aggregating round 1 is restarted and
finishes it; a hospital killed while training in round 2 is that round's recorded dropout, the
round finalises without it, and once restarted it takes part in round 3; `ledger audit` passes in
the coordinator's and every honest hospital's home, and fails in the attacker's, whose own
ballots contradict the policy on its own scores. The hospital killed is
the attacker: with four registered hospitals, an honest dropout would leave the other honest
ones two accepts short of the strict majority of all registered (the dishonest voter rejects
them), so they could not be accepted in that round, by the rule's design.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.federation.channel import CommitsClosed, Phase
from tests.deployment import ROOT, LoopbackFederation, observer

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

KILLED_EXIT = 75  # what a process told to exit at a named step exits with


def _wait_final(channel, number: int, timeout: float, federation: LoopbackFederation) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = channel.round(number)
        if view is not None and view.phase is Phase.FINAL:
            return
        time.sleep(1)
    logs = "\n".join(f"--- {name}\n{federation.tail(name)}" for name in federation.sites)
    raise AssertionError(f"round {number} did not finalise in {timeout:.0f} s\n{logs}")


def test_a_federation_of_processes_survives_a_dead_node_and_a_dead_coordinator(tmp_path: Path) -> None:
    federation = LoopbackFederation(tmp_path, hospitals=4, malicious=1)
    federation.provision()
    try:
        federation.coordinator(rounds=3)
        federation.start("coordinator", exit_at="aggregation:1")
        for hid in federation.hospital_ids:
            federation.start(hid, exit_at="training:2" if hid == "hospital-4" else None,
                             extra=["--until-round", "3"])
        chain = observer(federation)

        assert federation.wait("coordinator", 300) == KILLED_EXIT
        assert chain.round(1) is not None and chain.round(1).phase is Phase.AGGREGATE  # type: ignore[union-attr]
        federation.start("coordinator", extra=["--linger", "30"])
        _wait_final(chain, 1, 180, federation)

        assert federation.wait("hospital-4", 300) == KILLED_EXIT
        _wait_final(chain, 2, 240, federation)  # without hospital-4, once its commit deadline passed
        federation.start("hospital-4", extra=["--until-round", "3"])
        _wait_final(chain, 3, 300, federation)
        for hid in federation.hospital_ids:
            assert federation.wait(hid, 120) == 0, federation.tail(hid)
        assert federation.wait("coordinator", 120) == 0, federation.tail("coordinator")

        events, _ = chain.events(0)
        closed = {e.round_number: e for e in events if isinstance(e, CommitsClosed)}
        assert closed[2].dropouts == ("hospital-4",) and "hospital-4" not in closed[2].candidates
        assert "hospital-4" in closed[3].candidates  # back after its restart
        honest = {"hospital-1", "hospital-2", "hospital-3"}
        for number in (1, 2, 3):
            view = chain.round(number)
            assert view is not None and view.phase is Phase.FINAL
            assert set(view.candidates) >= honest and set(view.accepted) == honest
            assert set(view.contributors) == honest
        for name in ["coordinator", *federation.hospital_ids]:
            audit = subprocess.run(
                [sys.executable, "main.py", "ledger", "audit", "--home", str(federation.home(name)),
                 "--consortium", str(federation.consortium), "--rpc", federation.rpc_url],
                cwd=ROOT, capture_output=True, text=True, timeout=300,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            if name in federation.attackers:
                # Its own record convicts it: its ballots accept what its scores and the policy reject.
                assert audit.returncode == 10, audit.stdout + audit.stderr
                assert "hospital-4's ballot in round 1" in audit.stdout and "policy accepts" in audit.stdout
            else:  # every honest site's record agrees with the chain
                assert audit.returncode == 0, f"{name}: {audit.stdout}{audit.stderr}"
    finally:
        federation.stop_all()
