"""What a share-holding player does besides running graphs: keep what owners sent it, assemble
the round's inputs in its own variables, hand each validator its own score shares, and check its
shares against the owners' on-chain commitments before it lets them be aggregated.

One `PlayerService` per share holder (server0, server1). It sees one share of everything and
nothing else: each owner's update share with its salt, each validator's rows and labels and own
update, all as uniform ring elements. The helper player (server2) holds no inputs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core.models.architecture import ModelSpec
from smpc import shared_vars as names
from smpc.errors import CommitmentMismatch, SmpcError
from smpc.fixedpoint import FixedPointFormat, share_commitment
from smpc.layout import RoundLayout
from smpc.shared_vars import VariableAccess

log = logging.getLogger(__name__)

class LedgerFacts(Protocol):
    """What a share holder reads from the chain itself, not from the driver."""

    def share_commitments(self, round_number: int, hospital_id: str) -> tuple[str, ...]:
        """The share commitments `hospital_id` recorded in the round's open attempt, in player order."""

    def accepted_samples(self, round_number: int) -> dict[str, int] | None:
        """The round's accepted candidates with their recorded sample counts; None until decided."""

RoundKey = tuple[int, int]  # (round, attempt)


class ScoresNotReleased(SmpcError):
    """A validator asked for its scores before the driver finished scoring the round."""


def share_context(hospital_id: str, round_number: int, player: str) -> str:
    """What a share commitment binds besides the shares: round, owner and holder."""
    return f"round={round_number};hospital={hospital_id};player={player}"


@dataclass(frozen=True)
class UpdateShare:
    tensors: tuple[np.ndarray, ...]
    salt: bytes


@dataclass(frozen=True)
class ValidationShare:
    """One holder's share of a validator's rows (n, *input), one-hot labels (n, k) and own
    update (flattened, P)."""

    x: np.ndarray
    onehot: np.ndarray
    ref: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class ScoreShares:
    """A validator's share of its results: per candidate (slot order) its row (count, margin
    sum, dot, squared norm), and where the validator sat in the layout."""

    candidates: tuple[str, ...]
    rows: np.ndarray  # (S, 4)


