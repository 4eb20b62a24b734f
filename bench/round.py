"""Times each stage of one federation round, for the tabular and the image CNN, 5 and 20 hospitals.

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
from core.services.simulation import SimulationConfig, prepare_federation  # noqa: E402
from core.settings import load_settings  # noqa: E402


def bench_one(dataset: str, hospitals: int, ledger: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as home:
        config = SimulationConfig(hospitals=hospitals, malicious=hospitals // 5, attack="label_flip", rounds=1,
                                  dataset=dataset, ledger=ledger, local_epochs=2)
        federation = prepare_federation(config, load_settings(home=Path(home)))
        try:
            federation.engine.register()
            weights = initial_weights(federation.spec, 0)
            first = federation.hospitals[0]
            start = time.perf_counter()
            train_model(federation.spec, first.data.train, federation.training, initial_weights=weights)
            baseline = time.perf_counter() - start
            start = time.perf_counter()
            outcome = federation.engine.run_round(1, weights)
            total = time.perf_counter() - start
        finally:
            federation.close()
    stages = {k: outcome.durations.get(k, 0.0) for k in ("training", "commitment", "verification", "voting",
                                                          "aggregation", "evaluation", "recording")}
    return {
        "dataset": dataset,
        "architecture": federation.spec.architecture,
        "parameters": int(sum(w.size for w in weights)),
        "hospitals": hospitals,
        "ledger": "embedded chain" if ledger else None,
        "baseline": "one hospital's local training (2 epochs)",
        "baseline_seconds": round(baseline, 4),
        "seconds": {k: round(v, 4) for k, v in stages.items()} | {"round_total": round(total, 4)},
        "ratio_to_baseline": {k: round(v / baseline, 3) for k, v in stages.items()}
        | {"round_total": round(total / baseline, 3)},
        "accepted": len(outcome.contributors),
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
