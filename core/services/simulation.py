"""Use case: run a whole federation of simulated hospitals, some of them attackers.

The CLI's `simulate` and the GUI's demo federation both call `run_simulation`; it loads and
partitions the data, builds the hospitals, wires verifier, aggregator and recorders, runs the
rounds, and returns a JSON-ready report. Every round is in SQLite (and on the ledger) as it
finishes, so a cancelled or failed run keeps what it completed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.attacks.base import Attack, MeasurableBackdoor
from core.attacks.registry import create_attack
from core.data.dataset import Dataset
from core.data.loading import dataset_summary, load_dataset
from core.data.partition import SCHEMES, FederatedSplit, partition
from core.errors import Cancelled, ConfigError, CoreError, describe_error
from core.federation.aggregators import AGGREGATORS
from core.federation.channel import COORDINATOR, OBSERVER, Phase, RoundChannel, RoundOpened, RoundTiming
from core.federation.hospital import HospitalData, LocalHospital
from core.federation.interfaces import Aggregator, Verifier
from core.federation.policy import VerificationPolicy
from core.federation.roles.archive import RoundArchive
from core.federation.roles.coordinator import Coordinator, Schedule
from core.federation.roles.node import HospitalNode
from core.federation.roles.driver import ScoringDriver
from core.federation.roles.runner import run_in_turn
from core.federation.types import HospitalInfo, RoundOutcome, Scores
from core.models.architecture import ModelSpec, spec_for
from core.models.evaluation import ModelEvaluator
from core.models.training import TrainingConfig, initial_weights, train_model
from core.models.weights import Weights, check_compatible, from_bytes, subtract
from core.progress import CancelToken, Progress, ProgressSink, Stage, ignore_progress
from core.services import wiring
from core.services.recovery import mark_interrupted_runs, process_marker
from core.settings import Settings, check_rpc_url
from core.state.models import FederationStatus
from core.state.db import Database
from core.state.recorder import SqliteRecorder, unfinished_rounds
from core.state.role_state import SqliteRoleState

log = logging.getLogger(__name__)

# Simulated phases end as soon as every hospital has acted; the deadlines only matter for a
# hospital that drops out, and the simulated clock jumps to them.
SIMULATION_TIMING = RoundTiming(commit_seconds=3600, vote_seconds=3600, aggregate_seconds=3600)
DEFAULT_ALPHA = 0.5


@dataclass(frozen=True)
class SimulationConfig:
    """Everything `simulate` can be asked; defaults give the README's demo federation."""

    hospitals: int = 5
    malicious: int = 0
    attack: str = "none"
    attack_params: dict[str, Any] = field(default_factory=dict)
    rounds: int = 5
    dataset: str = "breast_cancer"
    label_column: str | None = None
    drop_columns: tuple[str, ...] = ()
    partition: str = "iid"
    alpha: float | None = None  # the Dirichlet concentration; None: DEFAULT_ALPHA (dirichlet only)
    aggregator: str = "fedavg"
    verifier: str = "plaintext"
    secure: bool = False
    seed: int = 0
    local_epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 0.005
    architecture: str | None = None
    ledger: bool = True
    rpc_url: str | None = None
    policy: VerificationPolicy | None = None  # None: the settings' policy
    # The last `left_out` hospitals of the split take no part and their data goes unused: the
    # federation an evaluation compares a defence with, the attackers' hospitals left out.
    left_out: int = 0
    # Attacks (names, default parameters) whose trigger every round's model is also tested on, as
    # metric `trigger_metric(attack)`: what a federation without those attackers answers to it
    # anyway (on tables the trigger can be real evidence for the target class).
    measure_triggers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.hospitals < 1:
            raise ConfigError("A federation needs at least one hospital.")
        if not 0 <= self.malicious <= self.hospitals:
            raise ConfigError(f"--malicious must lie between 0 and the {self.hospitals} hospitals.")
        if self.malicious > 0 and self.attack == "none":
            raise ConfigError("Malicious hospitals need an --attack other than 'none'.")
        if self.rounds < 1:
            raise ConfigError("Run at least one round.")
        if not 0 <= self.left_out < self.hospitals or (self.left_out and self.malicious):
            raise ConfigError("Hospitals left out must be fewer than all of them, and leave no attacker.")
        if self.partition not in SCHEMES:
            raise ConfigError(f"Unknown partition '{self.partition}'; choose one of {', '.join(SCHEMES)}.")
        if self.alpha is not None and self.partition != "dirichlet":
            raise ConfigError(f"--alpha sets the skew of --partition dirichlet; '{self.partition}' has none. "
                              "Leave out --alpha, or use --partition dirichlet.")
        if self.aggregator not in AGGREGATORS:
            raise ConfigError(f"Unknown aggregator '{self.aggregator}'; choose one of {', '.join(AGGREGATORS)}.")
        if self.verifier not in wiring.VERIFIERS:
            raise ConfigError(f"Unknown verifier '{self.verifier}'; choose one of {', '.join(wiring.VERIFIERS)}.")
        if self.secure and (self.aggregator != "fedavg" or self.verifier != "plaintext"):
            raise ConfigError("--secure verifies and aggregates in SMPC: it needs --aggregator fedavg "
                              "and --verifier plaintext (the plaintext rule it mirrors).")
        if self.local_epochs < 1 or self.batch_size < 1 or not 0 < self.learning_rate < 1:
            raise ConfigError("Local epochs and batch size must be positive, the learning rate in (0, 1).")
        object.__setattr__(self, "rpc_url", check_rpc_url(self.rpc_url))

    @property
    def dirichlet_alpha(self) -> float:
        return DEFAULT_ALPHA if self.alpha is None else self.alpha

    def warnings(self) -> list[str]:
        """What this configuration lets happen that the user should know before it runs."""
        found = []
        if self.malicious and 2 * self.malicious >= self.hospitals:
            found.append(
                f"{self.malicious} of the {self.hospitals} hospitals are malicious: verification is only "
                f"safe while fewer than half are (here at most {(self.hospitals - 1) // 2}); the attackers "
                "can outvote the honest hospitals and have their updates accepted.")
        return found

    def malicious_ids(self) -> list[str]:
        """The attackers are the last `malicious` hospitals: easy to spot in every report."""
        return [f"hospital-{i}" for i in range(self.hospitals - self.malicious + 1, self.hospitals + 1)]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["drop_columns"] = list(self.drop_columns)
        if self.measure_triggers:
            d["measure_triggers"] = list(self.measure_triggers)
        else:  # recorded as before it existed, so a run stays comparable with its older twins
            del d["measure_triggers"]
        if self.partition == "dirichlet":
            d["alpha"] = self.dirichlet_alpha
        else:
            del d["alpha"]
        d["policy"] = self.policy.as_dict() if self.policy else None
        return d


