"""Records that cross the federation's layers: updates, scores, votes, decisions, outcomes.

They carry no behaviour beyond derived values, so the SMPC layer, the ledger and the GUI can
use them without pulling in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from core.data.dataset import Dataset
from core.models.weights import Weights


@dataclass(frozen=True)
class HospitalInfo:
    hospital_id: str
    name: str
    malicious: bool = False  # ground truth of a simulation; never used by the protocol itself
    account: str | None = None  # ledger address, once registered


@dataclass(frozen=True)
class Candidate:
    """A hospital's proposed update for a round: `delta` = its trained weights - global weights."""

    hospital_id: str
    round_number: int
    delta: Weights
    num_samples: int
    model_hash: str  # weights_hash(global + delta): the identity committed on the ledger


@dataclass(frozen=True)
class Commitment:
    """What a hospital binds itself to before verification starts."""

    hospital_id: str
    round_number: int
    model_hash: str
    share_commitments: tuple[str, ...] = ()  # one per SMPC player; empty in plaintext mode


@dataclass(frozen=True)
class ValidatorInput:
    """What one validating hospital brings: its validation split and its own update."""

    hospital_id: str
    validation: Dataset
    own_delta: Weights


@dataclass(frozen=True)
class Scores:
    """What a validator learns about one candidate, and nothing more.

    `reference_*` are the validator's own values (its own update on its own split) and
    `global_margin` the current global model's margin there, from which (with the scores of the
    round's other candidates) the policy builds its yardstick. `global_margin` is None in
    ballots cast before it was scored; it is left out of `as_dict` then, so their hashes hold.
    `margin` is the mean, over the split, of the true class's logit minus the mean of the other
    classes' logits: linear in the logits, so cheap in SMPC, and it falls for a label-flipped
    model long before its accuracy does.
    """

    correct: int
    total: int
    cosine: float
    norm: float
    reference_accuracy: float
    reference_norm: float
    margin: float = 0.0
    reference_margin: float = 0.0
    global_margin: float | None = None

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, float]:
        extra = {} if self.global_margin is None else {"global_margin": self.global_margin}
        return extra | {
            "accuracy": self.accuracy,
            "correct": float(self.correct),
            "total": float(self.total),
            "cosine": self.cosine,
            "norm": self.norm,
            "reference_accuracy": self.reference_accuracy,
            "reference_norm": self.reference_norm,
            "margin": self.margin,
            "reference_margin": self.reference_margin,
        }


def mean_margin(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean over samples of (true-class logit - mean of the other classes' logits)."""
    k = logits.shape[1]
    true = logits[np.arange(labels.shape[0]), labels]
    others = (logits.sum(axis=1) - true) / (k - 1)
    return float(np.mean(true - others)) if labels.size else 0.0


# (validator id, candidate id) -> scores
ScoreMatrix = dict[tuple[str, str], Scores]


@dataclass(frozen=True)
class Vote:
    round_number: int
    validator_id: str
    candidate_id: str
    accept: bool
    scores: Scores | None = None  # known to the validator (and, in a simulation, to the report)


class Status(str, Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True)
class Decision:
    round_number: int
    candidate_id: str
    model_hash: str
    accepts: int
    rejects: int
    registered: int
    # True only in the no-verification baseline, where every candidate is taken unvoted.
    unverified: bool = False

    @property
    def status(self) -> Status:
        return Status.ACCEPTED if self.accepted else Status.REJECTED

    @property
    def accepted(self) -> bool:
        return self.unverified or majority_accepts(self.accepts, self.registered)


def majority_accepts(accepts: int, registered: int) -> bool:
    """The federation's rule: strictly more than half of ALL registered hospitals accept."""
    return registered > 0 and 2 * accepts > registered


@dataclass(frozen=True)
class Failure:
    """A hospital that dropped out of a round, and at which stage."""

    round_number: int
    hospital_id: str
    stage: str
    message: str


@dataclass
class RoundOutcome:
    round_number: int
    previous_hash: str
    global_hash: str
    global_weights: Weights
    contributors: list[str]
    decisions: list[Decision]
    votes: list[Vote]
    commitments: list[Commitment]
    failures: list[Failure] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)

    def decision_for(self, hospital_id: str) -> Decision | None:
        return next((d for d in self.decisions if d.candidate_id == hospital_id), None)


def sample_weights(candidates: list[Candidate]) -> np.ndarray:
    """FedAvg weights proportional to each candidate's training-set size."""
    counts = np.array([max(c.num_samples, 0) for c in candidates], dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return np.full(len(candidates), 1.0 / max(len(candidates), 1))
    return counts / total
