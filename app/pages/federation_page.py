"""The Federation page: a simulated federation (the demo) with its hospitals and each round's
steps, and "Join a consortium", this hospital's node in a real one (`consortium_panel`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QBrush
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.model import FEDERATION, NODE, TRAINING, AppModel
from app.notifier import report_error
from app.pages.consortium_panel import ConsortiumPanel
from app.widgets import ACCEPTED, NEUTRAL, REJECTED, item, local_time, percent, read_only_table, short_hash
from app.workers import Task
from core.attacks.registry import attack_names
from core.federation.aggregators import AGGREGATORS
from core.progress import CancelToken, Progress, ProgressSink, Stage
from core.services import datasets
from core.settings import update_settings
from core.state.queries import FederationView, RoundView, list_datasets, list_federations, list_rounds

# How the aggregator combo shows each of core's aggregators (the list itself is core's AGGREGATORS).
AGGREGATOR_LABELS = {"fedavg": "FedAvg (weighted mean)", "krum": "Krum", "median": "Coordinate-wise median",
                     "trimmed_mean": "Trimmed mean", "fltrust": "FLTrust"}
# The steps of a round in order, with the timeline's wording (secure wording when SMPC is on).
STEPS = (
    (Stage.TRAINING, "Local training", "Local training"),
    (Stage.COMMITMENT, "Commitment to each update", "Commitment to each update"),
    (Stage.VERIFICATION, "Verification on every hospital's data", "Encrypted verification (SMPC)"),
    (Stage.VOTING, "Votes", "Votes"),
    (Stage.AGGREGATION, "Aggregation of accepted updates", "Secure aggregation (SMPC)"),
    (Stage.RECORDING, "Recording (SQLite and ledger)", "Recording (SQLite and ledger)"),
)
STEP_ORDER = [s for s, _, _ in STEPS]
DEMO = {"hospitals": 5, "malicious": 1, "attack": "label_flip", "rounds": 2, "dataset": "breast_cancer",
        "aggregator": "fedavg", "secure": False, "local_epochs": 5}


class _ThreadWarnings(logging.Handler):
    """Hands the warnings logged on one thread to `show`: the records the CLI prints on stderr."""

    def __init__(self, show: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.show = show
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            self.show(record.getMessage())
        except RuntimeError:  # the page is gone (the app is closing); the log file still has it
            pass


@contextmanager
def _warnings_shown(show: Callable[[str], None]) -> Iterator[None]:
    """While the block runs on this thread, every warning it logs also goes to `show`."""
    handler = _ThreadWarnings(show)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


@dataclass
class _Participant:
    hospital_id: str
    malicious: bool
    status: str = "waiting"
    detail: str = ""


class FederationPage(QWidget):
    """Starts a simulated federation run in a worker; participants and timeline follow its progress
    events. The second tab joins this hospital to a real consortium."""

    title = "Federation"
    warned = Signal(str)  # a warning of the run, from the worker thread

    def __init__(self, model: AppModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self._task: Task | None = None
        self._demo = False
        self._secure = False
        self._known_ids: set[int] = set()
        self._participants: dict[str, _Participant] = {}
        self._round_items: dict[int, QTreeWidgetItem] = {}
        self._step_started: dict[tuple[int, Stage], float] = {}
        self._federations: list[FederationView] = []
        self._total_rounds = 1
        self._form_filled = False
        self._live_id: int | None = None  # the run watched live: its view stays until another is picked

        # -- where the federation runs
        self.embedded = QRadioButton("Embedded demo federation", objectName="embeddedRadio", checked=True)
        self.embedded.setToolTip("Simulated peer hospitals and an in-process ledger on this machine.")
        self.configured = QRadioButton("Simulated on the configured ledger node", objectName="configuredRadio")
        self.configured.setToolTip("Every hospital is still simulated on this machine; the rounds are recorded "
                                   "on the ledger node set in Settings (a test of that node, not a real "
                                   "federation). In secure mode the SMPC players run in this process.")
        mode_help = QLabel("Both run every hospital, and in secure mode the three SMPC players, on this machine; "
                           "the second records the rounds on the ledger node of Settings (a test of that node, "
                           "not a real federation).", objectName="caption")
        mode_help.setWordWrap(True)
        self.network_note = QLabel(objectName="caption")
        self.network_note.setWordWrap(True)
        group = QButtonGroup(self)
        group.addButton(self.embedded)
        group.addButton(self.configured)
        join_hint = QLabel("To take part in a real consortium with this hospital's own data, use the "
                           "<b>Join a consortium</b> tab.", objectName="caption")
        join_hint.setWordWrap(True)
        mode_box = QGroupBox("Where to run the simulation")
        mode_layout = QVBoxLayout(mode_box)
        mode_layout.addWidget(self.embedded)
        mode_layout.addWidget(self.configured)
        mode_layout.addWidget(mode_help)
        mode_layout.addWidget(self.network_note)
        mode_layout.addWidget(join_hint)

        # -- the run's configuration
        self.hospitals = QSpinBox(objectName="hospitalsSpin", minimum=2, maximum=20, value=5)
        self.attackers = QSpinBox(objectName="attackersSpin", minimum=0, maximum=5, value=1)
        self.attack = QComboBox(objectName="attackCombo")
        for name in attack_names():
            self.attack.addItem(name.replace("_", " "), name)
        self.attack.setCurrentIndex(max(self.attack.findData("label_flip"), 0))
        self.rounds = QSpinBox(objectName="roundsSpin", minimum=1, maximum=50, value=3)
        self.dataset = QComboBox(objectName="federationDatasetCombo")
        self.aggregator = QComboBox(objectName="aggregatorCombo")
        for name in AGGREGATORS:
            self.aggregator.addItem(AGGREGATOR_LABELS.get(name, name), name)
        self.local_epochs = QSpinBox(objectName="localEpochsSpin", minimum=1, maximum=50, value=5)
        self.secure = QCheckBox("Verify and aggregate inside SMPC (secure mode; slower)", objectName="secureCheck")
        config_box = QGroupBox("Federation")
        form = QFormLayout(config_box)
        form.addRow("Hospitals:", self.hospitals)
        form.addRow("Attacking hospitals:", self.attackers)
        form.addRow("Attack:", self.attack)
        form.addRow("Rounds:", self.rounds)
        form.addRow("Dataset:", self.dataset)
        form.addRow("Aggregator:", self.aggregator)
        form.addRow("Local epochs per round:", self.local_epochs)
        form.addRow(self.secure)

        self.start = QPushButton("Start federation run", objectName="startFederationButton")
        self.cancel = QPushButton("Cancel", objectName="cancelFederationButton", enabled=False)
        self.progress = QProgressBar(objectName="federationProgress", minimum=0, maximum=100, value=0)
        self.status = QLabel("Configure a federation and start it.", objectName="federationStatus")
        self.status.setWordWrap(True)
        self.warnings = QLabel(objectName="federationWarnings", visible=False)
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet("color: #8a4b00; background: #fff4e0; padding: 4px;")
        buttons = QHBoxLayout()
        buttons.addWidget(self.start)
        buttons.addWidget(self.cancel)

        self.runs = read_only_table(["Run", "Dataset", "Hospitals", "Verification", "Status", "Rounds",
                                     "Final accuracy", "Started"])
        self.runs.setObjectName("federationsTable")
        runs_box = QGroupBox("Federation runs on this machine")
        QVBoxLayout(runs_box).addWidget(self.runs)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(mode_box)
        left_layout.addWidget(config_box)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.progress)
        left_layout.addWidget(self.status)
        left_layout.addWidget(self.warnings)
        left_layout.addWidget(runs_box, 1)

        # -- what is happening
        self.participants = read_only_table(["Hospital", "Role", "Status", "Last step"])
        self.participants.setObjectName("participantsTable")
        participants_box = QGroupBox("Participants")
        QVBoxLayout(participants_box).addWidget(self.participants)
        self.timeline = QTreeWidget(objectName="timelineTree")
        self.timeline.setHeaderLabels(["Step", "State", "Time", "Detail"])
        self.timeline.setColumnWidth(0, 240)
        self.timeline.setColumnWidth(1, 75)
        self.timeline.setColumnWidth(2, 55)
        timeline_box = QGroupBox("Timeline of the rounds")
        QVBoxLayout(timeline_box).addWidget(self.timeline)
        self.log = QPlainTextEdit(objectName="eventLog", readOnly=True)
        self.log.setMaximumBlockCount(2000)
        log_box = QGroupBox("Events")
        QVBoxLayout(log_box).addWidget(self.log)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(participants_box)
        right.addWidget(timeline_box)
        right.addWidget(log_box)
        right.setStretchFactor(1, 2)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([600, 760])
        self.join = ConsortiumPanel(model)
        self.tabs = QTabWidget(objectName="federationTabs")
        self.tabs.addTab(splitter, "Simulated federation")
        self.tabs.addTab(self.join, "Join a consortium")
        QVBoxLayout(self).addWidget(self.tabs)

        self.hospitals.valueChanged.connect(lambda n: self.attackers.setMaximum(n - 1))
        self.attackers.valueChanged.connect(lambda n: self.attack.setEnabled(n > 0))
        self.secure.toggled.connect(self._secure_toggled)
        self.start.clicked.connect(self._start)
        self.cancel.clicked.connect(self._cancel)
        self.warned.connect(self._warned)
        self.runs.itemSelectionChanged.connect(self._show_selected)
        model.datasets_changed.connect(self._refresh_datasets)
        model.settings_changed.connect(self._settings_changed)
        model.federations_changed.connect(self.refresh)
        model.busy_changed.connect(self._update_buttons)
        self._refresh_datasets()
        self._settings_changed()
        self.refresh()

    # -- configuration ---------------------------------------------------------------------------

    @Slot()
    def _refresh_datasets(self) -> None:
        current = self.dataset.currentData()
        self.dataset.clear()
        for name in datasets.builtin_datasets():
            self.dataset.addItem(f"{name.replace('_', ' ')} (bundled)", {"source": name})
        for view in list_datasets(self.model.db):
            if view.name in datasets.builtin_datasets():
                continue
            request = datasets.request_for(view)
            self.dataset.addItem(f"{view.name} ({view.samples} cases)", request.as_dict())
        index = self.dataset.findData(current) if current else -1
        self.dataset.setCurrentIndex(max(index, 0))

    @Slot()
    def _settings_changed(self) -> None:
        url = self.model.settings.rpc_url
        self.configured.setEnabled(url is not None)
        if url is None and self.configured.isChecked():
            self.embedded.setChecked(True)
        self.network_note.setText(f"Settings: ledger node {url}." if url else
                                  "Settings: no ledger node configured. Set one on the Settings page to "
                                  "record a simulation on a real node.")

    @Slot(bool)
    def _secure_toggled(self, secure: bool) -> None:
        if secure:
            self.aggregator.setCurrentIndex(self.aggregator.findData("fedavg"))
        self.aggregator.setEnabled(not secure)

    def _config_values(self) -> dict[str, Any]:
        source = self.dataset.currentData() or {"source": "breast_cancer"}
        values: dict[str, Any] = {
            "hospitals": self.hospitals.value(), "malicious": self.attackers.value(),
            "attack": self.attack.currentData() if self.attackers.value() else "none",
            "rounds": self.rounds.value(), "dataset": source["source"],
            "label_column": source.get("label_column"), "drop_columns": tuple(source.get("drop_columns") or ()),
            "aggregator": self.aggregator.currentData(), "secure": self.secure.isChecked(),
            "local_epochs": self.local_epochs.value(),
        }
        if self.configured.isChecked() and self.model.settings.rpc_url:
            values["rpc_url"] = self.model.settings.rpc_url
        return values

    def start_demo(self) -> None:
        """Fills in the demo federation (5 hospitals, one label flipper) and starts it."""
        self.tabs.setCurrentIndex(0)
        self.embedded.setChecked(True)
        self.hospitals.setValue(DEMO["hospitals"])
        self.attackers.setValue(DEMO["malicious"])
        self.attack.setCurrentIndex(self.attack.findData(DEMO["attack"]))
        self.rounds.setValue(DEMO["rounds"])
        self.dataset.setCurrentIndex(self.dataset.findData({"source": DEMO["dataset"]}))
        self.aggregator.setCurrentIndex(self.aggregator.findData(DEMO["aggregator"]))
        self.secure.setChecked(DEMO["secure"])
        self.local_epochs.setValue(DEMO["local_epochs"])
        self._start(demo=True)

    # -- running ---------------------------------------------------------------------------------

    @Slot()
    def _start(self, demo: bool = False) -> None:
        values = self._config_values()
        db, settings = self.model.db, self.model.settings
        if not self.configured.isChecked():
            # Embedded means embedded: not the ledger node configured for the real network.
            settings = update_settings(settings, rpc_url=None)

        def work(progress: ProgressSink, cancel: CancelToken) -> int:
            from core.services.simulation import SimulationConfig, run_simulation
            from core.services.training import evaluate_federation

            with _warnings_shown(self.warned.emit):
                config = SimulationConfig(**values)
                report = run_simulation(config, settings, progress, cancel)
            progress(Progress(Stage.EVALUATION, "testing the final global model on the held-out data"))
            evaluate_federation(db, settings, int(report["federation_id"]))
            return int(report["federation_id"])

        self._demo = bool(demo)
        self._secure = bool(values["secure"])
        self._known_ids = {f.id for f in list_federations(self.model.db)}
        malicious = {f"hospital-{i}" for i in range(values["hospitals"] - values["malicious"] + 1,
                                                    values["hospitals"] + 1)}
        self._participants = {
            f"hospital-{i}": _Participant(f"hospital-{i}", f"hospital-{i}" in malicious)
            for i in range(1, values["hospitals"] + 1)
        }
        self._total_rounds = int(values["rounds"])
        self.timeline.clear()
        self._round_items = {}
        self._step_started = {}
        self.log.clear()
        self.warnings.clear()
        self.warnings.setVisible(False)
        self._log(f"Starting: {values['hospitals']} hospitals ({values['malicious']} attacking with "
                  f"{values['attack']}), {values['rounds']} round(s) on {values['dataset']}, "
                  f"{'SMPC' if values['secure'] else 'plaintext'} verification, {values['aggregator']}.")
        self._show_participants()
        self.progress.setValue(0)
        self.status.setText("Preparing the federation…")
        task = self.model.run(FEDERATION, work)
        task.progressed.connect(self._progressed)
        task.succeeded.connect(self._finished)
        task.failed.connect(self._failed)
        task.cancelled.connect(self._cancelled)
        task.done.connect(self._done)
        self._task = task
        self.model.start(task)
        self._update_buttons()

    @Slot()
    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.cancel.setEnabled(False)
            self.status.setText("Cancelling at the next step; finished rounds are kept…")

    @Slot(str)
    def _warned(self, text: str) -> None:
        shown = self.warnings.text()
        self.warnings.setText(f"{shown}\n⚠ {text}" if shown else f"⚠ {text}")
        self.warnings.setVisible(True)
        self._log(f"Warning: {text}")

    def _log(self, text: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")

    @Slot(object)
    def _progressed(self, event: Progress) -> None:
        number = event.round_number
        if event.stage is Stage.TRAINING and event.values:  # one hospital's epoch
            participant = self._participants.get(event.hospital_id or "")
            if participant is not None:
                finished = (event.fraction or 0.0) >= 1.0
                participant.status = "trained" if finished else "training"
                participant.detail = event.message + (" · waiting for the others" if finished else "")
                self._show_participants()
            return
        if event.stage is Stage.VERIFICATION and event.fraction not in (None, 0.0):
            self._step(number, Stage.VERIFICATION, event.message)
            if event.fraction is not None:
                self._set_round_progress(number, 0.4 + 0.3 * event.fraction)
            return
        self._log(f"[round {number}] {event.message}" if number else event.message)
        self.status.setText(event.message[:1].upper() + event.message[1:])
        participant = self._participants.get(event.hospital_id or "")
        if event.stage is Stage.TRAINING and participant is not None:
            participant.status, participant.detail = "training", "training on its own data"
        elif event.stage is Stage.COMMITMENT and participant is not None:
            participant.status, participant.detail = "committed", event.message
        elif event.stage is Stage.VERIFICATION:
            for p in self._participants.values():
                if p.status == "committed":
                    p.status, p.detail = "verifying", "validating every candidate on its own split"
        elif event.stage is Stage.VOTING:
            for p in self._participants.values():
                if p.status == "verifying":
                    p.status, p.detail = "voted", event.message
        elif event.stage is Stage.FAILED and participant is not None:
            participant.status, participant.detail = "failed", event.message
        self._show_participants()
        if number is None:
            return
        if event.stage is Stage.DONE:
            self._round_done(number)
        elif event.stage is Stage.FAILED:
            self._failure_item(number, event.message)
        elif event.stage in STEP_ORDER:
            self._step(number, event.stage, event.message)
            base = {Stage.TRAINING: 0.0, Stage.COMMITMENT: 0.35, Stage.VERIFICATION: 0.4, Stage.VOTING: 0.7,
                    Stage.AGGREGATION: 0.8, Stage.RECORDING: 0.9}[event.stage]
            # Only a hospital's training event carries how far the round's training has got.
            within = 0.35 * (event.fraction or 0.0) if event.stage is Stage.TRAINING and event.hospital_id else 0.0
            self._set_round_progress(number, base + within)

    def _set_round_progress(self, number: int | None, within: float) -> None:
        if number is None:
            return
        self.progress.setValue(int(100 * ((number - 1) + min(within, 1.0)) / max(self._total_rounds, 1)))

    def _round_item(self, number: int) -> QTreeWidgetItem:
        existing = self._round_items.get(number)
        if existing is not None:
            return existing
        parent = QTreeWidgetItem([f"Round {number}", "running", "", ""])
        self.timeline.addTopLevelItem(parent)
        for stage, plain, secure in STEPS:
            child = QTreeWidgetItem([secure if self._secure else plain, "waiting", "", ""])
            child.setData(0, Qt.ItemDataRole.UserRole, stage.value)
            child.setForeground(1, QBrush(NEUTRAL))
            parent.addChild(child)
        parent.setExpanded(True)
        self._round_items[number] = parent
        return parent

    def _step(self, number: int | None, stage: Stage, detail: str) -> None:
        if number is None:
            return
        parent = self._round_item(number)
        index = STEP_ORDER.index(stage)
        now = time.monotonic()
        for i in range(parent.childCount()):
            child = parent.child(i)
            step = STEP_ORDER[i]
            if i < index and child.text(1) != "done":
                self._close_step(number, step, child, now)
            elif i == index:
                if child.text(1) != "running":
                    self._step_started[(number, step)] = now
                    child.setText(1, "running")
                    child.setForeground(1, QBrush(Qt.GlobalColor.darkBlue))
                child.setText(3, detail)
        self.timeline.scrollToItem(parent.child(index))

    def _close_step(self, number: int, step: Stage, child: QTreeWidgetItem, now: float) -> None:
        started = self._step_started.get((number, step))
        child.setText(1, "done")
        child.setForeground(1, QBrush(ACCEPTED))
        if started is not None:
            child.setText(2, f"{now - started:.1f} s")

    def _round_done(self, number: int) -> None:
        parent = self._round_item(number)
        now = time.monotonic()
        for i in range(parent.childCount()):
            if parent.child(i).text(1) != "done":
                self._close_step(number, STEP_ORDER[i], parent.child(i), now)
        self._set_round_progress(number, 1.0)
        federation = self._current_federation()
        if federation is None:
            return
        round_ = next((r for r in list_rounds(self.model.db, federation.id) if r.number == number), None)
        if round_ is not None:
            self._describe_round(parent, round_)
            for m in round_.models:
                participant = self._participants.get(m.hospital_id)
                if participant is not None:
                    participant.status = m.status
                    participant.detail = f"{m.accepts} of {m.registered} hospitals voted to accept"
            self._show_participants()

    def _failure_item(self, number: int, message: str) -> None:
        failure = QTreeWidgetItem(["Failure", "failed", "", message])
        failure.setForeground(1, QBrush(REJECTED))
        self._round_item(number).addChild(failure)

    def _current_federation(self) -> FederationView | None:
        """The run this page started: the newest federation that did not exist before."""
        return next((f for f in list_federations(self.model.db) if f.id not in self._known_ids), None)

    @Slot(object)
    def _finished(self, federation_id: int) -> None:
        federation = next((f for f in list_federations(self.model.db) if f.id == federation_id), None)
        accuracy = percent(federation.final_accuracy) if federation else "–"
        self.status.setText(f"Federation run #{federation_id} completed: global accuracy {accuracy}. "
                            "See each hospital's verdict on the Verification page.")
        self._log(f"Run #{federation_id} completed; final global accuracy {accuracy}.")
        self.progress.setValue(100)
        self.model.federations_changed.emit()
        self.model.evaluations_changed.emit()
        self.model.datasets_changed.emit()
        if self._demo:
            self.model.show_page.emit("Verification")

    @Slot(object)
    def _failed(self, exc: BaseException) -> None:
        self.status.setText("The federation run stopped; the rounds it finished are kept.")
        self._log(f"Stopped: {getattr(exc, 'user_message', exc)}")
        self._stop_open_round("stopped by an error")
        report_error(self, "The federation run stopped", exc)

    @Slot()
    def _cancelled(self) -> None:
        self.status.setText("Cancelled; the rounds that finished are kept.")
        self._log("Cancelled by the user.")
        self._stop_open_round("cancelled")

    def _stop_open_round(self, why: str) -> None:
        """Marks the round that was under way as stopped: nothing of it was applied."""
        for parent in self._round_items.values():
            if parent.text(1) != "running":
                continue
            parent.setText(1, "aborted")
            parent.setForeground(1, QBrush(REJECTED))
            parent.setText(3, f"{why}; this round was not applied")
            for i in range(parent.childCount()):
                child = parent.child(i)
                if child.text(1) in ("running", "waiting"):
                    child.setText(1, "stopped" if child.text(1) == "running" else "not reached")
                    child.setForeground(1, QBrush(REJECTED if child.text(1) == "stopped" else NEUTRAL))

    @Slot()
    def _done(self) -> None:
        was_running = self._task is not None
        current = self._current_federation()
        self._live_id = current.id if current is not None else None
        self._task = None
        self._demo = False
        if was_running:
            self.model.federations_changed.emit()
        self._update_buttons()

    @Slot()
    def _update_buttons(self) -> None:
        # One model trains at a time: local training and a federation share the same cores.
        idle = not any(self.model.is_busy(name) for name in (FEDERATION, TRAINING, NODE))
        self.start.setEnabled(idle)
        self.start.setToolTip("" if idle else "Wait for the running training, federation run or node to finish.")
        self.cancel.setEnabled(self._task is not None)

    def _show_participants(self) -> None:
        rows = list(self._participants.values())
        self.participants.setRowCount(len(rows))
        colors = {"accepted": ACCEPTED, "rejected": REJECTED, "failed": REJECTED}
        for row, p in enumerate(rows):
            self.participants.setItem(row, 0, item(p.hospital_id.replace("-", " ").title()))
            self.participants.setItem(row, 1, item("attacker (simulated)" if p.malicious else "honest",
                                                   color=REJECTED if p.malicious else None))
            self.participants.setItem(row, 2, item(p.status, color=colors.get(p.status)))
            self.participants.setItem(row, 3, item(p.detail))

    # -- recorded runs ---------------------------------------------------------------------------

    @Slot()
    def refresh(self) -> None:
        current = self.selected_federation()
        # A consortium this hospital follows is shown on the Join tab, not as a simulated run.
        self._federations = [f for f in list_federations(self.model.db) if "consortium" not in f.config]
        self.runs.blockSignals(True)
        self.runs.setRowCount(len(self._federations))
        for row, f in enumerate(self._federations):
            config = f.config
            verification = "SMPC" if config.get("secure") else (
                "none (unprotected)" if config.get("verifier") == "none" else "plaintext")
            attackers = sum(1 for h in f.hospitals if h.malicious)
            values = [f"#{f.id}", config.get("dataset", ""), f"{len(f.hospitals)} ({attackers} attacking)",
                      verification, f.status, f"{f.rounds_finalized}/{config.get('rounds', f.rounds_total)}",
                      percent(f.final_accuracy), local_time(f.started_at)]
            for column, value in enumerate(values):
                self.runs.setItem(row, column, item(value, tooltip=f.message or f.name))
        live = self._live_id is not None  # keep showing the run just watched, as it was watched
        wanted = self._live_id if live else (current.id if current else None)
        row = next((i for i, f in enumerate(self._federations) if f.id == wanted), 0 if self._federations else None)
        if row is not None:
            self.runs.selectRow(row)
        self.runs.blockSignals(False)
        if self._task is None and not live and row is not None:
            # The form shows the last run's settings when the page opens, never over the user's edits.
            self._show_federation(self._federations[row], fill_form=not self._form_filled)
            self._form_filled = True

    def selected_federation(self) -> FederationView | None:
        rows = self.runs.selectionModel().selectedRows()
        return self._federations[rows[0].row()] if rows and rows[0].row() < len(self._federations) else None

    @Slot()
    def _show_selected(self) -> None:
        federation = self.selected_federation()
        if federation is not None and self._task is None:
            self._live_id = None
            self._show_federation(federation, fill_form=True)

    def _show_config(self, config: dict[str, Any]) -> None:
        """Puts a recorded run's configuration in the form, so it can be repeated or adjusted."""
        self.hospitals.setValue(int(config.get("hospitals", self.hospitals.value())))
        self.attackers.setValue(int(config.get("malicious", 0)))
        if config.get("attack") not in (None, "none"):
            self.attack.setCurrentIndex(max(self.attack.findData(config["attack"]), 0))
        self.rounds.setValue(int(config.get("rounds", self.rounds.value())))
        self.local_epochs.setValue(int(config.get("local_epochs", self.local_epochs.value())))
        for row in range(self.dataset.count()):
            if self.dataset.itemData(row).get("source") == config.get("dataset"):
                self.dataset.setCurrentIndex(row)
                break
        self.secure.setChecked(bool(config.get("secure")))
        if not config.get("secure"):
            self.aggregator.setCurrentIndex(max(self.aggregator.findData(config.get("aggregator", "fedavg")), 0))

    def _show_federation(self, federation: FederationView, *, fill_form: bool = False) -> None:
        """A recorded run as the live view showed it: verdicts per hospital, steps with durations."""
        if fill_form:
            self._show_config(federation.config)
        rounds = list_rounds(self.model.db, federation.id)
        last = rounds[-1] if rounds else None
        self._participants = {}
        for h in federation.hospitals:
            model = last.model(h.hospital_id) if last else None
            status = model.status if model else ("registered" if last is None else "no update")
            detail = (f"round {last.number}: {model.accepts} of {model.registered} voted to accept"
                      if model and last else "")
            self._participants[h.hospital_id] = _Participant(h.hospital_id, h.malicious, status, detail)
        self._show_participants()
        self._secure = bool(federation.config.get("secure"))
        self.timeline.clear()
        self._round_items = {}
        for round_ in rounds:
            parent = self._round_item(round_.number)
            for i, (stage, _, _) in enumerate(STEPS):
                child = parent.child(i)
                seconds = round_.durations.get(stage.value)
                finished = round_.status == "finalized" or seconds is not None
                child.setText(1, "done" if finished else "not reached")
                child.setForeground(1, QBrush(ACCEPTED if finished else NEUTRAL))
                child.setText(2, f"{seconds:.1f} s" if seconds is not None else "")
            for failure in round_.failures:
                self._failure_item(round_.number, f"{failure.hospital_id} at {failure.stage}: {failure.message}")
            self._describe_round(parent, round_)
            parent.setExpanded(round_ is last)
        self.status.setText(f"Run #{federation.id}: {federation.status}"
                            + (f" ({federation.message})" if federation.message else "") + ".")
        finished = federation.rounds_finalized / max(int(federation.config.get("rounds", 1)), 1)
        self.progress.setValue(int(100 * min(finished, 1.0)))
        self.log.clear()
        self.log.appendPlainText(f"Run #{federation.id} started {local_time(federation.started_at)}: {federation.name}.")
        for round_ in rounds:
            accepted = sum(1 for m in round_.models if m.status == "accepted")
            if round_.status == "finalized":
                self.log.appendPlainText(f"Round {round_.number} finalised: {accepted} of {len(round_.models)} updates "
                                         f"accepted, global accuracy {percent(round_.accuracy)}, model "
                                         f"{short_hash(round_.global_hash)}.")
            else:
                self.log.appendPlainText(f"Round {round_.number} {round_.status}"
                                         + (f": {round_.abort_reason}" if round_.abort_reason else "."))
            for failure in round_.failures:
                self.log.appendPlainText(f"  {failure.hospital_id} failed at {failure.stage}: {failure.message}")
        self.log.appendPlainText(f"Run {federation.status}"
                                 + (f" at {local_time(federation.finished_at)}" if federation.finished_at else "")
                                 + (f": {federation.message}" if federation.message else "") + ".")

    @staticmethod
    def _describe_round(parent: QTreeWidgetItem, round_: RoundView) -> None:
        accepted = sum(1 for m in round_.models if m.status == "accepted")
        parent.setText(1, round_.status)
        parent.setText(2, f"{sum(round_.durations.values()):.1f} s" if round_.durations else "")
        if round_.status == "finalized":
            parent.setText(3, f"{accepted} of {len(round_.models)} updates accepted · global accuracy "
                              f"{percent(round_.accuracy)} · model {short_hash(round_.global_hash)}")
        else:
            parent.setText(3, round_.abort_reason or "")
