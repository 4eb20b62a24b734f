"""A small block explorer over the federation ledger, for the GUI: blocks, transactions, events.

It shows what the chain holds in plain dataclasses, so a widget can list recent blocks, decode
each transaction to the contract function it called, and confirm a model hash is on record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes

from ledger.client import LedgerClient, LedgerEvent


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


def list_events(client: LedgerClient, limit: int = 100, name: str | None = None) -> list[LedgerEvent]:
    """The most recent decoded contract events (newest first), optionally of one kind."""
    topics = [client.event_topic(name)] if name else None
    events = client.events(0, "latest", topics=topics)
    return list(reversed(events))[:limit]


def verify_model_hash(client: LedgerClient, model_hash: str) -> bool:
    """True when the hash is a finalised global model or a committed candidate on the ledger."""
    digest = model_hash.lower().removeprefix("0x")
    for event in client.events(
        0, "latest", topics=[[client.event_topic("RoundFinalized"), client.event_topic("Committed")]]
    ):
        if event.args.get("globalHash") == digest or event.args.get("modelHash") == digest:
            return True
    return False
