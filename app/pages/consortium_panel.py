"""The Federation page's "Join a consortium": this hospital's membership, its TLS identity (secure
consortium), its data and its node.

The consortium file is verified against the chain, this machine's TLS identity is read, made and
checked against the certificate the consortium pinned for it (`joining.tls_state`), and the node
(`core.services.deployment`) runs, all in workers off the GUI thread. What the node and its
archive learn from the chain goes into this data directory's SQLite state; the round view and
the accuracy curve are read back from it (`core.services.joining`, `core.state.queries`)
whenever the node reports progress, and every few seconds while it runs (other hospitals' votes
arrive without a report of their own).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QBrush
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
    QSpinBox,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.model import CHECKING, FEDERATION, NODE, TRAINING, AppModel
from app.notifier import report_error
from app.widgets import ACCEPTED, NEUTRAL, REJECTED, SERIES, percent, plot, short_hash
from app.workers import Task
from core.errors import describe_error
from core.progress import CancelToken, Progress, ProgressSink, Stage
from core.services import datasets, joining
from core.services.consortium import Site
from core.services.tls import TlsIdentityInfo
from core.state.queries import RoundView, accuracy_series, list_datasets, list_rounds

PASSWORD_ENV = "MEDFED_KEYSTORE_PASSWORD"
REFRESH_MS = 2000  # re-reading the local record while the node runs
ROUND_COLUMNS = ["Round / hospital", "Committed", "Voted", "Decision", "This hospital's vote", "Its scores"]
PICK_FILE = "file"  # the dataset combo's entry that stands for a file the user picked


def _verdict(label: QLabel, text: str, *, ok: bool | None) -> None:
    """A one-line verdict: green when fine, red when refused, grey while unknown."""
    color = {True: ACCEPTED, False: REJECTED, None: NEUTRAL}[ok]
    label.setStyleSheet(f"color: {color.name()};")
    label.setText(text)


def _scores_text(scores: dict[str, float]) -> str:
    if not scores:
        return ""
    total = scores.get("total") or 0
    accuracy = scores["correct"] / total if total else None
    return (f"accuracy {percent(accuracy)} of {int(total)} · cosine {scores.get('cosine', 0.0):.2f}"
            f" · norm {scores.get('norm', 0.0):.2f}")


class ConsortiumPanel(QWidget):
    """Joins this hospital to a real consortium and follows its rounds from the chain."""

    def __init__(self, model: AppModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self._path: Path | None = None
        self._site: Site | None = None  # the last verification's result; re-checked on every change
        self._tls: joining.TlsState | None = None  # this machine's TLS identity; None: not a secure consortium
        self._tls_task: Task | None = None
        self._fit: joining.DatasetFit | None = None
        self._picked_file: Path | None = None
        self._check: Task | None = None
        self._fit_task: Task | None = None
        self._node: Task | None = None
        self._expanded: set[int] = set()

        # -- the consortium and this machine
        self.open_file = QPushButton("Open consortium.json…", objectName="openConsortiumButton")
        self.recheck = QPushButton("Check again", objectName="recheckConsortiumButton", enabled=False)
        self.file_label = QLabel("No consortium file opened.", objectName="consortiumFile")
        self.file_label.setWordWrap(True)
        self.rpc_url = QLineEdit(objectName="consortiumRpcEdit", placeholderText="http://ledger-node:8545")
        self.password = QLineEdit(objectName="keystorePasswordEdit", echoMode=QLineEdit.EchoMode.Password)
        self.account = QLabel(objectName="accountLabel")
        self.account.setWordWrap(True)
        self.account.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.create_account = QPushButton("Create this machine's account", objectName="createAccountButton")
        self.membership = QLabel(objectName="membershipLabel")
        self.membership.setWordWrap(True)
        self.membership.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        file_row = QHBoxLayout()
        file_row.addWidget(self.open_file)
        file_row.addWidget(self.recheck)
        file_row.addStretch(1)
        member_box = QGroupBox("Consortium and this machine's membership")
        member_form = QFormLayout(member_box)
        member_form.addRow(file_row)
        member_form.addRow(self.file_label)
        member_form.addRow("Ledger node URL:", self.rpc_url)
        member_form.addRow("Keystore password:", self.password)
        member_form.addRow("This machine's account:", self.account)
        member_form.addRow(self.create_account)
        member_form.addRow(self.membership)

        # -- this machine's TLS identity, when the consortium is secure
        self.tls_verdict = QLabel(objectName="tlsVerdictLabel")
        self.tls_verdict.setWordWrap(True)
        self.tls_verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.tls_identity = QLabel(objectName="tlsIdentityLabel")
        self.tls_identity.setWordWrap(True)
        self.tls_identity.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.create_tls = QPushButton("Create TLS identity", objectName="createTlsButton")
        self.tls_box = QGroupBox("This machine's TLS identity (the consortium is secure)", visible=False)
        tls_form = QFormLayout(self.tls_box)
        tls_form.addRow(self.tls_verdict)
        tls_form.addRow(self.tls_identity)
        tls_form.addRow(self.create_tls)

        # -- this hospital's data
        self.dataset = QComboBox(objectName="nodeDatasetCombo")
        self.pick_dataset = QPushButton("Choose a file…", objectName="pickNodeDatasetButton")
        self.dataset_verdict = QLabel(objectName="datasetFitLabel")
        self.dataset_verdict.setWordWrap(True)
        self.epochs = QSpinBox(objectName="nodeEpochsSpin", minimum=1, maximum=50, value=3)
        data_row = QHBoxLayout()
        data_row.addWidget(self.dataset, 1)
        data_row.addWidget(self.pick_dataset)
        data_box = QGroupBox("This hospital's own data (it never leaves this machine)")
        data_form = QFormLayout(data_box)
        data_form.addRow("Dataset:", data_row)
        data_form.addRow(self.dataset_verdict)
        data_form.addRow("Local epochs per round:", self.epochs)

        # -- the node
        self.start_node = QPushButton("Start this hospital's node", objectName="startNodeButton", enabled=False)
        self.stop_node = QPushButton("Stop node", objectName="stopNodeButton", enabled=False)
        self.node_status = QLabel("The node is not running.", objectName="nodeStatus")
        self.node_status.setWordWrap(True)
        self.start_hint = QLabel(objectName="startNodeHint", visible=False)  # why the node cannot start yet
        self.start_hint.setWordWrap(True)
        self.start_hint.setStyleSheet(f"color: {REJECTED.name()};")
        node_row = QHBoxLayout()
        node_row.addWidget(self.start_node)
        node_row.addWidget(self.stop_node)

        self.log = QPlainTextEdit(objectName="nodeLog", readOnly=True)
        self.log.setMaximumBlockCount(2000)
        log_box = QGroupBox("This node's events")
        QVBoxLayout(log_box).addWidget(self.log)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(member_box)
        left_layout.addWidget(self.tls_box)
        left_layout.addWidget(data_box)
        left_layout.addLayout(node_row)
        left_layout.addWidget(self.start_hint)
        left_layout.addWidget(self.node_status)
        left_layout.addWidget(log_box, 1)

        # -- the consortium's rounds as this site recorded them
        self.rounds = QTreeWidget(objectName="consortiumRoundsTree")
        self.rounds.setHeaderLabels(ROUND_COLUMNS)
        for column, width in enumerate((205, 90, 55, 115, 145)):
            self.rounds.setColumnWidth(column, width)
        self.rounds_caption = QLabel("No round recorded yet.", objectName="caption")
        self.rounds_caption.setWordWrap(True)
        rounds_box = QGroupBox("The consortium's rounds, followed from the chain")
        rounds_layout = QVBoxLayout(rounds_box)
        rounds_layout.addWidget(self.rounds_caption)
        rounds_layout.addWidget(self.rounds)
        self.accuracy_plot = plot("Global model on this hospital's test data", "accuracy", "round")
        self.accuracy_plot.setYRange(0, 1)
        self.accuracy_plot.getAxis("bottom").setTickSpacing(1, 1)
        self.accuracy_curve = self.accuracy_plot.plot([], [], pen=SERIES[0], symbol="o", symbolBrush=SERIES[0],
                                                      name="global accuracy")
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(rounds_box)
        right.addWidget(self.accuracy_plot)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 2)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([560, 800])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        self._timer = QTimer(self, interval=REFRESH_MS)
        self._timer.timeout.connect(self.refresh)

        self.open_file.clicked.connect(self._open_file)
        self.recheck.clicked.connect(self._verify)
        self.rpc_url.editingFinished.connect(self._rpc_edited)
        self.create_account.clicked.connect(self._create_account)
        self.create_tls.clicked.connect(self._create_tls)
        self.pick_dataset.clicked.connect(self._pick_file)
        self.dataset.currentIndexChanged.connect(self._dataset_chosen)
        self.start_node.clicked.connect(self._start)
        self.stop_node.clicked.connect(self._stop)
        self.rounds.itemExpanded.connect(lambda i: self._expanded.add(i.data(0, Qt.ItemDataRole.UserRole)))
        self.rounds.itemCollapsed.connect(lambda i: self._expanded.discard(i.data(0, Qt.ItemDataRole.UserRole)))
        model.datasets_changed.connect(self._refresh_datasets)
        model.settings_changed.connect(self._settings_changed)
        model.federations_changed.connect(self.refresh)
        model.busy_changed.connect(self._update_buttons)
        self.rpc_url.setText(model.settings.rpc_url or "")
        self._settings_changed()
        self._refresh_datasets()
        self._show_account()
        _verdict(self.membership, "Open the consortium file the admin sent to see this machine's membership.",
                 ok=None)
        _verdict(self.dataset_verdict, "Choose the dataset this hospital trains on.", ok=None)

    # -- the consortium file and this machine's account ------------------------------------------

    @Slot()
    def _settings_changed(self) -> None:
        from_env = bool(os.environ.get(PASSWORD_ENV))
        self.password.setPlaceholderText(f"taken from {PASSWORD_ENV}" if from_env else "this machine's keystore password")
        if not self.rpc_url.text() and self.model.settings.rpc_url:
            self.rpc_url.setText(self.model.settings.rpc_url)

    def _password(self) -> str | None:
        return self.password.text() or os.environ.get(PASSWORD_ENV) or None

    def _show_account(self) -> None:
        address = joining.this_account(self.model.settings)
        self.create_account.setVisible(address is None)
        if address is None:
            self.account.setText("none yet: this data directory has no ledger account. Create it here, then send "
                                 "the address to the consortium's admin.")
        else:
            self.account.setText(f"<b>{address}</b> (send this address to the admin to be added)")

    @Slot()
    def _open_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open the consortium file", str(Path.home()),
                                              "Consortium file (*.json);;All files (*)")
        if not path:
            return
        self._path = Path(path)
        self.file_label.setText(f"<b>{self._path.name}</b> ({self._path.parent})")
        self.recheck.setEnabled(True)
        self._verify()

    @Slot()
    def _rpc_edited(self) -> None:
        if self._path is not None and self.rpc_url.isModified():
            self.rpc_url.setModified(False)
            self._verify()

    @Slot()
    def _create_account(self) -> None:
        password = self._password()
        if not password:
            _verdict(self.membership, f"Type a keystore password (or set {PASSWORD_ENV}) to create this "
                                      "machine's account; it encrypts the key on this machine.", ok=False)
            self.password.setFocus()
            return
        settings = self.model.settings

        def work(progress: ProgressSink, cancel: CancelToken) -> str:
            from core.services.consortium import create_account

            return create_account(settings, lambda: password).address

        self.create_account.setEnabled(False)
        task = self.model.run(CHECKING, work)
        task.succeeded.connect(self._account_created)
        task.failed.connect(lambda exc: _verdict(self.membership, describe_error(exc), ok=False))
        task.done.connect(lambda: self.create_account.setEnabled(True))
        self.model.start(task)

    @Slot(object)
    def _account_created(self, address: str) -> None:
        self._show_account()
        self._log(f"This machine's account is {address}; send it to the consortium's admin.")
        if self._path is not None:
            self._verify()

    @Slot()
    def _verify(self) -> None:
        """Checks the file against the chain: signature, chain, contract, this account's membership."""
        if self._path is None:
            return
        self._site = None
        self._update_buttons()
        self._check_tls()
        if joining.this_account(self.model.settings) is None:
            _verdict(self.membership, "This machine has no ledger account yet, so it cannot be a member: "
                                      "create it above and send its address to the admin.", ok=False)
            return
        path, settings, url = self._path, self.model.settings, self.rpc_url.text().strip() or None

        def work(progress: ProgressSink, cancel: CancelToken) -> Site:
            from core.services.consortium import check_membership

            # This machine's TLS identity is checked on its own (`_check_tls`), so that a member
            # sees its membership and what its identity still needs side by side.
            return check_membership(path, settings=settings, rpc_url=url)

        _verdict(self.membership, "Checking the file against the chain…", ok=None)
        task = self.model.run(CHECKING, work)
        task.succeeded.connect(self._verified)
        task.failed.connect(self._refused)
        self._check = task
        task.done.connect(self._check_done)
        self.model.start(task)

    @Slot(object)
    def _verified(self, site: Site) -> None:
        if self.sender() is not self._check:
            return
        consortium = site.consortium
        if site.hospital_id is None:
            _verdict(self.membership, f"This machine's account is the coordinator of '{consortium.name}', not one of "
                                      "its hospitals: run `python main.py coordinator` here instead.", ok=False)
            return
        self._site = site
        schema = consortium.input_schema
        others = ", ".join(m.hospital_id for m in consortium.members if m.hospital_id != site.hospital_id)
        _verdict(self.membership,
                 f"<b>Member:</b> this machine is hospital <b>{site.hospital_id}</b> of the consortium "
                 f"<b>{consortium.name}</b>, verified on chain {consortium.chain_id} (contract "
                 f"{short_hash(consortium.contract.address, 10)}, file signed by its admin). "
                 f"Model: {consortium.model.architecture} on a {schema.kind.value} input of shape "
                 f"{'x'.join(map(str, schema.input_shape))}, classes {', '.join(schema.class_names) or schema.num_classes}. "
                 f"Other members: {others or 'none yet'}.", ok=True)
        self._log(f"Verified: hospital {site.hospital_id} of '{consortium.name}' on chain {consortium.chain_id}.")
        self.refresh()
        if self.dataset.currentData() is not None:
            self._dataset_chosen()

    @Slot(object)
    def _refused(self, exc: BaseException) -> None:
        if self.sender() is not self._check:
            return
        _verdict(self.membership, f"<b>Not joined:</b> {describe_error(exc)}", ok=False)
        self._log(f"Refused: {describe_error(exc)}")

    @Slot()
    def _check_done(self) -> None:
        if self.sender() is self._check:
            self._check = None
        self._update_buttons()

    # -- this machine's TLS identity (secure consortium) ------------------------------------------

    def _check_tls(self) -> None:
        """Reads this machine's TLS identity against the opened file (signature checked, no chain)."""
        if self._path is None:
            return
        self._tls = None
        path, settings = self._path, self.model.settings

        def work(progress: ProgressSink, cancel: CancelToken) -> joining.TlsState | None:
            from core.services.consortium import show_consortium

            return joining.tls_state(show_consortium(path), settings)

        task = self.model.run(CHECKING, work)
        task.succeeded.connect(self._tls_checked)
        task.failed.connect(self._tls_unknown)
        task.done.connect(self._tls_done)
        self._tls_task = task
        self.model.start(task)

    @Slot(object)
    def _tls_checked(self, state: joining.TlsState | None) -> None:
        if self.sender() is not self._tls_task:
            return
        self._tls = state
        self.tls_box.setVisible(state is not None)
        if state is None:
            return
        ok = {joining.TlsStatus.PINNED: True, joining.TlsStatus.MISMATCH: False,
              joining.TlsStatus.UNREADABLE: False}.get(state.status)
        _verdict(self.tls_verdict, state.message, ok=ok)
        identity = state.identity
        self.tls_identity.setVisible(identity is not None)
        if identity is not None:
            self.tls_identity.setText(f"Identity <b>{identity.name}</b>, fingerprint (SHA-256) "
                                      f"<b>{identity.fingerprint}</b><br>Certificate: {identity.cert_path}")
        self.create_tls.setVisible(state.status is joining.TlsStatus.NONE)

    @Slot(object)
    def _tls_unknown(self, exc: BaseException) -> None:
        if self.sender() is self._tls_task:  # the file itself is refused: the membership says why
            self.tls_box.setVisible(False)

    @Slot()
    def _tls_done(self) -> None:
        if self.sender() is self._tls_task:
            self._tls_task = None
        self._update_buttons()

    @Slot()
    def _create_tls(self) -> None:
        assert self._tls is not None
        settings, name = self.model.settings, self._tls.party

        def work(progress: ProgressSink, cancel: CancelToken) -> TlsIdentityInfo:
            from core.services.tls import create_tls_identity

            return create_tls_identity(settings, name)

        self.create_tls.setEnabled(False)
        task = self.model.run(CHECKING, work)
        task.succeeded.connect(self._tls_created)
        task.failed.connect(lambda exc: _verdict(self.tls_verdict, describe_error(exc), ok=False))
        task.done.connect(lambda: self.create_tls.setEnabled(True))
        self.model.start(task)

    @Slot(object)
    def _tls_created(self, identity: TlsIdentityInfo) -> None:
        self._log(f"This machine's TLS identity '{identity.name}' was made (fingerprint {identity.fingerprint}); "
                  f"{joining.SEND_CERTIFICATE}: {identity.cert_path}.")
        self._check_tls()

    def _tls_refusal(self) -> str | None:
        """Why the node cannot start yet for want of a pinned TLS identity (None: it can)."""
        site = self._site
        if site is None or not site.consortium.secure:
            return None
        if self._tls is not None and self._tls.pinned and self._tls.party == site.hospital_id:
            return None
        return ("The consortium is secure: the node starts once this machine's TLS identity is the one the "
                "consortium pinned for this hospital (see above).")

    # -- this hospital's data --------------------------------------------------------------------

    @Slot()
    def _refresh_datasets(self) -> None:
        current = self.dataset.currentData()
        self.dataset.blockSignals(True)
        self.dataset.clear()
        self.dataset.addItem("— choose a dataset loaded on the Data page, or a file —", None)
        for view in list_datasets(self.model.db):
            self.dataset.addItem(f"{view.name} ({view.samples} cases, Data page)",
                                 datasets.request_for(view).as_dict())
        if self._picked_file is not None:
            self.dataset.addItem(f"{self._picked_file.name} (file)", PICK_FILE)
        index = self.dataset.findData(current) if current is not None else 0
        self.dataset.setCurrentIndex(max(index, 0))
        self.dataset.blockSignals(False)
        if self.dataset.currentData() != current:
            self._dataset_chosen()

    @Slot()
    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "This hospital's data", str(Path.home()),
                                              "Tables and archives (*.csv *.tsv *.npz);;All files (*)")
        if not path:
            return
        self._picked_file = Path(path)
        self._refresh_datasets()
        if self.dataset.currentData() == PICK_FILE:
            self._dataset_chosen()  # another file in the same entry
        else:
            self.dataset.setCurrentIndex(self.dataset.findData(PICK_FILE))

    @Slot()
    def _dataset_chosen(self) -> None:
        self._fit = None
        self._update_buttons()
        choice = self.dataset.currentData()
        if choice is None:
            _verdict(self.dataset_verdict, "Choose the dataset this hospital trains on.", ok=None)
            return
        if self._site is None:
            _verdict(self.dataset_verdict, "Open and verify the consortium file first: the dataset is checked "
                                           "against the consortium's input schema.", ok=None)
            return
        consortium = self._site.consortium
        picked = self._picked_file

        def work(progress: ProgressSink, cancel: CancelToken) -> joining.DatasetFit:
            if choice == PICK_FILE:
                assert picked is not None
                request = joining.request_for_file(consortium, picked)
            else:
                request = datasets.LoadRequest.from_dict(choice)
            return joining.check_fit(consortium, request)

        _verdict(self.dataset_verdict, "Checking the dataset against the consortium's input schema…", ok=None)
        task = self.model.run(CHECKING, work)
        task.succeeded.connect(self._fits)
        task.failed.connect(self._does_not_fit)
        task.done.connect(self._fit_done)
        self._fit_task = task
        self.model.start(task)

    @Slot(object)
    def _fits(self, fit: joining.DatasetFit) -> None:
        if self.sender() is not self._fit_task:
            return
        self._fit = fit
        counts = ", ".join(f"{n} {name}" for name, n in fit.class_counts.items())
        label = f", label column '{fit.request.label_column}'" if fit.request.label_column else ""
        _verdict(self.dataset_verdict, f"Fits the consortium's model: {fit.samples} cases ({counts}){label}.",
                 ok=True)
        # The start button is ready together with the verdict, not only once the task has wound down.
        self._update_buttons()

    @Slot(object)
    def _does_not_fit(self, exc: BaseException) -> None:
        if self.sender() is not self._fit_task:
            return
        _verdict(self.dataset_verdict, f"<b>Refused:</b> {describe_error(exc)}", ok=False)

    @Slot()
    def _fit_done(self) -> None:
        if self.sender() is self._fit_task:
            self._fit_task = None
        self._update_buttons()

    # -- the node --------------------------------------------------------------------------------

    @Slot()
    def _update_buttons(self) -> None:
        running = self._node is not None
        others = self.model.is_busy(FEDERATION) or self.model.is_busy(TRAINING)
        refusal = self._tls_refusal()
        ready = self._site is not None and self._fit is not None and refusal is None
        self.start_node.setEnabled(ready and not running and not others)
        self.start_node.setToolTip("Wait for the running training or simulation to finish." if others else
                                   refusal or "")
        self.start_hint.setText(refusal or "")
        self.start_hint.setVisible(refusal is not None and not running)
        self.stop_node.setEnabled(running)
        for widget in (self.open_file, self.recheck, self.rpc_url, self.dataset, self.pick_dataset, self.epochs,
                       self.password, self.create_account):
            widget.setEnabled(not running and (widget is not self.recheck or self._path is not None))

    @Slot()
    def _start(self) -> None:
        assert self._site is not None and self._fit is not None and self._path is not None
        from core.services.deployment import NodePlan

        request = self._fit.request
        plan = NodePlan(consortium=self._path, dataset=request.source, label_column=request.label_column,
                        drop_columns=request.drop_columns, rpc_url=self.rpc_url.text().strip() or None,
                        epochs=self.epochs.value(), keystore_password=self._password())
        settings = self.model.settings

        def work(progress: ProgressSink, cancel: CancelToken) -> None:
            from core.services.deployment import open_node

            progress(Progress(Stage.LOADING, "checking the consortium and opening the node"))
            site = open_node(plan, settings, progress)
            try:
                progress(Progress(Stage.LOADING, f"{site.name} is following the consortium's rounds"))
                site.run(cancel)
            finally:
                site.close()
            cancel.raise_if_cancelled()

        task = self.model.run(NODE, work)
        task.progressed.connect(self._progressed)
        task.failed.connect(self._node_failed)
        task.cancelled.connect(self._node_stopped)
        task.done.connect(self._node_done)
        self._node = task
        _verdict(self.node_status, "Starting the node…", ok=None)
        self._log(f"Starting hospital {self._site.hospital_id}'s node on {request.source}.")
        self.model.start(task)
        self._timer.start()
        self._update_buttons()

    @Slot()
    def _stop(self) -> None:
        if self._node is not None:
            self._node.cancel()
            self.stop_node.setEnabled(False)
            self.node_status.setText("Stopping at the next step; everything recorded is kept…")

    @Slot(object)
    def _progressed(self, event: Progress) -> None:
        if event.stage is Stage.TRAINING and event.values:  # one epoch of the local training
            self.node_status.setText(f"Round {event.round_number}: {event.message}")
            return
        text = f"[round {event.round_number}] {event.message}" if event.round_number else event.message
        self._log(text)
        self.node_status.setText(f"Running: {event.message}")
        if event.stage is Stage.DONE and event.round_number is not None:
            self.model.federations_changed.emit()  # a round is final: every page re-reads (this one too)
        elif event.stage in (Stage.COMMITMENT, Stage.VOTING, Stage.VERIFICATION, Stage.FAILED):
            self.refresh()

    @Slot(object)
    def _node_failed(self, exc: BaseException) -> None:
        _verdict(self.node_status, f"<b>The node stopped:</b> {describe_error(exc)}", ok=False)
        self._log(f"Stopped: {describe_error(exc)}")
        report_error(self, "The node stopped", exc)

    @Slot()
    def _node_stopped(self) -> None:
        _verdict(self.node_status, "Node stopped. The rounds recorded so far are kept; start it again to "
                                   "carry on from the chain.", ok=None)
        self._log("Node stopped by the user.")

    @Slot()
    def _node_done(self) -> None:
        self._node = None
        self._timer.stop()
        self.refresh()
        self.model.federations_changed.emit()
        self._update_buttons()

    def _log(self, text: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")

    # -- the record of the rounds ----------------------------------------------------------------

    @Slot()
    def refresh(self) -> None:
        """Re-reads this site's record of the consortium's rounds."""
        site = self._site
        record = joining.consortium_record(self.model.db, site.consortium) if site is not None else None
        if site is None or record is None:
            self.rounds.clear()
            self.accuracy_curve.setData([], [])
            self.rounds_caption.setText("No round recorded yet." if site is None else
                                        "No round recorded yet: start the node to follow the consortium.")
            return
        rounds = list_rounds(self.model.db, record.id)
        members = [h.hospital_id for h in record.hospitals]
        expanded = set(self._expanded) | ({rounds[-1].number} if rounds else set())
        self.rounds.blockSignals(True)  # only the user's own expanding is remembered
        self.rounds.clear()
        for round_ in rounds:
            item = self._round_item(round_, members, site.hospital_id or "")
            self.rounds.addTopLevelItem(item)
            item.setExpanded(round_.number in expanded)
        self.rounds.blockSignals(False)
        series = accuracy_series(self.model.db, record.id)
        self.accuracy_curve.setData([p.round_number for p in series], [p.value for p in series])
        if series:
            self.accuracy_plot.setXRange(0.5, max(p.round_number for p in series) + 0.5)
        final = sum(1 for r in rounds if r.status == "finalized")
        last = series[-1] if series else None
        self.rounds_caption.setText(
            f"{len(rounds)} round(s) recorded, {final} finalised; {len(members)} registered hospitals."
            + (f" Global accuracy on this hospital's test data after round {last.round_number}: "
               f"<b>{percent(last.value)}</b>." if last else ""))

    def _round_item(self, round_: RoundView, members: list[str], own: str) -> QTreeWidgetItem:
        voters = {v.validator_id for m in round_.models for v in m.votes}
        accepted = sum(1 for m in round_.models if m.status == "accepted")
        parent = QTreeWidgetItem([f"Round {round_.number}", f"{len(round_.models)} of {len(members)}",
                                  f"{len(voters)}", round_.status, "", ""])
        parent.setData(0, Qt.ItemDataRole.UserRole, round_.number)
        if round_.status == "finalized":
            parent.setText(5, f"{accepted} of {len(round_.models)} accepted · global accuracy "
                              f"{percent(round_.accuracy)} · model {short_hash(round_.global_hash)}")
        elif round_.abort_reason:
            parent.setText(5, round_.abort_reason)
        parent.setToolTip(5, parent.text(5))
        parent.setForeground(3, QBrush(ACCEPTED if round_.status == "finalized" else
                                       REJECTED if round_.status == "aborted" else NEUTRAL))
        failures = {f.hospital_id: f for f in round_.failures}
        for hid in members:
            model = round_.model(hid)
            own_vote = next((v for v in model.votes if v.validator_id == own), None) if model else None
            if model is None:
                decision = f"failed: {failures[hid].message}" if hid in failures else "no update"
            elif model.status in ("accepted", "rejected"):
                decision = f"{model.status} ({model.accepts}–{model.rejects})"
            else:
                decision = "waiting for votes"
            child = QTreeWidgetItem([
                hid + (" (this hospital)" if hid == own else ""),
                "yes" if model is not None else "no",
                "yes" if hid in voters else "no",
                decision,
                "" if own_vote is None else ("accept" if own_vote.accept else "reject"),
                _scores_text(own_vote.scores) if own_vote is not None else "",
            ])
            child.setToolTip(5, child.text(5))
            if model is not None and model.status in ("accepted", "rejected"):
                child.setForeground(3, QBrush(ACCEPTED if model.status == "accepted" else REJECTED))
            if own_vote is not None:
                child.setForeground(4, QBrush(ACCEPTED if own_vote.accept else REJECTED))
            parent.addChild(child)
        return parent
