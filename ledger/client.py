"""A typed client of the federation contract (v2, the round's state machine): signed transactions
with awaited receipts, reads, events.

Every transaction is signed locally by the account that acts (the admin, the coordinator, or a
hospital's own account) and sent raw, so the same code works on the embedded chain, anvil and
Besu. Reverts come back as `TransactionReverted` with the contract's reason; an unreachable node
as `NodeUnavailable`.
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

ZERO_BYTES32 = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
BITMAP_ARGS = frozenset({"acceptedBitmap"})  # of the Voted and Decided events


class RoundPhase(IntEnum):
    """The contract's phase of a round attempt (`NONE`: no such round id)."""

    NONE = 0
    COMMIT = 1
    VOTE = 2
    AGGREGATE = 3
    FINAL = 4
    ABORTED = 5


@dataclass(frozen=True)
class RoundRecord:
    """The contract's stored view of one round attempt; bitmaps as the contract keeps them."""

    round_id: int
    number: int
    phase: RoundPhase
    previous_hash: str
    policy_digest: str
    registered: int
    commit_deadline: int
    vote_deadline: int
    final_deadline: int
    verified: bool
    opened_block: int
    committed: int  # bitmap by authority position
    candidate_count: int
    voted: int  # bitmap by authority position
    accepted: int  # bitmap by candidate index (commit order)
    global_hash: str


@dataclass(frozen=True)
class MemberRecord:
    """A registered hospital as the contract lists it."""

    account: str
    hospital_id: str
    store_url: str


@dataclass(frozen=True)
class CoordinatorRecord:
    account: str | None  # None: no coordinator named yet
    store_url: str


@dataclass(frozen=True)
class LedgerEvent:
    """One decoded contract event, in chain order."""

    name: str
    block_number: int
    tx_hash: str
    log_index: int
    args: dict[str, Any]


def bitmap_indices(bitmap: int) -> list[int]:
    """The set bits of a bitmap, lowest first (candidate indices in commit order)."""
    return [i for i in range(bitmap.bit_length()) if bitmap >> i & 1]


