"""The Training page: train the CNN on this hospital's data with live curves, cancel, and test it."""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.model import FEDERATION, TRAINING, AppModel
from app.notifier import report_error
from app.widgets import SERIES, EvaluationPanel, item, local_time, percent, plot, read_only_table
from app.workers import Task
from core.progress import CancelToken, Progress, ProgressSink, Stage
from core.services.training import TrainingRequest, train_locally
from core.state.queries import EpochView, TrainingRunView, list_datasets, list_training_runs

NETWORKS = (("Automatic (by the kind of data)", None), ("1-D CNN for tables (tabular_cnn)", "tabular_cnn"),
            ("2-D CNN for images (image_cnn)", "image_cnn"))


class TrainingPage(QWidget):
    """Local training: settings, live loss/accuracy, progress and cancel, results and past runs."""

    title = "Training"

    def __init__(self, model: AppModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self._runs: list[TrainingRunView] = []
        self._live: list[EpochView] = []
        self._task: Task | None = None

        self.dataset = QComboBox(objectName="trainingDatasetCombo")
        self.network = QComboBox(objectName="networkCombo")
        for text, value in NETWORKS:
            self.network.addItem(text, value)
        self.epochs = QSpinBox(objectName="epochsSpin", minimum=1, maximum=500, value=10)
        self.batch_size = QSpinBox(objectName="batchSizeSpin", minimum=1, maximum=4096, value=32)
        self.learning_rate = QDoubleSpinBox(objectName="learningRateSpin", decimals=4, minimum=0.0001,
                                            maximum=0.5, singleStep=0.001, value=0.005)
        self.train = QPushButton("Train and test", objectName="trainButton")
        self.train.setDefault(True)
        self.cancel = QPushButton("Cancel", objectName="cancelTrainingButton", enabled=False)
        self.progress = QProgressBar(objectName="trainingProgress", minimum=0, maximum=100, value=0)
        self.status = QLabel("Choose a dataset and press Train and test.", objectName="trainingStatus")
        self.status.setWordWrap(True)

        settings_box = QGroupBox("Model and training settings")
        form = QFormLayout(settings_box)
        form.addRow("Dataset:", self.dataset)
        form.addRow("Network:", self.network)
        form.addRow("Epochs:", self.epochs)
        form.addRow("Batch size:", self.batch_size)
        form.addRow("Learning rate:", self.learning_rate)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train)
        buttons.addWidget(self.cancel)
        form.addRow(buttons)
        form.addRow(self.progress)
        form.addRow(self.status)
        hint = QLabel("60% of the cases train the model, 20% check it after every epoch (validation), "
                      "and 20% are held out to test it once training ends.", objectName="caption")
        hint.setWordWrap(True)
        form.addRow(hint)

        self.runs_table = read_only_table(["Run", "Dataset", "Network", "Epochs", "Status", "Test accuracy",
                                           "Started", "Note"])
        self.runs_table.setObjectName("runsTable")
        runs_box = QGroupBox("Training runs on this machine")
        QVBoxLayout(runs_box).addWidget(self.runs_table)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(settings_box)
        left_layout.addWidget(runs_box, 1)

        self.loss_plot = plot("Loss", "cross-entropy", "epoch")
        self.loss_plot.setObjectName("lossPlot")
        self.accuracy_plot = plot("Accuracy", "accuracy", "epoch", legend_at_top=False)
        self.accuracy_plot.setObjectName("accuracyPlot")
        self.accuracy_plot.setYRange(0, 1)
        self.curves = {
            "loss": self.loss_plot.plot([], [], name="training", pen={"color": SERIES[0], "width": 2},
                                        symbol="o", symbolSize=5, symbolBrush=SERIES[0]),
            "val_loss": self.loss_plot.plot([], [], name="validation", pen={"color": SERIES[1], "width": 2},
                                            symbol="o", symbolSize=5, symbolBrush=SERIES[1]),
            "accuracy": self.accuracy_plot.plot([], [], name="training", pen={"color": SERIES[0], "width": 2},
                                                symbol="o", symbolSize=5, symbolBrush=SERIES[0]),
            "val_accuracy": self.accuracy_plot.plot([], [], name="validation",
                                                    pen={"color": SERIES[1], "width": 2},
                                                    symbol="o", symbolSize=5, symbolBrush=SERIES[1]),
        }
        self.evaluation = EvaluationPanel("Trained and tested")
        plots = QHBoxLayout()
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.accuracy_plot)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addLayout(plots, 3)
        right_layout.addWidget(self.evaluation, 2)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([430, 900])
        QVBoxLayout(self).addWidget(splitter)

        self.train.clicked.connect(self._start)
        self.cancel.clicked.connect(self._cancel)
        self.runs_table.itemSelectionChanged.connect(self._show_selected)
        model.datasets_changed.connect(self._refresh_datasets)
        model.training_changed.connect(self.refresh)
        model.busy_changed.connect(self._update_buttons)
        self._refresh_datasets()
        self.refresh()

    # -- state -----------------------------------------------------------------------------------

    @Slot()
    def _refresh_datasets(self) -> None:
        current = self.dataset.currentData()
        self.dataset.clear()
        for view in list_datasets(self.model.db):
            self.dataset.addItem(f"{view.name} ({view.samples} cases, {view.kind})", view.id)
        index = self.dataset.findData(current)
        self.dataset.setCurrentIndex(max(index, 0))
        self._update_buttons()
        if self.dataset.count() == 0:
            self.status.setText("Load a dataset on the Data page first.")

    @Slot()
    def refresh(self, select_id: int | None = None) -> None:
        self._runs = list_training_runs(self.model.db)
        self.runs_table.blockSignals(True)
        self.runs_table.setRowCount(len(self._runs))
        for row, run in enumerate(self._runs):
            accuracy = run.evaluation.accuracy if run.evaluation else None
            values = [f"#{run.id}", run.dataset_name or "(deleted)", run.architecture, run.epochs, run.status,
                      percent(accuracy), local_time(run.started_at), run.message or ""]
            for column, value in enumerate(values):
                self.runs_table.setItem(row, column, item(value, align_right=column in (3, 5)))
        self.runs_table.blockSignals(False)
        row = next((i for i, r in enumerate(self._runs) if r.id == select_id), 0 if self._runs else None)
        if row is not None:
            self.runs_table.selectRow(row)
            self._show_run(self._runs[row])

    def selected_run(self) -> TrainingRunView | None:
        rows = self.runs_table.selectionModel().selectedRows()
        return self._runs[rows[0].row()] if rows and rows[0].row() < len(self._runs) else None

    @Slot()
    def _show_selected(self) -> None:
        run = self.selected_run()
        if run is not None and self._task is None:
            self._show_run(run)

    def _show_run(self, run: TrainingRunView) -> None:
        self._plot(list(run.history))
        origin = f"run #{run.id} on {run.dataset_name}" if run.dataset_name else f"run #{run.id}"
        self.evaluation.set_evaluation(run.evaluation, origin=origin)
        if self._task is None:
            self._show_settings_of(run)
            self.progress.setValue(100 if run.status == "completed" else 0)
            self.status.setText(f"Run #{run.id} on {run.dataset_name}: {run.status}"
                                + (f" ({run.message})" if run.message else "") + ".")

    def _show_settings_of(self, run: TrainingRunView) -> None:
        """Puts a recorded run's settings in the form, so it can be repeated or adjusted."""
        index = self.dataset.findData(run.dataset_id)
        if index >= 0:
            self.dataset.setCurrentIndex(index)
        self.epochs.setValue(run.epochs)
        self.batch_size.setValue(run.batch_size)
        if "learning_rate" in run.config:
            self.learning_rate.setValue(float(run.config["learning_rate"]))

    def _plot(self, history: list[EpochView]) -> None:
        for key, curve in self.curves.items():
            points = [(e.epoch, getattr(e, key)) for e in history if getattr(e, key) is not None]
            curve.setData([p[0] for p in points], [p[1] for p in points])

    # -- training --------------------------------------------------------------------------------

    @Slot()
    def _start(self) -> None:
        dataset_id = self.dataset.currentData()
        if dataset_id is None:
            return
        request = TrainingRequest(dataset_id=int(dataset_id), architecture=self.network.currentData(),
                                  epochs=self.epochs.value(), batch_size=self.batch_size.value(),
                                  learning_rate=self.learning_rate.value())
        db = self.model.db

        def work(progress: ProgressSink, cancel: CancelToken) -> TrainingRunView:
            return train_locally(db, request, progress, cancel)

        self._live = []
        self._plot([])
        self.evaluation.set_evaluation(None)
        self.progress.setValue(0)
        self.status.setText("Starting…")
        task = self.model.run(TRAINING, work)
        task.progressed.connect(self._progressed)
        task.succeeded.connect(self._finished)
        task.failed.connect(self._failed)
        task.cancelled.connect(self._cancelled)
        task.done.connect(self._done)
        self._task = task
        self.train.setEnabled(False)
        self.cancel.setEnabled(True)
        self.model.start(task)

    @Slot()
    def _update_buttons(self) -> None:
        # One model trains at a time: a federation run trains its hospitals on the same cores.
        federating = self.model.is_busy(FEDERATION)
        self.train.setEnabled(self.dataset.count() > 0 and self._task is None and not federating)
        self.train.setToolTip("Wait for the federation run to finish." if federating else "")

    @Slot(object)
    def _progressed(self, event: Progress) -> None:
        self.status.setText(event.message[:1].upper() + event.message[1:])
        if event.stage is Stage.TRAINING and event.values:
            epoch = len(self._live) + 1
            v = event.values
            self._live.append(EpochView(epoch, v.get("loss"), v.get("accuracy"), v.get("val_loss"),
                                        v.get("val_accuracy")))
            self._plot(self._live)
            if event.fraction is not None:
                self.progress.setValue(int(95 * event.fraction))
        if event.stage is Stage.DONE:
            self.progress.setValue(100)

    @Slot(object)
    def _finished(self, run: TrainingRunView) -> None:
        accuracy = run.evaluation.accuracy if run.evaluation else None
        self.status.setText(f"Run #{run.id} finished: test accuracy {percent(accuracy)}.")
        self._task = None
        self.model.training_changed.emit()  # lists the new run first and shows it
        self.model.evaluations_changed.emit()

    @Slot(object)
    def _failed(self, exc: BaseException) -> None:
        self.status.setText("Training failed; the run is recorded as failed.")
        report_error(self, "Training failed", exc)

    @Slot()
    def _cancelled(self) -> None:
        self.status.setText(f"Training cancelled after {len(self._live)} epoch(s); the run is recorded as cancelled.")

    @Slot()
    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.cancel.setEnabled(False)
            self.status.setText("Cancelling after the current batch…")

    @Slot()
    def _done(self) -> None:
        was_live = self._task is not None
        self._task = None
        self.cancel.setEnabled(False)
        self._update_buttons()
        if was_live:  # failed or cancelled: show the run as recorded, with the epochs it finished
            outcome = self.status.text()
            self.model.training_changed.emit()
            self.status.setText(outcome)
