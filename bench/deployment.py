"""Deployment benchmark: a federation of processes on loopback against the same federation simulated
in one process.

The deployment is tests/deployment.py's set-up: anvil (interval mining), a coordinator process and
one `python main.py node` process per hospital, the last `--malicious` of them label-flipping
attackers that vote dishonestly. The baseline is `run_simulation` of the same federation (the
shipped breast-cancer CSV, as many hospitals, attackers, rounds and local epochs) in this process,
in memory. Both are timed from the opening of round 1 to the finalisation of the last round, on
the wall clock (the deployment's block times come from watching the node's block number; block
timestamps are given too); `ratio` is deployment / in-process. Start-up is reported apart.

Also reported, per round, from the chain: every candidate's verdict (accepted / rejected, or a
dropout), the phases' durations and the gas of the round's transactions per hospital; per site:
its start-up time, its peak RSS (VmHWM in /proc, polled while it runs) and its `ledger audit`.

    python bench/deployment.py [--hospitals 5] [--malicious 1] [--rounds 2] [--epochs 3]
                               [--block-time 1] [--json OUT] [--work DIR] [--audit-checkout DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from core.federation.channel import CommitsClosed, Decided, Finalized  # noqa: E402
from core.federation.consortium import read_consortium  # noqa: E402
from core.progress import Progress, Stage  # noqa: E402
from ledger.explorer import get_block  # noqa: E402
from tests.deployment import LABEL, PASSWORD, SAMPLE, LoopbackFederation, observer  # noqa: E402

READY = "following the consortium's rounds"  # what `node` / `coordinator` print once set up
EXIT_AUDIT = 10  # `ledger audit` found a discrepancy (main.py's exit codes)
SAMPLE_SECONDS = 0.1
THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
MB = 1024.0


def _vm_hwm_kb(pid: int) -> int | None:
    """The process's peak resident set so far (VmHWM), or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class Watcher(threading.Thread):
    """Polls, every `SAMPLE_SECONDS`: the node's block number (the wall time each block is first
    seen) and every running site's VmHWM (psutil is not installed; VmHWM is the peak so far, so
    the last reading before a process exits is its peak)."""

    def __init__(self, federation: LoopbackFederation) -> None:
        super().__init__(daemon=True)
        self.federation = federation
        self.block_seen: dict[int, float] = {}
        self.peak_kb: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_SECONDS):
            now = time.monotonic()
            try:
                reply = requests.post(self.federation.rpc_url, timeout=1, json={
                    "jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
                self.block_seen.setdefault(int(reply.json()["result"], 16), now)
            except (requests.RequestException, KeyError, ValueError):
                pass  # the node is stopping
            for site in list(self.federation.sites.values()):
                if site.proc is not None and site.proc.poll() is None:
                    kb = _vm_hwm_kb(site.proc.pid)
                    if kb is not None:
                        self.peak_kb[site.name] = max(kb, self.peak_kb.get(site.name, 0))

    def seen(self, block: int) -> float | None:
        """When `block` (or, if it was missed between two polls, the next block seen) appeared."""
        later = [t for n, t in self.block_seen.items() if n >= block]
        return min(later) if later else None

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def _wait_ready(federation: LoopbackFederation, names: list[str], started: dict[str, float],
                timeout: float) -> dict[str, float]:
    """Seconds from each site's launch to its READY line (imports, keystore, chain checks, data)."""
    ready: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(ready) < len(names):
        for name in names:
            site = federation.sites[name]
            if name not in ready and site.log is not None and READY in site.log.read_text(errors="replace"):
                ready[name] = round(time.monotonic() - started[name], 2)
            elif site.proc is not None and site.proc.poll() is not None and name not in ready:
                raise RuntimeError(f"{name} exited with {site.proc.returncode} at start:\n"
                                   f"{federation.tail(name)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout:.0f} s: {sorted(set(names) - set(ready))}")
        time.sleep(0.05)
    return ready


def _chain_rounds(federation: LoopbackFederation, watcher: Watcher) -> dict[str, Any]:
    """Verdicts, phase times and gas of every round, read back from the chain."""
    chain = observer(federation)
    client = chain.client
    decoded, _ = chain.events(0)
    blocks: dict[tuple[str, int], int] = {}  # (event name, round attempt) -> its last block
    first_opened: dict[int, int] = {}  # round number -> block of its first opening
    openings: list[int] = []
    acts: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)  # (event, attempt) -> hospital -> block
    ids = {m.account: m.hospital_id for m in chain.members()}
    for raw in client.events(0, "latest"):
        if raw.name in ("Committed", "Voted"):
            who = raw.args["hospital"] if raw.name == "Committed" else raw.args["validator"]
            acts[(raw.name, int(raw.args["roundId"]))][ids.get(who, who)] = raw.block_number
        if "roundId" in raw.args:
            blocks[(raw.name, int(raw.args["roundId"]))] = raw.block_number
            if raw.name == "RoundOpened":
                first_opened.setdefault(int(raw.args["roundNumber"]), raw.block_number)
                openings.append(raw.block_number)
    final = {e.round_number: e for e in decoded if isinstance(e, Finalized)}
    closed = {e.attempt: e for e in decoded if isinstance(e, CommitsClosed)}
    decided = {e.attempt: e for e in decoded if isinstance(e, Decided)}
    attackers = set(federation.attackers)
    timestamps: dict[int, int] = {}

    def stamp(block: int) -> int:
        if block not in timestamps:
            timestamps[block] = int(client.w3.eth.get_block(block)["timestamp"])
        return timestamps[block]

    models, rounds = [], []
    for number in sorted(final):
        attempt = final[number].attempt
        for decision in decided[attempt].decisions:
            models.append({"round": number, "hospital": decision.candidate_id,
                           "malicious": decision.candidate_id in attackers,
                           "status": "accepted" if decision.accepted else "rejected",
                           "accepts": decision.accepts, "rejects": decision.rejects})
        for hid in closed[attempt].dropouts:
            models.append({"round": number, "hospital": hid, "malicious": hid in attackers,
                           "status": "dropout", "accepts": 0, "rejects": 0})
        marks = {"opened": first_opened[number], "last_commit": blocks[("Committed", attempt)],
                 "commits_closed": blocks[("CommitsClosed", attempt)],
                 "last_vote": blocks[("Voted", attempt)], "decided": blocks[("Decided", attempt)],
                 "finalized": blocks[("RoundFinalized", attempt)]}
        wall = {k: watcher.seen(b) for k, b in marks.items()}

        def after(name: str, mark: str, attempt: int = attempt) -> dict[str, float | None]:
            start = wall[mark]
            return {hid: _elapsed(start, watcher.seen(b)) for hid, b in sorted(acts[(name, attempt)].items())}

        gas, transactions, reverted = _gas(client, marks["opened"], marks["finalized"])
        total_gas = sum(gas.values())
        rounds.append({
            "round": number,
            "attempts": sum(1 for b in openings if marks["opened"] <= b <= marks["finalized"]),
            "blocks": marks,
            "block_seconds": stamp(marks["finalized"]) - stamp(marks["opened"]),
            "seconds": _phases(wall),
            "committed_after_opening": after("Committed", "opened"),
            "voted_after_closing": after("Voted", "commits_closed"),
            "transactions": transactions,
            "reverted_transactions": reverted,
            "gas": total_gas,
            "gas_per_hospital": total_gas // federation.hospitals,
            "gas_by_function": gas,
        })
    first, last = (rounds[0]["blocks"]["opened"], rounds[-1]["blocks"]["finalized"]) if rounds else (0, 0)
    span_wall = (watcher.seen(last) or 0) - (watcher.seen(first) or 0) if rounds else None
    return {"models": models, "rounds": rounds, "span_wall": span_wall,
            "span_block_time": stamp(last) - stamp(first) if rounds else None}


def _gas(client: Any, first: int, last: int) -> tuple[dict[str, int], int, int]:
    """Gas used by the contract's transactions in blocks first..last, per function; how many
    transactions, and how many of them reverted."""
    gas: dict[str, int] = defaultdict(int)
    transactions = reverted = 0
    for block in range(first, last + 1):
        for tx in get_block(client, block).transactions:
            if tx.function in ("transfer", "deploy"):
                continue
            gas[tx.function] += tx.gas_used
            transactions += 1
            reverted += not tx.succeeded
    return dict(sorted(gas.items())), transactions, reverted


def _elapsed(start: float | None, end: float | None) -> float | None:
    return round(end - start, 2) if start is not None and end is not None else None


def _phases(wall: dict[str, float | None]) -> dict[str, float | None]:
    """Wall seconds between the round's blocks: opened -> last commitment mined (fetching the
    starting model, training, committing) -> commits closed (the coordinator noticing, one more
    block) -> last vote mined (fetching and scoring the candidates, voting) -> decided (likewise)
    -> finalised (aggregating, one more block)."""
    steps = {"training": ("opened", "last_commit"), "closing": ("last_commit", "commits_closed"),
             "scoring": ("commits_closed", "last_vote"), "deciding": ("last_vote", "decided"),
             "aggregating": ("decided", "finalized"), "round": ("opened", "finalized")}
    return {name: _elapsed(wall[a], wall[b]) for name, (a, b) in steps.items()}


def _archived_rounds(home: Path, consortium: Path) -> int:
    """Rounds this site's archive recorded as finalised in its own SQLite."""
    record = read_consortium(consortium)
    name = f"{record.name} ({record.contract.address})"
    with sqlite3.connect(home / "medfedchain.db") as db:
        (count,) = db.execute("SELECT count(*) FROM rounds JOIN federations ON federations.id = rounds."
                              "federation_id WHERE federations.name = ? AND rounds.status = 'finalized'",
                              (name,)).fetchone()
    return int(count)


def _audits(federation: LoopbackFederation, checkout: Path) -> dict[str, dict[str, Any]]:
    """`python main.py ledger audit --home H --consortium C --rpc URL` in every hospital's home."""
    assert federation.consortium is not None
    env = dict(os.environ, PYTHONPATH=str(checkout), TF_CPP_MIN_LOG_LEVEL="3",
               MEDFED_KEYSTORE_PASSWORD=PASSWORD, QT_QPA_PLATFORM="offscreen")
    main = [sys.executable, str(checkout / "main.py"), "ledger", "audit"]
    usage = subprocess.run([*main, "--help"], env=env, cwd=checkout, capture_output=True, text=True,
                           timeout=120)
    if "--consortium" not in usage.stdout:
        reason = f"`ledger audit` in {checkout} does not accept --consortium yet (being ported on wt-audit)"
        return {hid: {"ok": None, "reason": reason, "malicious": hid in federation.attackers}
                for hid in federation.hospital_ids}
    out: dict[str, dict[str, Any]] = {}
    for hid in federation.hospital_ids:
        report = federation.work / "audits" / f"{hid}.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        command = [*main, "--home", str(federation.home(hid)), "--consortium", str(federation.consortium),
                   "--rpc", federation.rpc_url, "--json", str(report)]
        done = subprocess.run(command, env=env, cwd=checkout, capture_output=True, text=True, timeout=300)
        # An attacker's own home fails its audit: its ballots do not follow the policy.
        entry: dict[str, Any] = {"ok": done.returncode == 0, "exit_code": done.returncode,
                                 "malicious": hid in federation.attackers}
        if done.returncode != 0:
            if done.returncode == EXIT_AUDIT and report.exists():
                entry["report"] = json.loads(report.read_text())
            entry["output"] = (done.stdout + done.stderr).strip().splitlines()[-15:]
        out[hid] = entry
    return out


