"""Session plumbing: validator groups beyond capacity, players files, architecture checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelError
from core.federation.plaintext_verifier import PlaintextVerifier
from core.federation.types import Candidate, ValidatorInput
from core.models.architecture import tabular_cnn_spec
from core.models.training import initial_weights
from core.models.weights import add, weights_hash
from core.progress import CancelToken, Progress, ignore_progress
from smpc.errors import ProtocolUnsupported, SmpcError
from smpc.factory import build_secure_components
from smpc.player import main as player_main
from smpc.players import PlayerConfig
from tests.smpc.scenarios import tabular_data

SPEC = tabular_cnn_spec(12, 2)


def test_more_validators_than_capacity_are_scored_in_groups() -> None:
    glob = initial_weights(SPEC, 3)
    rng = np.random.default_rng(3)
    candidates = []
    for i in range(2):
        delta = [rng.normal(scale=0.1, size=w.shape).astype(np.float32) for w in glob]
        candidates.append(Candidate(f"h{i}", 1, delta, 5, weights_hash(add(glob, delta))))
    validators = [
        ValidatorInput(f"v{i}", tabular_data(7 + 5 * i, seed=20 + i), candidates[i % 2].delta)
        for i in range(5)
    ]
    verifier, _ = build_secure_components(SPEC, batch_size=8, validator_capacity=2)
    try:
        verifier.begin_round(1, glob)
        for c in candidates:
            verifier.commit(c)
        seen: list[Progress] = []
        secure = verifier.score(candidates, validators, seen.append, CancelToken())
    finally:
        verifier.close()
    plain_verifier = PlaintextVerifier(SPEC)
    plain_verifier.begin_round(1, glob)
    plain = plain_verifier.score(candidates, validators, ignore_progress, CancelToken())
    assert secure.keys() == plain.keys()
    assert sum(abs(secure[k].correct - plain[k].correct) for k in plain) <= 1
    assert all(secure[k].cosine == pytest.approx(plain[k].cosine, abs=2e-4) for k in plain)
    assert seen and seen[-1].fraction == 1.0


def test_wrong_architecture_is_refused() -> None:
    verifier, _ = build_secure_components(SPEC)
    with pytest.raises(ModelError):
        verifier.begin_round(1, initial_weights(tabular_cnn_spec(14, 2), 0))


def test_inexact_protocols_are_refused_with_a_reason() -> None:
    with pytest.raises(ProtocolUnsupported) as info:
        build_secure_components(SPEC, protocol="pond")
    assert "polynomial" in info.value.user_message
    with pytest.raises(SmpcError):
        build_secure_components(SPEC, protocol="spdz")


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "players.json"
    path.write_text(json.dumps(raw))
    return path


def test_players_file_round_trips_and_orders_the_cluster(tmp_path: Path) -> None:
    raw = {"job": "fed", "players": {"a": "h1:1", "b": "h2:2", "c": "h3:3"}, "driver": "h0:9"}
    config = PlayerConfig.load(_write(tmp_path, raw))
    assert config.names == ["a", "b", "c"]
    assert list(config.hostmap().values()) == ["h1:1", "h2:2", "h3:3", "h0:9"]
    assert config.device("c") == "/job:fed/replica:0/task:2/device:CPU:0"
    config.save(tmp_path / "copy.json")
    assert PlayerConfig.load(tmp_path / "copy.json") == config


@pytest.mark.parametrize(
    "raw",
    [
        {"players": {"a": "h:1", "b": "h:2"}, "driver": "h:3"},
        {"players": {"a": "h:1", "b": "h:2", "c": "nope"}, "driver": "h:3"},
        {"players": {"a": "h:1", "b": "h:2", "c": "h:4"}, "driver": "h:3", "extra": 1},
        {"players": {"a": "h:1", "b": "h:2", "driver": "h:4"}, "driver": "h:3"},
    ],
)
def test_malformed_players_files_are_refused(tmp_path: Path, raw: dict) -> None:
    with pytest.raises(SmpcError):
        PlayerConfig.load(_write(tmp_path, raw))


def test_player_command_refuses_an_unknown_name(tmp_path: Path, capsys) -> None:
    path = _write(
        tmp_path,
        {"players": {"a": "127.0.0.1:1", "b": "127.0.0.1:2", "c": "127.0.0.1:3"}, "driver": "127.0.0.1:4"},
    )
    assert player_main(["--name", "zed", "--config", str(path)]) == SmpcError.exit_code
    assert "not a player" in capsys.readouterr().err
