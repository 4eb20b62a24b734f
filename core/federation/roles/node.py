"""`HospitalNode`: one hospital's part in every round, acting only on what the channel holds.

Each `step` reads the current round from the channel and does what is due for this hospital:
train on the global model the round starts from and commit to the update (publishing its
model blob); once commitments close, fetch every candidate (hash-checked against its
commitment), score it on the own validation split and vote with the own identity; once the
round is final, check that the published global model is the aggregate of the accepted updates.
Every act is looked up on the channel first, so a node restarted at any point carries on and
sends nothing twice. Its data and key never leave it: the channel carries hashes, votes and
model blobs only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import Cancelled, CoreError, DataError, ModelError, ServiceAway, describe_error
from core.federation.channel import (
    COORDINATOR,
    AlreadyDone,
    Phase,
    RoundChannel,
    RoundView,
)
from core.federation.interfaces import Aggregator, HospitalLink, VerificationPending, Verifier
from core.federation.policy import VerificationPolicy
from core.federation.roles.ballots import Ballot
from core.federation.roles.state import MemoryRoleState, RoleState
from core.federation.types import Candidate, Commitment, Scores
from core.models.weights import Weights, add, as_weights, check_compatible, from_bytes, subtract, to_bytes
from core.progress import CancelToken, Progress, ProgressSink, Stage, ignore_progress

log = logging.getLogger(__name__)

# How closely a published global model must match the aggregate a node recomputes: float32
# summation order, and the fixed-point encoding of secure aggregation (~1e-5), stay far below.
GLOBAL_TOLERANCE = 1e-4
MAX_TRIES = 3  # of a step that failed for a reason outside the hospital's own data and model
MAX_CHECK_TRIES = 20  # fetching a final global model: its stores may be briefly away


@dataclass(frozen=True)
class NodeAlert:
    """Something a node refused to go along with, for its operator and its archive."""

    round_number: int
    stage: str
    message: str


def fetch_weights(channel: RoundChannel, digest: str, owner: str | None) -> Weights:
    """A model from a model store, refused unless its bytes hash to `digest` and it decodes."""
    return as_weights(from_bytes(channel.get_blob(digest, owner)))


class HospitalNode:
    def __init__(
        self,
        channel: RoundChannel,
        hospital: HospitalLink,
        verifier: Verifier,
        policy: VerificationPolicy,
        *,
        global_check: Aggregator | None = None,
        state: RoleState | None = None,
        progress: ProgressSink = ignore_progress,
    ) -> None:
        if channel.identity != hospital.info.hospital_id:
            raise CoreError("A hospital node must act as its own hospital on the channel.",
                            detail=f"{channel.identity} vs {hospital.info.hospital_id}")
        self.channel = channel
        self.hospital = hospital
        self.verifier = verifier
        self.policy = policy
        self.global_check = global_check
        self.state = state or MemoryRoleState()
        self.progress = progress
        self.alerts: list[NodeAlert] = []
        self._tries: dict[tuple[str, int], int] = {}  # (step, attempt) -> failed tries so far
        self._waiting: set[tuple[str, int]] = set()  # (step, attempt) waiting for a service away
        self._trained: dict[int, Candidate] = {}  # attempt -> trained but not yet committed
        self._own: dict[int, Candidate] = {}  # attempt -> own candidate (rebuilt from the store after a restart)
        self._doc: dict[str, Any] = self.state.load()
        self._doc.setdefault("ballots", {})
        self._doc.setdefault("failed", {})  # attempt -> why this node did not commit
        self._doc.setdefault("abstained", {})  # attempt -> why this node could not vote
        self._doc.setdefault("checked", {})  # attempt of a final round -> "ok" or what was wrong
        self._doc.setdefault("distrusted", [])  # global hashes this node refuses to train on

    @property
    def hospital_id(self) -> str:
        return self.hospital.info.hospital_id

    def ballot(self, attempt: int) -> Ballot | None:
        """This node's ballot in a round attempt: what it voted and the scores behind it."""
        raw = self._doc["ballots"].get(str(attempt))
        return Ballot.from_dict(raw) if raw else None

    @property
    def checked(self) -> dict[str, str]:
        """Round attempts whose final global model this node checked, with the verdict."""
        return dict(self._doc["checked"])

    def failure(self, attempt: int) -> str | None:
        """Why this node did not commit in a round attempt, if it failed."""
        value = self._doc["failed"].get(str(attempt))
        return str(value) if value is not None else None

    # -- the loop ---------------------------------------------------------------------------------

    def step(self, cancel: CancelToken | None = None) -> bool:
        """Does what is due for this hospital in the current round; True when it acted."""
        cancel = cancel or CancelToken()
        view = self.channel.current_round()
        if view is None:
            return False
        if view.phase is not Phase.FINAL and view.round_number > 1:
            # A node slower than the coordinator checks the round before first: the next one may
            # already be open, and this node trains on that round's global model.
            before = self.channel.round(view.round_number - 1)
            if (before is not None and before.phase is Phase.FINAL
                    and str(before.attempt) not in self._doc["checked"] and self._check_global(before)):
                return True
        if view.phase is Phase.COMMIT and self._may_commit(view):
            self._commit(view, cancel)
            return True
        if view.phase is Phase.VOTE and view.verified and self._may_vote(view):
            self._vote(view, cancel)
            return True
        if view.phase is Phase.FINAL and str(view.attempt) not in self._doc["checked"]:
            return self._check_global(view)
        return False

    def _gave_up(self, kind: str, view: RoundView, exc: BaseException, stage: Stage) -> None:
        """Records a failed step. The hospital's own data or model being unusable is final for
        the attempt; anything else (a model store, SMPC player or node briefly away) is tried
        again on the next steps, `MAX_TRIES` times in all, before the hospital gives up."""
        hid, n, key = self.hospital_id, view.round_number, str(view.attempt)
        message = describe_error(exc)
        if isinstance(exc, ServiceAway):
            # Tried again on every step until the phase's deadline: a player restarting for a few
            # seconds must not turn every hospital into a dropout. Said once per attempt.
            if (kind, view.attempt) not in self._waiting:
                self._waiting.add((kind, view.attempt))
                log.warning("round %d: %s waits at %s: %s", n, hid, stage.value, message)
            return
        tries = self._tries.get((kind, view.attempt), 0) + 1
        self._tries[(kind, view.attempt)] = tries
        final = isinstance(exc, (DataError, ModelError)) or tries >= MAX_TRIES
        log.warning("round %d: %s failed at %s (try %d%s): %s", n, hid, stage.value, tries,
                    "" if final else ", will retry", message)
        if final:
            self._doc[kind][key] = message
            self.state.save(self._doc)
            self.progress(Progress(Stage.FAILED, f"{hid} failed at {stage.value}: {message}",
                                   round_number=n, hospital_id=hid))

    # -- commit -----------------------------------------------------------------------------------

    def _may_commit(self, view: RoundView) -> bool:
        return (view.commitment_of(self.hospital_id) is None
                and str(view.attempt) not in self._doc["failed"]
                and self.channel.now() < view.deadlines.commit)

    def _starting_model(self, view: RoundView) -> Weights:
        """The round's starting model, refused unless it is the last final global model (or, in
        round 1, the consortium's initial model) and this node has not caught it cheating."""
        if view.previous_hash in self._doc["distrusted"]:
            raise CoreError("The round starts from a global model this hospital found not to be the "
                            "aggregate of the accepted updates; it does not train on it.")
        if view.round_number > 1:
            before = self.channel.round(view.round_number - 1)
            if before is None or before.phase is not Phase.FINAL or before.global_hash != view.previous_hash:
                raise CoreError(f"Round {view.round_number} does not start from the global model of "
                                f"round {view.round_number - 1} on record.")
        return fetch_weights(self.channel, view.previous_hash, COORDINATOR)

    def _commit(self, view: RoundView, cancel: CancelToken) -> None:
        hid, n = self.hospital_id, view.round_number
        try:
            global_weights = self._starting_model(view)
            candidate = self._trained.get(view.attempt)
            if candidate is None:  # trained once per attempt, however often sharing it is retried
                self.progress(Progress(Stage.TRAINING, f"{hid} training", round_number=n, hospital_id=hid))
                candidate = self.hospital.train(n, global_weights, self.progress, cancel)
                check_compatible(candidate.delta, global_weights)
                if self.hospital.wants_peer_updates:
                    candidate = self.hospital.revise(candidate, self._peer_candidates(view, global_weights))
                self._trained[view.attempt] = candidate
            self.verifier.begin_round(n, global_weights, view.attempt)
            if self.verifier.sees_updates:
                commitment = self.verifier.commit(candidate)
                blob = to_bytes(add(global_weights, candidate.delta))
                published = self.channel.put_blob(blob)
                if published != candidate.model_hash:
                    raise CoreError("The published model does not hash to the candidate's model hash.")
            else:
                # The update and the validation split go to the SMPC players as shares only;
                # the chain gets the model's hash and one commitment per player share.
                commitment = self.verifier.commit(candidate, self.hospital.validator_input(candidate))
            self.channel.commit(n, candidate.model_hash, candidate.num_samples, commitment.share_commitments)
        except AlreadyDone:
            return
        except Cancelled:
            raise
        except Exception as exc:  # this hospital's failure: a dropout of the round, not a crash
            self._gave_up("failed", view, exc, Stage.TRAINING)
            return
        self._trained.pop(view.attempt, None)
        self._own[view.attempt] = candidate  # the archive reports the commitment once the chain has it

    def _peer_candidates(self, view: RoundView, global_weights: Weights) -> list[Candidate]:
        """The updates committed so far by others, for an attack plugin that asks for them."""
        fresh = self.channel.current_round() or view
        peers = []
        for c in fresh.commitments:
            if c.hospital_id == self.hospital_id:
                continue
            try:
                weights = fetch_weights(self.channel, c.model_hash, c.hospital_id)
            except Exception:  # noqa: BLE001 - a peer's store being down only narrows what an attacker sees
                continue
            peers.append(Candidate(c.hospital_id, view.round_number, subtract(weights, global_weights),
                                   c.num_samples, c.model_hash))
        return peers

    # -- vote -------------------------------------------------------------------------------------

    def _may_vote(self, view: RoundView) -> bool:
        return (self.hospital_id not in view.voters
                and str(view.attempt) not in self._doc["abstained"]
                and view.commitment_of(self.hospital_id) is not None  # a dropout has no own reference
                and self.channel.now() < view.deadlines.vote)

    def _own_candidate(self, view: RoundView, global_weights: Weights) -> Candidate:
        own = self._own.get(view.attempt)
        if own is not None:
            return own
        if not self.verifier.sees_updates:
            raise CoreError("This hospital restarted after sharing its update and no longer has it; "
                            "it cannot score this round and abstains.")
        mine = view.commitment_of(self.hospital_id)
        assert mine is not None
        weights = fetch_weights(self.channel, mine.model_hash, self.hospital_id)
        own = Candidate(self.hospital_id, view.round_number, subtract(weights, global_weights),
                        mine.num_samples, mine.model_hash)
        self._own[view.attempt] = own
        return own

    def _vote(self, view: RoundView, cancel: CancelToken) -> None:
        hid, n = self.hospital_id, view.round_number
        ballot = self.ballot(view.attempt)
        if ballot is None:
            if str(view.attempt) in self._doc["abstained"]:
                return
            try:
                ballot = self._judge(view, cancel)
            except VerificationPending:
                return  # the SMPC driver is still scoring: nothing failed, look again next step
            except Cancelled:
                raise
            except Exception as exc:  # noqa: BLE001 - a validator that cannot score abstains
                self._gave_up("abstained", view, exc, Stage.VERIFICATION)
                return
            # The scores are kept before their hash goes on chain, so a vote is never cast
            # on scores this hospital cannot later show.
            self._doc["ballots"][str(view.attempt)] = ballot.as_dict()
            self.state.save(self._doc)
        try:
            self.channel.vote(n, ballot.accepted, ballot.scores_hash)
        except AlreadyDone:
            return
        self.progress(Progress(Stage.VOTING, f"{hid} accepted {len(ballot.accepted)} of "
                               f"{len(view.candidates)} candidate(s)", round_number=n, hospital_id=hid))

    def _judge(self, view: RoundView, cancel: CancelToken) -> Ballot:
        """Scores every candidate on this hospital's validation split and decides its votes."""
        hid, n = self.hospital_id, view.round_number
        global_weights = fetch_weights(self.channel, view.previous_hash, COORDINATOR)
        own = self._own_candidate(view, global_weights)
        self.verifier.begin_round(n, global_weights, view.attempt)
        candidates: list[Candidate] = []
        for cid in view.candidates:
            c = view.commitment_of(cid)
            assert c is not None
            if cid == hid:
                candidates.append(own)
                continue
            if not self.verifier.sees_updates:  # held as shares by the players: scored there
                candidates.append(Candidate(cid, n, [], c.num_samples, c.model_hash))
                continue
            try:
                weights = fetch_weights(self.channel, c.model_hash, cid)
                check_compatible(weights, global_weights)
            except Exception as exc:  # noqa: BLE001 - an unfetchable or malformed candidate is rejected
                log.warning("round %d: %s cannot use the update of %s: %s", n, hid, cid, describe_error(exc))
                continue
            candidates.append(Candidate(cid, n, subtract(weights, global_weights), c.num_samples, c.model_hash))
        if self.verifier.sees_updates:  # otherwise the SMPC driver reports its scoring
            self.progress(Progress(Stage.VERIFICATION, f"{hid} scoring {len(candidates)} candidate(s)",
                                   fraction=0.0, round_number=n, hospital_id=hid))
        matrix = self.verifier.score(candidates, [self.hospital.validator_input(own)], self.progress, cancel)
        # A candidate the verifier could not score (its shares never reached the players) has no
        # scores and gets no accepting vote.
        candidates = [c for c in candidates if (hid, c.hospital_id) in matrix]
        scores: dict[str, Scores] = {c.hospital_id: matrix[(hid, c.hospital_id)] for c in candidates}
        accepted = self.hospital.vote(n, scores, self.policy)
        return Ballot(n, view.attempt, hid, accepted, scores)

    # -- final ------------------------------------------------------------------------------------

    def _check_global(self, view: RoundView) -> bool:
        """Checks the published global model against the accepted updates this node can fetch."""
        verdict = "ok"
        try:
            new_global = fetch_weights(self.channel, view.global_hash, COORDINATOR)
            if self.global_check is not None:
                previous = fetch_weights(self.channel, view.previous_hash, COORDINATOR)
                expected = self.global_check.aggregate(previous, *self._accepted(view, previous))
                if not _close(expected, new_global):
                    verdict = ("the published global model is not the aggregate of the accepted updates "
                               "(the coordinator may be cheating)")
        except Exception as exc:  # noqa: BLE001 - recorded as this node's finding; the loop goes on
            tries = self._tries.get(("check", view.attempt), 0) + 1
            self._tries[("check", view.attempt)] = tries
            if tries < MAX_CHECK_TRIES:
                log.warning("round %d: %s cannot check the global model yet (try %d): %s",
                            view.round_number, self.hospital_id, tries, describe_error(exc))
                return False
            verdict = f"the global model could not be checked: {describe_error(exc)}"
        self._doc["checked"][str(view.attempt)] = verdict
        if verdict != "ok":
            if "not the aggregate" in verdict:
                self._doc["distrusted"].append(view.global_hash)
            self.alerts.append(NodeAlert(view.round_number, "global check", verdict))
            log.error("round %d: %s: %s", view.round_number, self.hospital_id, verdict)
            self.progress(Progress(Stage.FAILED, f"{self.hospital_id}: {verdict}",
                                   round_number=view.round_number, hospital_id=self.hospital_id))
        self.state.save(self._doc)
        self._own.pop(view.attempt, None)
        return True

    def _accepted(self, view: RoundView, previous: Weights) -> tuple[list[Candidate], list[Commitment]]:
        candidates, commitments = [], []
        assert self.global_check is not None
        for cid in view.contributors:
            c = view.commitment_of(cid)
            assert c is not None
            if self.global_check.needs_updates:
                delta = subtract(fetch_weights(self.channel, c.model_hash, cid), previous)
            else:
                delta = []  # secure aggregation: the check asks the share holders for their sums
            candidates.append(Candidate(cid, view.round_number, delta, c.num_samples, c.model_hash))
            commitments.append(Commitment(cid, view.round_number, c.model_hash, c.share_commitments))
        return candidates, commitments


def _close(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    if len(a) != len(b):
        return False
    return all(x.shape == y.shape and np.allclose(x, y, rtol=GLOBAL_TOLERANCE, atol=GLOBAL_TOLERANCE)
               for x, y in zip(a, b, strict=True))

