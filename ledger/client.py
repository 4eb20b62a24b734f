"""A typed client of the federation contract: signed transactions with awaited receipts, reads, events.

Every transaction is signed locally by the account that acts (the admin, or a hospital's own
account) and sent raw, so the same code works on the embedded chain, anvil and Besu. Reverts come
back as `TransactionReverted` with the contract's reason; an unreachable node as `NodeUnavailable`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, TransactionNotFound, Web3RPCError
from web3.types import TxReceipt

from ledger.contract import Artifact, load_artifact
from ledger.errors import LedgerError, ReceiptTimeout, TransactionReverted

logger = logging.getLogger(__name__)

SCALE = 10**6  # scores travel on chain as integers scaled by one million
SCALED_ARGS = frozenset({"cosine", "norm", "referenceAccuracy", "referenceNorm"})  # of the Voted event

ZERO_BYTES32 = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20


class RoundState(IntEnum):
    NONE = 0
    OPEN = 1
    FINALIZED = 2
    ABORTED = 3


@dataclass(frozen=True)
class RoundRecord:
    """The contract's stored view of one round attempt."""

    round_id: int
    number: int
    state: RoundState
    previous_hash: str
    policy_digest: str
    registered: int
    decided: bool
    accepted_count: int
    global_hash: str
    unverified: bool


@dataclass(frozen=True)
class Ballot:
    """One validator's vote on one candidate with the scores behind it, scaled for the chain."""

    candidate: str
    accept: bool
    correct: int
    total: int
    cosine: int
    norm: int
    reference_accuracy: int
    reference_norm: int

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.candidate,
            self.accept,
            self.correct,
            self.total,
            self.cosine,
            self.norm,
            self.reference_accuracy,
            self.reference_norm,
        )


@dataclass(frozen=True)
class Tally:
    """A candidate's standing in a round; `accepted` is meaningful once the round is decided."""

    candidate: str
    model_hash: str
    accepts: int
    rejects: int
    accepted: bool


@dataclass(frozen=True)
class LedgerEvent:
    """One decoded contract event, in chain order."""

    name: str
    block_number: int
    tx_hash: str
    log_index: int
    args: dict[str, Any]


def readable_args(event: LedgerEvent) -> dict[str, Any]:
    """An event's arguments as a person reads them: scaled scores back to decimals."""
    return {key: value / SCALE if key in SCALED_ARGS and isinstance(value, int) else value
            for key, value in event.args.items()}


def await_receipt(w3: Web3, tx_hash: bytes, *, timeout: float, endpoint: str) -> TxReceipt:
    """Waits for a transaction's receipt; raises ReceiptTimeout when it is not mined in time."""
    try:
        return w3.eth.wait_for_transaction_receipt(HexBytes(tx_hash), timeout=timeout, poll_latency=0.05)
    except TimeExhausted as exc:
        raise ReceiptTimeout(
            "The ledger did not confirm a transaction in time; it may confirm later. "
            "Resume the round once the node is healthy.",
            endpoint=endpoint,
            tx_hash=HexBytes(tx_hash).to_0x_hex(),
        ) from exc


def to_bytes32(hex_digest: str, *, what: str = "hash") -> bytes:
    """A hex SHA-256 (with or without 0x) as 32 bytes; anything else is refused here."""
    text = hex_digest[2:] if hex_digest.startswith(("0x", "0X")) else hex_digest
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise LedgerError(f"The {what} is not a hex SHA-256 digest.", detail=repr(hex_digest)) from exc
    if len(raw) != 32:
        raise LedgerError(f"The {what} is not a hex SHA-256 digest.", detail=repr(hex_digest))
    return raw


def from_bytes32(raw: bytes) -> str:
    return bytes(raw).hex()


def scaled(value: float) -> int:
    return int(round(value * SCALE))


