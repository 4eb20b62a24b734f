"""The Data page: load this hospital's data, preview it, see its class balance, list what was loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, Slot
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.model import LOADING, AppModel
from app.notifier import report_error
from app.widgets import SERIES, item, local_time, plot, read_only_table
from core.errors import CoreError
from core.progress import CancelToken, ProgressSink
from core.services import datasets
from core.services.datasets import LoadedDataset, LoadRequest, TablePreview, Thumbnail
from core.state.queries import DatasetView, list_datasets

PREVIEW = "preview"
THUMBNAIL = 84  # pixels
MISSING_CHOICES = (("Refuse files with missing values", "error"), ("Drop rows with missing values", "drop_rows"))


class DataPage(QWidget):
    """Loads datasets through file dialogs in a worker; shows the selected dataset."""

    title = "Data"

    def __init__(self, model: AppModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self._csv_path: Path | None = None
        self._views: list[DatasetView] = []

        self.builtin = QComboBox(objectName="builtinCombo")
        for name, description in datasets.builtin_datasets().items():
            self.builtin.addItem(name.replace("_", " "), name)
            self.builtin.setItemData(self.builtin.count() - 1, description, Qt.ItemDataRole.ToolTipRole)
        self.load_builtin = QPushButton("Load bundled dataset", objectName="loadBuiltinButton")
        self.open_csv = QPushButton("Open CSV table…", objectName="openCsvButton")
        self.open_npz = QPushButton("Open MedMNIST .npz…", objectName="openNpzButton")
        self.open_images = QPushButton("Open image folder…", objectName="openImagesButton")
        self.open_dicom = QPushButton("Open DICOM folder…", objectName="openDicomButton")
        self.dicom_tag = QLineEdit(objectName="dicomTagEdit")
        self.dicom_tag.setPlaceholderText("class from sub-folders, or a DICOM attribute (e.g. PatientSex)")
        self.dicom_tag.setToolTip("Leave empty when each class has its own sub-folder; otherwise name the "
                                  "DICOM attribute (keyword or hex tag) that holds the class.")
        self.status = QLabel("Load a dataset: it stays where it is, only its description is recorded.",
                             objectName="dataStatus")
        self.status.setWordWrap(True)

        load_box = QGroupBox("Load data")
        load_layout = QVBoxLayout(load_box)
        builtin_row = QHBoxLayout()
        builtin_row.addWidget(self.builtin, 1)
        builtin_row.addWidget(self.load_builtin)
        load_layout.addLayout(builtin_row)
        for button in (self.open_csv, self.open_npz, self.open_images):
            load_layout.addWidget(button)
        dicom_row = QHBoxLayout()
        dicom_row.addWidget(self.open_dicom)
        dicom_row.addWidget(self.dicom_tag, 1)
        load_layout.addLayout(dicom_row)
        load_layout.addWidget(self.status)

        # The CSV choices appear once a table is picked, beside its raw first rows.
        self.csv_box = QGroupBox("CSV table options", objectName="csvOptions")
        self.csv_file = QLabel(objectName="csvFile")
        self.csv_file.setWordWrap(True)
        self.label_column = QComboBox(objectName="labelColumnCombo")
        self.drop_columns = QListWidget(objectName="dropColumnsList")
        self.drop_columns.setToolTip("Tick the columns to leave out, e.g. a patient identifier.")
        self.drop_columns.setMaximumHeight(140)
        self.missing = QComboBox(objectName="missingCombo")
        for text, value in MISSING_CHOICES:
            self.missing.addItem(text, value)
        self.load_csv = QPushButton("Load table", objectName="loadCsvButton")
        self.cancel_csv = QPushButton("Discard", objectName="discardCsvButton")
        csv_form = QFormLayout(self.csv_box)
        csv_form.addRow(self.csv_file)
        csv_form.addRow("Label column (the class):", self.label_column)
        csv_form.addRow("Leave out columns:", self.drop_columns)
        csv_form.addRow("Missing values:", self.missing)
        csv_buttons = QHBoxLayout()
        csv_buttons.addWidget(self.load_csv)
        csv_buttons.addWidget(self.cancel_csv)
        csv_form.addRow(csv_buttons)
        self.csv_box.hide()

        self.table = read_only_table(["Name", "Kind", "Samples", "Classes", "Input", "Loaded", "Source"])
        self.table.setObjectName("datasetsTable")
        recorded_box = QGroupBox("Datasets loaded on this machine")
        QVBoxLayout(recorded_box).addWidget(self.table)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(load_box)
        left_layout.addWidget(self.csv_box)
        left_layout.addWidget(recorded_box, 1)

        self.preview_title = QLabel("Preview", objectName="sectionTitle")
        self.preview_table = read_only_table([], stretch_last=False)
        self.preview_table.setObjectName("previewTable")
        self.thumbnails = QListWidget(objectName="thumbnailList")
        self.thumbnails.setViewMode(QListView.ViewMode.IconMode)
        self.thumbnails.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.thumbnails.setGridSize(QSize(THUMBNAIL + 24, THUMBNAIL + 28))
        self.thumbnails.setResizeMode(QListView.ResizeMode.Adjust)
        self.thumbnails.setMovement(QListView.Movement.Static)
        self.empty = QLabel("Nothing to preview yet.", alignment=Qt.AlignmentFlag.AlignCenter)
        self.preview = QStackedWidget(objectName="previewStack")
        for widget in (self.empty, self.preview_table, self.thumbnails):
            self.preview.addWidget(widget)
        self.notes = QLabel(objectName="datasetNotes")
        self.notes.setWordWrap(True)

        self.balance_plot = plot("Class balance", "cases", "class")
        self.balance_plot.getPlotItem().legend.hide()
        self.balance_bars = pg.BarGraphItem(x=[], height=[], width=0.6, brush=SERIES[0])
        self.balance_plot.addItem(self.balance_bars)
        self.balance_plot.setMaximumHeight(240)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.preview_title)
        right_layout.addWidget(self.preview, 3)
        right_layout.addWidget(self.notes)
        right_layout.addWidget(self.balance_plot, 2)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([460, 900])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

        self.load_builtin.clicked.connect(self._load_builtin)
        self.open_csv.clicked.connect(self._pick_csv)
        self.open_npz.clicked.connect(self._pick_npz)
        self.open_images.clicked.connect(lambda: self._pick_folder("Choose an image folder (one sub-folder per class)"))
        self.open_dicom.clicked.connect(self._pick_dicom)
        self.load_csv.clicked.connect(self._load_csv)
        self.cancel_csv.clicked.connect(self._discard_csv)
        self.label_column.currentTextChanged.connect(self._label_changed)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        model.datasets_changed.connect(self.refresh)
        model.busy_changed.connect(self._update_buttons)
        self.refresh()

    # -- reading the state -----------------------------------------------------------------------

    @Slot()
    def refresh(self, select_id: int | None = None) -> None:
        """Lists the recorded datasets again, keeping (or moving to) the selected one."""
        current = self.selected_dataset()
        wanted = select_id if select_id is not None else (current.id if current else None)
        self._views = list_datasets(self.model.db)
        self.table.blockSignals(True)
        self.table.setRowCount(len(self._views))
        for row, view in enumerate(self._views):
            classes = ", ".join(f"{name} {count}" for name, count in view.class_counts.items())
            values = [view.name, view.kind, view.samples, classes, "×".join(map(str, view.input_shape)),
                      local_time(view.loaded_at), view.source]
            for column, value in enumerate(values):
                self.table.setItem(row, column, item(value, align_right=column == 2,
                                                     tooltip=view.source if column == 6 else None))
        self.table.blockSignals(False)
        row = next((i for i, v in enumerate(self._views) if v.id == wanted), 0 if self._views else None)
        if row is not None:
            self.table.selectRow(row)

    def selected_dataset(self) -> DatasetView | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows or rows[0].row() >= len(self._views):
            return None
        return self._views[rows[0].row()]

    @Slot()
    def _selection_changed(self) -> None:
        view = self.selected_dataset()
        if view is None:
            return
        self._show_balance(view.class_counts)
        self.preview_title.setText(f"Preview of {view.name}")
        db = self.model.db

        def work(progress: ProgressSink, cancel: CancelToken) -> LoadedDataset:
            return datasets.load_recorded(db, view.id)

        task = self.model.run(PREVIEW, work)
        task.succeeded.connect(self._show_loaded)
        task.failed.connect(self._preview_failed)
        self.model.start(task)

    # -- loading ---------------------------------------------------------------------------------

    def _start_load(self, request: LoadRequest) -> None:
        self.status.setText(f"Loading {request.source}…")
        db = self.model.db

        def work(progress: ProgressSink, cancel: CancelToken) -> LoadedDataset:
            return datasets.load_and_record(db, request)

        task = self.model.run(LOADING, work)
        task.succeeded.connect(self._loaded)
        task.failed.connect(self._load_failed)
        self.model.start(task)
        self._update_buttons()

    @Slot()
    def _load_builtin(self) -> None:
        self._start_load(LoadRequest(self.builtin.currentData()))

    @Slot()
    def _pick_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a CSV table of patients", str(Path.home()),
                                              "Tables (*.csv *.tsv);;All files (*)")
        if not path:
            return
        try:
            preview = datasets.csv_preview(Path(path))
        except CoreError as exc:
            self.status.setText("The file could not be read.")
            report_error(self, "Could not read the table", exc)
            return
        self._csv_path = Path(path)
        self.csv_file.setText(f"<b>{Path(path).name}</b>: {preview.total_rows} rows, {len(preview.columns)} columns")
        self.label_column.blockSignals(True)
        self.label_column.clear()
        self.label_column.addItems(list(preview.columns))
        self.label_column.setCurrentIndex(len(preview.columns) - 1)
        self.label_column.blockSignals(False)
        self.drop_columns.clear()
        for column in preview.columns:
            entry = QListWidgetItem(column)
            entry.setFlags(entry.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            entry.setCheckState(Qt.CheckState.Unchecked)
            self.drop_columns.addItem(entry)
        self._label_changed(self.label_column.currentText())
        self.csv_box.show()
        self._show_table(preview, f"Raw rows of {Path(path).name} (choose the label column, then load)")
        self.status.setText("Choose the label column and the columns to leave out, then press Load table.")

    @Slot(str)
    def _label_changed(self, label: str) -> None:
        for row in range(self.drop_columns.count()):
            entry = self.drop_columns.item(row)
            is_label = entry.text() == label
            if is_label:
                entry.setCheckState(Qt.CheckState.Unchecked)
            flags = entry.flags()
            entry.setFlags(flags & ~Qt.ItemFlag.ItemIsEnabled if is_label else flags | Qt.ItemFlag.ItemIsEnabled)

    def _dropped_columns(self) -> tuple[str, ...]:
        return tuple(self.drop_columns.item(r).text() for r in range(self.drop_columns.count())
                     if self.drop_columns.item(r).checkState() == Qt.CheckState.Checked)

    @Slot()
    def _load_csv(self) -> None:
        if self._csv_path is None:
            return
        self._start_load(LoadRequest(str(self._csv_path), label_column=self.label_column.currentText(),
                                     drop_columns=self._dropped_columns(), missing=self.missing.currentData()))

    @Slot()
    def _discard_csv(self) -> None:
        self._csv_path = None
        self.csv_box.hide()
        self.status.setText("")
        self._selection_changed()

    @Slot()
    def _pick_npz(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a MedMNIST archive", str(Path.home()),
                                              "MedMNIST archives (*.npz);;All files (*)")
        if path:
            self._start_load(LoadRequest(path))

    def _pick_folder(self, caption: str) -> None:
        path = QFileDialog.getExistingDirectory(self, caption, str(Path.home()))
        if path:
            self._start_load(LoadRequest(path))

    @Slot()
    def _pick_dicom(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a DICOM folder", str(Path.home()))
        if path:
            self._start_load(LoadRequest(path, dicom_label_tag=self.dicom_tag.text().strip() or None))

    @Slot(object)
    def _loaded(self, loaded: LoadedDataset) -> None:
        self._csv_path = None
        self.csv_box.hide()
        counts = ", ".join(f"{k}: {v}" for k, v in loaded.view.class_counts.items())
        self.status.setText(f"Loaded {loaded.view.name}: {loaded.view.samples} cases ({counts}).")
        self.model.datasets_changed.emit()
        self.refresh(select_id=loaded.view.id)

    @Slot(object)
    def _load_failed(self, exc: BaseException) -> None:
        self.status.setText("Loading failed; nothing was recorded.")
        report_error(self, "Could not load the data", exc)

    @Slot(object)
    def _preview_failed(self, exc: BaseException) -> None:
        self.preview.setCurrentWidget(self.empty)
        self.empty.setText("The preview is unavailable: the data could not be read again.")
        report_error(self, "Could not show the dataset", exc)

    # -- showing a dataset -----------------------------------------------------------------------

    @Slot(object)
    def _show_loaded(self, loaded: LoadedDataset) -> None:
        current = self.selected_dataset()
        if self._csv_path is not None or current is None or current.id != loaded.view.id:
            return  # the user moved on while it loaded
        self._show_balance(loaded.view.class_counts)
        if loaded.table is not None:
            self._show_table(loaded.table, f"{loaded.view.name}: first {len(loaded.table.rows)} of "
                             f"{loaded.table.total_rows} cases (values standardised as the model sees them)")
        else:
            self._show_thumbnails(loaded.thumbnails, f"{loaded.view.name}: examples of each class")
        self.notes.setText(" ".join(loaded.dataset.notes))

    def _show_table(self, preview: TablePreview, title: str) -> None:
        self.preview_title.setText(title)
        self.preview_table.clear()
        self.preview_table.setColumnCount(len(preview.columns))
        self.preview_table.setHorizontalHeaderLabels(list(preview.columns))
        self.preview_table.setRowCount(len(preview.rows))
        for r, row in enumerate(preview.rows):
            for c, value in enumerate(row):
                self.preview_table.setItem(r, c, item(value))
        self.preview.setCurrentWidget(self.preview_table)

    def _show_thumbnails(self, thumbnails: tuple[Thumbnail, ...], title: str) -> None:
        self.preview_title.setText(title)
        self.thumbnails.clear()
        for thumb in thumbnails:
            self.thumbnails.addItem(QListWidgetItem(QIcon(_pixmap(thumb.pixels)), thumb.class_name))
        self.preview.setCurrentWidget(self.thumbnails)

    def _show_balance(self, counts: dict[str, int]) -> None:
        names = list(counts)
        self.balance_bars.setOpts(x=np.arange(len(names)), height=[counts[n] for n in names], width=0.6)
        self.balance_plot.getAxis("bottom").setTicks([list(enumerate(names))])

    @Slot()
    def _update_buttons(self) -> None:
        idle = not self.model.is_busy(LOADING)
        for button in (self.load_builtin, self.open_csv, self.open_npz, self.open_images, self.open_dicom,
                       self.load_csv):
            button.setEnabled(idle)


def _pixmap(pixels: np.ndarray) -> QPixmap:
    """An 8-bit grayscale or RGB array as a thumbnail-sized pixmap (the array is copied)."""
    data = np.ascontiguousarray(pixels)
    height, width = data.shape[:2]
    if data.ndim == 2:
        image = QImage(data.data, width, height, width, QImage.Format.Format_Grayscale8)
    else:
        image = QImage(data.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    # Nearest-neighbour upscaling keeps a 28x28 scan's pixels sharp instead of blurring them.
    return QPixmap.fromImage(image.copy()).scaled(THUMBNAIL, THUMBNAIL, Qt.AspectRatioMode.KeepAspectRatio,
                                                  Qt.TransformationMode.FastTransformation)
