"""A hospital node's side of the SMPC verification: it shares its own inputs, in its own process,
and alone reconstructs its own scores.

`commit` encodes the hospital's update, splits it with `secrets` into two additive shares, salts
each with its own salt, sends share p only to player p and returns the per-player commitments the
hospital records on chain. Its validation rows, one-hot labels and own update go the same way.
`score` asks each share holder for this validator's shares of its results (the players hand them
only to this hospital's authenticated identity), adds them up and decodes them; the reference
scores concern only the hospital's own data and are computed here in the clear.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from core.federation.interfaces import Verifier, VerificationPending
from core.federation.reference import reference_scores
from core.federation.types import Candidate, Commitment, ScoreMatrix, Scores, ValidatorInput
from core.models.architecture import ModelSpec
from core.models.evaluation import ModelEvaluator
from core.models.weights import Weights, add, as_weights, check_compatible, flatten
from core.progress import CancelToken, ProgressSink
from smpc.errors import SmpcError
from smpc.fixedpoint import FixedPointFormat, new_salt, reconstruct, share, share_commitment
from smpc.player_service import ScoreShares, ScoresNotReleased, share_context

log = logging.getLogger(__name__)


class PlayerLink(Protocol):
    """What an owner needs of a share holder: `PlayerService` in process, or its remote client."""

    name: str

    def put_update(self, hospital_id: str, round_number: int, attempt: int, tensors: Sequence[np.ndarray],
                   salt: bytes) -> None: ...

    def put_validation(self, hospital_id: str, round_number: int, attempt: int, x: np.ndarray,
                       onehot: np.ndarray, ref: np.ndarray) -> None: ...

    def scores_for(self, validator: str, round_number: int, attempt: int) -> ScoreShares: ...


class SmpcOwner(Verifier):
    """One hospital's verifier in a secure federation; candidates never leave their owners in
    the clear, so nodes neither publish nor fetch update blobs (`sees_updates`)."""

    name = "smpc"
    sees_updates = False

    def __init__(self, hospital_id: str, spec: ModelSpec, fmt: FixedPointFormat,
                 holders: Sequence[PlayerLink]) -> None:
        if len(holders) != 2:
            raise SmpcError("A secure federation has exactly two share-holding players.")
        self.hospital_id = hospital_id
        self.spec = spec
        self.fmt = fmt
        self.holders = list(holders)
        self._evaluator = ModelEvaluator(spec)
        self._global: Weights | None = None
        self._round: tuple[int, int] | None = None

    def begin_round(self, round_number: int, global_weights: Weights, attempt: int = 0) -> None:
        self._global = as_weights(global_weights)
        self._round = (round_number, attempt)

    def _open(self, round_number: int) -> tuple[int, int, Weights]:
        if self._global is None or self._round is None or self._round[0] != round_number:
            raise SmpcError("A candidate was submitted outside its round.",
                            detail=f"candidate round {round_number}, open round {self._round}")
        return self._round[0], self._round[1], self._global

    def commit(self, candidate: Candidate, validator: ValidatorInput | None = None) -> Commitment:
        if candidate.hospital_id != self.hospital_id:
            raise SmpcError("A hospital shares only its own update.")
        n, attempt, global_weights = self._open(candidate.round_number)
        delta = as_weights(candidate.delta)
        check_compatible(delta, global_weights)
        what = f"update of hospital {self.hospital_id}"
        self.fmt.check_norm(flatten(delta), what=what)
        # The validators load global + delta into the network: that sum must fit the ring too.
        for tensor in add(global_weights, delta):
            self.fmt.check_range(tensor, what=f"model of hospital {self.hospital_id}")
        shares = [share(self.fmt.encode(d, what=what)) for d in delta]
        commitments = []
        for p, link in enumerate(self.holders):
            salt = new_salt()
            part = [s[p] for s in shares]
            commitments.append(share_commitment(salt, share_context(self.hospital_id, n, link.name), part))
            link.put_update(self.hospital_id, n, attempt, part, salt)
        if validator is not None:
            self._share_validation(n, attempt, validator)
        return Commitment(self.hospital_id, n, candidate.model_hash, tuple(commitments))

    def _share_validation(self, n: int, attempt: int, validator: ValidatorInput) -> None:
        data = validator.validation
        what = f"validation data of hospital {self.hospital_id}"
        if tuple(data.input_shape) != tuple(self.spec.input_shape):
            raise SmpcError(f"The validation data of hospital {self.hospital_id} does not fit the model's input.",
                            detail=f"{data.input_shape} vs {self.spec.input_shape}")
        k = self.spec.num_classes
        onehot = np.zeros((data.num_samples, k), np.int64)
        onehot[np.arange(data.num_samples), data.y] = 1
        own = flatten(validator.own_delta)
        self.fmt.check_norm(own, what=f"own update of hospital {self.hospital_id}")
        xs = share(self.fmt.encode(np.asarray(data.x, np.float64), what=what))
        ys = share(onehot)
        refs = share(self.fmt.encode(own, what=f"own update of hospital {self.hospital_id}"))
        for p, link in enumerate(self.holders):
            link.put_validation(self.hospital_id, n, attempt, xs[p], ys[p], refs[p])

    def score(self, candidates: Sequence[Candidate], validators: Sequence[ValidatorInput],
              progress: ProgressSink, cancel: CancelToken) -> ScoreMatrix:
        if len(validators) != 1 or validators[0].hospital_id != self.hospital_id:
            raise SmpcError("A hospital learns only its own scores.")
        v = validators[0]
        n, attempt, global_weights = self._open(candidates[0].round_number if candidates else -1)
        try:
            parts = [link.scores_for(self.hospital_id, n, attempt) for link in self.holders]
        except ScoresNotReleased as exc:
            raise VerificationPending(exc.user_message) from exc
        if parts[0].candidates != parts[1].candidates:
            raise SmpcError("The two SMPC players disagree on the round's candidates.")
        rows = reconstruct(parts[0].rows, parts[1].rows)
        ref = reference_scores(self._evaluator, global_weights, v)
        total, k = v.validation.num_samples, self.spec.num_classes
        base = int(np.sum(v.validation.y == 0)) if k == 2 else 0
        wanted = {c.hospital_id for c in candidates}
        matrix: ScoreMatrix = {}
        for cid, row in zip(parts[0].candidates, rows, strict=True):
            if cid not in wanted:
                continue
            squared = float(self.fmt.decode(row[3])) / self.fmt.scale
            dot = float(self.fmt.decode(row[2])) / self.fmt.scale
            self.fmt.check_sum(squared, what="update norm", squared_scale=True)
            self.fmt.check_sum(dot, what="update similarity", squared_scale=True)
            cand_norm = math.sqrt(max(squared, 0.0))
            denom = cand_norm * ref.norm
            cosine = dot / denom if cand_norm > 0.0 and ref.norm > 0.0 else 0.0
            matrix[(self.hospital_id, cid)] = Scores(
                correct=int(base + int(row[0])),
                total=total,
                cosine=float(min(1.0, max(-1.0, cosine))),
                norm=cand_norm,
                reference_accuracy=ref.accuracy,
                reference_norm=ref.norm,
                margin=float(self.fmt.decode(row[1])) / ((k - 1) * total),
                reference_margin=ref.margin,
                global_margin=ref.global_margin,
            )
        return matrix