@dataclass
class Federation:
    """A federation ready to run: its data, and every role on one channel."""

    config: SimulationConfig
    dataset: Dataset
    split: FederatedSplit
    spec: ModelSpec
    training: TrainingConfig
    hospitals: list[LocalHospital]
    channel: RoundChannel
    coordinator: Coordinator
    nodes: list[HospitalNode]
    archive: RoundArchive
    starting_weights: Weights  # what the run's first round starts from
    sqlite: SqliteRecorder
    evaluator: ModelEvaluator
    attack: Attack | None
    drivers: list[ScoringDriver] = field(default_factory=list)  # the SMPC driver of a secure run
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Releases the verifiers, the channel and the database this federation opened."""
        try:
            for close in self.closers:
                close()
        finally:
            self.sqlite.database.close()


def _training(config: SimulationConfig) -> TrainingConfig:
    return TrainingConfig(epochs=config.local_epochs, batch_size=config.batch_size,
                          learning_rate=config.learning_rate, seed=config.seed)


def _root_update(spec: ModelSpec, root: Dataset, training: TrainingConfig) -> Callable[[Weights], Weights]:
    """FLTrust's trusted root update: here trained on hospital-1's validation split, the
    stand-in for the small clean dataset FLTrust assumes the server holds."""

    def update(global_weights: Weights) -> Weights:
        result = train_model(spec, root, training, initial_weights=global_weights)
        return subtract(result.weights, global_weights)

    return update


def prepare_federation(config: SimulationConfig, settings: Settings,
                       progress: ProgressSink = ignore_progress) -> Federation:
    """Loads and splits the data and wires every role of `config`'s federation on one channel."""
    for warning in config.warnings():
        log.warning("%s", warning)
    progress(Progress(Stage.LOADING, f"loading {config.dataset}"))
    dataset = load_dataset(config.dataset, label_column=config.label_column, drop_columns=config.drop_columns)
    dataset.require_trainable()
    split = partition(dataset, config.hospitals, scheme=config.partition, alpha=config.dirichlet_alpha,
                      seed=config.seed)
    taking_part = split.hospitals[: config.hospitals - config.left_out]
    spec = spec_for(dataset, config.architecture)
    training = _training(config)
    malicious = set(config.malicious_ids())
    attack = create_attack(config.attack, **config.attack_params) if config.malicious else None
    policy = config.policy or settings.policy
    hospitals = [
        LocalHospital(
            HospitalInfo(h.hospital_id, h.hospital_id.replace("-", " ").title(), h.hospital_id in malicious),
            HospitalData(h.train, h.validation),
            spec,
            training,
            attack=attack if h.hospital_id in malicious else None,
            colluders=sorted(malicious),
            num_hospitals=len(taking_part),
            policy=policy,
        )
        for h in taking_part
    ]
    database = wiring.open_state(settings)
    mark_interrupted_runs(database)
    sqlite = SqliteRecorder(
        database,
        federation_name=f"{config.dataset}: {config.hospitals} hospitals, {config.malicious} x {config.attack}",
        config=config.as_dict() | {"process": process_marker()},
        blob_dir=settings.blob_dir,
    )
    closers: list[Callable[[], None]] = []
    try:
        if config.ledger:
            progress(Progress(Stage.LOADING, "opening the ledger"))
        channels = wiring.build_simulation_channels(
            settings, [h.info.hospital_id for h in hospitals], ledger=config.ledger, rpc_url=config.rpc_url
        )
        closers.append(channels.close)
        verifier: Verifier
        aggregator: Aggregator
        drivers: list[ScoringDriver] = []
        if config.secure:
            secure = wiring.build_secure_simulation(spec, settings, channels.channel(OBSERVER))
            closers.append(secure.close)
            aggregator = secure.aggregator
            verifier_of: Callable[[str], Verifier] = secure.owner
            global_check: Aggregator | None = secure.global_check
            drivers.append(ScoringDriver(channels.channel(OBSERVER), secure.scoring, progress=progress))
            verifies = True
        else:
            root = _root_update(spec, split.hospitals[0].validation, training) if config.aggregator == "fltrust" else None
            verifier, aggregator = wiring.build_plaintext(
                config.verifier, config.aggregator, spec, num_malicious=config.malicious, root_update=root
            )
            closers.append(verifier.close)
            verifier_of = lambda _hid: verifier  # noqa: E731 - every simulated node shares the plaintext verifier
            global_check = None
            verifies = verifier.verifies
        evaluator = ModelEvaluator(spec)
        test = split.test
        # The test set of each trigger metric: those asked for, and the attack's own.
        triggered = {trigger_metric(a): _triggered_test_set(a, test) for a in config.measure_triggers}
        if isinstance(attack, MeasurableBackdoor):
            triggered["backdoor_success"] = attack.backdoor_test_set(test)

        def evaluate(weights: Weights) -> dict[str, float]:
            metrics = {"accuracy": evaluator.accuracy(weights, test)}
            metrics |= {key: evaluator.accuracy(weights, data)
                        for key, data in triggered.items() if data.num_samples}
            return metrics

        # Honest nodes are stepped first, so an attack plugin that asks for the round's other
        # updates (the omniscient adversary of robustness research) sees them before it commits.
        ordered = sorted(hospitals, key=lambda h: h.attack is not None)
        # Each simulated node keeps its ballots in this home's database, as a site's node does, so
        # the audit can open every vote's scores against its hash on the ledger.
        nodes = [HospitalNode(channels.channel(h.info.hospital_id), h, verifier_of(h.info.hospital_id), policy,
                              progress=progress, global_check=global_check,
                              state=SqliteRoleState(database, sqlite.federation_id, f"node:{h.info.hospital_id}"))
                 for h in ordered]
        coordinator_channel = channels.channel(COORDINATOR)
        start = initial_weights(spec, config.seed)
        done, starting = _continuation(coordinator_channel, start)
        # The home's ledger is the federation's record: a later run continues its rounds (and first
        # finishes one a killed run left open) with `config.rounds` more.
        schedule = Schedule(rounds=done + config.rounds, policy_digest=policy.digest(), timing=SIMULATION_TIMING,
                            verified=verifies)
        coordinator = Coordinator(coordinator_channel, aggregator, schedule, start, progress=progress)
        by_id = {n.hospital_id: n for n in nodes}

        def scores_of(attempt: int, validator_id: str) -> dict[str, Scores] | None:
            node = by_id.get(validator_id)
            ballot = node.ballot(attempt) if node is not None else None
            return ballot.scores if ballot is not None else None

        def failure_of(attempt: int, hospital_id: str) -> str | None:
            node = by_id.get(hospital_id)
            return node.failure(attempt) if node is not None else None

        carried = _carried_records(config, settings, database, coordinator_channel) if config.ledger else {}
        archive = RoundArchive(channels.channel(OBSERVER), sqlite, policy, evaluate=evaluate, scores=scores_of,
                               failures=failure_of, hospitals={h.info.hospital_id: h.info for h in hospitals},
                               progress=progress, from_round=done + 1, carried=carried)
        return Federation(config, dataset, split, spec, training, hospitals, channels.channel(OBSERVER), coordinator,
                          nodes, archive, starting, sqlite, evaluator, attack, drivers, closers)
    except BaseException as exc:
        # Nothing ran: the run is on record as failed with its reason, and nothing stays open.
        try:
            sqlite.finish(FederationStatus.FAILED, message=describe_error(exc))
        finally:
            for close in closers:
                close()
            database.close()
        raise


