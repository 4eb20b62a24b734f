"""A secure federation of processes on loopback: anvil, three SMPC players, the coordinator (whose
process is the SMPC driver) and four hospital nodes, each with its own home, ledger account and
TLS identity, every SMPC link through the parties' mTLS gateways (tests/deployment.py).

Played as an adversary would: the label-flipper that votes dishonestly is rejected and every
honest hospital accepted, in every round, decided on scores only each validator saw; the driver
fetched nothing from the session graphs (the holders hand out the weighted sums) and every node
checked each published global model against them; a hospital's certificate fetches its own scores only, the
driver's none, a stranger's nothing; the players' TensorFlow ports listen on loopback only; a
share tampered with on a player is refused at aggregation, the round aborts with the reason and
its retry finalises; a player killed while its round is verified aborts that round cleanly and,
back again, the retry finalises; `ledger audit --consortium` passes in every honest home.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.federation.channel import Aborted, Phase, RoundTiming
from tests.deployment import PLAYERS, ROOT, LoopbackFederation, observer

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

HONEST = {"hospital-1", "hospital-2", "hospital-3"}


def _wait(predicate, timeout: float, federation: LoopbackFederation, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    logs = "\n".join(f"--- {name}\n{federation.tail(name)}" for name in federation.sites)
    raise AssertionError(f"{what} not seen in {timeout:.0f} s\n{logs}")


def _final(chain, number: int):  # type: ignore[no-untyped-def]
    view = chain.round(number)
    return view if view is not None and view.phase is Phase.FINAL else None


def _aborts(chain, number: int) -> list[Aborted]:  # type: ignore[no-untyped-def]
    events, _ = chain.events(0)
    return [e for e in events if isinstance(e, Aborted) and e.round_number == number]


def _node_state(home: Path) -> dict:
    import json
    import sqlite3

    with sqlite3.connect(home / "medfedchain.db") as db:
        (document,) = db.execute("select document from role_states where role = 'node'").fetchone()
    return json.loads(document)


def _raw_port(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    values = dict(item.split(b"=", 1) for item in environ if b"=" in item)
    return int(values[b"MEDFEDCHAIN_RAW_PORT"])


def test_a_secure_federation_of_processes_keeps_every_input_with_its_owner(tmp_path: Path) -> None:
    from smpc.transport.loopback import listening_addresses

    federation = LoopbackFederation(tmp_path, hospitals=4, malicious=1, secure=True, epochs=2,
                                    timing=RoundTiming(40, 40, 80))
    federation.provision()
    try:
        for name in PLAYERS:
            # server1 plays a player that alters one share it holds, once, in round 2.
            federation.start(name, tamper="hospital-2:2" if name == "server1" else None)
        for name in PLAYERS:
            federation.wait_ready(name)
        federation.coordinator(rounds=3)
        federation.start("coordinator", extra=["--linger", "40"])
        for hid in federation.hospital_ids:
            federation.start(hid, extra=["--until-round", "3"])
        chain = observer(federation)

        # The players' TensorFlow servers: on loopback only (the shim), whatever TF asks for.
        for name in PLAYERS:
            pid = federation.sites[name].proc.pid  # type: ignore[union-attr]
            addresses = listening_addresses(_raw_port(pid))
            assert addresses and all(a.startswith("127.") for a in addresses), (name, addresses)

        first = _wait(lambda: _final(chain, 1), 300, federation, "round 1 final")
        assert set(first.accepted) == HONEST and set(first.contributors) == HONEST

        # Round 2: a share that server1 holds is changed after its owner committed to it.
        _wait(lambda: _aborts(chain, 2), 300, federation, "round 2 aborted for the tampered share")
        reason = _aborts(chain, 2)[0].reason
        assert "server1" in reason and "hospital-2" in reason and "commitment" in reason, reason
        second = _wait(lambda: _final(chain, 2), 300, federation, "round 2 final after its retry")
        assert set(second.accepted) == HONEST

        # Round 3: server0 dies while the round is being verified, and comes back.
        _wait(lambda: (v := chain.round(3)) is not None and v.phase is Phase.VOTE, 300, federation,
              "round 3 voting")
        federation.sites["server0"].proc.kill()  # type: ignore[union-attr]
        federation.wait("server0", 30)
        federation.start("server0")  # back at once, with nothing of the round it held
        federation.wait_ready("server0")
        _wait(lambda: _aborts(chain, 3), 300, federation, "round 3 aborted for its lost player")
        third = _wait(lambda: _final(chain, 3), 400, federation, "round 3 final after its retry")
        assert set(third.accepted) == HONEST and set(third.contributors) == HONEST

        for hid in federation.hospital_ids:
            assert federation.wait(hid, 180) == 0, federation.tail(hid)
        assert federation.wait("coordinator", 180) == 0, federation.tail("coordinator")
        log = (federation.home("coordinator") / "medfedchain.log").read_text(errors="replace")
        fetched = [line for line in log.splitlines() if "the SMPC driver fetched" in line]
        assert fetched, log[-3000:]
        assert "fetched 0 tensors" in fetched[-1], fetched  # the holders hand out the weighted sums

        _scores_reach_their_validator_alone(federation)
        for hid in sorted(HONEST):  # each node checked every global model against the holders' sums
            checked = _node_state(federation.home(hid))["checked"]
            assert len(checked) >= 3 and set(checked.values()) == {"ok"}, (hid, checked)

        for name in ["coordinator", *sorted(HONEST)]:
            audit = subprocess.run(
                [sys.executable, "main.py", "ledger", "audit", "--home", str(federation.home(name)),
                 "--consortium", str(federation.consortium), "--rpc", federation.rpc_url],
                cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
            assert audit.returncode == 0, (name, audit.stdout, audit.stderr)
    finally:
        federation.stop_all()


def _scores_reach_their_validator_alone(federation: LoopbackFederation) -> None:
    """After the run: hospital-1's certificate gets hospital-1's scores (one row per candidate);
    the driver's certificate is refused; a certificate nobody pinned does not even connect."""
    from core.federation.consortium import read_consortium
    from core.services.wiring import smpc_directory
    from smpc.errors import SmpcError
    from smpc.remote import RemotePlayer
    from smpc.transport.gateway import client_channel
    from smpc.transport.identity import load_identity, make_identity

    consortium = read_consortium(federation.consortium)  # type: ignore[arg-type]
    directory = smpc_directory(consortium)
    chain = observer(federation)
    view = chain.round(3)
    assert view is not None
    mine = load_identity(federation.home("hospital-1") / "tls", "hospital-1")
    own = RemotePlayer("server1", client_channel(mine, directory, "server1"), timeout_s=10)
    shares = own.scores_for("hospital-1", 3, view.attempt)
    assert set(shares.candidates) == set(view.candidates) and shares.rows.shape == (len(view.candidates), 4)
    driver = RemotePlayer("server1", client_channel(load_identity(federation.home("coordinator") / "tls", "driver"),
                                                    directory, "server1"), timeout_s=10)
    with pytest.raises(SmpcError, match="Only a hospital"):
        driver.scores_for("hospital-1", 3, view.attempt)
    stranger = make_identity("hospital-1")  # same name, a certificate nobody pinned
    import grpc

    from smpc.transport.identity import dns_name

    address = directory.by_name("server1").address
    credentials = grpc.ssl_channel_credentials(root_certificates=directory.by_name("server1").cert_pem,
                                               private_key=stranger.key_pem, certificate_chain=stranger.cert_pem)
    channel = grpc.secure_channel(address, credentials,  # type: ignore[arg-type]
                                  options=[("grpc.ssl_target_name_override", dns_name("server1"))])
    with pytest.raises(SmpcError):
        RemotePlayer("server1", channel, timeout_s=10).scores_for("hospital-1", 3, view.attempt)
