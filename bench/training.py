"""Times a hospital's local training with the kept compiled model (`train_model`) against the
baseline of building and compiling a fresh Keras model for every training, as `train_model` did
before; both give the same weights, which the script checks.

Prints JSON: median seconds per training of each and their ratio (kept / fresh).

    python bench/training.py [--datasets breast_cancer synthetic_images] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from core.data.loading import load_dataset  # noqa: E402
from core.models.architecture import spec_for  # noqa: E402
from core.models.keras_builder import build_keras_model  # noqa: E402
from core.models.training import TrainingConfig, initial_weights, train_model  # noqa: E402


def fresh_training(spec, data, config, start):  # type: ignore[no-untyped-def]
    """The baseline: what train_model did before it kept compiled models."""
    model = build_keras_model(spec, seed=config.seed, learning_rate=config.learning_rate)
    model.set_weights(start)
    keras.utils.set_random_seed(config.seed)
    model.fit(data.x, data.y, epochs=config.epochs, batch_size=config.batch_size, verbose=0, shuffle=True)
    return model.get_weights()


def bench_one(dataset: str, repeats: int) -> dict[str, object]:
    full = load_dataset(dataset)
    data = replace(full, x=full.x[:90], y=full.y[:90])  # about one hospital's training split
    spec = spec_for(full)
    config = TrainingConfig(epochs=5, batch_size=16, learning_rate=0.005)
    start = initial_weights(spec, 0)
    timings: dict[str, list[float]] = {"kept": [], "fresh": []}
    results = {}
    for _ in range(repeats):
        for name, run in (("fresh", lambda: fresh_training(spec, data, config, start)),
                          ("kept", lambda: train_model(spec, data, config, initial_weights=start).weights)):
            began = time.perf_counter()
            results[name] = run()
            timings[name].append(time.perf_counter() - began)
    same = all(np.array_equal(a, b) for a, b in zip(results["kept"], results["fresh"], strict=True))
    kept, fresh = (statistics.median(timings[k][1:] or timings[k]) for k in ("kept", "fresh"))
    return {"dataset": dataset, "samples": data.num_samples, "epochs": config.epochs,
            "baseline": "a fresh compiled model per training", "fresh_seconds": round(fresh, 4),
            "kept_seconds": round(kept, 4), "ratio": round(kept / fresh, 3), "same_weights": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["breast_cancer", "synthetic_images"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps({"benchmark": "training", "results": [bench_one(d, args.repeats) for d in args.datasets]},
                     indent=2))


if __name__ == "__main__":
    main()
