"""Use case: the robustness evaluation, a matrix of simulated federations.

Each cell is one (dataset, partition, attack, defence, malicious fraction, seed) federation,
measured against the same federation with the attacking hospitals left out (the reference: the
best any defence can do without their data) and with no attacker at all (clean). The CLI's
`evaluate` calls `run_evaluation`; `results.json` is rewritten after every federation, so a run
that stops keeps what it finished and the same command resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from core.attacks.base import MeasurableBackdoor
from core.attacks.registry import attack_names, resolve_attack
from core.data.builtin import BUILTIN_DATASETS
from core.data.loading import load_dataset
from core.data.partition import SCHEMES
from core.errors import Cancelled, ConfigError, CoreError, describe_error
from core.evaluation.cells import FORMAT, VERIFICATION
from core.federation.aggregators import AGGREGATORS
from core.federation.policy import VerificationPolicy
from core.files import write_atomic
from core.progress import CancelToken, Progress, ProgressSink, Stage, ignore_progress
from core.services.simulation import SimulationConfig, run_simulation, trigger_metric
from core.settings import load_settings

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
# The success of a cell's trigger on its reference federation: added after the first results
# files, so resuming one fills it in.
REFERENCE_BACKDOOR = "reference_backdoor_success"
# `verification` is the majority verification with FedAvg of what it accepts; every other defence
# is that aggregator over every update, unverified.
DEFENCES: tuple[str, ...] = (VERIFICATION, *AGGREGATORS)
ALL = "all"


def expand(names: Iterable[str], known: Sequence[str], what: str) -> tuple[str, ...]:
    """`names` with `all` replaced by every known one, duplicates dropped, order kept."""
    chosen: list[str] = []
    for name in names:
        for item in known if name == ALL else [name]:
            if item not in chosen:
                chosen.append(item)
    if not chosen:
        raise ConfigError(f"Name at least one {what} (or '{ALL}').")
    return tuple(chosen)


@dataclass(frozen=True)
class CellKey:
    """What one attacked federation of the matrix is."""

    dataset: str
    partition: str
    attack: str
    defence: str
    malicious_fraction: float
    seed: int

    @staticmethod
    def of(cell: dict[str, Any]) -> CellKey:
        return CellKey(str(cell["dataset"]), str(cell["partition"]), str(cell["attack"]), str(cell["defence"]),
                       float(cell["malicious_fraction"]), int(cell["seed"]))


@dataclass(frozen=True)
class EvaluationMatrix:
    """The matrix `evaluate` runs; the run parameters (hospitals to learning rate) are the same
    for every cell, so a results file can only be resumed with the same ones."""

    datasets: tuple[str, ...]
    attacks: tuple[str, ...]
    defences: tuple[str, ...] = DEFENCES
    malicious_fractions: tuple[float, ...] = (0.4,)
    partitions: tuple[str, ...] = ("iid",)
    alpha: float = 0.5
    rounds: int = 5
    seeds: tuple[int, ...] = (0,)
    hospitals: int = 5
    local_epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 0.005

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", expand(self.attacks, attack_names(), "attack"))
        object.__setattr__(self, "defences", expand(self.defences, DEFENCES, "defence"))
        object.__setattr__(self, "datasets", expand(self.datasets, tuple(BUILTIN_DATASETS), "dataset"))
        object.__setattr__(self, "partitions", expand(self.partitions, SCHEMES, "partition"))
        for attack in self.attacks:
            resolve_attack(attack)  # an unknown name or a broken attack file fails before any run
        if unknown := [d for d in self.defences if d not in DEFENCES]:
            raise ConfigError(f"Unknown defence '{unknown[0]}'; choose from {', '.join(DEFENCES)} or '{ALL}'.")
        if unknown := [p for p in self.partitions if p not in SCHEMES]:
            raise ConfigError(f"Unknown partition '{unknown[0]}'; choose from {', '.join(SCHEMES)}.")
        for name, value in (("rounds", self.rounds), ("hospitals", self.hospitals),
                            ("local epochs", self.local_epochs), ("batch size", self.batch_size)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ConfigError(f"The number of {name} must be a positive integer, got {value!r}.")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, Integral) or s < 0 for s in self.seeds):
            raise ConfigError(f"Seeds must be integers >= 0, got {list(self.seeds)!r}.")
        if not (isinstance(self.alpha, Real) and math.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(f"The Dirichlet alpha must be a positive number, got {self.alpha!r}.")
        if not self.malicious_fractions:
            raise ConfigError("Name at least one malicious fraction.")
        for fraction in self.malicious_fractions:
            attackers = self.attackers(fraction)
            if not 1 <= attackers < self.hospitals:
                raise ConfigError(
                    f"A malicious fraction of {fraction:g} of {self.hospitals} hospitals makes {attackers} "
                    f"attackers; it must make between 1 and {self.hospitals - 1}.")
        # Fails here, not in the middle of the matrix, on a rate Keras refuses.
        SimulationConfig(hospitals=self.hospitals, local_epochs=self.local_epochs, batch_size=self.batch_size,
                         learning_rate=self.learning_rate, rounds=self.rounds)

    def triggers(self) -> tuple[str, ...]:
        """The attacks that plant a trigger, whose success is measured (`MeasurableBackdoor`)."""
        return tuple(a for a in self.attacks if issubclass(resolve_attack(a), MeasurableBackdoor))

    def attackers(self, fraction: float) -> int:
        """How many hospitals attack at `fraction` (rounded to the nearest count)."""
        if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0.0 < fraction < 1.0:
            raise ConfigError(f"A malicious fraction must lie strictly between 0 and 1, got {fraction!r}.")
        return int(round(fraction * self.hospitals))

    def cells(self) -> list[CellKey]:
        """Every cell, datasets outermost so that a partial run covers whole datasets first."""
        return [CellKey(d, p, a, defence, float(f), int(s))
                for d in self.datasets for p in self.partitions for f in self.malicious_fractions
                for s in self.seeds for a in self.attacks for defence in self.defences]

    def run_parameters(self) -> dict[str, Any]:
        """What every cell shares; a results file holds one set of them."""
        return {"hospitals": self.hospitals, "rounds": self.rounds, "alpha": self.alpha,
                "local_epochs": self.local_epochs, "batch_size": self.batch_size,
                "learning_rate": self.learning_rate}

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class EvaluationDone:
    """What a finished (or stopped) evaluation leaves behind."""

    results: dict[str, Any]
    results_file: Path
    ran: int  # federations run by this call (attacked, reference and clean)
    skipped: int  # cells a previous run had finished (given REFERENCE_BACKDOOR if they lacked it)
    failed: list[str] = field(default_factory=list)  # one line per cell whose federation failed


def _status_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"round": r["round"], "hospital": m["hospital"], "malicious": m["malicious"], "status": m["status"]}
            for r in report["rounds"] for m in r["models"]]
    malicious = {h["hospital"]: h["malicious"] for h in report["hospitals"]}
    rows += [{"round": r["round"], "hospital": f["hospital_id"], "malicious": malicious.get(f["hospital_id"], False),
              "status": "failed"} for r in report["rounds"] for f in r["failures"]]
    return sorted(rows, key=lambda row: (row["round"], row["hospital"]))


class _ResultsFile:
    """results.json: the matrix, the cells and the attack-free federations they are measured
    against, rewritten atomically after every federation."""

    def __init__(self, path: Path, matrix: EvaluationMatrix, policy: VerificationPolicy) -> None:
        self.path = path
        self.data: dict[str, Any] = {"format": FORMAT, "matrix": matrix.as_dict(), "policy": policy.as_dict(),
                                     "cells": [], "baselines": {}}
        if path.exists():
            self._resume(matrix, policy)

    def _resume(self, matrix: EvaluationMatrix, policy: VerificationPolicy) -> None:
        try:
            held = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{self.path} exists but is not a readable results file; move it away or "
                              "choose another --out.", detail=str(exc)) from exc
        if not isinstance(held, dict) or held.get("format") != FORMAT:
            raise ConfigError(f"{self.path} is not a results file of this version ({FORMAT}); choose another --out.")
        before = {k: held.get("matrix", {}).get(k) for k in matrix.run_parameters()}
        if before != matrix.run_parameters() or held.get("policy") != policy.as_dict():
            changed = [k for k, v in matrix.run_parameters().items() if before.get(k) != v]
            raise ConfigError(
                f"{self.path} holds an evaluation run with other parameters "
                f"({', '.join(changed) or 'the verification policy'}); resume it with the same ones or "
                "choose another --out.")
        self.data["cells"] = [c for c in held.get("cells", []) if not c.get("error")]
        self.data["baselines"] = dict(held.get("baselines", {}))

    def done(self) -> dict[CellKey, dict[str, Any]]:
        return {CellKey.of(c): c for c in self.data["cells"]}

    def add_cell(self, cell: dict[str, Any]) -> None:
        key = CellKey.of(cell)
        self.data["cells"] = [c for c in self.data["cells"] if CellKey.of(c) != key] + [cell]
        self.save()

    def save(self) -> None:
        try:
            write_atomic(self.path, json.dumps(self.data, indent=1, default=str))
        except OSError as exc:
            raise ConfigError(f"The results cannot be written to {self.path}.", detail=str(exc)) from exc


class _Federations:
    """Runs one simulated federation per call, in a scratch home (no ledger), and keeps the
    attack-free ones that several cells share."""

    def __init__(self, matrix: EvaluationMatrix, policy: VerificationPolicy, results: _ResultsFile,
                 home: Path, cancel: CancelToken) -> None:
        self.matrix, self.policy, self.results, self.cancel = matrix, policy, results, cancel
        self.settings = load_settings(home=home)
        self.triggers = matrix.triggers()
        self.ran = 0
        self.unreproduced: dict[str, CoreError] = {}  # by baseline tag: one run tells, for every cell

    def config(self, key: CellKey, **changes: Any) -> SimulationConfig:
        m = self.matrix
        base = SimulationConfig(
            hospitals=m.hospitals, rounds=m.rounds, dataset=key.dataset, partition=key.partition,
            alpha=m.alpha if key.partition == "dirichlet" else None, seed=key.seed, local_epochs=m.local_epochs,
            batch_size=m.batch_size, learning_rate=m.learning_rate, ledger=False, policy=self.policy,
            verifier="none", aggregator="fedavg")
        return replace(base, **changes)

    def run(self, config: SimulationConfig) -> dict[str, Any]:
        self.ran += 1
        return run_simulation(config, self.settings, cancel=self.cancel)

    def baseline(self, name: str, config: SimulationConfig) -> dict[str, Any]:
        """The results entry of an attack-free federation, run once per results file, and again
        only when the entry lacks the success of one of `config.measure_triggers`."""
        held = self.results.data["baselines"]
        tag = f"{name}|{config.dataset}|{config.partition}|{config.left_out}|{config.seed}"
        entry: dict[str, Any] | None = held.get(tag)
        measured: dict[str, float | None] = (entry or {}).get("backdoor_success", {})
        if entry is not None and all(a in measured for a in config.measure_triggers):
            return entry
        if tag in self.unreproduced:
            raise self.unreproduced[tag]
        report = self.run(config)
        per_round = report["summary"]["accuracy_per_round"]
        if entry is not None and per_round != entry["accuracy_per_round"]:
            # The cells were compared with the held run: a trigger measured on another model would not fit.
            self.unreproduced[tag] = CoreError(
                f"The {name} federation of {config.dataset}, {config.partition}, seed {config.seed} ran "
                "again to measure a trigger but did not reproduce the results file's accuracy per round "
                "(floating-point results differ between machines, TensorFlow builds and settings such as "
                "TF_ENABLE_ONEDNN_OPTS), so the trigger is not measured on it; a new --out measures "
                "everything here.",
                detail=f"now {per_round}, held {entry['accuracy_per_round']}")
            raise self.unreproduced[tag]
        entry = {"final_accuracy": report["final_accuracy"], "accuracy_per_round": per_round}
        if config.measure_triggers:
            final = _final_metrics(report)
            entry["backdoor_success"] = measured | {a: final.get(trigger_metric(a))
                                                    for a in config.measure_triggers}
        held[tag] = entry
        self.results.save()
        return entry

    def reference(self, key: CellKey) -> dict[str, Any]:
        """The federation with `key`'s attackers left out, measured on every trigger of the matrix
        at once, so that it runs once for all of them."""
        left_out = self.matrix.attackers(key.malicious_fraction)
        return self.baseline("reference", self.config(key, left_out=left_out, measure_triggers=self.triggers))

    def reference_backdoor(self, key: CellKey) -> float | None:
        """How often the reference federation's final model answers `key`'s trigger with its
        target (None for an attack without a trigger): what a verification that rejects exactly
        the attackers ends with."""
        if key.attack not in self.triggers:
            return None
        return self.reference(key)["backdoor_success"][key.attack]

    def cell(self, key: CellKey) -> dict[str, Any]:
        attackers = self.matrix.attackers(key.malicious_fraction)
        clean = self.baseline("clean", self.config(key))["final_accuracy"]
        reference = self.reference(key)["final_accuracy"]
        verified = key.defence == VERIFICATION
        started = time.monotonic()
        report = self.run(self.config(key, malicious=attackers, attack=key.attack,
                                      verifier="plaintext" if verified else "none",
                                      aggregator="fedavg" if verified else key.defence))
        statuses = _status_rows(report)
        return asdict(key) | {
            "alpha": self.matrix.alpha if key.partition == "dirichlet" else None,
            "hospitals": self.matrix.hospitals, "malicious": attackers, "rounds": self.matrix.rounds,
            "final_accuracy": report["final_accuracy"], "reference_accuracy": reference, "clean_accuracy": clean,
            "poisoned_accepted": sum(1 for s in statuses if s["malicious"] and s["status"] == "accepted"),
            "poisoned_total": sum(1 for s in statuses if s["malicious"]),
            "honest_rejected": sum(1 for s in statuses if not s["malicious"] and s["status"] == "rejected"),
            "honest_total": sum(1 for s in statuses if not s["malicious"]),
            "backdoor_success": _final_metrics(report).get("backdoor_success"),
            REFERENCE_BACKDOOR: self.reference_backdoor(key),
            "accuracy_per_round": report["summary"]["accuracy_per_round"],
            "statuses": statuses,
            "seconds": round(time.monotonic() - started, 2),
        }


def _final_metrics(report: dict[str, Any]) -> dict[str, float]:
    """What the archive measured on a run's last global model (nothing if no round finished)."""
    return report["rounds"][-1]["metrics"] if report["rounds"] else {}


