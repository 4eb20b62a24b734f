"""The plaintext verifier: scores candidates in the clear, for simulations and as the reference
that the SMPC verifier must agree with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.federation.interfaces import Verifier
from core.federation.reference import reference_scores
from core.federation.types import Candidate, Commitment, ScoreMatrix, Scores, ValidatorInput, mean_margin
from core.models.architecture import ModelSpec
from core.models.evaluation import ModelEvaluator
from core.models.weights import Weights, add, as_weights, norm
from core.models.weights import cosine as cosine_similarity
from core.progress import CancelToken, Progress, ProgressSink, Stage


def plaintext_commitment(candidate: Candidate) -> Commitment:
    """The commitment of a verifier that holds the candidate in the clear: its model hash only.
    NaN or infinite weights are refused here, before anything is recorded."""
    as_weights(candidate.delta)
    return Commitment(candidate.hospital_id, candidate.round_number, candidate.model_hash)


class PlaintextVerifier(Verifier):
    """Runs each candidate (global + delta) on each validator's split with Keras.

    Scores, per (validator, candidate): correct predictions of the candidate on the validator's
    split and its mean logit margin there; cosine of the candidate's update to the validator's own; the candidate's update norm;
    and the validator's own accuracy and norm as the reference.
    """

    name = "plaintext"

    def __init__(self, spec: ModelSpec) -> None:
        self._evaluator = ModelEvaluator(spec)
        self._global: Weights | None = None

    def begin_round(self, round_number: int, global_weights: Weights, attempt: int = 0) -> None:
        self._global = as_weights(global_weights)

    def commit(self, candidate: Candidate, validator: ValidatorInput | None = None) -> Commitment:
        return plaintext_commitment(candidate)

    def score(
        self,
        candidates: Sequence[Candidate],
        validators: Sequence[ValidatorInput],
        progress: ProgressSink,
        cancel: CancelToken,
    ) -> ScoreMatrix:
        if self._global is None:
            raise RuntimeError("begin_round must be called before score")
        scores: ScoreMatrix = {}
        total = max(len(candidates) * len(validators), 1)
        done = 0
        for validator in validators:
            x, y = validator.validation.x, validator.validation.y
            reference = reference_scores(self._evaluator, self._global, validator)
            for candidate in candidates:
                cancel.raise_if_cancelled()
                logits = self._evaluator.logits(add(self._global, candidate.delta), x)
                scores[(validator.hospital_id, candidate.hospital_id)] = Scores(
                    correct=int(np.sum(np.argmax(logits, axis=1) == y)),
                    total=validator.validation.num_samples,
                    cosine=cosine_similarity(candidate.delta, validator.own_delta),
                    norm=norm(candidate.delta),
                    reference_accuracy=reference.accuracy,
                    reference_norm=reference.norm,
                    margin=mean_margin(logits, y),
                    reference_margin=reference.margin,
                    global_margin=reference.global_margin,
                )
                done += 1
                progress(
                    Progress(
                        Stage.VERIFICATION,
                        f"{validator.hospital_id} scored {candidate.hospital_id}",
                        fraction=done / total,
                        hospital_id=validator.hospital_id,
                    )
                )
        return scores

    def end_round(self) -> None:
        self._global = None


class NoVerifier(Verifier):
    """Skips verification: the engine takes every candidate unvoted.

    It exists to show what plain aggregation does under attack; never use it in a real federation.
    """

    name = "none"
    verifies = False

    def commit(self, candidate: Candidate, validator: ValidatorInput | None = None) -> Commitment:
        return plaintext_commitment(candidate)

    def score(
        self,
        candidates: Sequence[Candidate],
        validators: Sequence[ValidatorInput],
        progress: ProgressSink,
        cancel: CancelToken,
    ) -> ScoreMatrix:
        return {}