def run_deployment(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    federation = LoopbackFederation(work, hospitals=args.hospitals, malicious=args.malicious,
                                    epochs=args.epochs, block_time=args.block_time)
    started = time.monotonic()
    federation.provision()
    provision_s = time.monotonic() - started
    watcher = Watcher(federation)
    watcher.start()
    saved = dict(os.environ)
    if args.tf_threads:
        # The sites share this machine's cores: cap each one's TensorFlow thread pools.
        os.environ.update({name: str(args.tf_threads) for name in THREAD_ENV})
    try:
        launched: dict[str, float] = {}
        for hid in federation.hospital_ids:
            federation.start(hid, extra=["--until-round", str(args.rounds)])
            launched[hid] = time.monotonic()
        # The nodes are set up before the coordinator opens round 1, so no node's start-up is
        # counted in a round: start-up is reported apart, as the simulation's is.
        ready = _wait_ready(federation, federation.hospital_ids, launched, timeout=300)
        federation.coordinator(rounds=args.rounds)
        federation.start("coordinator", extra=["--linger", "300"])
        launched["coordinator"] = time.monotonic()
        ready |= _wait_ready(federation, ["coordinator"], launched, timeout=300)
        os.environ.clear()
        os.environ.update(saved)
        exits = {hid: federation.wait(hid, 120 + 120 * args.rounds) for hid in federation.hospital_ids}
        done = time.monotonic()
        coordinator = federation.sites["coordinator"].proc
        assert coordinator is not None
        # Its schedule is done and every node has checked the last global model: end its linger.
        if coordinator.poll() is None:
            coordinator.terminate()
        exits["coordinator"] = federation.wait("coordinator", 60)
        chain = _chain_rounds(federation, watcher)
        watcher.stop()
        assert federation.consortium is not None
        archived = {hid: _archived_rounds(federation.home(hid), federation.consortium)
                    for hid in federation.hospital_ids}
        audits = _audits(federation, args.audit_checkout)
    finally:
        watcher.stop()
        federation.stop_all()
        os.environ.clear()
        os.environ.update(saved)
    sites = ["coordinator", *federation.hospital_ids]
    rounds = len(chain["rounds"])
    phases = [r["seconds"] for r in chain["rounds"]]
    return {
        "rounds_finalised": rounds,
        "models": chain["models"],
        "rounds": chain["rounds"],
        "seconds_per_round": round(chain["span_wall"] / rounds, 2) if rounds else None,
        "seconds_per_round_block_time": round(chain["span_block_time"] / rounds, 2) if rounds else None,
        # A round is six transactions in sequence (open, commits, close, votes, decide, finalise),
        # each waiting for its block: a round is never shorter than six block times.
        "blocks_per_round": round((chain["rounds"][-1]["blocks"]["finalized"]
                                   - chain["rounds"][0]["blocks"]["opened"]) / rounds, 1) if rounds else None,
        "mean_phase_seconds": {k: round(sum(p[k] or 0.0 for p in phases) / rounds, 2) for k in phases[0]}
        if rounds else {},
        "provision_seconds": round(provision_s, 2),
        "startup_seconds": {name: ready[name] for name in sites},
        "wall_seconds": round(done - started, 2),
        "peak_rss_mb": {name: round(watcher.peak_kb.get(name, 0) / MB, 1) for name in sites},
        "exit_codes": exits,
        "archived_rounds": archived,
        "audits": audits,
    }


def run_in_process(args: argparse.Namespace, work: Path, *, ledger: bool) -> dict[str, Any]:
    """The same federation in one process: `run_simulation`, in memory or on the embedded chain."""
    started = time.monotonic()
    tf_loaded = "tensorflow" in sys.modules
    from core.services.simulation import SimulationConfig, run_simulation
    from core.settings import load_settings

    imported = time.monotonic()
    first_seen: dict[int, float] = {}
    finalised: dict[int, float] = {}

    def progress(event: Progress) -> None:
        # The coordinator's "round n opened" is the first event of round n; its "round n
        # finalised" the first DONE of round n (the archive's comes after).
        if event.round_number:
            first_seen.setdefault(event.round_number, time.monotonic())
            if event.stage is Stage.DONE:
                finalised.setdefault(event.round_number, time.monotonic())

    config = SimulationConfig(hospitals=args.hospitals, malicious=args.malicious,
                              attack="label_flip" if args.malicious else "none", rounds=args.rounds,
                              dataset=str(SAMPLE), label_column=LABEL, drop_columns=("id",),
                              local_epochs=args.epochs, ledger=ledger)
    os.environ["MEDFED_KEYSTORE_PASSWORD"] = PASSWORD
    try:
        settings = load_settings(home=work / ("embedded" if ledger else "memory"))
        report = run_simulation(config, settings, progress)
    finally:
        os.environ.pop("MEDFED_KEYSTORE_PASSWORD", None)
    ended = time.monotonic()
    span = finalised[args.rounds] - first_seen[1]
    return {
        "ledger": "embedded chain" if ledger else None,
        "rounds_finalised": len(report["rounds"]),
        "models": [{"round": r["round"], "hospital": m["hospital"], "malicious": m["malicious"],
                    "status": m["status"], "accepts": m["accepts"], "rejects": m["rejects"]}
                   for r in report["rounds"] for m in r["models"]],
        "seconds_per_round": round(span / args.rounds, 2),
        "round_seconds": [round(finalised[n] - first_seen[n], 2) for n in range(1, args.rounds + 1)],
        "import_seconds": round(imported - started, 2),
        "import_note": "TensorFlow was already imported" if tf_loaded else "includes importing TensorFlow",
        "startup_seconds": round(first_seen[1] - imported, 2),
        "wall_seconds": round(ended - started, 2),
    }


def verdicts(models: list[dict[str, Any]]) -> dict[tuple[int, str], str]:
    return {(m["round"], m["hospital"]): m["status"] for m in models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hospitals", type=int, default=5)
    parser.add_argument("--malicious", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="local epochs per round (both runs)")
    parser.add_argument("--block-time", type=float, default=1.0, help="anvil's block time in seconds")
    parser.add_argument("--tf-threads", type=int, default=0,
                        help="cap each site's TensorFlow thread pools (default: TensorFlow's own choice)")
    parser.add_argument("--embedded", action="store_true",
                        help="also time the simulation on the embedded chain")
    parser.add_argument("--audit-checkout", type=Path, default=ROOT,
                        help="the checkout whose `ledger audit` audits the sites (default: this one)")
    parser.add_argument("--work", type=Path,
                        help="keep the sites' homes and logs here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medfed-bench-") as temp:
        work = args.work or Path(temp)
        deployment = run_deployment(args, work / "deployment")
        in_process = run_in_process(args, work / "simulation", ledger=False)
        embedded = run_in_process(args, work / "simulation", ledger=True) if args.embedded else None
    in_process["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MB, 1)
    in_process["peak_rss_note"] = "this benchmark process (its harness and both simulations included)"
    result: dict[str, Any] = {
        "benchmark": "deployment",
        "hospitals": args.hospitals,
        "malicious": args.malicious,
        "rounds": args.rounds,
        "epochs": args.epochs,
        "block_time": args.block_time,
        "tf_threads_per_site": args.tf_threads or None,
        "rounds_finalised": deployment["rounds_finalised"],
        "models": deployment["models"],
        "audits": deployment["audits"],
        "seconds_per_round": {"deployment": deployment["seconds_per_round"],
                              "in_process": in_process["seconds_per_round"]},
        "seconds_per_round_basis": "wall clock from the block holding the first RoundOpened to the block "
                                   "holding the last RoundFinalized (as first seen by polling the node every "
                                   f"{SAMPLE_SECONDS} s), over rounds; in process, from the coordinator's "
                                   "'round 1 opened' to its 'round R finalised' progress events",
        "ratio": round(deployment["seconds_per_round"] / in_process["seconds_per_round"], 2),
        "peak_rss_mb": deployment["peak_rss_mb"],
        "gas_per_hospital": [{"round": r["round"], "gas": r["gas_per_hospital"]}
                             for r in deployment["rounds"]],
        "verdicts_agree": verdicts(deployment["models"]) == verdicts(in_process["models"]),
        "deployment": deployment,
        "in_process": in_process,
    }
    if embedded is not None:
        result["in_process_embedded"] = embedded
        result["ratio_embedded"] = round(deployment["seconds_per_round"] / embedded["seconds_per_round"], 2)
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
