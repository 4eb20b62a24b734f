"""Ledger benchmark: transactions per second and gas per round, embedded chain vs anvil, 5 and 20 hospitals.

Runs whole rounds through `Web3Recorder` (open, commit, vote, decide, finalise) as the engine does
and prints one JSON document. Usage: `python bench/ledger.py [--hospitals 5 20] [--rounds 2]
[--backends embedded anvil]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.anvil import AnvilNode  # noqa: E402
from ledger.explorer import get_block  # noqa: E402
from ledger.recorder import Web3Recorder  # noqa: E402
from ledger.session import LedgerSettings  # noqa: E402
from tests.ledger.rounds import honest_except, hospitals, initial_weights, plan_round, record  # noqa: E402

SCRYPT_N = 2**12  # keystore unlock cost is not what this measures


def run(backend: str, n: int, rounds: int, work: Path) -> dict[str, Any]:
    node = AnvilNode(state_file=work / "anvil.json").start() if backend == "anvil" else None
    try:
        settings = LedgerSettings(
            home=work / "home",
            rpc_url=node.url if node else None,
            keystore_password="bench",
            scrypt_n=SCRYPT_N,
        )
        start = time.perf_counter()
        recorder = Web3Recorder.open(settings)
        members = hospitals(n)
        recorder.register_hospitals(members)
        setup_s = time.perf_counter() - start
        w3 = recorder.client.w3
        first_block = w3.eth.block_number + 1
        weights = initial_weights()
        # hospital-0 is rejected by everyone: every round has a rejected candidate too
        start = time.perf_counter()
        for number in range(1, rounds + 1):
            planned = plan_round(number, weights, members, honest_except("hospital-0"))
            record(recorder, planned)
            weights = planned.outcome.global_weights
        elapsed = time.perf_counter() - start
        gas_by_function: dict[str, list[int]] = defaultdict(list)
        txs = 0
        for number in range(first_block, w3.eth.block_number + 1):
            for tx in get_block(recorder.client, number).transactions:
                gas_by_function[tx.function].append(tx.gas_used)
                txs += 1
        recorder.close()
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
