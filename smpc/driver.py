"""The SMPC driver: runs the session graphs of a round without ever holding an input.

It loads the public global model, asks each share holder what it holds, sends both the round's
layout (public: slot order, validator groups, row counts), then runs every candidate on every
validator group, feeding only public indices; the scores stay in the holders' variables and each
validator collects its own. For aggregation each holder first checks its shares against the
owners' on-chain commitments; the weighted sum of the accepted updates is the one value the
driver fetches, the new global model the only one it reveals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from core.federation.interfaces import Aggregator, SecureScoring
from core.federation.types import Candidate, Commitment
from core.models.weights import Weights, as_weights
from core.progress import CancelToken, Progress, ProgressSink, Stage
from smpc.errors import CommitmentMismatch, SmpcError
from smpc.layout import RoundLayout
from smpc.session import SmpcSession

log = logging.getLogger(__name__)


class HolderControl(Protocol):
    """What the driver asks of a share holder: `PlayerService` in process, or its remote client."""

    name: str

    def holdings(self, round_number: int, attempt: int) -> tuple[list[str], dict[str, int]]: ...

    def prepare(self, layout: RoundLayout) -> None: ...

    def release(self, round_number: int, attempt: int) -> None: ...

    def check_commitments(self, round_number: int, attempt: int, contributors: Sequence[str]) -> None: ...


class SmpcDriver(SecureScoring, Aggregator):
    name = "smpc"
    needs_updates = False

    def __init__(self, session: SmpcSession, holders: Sequence[HolderControl]) -> None:
        if len(holders) != 2:
            raise SmpcError("A secure federation has exactly two share-holding players.")
        self.session = session
        self.holders = list(holders)
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
        base = as_weights(global_weights)
        if not accepted:
            return [w.copy() for w in base]
        n = accepted[0].round_number
        layout = self._layouts.get(n)
        if layout is None:
            raise SmpcError(f"This SMPC driver did not score round {n}; it cannot aggregate it "
                            "(the players' shares of that round are not known to it).")
        for cand, com in zip(accepted, commitments, strict=True):
            if not com.share_commitments or com.hospital_id != cand.hospital_id:
                raise CommitmentMismatch(f"Hospital {cand.hospital_id} has no share commitments; it was not "
                                         "verified in SMPC.", hospital_id=cand.hospital_id)
        ids = [c.hospital_id for c in accepted]
        start = time.perf_counter()
        for h in self.holders:
            h.check_commitments(layout.round_number, layout.attempt, ids)
        counts = np.array([max(int(c.num_samples), 0) for c in accepted], np.int64)
        if counts.sum() <= 0:
            counts = np.ones(len(accepted), np.int64)  # as core's sample_weights: equal weights
        slot_weights = np.zeros(len(layout.candidates), np.int64)
        for hid, count in zip(ids, counts, strict=True):
            slot_weights[layout.candidates.index(hid)] = count
        sums = self.session.aggregate_sums(slot_weights.tolist())
        total = float(counts.sum())
        log.info("round %d: aggregated %d update(s) in %.3f s", n, len(ids), time.perf_counter() - start)
        for s in sums:
            if s.size:
                self.session.fmt.check_sum(float(np.max(np.abs(s))), what="aggregate")
        return as_weights([g.astype(np.float64) + s / total for g, s in zip(base, sums, strict=True)])

    def close(self) -> None:
        self.session.close()
