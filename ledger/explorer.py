"""A small block explorer over the federation ledger, for the GUI: blocks, transactions, events.

It shows what the chain holds in plain dataclasses, so a widget can list recent blocks, decode
each transaction to the contract function it called, read each event in words (accounts as the
hospital ids they are registered under, bitmaps as the candidates they select), and confirm a
model hash is on record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes

from ledger.client import LedgerClient, LedgerEvent, bitmap_indices


@dataclass(frozen=True)
class TransactionView:
    tx_hash: str
    block_number: int
    sender: str
    to: str | None
    function: str  # the contract function called, 'deploy', or 'transfer'
    gas_used: int
    succeeded: bool


@dataclass(frozen=True)
class BlockView:
    number: int
    block_hash: str
    timestamp: int
    gas_used: int
    transactions: tuple[TransactionView, ...]


def _function_name(client: LedgerClient, tx: Any) -> str:
    if tx["to"] is None:
        return "deploy"
    if str(tx["to"]).lower() != client.address.lower():
        return "transfer"
    try:
        data = tx["input"] if "input" in tx else tx["data"]  # eth-tester names it 'data'
        fn, _ = client.contract.decode_function_input(HexBytes(data))
    except ValueError:
        return "unknown"
    return str(fn.fn_name)


def get_block(client: LedgerClient, number: int) -> BlockView:
    """One block with its transactions decoded."""
    w3 = client.w3
    block = w3.eth.get_block(number, full_transactions=True)
    txs = []
    transactions: list[Any] = list(block["transactions"])  # full transactions, not hashes
    for tx in transactions:
        receipt = w3.eth.get_transaction_receipt(tx["hash"])
        txs.append(
            TransactionView(
                tx_hash=HexBytes(tx["hash"]).to_0x_hex(),
                block_number=number,
                sender=str(tx["from"]),
                to=None if tx["to"] is None else str(tx["to"]),
                function=_function_name(client, tx),
                gas_used=int(receipt["gasUsed"]),
                succeeded=receipt["status"] == 1,
            )
        )
    return BlockView(
        number=number,
        block_hash=HexBytes(block["hash"]).to_0x_hex(),
        timestamp=int(block["timestamp"]),
        gas_used=int(block["gasUsed"]),
        transactions=tuple(txs),
    )


def list_blocks(client: LedgerClient, limit: int = 20, before: int | None = None) -> list[BlockView]:
    """The most recent blocks (newest first), up to `limit`, ending below `before` if given."""
    head = int(client.w3.eth.block_number) if before is None else before - 1
    return [get_block(client, n) for n in range(head, max(head - limit, -1), -1)]


@dataclass(frozen=True)
class EventView:
    """One contract event as a person reads it; `args` keeps the decoded original."""

    name: str
    block_number: int
    tx_hash: str
    log_index: int
    round_number: int | None
    round_id: int | None
    who: str  # the hospital (or coordinator) that acted, "" for a round-wide event
    details: dict[str, Any]  # the other arguments: accounts as hospital ids, bitmaps as candidates
    args: dict[str, Any]


class _Reader:
    """Names accounts and candidate bitmaps from the events seen so far (chain order)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.coordinator: str | None = None
        self.candidates: dict[int, list[str]] = {}  # round id -> candidate ids in commit order

    def name(self, account: Any) -> str:
        text = str(account)
        if self.coordinator is not None and text == self.coordinator:
            return "coordinator"
        return self.names.get(text, text)

    def read(self, e: LedgerEvent) -> EventView:
        a = dict(e.args)
        if e.name == "AuthorityAdded":
            self.names[a["account"]] = a["hospitalId"]
        elif e.name == "CoordinatorChanged":
            self.coordinator = a["coordinator"]
        round_number, round_id = a.pop("roundNumber", None), a.pop("roundId", None)
        who = ""
        for key in ("hospital", "validator", "account", "coordinator"):
            if key in a:
                who = self.name(a.pop(key))
                break
        if e.name.startswith("Authority"):
            a.pop("hospitalId", None)  # `who` names it already
        candidates = self.candidates.get(int(round_id), []) if round_id is not None else []
        if e.name == "CommitsClosed":
            candidates = [self.name(c) for c in a["candidates"]]
            self.candidates[int(round_id)] = candidates
        details: dict[str, Any] = {}
        for key, value in a.items():
            if key == "acceptedBitmap":
                chosen = set(bitmap_indices(int(value)))
                details["accepted"] = [c for i, c in enumerate(candidates) if i in chosen]
                details["rejected"] = [c for i, c in enumerate(candidates) if i not in chosen]
            elif key in ("accepts", "rejects") and len(value) == len(candidates):
                details[key] = dict(zip(candidates, (int(v) for v in value), strict=True))
            elif key in ("candidates", "dropouts", "abstainers", "contributors"):
                details[key] = [self.name(v) for v in value]
            else:
                details[key] = value
        return EventView(e.name, e.block_number, e.tx_hash, e.log_index, round_number,
                         None if round_id is None else int(round_id), who, details, dict(e.args))


def readable_events(events: list[LedgerEvent]) -> list[EventView]:
    """Every event (all of them, in chain order, so names and candidates resolve) in words."""
    reader = _Reader()
    return [reader.read(e) for e in events]


def list_events(client: LedgerClient, limit: int = 100, name: str | None = None) -> list[EventView]:
    """The most recent contract events (newest first) in words, optionally of one kind."""
    views = readable_events(client.events(0, "latest"))
    return [v for v in reversed(views) if name is None or v.name == name][:limit]


def verify_model_hash(client: LedgerClient, model_hash: str) -> bool:
    """True when the hash is a finalised global model or a committed candidate on the ledger."""
    digest = model_hash.lower().removeprefix("0x")
    for event in client.events(
        0, "latest", topics=[[client.event_topic("RoundFinalized"), client.event_topic("Committed")]]
    ):
        if event.args.get("globalHash") == digest or event.args.get("modelHash") == digest:
            return True
    return False
