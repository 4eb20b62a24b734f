"""`Web3Recorder`: the federation engine's recorder on the permissioned Ethereum ledger.

Each step of a round becomes contract transactions: the admin opens, decides, finalises and
aborts; every hospital commits and votes with its own account. Every step first reads what the
chain already holds and sends only what is missing, so a round interrupted by a node outage is
resumed by calling the same step again once the node is back.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from eth_account.signers.local import LocalAccount

from core.federation.interfaces import Recorder
from core.federation.policy import VerificationPolicy
from core.federation.types import Commitment, Decision, Failure, HospitalInfo, RoundOutcome, Vote
from core.models.weights import Weights, to_bytes
from ledger.blobs import BlobStore
from ledger.client import Ballot, LedgerClient, RoundState, scaled, to_bytes32
from ledger.errors import DecisionMismatch, LedgerError, UnknownAccount
from ledger.node import RetryPolicy
from ledger.session import LedgerSession, LedgerSettings, open_ledger

logger = logging.getLogger(__name__)


def share_commitment_bytes(commitment: str) -> bytes:
    """An SMPC share commitment as bytes32: hex digests as they are, other text by its SHA-256."""
    try:
        return to_bytes32(commitment)
    except LedgerError:
        return hashlib.sha256(commitment.encode("utf-8")).digest()


class Web3Recorder(Recorder):
    """Records rounds on the federation contract; model blobs go to the data directory's blob store."""

    name = "ledger"

    def __init__(self, session: LedgerSession, blobs: BlobStore | None = None) -> None:
        self.session = session
        self.client: LedgerClient = session.client
        self.blobs = blobs or BlobStore(session.settings.blob_dir)
        self._accounts: dict[str, LocalAccount] = {}
        self._addresses: dict[str, str] = {}

    @classmethod
    def open(cls, settings: LedgerSettings) -> Web3Recorder:
        """A recorder on the ledger `settings` name (the embedded chain when `rpc_url` is None)."""
        return cls(open_ledger(settings))

    @classmethod
    def embedded(
        cls,
        home: Path,
        *,
        keystore_password: str | None = None,
        keystore_dir: Path | None = None,
        blob_dir: Path | None = None,
    ) -> Web3Recorder:
        """The default: an in-process chain persisted under `home/ledger/chain`."""
        return cls.open(
            LedgerSettings(
                home=home, keystore_password=keystore_password, keystore_path=keystore_dir, blob_path=blob_dir
            )
        )

    @classmethod
    def rpc(
        cls,
        home: Path,
        url: str,
        *,
        keystore_password: str | None = None,
        keystore_dir: Path | None = None,
        blob_dir: Path | None = None,
        contract_address: str | None = None,
        funder: str | None = None,
        receipt_timeout: float = 120.0,
        retry: RetryPolicy | None = None,
    ) -> Web3Recorder:
        """A real JSON-RPC node (Besu/QBFT, anvil); keystores and blobs stay under `home`."""
        settings = LedgerSettings(
            home=home,
            rpc_url=url,
            keystore_password=keystore_password,
            keystore_path=keystore_dir,
            blob_path=blob_dir,
            contract_address=contract_address,
            funder=funder,
            receipt_timeout=receipt_timeout,
            retry=retry or RetryPolicy(),
        )
        return cls.open(settings)

    # -- accounts --

    def account_for(self, hospital_id: str) -> LocalAccount:
        """The hospital's own signing account from its keystore."""
        if hospital_id not in self._accounts:
            if not self.session.keystore.exists(hospital_id):
                raise UnknownAccount(
                    f"Hospital '{hospital_id}' has no ledger account in this data directory.",
                    hospital_id=hospital_id,
                )
            self._accounts[hospital_id] = self.session.keystore.unlock(hospital_id)
        return self._accounts[hospital_id]

    def address_of(self, hospital_id: str) -> str:
        """The hospital's registered ledger address."""
        if hospital_id not in self._addresses:
            address = self.client.account_of_hospital(hospital_id)
            if address is None:
                raise UnknownAccount(
                    f"Hospital '{hospital_id}' is not registered on the ledger.", hospital_id=hospital_id
                )
            self._addresses[hospital_id] = address
        return self._addresses[hospital_id]

    def _operator(self) -> LocalAccount:
        return self.session.admin()

    # -- Recorder --

    def register_hospitals(self, hospitals: Sequence[HospitalInfo]) -> None:
        """Makes the on-chain registry exactly these hospitals, each with its own keystore account.

        The registry is the federation's membership, and every registered authority counts
        towards the majority; hospitals of an earlier run that are not listed are removed.
        """
        admin = self._operator()
        wanted: dict[str, LocalAccount] = {}
        for hospital in hospitals:
            account = self.session.keystore.unlock_or_create(hospital.hospital_id)
            if hospital.account is not None and hospital.account.lower() != account.address.lower():
                raise UnknownAccount(
                    f"Hospital '{hospital.hospital_id}' names an account its keystore does not hold.",
                    hospital_id=hospital.hospital_id,
                    detail=f"{hospital.account} vs {account.address}",
                )
            registered = self.client.account_of_hospital(hospital.hospital_id)
            if registered is not None and registered != account.address:
                raise UnknownAccount(
                    f"Hospital '{hospital.hospital_id}' is registered on the ledger with another account.",
                    hospital_id=hospital.hospital_id,
                    detail=f"ledger {registered}, keystore {account.address}",
                )
            wanted[hospital.hospital_id] = account
        current = set(self.client.authorities())
        stale = current - {a.address for a in wanted.values()}
        missing = [(h, a) for h, a in wanted.items() if a.address not in current]
        if (stale or missing) and self.client.open_round_id():
            # The registry is frozen while a round is open; one left open by an interrupted run goes.
            stale_round = self.client.round(self.client.open_round_id())
            self.client.abort_round(admin, stale_round.number, "the federation's membership changed")
        for address in sorted(stale):
            self.client.remove_authority(admin, address)
        for account in wanted.values():
            self.session.ensure_funded(account.address)
        for hospital_id, account in missing:
            self.client.add_authority(admin, account.address, hospital_id)
        self._accounts.update(wanted)
        self._addresses = {h: a.address for h, a in wanted.items()}

    def remove_hospital(self, hospital_id: str) -> None:
        """Deregisters a hospital (admin only): it no longer counts towards the majority."""
        self.client.remove_authority(self._operator(), self.address_of(hospital_id))
        self._addresses.pop(hospital_id, None)

    def open_round(
        self, round_number: int, global_hash: str, global_weights: Weights, policy: VerificationPolicy
    ) -> None:
        """Opens the round on chain (or resumes the same open round) and stores the starting model."""
        self.blobs.put(to_bytes(global_weights), expected=global_hash)
        operator = self._operator()
        open_id = self.client.open_round_id()
        if open_id:
            current = self.client.round(open_id)
            if (current.number, current.previous_hash, current.policy_digest) == (
                round_number,
                global_hash,
                policy.digest(),
            ):
                logger.info("resuming round %s already open on the ledger", round_number)
                return
            # A round left open by an interrupted run is superseded, and stays on record as aborted.
            self.client.abort_round(
                operator, current.number, f"superseded by a new opening of round {round_number}"
            )
        self.client.open_round(operator, round_number, global_hash, policy.digest())

    def _open_round_id(self, round_number: int) -> int:
        open_id = self.client.open_round_id()
        if not open_id or self.client.round(open_id).number != round_number:
            raise LedgerError(f"Round {round_number} is not open on the ledger.")
        return open_id

    def record_commitment(self, commitment: Commitment) -> None:
        """The hospital commits to its model hash and SMPC share commitments, signed by itself."""
        round_id = self._open_round_id(commitment.round_number)
        account = self.account_for(commitment.hospital_id)
        existing = self.client.commitment(round_id, account.address)
        shares = [share_commitment_bytes(s) for s in commitment.share_commitments]
        if existing is not None:
            if existing[0] != to_bytes32(commitment.model_hash).hex():
                raise LedgerError(
                    f"Hospital '{commitment.hospital_id}' already committed another model in round "
                    f"{commitment.round_number}.",
                    detail=f"ledger {existing[0]}",
                )
            return
        self.client.commit(account, commitment.round_number, commitment.model_hash, shares)

    def record_votes(self, votes: Sequence[Vote]) -> None:
        """Each validator casts its votes (with scores) in one transaction signed by its own account."""
        by_validator: dict[tuple[int, str], list[Vote]] = defaultdict(list)
        for vote in votes:
            by_validator[(vote.round_number, vote.validator_id)].append(vote)
        for (round_number, validator_id), own in by_validator.items():
            round_id = self._open_round_id(round_number)
            account = self.account_for(validator_id)
            ballots: list[Ballot] = []
            already = self.client.votes_by(round_id, account.address)
            for vote in own:
                candidate = self.address_of(vote.candidate_id)
                cast = already.get(candidate)
                if cast is not None:
                    if cast != vote.accept:
                        raise LedgerError(
                            f"'{validator_id}' already voted differently on '{vote.candidate_id}' "
                            f"in round {round_number}."
                        )
                    continue
                s = vote.scores
                ballots.append(
                    Ballot(
                        candidate=candidate,
                        accept=vote.accept,
                        correct=int(s.correct),
                        total=int(s.total),
                        cosine=scaled(s.cosine),
                        norm=scaled(s.norm),
                        reference_accuracy=scaled(s.reference_accuracy),
                        reference_norm=scaled(s.reference_norm),
                    )
                )
            if ballots:
                self.client.vote(account, round_number, ballots)

    def record_decisions(self, decisions: Sequence[Decision]) -> None:
        """Closes voting on chain and raises DecisionMismatch where the chain decided otherwise."""
        if not decisions:
            return
        round_number = decisions[0].round_number
        round_id = self._open_round_id(round_number)
        unverified = {d.unverified for d in decisions}
        if len(unverified) != 1:
            raise LedgerError("A round's decisions must be all verified or all unverified.")
        if not self.client.round(round_id).decided:
            if unverified == {True}:
                # The no-verification baseline: on record as unverified, every candidate taken.
                self.client.decide_unverified(self._operator(), round_number)
            else:
                self.client.decide(self._operator(), round_number)
        tallies = {t.candidate: t for t in self.client.tallies(round_id)}
        for decision in decisions:
            tally = tallies.get(self.address_of(decision.candidate_id))
            if tally is None:
                raise LedgerError(f"'{decision.candidate_id}' has no commitment in round {round_number}.")
            if (
                tally.accepted != decision.accepted
                or tally.model_hash != to_bytes32(decision.model_hash).hex()
            ):
                raise DecisionMismatch(
                    f"The ledger decided '{decision.candidate_id}' in round {round_number} differently "
                    f"from this hospital ({tally.accepts} accepts on chain, {decision.accepts} here).",
                    candidate_id=decision.candidate_id,
                    chain_accepted=tally.accepted,
                    engine_accepted=decision.accepted,
                )

    def record_failure(self, failure: Failure) -> None:
        """A dropped hospital becomes a FailureRecorded event of the open round (logged if none is)."""
        open_id = self.client.open_round_id()
        if not open_id or self.client.round(open_id).number != failure.round_number:
            logger.warning("failure outside an open ledger round: %s", failure)
            return
        topic = self.client.event_topic("FailureRecorded")
        for event in self.client.events(topics=[topic, "0x" + open_id.to_bytes(32, "big").hex()]):
            if (event.args["hospitalId"], event.args["stage"]) == (
                failure.hospital_id[:64],
                failure.stage[:32],
            ):
                return
        self.client.record_failure(
            self._operator(), failure.round_number, failure.hospital_id, failure.stage, failure.message
        )

    def finalize_round(self, outcome: RoundOutcome) -> None:
        """Stores the new global model's blob and seals the round with its hash and contributors."""
        self.blobs.put(to_bytes(outcome.global_weights), expected=outcome.global_hash)
        latest = self.client.latest_round_id(outcome.round_number)
        if latest and latest != self.client.open_round_id():
            recorded = self.client.round(latest)
            if recorded.state == RoundState.FINALIZED and recorded.global_hash == outcome.global_hash:
                return  # finalised before an interruption: nothing left to do
        round_id = self._open_round_id(outcome.round_number)
        operator = self._operator()
        if not self.client.round(round_id).decided:
            self.client.decide(operator, outcome.round_number)
        contributors = [self.address_of(h) for h in outcome.contributors]
        accepted = {t.candidate for t in self.client.tallies(round_id) if t.accepted}
        if set(contributors) != accepted or len(contributors) != len(accepted):
            names = sorted(self.client.hospital_id_of(a) for a in accepted)
            raise LedgerError(
                f"The round's contributors must be exactly its accepted models: {names}.",
                detail=f"engine gave {list(outcome.contributors)}",
            )
        self.client.finalize_round(operator, outcome.round_number, outcome.global_hash, contributors)

    def abort_round(self, round_number: int, reason: str) -> None:
        """Abandons the open round on chain; a round not open there is left as it is."""
        open_id = self.client.open_round_id()
        if open_id and self.client.round(open_id).number == round_number:
            self.client.abort_round(self._operator(), round_number, reason)

    def close(self) -> None:
        self.session.close()

    # -- reads the engine may use --

    def round_state(self, round_number: int) -> RoundState:
        round_id = self.client.latest_round_id(round_number)
        return self.client.round(round_id).state if round_id else RoundState.NONE

    def global_hash(self, round_number: int) -> str | None:
        round_id = self.client.finalized_round_id(round_number)
        return self.client.round(round_id).global_hash if round_id else None
