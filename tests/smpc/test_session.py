"""Session plumbing: validator groups beyond capacity, players files, architecture checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.federation.plaintext_verifier import PlaintextVerifier
from core.federation.types import Candidate, ValidatorInput
from core.models.architecture import tabular_cnn_spec
from core.models.training import initial_weights
from core.models.weights import add, weights_hash
from core.progress import CancelToken, Progress, ignore_progress
from smpc.errors import ProtocolUnsupported, SmpcError
from smpc.factory import build_in_process
from smpc.players import PlayerConfig
from tests.smpc.scenarios import MemoryFacts, tabular_data

SPEC = tabular_cnn_spec(12, 2)


def test_more_validators_than_capacity_are_scored_in_groups() -> None:
    glob = initial_weights(SPEC, 3)
    rng = np.random.default_rng(3)
    candidates, validators = [], []
    for i in range(5):
        delta = [rng.normal(scale=0.1, size=w.shape).astype(np.float32) for w in glob]
        candidates.append(Candidate(f"h{i}", 1, delta, 5, weights_hash(add(glob, delta))))
        validators.append(ValidatorInput(f"h{i}", tabular_data(7 + 5 * i, seed=20 + i), delta))
    facts = MemoryFacts()
    fed = build_in_process(SPEC, facts, batch_size=8, validator_capacity=2)
    try:
        owners = {c.hospital_id: fed.owner(c.hospital_id) for c in candidates}
        for c, v in zip(candidates, validators, strict=True):
            owners[c.hospital_id].begin_round(1, glob)
            facts.record(owners[c.hospital_id].commit(c, v))
        seen: list[Progress] = []
        fed.driver.score_round(1, 0, glob, [c.hospital_id for c in candidates], seen.append, CancelToken())
        assert len(fed.driver._layouts[1].groups) == 3  # 5 validators, 2 per group
        secure = {}
        for v in validators:
            secure.update(owners[v.hospital_id].score(candidates, [v], ignore_progress, CancelToken()))
    finally:
        fed.close()
    plain_verifier = PlaintextVerifier(SPEC)
    plain_verifier.begin_round(1, glob)
    plain = plain_verifier.score(candidates, validators, ignore_progress, CancelToken())
    assert secure.keys() == plain.keys()
    assert sum(abs(secure[k].correct - plain[k].correct) for k in plain) <= 1
    assert all(secure[k].cosine == pytest.approx(plain[k].cosine, abs=2e-4) for k in plain)
    assert seen and seen[-1].fraction == 1.0


def test_wrong_architecture_is_refused() -> None:
    fed = build_in_process(SPEC, MemoryFacts())
    try:
        owner = fed.owner("a")
        other = initial_weights(tabular_cnn_spec(14, 2), 0)
        owner.begin_round(1, other)
        with pytest.raises(SmpcError) as info:  # the players refuse a share of another model
            owner.commit(Candidate("a", 1, other, 5, weights_hash(other)))
        assert "does not fit the model" in info.value.user_message
        with pytest.raises(SmpcError):
            fed.driver.session.open([tuple(w.shape) for w in other])
    finally:
        fed.close()


def test_inexact_protocols_are_refused_with_a_reason() -> None:
    with pytest.raises(ProtocolUnsupported) as info:
        build_in_process(SPEC, MemoryFacts(), protocol="pond")
    assert "polynomial" in info.value.user_message
    with pytest.raises(SmpcError):
        build_in_process(SPEC, MemoryFacts(), protocol="spdz")


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
