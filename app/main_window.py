"""The main window: a page list on the left, the pages, a first-start welcome, and the status bar."""

from __future__ import annotations

import logging

from PySide6.QtCore import QSize, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.model import AppModel
from app.notifier import NOTIFIER, show_message
from app.pages.data_page import DataPage
from app.pages.federation_page import FederationPage
from app.pages.ledger_page import LedgerPage
from app.pages.settings_page import SettingsPage
from app.pages.training_page import TrainingPage
from app.pages.verification_page import VerificationPage
from app.resources import icon
from core.state.queries import list_federations

log = logging.getLogger(__name__)

PAGE_ICONS = {"Data": "data", "Training": "training", "Federation": "federation",
              "Verification": "verification", "Ledger": "ledger", "Settings": "settings"}


class MainWindow(QMainWindow):
    """Holds the pages; each is handed the shared `AppModel` and reads its own state."""

    def __init__(self, model: AppModel) -> None:
        super().__init__()
        self.model = model
        self._closed = False
        self.setWindowTitle(f"MedFedChain — {model.settings.hospital_name}")
        self.setWindowIcon(icon("app"))
        self.resize(1360, 860)

        self.data = DataPage(model)
        self.training = TrainingPage(model)
        self.federation = FederationPage(model)
        self.verification = VerificationPage(model)
        self.ledger = LedgerPage(model)
        self.settings = SettingsPage(model)
        self.pages: dict[str, QWidget] = {
            page.title: page for page in (self.data, self.training, self.federation, self.verification,
                                          self.ledger, self.settings)
        }

        self.nav = QListWidget(objectName="navigation")
        self.nav.setIconSize(QSize(22, 22))
        self.nav.setFixedWidth(180)
        self.stack = QStackedWidget(objectName="pages")
        for title, page in self.pages.items():
            entry = QListWidgetItem(icon(PAGE_ICONS[title]), title)
            entry.setSizeHint(QSize(160, 44))
            self.nav.addItem(entry)
            self.stack.addWidget(page)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)

        self.welcome = self._welcome_banner()
        content = QWidget()
        content_layout = QVBoxLayout(content)
        content_layout.setContentsMargins(8, 8, 8, 0)
        content_layout.addWidget(self.welcome)
        content_layout.addWidget(self.stack, 1)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.nav)
        layout.addWidget(content, 1)
        self.setCentralWidget(central)

        self.busy = QLabel(objectName="busyLabel")
        self.statusBar().addPermanentWidget(self.busy)
        self.statusBar().showMessage(f"Local state: {model.settings.db_path}")

        model.show_page.connect(self.show_page)
        model.busy_changed.connect(self._update_busy)
        model.federations_changed.connect(self._update_welcome)
        NOTIFIER.exception_raised.connect(self._unexpected)
        self._update_welcome()
        self.show_page("Federation" if not self.welcome.isHidden() else "Data")

    def _welcome_banner(self) -> QFrame:
        banner = QFrame(objectName="welcomeBanner")
        text = QLabel(
            "<b>Welcome to MedFedChain.</b> See a whole federation at work in one click: five simulated "
            "hospitals train on the bundled breast-cancer data, one of them flips its labels to poison the "
            "shared model, and every hospital's vote keeps its update out — all recorded on this machine's "
            "ledger.", objectName="welcomeText")
        text.setWordWrap(True)
        self.demo_button = QPushButton("Run the demo federation", objectName="demoButton")
        self.demo_button.setIcon(icon("federation"))
        dismiss = QPushButton("Not now", objectName="dismissWelcome")
        layout = QHBoxLayout(banner)
        layout.addWidget(text, 1)
        layout.addWidget(self.demo_button)
        layout.addWidget(dismiss)
        self.demo_button.clicked.connect(self._run_demo)
        dismiss.clicked.connect(banner.hide)
        return banner

    @Slot()
    def _update_welcome(self) -> None:
        self.welcome.setVisible(not list_federations(self.model.db))

    @Slot()
    def _run_demo(self) -> None:
        self.welcome.hide()
        self.show_page("Federation")
        self.federation.start_demo()

    @Slot(str)
    def show_page(self, title: str) -> None:
        self.nav.setCurrentRow(list(self.pages).index(title))

    def page(self, title: str) -> QWidget:
        return self.pages[title]

    @Slot()
    def _update_busy(self) -> None:
        names = self.model.tasks.running_names()
        self.busy.setText("Working: " + ", ".join(names) if names else "")

    @Slot(str, str)
    def _unexpected(self, summary: str, details: str) -> None:
        show_message(self, "Unexpected error",
                     f"Something went wrong that MedFedChain did not expect:\n{summary}\n\n"
                     "Your data and results recorded so far are kept. The details are in the log.",
                     detail=details, icon=QMessageBox.Icon.Critical)

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._closed:
            event.accept()
            return
        self._closed = True
        if self.model.is_busy():
            self.statusBar().showMessage("Stopping running work; what finished is kept…")
            self.repaint()
        self.model.close()
        NOTIFIER.exception_raised.disconnect(self._unexpected)
        event.accept()
