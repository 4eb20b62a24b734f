"""The Ledger page: decoded events, blocks and transactions, model-hash verification, and the audit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import Slot
from PySide6.QtGui import QBrush, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.model import LEDGER, AppModel
from app.notifier import report_error
from app.widgets import ACCEPTED, REJECTED, item, read_only_table
from core.errors import CoreError
from core.progress import CancelToken, ProgressSink
from core.state.queries import list_federations, list_rounds

ALL_EVENTS = "All events"


@dataclass(frozen=True)
class _Snapshot:
    """What one refresh read from the ledger."""

    events: list[Any]
    blocks: list[Any]


class LedgerPage(QWidget):
    """Reads the ledger read-only in a worker whenever the page is shown after a change."""

    title = "Ledger"

    def __init__(self, model: AppModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self._stale = True
        self._events: list[Any] = []
        self._names: dict[str, str] = {}  # account address -> hospital id

        self.source = QLabel(objectName="ledgerSource")
        self.source.setWordWrap(True)
        self.refresh_button = QPushButton("Refresh", objectName="refreshLedgerButton")
        self.audit_button = QPushButton("Run audit", objectName="auditButton")
        self.audit_button.setToolTip("Replays every event, checks each decision against its votes, each stored "
                                     "global model against its hash, and this hospital's database against the chain.")
        top = QHBoxLayout()
        top.addWidget(self.source, 1)
        top.addWidget(self.refresh_button)
        top.addWidget(self.audit_button)

        self.audit_result = QLabel("The audit has not been run in this session.", objectName="auditResult")
        self.audit_result.setWordWrap(True)
        self.discrepancies = QPlainTextEdit(objectName="auditDetails", readOnly=True)
        self.discrepancies.setMaximumHeight(110)
        self.discrepancies.hide()
        audit_box = QGroupBox("Audit")
        audit_layout = QVBoxLayout(audit_box)
        audit_layout.addWidget(self.audit_result)
        audit_layout.addWidget(self.discrepancies)

        # -- events
        self.event_filter = QComboBox(objectName="eventFilter")
        self.event_filter.addItem(ALL_EVENTS)
        self.events_table = read_only_table(["Block", "Event", "Round", "Who", "Details", "Transaction"])
        self.events_table.setObjectName("eventsTable")
        events_tab = QWidget()
        events_layout = QVBoxLayout(events_tab)
        filter_row = QHBoxLayout()
        filter_row.addWidget(QLabel("Show:"))
        filter_row.addWidget(self.event_filter)
        filter_row.addStretch(1)
        events_layout.addLayout(filter_row)
        events_layout.addWidget(self.events_table)

        # -- blocks
        self.blocks_tree = QTreeWidget(objectName="blocksTree")
        self.blocks_tree.setHeaderLabels(["Block / transaction", "Time / call", "From", "Gas used", "Result"])
        self.blocks_tree.setColumnWidth(0, 260)
        self.blocks_tree.setColumnWidth(1, 160)

        # -- verify
        self.recorded_models = QComboBox(objectName="recordedModelsCombo")
        self.hash_edit = QLineEdit(objectName="hashEdit", placeholderText="64 hexadecimal characters (SHA-256)")
        self.hash_file = QPushButton("Hash a model file…", objectName="hashFileButton")
        self.verify_button = QPushButton("Verify on the ledger", objectName="verifyButton")
        self.verify_result = QLabel(objectName="verifyResult")
        self.verify_result.setWordWrap(True)
        verify_tab = QWidget()
        verify_form = QFormLayout(verify_tab)
        verify_form.addRow(QLabel("Check that a model file's hash is a global model or a committed update recorded "
                                  "on the ledger (e.g. before using a model received from a peer).",
                                  wordWrap=True))
        verify_form.addRow("Model recorded here:", self.recorded_models)
        hash_row = QHBoxLayout()
        hash_row.addWidget(self.hash_edit, 1)
        hash_row.addWidget(self.hash_file)
        verify_form.addRow("Model hash:", hash_row)
        verify_form.addRow(self.verify_button)
        verify_form.addRow(self.verify_result)

        self.tabs = QTabWidget(objectName="ledgerTabs")
        self.tabs.addTab(events_tab, "Events")
        self.tabs.addTab(self.blocks_tree, "Blocks and transactions")
        self.tabs.addTab(verify_tab, "Verify a model")

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(audit_box)
        layout.addWidget(self.tabs, 1)

        self.refresh_button.clicked.connect(self.reload)
        self.audit_button.clicked.connect(self._audit)
        self.verify_button.clicked.connect(self._verify)
        self.hash_file.clicked.connect(self._hash_file)
        self.hash_edit.returnPressed.connect(self._verify)
        self.recorded_models.currentIndexChanged.connect(self._pick_model)
        self.event_filter.currentTextChanged.connect(self._show_events)
        model.federations_changed.connect(self._changed)
        model.settings_changed.connect(self._changed)
        model.busy_changed.connect(self._update_buttons)
        self._describe_source()

    # -- loading ---------------------------------------------------------------------------------

    def _describe_source(self) -> None:
        settings = self.model.settings
        where = f"the ledger node {settings.rpc_url}" if settings.rpc_url else (
            f"the embedded chain in {settings.home / 'ledger'}")
        self.source.setText(f"Reading {where} (read-only).")

    @Slot()
    def _changed(self) -> None:
        self._describe_source()
        self._stale = True
        if self.isVisible():
            self.reload()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._fill_recorded_models()
        if self._stale:
            self.reload()

    @Slot()
    def reload(self) -> None:
        from core.services import explorer  # web3 loads only when the ledger is first read

        settings = self.model.settings
        self._stale = False
        if not explorer.ledger_exists(settings):
            self.source.setText("There is no ledger yet: it is created by the first federation run.")
            return

        def work(progress: ProgressSink, cancel: CancelToken) -> _Snapshot:
            return _Snapshot(events=explorer.events(settings, limit=5000), blocks=explorer.blocks(settings, limit=40))

        task = self.model.run(LEDGER, work)
        task.succeeded.connect(self._loaded)
        task.failed.connect(self._load_failed)
        self.model.start(task)
        self._update_buttons()

    @Slot(object)
    def _loaded(self, snapshot: _Snapshot) -> None:
        self._events = snapshot.events
        # The blocks' senders are accounts; the events name the hospitals behind them.
        self._names = {str(e.args.get("account", "")).lower(): e.who
                       for e in snapshot.events if e.name == "AuthorityAdded"}
        self._names.update({str(e.args["coordinator"]).lower(): "coordinator"
                            for e in snapshot.events if e.name == "CoordinatorChanged"})
        names = sorted({e.name for e in snapshot.events})
        current = self.event_filter.currentText()
        self.event_filter.blockSignals(True)
        self.event_filter.clear()
        self.event_filter.addItems([ALL_EVENTS, *names])
        self.event_filter.setCurrentText(current if current in names else ALL_EVENTS)
        self.event_filter.blockSignals(False)
        self._show_events()
        self._show_blocks(snapshot.blocks)
        self._describe_source()
        self.source.setText(self.source.text() + f" {len(snapshot.events)} events, newest block "
                            f"{snapshot.blocks[0].number if snapshot.blocks else 0}.")

    @Slot(object)
    def _load_failed(self, exc: BaseException) -> None:
        self._stale = True
        report_error(self, "Could not read the ledger", exc)

    # -- showing ---------------------------------------------------------------------------------

    def _who(self, address: Any) -> str:
        text = str(address)
        return self._names.get(text.lower(), text[:10] + "…" if len(text) > 12 else text)

    @staticmethod
    def _describe(event: Any) -> str:
        """An event's arguments in words: hospital names listed, long hashes shortened."""
        parts = []
        for key, value in event.details.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
            elif isinstance(value, list):
                value = ", ".join(str(v) for v in value) if all(isinstance(v, str) and len(v) < 40 for v in value) \
                    else f"{len(value)} item(s)"
                value = value or "none"
            elif isinstance(value, str) and len(value) >= 40:
                value = value[:12] + "…"
            parts.append(f"{key}={value}")
        return "; ".join(parts)

    @Slot()
    def _show_events(self) -> None:
        wanted = self.event_filter.currentText()
        events = [e for e in self._events if wanted in (ALL_EVENTS, "") or e.name == wanted]
        self.events_table.setRowCount(len(events))
        for row, event in enumerate(events):
            color = {"RoundFinalized": ACCEPTED, "RoundAborted": REJECTED}.get(event.name)
            round_number = "" if event.round_number is None else event.round_number
            values = [event.block_number, event.name, round_number, event.who, self._describe(event),
                      event.tx_hash[:14] + "…"]
            for column, value in enumerate(values):
                self.events_table.setItem(row, column, item(value, color=color if column == 1 else None,
                                                            tooltip=event.tx_hash if column == 5 else None))

    def _show_blocks(self, blocks: list[Any]) -> None:
        self.blocks_tree.clear()
        for block in blocks:
            moment = datetime.fromtimestamp(block.timestamp, tz=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")
            parent = QTreeWidgetItem([f"Block {block.number}  {block.block_hash[:14]}…", moment, "",
                                      str(block.gas_used), f"{len(block.transactions)} transaction(s)"])
            for tx in block.transactions:
                child = QTreeWidgetItem([tx.tx_hash[:18] + "…", tx.function, self._who(tx.sender), str(tx.gas_used),
                                         "succeeded" if tx.succeeded else "reverted"])
                child.setForeground(4, QBrush(ACCEPTED if tx.succeeded else REJECTED))
                child.setToolTip(0, tx.tx_hash)
                parent.addChild(child)
            self.blocks_tree.addTopLevelItem(parent)

    # -- verify a model --------------------------------------------------------------------------

    def _fill_recorded_models(self) -> None:
        self.recorded_models.clear()
        self.recorded_models.addItem("(choose a global model recorded on this machine)", "")
        for federation in list_federations(self.model.db):
            for round_ in list_rounds(self.model.db, federation.id):
                if round_.global_hash:
                    self.recorded_models.addItem(
                        f"run #{federation.id}, round {round_.number}: {round_.global_hash[:16]}…", round_.global_hash)

    @Slot(int)
    def _pick_model(self, index: int) -> None:
        value = self.recorded_models.itemData(index)
        if value:
            self.hash_edit.setText(value)

    @Slot()
    def _hash_file(self) -> None:
        from core.services import explorer

        path, _ = QFileDialog.getOpenFileName(self, "Choose a model file to check", str(self.model.settings.blob_dir))
        if not path:
            return
        try:
            self.hash_edit.setText(explorer.model_file_hash(Path(path)))
        except CoreError as exc:
            report_error(self, "Could not read the model file", exc)
            return
        self.verify_result.setText(f"Hash of {Path(path).name}; press Verify on the ledger.")
        self.verify_result.setStyleSheet("")

    @Slot()
    def _verify(self) -> None:
        from core.services import explorer

        settings, text = self.model.settings, self.hash_edit.text()

        def work(progress: ProgressSink, cancel: CancelToken) -> bool:
            return explorer.verify_model_hash(settings, text)

        self.verify_result.setText("Checking the ledger…")
        task = self.model.run(LEDGER, work)
        task.succeeded.connect(self._verified)
        task.failed.connect(self._verify_failed)
        self.model.start(task)

    @Slot(object)
    def _verified(self, found: bool) -> None:
        if found:
            self.verify_result.setText("✔ This model is recorded on the ledger (a global model or a committed update).")
            self.verify_result.setStyleSheet("color: #2e7d32; font-weight: 600;")
        else:
            self.verify_result.setText("✘ This hash is not on the ledger: do not trust a model file with it.")
            self.verify_result.setStyleSheet("color: #c62828; font-weight: 600;")

    @Slot(object)
    def _verify_failed(self, exc: BaseException) -> None:
        self.verify_result.setText("")
        report_error(self, "Could not verify the model", exc)

    # -- audit -----------------------------------------------------------------------------------

    @Slot()
    def _audit(self) -> None:
        from core.services import explorer

        settings = self.model.settings

        def work(progress: ProgressSink, cancel: CancelToken) -> Any:
            return explorer.audit(settings)

        self.audit_result.setText("Auditing: replaying every event and checking every stored model…")
        task = self.model.run(LEDGER, work)
        task.succeeded.connect(self._audited)
        task.failed.connect(self._audit_failed)
        self.model.start(task)
        self._update_buttons()

    @Slot(object)
    def _audited(self, result: Any) -> None:
        chain = result.chain
        counts = (f"{chain.rounds_checked} round(s), {chain.events_checked} event(s) and {chain.blobs_checked} "
                  f"model file(s) checked; {result.rounds_compared} local round(s) compared with the chain.")
        if result.ok:
            self.audit_result.setText(f"✔ The audit passed: {counts}")
            self.audit_result.setStyleSheet("color: #2e7d32; font-weight: 600;")
            self.discrepancies.hide()
        else:
            self.audit_result.setText(f"✘ The audit found {len(result.discrepancies)} discrepancy(ies). "
                                      f"First: {result.first_discrepancy}. {counts}")
            self.audit_result.setStyleSheet("color: #c62828; font-weight: 600;")
            self.discrepancies.setPlainText("\n".join(result.discrepancies))
            self.discrepancies.show()
        if result.notes:
            self.audit_result.setText(self.audit_result.text() + " Notes: " + " ".join(result.notes))

    @Slot(object)
    def _audit_failed(self, exc: BaseException) -> None:
        self.audit_result.setText("The audit could not run.")
        self.audit_result.setStyleSheet("")
        report_error(self, "The audit could not run", exc)

    @Slot()
    def _update_buttons(self) -> None:
        idle = not self.model.is_busy(LEDGER)
        self.refresh_button.setEnabled(idle)
        self.audit_button.setEnabled(idle)
