"""Builds realistic rounds (seeded weights, scores, votes) for the ledger tests and the benchmark."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.federation.policy import VerificationPolicy
from core.federation.types import (
    Commitment,
    Decision,
    HospitalInfo,
    RoundOutcome,
    Scores,
    Vote,
    majority_accepts,
)
from core.models.weights import Weights, add, scale, weights_hash

POLICY = VerificationPolicy()


def hospitals(n: int) -> list[HospitalInfo]:
    return [HospitalInfo(f"hospital-{i}", f"Hospital {i}") for i in range(n)]


def initial_weights(seed: int = 0) -> Weights:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]


@dataclass
class PlannedRound:
    number: int
    start: Weights
    start_hash: str
    commitments: list[Commitment]
    votes: list[Vote]
    decisions: list[Decision]
    outcome: RoundOutcome


def plan_round(
    number: int,
    start: Weights,
    members: Sequence[HospitalInfo],
    accept: Callable[[str, str], bool],
    *,
    registered: int | None = None,
    seed: int = 1,
) -> PlannedRound:
    """Commitments, votes (validator v accepts candidate c iff accept(v, c)), decisions and outcome."""
    rng = np.random.default_rng(seed + number)
    registered = len(members) if registered is None else registered
    updates = {
        h.hospital_id: [rng.normal(scale=0.1, size=w.shape).astype(np.float32) for w in start]
        for h in members
    }
    commitments = [
        Commitment(
            h.hospital_id,
            number,
            weights_hash(add(start, updates[h.hospital_id])),
            tuple(f"{rng.integers(2**63):016x}" * 4 for _ in range(3)),
        )
        for h in members
    ]
    votes = [
        Vote(
            number,
            v.hospital_id,
            c.hospital_id,
            accept(v.hospital_id, c.hospital_id),
            Scores(
                correct=int(rng.integers(50, 100)),
                total=100,
                cosine=float(rng.uniform(-1, 1)),
                norm=float(rng.uniform(0, 3)),
                reference_accuracy=0.8,
                reference_norm=1.0,
            ),
        )
        for v in members
        for c in members
    ]
    decisions = []
    for c in commitments:
        yes = sum(1 for v in votes if v.candidate_id == c.hospital_id and v.accept)
        no = sum(1 for v in votes if v.candidate_id == c.hospital_id and not v.accept)
        decisions.append(Decision(number, c.hospital_id, c.model_hash, yes, no, registered))
    accepted = [d.candidate_id for d in decisions if majority_accepts(d.accepts, registered)]
    new = start
    if accepted:
        new = add(start, scale(sum_updates([updates[a] for a in accepted]), 1.0 / len(accepted)))
    outcome = RoundOutcome(
        round_number=number,
        previous_hash=weights_hash(start),
        global_hash=weights_hash(new),
        global_weights=new,
        contributors=accepted,
        decisions=decisions,
        votes=votes,
        commitments=commitments,
    )
    return PlannedRound(number, start, weights_hash(start), commitments, votes, decisions, outcome)


def sum_updates(updates: Sequence[Weights]) -> Weights:
    total = [np.zeros_like(w) for w in updates[0]]
    for u in updates:
        total = add(total, u)
    return total


def record(recorder: object, planned: PlannedRound) -> None:
    """Records a planned round through a Recorder, step by step as the engine does."""
    recorder.open_round(planned.number, planned.start_hash, planned.start, POLICY)  # type: ignore[attr-defined]
    for c in planned.commitments:
        recorder.record_commitment(c)  # type: ignore[attr-defined]
    recorder.record_votes(planned.votes)  # type: ignore[attr-defined]
    recorder.record_decisions(planned.decisions)  # type: ignore[attr-defined]
    recorder.finalize_round(planned.outcome)  # type: ignore[attr-defined]


def honest_except(*bad: str) -> Callable[[str, str], bool]:
    """Every validator accepts every candidate except those named."""
    return lambda _v, c: c not in bad
