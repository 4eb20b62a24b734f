"""`CompositeRecorder`: one `Recorder` that writes each step to several, in a fixed order.

The services build it as `CompositeRecorder([SqliteRecorder(...), Web3Recorder(...)])`: the
local state first, then the ledger. A step goes to the recorders in that order and stops at the
first failure, which propagates to the engine with a note naming the recorders that already hold
the step; so the ledger never records a step the local state does not. `abort_round` and `close`
are clean-up and go to every recorder even after one fails; the first error is raised after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from core.federation.interfaces import Recorder
from core.federation.policy import VerificationPolicy
from core.federation.types import Commitment, Decision, Failure, HospitalInfo, RoundOutcome, Vote
from core.models.weights import Weights

logger = logging.getLogger(__name__)


class CompositeRecorder(Recorder):
    """Forwards every step to `recorders` in order (local state first, then the ledger)."""

    name = "composite"

    def __init__(self, recorders: Sequence[Recorder]) -> None:
        if not recorders:
            raise ValueError("CompositeRecorder needs at least one recorder.")
        self.recorders: tuple[Recorder, ...] = tuple(recorders)

    def _each(self, step: str, call: Callable[[Recorder], None]) -> None:
        done: list[str] = []
        for recorder in self.recorders:
            try:
                call(recorder)
            except Exception as exc:
                if done:
                    exc.add_note(
                        f"{step}: already recorded by {', '.join(done)}; not by {recorder.name} or later."
                    )
                logger.error("%s failed in recorder %s after %s", step, recorder.name, done or "none")
                raise
            done.append(recorder.name)

    def _all(self, step: str, call: Callable[[Recorder], None]) -> None:
        first: Exception | None = None
        for recorder in self.recorders:
            try:
                call(recorder)
            except Exception as exc:
                logger.error("%s failed in recorder %s: %s", step, recorder.name, exc)
                if first is None:
                    first = exc
        if first is not None:
            raise first

    def register_hospitals(self, hospitals: Sequence[HospitalInfo]) -> None:
        self._each("register_hospitals", lambda r: r.register_hospitals(hospitals))

    def open_round(
        self, round_number: int, global_hash: str, global_weights: Weights, policy: VerificationPolicy
    ) -> None:
        self._each("open_round", lambda r: r.open_round(round_number, global_hash, global_weights, policy))

    def record_commitment(self, commitment: Commitment) -> None:
        self._each("record_commitment", lambda r: r.record_commitment(commitment))

    def record_votes(self, votes: Sequence[Vote]) -> None:
        self._each("record_votes", lambda r: r.record_votes(votes))

    def record_decisions(self, decisions: Sequence[Decision]) -> None:
        self._each("record_decisions", lambda r: r.record_decisions(decisions))

    def record_failure(self, failure: Failure) -> None:
        self._each("record_failure", lambda r: r.record_failure(failure))

    def finalize_round(self, outcome: RoundOutcome) -> None:
        self._each("finalize_round", lambda r: r.finalize_round(outcome))

    def abort_round(self, round_number: int, reason: str) -> None:
        self._all("abort_round", lambda r: r.abort_round(round_number, reason))

    def close(self) -> None:
        self._all("close", lambda r: r.close())
