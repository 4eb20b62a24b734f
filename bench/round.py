"""Times each phase of one federation round (training and commitments, verification and votes,
aggregation; the time the roles spend while the round is in that phase), for the tabular and the
image CNN, 5 and 20 hospitals.

Prints JSON. Absolute seconds depend on the machine, so every stage is also given as a ratio to
a baseline measured in the same run: one hospital's local training on the same data.

    python bench/round.py [--hospitals 5 20] [--datasets breast_cancer synthetic_images] [--no-ledger]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.models.training import initial_weights, train_model  # noqa: E402
from core.services.simulation import SimulationConfig, prepare_federation, run_simulation  # noqa: E402
from core.settings import load_settings  # noqa: E402


def bench_one(dataset: str, hospitals: int, ledger: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as home:
        config = SimulationConfig(hospitals=hospitals, malicious=hospitals // 5, attack="label_flip", rounds=1,
                                  dataset=dataset, ledger=ledger, local_epochs=2)
        settings = load_settings(home=Path(home))
        federation = prepare_federation(config, settings)
        try:
            weights = initial_weights(federation.spec, 0)
            first = federation.hospitals[0]
            start = time.perf_counter()
            train_model(federation.spec, first.data.train, federation.training, initial_weights=weights)
            baseline = time.perf_counter() - start
        finally:
            federation.close()
        start = time.perf_counter()
        report = run_simulation(config, settings)
        total = time.perf_counter() - start
    (row,) = report["rounds"]
    stages = {k: float(row["durations"].get(k, 0.0)) for k in ("training", "verification", "aggregation")}
    return {
        "dataset": dataset,
        "architecture": federation.spec.architecture,
        "parameters": int(sum(w.size for w in weights)),
        "hospitals": hospitals,
        "ledger": "embedded chain" if ledger else None,
        "baseline": "one hospital's local training (2 epochs)",
        "baseline_seconds": round(baseline, 4),
        "seconds": {k: round(v, 4) for k, v in stages.items()} | {"run_total": round(total, 4)},
        "ratio_to_baseline": {k: round(v / baseline, 3) for k, v in stages.items()}
        | {"run_total": round(total / baseline, 3)},
        "accepted": len(row["contributors"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hospitals", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--datasets", nargs="+", default=["breast_cancer", "synthetic_images"])
    parser.add_argument("--no-ledger", action="store_true")
    args = parser.parse_args()
    results = [bench_one(d, n, not args.no_ledger) for d in args.datasets for n in args.hospitals]
    print(json.dumps({"benchmark": "round", "results": results}, indent=2))


if __name__ == "__main__":
    main()
