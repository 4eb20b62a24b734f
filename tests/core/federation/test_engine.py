"""The engine's round: the majority rule over all registered hospitals, dishonest voters,
failures recorded rather than raised, and aborts that leave the global model untouched."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from core.data.dataset import DataKind, Dataset
from core.errors import Cancelled, ModelError, RoundAborted
from core.federation.aggregators import FedAvg
from core.federation.engine import FederationEngine
from core.federation.hospital import candidate_from
from core.federation.interfaces import HospitalLink, Verifier
from core.federation.memory_recorder import InMemoryRecorder
from core.federation.policy import VerificationPolicy
from core.federation.types import (
    Candidate,
    Commitment,
    HospitalInfo,
    ScoreMatrix,
    Scores,
    ValidatorInput,
    majority_accepts,
)
from core.models.weights import Weights, weights_hash
from core.progress import CancelToken, Progress, ProgressSink

GLOBAL: Weights = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]
GOOD = Scores(correct=9, total=10, cosine=0.9, norm=1.0, reference_accuracy=0.9, reference_norm=1.0,
              margin=2.0, reference_margin=2.0)
BAD = Scores(correct=1, total=10, cosine=-0.9, norm=10.0, reference_accuracy=0.9, reference_norm=1.0,
             margin=-2.0, reference_margin=2.0)
VALIDATION = Dataset("v", DataKind.TABLE, np.zeros((10, 3), np.float32), np.array([0, 1] * 5), ("a", "b"))


class ScriptedHospital(HospitalLink):
    """A hospital whose update, vote and failures are given by the test."""

    def __init__(self, hospital_id: str, *, value: float = 1.0, attacker: bool = False,
                 colluders: Sequence[str] = (), fail_training: bool = False, nan: bool = False) -> None:
        self._info = HospitalInfo(hospital_id, hospital_id, attacker)
        self.value, self.attacker, self.colluders = value, attacker, set(colluders)
        self.fail_training, self.nan = fail_training, nan

    @property
    def info(self) -> HospitalInfo:
        return self._info

    def train(self, round_number: int, global_weights: Weights, progress: ProgressSink,
              cancel: CancelToken) -> Candidate:
        if self.fail_training:
            raise ConnectionError("hospital went offline")
        delta = [np.full_like(w, np.nan if self.nan else self.value) for w in global_weights]
        if self.nan:  # bypass candidate_from's own check to reach the engine's
            return Candidate(self.info.hospital_id, round_number, delta, 10, "0" * 64)
        return candidate_from(self.info.hospital_id, round_number, global_weights, delta, 10)

    def validator_input(self, own: Candidate) -> ValidatorInput:
        return ValidatorInput(self.info.hospital_id, VALIDATION, own.delta)

    def vote(self, round_number: int, candidate: Candidate, scores: Scores, policy: VerificationPolicy) -> bool:
        if self.attacker:
            return candidate.hospital_id in self.colluders
        return policy.accepts(scores)


class ScriptedVerifier(Verifier):
    """Scores a candidate GOOD when its update is small, BAD otherwise: a stand-in for the
    plaintext verifier that keeps these tests about the engine alone."""

    name = "scripted"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.rounds_ended = 0

    def commit(self, candidate: Candidate) -> Commitment:
        return Commitment(candidate.hospital_id, candidate.round_number, candidate.model_hash)

    def score(self, candidates: Sequence[Candidate], validators: Sequence[ValidatorInput],
              progress: ProgressSink, cancel: CancelToken) -> ScoreMatrix:
        if self.fail:
            raise ConnectionError("SMPC player unreachable")
        return {(v.hospital_id, c.hospital_id): GOOD if abs(float(c.delta[0].flat[0])) <= 1.0 else BAD
                for v in validators for c in candidates}

    def end_round(self) -> None:
        self.rounds_ended += 1


def federation(hospitals: list[HospitalLink], verifier: Verifier | None = None) -> tuple[FederationEngine, InMemoryRecorder]:
    recorder = InMemoryRecorder()
    engine = FederationEngine(hospitals, verifier or ScriptedVerifier(), FedAvg(), recorder, VerificationPolicy())
    engine.register()
    return engine, recorder


@pytest.mark.parametrize(
    ("accepts", "registered", "expected"),
    [(3, 5, True), (2, 5, False), (2, 4, False), (3, 4, True), (1, 1, True), (0, 0, False), (5, 10, False)],
)
def test_majority_is_strictly_more_than_half_of_all_registered(accepts: int, registered: int, expected: bool) -> None:
    assert majority_accepts(accepts, registered) is expected


def test_two_dishonest_attackers_of_five_are_rejected_and_honest_accepted() -> None:
    attackers = ["h4", "h5"]
    hospitals: list[HospitalLink] = [ScriptedHospital(f"h{i}") for i in range(1, 4)]
    hospitals += [ScriptedHospital(h, value=50.0, attacker=True, colluders=attackers) for h in attackers]
    engine, recorder = federation(hospitals)

    outcome = engine.run_round(1, GLOBAL)

    status = {d.candidate_id: (d.accepted, d.accepts) for d in outcome.decisions}
    assert status == {"h1": (True, 3), "h2": (True, 3), "h3": (True, 3), "h4": (False, 2), "h5": (False, 2)}
    assert outcome.contributors == ["h1", "h2", "h3"]
    np.testing.assert_allclose(outcome.global_weights[0], np.ones((2, 2)))  # only honest deltas of 1.0
    assert recorder.rounds[1].status == "finalized"
    assert len(recorder.rounds[1].votes) == 25


def test_three_colluding_attackers_of_five_win_which_is_why_the_bound_is_a_minority() -> None:
    attackers = ["h3", "h4", "h5"]
    hospitals: list[HospitalLink] = [ScriptedHospital("h1"), ScriptedHospital("h2")]
    hospitals += [ScriptedHospital(h, value=50.0, attacker=True, colluders=attackers) for h in attackers]
    engine, _ = federation(hospitals)

    outcome = engine.run_round(1, GLOBAL)

    assert sorted(outcome.contributors) == attackers


def test_a_hospital_failing_in_training_is_a_recorded_failure_and_still_counts_as_registered() -> None:
    hospitals: list[HospitalLink] = [ScriptedHospital("h1"), ScriptedHospital("h2"),
                                     ScriptedHospital("h3", fail_training=True)]
    engine, recorder = federation(hospitals)

    outcome = engine.run_round(1, GLOBAL)

    assert [f.hospital_id for f in outcome.failures] == ["h3"]
    assert "offline" in outcome.failures[0].message
    assert recorder.rounds[1].failures == outcome.failures
    # h1 and h2 each get 2 accepts of 3 registered: still a strict majority.
    assert outcome.contributors == ["h1", "h2"]
    assert all(d.registered == 3 for d in outcome.decisions)


def test_nan_update_is_refused_as_that_hospitals_failure() -> None:
    hospitals: list[HospitalLink] = [ScriptedHospital("h1"), ScriptedHospital("h2"), ScriptedHospital("h3", nan=True)]
    engine, _ = federation(hospitals)

    outcome = engine.run_round(1, GLOBAL)

    assert [f.hospital_id for f in outcome.failures] == ["h3"]
    assert "NaN" in outcome.failures[0].message
    assert np.all(np.isfinite(outcome.global_weights[0]))


def test_verifier_failure_aborts_the_round_and_a_retry_succeeds() -> None:
    verifier = ScriptedVerifier(fail=True)
    engine, recorder = federation([ScriptedHospital("h1"), ScriptedHospital("h2")], verifier)

    with pytest.raises(RoundAborted, match="Round 1 was aborted") as info:
        engine.run_round(1, GLOBAL)

    assert info.value.round_number == 1
    assert recorder.rounds[1].status == "aborted"
    assert "SMPC player unreachable" in (recorder.rounds[1].abort_reason or "")
    assert verifier.rounds_ended == 1  # shares released even on failure

    verifier.fail = False
    outcome = engine.run_round(1, GLOBAL)
    assert recorder.rounds[1].status == "finalized"
    assert outcome.previous_hash == weights_hash(GLOBAL)


def test_cancel_before_verification_aborts_without_changing_anything() -> None:
    cancel = CancelToken()
    seen: list[Progress] = []

    def progress(event: Progress) -> None:
        seen.append(event)
        if event.stage.value == "commitment":
            cancel.cancel()

    engine, recorder = federation([ScriptedHospital("h1"), ScriptedHospital("h2")])
    with pytest.raises(Cancelled):
        engine.run_round(1, GLOBAL, progress, cancel)
    assert recorder.rounds[1].status == "aborted"
    assert not any(e.stage.value == "aggregation" for e in seen)


def test_duplicate_hospital_ids_are_refused() -> None:
    with pytest.raises(Exception, match="same id"):
        FederationEngine([ScriptedHospital("h1"), ScriptedHospital("h1")], ScriptedVerifier(), FedAvg(),
                         InMemoryRecorder(), VerificationPolicy())


def test_candidate_with_wrong_architecture_is_a_failure_not_a_crash() -> None:
    class WrongShape(ScriptedHospital):
        def train(self, round_number: int, global_weights: Weights, progress: ProgressSink,
                  cancel: CancelToken) -> Candidate:
            return candidate_from(self.info.hospital_id, round_number, [np.zeros(3, np.float32)],
                                  [np.zeros(3, np.float32)], 10)

    engine, _ = federation([ScriptedHospital("h1"), ScriptedHospital("h2"), WrongShape("h3")])
    outcome = engine.run_round(1, GLOBAL)
    assert [f.hospital_id for f in outcome.failures] == ["h3"]
    assert "architecture" in outcome.failures[0].message


def test_model_error_type_carries_user_message() -> None:
    err = ModelError("The model does not match the federation's architecture.", detail="x")
    assert err.user_message.startswith("The model")
