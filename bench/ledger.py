"""Ledger benchmark: whole rounds through `LedgerChannel`, embedded chain vs anvil, 5 and 20 hospitals.

Each round is what the roles do on a real federation: the coordinator opens it, every hospital
commits, the coordinator closes the commits, every hospital votes (hospital-00 is rejected by
all, so each round has a rejected candidate), the coordinator decides and finalises. Prints one
JSON document with transactions, transactions per second, gas per function and gas per
hospital per round (the contract's goal: at most 150k at 20 hospitals).
Usage: `python bench/ledger.py [--hospitals 5 20] [--rounds 2] [--backends embedded anvil]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.federation.channel import COORDINATOR, RoundTiming  # noqa: E402
from ledger.anvil import AnvilNode  # noqa: E402
from core.state.blobs import BlobStore  # noqa: E402
from ledger.channel import LedgerChannel  # noqa: E402
from ledger.clock import BlockClock, EmbeddedClock, NodeClock  # noqa: E402
from ledger.session import LedgerSession, LedgerSettings, open_ledger  # noqa: E402

SCRYPT_N = 2**12  # keystore unlock cost is not what this measures
TIMING = RoundTiming(commit_seconds=3600, vote_seconds=3600, aggregate_seconds=3600)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def federation(session: LedgerSession, n: int, work: Path) -> dict[str, LedgerChannel]:
    """Registers n hospitals and a coordinator, each with its own keystore account."""
    admin = session.admin()
    clock: BlockClock = (EmbeddedClock(session.chain) if session.chain is not None
                         else NodeClock(session.w3, endpoint=session.endpoint))
    client = session.client
    accounts = {}
    for identity in [COORDINATOR] + [f"hospital-{i:02d}" for i in range(n)]:
        accounts[identity] = session.keystore.unlock_or_create(identity)
        session.ensure_funded(accounts[identity].address)
    client.set_coordinator(admin, accounts[COORDINATOR].address, "")
    for identity, account in accounts.items():
        if identity != COORDINATOR:
            client.add_authority(admin, account.address, identity, "")
    return {identity: LedgerChannel(client, identity, account, BlobStore(work / "blobs" / identity), clock=clock)
            for identity, account in accounts.items()}


def play_round(channels: dict[str, LedgerChannel], number: int, previous: str) -> str:
    coord = channels[COORDINATOR]
    hospitals = [c for c in channels if c != COORDINATOR]
    coord.open_round(number, previous, digest("policy"), TIMING)
    for i, hid in enumerate(hospitals):
        channels[hid].commit(number, digest(f"{hid} {number}"), 100 + i, [digest(f"share {hid} {number}")])
    coord.close_commits(number)
    accepted = hospitals[1:]
    for hid in hospitals:
        channels[hid].vote(number, accepted, digest(f"scores {hid} {number}"))
    coord.decide(number)
    global_hash = digest(f"global {number}")
    coord.finalize(number, global_hash, accepted)
    return global_hash


def run(backend: str, n: int, rounds: int, work: Path) -> dict[str, Any]:
    node = AnvilNode(state_file=work / "anvil.json").start() if backend == "anvil" else None
    try:
        settings = LedgerSettings(home=work / "home", rpc_url=node.url if node else None,
                                  keystore_password="bench", scrypt_n=SCRYPT_N)
        session = open_ledger(settings)
        start = time.perf_counter()
        channels = federation(session, n, work)
        setup_s = time.perf_counter() - start
        w3 = session.w3
        first_block = w3.eth.block_number + 1
        previous = digest("initial model")
        start = time.perf_counter()
        for number in range(1, rounds + 1):
            previous = play_round(channels, number, previous)
        elapsed = time.perf_counter() - start
        contract = session.client.contract
        gas_by_function: dict[str, list[int]] = defaultdict(list)
        for block_number in range(first_block, w3.eth.block_number + 1):
            for tx in w3.eth.get_block(block_number, full_transactions=True)["transactions"]:
                receipt = w3.eth.get_transaction_receipt(tx["hash"])  # type: ignore[index]
                function = contract.get_function_by_selector(bytes(tx.get("input", tx.get("data")))[:4]).fn_name  # type: ignore[index]
                gas_by_function[function].append(int(receipt["gasUsed"]))
        session.close()
        txs = sum(len(v) for v in gas_by_function.values())
        total_gas = sum(sum(v) for v in gas_by_function.values())
        return {
            "backend": backend,
            "hospitals": n,
            "rounds": rounds,
            "setup_seconds": round(setup_s, 3),
            "round_seconds": round(elapsed / rounds, 3),
            "transactions_per_round": txs // rounds,
            "transactions_per_second": round(txs / elapsed, 1),
            "gas_per_round": total_gas // rounds,
            "gas_per_hospital": total_gas // rounds // n,
            "gas_per_transaction": {k: sum(v) // len(v) for k, v in sorted(gas_by_function.items())},
        }
    finally:
        if node is not None:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hospitals", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["embedded", "anvil"], choices=["embedded", "anvil"])
    args = parser.parse_args()
    results = []
    for backend in args.backends:
        for n in args.hospitals:
            with tempfile.TemporaryDirectory(prefix="medfed-bench-") as work:
                results.append(run(backend, n, args.rounds, Path(work)))
    json.dump({"benchmark": "ledger", "results": results}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
