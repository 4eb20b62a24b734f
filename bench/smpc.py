"""Benchmark of the SMPC layer: encrypted verification and secure aggregation against their
plaintext counterparts, for both CNNs, and a whole secure round of 5 hospitals.

    python bench/smpc.py [--batch-size 64] [--rows 128] [--player-mode in-process|processes]
                         [--skip-processes] [--hospitals 5] [--rounds 2] [--epochs 1] [--json OUT]

Prints one JSON document. Player mode "in-process" (each architecture in a child process, so
its peak memory is its own): the three players are devices of one process. Player mode
"processes": the real deployment of tests/deployment.py (anvil, three `smpc-player` processes,
the coordinator whose process is the SMPC driver, one node per hospital, every SMPC link through
the parties' mTLS gateways) runs secure rounds on the shipped breast-cancer CSV, so that case is
the tabular CNN. Its per-round scoring and aggregation seconds (the driver's log) are compared
with the same rounds (same model spec, same validation rows per hospital) driven in process by
`build_in_process` in this process once the deployment has stopped; the bytes each party sent
and received come from the parties' own logs at exit. By default both in-process cases run,
then, unless `--skip-processes`, the processes case.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and this module would shadow the
# `smpc` package: put the checkout there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
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
    from tests.smpc.scenarios import MemoryFacts

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
    facts = MemoryFacts()
    fed = build_in_process(spec, facts, protocol=protocol, batch_size=batch_size)
    owners = {c.hospital_id: fed.owner(c.hospital_id) for c in candidates}

    def share_round(n: int, cands: list, validators: dict) -> None:
        for c in cands:
            owners[c.hospital_id].begin_round(n, glob)
            facts.record(owners[c.hospital_id].commit(c, validators.get(c.hospital_id)))

    # One candidate on one validation batch, warm: encrypted vs Keras `model(x)`.
    batch = data(batch_size, 1)
    x = batch.x
    plain_s = _median_time(lambda: model(x, training=False), 20)
    share_round(1, candidates, {"h0": ValidatorInput("h0", batch, candidates[0].delta)})
    secure_s = _median_time(
        lambda: fed.driver.score_round(1, 0, glob, ["h0"], ignore_progress, CancelToken()), 3)

    commitments = [facts.commitments[(1, c.hospital_id)] for c in candidates]
    facts.decide(1, candidates)
    fed.driver.score_round(1, 0, glob, [c.hospital_id for c in candidates], ignore_progress, CancelToken())
    fedavg = FedAvg()
    plain_agg_s = _median_time(lambda: fedavg.aggregate(glob, candidates, commitments), 20)
    blind = [dataclasses.replace(c, delta=[]) for c in candidates]

    def secure_aggregate() -> None:
        # Each holder caches a round's sum share once computed; drop it so that every timed call
        # includes the holders' own summation (reading back and checking each accepted share),
        # not only the driver's reconstruction.
        for holder in fed.holders:
            holder._sums.clear()  # noqa: SLF001
        fed.driver.aggregate(glob, blind, commitments)

    secure_agg_s = _median_time(secure_aggregate, 5)

    # A whole secure round: 5 hospitals share their update and validation rows, the driver
    # scores every candidate for every validator, each collects its scores, then aggregation.
    validators = {f"h{i}": ValidatorInput(f"h{i}", data(rows, 10 + i), candidates[i].delta)
                  for i in range(hospitals)}
    start = time.perf_counter()
    round_candidates = [dataclasses.replace(c, round_number=2) for c in candidates]
    share_round(2, round_candidates, validators)
    facts.decide(2, round_candidates)
    fed.driver.score_round(2, 0, glob, [c.hospital_id for c in round_candidates], ignore_progress, CancelToken())
    for c in round_candidates:
        owners[c.hospital_id].score(round_candidates, [validators[c.hospital_id]], ignore_progress, CancelToken())
    fed.driver.aggregate(glob, [dataclasses.replace(c, delta=[]) for c in round_candidates],
                         [facts.commitments[(2, c.hospital_id)] for c in round_candidates])
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


TRANSPORT = "mTLS gRPC gateways (grpc.aio, BoringSSL), TF raw ports on loopback"
LOG = "medfedchain.log"
EXIT_CANCELLED = 130  # main.py's code for a process stopped by SIGTERM
READY = "following the consortium's rounds"  # what `node` / `coordinator` print once set up
SCORED = re.compile(r"round (\d+) \(attempt (\d+)\): scored (\d+) candidate\(s\) for (\d+) validator\(s\) "
                    r"in ([\d.]+) s")
AGGREGATED = re.compile(r"round (\d+): aggregated (\d+) update\(s\) in ([\d.]+) s")
DRIVER_TRAFFIC = re.compile(r"the SMPC driver's gateway traffic: (\{.*\})")
PLAYER_TRAFFIC = re.compile(r"the gateway traffic of (\S+): (\{.*\})")
SHARE_TRAFFIC = re.compile(r"SharePlayer traffic with (\S+): sent (\d+) bytes, received (\d+) bytes")


def _log_lines(home: Path) -> list[str]:
    """A site's log, oldest rotated file first."""
    files = sorted(home.glob(LOG + ".*"), key=lambda f: -int(f.suffix[1:])) + [home / LOG]
    return [line for f in files if f.exists() for line in f.read_text(errors="replace").splitlines()]


