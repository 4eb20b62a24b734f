"""Encrypted verification: each candidate runs on each validator's secret-shared split in SMPC.

Only scores are revealed: per validator the number of correct predictions (compared on shares,
summed on shares), the dot product of the candidate's update with the validator's own and the
candidate's squared norm. The validator knows its own norm, so these are information-equivalent
to the cosine and norm the plaintext verifier reports; its reference values concern only its
own data and update and are computed locally in plaintext.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np

from core.federation.interfaces import Verifier
from core.federation.reference import reference_scores
from core.federation.types import Candidate, Commitment, ScoreMatrix, Scores, ValidatorInput
from core.models.evaluation import ModelEvaluator
from core.models.keras_builder import build_keras_model
from core.models.weights import Weights, as_weights, check_compatible, flatten
from core.progress import CancelToken, Progress, ProgressSink, Stage
from smpc.errors import SmpcError
from smpc.fixedpoint import share
from smpc.session import SmpcSession, ValidatorGroup

logger = logging.getLogger(__name__)


class SmpcVerifier(Verifier):
    """Scores candidates under SecureNN; each validator learns only its own scores."""

    name = "smpc"

    def __init__(self, session: SmpcSession) -> None:
        self.session = session
        self._evaluator = ModelEvaluator(session.spec)
        self._template = build_keras_model(session.spec).get_weights()
        self._shapes = [tuple(w.shape) for w in self._template]
        self._global: Weights | None = None
        self._round: tuple[int, int] | None = None  # (round number, attempt) begun

    # ------------------------------------------------------------------ rounds

    def begin_round(self, round_number: int, global_weights: Weights, attempt: int = 0) -> None:
        weights = as_weights(global_weights)
        check_compatible(weights, self._template)
        if self._round == (round_number, attempt) and self._global is not None and all(
            np.array_equal(a, b) for a, b in zip(weights, self._global, strict=True)
        ):
            return  # every hospital node of a simulation begins the round it shares with the others
        self.session.open(self._shapes)
        self.session.release()
        self.session.load_global(weights)
        self._global = weights
        self._round = (round_number, attempt)

    def commit(self, candidate: Candidate) -> Commitment:
        if self._global is None or self._round is None or candidate.round_number != self._round[0]:
            raise SmpcError(
                "A candidate was submitted outside its round.",
                detail=f"candidate round {candidate.round_number}, open round {self._round}",
            )
        delta = as_weights(candidate.delta)
        check_compatible(delta, self._global)
        held = self.session.hold(candidate.hospital_id, candidate.round_number, delta)
        return Commitment(
            hospital_id=candidate.hospital_id,
            round_number=candidate.round_number,
            model_hash=candidate.model_hash,
            share_commitments=held.commitments,
        )

    def end_round(self) -> None:
        self.session.release()

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ scoring

    def score(
        self,
        candidates: Sequence[Candidate],
        validators: Sequence[ValidatorInput],
        progress: ProgressSink,
        cancel: CancelToken,
    ) -> ScoreMatrix:
        if self._global is None:
            raise SmpcError("Scoring was asked for before the round began.")
        for c in candidates:
            self.session.held(c.hospital_id)  # refuses candidates that were never committed
        references = {v.hospital_id: reference_scores(self._evaluator, self._global, v) for v in validators}
        groups = self._prepare(validators)
        matrix: ScoreMatrix = {}
        for index, candidate in enumerate(candidates):
            cancel.raise_if_cancelled()
            progress(
                Progress(
                    Stage.VERIFICATION,
                    f"Scoring the update of {candidate.hospital_id} in SMPC",
                    fraction=index / max(len(candidates), 1),
                    round_number=candidate.round_number,
                    hospital_id=candidate.hospital_id,
                )
            )
            result = self.session.score_candidate(candidate.hospital_id, groups, cancel)
            cand_norm = math.sqrt(max(result.squared_norm, 0.0))
            for v in validators:
                ref = references[v.hospital_id]
                n = v.validation.num_samples
                k = self.session.spec.num_classes
                denom = cand_norm * ref.norm
                cosine = result.dot[v.hospital_id] / denom if cand_norm > 0.0 and ref.norm > 0.0 else 0.0
                matrix[(v.hospital_id, candidate.hospital_id)] = Scores(
                    correct=result.correct[v.hospital_id],
                    total=v.validation.num_samples,
                    cosine=float(min(1.0, max(-1.0, cosine))),
                    norm=cand_norm,
                    reference_accuracy=ref.accuracy,
                    reference_norm=ref.norm,
                    margin=result.margin_sum[v.hospital_id] / ((k - 1) * n),
                    reference_margin=ref.margin,
                )
        progress(
            Progress(Stage.VERIFICATION, "SMPC scoring finished", fraction=1.0,
                     round_number=self._round[0] if self._round else None)
        )
        return matrix

    def _prepare(self, validators: Sequence[ValidatorInput]) -> list[ValidatorGroup]:
        """Each validator shares its own update now and its rows batch by batch, freshly for each
        candidate, so memory stays one batch whatever the size of the splits. Rows of up to
        `capacity` validators share batches; per-validator label columns keep counts apart."""
        sess = self.session
        fmt, cap = sess.fmt, sess.capacity
        groups = []
        for start in range(0, len(validators), cap):
            group = list(validators[start : start + cap])
            refs = np.zeros((cap, sess.param_count), np.int64)
            for col, v in enumerate(group):
                data = v.validation
                what = f"validation data of hospital {v.hospital_id}"
                if tuple(data.input_shape) != tuple(sess.spec.input_shape):
                    raise SmpcError(
                        f"The validation data of hospital {v.hospital_id} does not fit the model's input.",
                        detail=f"{data.input_shape} vs {sess.spec.input_shape}",
                    )
                fmt.check_range(data.x, what=what)
                own = flatten(v.own_delta)
                fmt.check_norm(own, what=f"own update of hospital {v.hospital_id}")
                refs[col] = fmt.encode(own, what=f"own update of hospital {v.hospital_id}")
            r0, r1 = share(refs)
            k = sess.spec.num_classes
            groups.append(
                ValidatorGroup(
                    ids=[v.hospital_id for v in group],
                    base_counts={
                        v.hospital_id: int(np.sum(v.validation.y == 0)) if k == 2 else 0 for v in group
                    },
                    ref_feed={sess.ref_feed[0]: r0, sess.ref_feed[1]: r1},
                    batch_feeds=functools.partial(self._batch_feeds, group),
                )
            )
        return groups

    def _batch_feeds(self, group: Sequence[ValidatorInput]) -> Iterator[dict]:
        """Feeds of each batch: the rows' shares, and per validator column the signed labels
        (k = 2) or membership (k > 2), margin coefficients and, for k > 2, one-hot labels."""
        sess = self.session
        fmt, b, cap, k = sess.fmt, sess.batch_size, sess.capacity, sess.spec.num_classes
        owner = np.concatenate([np.full(v.validation.num_samples, col) for col, v in enumerate(group)])
        local = np.concatenate([np.arange(v.validation.num_samples) for v in group])
        for start in range(0, len(owner), b):
            rows = slice(start, min(start + b, len(owner)))
            n = rows.stop - rows.start
            x = np.zeros((b, *sess.spec.input_shape), np.float64)
            y = np.zeros(b, np.int64)
            for col in np.unique(owner[rows]):
                at = np.flatnonzero(owner[rows] == col)
                data = group[col].validation
                x[at] = data.x[local[rows][at]]
                y[at] = data.y[local[rows][at]]
            member = np.zeros((cap, b), np.int64)
            member[owner[rows], np.arange(n)] = 1
            w = member * (2 * y - 1)[None, :] if k == 2 else member
            coeff = np.zeros((cap, b, k), np.int64)
            coeff[owner[rows], np.arange(n), :] = -1
            coeff[owner[rows], np.arange(n), y[:n]] = k - 1
            x0, x1 = share(fmt.encode(x, what="validation data"))
            w0, w1 = share(w)
            a0, a1 = share(coeff.reshape(cap, b * k))
            feed = {
                sess.x_feed[0]: x0,
                sess.x_feed[1]: x1,
                sess.w_feed[0]: w0,
                sess.w_feed[1]: w1,
                sess.a_feed[0]: a0,
                sess.a_feed[1]: a1,
            }
            if k > 2:
                onehot = np.zeros((b, k), np.int64)
                onehot[np.arange(n), y[:n]] = 1
                y0, y1 = share(onehot)
                f0, f1 = share(onehot * fmt.scale)
                feed.update(
                    {sess.y_feed[0]: y0, sess.y_feed[1]: y1, sess.yfix_feed[0]: f0, sess.yfix_feed[1]: f1}
                )
            yield feed
