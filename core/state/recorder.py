"""`SqliteRecorder`: writes one federation run, round by round, into the local database.

Every method is one transaction, so a crash between two steps leaves the steps before it and
nothing of the one that failed. A round the engine aborts keeps what was recorded of it (its
commitments, votes, failures) under the status `aborted`; reopening the same round number later
clears those rows and starts the round afresh, in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.errors import StateError
from core.federation.interfaces import Recorder
from core.federation.policy import VerificationPolicy
from core.federation.types import (
    Commitment,
    Decision,
    Failure,
    HospitalInfo,
    RoundOutcome,
    Vote,
)
from core.models.weights import Weights
from core.state.blobs import BlobStore
from core.state.db import Database
from core.state.models import (
    EvaluationReport,
    FailureRecord,
    Federation,
    FederationMember,
    FederationStatus,
    Hospital,
    Metric,
    ModelRecord,
    ModelStatus,
    Round,
    RoundStatus,
    VoteRecord,
    utcnow,
)

logger = logging.getLogger(__name__)


class SqliteRecorder(Recorder):
    """Records one federation run in SQLite; creates its federation row unless given one.

    With `blob_dir`, the global model each round starts from and ends with is also stored there
    (content-addressed), before the transaction that refers to it, so no row names a missing file.
    """

    name = "sqlite"

    def __init__(
        self,
        database: Database,
        federation_id: int | None = None,
        *,
        federation_name: str = "simulation",
        config: dict[str, Any] | None = None,
        blob_dir: Path | None = None,
    ) -> None:
        self.database = database
        self.blobs = BlobStore(blob_dir) if blob_dir is not None else None
        if federation_id is None:
            with database.session() as session:
                federation = Federation(name=federation_name, config=dict(config or {}))
                session.add(federation)
                session.flush()
                federation_id = federation.id
            logger.info("Recording federation %d (%s) in %s", federation_id, federation_name, database.path)
        else:
            with database.session() as session:
                if session.get(Federation, federation_id) is None:
                    raise StateError(f"There is no federation {federation_id} in the local database.")
        self.federation_id: int = federation_id

    # -- helpers -------------------------------------------------------------------------------

    def _round(self, session: Session, number: int) -> Round | None:
        return session.scalars(
            select(Round).where(Round.federation_id == self.federation_id, Round.number == number)
        ).one_or_none()

    def _open_round(self, session: Session, number: int) -> Round:
        round_ = self._round(session, number)
        if round_ is None:
            raise StateError(f"Round {number} of federation {self.federation_id} was never opened.")
        if round_.status is not RoundStatus.OPEN:
            raise StateError(
                f"Round {number} of federation {self.federation_id} is {round_.status.value}; "
                "nothing more can be recorded in it."
            )
        return round_

    def _members(self, session: Session) -> set[str]:
        return set(
            session.scalars(
                select(FederationMember.hospital_id).where(
                    FederationMember.federation_id == self.federation_id
                )
            )
        )

    def _require_members(self, session: Session, hospital_ids: Iterable[str]) -> None:
        unknown = sorted(set(hospital_ids) - self._members(session))
        if unknown:
            raise StateError(
                f"Hospital(s) {', '.join(unknown)} are not registered in federation {self.federation_id}."
            )

    def _store(self, weights: Weights, expected_hash: str) -> None:
        if self.blobs is None:
            return
        stored = self.blobs.put_weights(weights)
        if stored != expected_hash:
            raise StateError(
                "The global model does not match the hash the round names.",
                detail=f"{stored} != {expected_hash}",
            )

    @staticmethod
    def _clear(session: Session, round_: Round) -> None:
        for table in (ModelRecord, VoteRecord, FailureRecord, Metric, EvaluationReport):
            session.execute(delete(table).where(table.round_id == round_.id))
        session.expire(round_)

    # -- Recorder --------------------------------------------------------------------------------

    def register_hospitals(self, hospitals: Sequence[HospitalInfo]) -> None:
        with self.database.session() as session:
            members = {
                m.hospital_id: m
                for m in session.scalars(
                    select(FederationMember).where(FederationMember.federation_id == self.federation_id)
                )
            }
            for info in hospitals:
                hospital = session.get(Hospital, info.hospital_id)
                if hospital is None:
                    hospital = Hospital(id=info.hospital_id, name=info.name)
                    session.add(hospital)
                hospital.name = info.name
                hospital.malicious = info.malicious
                if info.account is not None:
                    hospital.account = info.account
                member = members.get(info.hospital_id)
                if member is None:
                    member = FederationMember(federation_id=self.federation_id, hospital_id=info.hospital_id)
                    session.add(member)
                    members[info.hospital_id] = member
                member.malicious = info.malicious

    def open_round(
        self, round_number: int, global_hash: str, global_weights: Weights, policy: VerificationPolicy
    ) -> None:
        self._store(global_weights, global_hash)
        with self.database.session() as session:
            round_ = self._round(session, round_number)
            if round_ is None:
                round_ = Round(federation_id=self.federation_id, number=round_number)
                session.add(round_)
            elif round_.status is RoundStatus.FINALIZED:
                raise StateError(
                    f"Round {round_number} of federation {self.federation_id} is already finalized."
                )
            else:
                # An aborted round being retried, or an open one a crash left behind.
                logger.info(
                    "Reopening %s round %d of federation %d",
                    round_.status.value,
                    round_number,
                    self.federation_id,
                )
                self._clear(session, round_)
            round_.status = RoundStatus.OPEN
            round_.previous_hash = global_hash
            round_.global_hash = None
            round_.policy = policy.as_dict() | {"digest": policy.digest()}
            round_.metrics = {}
            round_.durations = {}
            round_.contributors = []
            round_.abort_reason = None
            round_.started_at = utcnow()
            round_.finished_at = None

    def record_commitment(self, commitment: Commitment) -> None:
        with self.database.session() as session:
            round_ = self._open_round(session, commitment.round_number)
            self._require_members(session, [commitment.hospital_id])
            self._add_commitment(session, round_, commitment)

    @staticmethod
    def _add_commitment(session: Session, round_: Round, commitment: Commitment) -> ModelRecord:
        existing = session.scalars(
            select(ModelRecord).where(
                ModelRecord.round_id == round_.id, ModelRecord.hospital_id == commitment.hospital_id
            )
        ).one_or_none()
        if existing is not None:
            if existing.model_hash != commitment.model_hash:
                raise StateError(
                    f"Hospital {commitment.hospital_id} already committed to another model in round "
                    f"{round_.number}."
                )
            return existing
        record = ModelRecord(
            round_id=round_.id,
            hospital_id=commitment.hospital_id,
            model_hash=commitment.model_hash,
            share_commitments=list(commitment.share_commitments),
            status=ModelStatus.PENDING,
        )
        session.add(record)
        return record

    def record_votes(self, votes: Sequence[Vote]) -> None:
        with self.database.session() as session:
            rounds: dict[int, Round] = {}
            for vote in votes:
                if vote.round_number not in rounds:
                    rounds[vote.round_number] = self._open_round(session, vote.round_number)
            self._require_members(session, {v.validator_id for v in votes} | {v.candidate_id for v in votes})
            for vote in votes:
                self._add_vote(session, rounds[vote.round_number], vote)

    @staticmethod
    def _add_vote(session: Session, round_: Round, vote: Vote) -> None:
        existing = session.scalars(
            select(VoteRecord).where(
                VoteRecord.round_id == round_.id,
                VoteRecord.validator_id == vote.validator_id,
                VoteRecord.candidate_id == vote.candidate_id,
            )
        ).one_or_none()
        if existing is not None:
            if existing.accept != vote.accept:
                raise StateError(
                    f"Hospital {vote.validator_id} already voted the other way on {vote.candidate_id} "
                    f"in round {round_.number}."
                )
            return
        session.add(
            VoteRecord(
                round_id=round_.id,
                validator_id=vote.validator_id,
                candidate_id=vote.candidate_id,
                accept=vote.accept,
                scores=vote.scores.as_dict() if vote.scores is not None else {},
            )
        )
        session.flush()

    def record_decisions(self, decisions: Sequence[Decision]) -> None:
        with self.database.session() as session:
            for decision in decisions:
                self._apply_decision(session, self._open_round(session, decision.round_number), decision)

    @staticmethod
    def _apply_decision(session: Session, round_: Round, decision: Decision) -> None:
        record = session.scalars(
            select(ModelRecord).where(
                ModelRecord.round_id == round_.id, ModelRecord.hospital_id == decision.candidate_id
            )
        ).one_or_none()
        if record is None:
            raise StateError(
                f"Round {round_.number} has a decision on {decision.candidate_id}, which never committed."
            )
        if record.model_hash != decision.model_hash:
            raise StateError(
                f"The decision on {decision.candidate_id} in round {round_.number} names another model "
                "than it committed to."
            )
        record.accepts = decision.accepts
        record.rejects = decision.rejects
        record.registered = decision.registered
        record.unverified = decision.unverified
        record.status = ModelStatus(decision.status.value)

    def record_failure(self, failure: Failure) -> None:
        with self.database.session() as session:
            round_ = self._open_round(session, failure.round_number)
            self._require_members(session, [failure.hospital_id])
            self._add_failure(session, round_, failure)

    @staticmethod
    def _add_failure(session: Session, round_: Round, failure: Failure) -> None:
        duplicate = session.scalars(
            select(FailureRecord.id).where(
                FailureRecord.round_id == round_.id,
                FailureRecord.hospital_id == failure.hospital_id,
                FailureRecord.stage == failure.stage,
                FailureRecord.message == failure.message,
            )
        ).first()
        if duplicate is None:
            session.add(
                FailureRecord(
                    round_id=round_.id,
                    hospital_id=failure.hospital_id,
                    stage=failure.stage,
                    message=failure.message,
                )
            )
        record = session.scalars(
            select(ModelRecord).where(
                ModelRecord.round_id == round_.id, ModelRecord.hospital_id == failure.hospital_id
            )
        ).one_or_none()
        if record is not None and record.status is ModelStatus.PENDING:
            record.status = ModelStatus.FAILED
        session.flush()

    def finalize_round(self, outcome: RoundOutcome) -> None:
        """Writes the whole outcome in one transaction; steps the engine already recorded are
        matched rather than duplicated, so a caller may also skip them."""
        self._store(outcome.global_weights, outcome.global_hash)
        with self.database.session() as session:
            done = self._round(session, outcome.round_number)
            if done is not None and done.status is RoundStatus.FINALIZED and done.global_hash == outcome.global_hash:
                return  # recorded before a restart: an event replayed from the chain
            round_ = self._open_round(session, outcome.round_number)
            if round_.previous_hash is not None and round_.previous_hash != outcome.previous_hash:
                raise StateError(
                    f"Round {outcome.round_number} opened on model {round_.previous_hash[:12]}… but its "
                    f"outcome starts from {outcome.previous_hash[:12]}…."
                )
            involved = (
                {c.hospital_id for c in outcome.commitments}
                | {d.candidate_id for d in outcome.decisions}
                | {v.validator_id for v in outcome.votes}
                | {v.candidate_id for v in outcome.votes}
                | {f.hospital_id for f in outcome.failures}
                | set(outcome.contributors)
            )
            self._require_members(session, involved)
            for commitment in outcome.commitments:
                self._add_commitment(session, round_, commitment)
            session.flush()
            for vote in outcome.votes:
                self._add_vote(session, round_, vote)
            for decision in outcome.decisions:
                self._apply_decision(session, round_, decision)
            for failure in outcome.failures:
                self._add_failure(session, round_, failure)
            decided = {d.candidate_id for d in outcome.decisions}
            records = session.scalars(select(ModelRecord).where(ModelRecord.round_id == round_.id)).all()
            uncommitted = sorted(set(outcome.contributors) - {r.hospital_id for r in records})
            if uncommitted:
                raise StateError(
                    f"Round {outcome.round_number} aggregates {', '.join(uncommitted)}, "
                    "which never committed."
                )
            for record in records:
                if record.hospital_id not in decided and record.status is ModelStatus.PENDING:
                    # Committed but never decided on: it dropped out between commitment and vote.
                    record.status = ModelStatus.FAILED
                if record.hospital_id in outcome.contributors and record.status is not ModelStatus.ACCEPTED:
                    raise StateError(
                        f"Round {outcome.round_number} aggregates {record.hospital_id}, whose update was "
                        f"{record.status.value}."
                    )
            round_.status = RoundStatus.FINALIZED
            round_.previous_hash = outcome.previous_hash
            round_.global_hash = outcome.global_hash
            round_.contributors = list(outcome.contributors)
            round_.metrics = {k: float(v) for k, v in outcome.metrics.items()}
            round_.durations = {k: float(v) for k, v in outcome.durations.items()}
            round_.finished_at = utcnow()
            session.execute(delete(Metric).where(Metric.round_id == round_.id))
            for key, value in round_.metrics.items():
                session.add(Metric(round_id=round_.id, key=key, value=value, step=round_.number))
            federation = session.get_one(Federation, self.federation_id)
            if "accuracy" in round_.metrics:
                federation.final_accuracy = round_.metrics["accuracy"]

    def abort_round(self, round_number: int, reason: str) -> None:
        """Marks the round aborted, keeping what was recorded of it. A finalized round can be
        aborted too: when a later recorder (the ledger) fails, the engine drops the round."""
        with self.database.session() as session:
            round_ = self._round(session, round_number)
            if round_ is None:
                round_ = Round(federation_id=self.federation_id, number=round_number, previous_hash=None)
                session.add(round_)
            was_finalized = round_.status is RoundStatus.FINALIZED
            round_.status = RoundStatus.ABORTED
            round_.abort_reason = reason
            round_.finished_at = utcnow()
            if was_finalized:
                session.flush()
                federation = session.get_one(Federation, self.federation_id)
                federation.final_accuracy = _last_accuracy(session, self.federation_id)
        logger.info("Round %d of federation %d aborted: %s", round_number, self.federation_id, reason)

    # -- federation lifecycle ----------------------------------------------------------------------

    def finish(
        self, status: FederationStatus = FederationStatus.COMPLETED, *, message: str | None = None
    ) -> None:
        """Marks the federation run over (completed, cancelled or failed)."""
        if status is FederationStatus.RUNNING:
            raise StateError("A federation cannot be finished as 'running'.")
        with self.database.session() as session:
            federation = session.get_one(Federation, self.federation_id)
            federation.status = status
            federation.message = message
            federation.finished_at = utcnow()
            federation.final_accuracy = _last_accuracy(session, self.federation_id)


def _last_accuracy(session: Session, federation_id: int) -> float | None:
    metrics = session.scalars(
        select(Round.metrics)
        .where(Round.federation_id == federation_id, Round.status == RoundStatus.FINALIZED)
        .order_by(Round.number.desc())
    ).first()
    if not metrics or "accuracy" not in metrics:
        return None
    return float(metrics["accuracy"])


def unfinished_rounds(
    database: Database, same_ledger: Callable[[dict[str, Any]], bool]
) -> dict[int, tuple[int, str]]:
    """Round number -> (federation id, starting model hash) of the round each stopped run
    (killed, failed or cancelled) left unfinished as its last, among the runs whose config
    `same_ledger` accepts; for a round number left by several runs, the latest run's.

    A later run carries such a round's record on from the chain (the chain is the truth: what
    the killed run had not recorded yet, and what happened to the round after it died)."""
    out: dict[int, tuple[int, str]] = {}
    with database.session() as session:
        federations = session.scalars(
            select(Federation).where(Federation.status != FederationStatus.RUNNING).order_by(Federation.id)
        )
        for federation in federations:
            if not same_ledger(dict(federation.config or {})):
                continue
            last = session.scalars(
                select(Round).where(Round.federation_id == federation.id).order_by(Round.number.desc())
            ).first()
            if last is None or last.status is RoundStatus.FINALIZED or not last.previous_hash:
                continue
            out[last.number] = (federation.id, last.previous_hash)
    return out