def trigger_metric(attack: str) -> str:
    """The round metric holding the success of `attack`'s trigger (`SimulationConfig.measure_triggers`)."""
    return f"backdoor_success:{attack}"


def _triggered_test_set(attack: str, test: Dataset) -> Dataset:
    """`test` with the trigger of `attack` (default parameters) and its target label."""
    measured = create_attack(attack)
    if not isinstance(measured, MeasurableBackdoor):
        raise ConfigError(f"The attack '{attack}' plants no trigger whose success could be measured.")
    return measured.backdoor_test_set(test)


def _carried_records(config: SimulationConfig, settings: Settings, database: Database,
                     channel: RoundChannel) -> dict[int, SqliteRecorder]:
    """The rounds an earlier run on this ledger stopped in (killed mid-round, or gave up), each
    with that run's recorder: this run's archive carries their record on from the chain, so the
    local state ends up as the chain has the round, whoever finishes it."""
    node = config.rpc_url or settings.rpc_url

    def same_ledger(recorded: dict[str, Any]) -> bool:
        return recorded.get("ledger") is True and (recorded.get("rpc_url") or settings.rpc_url) == node

    events, _ = channel.events(0)
    starts = {(e.round_number, e.previous_hash) for e in events if isinstance(e, RoundOpened)}
    return {n: SqliteRecorder(database, federation_id, blob_dir=settings.blob_dir)
            for n, (federation_id, previous_hash) in unfinished_rounds(database, same_ledger).items()
            if (n, previous_hash) in starts}


