"""Use cases of a real deployment: run this machine's hospital node, or the coordinator.

Each site runs one role, with only its own key (the keystore in its data directory) and its own
data. `open_node` / `open_coordinator` check the consortium file against the chain (signature,
chain id, contract code, this account's membership), serve the site's model store on the address
the registry names, and build the role on a `LedgerChannel`: the same `HospitalNode` /
`Coordinator` / `RoundArchive` classes a simulation steps in one process. `Site.run` steps them
until cancelled, polling the chain; everything learned goes into the site's SQLite state, so a
site killed at any point carries on from the chain when it starts again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.attacks.registry import create_attack
from core.data.loading import load_dataset
from core.data.partition import partition
from core.errors import ConfigError
from core.federation.aggregators import create_aggregator
from core.federation.channel import COORDINATOR, Phase, RoundChannel
from core.federation.consortium import Consortium, check_dataset_fits
from core.federation.hospital import HospitalData, LocalHospital
from core.federation.plaintext_verifier import PlaintextVerifier
from core.federation.roles.archive import RoundArchive
from core.federation.interfaces import Aggregator
from core.federation.roles.coordinator import Coordinator, Schedule
from core.federation.roles.driver import ScoringDriver
from core.federation.roles.node import HospitalNode
from core.federation.roles.runner import Role
from core.federation.types import HospitalInfo, Scores
from core.models.evaluation import ModelEvaluator
from core.models.training import TrainingConfig, initial_weights
from core.models.weights import Weights
from core.progress import CancelToken, Progress, ProgressSink, Stage, ignore_progress
from core.services import wiring
from core.services.consortium import Site as ConsortiumSite
from core.services.consortium import check_consortium
from core.settings import Settings
from core.state.db import Database
from core.state.models import Federation
from core.state.queries import find_federation
from core.state.recorder import SqliteRecorder
from core.state.role_state import SqliteRoleState
from ledger.errors import NodeUnavailable

log = logging.getLogger(__name__)

# Aggregators a node can recompute from the accepted updates alone (FLTrust needs the server's
# private root data, so a node cannot check it).
CHECKABLE_AGGREGATORS = ("fedavg", "krum", "median", "trimmed_mean")
OUTAGE_RETRY_SECONDS = 5.0
DRIVER_PARTY = "driver"  # the SMPC driver's name among a secure consortium's parties
EXIT_AT_ENV = "MEDFED_TEST_EXIT_AT"  # "<stage>:<round>": the process exits there (restart tests)


@dataclass(frozen=True)
class NodePlan:
    """What `python main.py node` is asked."""

    consortium: Path
    dataset: str
    label_column: str | None = None
    drop_columns: tuple[str, ...] = ()
    rpc_url: str | None = None
    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 0.005
    seed: int = 0
    # A simulated attacker is a hospital node with an attack plugin (tests and benchmarks).
    attack: str | None = None
    attack_params: dict[str, Any] = field(default_factory=dict)
    colluders: tuple[str, ...] = ()
    poll_seconds: float = 0.5
    # The keystore password typed in the app; None: MEDFED_KEYSTORE_PASSWORD.
    keystore_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CoordinatorPlan:
    consortium: Path
    rounds: int
    rpc_url: str | None = None
    seed: int = 0
    poll_seconds: float = 0.5
    linger_seconds: float = 60.0  # serving the final global model after the last round


class Site:
    """One running role of a deployment with its archive, its model store and its connections."""

    def __init__(self, name: str, role: HospitalNode | Coordinator, archive: RoundArchive,
                 database: Database, closers: list[Callable[[], None]], poll_seconds: float,
                 progress: ProgressSink = ignore_progress, *, helpers: Sequence[Role] = ()) -> None:
        self.name = name
        self.helpers = list(helpers)  # roles run beside the main one: the coordinator's SMPC driver
        self.progress = progress
        self.linger_seconds = 0.0
        self.role = role
        self.archive = archive
        self.database = database
        self._closers = closers
        self.poll_seconds = poll_seconds

    @property
    def channel(self) -> RoundChannel:
        return self.role.channel

    def step(self, cancel: CancelToken | None = None) -> bool:
        acted = self.role.step(cancel)
        for helper in self.helpers:
            acted = helper.step(cancel) or acted
        return self.archive.step() or acted

    def run(self, cancel: CancelToken, *, until_round: int | None = None) -> None:
        """Steps the role and its archive until cancelled; with `until_round`, returns once that
        round is final and archived (the coordinator returns once its schedule is done)."""
        while not cancel.cancelled:
            try:
                acted = self.step(cancel)
            except NodeUnavailable as exc:
                # The chain is the round's state: nothing is lost while its node is away, so a
                # site waits for it rather than stopping (its deadlines still hold on chain).
                log.warning("%s; retrying in %.0f s", exc.user_message, OUTAGE_RETRY_SECONDS)
                self.progress(Progress(Stage.FAILED, f"ledger node unreachable, retrying: {exc.user_message}"))
                cancel.wait(OUTAGE_RETRY_SECONDS)
                continue
            if self._finished(until_round):
                self.archive.step()
                if isinstance(self.role, Coordinator) and self.linger_seconds > 0:
                    # The last global model is fetched from this store: keep serving it a while.
                    self.progress(Progress(Stage.DONE, f"every round is final; serving the models for "
                                           f"{self.linger_seconds:.0f} s more"))
                    cancel.wait(self.linger_seconds)
                return
            if not acted:
                cancel.wait(self.poll_seconds)

    def _finished(self, until_round: int | None) -> bool:
        if isinstance(self.role, Coordinator):
            return self.role.done
        if until_round is None:
            return False
        view = self.channel.round(until_round)
        return view is not None and view.phase is Phase.FINAL and str(view.attempt) in self.role.checked

    def close(self) -> None:
        try:
            for close in reversed(self._closers):
                close()
        finally:
            self.database.close()


def exit_hook(progress: ProgressSink, environ: dict[str, str] | None = None) -> ProgressSink:
    """For restart tests: the process exits (as if killed) when it reports the named step."""
    target = (environ if environ is not None else dict(os.environ)).get(EXIT_AT_ENV)
    if not target:
        return progress
    stage, _, number = target.partition(":")

    def sink(event: Progress) -> None:
        progress(event)
        if event.stage.value == stage and str(event.round_number) == number:
            log.warning("exiting at %s as %s asks", target, EXIT_AT_ENV)
            os._exit(75)

    return sink


def federation_name(consortium: Consortium) -> str:
    """The name of this site's federation row for the consortium (what the app looks it up by)."""
    return f"{consortium.name} ({consortium.contract.address})"


