"""The federation round: train, commit, verify, vote, decide, aggregate, record.

*When* things happen lives here; *how* a candidate is scored, how updates are combined and where
the round is written are the `Verifier`, `Aggregator` and `Recorder` it is given (Flower keeps
its strategy out of its server loop the same way). A hospital that fails is a recorded failure
of the round; a verifier, aggregator or recorder that fails aborts the round, which leaves the
global model as it was and can be retried under the same round number.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from core.errors import Cancelled, CoreError, FederationError, RoundAborted, describe_error
from core.federation.interfaces import Aggregator, HospitalLink, Recorder, Verifier
from core.federation.policy import VerificationPolicy
from core.federation.types import (
    Candidate,
    Commitment,
    Decision,
    Failure,
    RoundOutcome,
    ScoreMatrix,
    Vote,
)
from core.models.weights import Weights, as_weights, check_compatible, weights_hash
from core.progress import CancelToken, Progress, ProgressSink, Stage, ignore_progress

log = logging.getLogger(__name__)

Evaluate = Callable[[Weights], dict[str, float]]
StageTimer = Callable[[Stage], AbstractContextManager[None]]


class FederationEngine:
    def __init__(
        self,
        hospitals: Sequence[HospitalLink],
        verifier: Verifier,
        aggregator: Aggregator,
        recorder: Recorder,
        policy: VerificationPolicy,
        *,
        evaluate: Evaluate | None = None,
    ) -> None:
        ids = [h.info.hospital_id for h in hospitals]
        if len(set(ids)) != len(ids):
            raise FederationError("Two hospitals share the same id.", detail=", ".join(ids))
        if not hospitals:
            raise FederationError("A federation needs at least one hospital.")
        self.hospitals = list(hospitals)
        self.verifier = verifier
        self.aggregator = aggregator
        self.recorder = recorder
        self.policy = policy
        self._evaluate = evaluate
        self._links = {h.info.hospital_id: h for h in hospitals}

    @property
    def registered(self) -> int:
        """Every registered hospital counts toward the majority, whether or not it took part."""
        return len(self.hospitals)

    def register(self) -> None:
        self.recorder.register_hospitals([h.info for h in self.hospitals])

    def run_round(
        self,
        round_number: int,
        global_weights: Weights,
        progress: ProgressSink = ignore_progress,
        cancel: CancelToken | None = None,
    ) -> RoundOutcome:
        cancel = cancel or CancelToken()
        global_weights = as_weights(global_weights)
        previous_hash = weights_hash(global_weights)
        durations: dict[str, float] = {}
        failures: list[Failure] = []

        @contextmanager
        def stage(name: Stage) -> Iterator[None]:
            start = time.perf_counter()
            try:
                yield
            finally:
                durations[name.value] = durations.get(name.value, 0.0) + time.perf_counter() - start

        def fail(hospital_id: str, at: Stage, exc: BaseException) -> None:
            message = describe_error(exc)
            failure = Failure(round_number, hospital_id, at.value, message)
            log.warning("round %d: %s failed at %s: %s", round_number, hospital_id, at.value, message)
            failures.append(failure)
            self.recorder.record_failure(failure)
            progress(Progress(Stage.FAILED, f"{hospital_id} failed at {at.value}: {message}",
                              round_number=round_number, hospital_id=hospital_id))

        with stage(Stage.RECORDING):
            self.recorder.open_round(round_number, previous_hash, global_weights, self.policy)
        try:
            self.verifier.begin_round(round_number, global_weights)

            candidates = self._train(round_number, global_weights, progress, cancel, fail, stage)
            if not candidates:
                raise FederationError("No hospital produced an update in this round.")
            with stage(Stage.TRAINING):
                candidates = [self._links[c.hospital_id].revise(c, candidates) for c in candidates]

            candidates, commitments = self._commit(round_number, candidates, progress, fail, stage)
            cancel.raise_if_cancelled()

            scores = self._verify(round_number, candidates, progress, cancel, stage)
            votes = self._vote(round_number, candidates, scores, progress, fail, stage)
            decisions = self._decide(round_number, candidates, votes, stage)

            accepted = [c for c in candidates if self._decision(decisions, c).accepted]
            accepted_commitments = [commitments[c.hospital_id] for c in accepted]
            cancel.raise_if_cancelled()
            progress(Progress(Stage.AGGREGATION, f"aggregating {len(accepted)} accepted update(s)",
                              round_number=round_number))
            with stage(Stage.AGGREGATION):
                new_global = as_weights(
                    self.aggregator.aggregate(global_weights, accepted, accepted_commitments)
                )
                check_compatible(new_global, global_weights)

            metrics: dict[str, float] = {}
            if self._evaluate is not None:
                with stage(Stage.EVALUATION):
                    metrics = self._evaluate(new_global)

            outcome = RoundOutcome(
                round_number=round_number,
                previous_hash=previous_hash,
                global_hash=weights_hash(new_global),
                global_weights=new_global,
                contributors=[c.hospital_id for c in accepted],
                decisions=decisions,
                votes=votes,
                commitments=list(commitments.values()),
                failures=failures,
                metrics=metrics,
                durations=durations,
            )
            progress(Progress(Stage.RECORDING, "recording the round", round_number=round_number))
            with stage(Stage.RECORDING):
                self.recorder.finalize_round(outcome)
        except BaseException as exc:
            self._abort(round_number, exc)
            if isinstance(exc, (Cancelled, RoundAborted, KeyboardInterrupt)):
                raise
            message = describe_error(exc)
            raise RoundAborted(f"Round {round_number} was aborted: {message}", round_number=round_number) from exc
        finally:
            self.verifier.end_round()
        progress(Progress(Stage.DONE, f"round {round_number} finalised: {len(outcome.contributors)} of "
                          f"{len(candidates)} accepted", fraction=1.0, round_number=round_number,
                          values=metrics))
        return outcome

    # -- stages ---------------------------------------------------------------------------------

    def _train(self, round_number: int, global_weights: Weights, progress: ProgressSink,
               cancel: CancelToken, fail: Callable[[str, Stage, BaseException], None],
               stage: StageTimer) -> list[Candidate]:
        candidates: list[Candidate] = []
        for i, hospital in enumerate(self.hospitals):
            cancel.raise_if_cancelled()
            hid = hospital.info.hospital_id
            progress(Progress(Stage.TRAINING, f"{hid} training", fraction=i / len(self.hospitals),
                              round_number=round_number, hospital_id=hid))
            with stage(Stage.TRAINING):
                try:
                    candidate = hospital.train(round_number, global_weights, progress, cancel)
                    check_compatible(candidate.delta, global_weights)
                    as_weights(candidate.delta)
                except Cancelled:
                    raise
                except Exception as exc:  # a hospital's failure is the round's record, not a crash
                    fail(hid, Stage.TRAINING, exc)
                    continue
            candidates.append(candidate)
        return candidates

    def _commit(self, round_number: int, candidates: list[Candidate], progress: ProgressSink,
                fail: Callable[[str, Stage, BaseException], None],
                stage: StageTimer) -> tuple[list[Candidate], dict[str, Commitment]]:
        kept: list[Candidate] = []
        commitments: dict[str, Commitment] = {}
        for candidate in candidates:
            with stage(Stage.COMMITMENT):
                try:
                    commitment = self.verifier.commit(candidate)
                except CoreError as exc:  # e.g. NaN weights: that hospital's problem
                    fail(candidate.hospital_id, Stage.COMMITMENT, exc)
                    continue
                self.recorder.record_commitment(commitment)
            commitments[candidate.hospital_id] = commitment
            kept.append(candidate)
            progress(Progress(Stage.COMMITMENT, f"{candidate.hospital_id} committed {candidate.model_hash[:12]}",
                              round_number=round_number, hospital_id=candidate.hospital_id))
        if not kept:
            raise FederationError("No hospital could commit an update in this round.")
        return kept, commitments

    def _verify(self, round_number: int, candidates: list[Candidate], progress: ProgressSink,
                cancel: CancelToken, stage: StageTimer) -> ScoreMatrix:
        if not self.verifier.verifies:
            return {}
        validators = [self._links[c.hospital_id].validator_input(c) for c in candidates]
        progress(Progress(Stage.VERIFICATION,
                          f"verifying {len(candidates)} candidate(s) with {len(validators)} validator(s) "
                          f"({self.verifier.name})", fraction=0.0, round_number=round_number))
        with stage(Stage.VERIFICATION):
            scores = self.verifier.score(candidates, validators, progress, cancel)
        missing = [(v.hospital_id, c.hospital_id) for v in validators for c in candidates
                   if (v.hospital_id, c.hospital_id) not in scores]
        if missing:
            raise FederationError("The verifier did not score every candidate.", detail=str(missing[:3]))
        return scores

    def _vote(self, round_number: int, candidates: list[Candidate], scores: ScoreMatrix,
              progress: ProgressSink, fail: Callable[[str, Stage, BaseException], None],
              stage: StageTimer) -> list[Vote]:
        if not self.verifier.verifies:
            return []
        votes: list[Vote] = []
        validator_ids = sorted({v for v, _ in scores}, key=list(self._links).index)
        with stage(Stage.VOTING):
            for vid in validator_ids:
                link = self._links[vid]
                try:
                    ballot = [
                        Vote(round_number, vid, c.hospital_id,
                             bool(link.vote(round_number, c, scores[(vid, c.hospital_id)], self.policy)),
                             scores[(vid, c.hospital_id)])
                        for c in candidates
                    ]
                except Exception as exc:  # an abstaining hospital counts as not accepting
                    fail(vid, Stage.VOTING, exc)
                    continue
                votes.extend(ballot)
            self.recorder.record_votes(votes)
        progress(Progress(Stage.VOTING, f"{len(votes)} vote(s) cast", round_number=round_number))
        return votes

    def _decide(self, round_number: int, candidates: list[Candidate], votes: list[Vote],
                stage: StageTimer) -> list[Decision]:
        decisions = []
        for c in candidates:
            accepts = sum(1 for v in votes if v.candidate_id == c.hospital_id and v.accept)
            rejects = sum(1 for v in votes if v.candidate_id == c.hospital_id and not v.accept)
            decisions.append(Decision(round_number, c.hospital_id, c.model_hash, accepts, rejects,
                                      self.registered, unverified=not self.verifier.verifies))
        with stage(Stage.RECORDING):
            self.recorder.record_decisions(decisions)
        return decisions

    @staticmethod
    def _decision(decisions: list[Decision], candidate: Candidate) -> Decision:
        return next(d for d in decisions if d.candidate_id == candidate.hospital_id)

    def _abort(self, round_number: int, exc: BaseException) -> None:
        reason = describe_error(exc)
        log.error("round %d aborted: %s", round_number, reason)
        try:
            self.recorder.abort_round(round_number, reason)
        except Exception:  # the original error matters more; the recorder's is logged
            log.exception("could not record the abort of round %d", round_number)