class LedgerClient:
    """The federation contract at `address` on the node behind `w3`."""

    def __init__(
        self,
        w3: Web3,
        address: str,
        *,
        endpoint: str,
        receipt_timeout: float = 120.0,
        artifact: Artifact | None = None,
    ) -> None:
        self.w3 = w3
        self.endpoint = endpoint
        self.receipt_timeout = receipt_timeout
        self.artifact = artifact or load_artifact()
        self.address = to_checksum_address(address)
        self.contract: Contract = w3.eth.contract(address=self.address, abi=self.artifact.abi)
        self._chain_id: int | None = None
        self._topics = {
            HexBytes(Web3.keccak(text=_signature(e))): e["name"]
            for e in self.artifact.abi
            if e["type"] == "event"
        }

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    # -- deployment --

    @classmethod
    def deploy(
        cls, w3: Web3, admin: LocalAccount, *, endpoint: str, receipt_timeout: float = 120.0
    ) -> tuple[LedgerClient, TxReceipt]:
        """Deploys a fresh federation contract whose admin is `admin`."""
        artifact = load_artifact()
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = transact(
            w3,
            admin,
            factory.constructor(),
            "deploy",
            timeout=receipt_timeout,
            endpoint=endpoint,
            chain_id=int(w3.eth.chain_id),
        )
        address = receipt["contractAddress"]
        if not address:
            raise LedgerError("The node did not report the federation contract's address.")
        return cls(
            w3, address, endpoint=endpoint, receipt_timeout=receipt_timeout, artifact=artifact
        ), receipt

    def has_code(self) -> bool:
        return len(self.w3.eth.get_code(self.address)) > 0

    # -- transactions --

    def _transact(self, account: LocalAccount, call: Any, function: str) -> TxReceipt:
        return transact(
            self.w3,
            account,
            call,
            function,
            timeout=self.receipt_timeout,
            endpoint=self.endpoint,
            chain_id=self.chain_id,
        )

    def add_authority(self, admin: LocalAccount, account: str, hospital_id: str) -> TxReceipt:
        return self._transact(
            admin, self.contract.functions.addAuthority(account, hospital_id), "addAuthority"
        )

    def remove_authority(self, admin: LocalAccount, account: str) -> TxReceipt:
        return self._transact(admin, self.contract.functions.removeAuthority(account), "removeAuthority")

    def set_coordinator(self, admin: LocalAccount, account: str) -> TxReceipt:
        return self._transact(admin, self.contract.functions.setCoordinator(account), "setCoordinator")

    def open_round(
        self, operator: LocalAccount, number: int, previous_hash: str, policy_digest: str
    ) -> TxReceipt:
        fn = self.contract.functions.openRound(
            number,
            to_bytes32(previous_hash, what="global-model hash"),
            to_bytes32(policy_digest, what="policy digest"),
        )
        return self._transact(operator, fn, "openRound")

    def commit(
        self, hospital: LocalAccount, number: int, model_hash: str, shares: Sequence[bytes]
    ) -> TxReceipt:
        fn = self.contract.functions.commit(number, to_bytes32(model_hash, what="model hash"), list(shares))
        return self._transact(hospital, fn, "commit")

    def vote(self, validator: LocalAccount, number: int, ballots: Sequence[Ballot]) -> TxReceipt:
        fn = self.contract.functions.vote(number, [b.as_tuple() for b in ballots])
        return self._transact(validator, fn, "vote")

    def decide(self, operator: LocalAccount, number: int) -> TxReceipt:
        return self._transact(operator, self.contract.functions.decide(number), "decide")

    def decide_unverified(self, operator: LocalAccount, number: int) -> TxReceipt:
        return self._transact(operator, self.contract.functions.decideUnverified(number), "decideUnverified")

    def record_failure(
        self, operator: LocalAccount, number: int, hospital_id: str, stage: str, message: str
    ) -> TxReceipt:
        fn = self.contract.functions.recordFailure(
            number, _clip(hospital_id, 64), _clip(stage, 32), _clip(message, 256)
        )
        return self._transact(operator, fn, "recordFailure")

    def finalize_round(
        self, operator: LocalAccount, number: int, global_hash: str, contributors: Sequence[str]
    ) -> TxReceipt:
        fn = self.contract.functions.finalizeRound(
            number, to_bytes32(global_hash, what="global-model hash"), list(contributors)
        )
        return self._transact(operator, fn, "finalizeRound")

    def abort_round(self, operator: LocalAccount, number: int, reason: str) -> TxReceipt:
        return self._transact(
            operator, self.contract.functions.abortRound(number, _clip(reason, 256)), "abortRound"
        )

    # -- reads --

    def admin(self) -> str:
        return str(self.contract.functions.admin().call())

    def coordinator(self) -> str:
        return str(self.contract.functions.coordinator().call())

    def authorities(self) -> list[str]:
        return [to_checksum_address(a) for a in self.contract.functions.listAuthorities().call()]

    def is_authority(self, account: str) -> bool:
        return bool(self.contract.functions.isAuthority(account).call())

    def hospital_id_of(self, account: str) -> str:
        return str(self.contract.functions.hospitalIdOf(account).call())

    def account_of_hospital(self, hospital_id: str) -> str | None:
        address = self.contract.functions.accountOfHospital(Web3.keccak(text=hospital_id)).call()
        return None if int(address, 16) == 0 else to_checksum_address(address)

    def open_round_id(self) -> int:
        return int(self.contract.functions.openRoundId().call())

    def round_count(self) -> int:
        return int(self.contract.functions.roundCount().call())

    def latest_round_id(self, number: int) -> int:
        return int(self.contract.functions.latestRoundIdOf(number).call())

    def finalized_round_id(self, number: int) -> int:
        return int(self.contract.functions.finalizedRoundIdOf(number).call())

    def round(self, round_id: int) -> RoundRecord:
        (number, state, previous, policy, registered, decided, accepted_count, global_hash, unverified) = (
            self.contract.functions.rounds(round_id).call()
        )
        return RoundRecord(
            round_id=round_id,
            number=int(number),
            state=RoundState(int(state)),
            previous_hash=from_bytes32(previous),
            policy_digest=from_bytes32(policy),
            registered=int(registered),
            decided=bool(decided),
            accepted_count=int(accepted_count),
            global_hash=from_bytes32(global_hash),
            unverified=bool(unverified),
        )

    def commitment(self, round_id: int, account: str) -> tuple[str, str, int] | None:
        """(model hash, shares digest, share count) of a hospital's commitment, or None."""
        model_hash, shares_digest, count = self.contract.functions.commitments(round_id, account).call()
        if bytes(model_hash) == ZERO_BYTES32:
            return None
        return from_bytes32(model_hash), from_bytes32(shares_digest), int(count)

    def vote_of(self, round_id: int, candidate: str, validator: str) -> bool | None:
        """True (accept), False (reject) or None (no vote yet)."""
        value = int(self.contract.functions.voteOf(round_id, candidate, validator).call())
        return None if value == 0 else value == 1

    def tally(self, round_id: int, candidate: str) -> tuple[int, int, bool]:
        """(accepts, rejects, accepted) of a candidate as the contract counts them."""
        f = self.contract.functions
        return (
            int(f.accepts(round_id, candidate).call()),
            int(f.rejects(round_id, candidate).call()),
            bool(f.accepted(round_id, candidate).call()),
        )

    def votes_by(self, round_id: int, validator: str) -> dict[str, bool]:
        """The validator's votes cast so far in the round: candidate -> accept."""
        codes = self.contract.functions.votesBy(round_id, validator).call()
        return {c: code == 1 for c, code in zip(self.candidates(round_id), codes, strict=True) if code}

    def tallies(self, round_id: int) -> list[Tally]:
        """Every candidate of the round with its model hash, counts and acceptance, in commit order."""
        return [
            Tally(to_checksum_address(c), from_bytes32(h), int(a), int(r), bool(ok))
            for c, h, a, r, ok in self.contract.functions.talliesOf(round_id).call()
        ]

    def candidates(self, round_id: int) -> list[str]:
        return [to_checksum_address(a) for a in self.contract.functions.candidatesOf(round_id).call()]

    def contributors(self, round_id: int) -> list[str]:
        return [to_checksum_address(a) for a in self.contract.functions.contributorsOf(round_id).call()]

    # -- events --

    def events(
        self, from_block: int = 0, to_block: int | str = "latest", *, topics: list[Any] | None = None
    ) -> list[LedgerEvent]:
        """Every event of the contract in the block range, decoded, in chain order."""
        params: dict[str, Any] = {"address": self.address, "fromBlock": from_block, "toBlock": to_block}
        if topics:
            params["topics"] = [_hex_topic(t) for t in topics]
        logs = self.w3.eth.get_logs(params)  # type: ignore[arg-type]
        out: list[LedgerEvent] = []
        for log in logs:
            name = self._topics.get(HexBytes(log["topics"][0]))
            if name is None:
                continue
            decoded = self.contract.events[name]().process_log(log)
            out.append(
                LedgerEvent(
                    name=name,
                    block_number=int(log["blockNumber"]),
                    tx_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
                    log_index=int(log["logIndex"]),
                    args={k: _plain(v) for k, v in decoded["args"].items()},
                )
            )
        out.sort(key=lambda e: (e.block_number, e.log_index))
        return out

    def event_topic(self, name: str) -> HexBytes:
        return next(t for t, n in self._topics.items() if n == name)