def _last(pattern: re.Pattern[str], lines: list[str], what: str) -> re.Match[str]:
    found = [m for m in map(pattern.search, lines) if m]
    if not found:
        raise RuntimeError(f"no '{what}' line in the log")
    return found[-1]


def _share_traffic(lines: list[str]) -> dict[str, dict[str, int]]:
    """Each SharePlayer link's bytes at this process's (last) exit."""
    out: dict[str, dict[str, int]] = {}
    for m in filter(None, map(SHARE_TRAFFIC.search, lines)):
        out[m.group(1)] = {"sent": int(m.group(2)), "received": int(m.group(3))}
    return out


def _driver_rounds(lines: list[str]) -> dict[int, dict[str, Any]]:
    """Per round: the driver's scoring seconds (the round's last attempt) and aggregation seconds."""
    rounds: dict[int, dict[str, Any]] = {}
    for m in filter(None, map(SCORED.search, lines)):
        entry = rounds.setdefault(int(m.group(1)), {"attempts": 0})
        entry.update(attempt=int(m.group(2)), candidates=int(m.group(3)), validators=int(m.group(4)),
                     scoring_s=float(m.group(5)))
        entry["attempts"] += 1
    for m in filter(None, map(AGGREGATED.search, lines)):
        rounds.setdefault(int(m.group(1)), {})["aggregation_s"] = float(m.group(3))
        rounds[int(m.group(1))]["aggregated"] = int(m.group(2))
    return rounds


def _validation_sets(records: list[Path]) -> list[Any]:
    """Each hospital's validation split, as its node makes it (core/services/deployment.py
    `open_node`: the whole CSV partitioned for one hospital, seed 0)."""
    from core.data.loading import load_dataset
    from core.data.partition import partition
    from tests.deployment import LABEL

    return [partition(load_dataset(str(path), label_column=LABEL, drop_columns=("id",)), 1, seed=0)
            .hospitals[0].validation for path in records]


def _in_process_rounds(spec: Any, validation: list[Any], rounds: int,
                       protocol: str) -> list[dict[str, float]]:
    """The deployment's rounds driven in process: every hospital shares a (random) update and its
    validation rows, then the driver scores every candidate for every validator and aggregates
    them all; timed like the driver's log lines (scoring, aggregation), round 1 cold as there."""
    import numpy as np

    from core.federation.types import Candidate, ValidatorInput
    from core.models.keras_builder import build_keras_model
    from core.models.weights import add, weights_hash
    from core.progress import CancelToken, ignore_progress
    from smpc.factory import build_in_process
    from tests.smpc.scenarios import MemoryFacts

    rng = np.random.default_rng(0)
    glob = build_keras_model(spec, seed=0).get_weights()
    facts = MemoryFacts()
    fed = build_in_process(spec, facts, protocol=protocol)
    ids = [f"hospital-{i + 1}" for i in range(len(validation))]
    owners = {hid: fed.owner(hid) for hid in ids}
    out = []
    try:
        for n in range(1, rounds + 1):
            candidates = []
            for i, hid in enumerate(ids):
                delta = [rng.normal(scale=0.02, size=w.shape).astype(np.float32) for w in glob]
                candidates.append(Candidate(hid, n, delta, 100 + i, weights_hash(add(glob, delta))))
            for c, data in zip(candidates, validation, strict=True):
                owners[c.hospital_id].begin_round(n, glob)
                facts.record(owners[c.hospital_id].commit(c, ValidatorInput(c.hospital_id, data, c.delta)))
            facts.decide(n, candidates)
            start = time.perf_counter()
            fed.driver.score_round(n, 0, glob, ids, ignore_progress, CancelToken())
            scored = time.perf_counter()
            fed.driver.aggregate(glob, [dataclasses.replace(c, delta=[]) for c in candidates],
                                 [facts.commitments[(n, hid)] for hid in ids])
            done = time.perf_counter()
            out.append({"scoring_s": scored - start, "aggregation_s": done - scored, "smpc_s": done - start})
    finally:
        fed.close()
    return out


