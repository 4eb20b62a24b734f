"""Sessions through three player processes on loopback: same results as in-process, and a
player killed mid-session fails the session cleanly, in bounded time, until it is back."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.federation.aggregators import FedAvg
from core.federation.plaintext_verifier import PlaintextVerifier
from core.federation.types import Candidate, ValidatorInput
from core.models.architecture import image_cnn_spec
from core.models.training import initial_weights
from core.models.weights import add, weights_hash
from core.progress import CancelToken, ignore_progress
from smpc.errors import PlayerUnavailable
from smpc.factory import build_secure_components
from smpc.player import READY
from tests.smpc.scenarios import image_data

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SPEC = image_cnn_spec((16, 16, 1), 3)
TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Players:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.Popen(
            [sys.executable, "-m", "smpc.player", "--name", name, "--config", str(self.path)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.procs[name] = proc

    def wait_ready(self, name: str, timeout: float = 120.0) -> None:
        proc = self.procs[name]
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        assert result and result[0].startswith(READY), f"player {name} did not start"

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def players(tmp_path_factory):
    path = tmp_path_factory.mktemp("smpc") / "players.json"
    config = {
        "job": "medfedchain",
        "players": {name: f"127.0.0.1:{_free_port()}" for name in ("alpha", "beta", "gamma")},
        "driver": f"127.0.0.1:{_free_port()}",
    }
    path.write_text(json.dumps(config))
    group = Players(path)
    for name in config["players"]:
        group.start(name)
    for name in config["players"]:
        group.wait_ready(name)
    yield group
    group.stop_all()


def _round(n_candidates: int, rows: int):
    glob = initial_weights(SPEC, 0)
    rng = np.random.default_rng(1)
    candidates = []
    for i in range(n_candidates):
        delta = [rng.normal(scale=0.05, size=w.shape).astype(np.float32) for w in glob]
        candidates.append(Candidate(f"h{i}", 1, delta, 10 + i, weights_hash(add(glob, delta))))
    validators = [
        ValidatorInput(f"h{i}", image_data(rows, seed=10 + i), candidates[i].delta) for i in range(3)
    ]
    return glob, candidates, validators


def test_player_processes_verify_and_aggregate_like_plaintext(players) -> None:
    glob, candidates, validators = _round(3, 24)
    verifier, aggregator = build_secure_components(
        SPEC, players=players.path, batch_size=32, timeout_s=TIMEOUT_S
    )
    try:
        verifier.begin_round(1, glob)
        commitments = [verifier.commit(c) for c in candidates]
        secure = verifier.score(candidates, validators, ignore_progress, CancelToken())
        plain_verifier = PlaintextVerifier(SPEC)
        plain_verifier.begin_round(1, glob)
        plain = plain_verifier.score(candidates, validators, ignore_progress, CancelToken())
        assert sum(abs(secure[k].correct - plain[k].correct) for k in plain) <= 1
        assert all(secure[k].cosine == pytest.approx(plain[k].cosine, abs=2e-4) for k in plain)
        result = aggregator.aggregate(glob, candidates, commitments)
        expected = FedAvg().aggregate(glob, candidates, commitments)
        assert max(float(np.max(np.abs(a - b))) for a, b in zip(result, expected, strict=True)) <= 1e-4
    finally:
        verifier.close()


def test_killed_player_fails_the_session_cleanly_and_a_retry_succeeds(players) -> None:
    glob, candidates, validators = _round(6, 64)
    verifier, aggregator = build_secure_components(
        SPEC, players=players.path, batch_size=32, timeout_s=TIMEOUT_S
    )
    try:
        verifier.begin_round(1, glob)
        for c in candidates:
            verifier.commit(c)
        killer = threading.Timer(1.0, players.kill, args=("beta",))
        started = time.monotonic()
        killer.start()
        with pytest.raises(PlayerUnavailable) as info:
            verifier.score(candidates, validators, ignore_progress, CancelToken())
        elapsed = time.monotonic() - started
        killer.join()
        assert elapsed < TIMEOUT_S + 10.0
        assert "player" in info.value.user_message
        # While the player is down, every attempt fails fast and cleanly.
        started = time.monotonic()
        with pytest.raises(PlayerUnavailable):
            verifier.begin_round(2, glob)
        assert time.monotonic() - started < TIMEOUT_S

        players.start("beta")
        players.wait_ready("beta")
        verifier.begin_round(2, glob)
        retried = [dataclasses.replace(c, round_number=2) for c in candidates[:2]]
        commitments = [verifier.commit(c) for c in retried]
        scores = verifier.score(retried, validators, ignore_progress, CancelToken())
        assert len(scores) == 2 * len(validators)
        aggregator.aggregate(glob, retried, commitments)
    finally:
        verifier.close()
