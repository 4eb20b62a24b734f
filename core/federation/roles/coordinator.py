"""`Coordinator`: opens rounds, closes phases when their deadline passes, aggregates, finalises.

It holds the coordinator's identity only, never a hospital's: it learns the candidates from
their commitments and fetches the accepted ones' model blobs like any member would. Like every
role it acts on the round state the channel holds, so a restarted coordinator carries on with
the round where the chain has it. A round that cannot be aggregated is aborted with its reason
and opened again under the same number, up to `max_attempts` times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.errors import Cancelled, FederationError, describe_error
from core.federation.channel import (
    COORDINATOR,
    Aborted,
    AlreadyDone,
    Phase,
    PhaseError,
    RoundChannel,
    RoundOpened,
    RoundTiming,
    RoundView,
)
from core.federation.interfaces import Aggregator
from core.federation.roles.node import fetch_weights
from core.federation.types import Candidate, Commitment
from core.models.weights import Weights, as_weights, check_compatible, subtract, to_bytes, weights_hash
from core.progress import CancelToken, Progress, ProgressSink, Stage, ignore_progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """What the coordinator runs: how many rounds, how long each phase may take, under which policy."""

    rounds: int
    policy_digest: str
    timing: RoundTiming = RoundTiming()
    verified: bool = True
    max_attempts: int = 3


class Coordinator:
    def __init__(
        self,
        channel: RoundChannel,
        aggregator: Aggregator,
        schedule: Schedule,
        initial_weights: Weights,
        *,
        progress: ProgressSink = ignore_progress,
    ) -> None:
        if channel.identity != COORDINATOR:
            raise FederationError("The coordinator must act as the coordinator on the channel.")
        self.channel = channel
        self.aggregator = aggregator
        self.schedule = schedule
        self.initial = as_weights(initial_weights)
        self.initial_hash = weights_hash(self.initial)
        self.progress = progress

    # -- the loop ---------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        last = self.channel.round(self.schedule.rounds)
        return last is not None and last.phase is Phase.FINAL

    def step(self, cancel: CancelToken | None = None) -> bool:
        """Does what is due in the current round; True when it acted."""
        (cancel or CancelToken()).raise_if_cancelled()
        view = self.channel.current_round()
        if view is None or view.phase in (Phase.FINAL, Phase.ABORTED):
            return self._open_next(view)
        now = self.channel.now()
        try:
            if now >= view.deadlines.final:
                self.channel.abort(view.round_number, "the round passed its last deadline")
                return True
            if view.phase is Phase.COMMIT:
                if now >= view.deadlines.commit or len(view.commitments) >= view.registered:
                    self.channel.close_commits(view.round_number)
                    return True
                return False
            if view.phase is Phase.VOTE:
                if now >= view.deadlines.vote or len(view.voters) >= view.registered:
                    if not view.voters:
                        # Nobody could verify (the SMPC players down, every validator gone): a
                        # round decided on no votes at all would only record the outage as rejections.
                        self.channel.abort(view.round_number, "no hospital voted: the verification could not run")
                    else:
                        self.channel.decide(view.round_number)
                    return True
                return False
        except AlreadyDone:
            return True
        if view.phase is Phase.AGGREGATE:
            self._aggregate(view)
            return True
        return False

    def next_deadline(self) -> float | None:
        """When waiting would next let the round move on without anyone acting."""
        view = self.channel.current_round()
        if view is None or view.phase in (Phase.FINAL, Phase.ABORTED):
            return None
        if view.phase is Phase.COMMIT:
            return view.deadlines.commit
        if view.phase is Phase.VOTE:
            return view.deadlines.vote
        return view.deadlines.final

    # -- opening ----------------------------------------------------------------------------------

    def _open_next(self, view: RoundView | None) -> bool:
        if view is None:
            number = 1
        elif view.phase is Phase.FINAL:
            number = view.round_number + 1
        else:
            number = view.round_number
            attempts = self._attempts(number)
            if attempts >= self.schedule.max_attempts:
                raise FederationError(
                    f"Round {number} was aborted {attempts} times; the coordinator stops.",
                    detail=self._last_abort_reason(number),
                )
        if number > self.schedule.rounds:
            return False
        previous = self._starting_model(number)
        digest = self.channel.put_blob(to_bytes(previous))
        try:
            self.channel.open_round(number, digest, self.schedule.policy_digest, self.schedule.timing,
                                    verified=self.schedule.verified)
        except AlreadyDone:
            return True
        self.progress(Progress(Stage.TRAINING, f"round {number}/{self.schedule.rounds} opened",
                               fraction=(number - 1) / self.schedule.rounds, round_number=number))
        return True

    def _starting_model(self, number: int) -> Weights:
        if number == 1:
            return self.initial
        before = self.channel.round(number - 1)
        if before is None or before.phase is not Phase.FINAL:
            raise FederationError(f"Round {number - 1} is not final; round {number} cannot start.")
        return fetch_weights(self.channel, before.global_hash, COORDINATOR)

    def _attempts(self, number: int) -> int:
        events, _ = self.channel.events(0)
        return sum(1 for e in events if isinstance(e, RoundOpened) and e.round_number == number)

    def _last_abort_reason(self, number: int) -> str:
        events, _ = self.channel.events(0)
        reasons = [e.reason for e in events if isinstance(e, Aborted) and e.round_number == number]
        return reasons[-1] if reasons else ""

    # -- aggregation ------------------------------------------------------------------------------

    def _aggregate(self, view: RoundView) -> None:
        n = view.round_number
        try:
            previous = fetch_weights(self.channel, view.previous_hash, COORDINATOR)
            accepted: list[Candidate] = []
            commitments: list[Commitment] = []
            for cid in view.accepted:
                c = view.commitment_of(cid)
                assert c is not None
                if self.aggregator.needs_updates:
                    delta = subtract(fetch_weights(self.channel, c.model_hash, cid), previous)
                else:
                    delta = []  # secure aggregation: the players hold it as shares
                accepted.append(Candidate(cid, n, delta, c.num_samples, c.model_hash))
                commitments.append(Commitment(cid, n, c.model_hash, c.share_commitments))
            self.progress(Progress(Stage.AGGREGATION, f"aggregating {len(accepted)} accepted update(s)",
                                   round_number=n))
            new_global = as_weights(self.aggregator.aggregate(previous, accepted, commitments))
            check_compatible(new_global, previous)
            digest = self.channel.put_blob(to_bytes(new_global))
            self.channel.finalize(n, digest, [c.hospital_id for c in accepted])
        except AlreadyDone:
            return
        except Cancelled:
            raise
        except PhaseError:
            raise
        except Exception as exc:  # noqa: BLE001 - the round is aborted with the reason, then retried
            reason = describe_error(exc)
            log.error("round %d: aggregation failed: %s", n, reason)
            self.progress(Progress(Stage.FAILED, f"round {n} aborted: {reason}", round_number=n))
            try:
                self.channel.abort(n, reason)
            except AlreadyDone:
                pass
            return
        self.progress(Progress(Stage.DONE, f"round {n} finalised: {len(view.accepted)} of "
                               f"{len(view.candidates)} accepted", fraction=1.0, round_number=n))