def _continuation(channel: RoundChannel, start: Weights) -> tuple[int, Weights]:
    """The rounds this home's ledger already finalised and the model the next one starts from,
    refusing a ledger whose federation trains another model than this run's."""
    view = channel.current_round()
    if view is None:
        return 0, start
    done = view.round_number if view.phase is Phase.FINAL else view.round_number - 1
    if done == 0:
        return 0, start
    last = channel.round(done)
    assert last is not None
    try:
        weights = from_bytes(channel.get_blob(last.global_hash, COORDINATOR))
        check_compatible(weights, start)
    except CoreError as exc:
        raise ConfigError(
            "This data directory's ledger holds a federation of another model; run this one in "
            "another --home (or with --no-ledger).", detail=describe_error(exc)) from exc
    return done, weights


def round_report(outcome: RoundOutcome, malicious: set[str]) -> dict[str, Any]:
    """One round as the JSON report and the CLI table show it."""
    models = []
    for decision in outcome.decisions:
        votes = [v for v in outcome.votes if v.candidate_id == decision.candidate_id]
        models.append({
            "hospital": decision.candidate_id,
            "malicious": decision.candidate_id in malicious,
            "status": decision.status.value,
            "model_hash": decision.model_hash,
            "accepts": decision.accepts,
            "rejects": decision.rejects,
            "votes": {v.validator_id: "accept" if v.accept else "reject" for v in votes},
            "scores": {v.validator_id: v.scores.as_dict() for v in votes if v.scores is not None},
        })
    return {
        "round": outcome.round_number,
        "accuracy": outcome.metrics.get("accuracy"),
        "metrics": outcome.metrics,
        "previous_hash": outcome.previous_hash,
        "global_hash": outcome.global_hash,
        "contributors": outcome.contributors,
        "models": models,
        "failures": [asdict(f) for f in outcome.failures],
        "durations": outcome.durations,
    }


