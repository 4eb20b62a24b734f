"""The SMPC driver: runs the session graphs of a round without ever holding an input.

It loads the public global model, asks each share holder what it holds, sends both the round's
layout (public: slot order, validator groups, row counts), then runs every candidate on every
validator group, feeding only public indices; the scores stay in the holders' variables and each
validator collects its own. For aggregation each holder sums the updates the chain accepted, after
checking its shares against the owners' on-chain commitments (`smpc.aggregation`): the driver
fetches nothing from the session graphs at all, and the new global model is the only value it
reveals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from core.federation.interfaces import Aggregator, SecureScoring
from core.federation.types import Candidate, Commitment
from core.models.weights import Weights, as_weights
from core.progress import CancelToken, Progress, ProgressSink, Stage
from smpc.aggregation import SecureAggregate
from smpc.errors import SmpcError
from smpc.layout import RoundLayout
from smpc.player_service import SumShare
from smpc.session import SmpcSession

log = logging.getLogger(__name__)


class HolderControl(Protocol):
    """What the driver asks of a share holder: `PlayerService` in process, or its remote client."""

    name: str

    def holdings(self, round_number: int, attempt: int) -> tuple[list[str], dict[str, int]]: ...

    def prepare(self, layout: RoundLayout) -> None: ...

    def release(self, round_number: int, attempt: int) -> None: ...

    def sum_share(self, round_number: int) -> SumShare: ...


class SmpcDriver(SecureScoring, Aggregator):
    name = "smpc"
    needs_updates = False

    def __init__(self, session: SmpcSession, holders: Sequence[HolderControl]) -> None:
        if len(holders) != 2:
            raise SmpcError("A secure federation has exactly two share-holding players.")
        self.session = session
        self.holders = list(holders)
        self._aggregate = SecureAggregate(self.holders, session.fmt)
        self._layouts: dict[int, RoundLayout] = {}  # round -> layout of its last attempt scored

    def _shapes(self, weights: Weights) -> list[tuple[int, ...]]:
        return [tuple(w.shape) for w in weights]

    def score_round(self, round_number: int, attempt: int, global_weights: Weights,
                    candidates: Sequence[str], progress: ProgressSink, cancel: CancelToken) -> None:
        weights = as_weights(global_weights)
        start = time.perf_counter()
        self.session.open(self._shapes(weights))
        held = [h.holdings(round_number, attempt) for h in self.holders]
        if held[0] != held[1]:
            raise SmpcError("The two SMPC share holders do not hold the same hospitals' shares.",
                            detail=f"{held[0]} vs {held[1]}")
        updates, rows = held[0]
        # A candidate whose shares never reached the players cannot be scored: it gets no scores
        # and so no accepting vote. A validator that committed nothing has no reference.
        scored = [c for c in candidates if c in updates]
        validators = {v: n for v, n in rows.items() if v in candidates}
        if not validators:
            raise SmpcError(f"No validator shared its validation data for round {round_number}.")
        layout = RoundLayout.plan(round_number, attempt, scored, validators,
                                  batch_size=self.session.batch_size, capacity=self.session.capacity)
        self.session.ensure_slots(len(layout.candidates))
        self.session.load_global(weights)
        for h in self.holders:
            h.prepare(layout)

        def report(slot: int) -> None:
            progress(Progress(Stage.VERIFICATION, f"Scoring the update of {layout.candidates[slot]} in SMPC",
                              fraction=slot / max(len(layout.candidates), 1), round_number=round_number,
                              hospital_id=layout.candidates[slot]))

        self.session.score(layout, cancel, on_candidate=report)
        for h in self.holders:
            h.release(round_number, attempt)
        self._layouts[round_number] = layout
        log.info("round %d (attempt %d): scored %d candidate(s) for %d validator(s) in %.3f s", round_number,
                 attempt, len(layout.candidates), len(layout.validators), time.perf_counter() - start)
        progress(Progress(Stage.VERIFICATION, "SMPC scoring finished", fraction=1.0, round_number=round_number))

    def aggregate(self, global_weights: Weights, accepted: Sequence[Candidate],
                  commitments: Sequence[Commitment]) -> Weights:
        start = time.perf_counter()
        result = self._aggregate.aggregate(global_weights, accepted, commitments)
        if accepted:
            log.info("round %d: aggregated %d update(s) in %.3f s", accepted[0].round_number, len(accepted),
                     time.perf_counter() - start)
        return result

    def close(self) -> None:
        self.session.close()