def _label(key: CellKey) -> str:
    return (f"{key.dataset} {key.partition} {key.attack} vs {key.defence}, "
            f"{key.malicious_fraction:g} malicious, seed {key.seed}")


def run_evaluation(
    matrix: EvaluationMatrix,
    out_dir: Path,
    *,
    policy: VerificationPolicy | None = None,
    progress: ProgressSink = ignore_progress,
    cancel: CancelToken | None = None,
    write_files: Callable[[dict[str, Any], Path], Any] | None = None,
) -> EvaluationDone:
    """Runs every cell of `matrix` not yet in `out_dir/results.json`, saving after each one.

    Finished cells without `reference_backdoor_success` (written before it existed) get it from
    their reference federation, run again only if its entry lacks the trigger, never from a new
    attacked run. A cell whose federation fails is kept with its `error` (and run again on resume);
    the others go on. On cancel the finished cells stay saved and `Cancelled` is raised.
    `write_files(results, out_dir)` writes the report files at the end (also after a cancel).
    """
    cancel = cancel or CancelToken()
    policy = policy or VerificationPolicy()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"The output directory {out_dir} cannot be created.", detail=str(exc)) from exc
    results = _ResultsFile(out_dir / RESULTS_FILE, matrix, policy)
    done = results.done()
    cells = matrix.cells()
    pending = [k for k in cells if k not in done]
    # Cells finished before the field existed: their attacked federation stays as it ran.
    unfilled = [k for k in cells if k in done and REFERENCE_BACKDOOR not in done[k]]
    # A missing file or an untrainable set fails before any run; finished datasets are not reloaded.
    for dataset in dict.fromkeys(k.dataset for k in [*unfilled, *pending]):
        load_dataset(dataset).require_trainable()
    failed: list[str] = []
    progress(Progress(Stage.EVALUATION, f"{len(cells) - len(pending)} of {len(cells)} cells already done",
                      fraction=(len(cells) - len(pending)) / len(cells)))
    with tempfile.TemporaryDirectory(prefix="medfedchain-evaluate-") as scratch:
        federations = _Federations(matrix, policy, results, Path(scratch), cancel)
        try:
            for key in unfilled:
                cancel.raise_if_cancelled()
                ran = federations.ran
                try:
                    done[key][REFERENCE_BACKDOOR] = federations.reference_backdoor(key)
                except Cancelled:
                    raise
                except CoreError as exc:
                    log.warning("evaluation cell %s: no reference backdoor success: %s", _label(key),
                                describe_error(exc))
                    failed.append(f"{_label(key)}: no reference backdoor success: {describe_error(exc)}")
                    continue
                if federations.ran > ran:
                    progress(Progress(Stage.EVALUATION,
                                      f"{_label(key)}: its reference federation measured the triggers"))
            for index, key in enumerate(pending):
                cancel.raise_if_cancelled()
                label = _label(key)
                try:
                    cell = federations.cell(key)
                except Cancelled:
                    raise
                except CoreError as exc:
                    log.warning("evaluation cell %s failed: %s", label, describe_error(exc))
                    failed.append(f"{label}: {describe_error(exc)}")
                    cell = asdict(key) | {"error": describe_error(exc)}
                results.add_cell(cell)
                finished = len(cells) - len(pending) + index + 1
                progress(Progress(Stage.EVALUATION, label, fraction=finished / len(cells),
                                  values={"cells_done": finished, "cells": len(cells)}))
        finally:
            position = {key: index for index, key in enumerate(cells)}
            results.data["cells"].sort(key=lambda c: position.get(CellKey.of(c), -1))
            results.save()
            if write_files is not None:
                write_files(results.data, out_dir)
    return EvaluationDone(results.data, results.path, federations.ran, len(cells) - len(pending), failed)