def run_simulation(
    config: SimulationConfig,
    settings: Settings,
    progress: ProgressSink = ignore_progress,
    cancel: CancelToken | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Runs every round and returns the report; each finished round also goes to `on_round`."""
    cancel = cancel or CancelToken()
    federation = prepare_federation(config, settings, progress)
    malicious = set(config.malicious_ids())
    report: dict[str, Any] = {
        "config": config.as_dict(),
        "dataset": dataset_summary(federation.dataset),
        "model": federation.spec.describe(),
        "federation_id": federation.sqlite.federation_id,
        "database": str(settings.db_path),
        "ledger": (config.rpc_url or settings.rpc_url or "embedded chain") if config.ledger else None,
        "hospitals": [
            {"hospital": h.info.hospital_id, "malicious": h.info.malicious,
             "train_samples": h.data.train.num_samples, "validation_samples": h.data.validation.num_samples}
            for h in federation.hospitals
        ],
        "test_samples": federation.split.test.num_samples,
        "rounds": [],
    }
    status, message = FederationStatus.FAILED, None
    reported = 0

    def report_new_rounds() -> None:
        nonlocal reported
        for outcome in federation.archive.outcomes[reported:]:
            row = round_report(outcome, malicious)
            report["rounds"].append(row)
            if on_round is not None:
                on_round(row)
        reported = len(federation.archive.outcomes)

    try:
        report["initial_accuracy"] = federation.evaluator.accuracy(federation.starting_weights,
                                                                    federation.split.test)
        run_in_turn(federation.channel, federation.coordinator, federation.nodes, federation.archive, cancel,
                    on_pass=report_new_rounds, drivers=federation.drivers)
        report_new_rounds()
        status = FederationStatus.COMPLETED
    except (Cancelled, KeyboardInterrupt):
        status, message = FederationStatus.CANCELLED, "cancelled by the user"
        raise
    except BaseException as exc:  # any layer's error (a lost ledger node too): on record with its reason
        message = describe_error(exc)
        raise
    finally:
        report["final_accuracy"] = report["rounds"][-1]["accuracy"] if report["rounds"] else None
        report["status"] = status.value
        try:
            federation.sqlite.finish(status, message=message)
        finally:
            federation.close()
    report["summary"] = summarise(report)
    return report


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Counts that answer "did verification work?" at a glance."""
    models = [m for r in report["rounds"] for m in r["models"]]
    def count(malicious: bool, status: str) -> int:
        return sum(1 for m in models if m["malicious"] is malicious and m["status"] == status)
    return {
        "malicious_rejected": count(True, "rejected"),
        "malicious_accepted": count(True, "accepted"),
        "honest_accepted": count(False, "accepted"),
        "honest_rejected": count(False, "rejected"),
        "accuracy_per_round": [r["accuracy"] for r in report["rounds"]],
        "mean_round_seconds": float(np.mean([sum(r["durations"].values()) for r in report["rounds"]]))
        if report["rounds"] else 0.0,
    }