class _PortTaken(RuntimeError):
    """A site could not bind the port provisioning picked for it (another process took it since)."""


def _start(federation: Any, rounds: int) -> None:
    """Players, then the hospital nodes, then the coordinator (so no start-up falls in a round),
    each waited for until its log says it serves."""
    from tests.deployment import PLAYERS

    def ready(name: str, marker: str) -> None:
        try:
            federation.wait_ready(name, timeout=300, marker=marker)
        except AssertionError as exc:
            if "Address already in use" in str(exc):
                raise _PortTaken(str(exc)) from exc
            raise

    for name in PLAYERS:
        federation.start(name)
    for name in PLAYERS:
        ready(name, "SMPC player ready")
    for hid in federation.hospital_ids:
        federation.start(hid, extra=["--until-round", str(rounds)])
    for hid in federation.hospital_ids:
        ready(hid, READY)
    federation.coordinator(rounds=rounds)
    federation.start("coordinator", extra=["--linger", "600"])
    ready("coordinator", READY)


def _run_federation(work: Path, hospitals: int, malicious: int, rounds: int, epochs: int) -> dict[str, Any]:
    """Secure rounds of a federation of processes on loopback; what the chain and the logs say.
    Provisioned again (in a fresh folder, at most twice) if a site finds its port taken at start."""
    from core.federation.channel import Phase, RoundTiming
    from tests.deployment import PLAYERS, LoopbackFederation, observer

    for tries in range(1, 4):
        federation = LoopbackFederation(work / f"try-{tries}", hospitals=hospitals, malicious=malicious,
                                        secure=True, epochs=epochs, timing=RoundTiming(300, 300, 300))
        started = time.monotonic()
        federation.provision()
        finals: dict[int, Any] = {}
        try:
            _start(federation, rounds)
            exits = {hid: federation.wait(hid, 300 + 300 * rounds) for hid in federation.hospital_ids}
            chain = observer(federation)
            for n in range(1, rounds + 1):
                view = chain.round(n)
                if view is None or view.phase is not Phase.FINAL:
                    raise RuntimeError(f"round {n} was not finalised:\n{federation.tail('coordinator')}")
                finals[n] = view
            # Every node has the last global model: end the coordinator's linger, then the players.
            coordinator = federation.sites["coordinator"].proc
            assert coordinator is not None
            coordinator.terminate()
            stopped = federation.wait("coordinator", 120)
            exits["coordinator"] = 0 if stopped == EXIT_CANCELLED else stopped
        except _PortTaken:
            if tries == 3:
                raise
            continue
        finally:
            federation.stop_all()
        break
    wall_s = time.monotonic() - started
    bad = {name: code for name, code in exits.items() if code != 0}
    if bad:
        raise RuntimeError(f"sites exited with errors: {bad}")
    driver_lines = _log_lines(federation.home("coordinator"))
    traffic: dict[str, Any] = {}
    for name in PLAYERS:
        m = _last(PLAYER_TRAFFIC, _log_lines(federation.home(name)), f"the gateway traffic of {name}")
        traffic[name] = ast.literal_eval(m.group(2))
    traffic["driver"] = ast.literal_eval(
        _last(DRIVER_TRAFFIC, driver_lines, "the SMPC driver's gateway traffic").group(1))
    # The driver's control calls to the share holders: holdings, layout, commitment checks.
    traffic["driver_share_player"] = _share_traffic(driver_lines)
    for hid in federation.hospital_ids:
        traffic[hid] = _share_traffic(_log_lines(federation.home(hid)))
    missing = [name for name, links in traffic.items() if not links]
    if missing:
        raise RuntimeError(f"no traffic line at exit in the logs of {missing}")
    return {
        "federation": federation,
        "rounds": _driver_rounds(driver_lines),
        "accepted": {n: sorted(v.accepted) for n, v in finals.items()},
        "bytes": traffic,
        "wall_s": wall_s,
        "tries": tries,
        "work": federation.work,
    }


def _totals(links: dict[str, dict[str, int]]) -> dict[str, int]:
    return {k: sum(int(link[k]) for link in links.values()) for k in ("sent", "received")}


