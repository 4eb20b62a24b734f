"""Benchmark of the SMPC layer: encrypted verification and secure aggregation against their
plaintext counterparts, for both CNNs, and a whole secure round of 5 hospitals.

    python bench/smpc.py [--batch-size 64] [--rows 128]

Prints one JSON document. Each architecture runs in a child process so its peak memory
(ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _median_time(fn, repeats: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _case(architecture: str, batch_size: int, rows: int, protocol: str) -> dict:
    import numpy as np

    from core.data.dataset import DataKind, Dataset
    from core.federation.aggregators import FedAvg
    from core.federation.types import Candidate, ValidatorInput
    from core.models.architecture import image_cnn_spec, tabular_cnn_spec
    from core.models.keras_builder import build_keras_model
    from core.models.weights import add, parameter_count, weights_hash
    from core.progress import CancelToken, ignore_progress
    from smpc.factory import build_in_process

    rng = np.random.default_rng(0)
    if architecture == "tabular_cnn":
        spec = tabular_cnn_spec(30, 2)

        def data(n: int, seed: int) -> Dataset:
            r = np.random.default_rng(seed)
            return Dataset(
                "bench",
                DataKind.TABLE,
                r.normal(size=(n, 30)).astype(np.float32),
                r.integers(0, 2, n),
                ("a", "b"),
            )
    else:
        spec = image_cnn_spec((28, 28, 1), 2)

        def data(n: int, seed: int) -> Dataset:
            r = np.random.default_rng(seed)
            return Dataset(
                "bench",
                DataKind.IMAGE,
                r.uniform(size=(n, 28, 28, 1)).astype(np.float32),
                r.integers(0, 2, n),
                ("a", "b"),
            )

    model = build_keras_model(spec, seed=0)
    glob = model.get_weights()
    hospitals = 5
    candidates = []
    for i in range(hospitals):
        delta = [rng.normal(scale=0.02, size=w.shape).astype(np.float32) for w in glob]
        candidates.append(Candidate(f"h{i}", 1, delta, 100 + i, weights_hash(add(glob, delta))))
    recorded: dict = {}
    fed = build_in_process(spec, lambda n, h: recorded[(n, h)].share_commitments, protocol=protocol,
                           batch_size=batch_size)
    owners = {c.hospital_id: fed.owner(c.hospital_id) for c in candidates}

    def share_round(n: int, cands: list, validators: dict) -> None:
        for c in cands:
            owners[c.hospital_id].begin_round(n, glob)
            recorded[(n, c.hospital_id)] = owners[c.hospital_id].commit(c, validators.get(c.hospital_id))

    # One candidate on one validation batch, warm: encrypted vs Keras `model(x)`.
    batch = data(batch_size, 1)
    x = batch.x
    plain_s = _median_time(lambda: model(x, training=False), 20)
    share_round(1, candidates, {"h0": ValidatorInput("h0", batch, candidates[0].delta)})
    secure_s = _median_time(
        lambda: fed.driver.score_round(1, 0, glob, ["h0"], ignore_progress, CancelToken()), 3)

    commitments = [recorded[(1, c.hospital_id)] for c in candidates]
    fed.driver.score_round(1, 0, glob, [c.hospital_id for c in candidates], ignore_progress, CancelToken())
    fedavg = FedAvg()
    plain_agg_s = _median_time(lambda: fedavg.aggregate(glob, candidates, commitments), 20)
    blind = [dataclasses.replace(c, delta=[]) for c in candidates]
    secure_agg_s = _median_time(lambda: fed.driver.aggregate(glob, blind, commitments), 5)

    # A whole secure round: 5 hospitals share their update and validation rows, the driver
    # scores every candidate for every validator, each collects its scores, then aggregation.
    validators = {f"h{i}": ValidatorInput(f"h{i}", data(rows, 10 + i), candidates[i].delta)
                  for i in range(hospitals)}
    start = time.perf_counter()
    round_candidates = [dataclasses.replace(c, round_number=2) for c in candidates]
    share_round(2, round_candidates, validators)
    fed.driver.score_round(2, 0, glob, [c.hospital_id for c in round_candidates], ignore_progress, CancelToken())
    for c in round_candidates:
        owners[c.hospital_id].score(round_candidates, [validators[c.hospital_id]], ignore_progress, CancelToken())
    fed.driver.aggregate(glob, [dataclasses.replace(c, delta=[]) for c in round_candidates],
                         [recorded[(2, c.hospital_id)] for c in round_candidates])
    round_s = time.perf_counter() - start
    fed.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {
        "architecture": architecture,
        "protocol": protocol,
        "player_mode": "in-process",
        "batch_size": batch_size,
        "parameters": parameter_count(glob),
        "verification": {
            "secure_s": secure_s,
            "plaintext_keras_s": plain_s,
            "ratio": secure_s / plain_s,
            "goal_ratio": 10,
        },
        "aggregation": {
            "candidates": hospitals,
            "secure_s": secure_agg_s,
            "plaintext_fedavg_s": plain_agg_s,
            "ratio": secure_agg_s / plain_agg_s,
            "goal_ratio": 3,
        },
        "round": {
            "hospitals": hospitals,
            "validation_rows_per_hospital": rows,
            "pairs": hospitals * hospitals,
            "seconds": round_s,
            "peak_rss_mb": peak_mb,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rows", type=int, default=128, help="validation rows per hospital in the round")
    parser.add_argument("--protocol", default="securenn")
    parser.add_argument("--architecture", choices=["tabular_cnn", "image_cnn"], default=None)
    args = parser.parse_args(argv)
    if args.architecture:
        print(json.dumps(_case(args.architecture, args.batch_size, args.rows, args.protocol)))
        return 0
    results = []
    for architecture in ("tabular_cnn", "image_cnn"):
        cmd = [
            sys.executable,
            __file__,
            "--architecture",
            architecture,
            "--batch-size",
            str(args.batch_size),
            "--rows",
            str(args.rows),
            "--protocol",
            args.protocol,
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "smpc", "cases": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