class PlayerService:
    def __init__(
        self,
        name: str,
        holder: int,
        spec: ModelSpec,
        weight_shapes: Sequence[tuple[int, ...]],
        fmt: FixedPointFormat,
        access: VariableAccess,
        ledger: LedgerFacts,
    ) -> None:
        if holder not in (0, 1):
            raise SmpcError("Only server0 and server1 hold shares.")
        self.name = name
        self.holder = holder
        self.spec = spec
        self.shapes = [tuple(s) for s in weight_shapes]
        self.param_count = int(sum(np.prod(s) for s in self.shapes))
        self.fmt = fmt
        self.access = access
        self.ledger = ledger
        self._lock = threading.RLock()
        self._updates: dict[RoundKey, dict[str, UpdateShare]] = {}
        self._validation: dict[RoundKey, dict[str, ValidationShare]] = {}
        self._layouts: dict[RoundKey, RoundLayout] = {}
        self._released: dict[RoundKey, np.ndarray] = {}
        self._sums: dict[RoundKey, SumShare] = {}

    # -- from owners ------------------------------------------------------------------------------

    def put_update(self, hospital_id: str, round_number: int, attempt: int, tensors: Sequence[np.ndarray],
                   salt: bytes) -> None:
        shapes = [tuple(np.shape(t)) for t in tensors]
        if shapes != self.shapes:
            raise SmpcError(f"The update share of {hospital_id} does not fit the model.",
                            detail=f"{shapes} vs {self.shapes}")
        if not 16 <= len(salt) <= 64:
            raise SmpcError(f"The update share of {hospital_id} comes without a usable salt.")
        key = (round_number, attempt)
        with self._lock:
            if key in self._layouts:
                raise SmpcError(f"Round {round_number} is already being scored; the update of "
                                f"{hospital_id} came too late.")
            self._forget_before(round_number)
            share = UpdateShare(tuple(np.ascontiguousarray(t, np.int64) for t in tensors), bytes(salt))
            self._updates.setdefault(key, {})[hospital_id] = share

    def put_validation(self, hospital_id: str, round_number: int, attempt: int, x: np.ndarray,
                       onehot: np.ndarray, ref: np.ndarray) -> None:
        k = self.spec.num_classes
        n = int(np.shape(x)[0]) if np.ndim(x) else 0
        if (n < 1 or tuple(np.shape(x)[1:]) != tuple(self.spec.input_shape) or np.shape(onehot) != (n, k)
                or np.shape(ref) != (self.param_count,)):
            raise SmpcError(f"The validation share of {hospital_id} does not fit the model.",
                            detail=f"x {np.shape(x)}, labels {np.shape(onehot)}, own update {np.shape(ref)}")
        key = (round_number, attempt)
        with self._lock:
            if key in self._layouts:
                raise SmpcError(f"Round {round_number} is already being scored; the validation data of "
                                f"{hospital_id} came too late.")
            self._forget_before(round_number)
            self._validation.setdefault(key, {})[hospital_id] = ValidationShare(
                np.ascontiguousarray(x, np.int64), np.ascontiguousarray(onehot, np.int64),
                np.ascontiguousarray(ref, np.int64))

    def _forget_before(self, round_number: int) -> None:
        for store in (self._updates, self._validation, self._layouts, self._released, self._sums):
            for key in [k for k in store if k[0] < round_number]:
                del store[key]

    # -- from the driver --------------------------------------------------------------------------

    def holdings(self, round_number: int, attempt: int) -> tuple[list[str], dict[str, int]]:
        """Whose update shares this player holds, and each validator's row count (public)."""
        key = (round_number, attempt)
        with self._lock:
            return (sorted(self._updates.get(key, {})),
                    {h: v.rows for h, v in self._validation.get(key, {}).items()})

    def prepare(self, layout: RoundLayout) -> None:
        """Writes the candidates' update shares into their slots and this holder's share of the
        stacked validation inputs, as `layout` places them."""
        key = (layout.round_number, layout.attempt)
        with self._lock:
            updates = self._updates.get(key, {})
            validation = self._validation.get(key, {})
            missing = [c for c in layout.candidates if c not in updates]
            missing += [v for v in layout.validators if v not in validation]
            if missing:
                raise SmpcError(f"SMPC player {self.name} holds no shares of {', '.join(sorted(set(missing)))} "
                                f"for round {layout.round_number}.")
            for g in layout.groups:
                for v, rows in zip(g.ids, g.rows, strict=True):
                    if validation[v].rows != rows:
                        raise SmpcError(f"The layout gives {v} {rows} rows; player {self.name} holds "
                                        f"{validation[v].rows}.")
            values: dict[str, np.ndarray] = {}
            for s, cid in enumerate(layout.candidates):
                for i, tensor in enumerate(updates[cid].tensors):
                    values[names.slot_name(s, self.holder, i)] = tensor
            values.update(self._stacked_inputs(layout, validation))
            values[names.result_name(self.holder)] = np.zeros((layout.result_rows, layout.capacity, 4), np.int64)
            self.access.assign(values)
            self._layouts[key] = layout
            self._released.pop(key, None)

    def _stacked_inputs(self, layout: RoundLayout, validation: dict[str, ValidationShare]) -> dict[str, np.ndarray]:
        """This holder's share of x, w, a (and y, yfix) for every batch, and ref per group. Public
        constants (the -1 of the coefficients, the 1 of a membership) are added by holder 0 only,
        so the two shares still add up to the values the scoring program expects."""
        b, c, k = layout.batch_size, layout.capacity, self.spec.num_classes
        nb = layout.total_batches
        one = 1 if self.holder == 0 else 0
        x = np.zeros((nb, b, *self.spec.input_shape), np.int64)
        w = np.zeros((nb, c, b), np.int64)
        a = np.zeros((nb, c, b * k), np.int64)
        y = np.zeros((nb, b, k), np.int64)
        ref = np.zeros((len(layout.groups), c, self.param_count), np.int64)
        with np.errstate(over="ignore"):  # ring arithmetic modulo 2^64
            for g, group in enumerate(layout.groups):
                position = group.first_batch * b
                for col, v in enumerate(group.ids):
                    share = validation[v]
                    ref[g, col] = share.ref
                    for r in range(share.rows):
                        batch, at = divmod(position + r, b)
                        x[batch, at] = share.x[r]
                        y[batch, at] = share.onehot[r]
                        if k == 2:
                            w[batch, col, at] = 2 * share.onehot[r, 1] - one  # signed label 2y - 1
                        else:
                            w[batch, col, at] = one  # membership
                        a[batch, col, at * k:(at + 1) * k] = k * share.onehot[r] - one  # k-1 on y, -1 off it
                    position += share.rows
            out = {names.input_name("x", self.holder): x, names.input_name("w", self.holder): w,
                   names.input_name("a", self.holder): a, names.input_name("ref", self.holder): ref}
            if k > 2:
                out[names.input_name("y", self.holder)] = y
                out[names.input_name("yfix", self.holder)] = y * np.int64(self.fmt.scale)
        return out

    def release(self, round_number: int, attempt: int) -> None:
        """The driver finished scoring: read this holder's results once, to hand out row by row."""
        key = (round_number, attempt)
        with self._lock:
            if key not in self._layouts:
                raise SmpcError(f"SMPC player {self.name} was never given round {round_number}'s layout.")
            (results,) = self.access.read([names.result_name(self.holder)])
            self._released[key] = results

    def scores_for(self, validator: str, round_number: int, attempt: int) -> ScoreShares:
        """Validator `validator`'s own shares of its results; the caller is authenticated as it."""
        key = (round_number, attempt)
        with self._lock:
            layout = self._layouts.get(key)
            results = self._released.get(key)
            if layout is None or results is None:
                raise ScoresNotReleased(f"The scores of round {round_number} are not ready yet.")
            g, col = layout.place(validator)
            rows = np.stack([results[layout.result_row(s, g), col] for s in range(len(layout.candidates))]) \
                if layout.candidates else np.zeros((0, 4), np.int64)
            return ScoreShares(layout.candidates, rows)

    def sum_share(self, round_number: int) -> SumShare:
        """This holder's share of the round's weighted sum of accepted updates, with the weights
        and contributors the chain decided (not the driver). Every contributor's slot is read
        back and checked against the commitment its owner recorded on chain first; a mismatch
        is refused. The sum is public (it is the new global model): the driver and every hospital
        may ask."""
        with self._lock:
            # The round's latest attempt this holder scored: the chain's open attempt is the latest.
            attempts = [k for k in self._layouts if k[0] == round_number]
            if not attempts:
                raise SmpcError(f"SMPC player {self.name} did not score round {round_number} (it may have "
                                "restarted since); the round cannot be aggregated.")
            key = max(attempts)
            layout = self._layouts[key]
            accepted = self.ledger.accepted_samples(round_number)
            if accepted is None:
                raise SmpcError(f"Round {round_number} is not decided on the ledger yet; SMPC player "
                                f"{self.name} sums only what the chain accepted.")
            cached = self._sums.get(key)
            if cached is not None and dict(zip(cached.contributors, cached.counts, strict=True)) == accepted:
                return cached
            contributors = sorted(accepted)
            counts = [max(int(accepted[h]), 0) for h in contributors]
            if sum(counts) <= 0:
                counts = [1] * len(contributors)  # as core's sample_weights: equal weights
            total = [np.zeros(shape, np.int64) for shape in self.shapes]
            for hid, count in zip(contributors, counts, strict=True):
                held = self._checked_share(layout, hid)
                with np.errstate(over="ignore"):  # ring arithmetic modulo 2^64
                    for t, part in zip(total, held, strict=True):
                        t += np.int64(count) * part
            result = SumShare(tuple(contributors), tuple(counts), tuple(total))
            self._sums[key] = result
            return result

    def _checked_share(self, layout: RoundLayout, hid: str) -> list[np.ndarray]:
        """The share of `hid` this holder's variables hold (what is summed), once it matches the
        commitment on chain."""
        n, key = layout.round_number, (layout.round_number, layout.attempt)
        if hid not in layout.candidates:
            raise CommitmentMismatch(f"Hospital {hid} was not a candidate scored in round {n}.",
                                     hospital_id=hid, player=self.name)
        s = layout.candidates.index(hid)
        held = self.access.read([names.slot_name(s, self.holder, i) for i in range(len(self.shapes))])
        recorded = self.ledger.share_commitments(n, hid)
        actual = share_commitment(self._updates[key][hid].salt, share_context(hid, n, self.name), held)
        if len(recorded) <= self.holder or recorded[self.holder] != actual:
            log.error("round %d: the share of %s held by %s does not match its commitment", n, hid, self.name)
            raise CommitmentMismatch(
                f"SMPC player {self.name} holds a share of hospital {hid}'s update that does not "
                "match the commitment on the ledger; it refuses to aggregate it.",
                hospital_id=hid, player=self.name)
        return held


@dataclass(frozen=True)
class SumShare:
    """One holder's share of a round's weighted sum: sum_k counts_k * delta_k, encoded."""

    contributors: tuple[str, ...]
    counts: tuple[int, ...]
    tensors: tuple[np.ndarray, ...]
