"""The Settings page: this hospital's name, folders, ledger node, SMPC protocol, verification policy
thresholds, and its ledger account keystore."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from PySide6.QtCore import Slot
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.model import AppModel
from app.notifier import report_error, show_message
from app.widgets import item, read_only_table
from core.errors import CoreError
from core.federation.policy import VerificationPolicy
from core.progress import CancelToken, ProgressSink
from core.settings import SMPC_PROTOCOLS, Settings, save_settings, update_settings

POLICY_FIELDS = {
    "max_accuracy_drop": ("Largest accuracy drop accepted", 0.0, 1.0, 0.01,
                          "How much accuracy a candidate may lose against the yardstick (the lower of the "
                          "validator's own update and the round's typical candidate)."),
    "accuracy_z": ("Allowance for small validation sets (standard errors)", 0.0, 5.0, 0.5,
                   "Widens the accuracy tolerance on small validation splits."),
    "min_margin_ratio": ("Smallest confidence ratio", -1.0, 1.0, 0.05,
                         "The candidate's mean logit margin relative to the yardstick's; the test waits "
                         "while the current global model has no confidence on the split (margin <= 0)."),
    "global_margin_ratio": ("Global model's confidence floor (ratio)", 0.0, 10.0, 0.1,
                            "A candidate below the confidence ratio is refused only when its margin is also "
                            "below this times the current global model's: a label-flipped model takes "
                            "confidence away from the global model, an honest update from other patients "
                            "does not, even when it is far less sure of the split than the validator's own."),
    "strict_margin_cases": ("Validation cases for the strict confidence test", 1.0, 1e6, 5.0,
                            "On a split of at least this many cases a candidate less sure than both the "
                            "round's typical candidate and the current global model is refused (the "
                            "confidence ratio becomes 1): adaptive attacks and backdoors take confidence away "
                            "from the global model. Smaller splits keep the smallest confidence ratio, since "
                            "their margins are too noisy for it."),
    "min_cosine": ("Smallest cosine to the validator's update", -1.0, 1.0, 0.05,
                   "Refuses updates that point against the validator's own."),
    "max_norm_ratio": ("Largest update size ratio", 0.1, 100.0, 0.5,
                       "Refuses updates much larger than the round's typical candidate (scaling attacks)."),
    "peer_quantile": ("Typical candidate (quantile of the round's candidates)", 0.05, 1.0, 0.05,
                      "Candidates are compared with the lower of the validator's own update and this quantile "
                      "of all candidates' scores (0.5: the lower median), so hospitals whose data differ "
                      "from the validator's are not rejected for it; attackers cannot move it outside "
                      "the honest candidates' range while fewer than this fraction (and fewer than one "
                      "minus it) of the candidates are theirs."),
}


def _path_row(edit: QLineEdit, browse: QPushButton) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(browse)
    return row


class SettingsPage(QWidget):
    """Edits a copy of the settings and saves it with `save_settings` (validated first)."""

    title = "Settings"

    def __init__(self, model: AppModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model

        self.hospital_name = QLineEdit(objectName="hospitalNameEdit")
        self.home = QLabel(objectName="homeLabel")
        self.home.setWordWrap(True)
        self.blob_dir = QLineEdit(objectName="blobDirEdit")
        browse_blobs = QPushButton("Browse…")
        self.rpc_url = QLineEdit(objectName="rpcUrlEdit", placeholderText="empty: the embedded chain on this machine")
        self.protocol = QComboBox(objectName="protocolCombo")
        self.protocol.addItems(list(SMPC_PROTOCOLS))
        general = QGroupBox("This hospital")
        general_form = QFormLayout(general)
        general_form.addRow("Hospital name:", self.hospital_name)
        general_form.addRow("Data directory:", self.home)
        general_form.addRow("Model files folder:", _path_row(self.blob_dir, browse_blobs))
        network = QGroupBox("Federation network")
        network_form = QFormLayout(network)
        network_form.addRow("Ledger node URL:", self.rpc_url)
        network_form.addRow("SMPC protocol:", self.protocol)
        network_form.addRow(QLabel("A simulated federation runs its three SMPC players on this machine; a real "
                                   "consortium's players are named, with their TLS certificates, in its "
                                   "consortium file.", wordWrap=True, objectName="caption"))

        self.policy: dict[str, QDoubleSpinBox] = {}
        policy_box = QGroupBox("Verification policy (what an honest hospital accepts)")
        policy_form = QFormLayout(policy_box)
        for name, (label, low, high, step, tip) in POLICY_FIELDS.items():
            spin = QDoubleSpinBox(objectName=f"policy_{name}", minimum=low, maximum=high, singleStep=step, decimals=3)
            spin.setToolTip(tip)
            self.policy[name] = spin
            policy_form.addRow(label + ":", spin)
        missing = {f.name for f in fields(VerificationPolicy)} - set(POLICY_FIELDS)
        assert not missing, f"policy thresholds without a field on the Settings page: {missing}"

        self.save = QPushButton("Save settings", objectName="saveSettingsButton")
        self.revert = QPushButton("Revert", objectName="revertSettingsButton")
        self.saved = QLabel(objectName="settingsStatus")
        self.saved.setWordWrap(True)
        save_row = QHBoxLayout()
        save_row.addWidget(self.save)
        save_row.addWidget(self.revert)
        save_row.addWidget(self.saved, 1)

        # -- keystore
        self.accounts = read_only_table(["Account", "Address"])
        self.accounts.setObjectName("accountsTable")
        self.accounts.setMaximumHeight(160)
        self.password = QLineEdit(objectName="passwordEdit", echoMode=QLineEdit.EchoMode.Password)
        self.password_again = QLineEdit(objectName="passwordAgainEdit", echoMode=QLineEdit.EchoMode.Password)
        self.private_key = QLineEdit(objectName="privateKeyEdit", echoMode=QLineEdit.EchoMode.Password,
                                     placeholderText="only to import an existing account (64 hex characters)")
        self.create_account = QPushButton("Create new account", objectName="createAccountButton")
        self.import_account = QPushButton("Import account", objectName="importAccountButton")
        keystore = QGroupBox("Ledger account (encrypted keystore)")
        keystore_form = QFormLayout(keystore)
        self.keystore_dir = QLabel(objectName="caption")
        self.keystore_dir.setWordWrap(True)
        keystore_form.addRow(self.keystore_dir)
        keystore_form.addRow(self.accounts)
        keystore_form.addRow("Password:", self.password)
        keystore_form.addRow("Password again:", self.password_again)
        keystore_form.addRow("Private key:", self.private_key)
        account_buttons = QHBoxLayout()
        account_buttons.addWidget(self.create_account)
        account_buttons.addWidget(self.import_account)
        keystore_form.addRow(account_buttons)
        keystore_form.addRow(QLabel("The password encrypts the key on disk; the app needs it (as "
                                    "MEDFED_KEYSTORE_PASSWORD) to sign this hospital's ledger transactions.",
                                    wordWrap=True, objectName="caption"))

        columns = QHBoxLayout()
        left = QVBoxLayout()
        left.addWidget(general)
        left.addWidget(network)
        left.addWidget(policy_box)
        left.addLayout(save_row)
        left.addStretch(1)
        right = QVBoxLayout()
        right.addWidget(keystore)
        right.addStretch(1)
        columns.addLayout(left, 3)
        columns.addLayout(right, 2)
        body = QWidget()
        body.setLayout(columns)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        QVBoxLayout(self).addWidget(scroll)

        browse_blobs.clicked.connect(self._browse_blobs)
        self.save.clicked.connect(self._save)
        self.revert.clicked.connect(self._show_settings)
        self.create_account.clicked.connect(lambda: self._add_account(import_key=False))
        self.import_account.clicked.connect(lambda: self._add_account(import_key=True))
        model.settings_changed.connect(self._show_settings)
        self._show_settings()

    @Slot()
    def _show_settings(self) -> None:
        settings = self.model.settings
        self.hospital_name.setText(settings.hospital_name)
        self.home.setText(f"{settings.home}  (database {settings.db_path.name}; start with --home or "
                          "MEDFED_HOME to use another directory)")
        self.blob_dir.setText(str(settings.blob_dir))
        self.rpc_url.setText(settings.rpc_url or "")
        self.protocol.setCurrentText(settings.smpc_protocol)
        for name, spin in self.policy.items():
            spin.setValue(float(getattr(settings.policy, name)))
        self.keystore_dir.setText(f"Keyfiles in {settings.keystore_dir}")
        if self.isVisible():
            self._show_accounts()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._show_accounts()  # read when shown: the Ethereum account library loads only then

    def _show_accounts(self) -> None:
        from core.services import explorer

        accounts = explorer.list_accounts(self.model.settings)
        self.accounts.setRowCount(len(accounts))
        for row, account in enumerate(accounts):
            self.accounts.setItem(row, 0, item(account.label))
            self.accounts.setItem(row, 1, item(account.address))

    def edited(self) -> Settings:
        """The settings as edited on the page, validated (ConfigError names the bad value)."""
        policy = VerificationPolicy(**{name: spin.value() for name, spin in self.policy.items()})
        return update_settings(
            self.model.settings,
            hospital_name=self.hospital_name.text(),
            blob_dir=Path(self.blob_dir.text().strip()) if self.blob_dir.text().strip() else None,
            rpc_url=self.rpc_url.text().strip() or None,
            smpc_protocol=self.protocol.currentText(),
            policy=policy,
        )

    @Slot()
    def _save(self) -> None:
        try:
            settings = self.edited()
            path = save_settings(settings)
        except CoreError as exc:
            self.saved.setText("Not saved.")
            report_error(self, "The settings were not saved", exc)
            return
        self.saved.setText(f"Saved to {path}.")
        self.model.set_settings(settings)

    @Slot()
    def _browse_blobs(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for model files", self.blob_dir.text())
        if path:
            self.blob_dir.setText(path)

    def _add_account(self, *, import_key: bool) -> None:
        from core.services import explorer

        if self.password.text() != self.password_again.text():
            show_message(self, "Passwords differ", "The two passwords differ; type the same password twice.")
            return
        if import_key and not self.private_key.text().strip():
            show_message(self, "No private key", "Paste the account's private key to import it.")
            return
        settings, password = self.model.settings, self.password.text()
        key = self.private_key.text() if import_key else None
        label = explorer.account_label(self.hospital_name.text() or settings.hospital_name)

        def work(progress: ProgressSink, cancel: CancelToken) -> explorer.AccountView:
            return explorer.create_account(settings, password, key, label=label)

        # Encrypting with scrypt takes a moment: off the GUI thread like any other work.
        task = self.model.run("keystore", work)
        task.succeeded.connect(self._account_added)
        task.failed.connect(self._account_failed)
        self.create_account.setEnabled(False)
        self.import_account.setEnabled(False)
        task.done.connect(self._account_done)
        self.model.start(task)

    @Slot(object)
    def _account_added(self, account: object) -> None:
        for edit in (self.password, self.password_again, self.private_key):
            edit.clear()
        self._show_accounts()
        self.saved.setText(f"Account {getattr(account, 'label', '')} ({getattr(account, 'address', '')}) created.")

    @Slot(object)
    def _account_failed(self, exc: BaseException) -> None:
        report_error(self, "The account was not created", exc)

    @Slot()
    def _account_done(self) -> None:
        self.create_account.setEnabled(True)
        self.import_account.setEnabled(True)