def _processes_case(args: argparse.Namespace) -> dict[str, Any]:
    from core.federation.consortium import read_consortium
    from core.models.keras_builder import build_keras_model
    from core.models.weights import parameter_count

    with tempfile.TemporaryDirectory(prefix="medfed-smpc-bench-") as temp:
        work = args.work or Path(temp)
        run = _run_federation(work, args.hospitals, args.malicious, args.rounds, args.epochs)
        federation = run["federation"]
        assert federation.consortium is not None
        spec = read_consortium(federation.consortium).model_spec()
        records = sorted((run["work"] / "records").glob("records-*.csv"),
                         key=lambda p: int(p.stem.split("-")[1]))
        validation = _validation_sets(records)
    baseline = _in_process_rounds(spec, validation, args.rounds, args.protocol)
    per_round = []
    for n in range(1, args.rounds + 1):
        driver = run["rounds"].get(n, {})
        if "scoring_s" not in driver or "aggregation_s" not in driver:
            raise RuntimeError(f"the driver's log has no scoring or aggregation line for round {n}")
        smpc_s = driver["scoring_s"] + driver["aggregation_s"]
        base = baseline[n - 1]
        per_round.append({
            "round": n,
            "attempts": driver["attempts"],
            "candidates": driver["candidates"],
            "validators": driver["validators"],
            "aggregated": driver["aggregated"],
            "scoring_s": driver["scoring_s"],
            "aggregation_s": driver["aggregation_s"],
            "smpc_s": round(smpc_s, 3),
            "in_process_scoring_s": round(base["scoring_s"], 3),
            "in_process_aggregation_s": round(base["aggregation_s"], 3),
            "in_process_smpc_s": round(base["smpc_s"], 3),
            "ratio": round(smpc_s / base["smpc_s"], 2),
        })
    smpc_s = sum(r["smpc_s"] for r in per_round)
    in_process_s = sum(b["smpc_s"] for b in baseline)
    return {
        "architecture": "tabular_cnn",
        "architecture_note": "the deployment trains on the shipped breast-cancer CSV (30 features, "
                             "2 classes), so the processes case is the tabular CNN",
        "protocol": args.protocol,
        "player_mode": "processes",
        "transport": TRANSPORT,
        "hospitals": args.hospitals,
        "malicious": args.malicious,
        "rounds": args.rounds,
        "epochs": args.epochs,
        "parameters": parameter_count(build_keras_model(spec, seed=0).get_weights()),
        "validation_rows_per_hospital": {f"hospital-{i + 1}": v.num_samples
                                         for i, v in enumerate(validation)},
        "accepted": {str(n): ids for n, ids in run["accepted"].items()},
        "smpc_s": round(smpc_s, 3),
        "in_process_smpc_s": round(in_process_s, 3),
        "ratio": round(smpc_s / in_process_s, 2),
        "ratio_basis": "the driver's scoring + aggregation seconds (its log) over the same rounds driven "
                       "in process with build_in_process (same model spec and validation rows), summed "
                       "over rounds",
        # Round 1 builds the session's graphs in both; later rounds reuse them.
        "ratio_last_round": per_round[-1]["ratio"],
        "per_round": per_round,
        "bytes_total": {party: _totals(links) for party, links in run["bytes"].items()},
        "bytes": run["bytes"],
        "bytes_note": "payload bytes over all rounds, at each party's exit (TLS framing not counted): "
                      "serverK and driver, their gateway's per peer; driver_share_player and each "
                      "hospital, their SharePlayer links to the two share holders, as the client counts them",
        "wall_s": round(run["wall_s"], 1),
        "provisioned": run["tries"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rows", type=int, default=128, help="validation rows per hospital in the round")
    parser.add_argument("--protocol", default="securenn")
    parser.add_argument("--architecture", choices=["tabular_cnn", "image_cnn"], default=None)
    parser.add_argument("--player-mode", choices=["in-process", "processes"], default=None,
                        help="run only this case (default: in-process, then processes)")
    parser.add_argument("--skip-processes", action="store_true",
                        help="with no --player-mode: run the in-process cases only")
    parser.add_argument("--hospitals", type=int, default=5, help="processes case: hospital nodes")
    parser.add_argument("--malicious", type=int, default=0, help="processes case: label-flipping attackers")
    parser.add_argument("--rounds", type=int, default=2, help="processes case: secure rounds")
    parser.add_argument("--epochs", type=int, default=1, help="processes case: local epochs per round")
    parser.add_argument("--work", type=Path, help="processes case: keep the sites' homes and logs here")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.architecture:
        print(json.dumps(_case(args.architecture, args.batch_size, args.rows, args.protocol)))
        return 0
    results = []
    if args.player_mode in (None, "in-process"):
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
    if args.player_mode == "processes" or (args.player_mode is None and not args.skip_processes):
        results.append(_processes_case(args))
    text = json.dumps({"benchmark": "smpc", "cases": results}, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