def _federation_row(database: Database, consortium: Consortium) -> int:
    """This site's record of the consortium: one federation row, found again at every start."""
    name = federation_name(consortium)
    existing = find_federation(database, name)
    if existing is not None:
        return existing.id
    with database.session() as session:
        row = Federation(name=name, config={"consortium": consortium.name,
                                            "contract": consortium.contract.address,
                                            "chain_id": consortium.chain_id})
        session.add(row)
        session.flush()
        return int(row.id)


def _bind_address(store_url: str) -> tuple[str, int]:
    parts = urlsplit(store_url)
    if not parts.hostname or not parts.port:
        raise ConfigError("The model store URL must name a host and a port.", detail=store_url)
    return parts.hostname, parts.port


def _open_site(settings: Settings, plan_consortium: Path,
               rpc_url: str | None) -> tuple[ConsortiumSite, Database, int, list[Callable[[], None]]]:
    site = check_consortium(plan_consortium, settings=settings, rpc_url=rpc_url)
    database = wiring.open_state(settings)
    return site, database, _federation_row(database, site.consortium), []


def open_node(plan: NodePlan, settings: Settings, progress: ProgressSink = ignore_progress) -> Site:
    """This machine's hospital in the consortium, ready to `run`."""
    progress = exit_hook(progress)
    site, database, federation_id, closers = _open_site(settings, plan.consortium, plan.rpc_url)
    try:
        if site.hospital_id is None:
            raise ConfigError("This machine's account is the consortium's coordinator, not a hospital: "
                              "run `coordinator` here, or use a hospital's data directory.")
        consortium = site.consortium
        dataset = load_dataset(plan.dataset, label_column=plan.label_column, drop_columns=plan.drop_columns)
        check_dataset_fits(consortium, dataset)
        dataset.require_trainable()
        own = partition(dataset, 1, seed=plan.seed)
        spec = consortium.model_spec()
        policy = consortium.verification_policy()
        training = TrainingConfig(epochs=plan.epochs, batch_size=plan.batch_size,
                                  learning_rate=plan.learning_rate, seed=plan.seed)
        hid = site.hospital_id
        attack = create_attack(plan.attack, **plan.attack_params) if plan.attack else None
        hospital = LocalHospital(HospitalInfo(hid, hid, malicious=attack is not None, account=site.account),
                                 HospitalData(own.hospitals[0].train, own.hospitals[0].validation), spec, training,
                                 attack=attack, colluders=plan.colluders, num_hospitals=len(consortium.members),
                                 policy=policy)
        member = consortium.member(site.account)
        assert member is not None
        channel = wiring.open_deployment_channel(settings, consortium, hid, rpc_url=plan.rpc_url,
                                                 serve=_bind_address(member.store_url), closers=closers,
                                                 password=plan.keystore_password)
        recorder = SqliteRecorder(database, federation_id, blob_dir=settings.blob_dir)
        aggregator = consortium.aggregator
        global_check: Aggregator | None
        if consortium.secure:
            # Updates stay shares at the SMPC players: the node checks each published global model
            # against the share holders' weighted sum of what the chain accepted.
            secure = wiring.secure_node(consortium, settings, hid, closers)
            verifier, global_check = secure.verifier, secure.global_check
        else:
            verifier = PlaintextVerifier(spec)
            global_check = create_aggregator(aggregator) if aggregator in CHECKABLE_AGGREGATORS else None
        node = HospitalNode(
            channel, hospital, verifier, policy, global_check=global_check,
            state=SqliteRoleState(database, federation_id, "node"), progress=progress,
        )
        evaluator = ModelEvaluator(spec)
        test = own.test

        def evaluate(weights: Weights) -> dict[str, float]:
            return {"accuracy": evaluator.accuracy(weights, test)}

        def own_scores(attempt: int, validator_id: str) -> dict[str, Scores] | None:
            ballot = node.ballot(attempt) if validator_id == hid else None
            return ballot.scores if ballot is not None else None

        def own_failure(attempt: int, hospital_id: str) -> str | None:
            return node.failure(attempt) if hospital_id == hid else None

        archive = RoundArchive(channel, recorder, policy, evaluate=evaluate, scores=own_scores,
                               failures=own_failure, state=SqliteRoleState(database, federation_id, "archive"),
                               progress=progress)
        return Site(hid, node, archive, database, closers, plan.poll_seconds, progress)
    except BaseException:
        for close in reversed(closers):
            close()
        database.close()
        raise


