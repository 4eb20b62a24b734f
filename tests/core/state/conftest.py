"""Fixtures for the local-state tests: a fresh database file and a small, fully scored round."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.federation.policy import VerificationPolicy
from core.federation.types import (
    Commitment,
    Decision,
    HospitalInfo,
    RoundOutcome,
    Scores,
    Vote,
)
from core.models.weights import Weights, add, weights_hash
from core.state.db import Database, open_database

HOSPITALS = (
    HospitalInfo("h1", "St. Anna"),
    HospitalInfo("h2", "Charité"),
    HospitalInfo("h3", "Karolinska"),
    HospitalInfo("h4", "Mallory General", malicious=True),
)
POLICY = VerificationPolicy(max_accuracy_drop=0.1, min_cosine=0.0, max_norm_ratio=3.0)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "state.db")
    yield database
    database.close()


def make_weights(seed: int) -> Weights:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(2,)).astype(np.float32)]


def honest_scores(accuracy_correct: int = 45) -> Scores:
    return Scores(
        correct=accuracy_correct, total=50, cosine=0.8, norm=1.0, reference_accuracy=0.9, reference_norm=1.1
    )


def poisoned_scores() -> Scores:
    return Scores(correct=10, total=50, cosine=-0.7, norm=9.0, reference_accuracy=0.9, reference_norm=1.1)


def make_round(round_number: int, previous: Weights, seed: int = 0) -> tuple[RoundOutcome, list[Commitment]]:
    """Four hospitals commit; h4 (malicious) is rejected by the three honest ones; h1-h3 accepted."""
    deltas = {h.hospital_id: make_weights(seed * 10 + i) for i, h in enumerate(HOSPITALS)}
    commitments = [
        Commitment(
            hid, round_number, weights_hash(add(previous, delta)), (f"{hid}-share-a", f"{hid}-share-b")
        )
        for hid, delta in deltas.items()
    ]
    votes: list[Vote] = []
    for validator in HOSPITALS:
        for candidate in HOSPITALS:
            bad = candidate.malicious
            # The malicious validator accepts everything, as a colluding attacker would.
            accept = validator.malicious or not bad
            scores = poisoned_scores() if bad else honest_scores()
            votes.append(Vote(round_number, validator.hospital_id, candidate.hospital_id, accept, scores))
    decisions = []
    for commitment in commitments:
        accepts = sum(1 for v in votes if v.candidate_id == commitment.hospital_id and v.accept)
        decisions.append(
            Decision(round_number, commitment.hospital_id, commitment.model_hash, accepts, 4 - accepts, 4)
        )
    new_global = add(previous, deltas["h1"])
    outcome = RoundOutcome(
        round_number=round_number,
        previous_hash=weights_hash(previous),
        global_hash=weights_hash(new_global),
        global_weights=new_global,
        contributors=[d.candidate_id for d in decisions if d.accepted],
        decisions=decisions,
        votes=votes,
        commitments=commitments,
        metrics={"accuracy": 0.70 + 0.05 * round_number, "loss": 1.0 / round_number},
        durations={"verification": 1.5},
    )
    return outcome, commitments
