"""Secure aggregation: the weighted mean of the accepted updates from the two holders' shares of
their weighted sum.

Each share holder sums its shares of the updates the chain accepted, weighted by the sample
counts the chain records, after checking each against its owner's commitment
(`PlayerService.sum_share`); only the two sums leave the holders, and together they reveal the
weighted sum and nothing else. The driver turns that into the new global model, and every
hospital node can ask the holders for the same sums to check the global model the coordinator
published: one class for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from core.federation.interfaces import Aggregator
from core.federation.types import Candidate, Commitment
from core.models.weights import Weights, as_weights
from smpc.errors import CommitmentMismatch, SmpcError
from smpc.fixedpoint import FixedPointFormat, reconstruct
from smpc.player_service import SumShare


class HolderSums(Protocol):
    name: str

    def sum_share(self, round_number: int) -> SumShare: ...


class SecureAggregate(Aggregator):
    """FedAvg of what the holders hold; equals plaintext FedAvg within the fixed-point resolution."""

    name = "smpc"
    needs_updates = False

    def __init__(self, holders: Sequence[HolderSums], fmt: FixedPointFormat) -> None:
        if len(holders) != 2:
            raise SmpcError("A secure federation has exactly two share-holding players.")
        self.holders = list(holders)
        self.fmt = fmt

    def aggregate(self, global_weights: Weights, accepted: Sequence[Candidate],
                  commitments: Sequence[Commitment]) -> Weights:
        base = as_weights(global_weights)
        if not accepted:
            return [w.copy() for w in base]
        for cand, com in zip(accepted, commitments, strict=True):
            if not com.share_commitments or com.hospital_id != cand.hospital_id:
                raise CommitmentMismatch(f"Hospital {cand.hospital_id} has no share commitments; it was not "
                                         "verified in SMPC.", hospital_id=cand.hospital_id)
        n = accepted[0].round_number
        parts = [h.sum_share(n) for h in self.holders]
        expected = tuple(sorted(c.hospital_id for c in accepted))
        for h, part in zip(self.holders, parts, strict=True):
            if part.contributors != expected:
                raise SmpcError(f"SMPC player {h.name} summed other updates than the accepted ones.",
                                detail=f"{part.contributors} vs {expected}")
        if parts[0].counts != parts[1].counts:
            raise SmpcError("The two SMPC share holders weighted the updates differently.")
        total = float(sum(parts[0].counts))
        sums = [self.fmt.decode(reconstruct(a, b)) for a, b in zip(parts[0].tensors, parts[1].tensors, strict=True)]
        for s in sums:
            if s.size:
                self.fmt.check_sum(float(np.max(np.abs(s))), what="aggregate")
        return as_weights([g.astype(np.float64) + s / total for g, s in zip(base, sums, strict=True)])