def transact(
    w3: Web3, account: LocalAccount, call: Any, function: str, *, timeout: float, endpoint: str, chain_id: int
) -> TxReceipt:
    """Builds, signs (locally, by `account`) and sends one contract transaction; waits for its receipt."""
    try:
        tx = call.build_transaction(
            {
                "from": account.address,
                "nonce": w3.eth.get_transaction_count(account.address, "pending"),
                "chainId": chain_id,
            }
        )
    except ContractLogicError as exc:
        raise _reverted(function, exc) from exc
    signed = account.sign_transaction(tx)
    tx_hash = HexBytes(signed.hash)
    try:
        w3.eth.send_raw_transaction(signed.raw_transaction)
    except Web3RPCError as exc:
        # A retried send may find its first attempt already in the pool or mined.
        if not _known(w3, tx_hash):
            raise LedgerError("The ledger node refused a transaction.", detail=f"{function}: {exc}") from exc
    receipt = await_receipt(w3, tx_hash, timeout=timeout, endpoint=endpoint)
    if receipt["status"] != 1:
        reason = _replay_reason(w3, tx, receipt)
        raise TransactionReverted(
            f"The ledger contract refused '{function}': {reason}.", reason=reason, function=function
        )
    logger.debug("%s mined in block %s, gas %s", function, receipt["blockNumber"], receipt["gasUsed"])
    return receipt


