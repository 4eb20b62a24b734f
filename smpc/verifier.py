"""Encrypted verification: each candidate runs on each validator's secret-shared split in SMPC.

Only scores are revealed: per validator the number of correct predictions (compared on shares,
summed on shares), the dot product of the candidate's update with the validator's own and the
candidate's squared norm. The validator knows its own norm, so these are information-equivalent
to the cosine and norm the plaintext verifier reports; its reference values concern only its
own data and update and are computed locally in plaintext.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from core.federation.interfaces import Verifier
from core.federation.types import Candidate, Commitment, ScoreMatrix, Scores, ValidatorInput, mean_margin
from core.models.evaluation import ModelEvaluator
from core.models.keras_builder import build_keras_model
from core.models.weights import Weights, add, as_weights, check_compatible, flatten, norm
from core.progress import CancelToken, Progress, ProgressSink, Stage
from smpc.errors import SmpcError
from smpc.fixedpoint import share
from smpc.session import SmpcSession

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
        self._round: int | None = None

    # ------------------------------------------------------------------ rounds

    def begin_round(self, round_number: int, global_weights: Weights) -> None:
        weights = as_weights(global_weights)
        check_compatible(weights, self._template)
        self.session.open(self._shapes)
        self.session.release()
        self.session.load_global(weights)
        self._global = weights
        self._round = round_number

    def commit(self, candidate: Candidate) -> Commitment:
        if self._global is None or candidate.round_number != self._round:
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
        references = {v.hospital_id: self._reference(v) for v in validators}
        groups, batches, refs, base = self._prepare(validators)
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
            result = self.session.score_candidate(candidate.hospital_id, batches, refs, groups, base)
            cand_norm = math.sqrt(max(result.squared_norm, 0.0))
            for v in validators:
                ref_acc, ref_norm, ref_margin = references[v.hospital_id]
                n = v.validation.num_samples
                k = self.session.spec.num_classes
                denom = cand_norm * ref_norm
                cosine = result.dot[v.hospital_id] / denom if cand_norm > 0.0 and ref_norm > 0.0 else 0.0
                matrix[(v.hospital_id, candidate.hospital_id)] = Scores(
                    correct=result.correct[v.hospital_id],
                    total=v.validation.num_samples,
                    cosine=float(min(1.0, max(-1.0, cosine))),
                    norm=cand_norm,
                    reference_accuracy=ref_acc,
                    reference_norm=ref_norm,
                    margin=result.margin_sum[v.hospital_id] / ((k - 1) * n),
                    reference_margin=ref_margin,
                )
        progress(Progress(Stage.VERIFICATION, "SMPC scoring finished", fraction=1.0, round_number=self._round))
        return matrix

    def _reference(self, validator: ValidatorInput) -> tuple[float, float, float]:
        """The validator's own update on its own split: its data, its model, no SMPC needed."""
        assert self._global is not None
        data = validator.validation
        logits = self._evaluator.logits(add(self._global, validator.own_delta), data.x)
        accuracy = float(np.mean(np.argmax(logits, axis=1) == data.y))
        return accuracy, norm(validator.own_delta), mean_margin(logits, data.y)

    def _prepare(
        self, validators: Sequence[ValidatorInput]
    ) -> tuple[list[list[str]], list[list[dict]], dict, dict[str, int]]:
        """Each validator shares its split and its own update; rows of up to `capacity` validators
        share batches, labels enter as per-validator signed columns so counts stay separate."""
        sess = self.session
        fmt, b, cap, k = sess.fmt, sess.batch_size, sess.capacity, sess.spec.num_classes
        groups = [list(validators[i : i + cap]) for i in range(0, len(validators), cap)]
        all_batches: list[list[dict]] = []
        ref_feeds: list[dict] = []
        base: dict[str, int] = {}
        for group in groups:
            xs0, xs1, owners, labels = [], [], [], []
            refs = np.zeros((cap, sess.param_count), np.int64)
            for col, v in enumerate(group):
                data = v.validation
                if tuple(data.input_shape) != tuple(sess.spec.input_shape):
                    raise SmpcError(
                        f"The validation data of hospital {v.hospital_id} does not fit the model's input.",
                        detail=f"{data.input_shape} vs {sess.spec.input_shape}",
                    )
                s0, s1 = share(fmt.encode(data.x, what=f"validation data of hospital {v.hospital_id}"))
                xs0.append(s0)
                xs1.append(s1)
                owners.append(np.full(data.num_samples, col))
                labels.append(np.asarray(data.y, np.int64))
                base[v.hospital_id] = int(np.sum(data.y == 0)) if k == 2 else 0
                own = flatten(v.own_delta)
                fmt.check_norm(own, what=f"own update of hospital {v.hospital_id}")
                refs[col] = fmt.encode(own, what=f"own update of hospital {v.hospital_id}")
            x0, x1 = np.concatenate(xs0), np.concatenate(xs1)
            owner, y = np.concatenate(owners), np.concatenate(labels)
            rows = len(y)
            padded = -(-rows // b) * b
            pad = padded - rows
            if pad:
                zeros = np.zeros((pad, *x0.shape[1:]), np.int64)
                x0, x1 = np.concatenate([x0, zeros]), np.concatenate([x1, zeros])
            member = np.zeros((cap, padded), np.int64)
            member[owner, np.arange(rows)] = 1
            w = member * (2 * np.pad(y, (0, pad)) - 1)[None, :] if k == 2 else member
            w0, w1 = share(w)
            # Margin coefficients: (k-1) on the true class, -1 on the others, per owner column.
            coeff = np.zeros((cap, padded, k), np.int64)
            coeff[owner, np.arange(rows), :] = -1
            coeff[owner, np.arange(rows), y] = k - 1
            a0, a1 = share(coeff.reshape(cap, padded * k))
            if k > 2:
                onehot = np.zeros((padded, k), np.int64)
                onehot[np.arange(rows), y] = 1
                y0, y1 = share(onehot)
                yf0, yf1 = share(onehot * fmt.scale)
            batches = []
            for start in range(0, padded, b):
                sl = slice(start, start + b)
                feed = {
                    sess.x_feed[0]: x0[sl],
                    sess.x_feed[1]: x1[sl],
                    sess.w_feed[0]: w0[:, sl],
                    sess.w_feed[1]: w1[:, sl],
                    sess.a_feed[0]: a0[:, start * k : (start + b) * k],
                    sess.a_feed[1]: a1[:, start * k : (start + b) * k],
                }
                if k > 2:
                    feed.update({sess.y_feed[0]: y0[sl], sess.y_feed[1]: y1[sl],
                                 sess.yfix_feed[0]: yf0[sl], sess.yfix_feed[1]: yf1[sl]})
                batches.append(feed)
            r0, r1 = share(refs)
            all_batches.append(batches)
            ref_feeds.append({sess.ref_feed[0]: r0, sess.ref_feed[1]: r1})
        return [[v.hospital_id for v in g] for g in groups], all_batches, {"feeds": ref_feeds}, base