def open_coordinator(plan: CoordinatorPlan, settings: Settings, progress: ProgressSink = ignore_progress) -> Site:
    """The consortium's coordinator on this machine, ready to `run` its rounds."""
    if plan.rounds < 1:
        raise ConfigError("Run at least one round.")
    progress = exit_hook(progress)
    site, database, federation_id, closers = _open_site(settings, plan.consortium, plan.rpc_url)
    try:
        consortium = site.consortium
        if site.account.lower() != consortium.coordinator.address.lower():
            raise ConfigError("This machine's account is not the consortium's coordinator.",
                              detail=f"{site.account} vs {consortium.coordinator.address}")
        spec = consortium.model_spec()
        policy = consortium.verification_policy()
        channel = wiring.open_deployment_channel(settings, consortium, COORDINATOR, rpc_url=plan.rpc_url,
                                                 serve=_bind_address(consortium.coordinator.store_url),
                                                 closers=closers)
        helpers: list[Role] = []
        if consortium.secure:
            from core.services.tls import check_tls_identity

            # The coordinator's process is the SMPC driver: it scores and aggregates in SMPC.
            check_tls_identity(consortium, settings.tls_dir, DRIVER_PARTY)
            secure = wiring.open_secure_driver(consortium, settings, closers)
            aggregator: Aggregator = secure.aggregator
            helpers.append(ScoringDriver(channel, secure.scoring, progress=progress,
                                         state=SqliteRoleState(database, federation_id, "driver")))
        else:
            aggregator = create_aggregator(consortium.aggregator)
        schedule = Schedule(rounds=plan.rounds, policy_digest=policy.digest(), timing=consortium.round_timing())
        coordinator = Coordinator(channel, aggregator, schedule, initial_weights(spec, plan.seed), progress=progress)
        recorder = SqliteRecorder(database, federation_id, blob_dir=settings.blob_dir)
        archive = RoundArchive(channel, recorder, policy, state=SqliteRoleState(database, federation_id, "archive"),
                               progress=progress)
        site = Site(COORDINATOR, coordinator, archive, database, closers, plan.poll_seconds, progress,
                    helpers=helpers)
        site.linger_seconds = plan.linger_seconds
        return site
    except BaseException:
        for close in reversed(closers):
            close()
        database.close()
        raise



@dataclass(frozen=True)
class PlayerPlan:
    """What `python main.py smpc-player` is asked."""

    consortium: Path
    name: str
    rpc_url: str | None = None


class PlayerSite:
    """One SMPC player of a secure consortium running on this machine until cancelled."""

    def __init__(self, name: str, closers: list[Callable[[], None]]) -> None:
        self.name = name
        self._closers = closers

    def run(self, cancel: CancelToken) -> None:
        while not cancel.cancelled:
            cancel.wait(1.0)

    def close(self) -> None:
        for close in reversed(self._closers):
            close()


def open_player(plan: PlayerPlan, settings: Settings) -> PlayerSite:
    """SMPC player `plan.name` of the consortium, serving on the address the file pins for it."""
    from core.services.consortium import check_party

    site = check_party(plan.consortium, settings=settings, rpc_url=plan.rpc_url, party=plan.name)
    if site.party.role != "player":
        raise ConfigError(f"'{plan.name}' is the consortium's {site.party.role}, not an SMPC player.")
    closers: list[Callable[[], None]] = []
    try:
        channel = wiring.open_reader_channel(settings, site.consortium, rpc_url=plan.rpc_url, closers=closers)
        wiring.open_secure_player(site.consortium, settings, plan.name, channel, closers)
        return PlayerSite(plan.name, closers)
    except BaseException:
        for close in reversed(closers):
            close()
        raise