def readable_args(event: LedgerEvent) -> dict[str, Any]:
    """An event's arguments as a person reads them: bitmaps as the candidate indices they set."""
    return {key: bitmap_indices(value) if key in BITMAP_ARGS and isinstance(value, int) else value
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

    def code_hash(self) -> str:
        """keccak256 of the deployed runtime code (hex): what a provisioning kit pins."""
        return bytes(Web3.keccak(self.w3.eth.get_code(self.address))).hex()

    # -- transactions: registry (the admin) --

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

    def add_authority(self, admin: LocalAccount, account: str, hospital_id: str, store_url: str = "") -> TxReceipt:
        fn = self.contract.functions.addAuthority(account, hospital_id, _clip(store_url, 256))
        return self._transact(admin, fn, "addAuthority")

    def remove_authority(self, admin: LocalAccount, account: str) -> TxReceipt:
        return self._transact(admin, self.contract.functions.removeAuthority(account), "removeAuthority")

    def set_coordinator(self, admin: LocalAccount, account: str, store_url: str = "") -> TxReceipt:
        fn = self.contract.functions.setCoordinator(account, _clip(store_url, 256))
        return self._transact(admin, fn, "setCoordinator")

    # -- transactions: rounds --

    def open_round(
        self,
        coordinator: LocalAccount,
        number: int,
        previous_hash: str,
        policy_digest: str,
        commit_deadline: int,
        vote_deadline: int,
        final_deadline: int,
        *,
        verified: bool = True,
    ) -> TxReceipt:
        fn = self.contract.functions.openRound(
            number,
            to_bytes32(previous_hash, what="global-model hash"),
            to_bytes32(policy_digest, what="policy digest"),
            commit_deadline,
            vote_deadline,
            final_deadline,
            verified,
        )
        return self._transact(coordinator, fn, "openRound")

    def commit(
        self, hospital: LocalAccount, number: int, model_hash: str, num_samples: int, shares: Sequence[str] = ()
    ) -> TxReceipt:
        fn = self.contract.functions.commit(
            number,
            to_bytes32(model_hash, what="model hash"),
            num_samples,
            [to_bytes32(s, what="share commitment") for s in shares],
        )
        return self._transact(hospital, fn, "commit")

    def close_commits(self, sender: LocalAccount, number: int) -> TxReceipt:
        return self._transact(sender, self.contract.functions.closeCommits(number), "closeCommits")

    def vote(self, validator: LocalAccount, number: int, accepted_bitmap: int, scores_hash: str) -> TxReceipt:
        fn = self.contract.functions.vote(number, accepted_bitmap, to_bytes32(scores_hash, what="scores hash"))
        return self._transact(validator, fn, "vote")

    def decide(self, sender: LocalAccount, number: int) -> TxReceipt:
        return self._transact(sender, self.contract.functions.decide(number), "decide")

    def finalize_round(
        self, coordinator: LocalAccount, number: int, global_hash: str, contributors: Sequence[str]
    ) -> TxReceipt:
        fn = self.contract.functions.finalizeRound(
            number, to_bytes32(global_hash, what="global-model hash"), list(contributors)
        )
        return self._transact(coordinator, fn, "finalizeRound")

    def abort_round(self, sender: LocalAccount, number: int, reason: str) -> TxReceipt:
        return self._transact(
            sender, self.contract.functions.abortRound(number, _clip(reason, 256)), "abortRound"
        )

    # -- reads --

    def admin(self) -> str:
        return to_checksum_address(self.contract.functions.admin().call())

    def coordinator(self) -> CoordinatorRecord:
        f = self.contract.functions
        account = f.coordinator().call()
        return CoordinatorRecord(
            None if int(account, 16) == 0 else to_checksum_address(account), str(f.coordinatorStoreUrl().call())
        )

    def members(self, *, block: int | str = "latest") -> list[MemberRecord]:
        """The registered hospitals (as of `block`) in authority-position order, the order of the
        contract's bitmaps."""
        return [MemberRecord(to_checksum_address(a), str(h), str(u)) for a, h, u in
                self.contract.functions.members().call(block_identifier=block)]

    def authorities(self) -> list[str]:
        return [m.account for m in self.members()]

    def hospital_id_of(self, account: str) -> str:
        """The hospital id an account is (or was, once removed) registered under; "" if never."""
        return str(self.contract.functions.hospitalIdOf(account).call())

    def account_of_hospital(self, hospital_id: str) -> str | None:
        address = self.contract.functions.accountOfHospital(Web3.keccak(text=hospital_id)).call()
        return None if int(address, 16) == 0 else to_checksum_address(address)

    def open_round_id(self) -> int:
        return int(self.contract.functions.openRoundId().call())

    def round_count(self) -> int:
        """How many round attempts were ever opened: the latest round id."""
        return int(self.contract.functions.roundCount().call())

    def latest_round_id(self, number: int) -> int:
        return int(self.contract.functions.latestRoundIdOf(number).call())

    def round(self, round_id: int) -> RoundRecord:
        (number, phase, previous, policy, registered, commit_deadline, vote_deadline, final_deadline,
         verified, opened_block, committed, candidate_count, voted, accepted, global_hash) = (
            self.contract.functions.rounds(round_id).call()
        )
        return RoundRecord(
            round_id=round_id,
            number=int(number),
            phase=RoundPhase(int(phase)),
            previous_hash=from_bytes32(previous),
            policy_digest=from_bytes32(policy),
            registered=int(registered),
            commit_deadline=int(commit_deadline),
            vote_deadline=int(vote_deadline),
            final_deadline=int(final_deadline),
            verified=bool(verified),
            opened_block=int(opened_block),
            committed=int(committed),
            candidate_count=int(candidate_count),
            voted=int(voted),
            accepted=int(accepted),
            global_hash=from_bytes32(global_hash),
        )

    def candidates(self, round_id: int) -> list[str]:
        """The round's candidates in commit order, mapped through today's registry; past rounds
        read them from their CommitsClosed event instead."""
        return [to_checksum_address(a) for a in self.contract.functions.candidatesOf(round_id).call()]

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