def _known(w3: Web3, tx_hash: HexBytes) -> bool:
    try:
        w3.eth.get_transaction(tx_hash)
    except TransactionNotFound:
        return False
    return True


def _replay_reason(w3: Web3, tx: dict[str, Any], receipt: TxReceipt) -> str:
    """The revert reason of a mined failed transaction, re-executed on the state before it."""
    call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
    try:
        w3.eth.call(call, block_identifier=receipt["blockNumber"] - 1)  # type: ignore[arg-type]
    except ContractLogicError as exc:
        return _reason(exc)
    return "reverted (no reason given)"


def _signature(event_abi: dict[str, Any]) -> str:
    return f"{event_abi['name']}({','.join(_abi_type(i) for i in event_abi['inputs'])})"


def _abi_type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item["components"]) + ")" + item["type"][5:]
    return str(item["type"])


def _hex_topic(topic: Any) -> Any:
    """Topics as 0x-hex strings (or lists of them), the form every node accepts."""
    if topic is None or isinstance(topic, str):
        return topic
    if isinstance(topic, list | tuple):
        return [_hex_topic(t) for t in topic]
    return HexBytes(topic).to_0x_hex()


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | HexBytes):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _clip(text: str, limit: int) -> str:
    """Shortens text to at most `limit` UTF-8 bytes, the contract's string bound."""
    raw = text.encode("utf-8")[:limit]
    return raw.decode("utf-8", errors="ignore")


def _reason(exc: ContractLogicError) -> str:
    message = str(exc.message if getattr(exc, "message", None) else exc)
    prefix = "execution reverted: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _reverted(function: str, exc: ContractLogicError) -> TransactionReverted:
    reason = _reason(exc)
    return TransactionReverted(
        f"The ledger contract refused '{function}': {reason}.", reason=reason, function=function
    )
