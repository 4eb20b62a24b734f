"""Secure aggregation: weighted FedAvg computed by the players on the shares they verified.

Each share holder multiplies its held shares by the public training-set sizes and adds them up
locally (no truncation, so no fixed-point error beyond the encoding itself); only the two sums
leave the players, and together they reveal the weighted sum of the accepted updates and
nothing else. The shares are checked against the commitments recorded for the round, in the
same run that sums them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.federation.interfaces import Aggregator
from core.federation.types import Candidate, Commitment
from core.models.weights import Weights, as_weights
from smpc.errors import CommitmentMismatch, SmpcError
from smpc.session import SmpcSession


class SmpcAggregator(Aggregator):
    """FedAvg over held shares; equals plaintext FedAvg within the fixed-point resolution."""

    name = "smpc"

    def __init__(self, session: SmpcSession) -> None:
        self.session = session

    def aggregate(
        self,
        global_weights: Weights,
        accepted: Sequence[Candidate],
        commitments: Sequence[Commitment],
    ) -> Weights:
        base = as_weights(global_weights)
        if not accepted:
            return [w.copy() for w in base]
        if len(commitments) != len(accepted):
            raise SmpcError(
                "Every accepted update needs its recorded commitment.",
                detail=f"{len(accepted)} updates, {len(commitments)} commitments",
            )
        for cand, com in zip(accepted, commitments, strict=True):
            if (
                com.hospital_id != cand.hospital_id
                or com.round_number != cand.round_number
                or com.model_hash != cand.model_hash
            ):
                raise CommitmentMismatch(
                    f"The update of hospital {cand.hospital_id} is not the one it committed to.",
                    hospital_id=cand.hospital_id,
                )
            if not com.share_commitments:
                raise CommitmentMismatch(
                    f"Hospital {cand.hospital_id} has no share commitments; it was not verified in SMPC.",
                    hospital_id=cand.hospital_id,
                )
        counts = np.array([max(int(c.num_samples), 0) for c in accepted], np.int64)
        if counts.sum() <= 0:
            counts = np.ones(len(accepted), np.int64)  # as core's sample_weights: equal weights
        sums = self.session.aggregate(
            [c.hospital_id for c in accepted], [c.share_commitments for c in commitments], counts.tolist()
        )
        total = float(counts.sum())
        for s in sums:
            if s.size:
                self.session.fmt.check_sum(float(np.max(np.abs(s))), what="aggregate")
        return as_weights([g.astype(np.float64) + s / total for g, s in zip(base, sums, strict=True)])
