"""The batch page: inputs, the model's expectations, a preview, and the run itself."""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from zoodesk.batch.console import input_name
from zoodesk.gui import _render
from zoodesk.gui._style import icon
from zoodesk.gui._worker import TaskRunner, Worker
from zoodesk.gui.errors import readable_message, report_error
from zoodesk.gui.image_view import ImageViewWidget
from zoodesk.gui.objects_options import ObjectOptionsWidget
from zoodesk.gui.services import Services

if TYPE_CHECKING:
    from zoodesk.batch.preview import InputInfo, PreviewResult
    from zoodesk.batch.record import FileEntry, RunRecord
    from zoodesk.models.library import Library, LibraryItem
    from zoodesk.models.package import ModelPackage

log = logging.getLogger(__name__)

COLUMNS = (
    "File",
    "Axes",
    "Shape",
    "Type",
    "Pixel size",
    "Size",
    "Fits the model",
    "Status",
    "Time",
)
(
    COL_FILE,
    COL_AXES,
    COL_SHAPE,
    COL_TYPE,
    COL_PIXEL,
    COL_SIZE,
    COL_FIT,
    COL_STATUS,
    COL_TIME,
) = range(len(COLUMNS))
#: Largest side of the overview picture of a large image.
OVERVIEW_SIZE = 1024

_STATUS_TEXT = {
    "ok": "done",
    "failed": "failed",
    "skipped": "done earlier",
    "not done": "not done",
    "pending": "waiting",
}


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "–"
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, seconds_left = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {seconds_left:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class BatchWidget(QWidget):
    """Choose inputs and a model, preview, then run the whole batch with progress.

    Parameters
    ----------
    services
        The engine.
    runner
        Runs the scan, the preview and the run off the GUI thread.
    """

    #: The model for the run is loaded (its name).
    model_loaded = Signal(str)
    #: The input scan ended (number of files found).
    scan_finished = Signal(int)
    #: A preview is shown (the :class:`PreviewResult`).
    preview_shown = Signal(object)
    #: A run started / is no longer running.
    running_changed = Signal(bool)
    #: A run ended, cancelled or not (its :class:`RunRecord`); None when it failed.
    run_finished = Signal(object)
    #: The user wants to see a run's results (the record path).
    open_results_requested = Signal(Path)
    #: A line for the status bar.
    status_message = Signal(str)

    def __init__(
        self, services: Services, runner: TaskRunner, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("batchPage")
        self.services = services
        self.runner = runner
        self.setAcceptDrops(True)
        self.package: ModelPackage | None = None
        self._items: list[LibraryItem] = []
        self._pending_model: str | None = None
        self._scan: Worker | None = None
        self._scan_generation = 0
        self._infos: list[InputInfo] = []
        self._preview: PreviewResult | None = None
        self._preview_worker: Worker | None = None
        self._overview_scale = 1
        self._overview_path: Path | None = None
        self._overview_series = 0
        self._region: tuple[int, int, int, int] | None = None
        self._run: Worker | None = None
        self._run_over = False
        self._run_started = 0.0
        self._run_total = 0
        self._run_to_do = 0
        self._files_done = 0
        self._pixels_done = 0
        self._seconds_done = 0.0
        self.last_record: RunRecord | None = None
        self.record_path: Path | None = None
        self._build_actions()
        self._build_ui()
        self._update_buttons()

    # ------------------------------------------------------------------ building

    def _build_actions(self) -> None:
        self.action_start = QAction(icon("start"), "&Start run", self)
        self.action_start.setShortcut(QKeySequence("Ctrl+R"))
        self.action_start.triggered.connect(self._on_start_triggered)
        self.action_cancel = QAction(icon("cancel"), "&Cancel run", self)
        self.action_cancel.setShortcut(QKeySequence("Ctrl+."))
        self.action_cancel.triggered.connect(self._on_cancel_triggered)
        self.action_resume = QAction(icon("resume"), "&Resume run", self)
        self.action_resume.setShortcut(QKeySequence("Ctrl+Shift+R"))
        self.action_resume.setToolTip("Process the files not done yet; finished ones are kept")
        self.action_resume.triggered.connect(self._on_resume_triggered)
        self.action_preview = QAction(icon("preview"), "&Preview selected image", self)
        self.action_preview.setShortcut(QKeySequence("Ctrl+P"))
        self.action_preview.triggered.connect(self._on_preview_triggered)
        self.action_add_folder = QAction(icon("folder"), "Add input &folder…", self)
        self.action_add_folder.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.action_add_folder.triggered.connect(self._on_add_folder_triggered)
        self.action_samples = QAction(icon("samples"), "Try the &sample images", self)
        self.action_samples.triggered.connect(self._on_samples_triggered)

    def _build_ui(self) -> None:
        # Model and its expectations.
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("modelCombo")
        self.model_combo.setMinimumContentsLength(28)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.expect_label = QLabel("Choose a model.")
        self.expect_label.setObjectName("expectations")
        self.expect_label.setWordWrap(True)
        self.expect_label.setTextFormat(Qt.TextFormat.RichText)

        # Inputs.
        self.inputs_list = QListWidget()
        self.inputs_list.setObjectName("inputsList")
        self.inputs_list.setMaximumHeight(54)
        self.inputs_list.setToolTip("Folders and files to process; drop them here")
        add_folder = QPushButton(icon("folder"), "Add folder…")
        add_folder.clicked.connect(self.action_add_folder.trigger)
        add_files = QPushButton("Add files…")
        add_files.clicked.connect(self._on_add_files_clicked)
        remove = QPushButton("Remove")
        remove.clicked.connect(self._on_remove_input_clicked)
        self.samples_button = QPushButton(icon("samples"), "Try the sample images")
        self.samples_button.setObjectName("samplesButton")
        self.samples_button.clicked.connect(self.action_samples.trigger)
        input_buttons = QHBoxLayout()
        for b in (add_folder, add_files, remove, self.samples_button):
            input_buttons.addWidget(b)
        input_buttons.addStretch(1)
        self.patterns_edit = QLineEdit()
        self.patterns_edit.setPlaceholderText("all images (e.g. *.tif; *_dapi.png)")
        self.patterns_edit.editingFinished.connect(self._on_inputs_changed)
        self.recursive_check = QCheckBox("Include sub-folders")
        self.recursive_check.toggled.connect(self._on_inputs_changed)
        self.axes_edit = QLineEdit()
        self.axes_edit.setPlaceholderText("from the files (e.g. CYX, TZYX)")
        self.axes_edit.setMaximumWidth(200)
        self.axes_edit.editingFinished.connect(self._on_inputs_changed)
        self.scenes_edit = QLineEdit()
        self.scenes_edit.setObjectName("scenesEdit")
        self.scenes_edit.setPlaceholderText("all")
        self.scenes_edit.setToolTip(
            "Scenes (CZI), positions (ND2) or images (LIF) to process, by name or number; "
            "wildcards allowed, several separated by ';' (e.g. P*; 2)"
        )
        self.scenes_edit.editingFinished.connect(self._on_inputs_changed)
        self.channel_spin = QSpinBox()
        self.channel_spin.setRange(-1, 64)
        self.channel_spin.setSpecialValueText("as the model needs")
        self.channel_spin.setValue(-1)
        self.channel_spin.setToolTip("The image channel fed to a one-channel model (0 = first)")
        self.channel_spin.valueChanged.connect(self._on_inputs_changed)

        inputs_box = QGroupBox("1. Images and model")
        form = QFormLayout(inputs_box)
        form.addRow("Model:", self.model_combo)
        form.addRow("Inputs:", self.inputs_list)
        form.addRow("", input_buttons)
        patterns_row = QHBoxLayout()
        patterns_row.addWidget(self.patterns_edit, 1)
        patterns_row.addWidget(QLabel("Scenes:"))
        patterns_row.addWidget(self.scenes_edit)
        patterns_row.addWidget(self.recursive_check)
        form.addRow("Only files matching:", patterns_row)
        mapping_row = QHBoxLayout()
        mapping_row.addWidget(QLabel("Image axes:"))
        mapping_row.addWidget(self.axes_edit)
        mapping_row.addWidget(QLabel("Channel:"))
        mapping_row.addWidget(self.channel_spin)
        mapping_row.addStretch(1)
        form.addRow("Axis mapping:", mapping_row)
        form.addRow("Model expects:", self.expect_label)

        # Files found.
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("filesTable")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_FIT, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_file_selected)
        self.files_label = QLabel("No inputs yet: add a folder, drop one here, or try the samples.")
        self.files_label.setObjectName("filesLabel")

        # Preview.
        self.view = ImageViewWidget("Select a file to see it here; drag on it to pick a region.")
        self.view.setObjectName("previewView")
        self.view.set_region_selectable(True)
        self.view.region_selected.connect(self._on_region_selected)
        preview_button = QPushButton(icon("preview"), "Preview")
        preview_button.setObjectName("previewButton")
        preview_button.clicked.connect(self.action_preview.trigger)
        self.preview_button = preview_button
        self.output_combo = QComboBox()
        self.output_combo.setMinimumContentsLength(18)
        self.output_combo.currentIndexChanged.connect(self._on_overlay_changed)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setMaximumWidth(140)
        self.opacity_slider.valueChanged.connect(self._on_overlay_changed)
        self.preview_label = QLabel("")
        self.preview_label.setObjectName("previewLabel")
        self.preview_label.setWordWrap(True)
        preview_controls = QHBoxLayout()
        preview_controls.addWidget(preview_button)
        preview_controls.addWidget(QLabel("Output:"))
        preview_controls.addWidget(self.output_combo)
        preview_controls.addWidget(QLabel("Opacity:"))
        preview_controls.addWidget(self.opacity_slider)
        preview_controls.addStretch(1)
        preview_box = QWidget()
        preview_layout = QVBoxLayout(preview_box)
        preview_layout.setContentsMargins(0, 0, 0, 0)
        preview_layout.addWidget(self.view, 1)
        preview_layout.addLayout(preview_controls)
        preview_layout.addWidget(self.preview_label)

        # Failures.
        self.failures_list = QListWidget()
        self.failures_list.setObjectName("failuresList")
        self.failures_list.setWordWrap(True)

        # Objects made from an output after each image.
        self.objects_box = ObjectOptionsWidget(self.services)
        self.objects_box.changed.connect(self._on_objects_changed)
        objects_page = QWidget()
        objects_layout = QVBoxLayout(objects_page)
        objects_layout.addWidget(self.objects_box)
        objects_layout.addStretch(1)
        # The form grows with the method's settings: it scrolls rather than squeezes.
        objects_tab = QScrollArea()
        objects_tab.setWidgetResizable(True)
        objects_tab.setFrameShape(QScrollArea.Shape.NoFrame)
        objects_tab.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        objects_tab.setWidget(objects_page)

        self.side_tabs = QTabWidget()
        self.side_tabs.addTab(preview_box, icon("preview"), "Preview")
        self.side_tabs.addTab(self.failures_list, icon("error"), "Problems")
        self.side_tabs.addTab(objects_tab, "Objects")

        files_box = QWidget()
        files_layout = QVBoxLayout(files_box)
        files_layout.setContentsMargins(0, 0, 0, 0)
        files_layout.addWidget(self.files_label)
        files_layout.addWidget(self.table, 1)
        middle = QSplitter(Qt.Orientation.Horizontal)
        middle.addWidget(files_box)
        middle.addWidget(self.side_tabs)
        middle.setStretchFactor(0, 3)
        middle.setStretchFactor(1, 2)

        # Run.
        self.device_combo = QComboBox()
        self.device_combo.setObjectName("deviceCombo")
        self.cluster_combo = QComboBox()
        self.cluster_combo.setObjectName("clusterCombo")
        self.cluster_combo.setToolTip(
            "Where the files are processed: here, in worker processes on this computer, "
            "or on a Dask cluster set in Settings (see the user guide)"
        )
        self.device_label = QLabel("")
        self.device_label.setObjectName("deviceLabel")
        self.device_label.setWordWrap(True)
        self.output_edit = QLineEdit()
        self.output_edit.setObjectName("outputEdit")
        self.output_edit.setPlaceholderText("where results go")
        self.output_edit.textChanged.connect(self._on_output_changed)
        browse = QPushButton(icon("folder"), "Browse…")
        browse.clicked.connect(self._on_browse_output_clicked)
        self.overwrite_check = QCheckBox("Redo files already done")
        self.start_button = QPushButton(icon("start"), "Start")
        self.start_button.setObjectName("startButton")
        self.start_button.clicked.connect(self.action_start.trigger)
        self.cancel_button = QPushButton(icon("cancel"), "Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.clicked.connect(self.action_cancel.trigger)
        self.resume_button = QPushButton(icon("resume"), "Resume")
        self.resume_button.setObjectName("resumeButton")
        self.resume_button.clicked.connect(self.action_resume.trigger)
        self.results_button = QPushButton(icon("results"), "Show results")
        self.results_button.setObjectName("resultsButton")
        self.results_button.clicked.connect(self._on_results_clicked)
        self.open_folder_button = QPushButton(icon("open"), "Open output folder")
        self.open_folder_button.clicked.connect(self._on_open_folder_clicked)

        self.overall_bar = QProgressBar()
        self.overall_bar.setObjectName("overallProgress")
        self.overall_bar.setFormat("%v of %m files")
        self.overall_bar.setValue(0)
        self.file_bar = QProgressBar()
        self.file_bar.setObjectName("fileProgress")
        self.file_bar.setFormat("current file: %p%")
        self.progress_label = QLabel("")
        self.progress_label.setObjectName("progressLabel")
        self.status_label = QLabel("Ready.")
        self.status_label.setObjectName("runStatus")
        font = self.status_label.font()
        font.setBold(True)
        self.status_label.setFont(font)

        run_box = QGroupBox("2. Run")
        run_layout = QVBoxLayout(run_box)
        settings_row = QHBoxLayout()
        settings_row.addWidget(QLabel("Device:"))
        settings_row.addWidget(self.device_combo)
        settings_row.addWidget(QLabel("Run on:"))
        settings_row.addWidget(self.cluster_combo)
        settings_row.addWidget(QLabel("Output folder:"))
        settings_row.addWidget(self.output_edit, 1)
        settings_row.addWidget(browse)
        settings_row.addWidget(self.overwrite_check)
        run_layout.addLayout(settings_row)
        run_layout.addWidget(self.device_label)
        buttons_row = QHBoxLayout()
        for b in (self.start_button, self.cancel_button, self.resume_button):
            buttons_row.addWidget(b)
        buttons_row.addWidget(self.status_label, 1)
        buttons_row.addWidget(self.open_folder_button)
        buttons_row.addWidget(self.results_button)
        run_layout.addLayout(buttons_row)
        bars = QHBoxLayout()
        bars.addWidget(self.overall_bar, 2)
        bars.addWidget(self.file_bar, 1)
        run_layout.addLayout(bars)
        run_layout.addWidget(self.progress_label)

        layout = QVBoxLayout(self)
        layout.addWidget(inputs_box)
        layout.addWidget(middle, 1)
        layout.addWidget(run_box)
        self._fill_devices()
        self.fill_cluster_choices()

    def fill_cluster_choices(self) -> None:
        """List where runs can go (the cluster setting's choice selected)."""
        self.cluster_combo.clear()
        for label, value in self.services.cluster_choices():
            self.cluster_combo.addItem(label, value)
        self.cluster_combo.setCurrentIndex(0)

    def _fill_devices(self) -> None:
        """List what the installed runtime offers (the default device first)."""
        try:
            devices = self.services.devices()
        except Exception as exc:
            log.warning("cannot list devices: %s", exc)
            devices = []
        gpus = [d for d in devices if d.is_gpu]
        best = gpus[0].description if gpus else "CPU"
        self.device_combo.clear()
        self.device_combo.addItem(f"Automatic (best available: {best})", "auto")
        self.device_combo.addItem("CPU", "cpu")
        if gpus:
            self.device_combo.addItem(f"GPU: {gpus[0].description}", "gpu")
        offered = ", ".join(f"{d.description} ({d.provider})" for d in devices) or "none"
        self.device_combo.setToolTip(f"This installation offers: {offered}")
        default = self.services.settings.device
        index = self.device_combo.findData(default)
        self.device_combo.setCurrentIndex(max(index, 0))
        self.device_label.setText(f"Devices offered by this installation: {offered}.")

    # ------------------------------------------------------------------- models

    def set_library(self, library: Library) -> None:
        """Offer the installed models of the library (keeps the current choice)."""
        current = self.model_combo.currentData()
        self._items = [i for i in library.items if i.installed]
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for item in self._items:
            label = item.name if item.origin != "builtin" else f"{item.name} (built in)"
            self.model_combo.addItem(label, item.item_id)
        wanted = self._pending_model or current
        index = self.model_combo.findData(wanted) if wanted else -1
        self.model_combo.setCurrentIndex(index if index >= 0 else 0 if self._items else -1)
        self.model_combo.blockSignals(False)
        self._pending_model = None
        if self.model_combo.currentData() != current or self.package is None:
            self._on_model_changed()

    def choose_model(self, item: LibraryItem) -> None:
        """Use this installed model for the run."""
        index = self.model_combo.findData(item.item_id)
        if index < 0:
            self._pending_model = item.item_id
            return
        if index == self.model_combo.currentIndex() and self.package is not None:
            return
        self.model_combo.setCurrentIndex(index)

    def current_item(self) -> LibraryItem | None:
        item_id = self.model_combo.currentData()
        return next((i for i in self._items if i.item_id == item_id), None)

    def _on_model_changed(self, *_args: Any) -> None:
        item = self.current_item()
        self.package = None
        self.objects_box.set_spec(None)
        self._clear_preview()
        self._update_buttons()
        if item is None or item.description_path is None:
            self.expect_label.setText("Choose a model (install one in the library).")
            return
        self.expect_label.setText(f"Loading {item.name}…")
        path = item.description_path
        self.runner.start(
            lambda _cancel: (item.item_id, self.services.load_package(path)),
            f"loading {item.name}",
            on_result=self._on_model_package_loaded,
            on_error=self._on_model_package_failed,
        )

    def _on_model_package_loaded(self, result: tuple[str, ModelPackage]) -> None:
        item_id, package = result
        if item_id != self.model_combo.currentData():
            return
        self.package = package
        try:
            lines = self.services.model_expectations(package)
        except Exception as exc:
            lines = [readable_message(exc)]
        outputs = ", ".join(f"{t.id} ({t.axes_letters})" for t in package.spec.outputs)
        tensor = next((t for t in package.spec.inputs if not t.optional), None)
        name = tensor.id if tensor else "input"
        self.expect_label.setText(
            f"<b>{name}</b> ({tensor.axes_letters if tensor else ''}): "
            + "; ".join(lines)
            + f"<br>Outputs: {outputs}"
        )
        self.objects_box.set_spec(package.spec)
        self.model_loaded.emit(package.spec.name)
        self._update_buttons()
        self.rescan()

    def _on_model_package_failed(self, exc: BaseException) -> None:
        self.expect_label.setText(f"<span style='color:#c0392b'>{readable_message(exc)}</span>")
        report_error(self, "Cannot load the model", exc, self.services.log_file)

    # ------------------------------------------------------------------- inputs

    def inputs(self) -> list[Path]:
        """The folders and files chosen as inputs."""
        return [Path(self.inputs_list.item(i).text()) for i in range(self.inputs_list.count())]

    def add_inputs(self, paths: list[Path]) -> None:
        """Add folders or files to the inputs and scan them."""
        known = {str(p) for p in self.inputs()}
        for path in paths:
            if str(path) not in known:
                self.inputs_list.addItem(str(path))
                known.add(str(path))
        if paths and not self.output_edit.text().strip():
            self.output_edit.setText(str(self._default_output(paths[0])))
        self.rescan()

    def _default_output(self, first: Path) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        try:
            samples = self.services.demo_images_dir()
        except Exception:
            samples = None
        if samples is not None and first.resolve() == samples.resolve():
            # The samples sit inside the installation, which may be read-only.
            return self.services.settings.home / "results" / f"samples-{stamp}"
        folder = first if first.is_dir() else first.parent
        return folder.parent / f"{folder.name}-zoodesk-{stamp}"

    def _on_add_folder_triggered(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of images")
        if folder:
            self.add_inputs([Path(folder)])

    def _on_add_files_clicked(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self,
            "Add images",
            "",
            "Images (*.tif *.tiff *.png *.jpg *.jpeg *.bmp *.npy);;All files (*)",
        )
        if files:
            self.add_inputs([Path(f) for f in files])

    def _on_remove_input_clicked(self) -> None:
        for item in self.inputs_list.selectedItems():
            self.inputs_list.takeItem(self.inputs_list.row(item))
        self.rescan()

    def _on_samples_triggered(self) -> None:
        try:
            samples = self.services.demo_images_dir()
        except Exception as exc:
            report_error(self, "No sample images", exc, self.services.log_file)
            return
        demo = next((i for i in self._items if i.origin == "builtin"), None)
        if demo is not None and self.current_item() is None:
            self.choose_model(demo)
        self.inputs_list.clear()
        self.output_edit.clear()
        self.add_inputs([samples])

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls() and all(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        event.acceptProposedAction()
        self.add_inputs(paths)

    def _patterns(self) -> list[str]:
        text = self.patterns_edit.text().replace(",", ";")
        return [p.strip() for p in text.split(";") if p.strip()]

    def _scenes(self) -> list[str]:
        text = self.scenes_edit.text().replace(",", ";")
        return [p.strip() for p in text.split(";") if p.strip()]

    def _axes(self) -> str | None:
        return self.axes_edit.text().strip().upper() or None

    def _channels(self) -> list[int] | None:
        value = self.channel_spin.value()
        return None if value < 0 else [value]

    def _on_inputs_changed(self, *_args: Any) -> None:
        self.rescan()

    def rescan(self) -> None:
        """List the files of the inputs again (off the GUI thread)."""
        if self._scan is not None:
            self._scan.cancel()
        self._scan_generation += 1
        generation = self._scan_generation
        self.table.setRowCount(0)
        self._infos = []
        inputs = self.inputs()
        if not inputs:
            self.files_label.setText(
                "No inputs yet: add a folder, drop one here, or try the samples."
            )
            self._scan = None
            self._update_buttons()
            return
        self.files_label.setText("Looking for images…")
        patterns, recursive = self._patterns(), self.recursive_check.isChecked()
        axes, channels, package = self._axes(), self._channels(), self.package
        scenes = self._scenes()

        def task(cancel: Any) -> Any:
            for info in self.services.scan_inputs(
                inputs,
                patterns=patterns,
                recursive=recursive,
                package=package,
                axes=axes,
                channels=channels,
                scenes=scenes,
                cancel=cancel,
            ):
                yield generation, info
            return generation

        self._scan = self.runner.start(
            task,
            "scan",
            on_event=self._on_input_found,
            on_result=self._on_scan_done,
            on_error=self._on_scan_failed,
        )
        self._update_buttons()

    def _on_input_found(self, event: tuple[int, InputInfo]) -> None:
        generation, info = event
        if generation != self._scan_generation:
            return
        self._infos.append(info)
        row = self.table.rowCount()
        self.table.insertRow(row)
        shape = " × ".join(str(s) for s in info.shape) if info.shape else ""
        cells = (
            input_name(info.path, info.scene),
            info.axes or "",
            shape,
            info.dtype or "",
            _pixel_size_text(info.pixel_sizes),
            _human_bytes(info.size_bytes),
            info.problem if info.problem else (info.mapping or "not checked"),
            "",
            "",
        )
        for col, text in enumerate(cells):
            cell = QTableWidgetItem(text)
            if col == COL_FILE:
                where = f"{info.path}" + (f"\nscene: {info.scene}" if info.scene else "")
                cell.setToolTip(where + (f"\nformat: {info.format}" if info.format else ""))
                cell.setData(Qt.ItemDataRole.UserRole, str(info.path))
                cell.setData(_SCENE_ROLE, info.scene)
            if col == COL_FIT and info.problem:
                cell.setForeground(Qt.GlobalColor.red)
                cell.setToolTip(info.problem)
            self.table.setItem(row, col, cell)

    def _on_scan_done(self, generation: int) -> None:
        if generation != self._scan_generation:
            return
        self._scan = None
        usable = sum(1 for i in self._infos if i.ok)
        problems = len(self._infos) - usable
        text = f"{len(self._infos)} file(s) found"
        if self.package is not None:
            text += f", {usable} fit the model"
        if problems:
            text += f", {problems} with problems (they will be listed as failed)"
        self.files_label.setText(text + ".")
        if self.table.rowCount() and not self.table.selectedItems():
            self.table.selectRow(0)
        self._update_buttons()
        self.scan_finished.emit(len(self._infos))

    def _on_scan_failed(self, exc: BaseException) -> None:
        self._scan = None
        self.files_label.setText(f"Cannot list the inputs: {readable_message(exc)}")
        self._update_buttons()

    def row_of(self, path: Path, scene: str | None = None) -> int:
        """The table row of an input (a file, or one scene of it); a row is added for an
        input not listed yet."""
        key = str(Path(path))
        for row in range(self.table.rowCount()):
            cell = self.table.item(row, COL_FILE)
            if (
                cell is not None
                and cell.data(Qt.ItemDataRole.UserRole) == key
                and cell.data(_SCENE_ROLE) == scene
            ):
                return row
        row = self.table.rowCount()
        self.table.insertRow(row)
        cell = QTableWidgetItem(input_name(Path(path), scene))
        cell.setData(Qt.ItemDataRole.UserRole, key)
        cell.setData(_SCENE_ROLE, scene)
        self.table.setItem(row, COL_FILE, cell)
        return row

    def _set_cell(self, row: int, col: int, text: str, tooltip: str = "") -> None:
        cell = self.table.item(row, col)
        if cell is None:
            cell = QTableWidgetItem()
            self.table.setItem(row, col, cell)
        cell.setText(text)
        cell.setToolTip(tooltip)

    # ------------------------------------------------------------------ preview

    def selected_path(self) -> Path | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        row = rows[0].row() if rows else (0 if self.table.rowCount() else -1)
        if row < 0:
            return None
        cell = self.table.item(row, COL_FILE)
        return Path(cell.data(Qt.ItemDataRole.UserRole)) if cell else None

    def selected_series(self) -> int:
        """The series (scene) of the selected row's file; 0 for single-series files."""
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        row = rows[0].row() if rows else 0
        return self._infos[row].series if 0 <= row < len(self._infos) else 0

    def _on_file_selected(self) -> None:
        path, series = self.selected_path(), self.selected_series()
        if path is None or (path, series) == (self._overview_path, self._overview_series):
            return
        self._region = None
        self._overview_path, self._overview_series = path, series
        self._preview = None
        self.output_combo.clear()
        self.preview_label.setText("Drag on the image to preview a region, or press Preview.")
        axes = self._axes()
        self.runner.start(
            lambda _cancel: (path, series, *self._overview(path, series, axes)),
            "overview",
            on_result=self._on_overview_loaded,
            on_error=self._on_overview_failed,
        )

    def _overview(self, path: Path, series: int, axes: str | None) -> tuple[np.ndarray, int]:
        """Runs on a pool thread: a downsampled picture of the whole image."""
        from zoodesk.images import fold_colour_samples, read_image

        image = fold_colour_samples(read_image(path, series=series, axes=axes))
        picture = _render.plane(image.array, image.axes)
        step = max(1, math.ceil(max(picture.shape[:2]) / OVERVIEW_SIZE))
        small = np.asarray(picture[::step, ::step])
        return _render.to_rgb(small, _render.auto_limits(small)), step

    def _on_overview_loaded(self, result: tuple[Path, int, np.ndarray, int]) -> None:
        path, series, rgb, step = result
        shown = (self._overview_path, self._overview_series)
        if (path, series) != shown or self._preview is not None:
            return
        self._overview_scale = step
        self.view.set_picture(rgb)

    def _on_overview_failed(self, exc: BaseException) -> None:
        self.view.set_picture(None)
        self.view.set_placeholder(readable_message(exc))

    def _on_region_selected(self, y: int, x: int, height: int, width: int) -> None:
        if self._preview is not None:
            # Picture pixels of the previous preview: shift by its region.
            py, px = self._preview.region[:2]
            self._region = (py + y, px + x, height, width)
        else:
            s = self._overview_scale
            self._region = (y * s, x * s, height * s, width * s)
        self.run_preview()

    def _on_preview_triggered(self) -> None:
        self.run_preview()

    def run_preview(self) -> None:
        """Run the model on the selected image (or the chosen region of it)."""
        path = self.selected_path()
        if path is None or self.package is None:
            return
        if self._preview_worker is not None:
            self._preview_worker.cancel()
        package, device = self.package, str(self.device_combo.currentData())
        axes, channels, region = self._axes(), self._channels(), self._region
        series = self.selected_series()
        self.preview_label.setText(f"Running the model on {path.name}…")
        self.side_tabs.setCurrentIndex(0)
        self._preview_worker = self.runner.start(
            lambda cancel: self.services.preview(
                package,
                device,
                path,
                series=series,
                axes=axes,
                channels=channels,
                region=region,
                cancel=cancel,
            ),
            "preview",
            on_result=self._on_preview_done,
            on_error=self._on_preview_failed,
        )
        self._update_buttons()

    def _on_preview_done(self, result: PreviewResult) -> None:
        self._preview_worker = None
        self._preview = result
        self.output_combo.blockSignals(True)
        self.output_combo.clear()
        for out in result.outputs:
            self.output_combo.addItem(f"{out.tensor_id} ({out.kind})", out.tensor_id)
        self.output_combo.blockSignals(False)
        y, x, h, w = result.region
        frame = ", ".join(f"{k}={v}" for k, v in result.frame.items())
        name = self._overview_path.name if self._overview_path else ""
        self.preview_label.setText(
            f"Region y {y}–{y + h}, x {x}–{x + w} of {name}"
            f"{f' ({frame})' if frame else ''}; {result.mapping}; ran on {result.device} in "
            f"{result.seconds:.2f} s. Drag to preview another region."
        )
        self._draw_preview()
        self._update_buttons()
        self.preview_shown.emit(result)

    def _on_preview_failed(self, exc: BaseException) -> None:
        from zoodesk.errors import CancelledError

        self._preview_worker = None
        self._update_buttons()
        if isinstance(exc, CancelledError):
            return
        self.preview_label.setText(f"Preview failed: {readable_message(exc)}")
        report_error(self, "Preview failed", exc, self.services.log_file)

    def _on_overlay_changed(self, *_args: Any) -> None:
        self._draw_preview()

    def _draw_preview(self) -> None:
        result = self._preview
        if result is None:
            return
        base_plane = _render.plane(result.image, result.image_axes)
        base = _render.to_rgb(base_plane, _render.auto_limits(base_plane))
        chosen = self.output_combo.currentData()
        out = next((o for o in result.outputs if o.tensor_id == chosen), None)
        if out is not None:
            style = _render.OverlayStyle(opacity=self.opacity_slider.value() / 100)
            base = _render.overlay(base, _render.plane(out.array, out.axes), out.kind, style)
        self.view.set_picture(base)

    def _clear_preview(self) -> None:
        self._preview = None
        self._overview_path = None
        self.output_combo.clear()
        self.preview_label.setText("")
        self.view.set_picture(None)

    # ---------------------------------------------------------------------- run

    @property
    def scanning(self) -> bool:
        """True while the inputs are being listed."""
        return self._scan is not None

    @property
    def running(self) -> bool:
        """True while a run is in progress."""
        return self._run is not None and not self._run.done and not self._run_over

    def _on_output_changed(self, *_args: Any) -> None:
        self._update_buttons()

    def _on_objects_changed(self) -> None:
        summary = self.objects_box.summary()
        warn = " ⚠" if self.objects_box.problem() else ""
        self.side_tabs.setTabText(
            _TAB_OBJECTS, "Objects" if summary == "off" else f"Objects ({summary}){warn}"
        )
        self._update_buttons()

    def _on_browse_output_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.output_edit.text())
        if folder:
            self.output_edit.setText(folder)

    def _on_start_triggered(self) -> None:
        self.start_run(overwrite=self.overwrite_check.isChecked())

    def _on_resume_triggered(self) -> None:
        self.start_run(overwrite=False)

    def _on_cancel_triggered(self) -> None:
        self.cancel_run()

    def start_run(self, *, overwrite: bool = False) -> None:
        """Run the model over every input file, off the GUI thread."""
        if self.running or self.package is None or not self.inputs():
            return
        output = self.output_edit.text().strip()
        if not output:
            self._on_browse_output_clicked()
            output = self.output_edit.text().strip()
            if not output:
                return
        try:
            instances = self.objects_box.resolved()
        except Exception as exc:
            self.side_tabs.setCurrentIndex(_TAB_OBJECTS)
            self.status_label.setText(f"Objects: {readable_message(exc)}")
            return
        request = self.services.prediction_request(
            model=self.package,
            inputs=self.inputs(),
            output_dir=Path(output),
            device=str(self.device_combo.currentData()),
            patterns=self._patterns(),
            recursive=self.recursive_check.isChecked(),
            axes=self._axes(),
            channels=self._channels(),
            scenes=self._scenes(),
            overwrite=overwrite,
            instances=instances,
        )
        self.failures_list.clear()
        for row in range(self.table.rowCount()):
            self._set_cell(row, COL_STATUS, "waiting")
            self._set_cell(row, COL_TIME, "")
        self.overall_bar.setRange(0, max(1, self.table.rowCount()))
        self.overall_bar.setValue(0)
        self.file_bar.setValue(0)
        self.progress_label.setText("")
        self.status_label.setText("Starting: loading the model…")
        self._run_started = time.monotonic()
        self._files_done = self._pixels_done = 0
        self._seconds_done = 0.0
        self.last_record = None
        self._run_over = False
        cluster = str(self.cluster_combo.currentData() or "")
        if cluster:
            self.status_label.setText(
                f"Starting: connecting to {self.cluster_combo.currentText()}…"
            )
        self._run = self.runner.start(
            lambda cancel: self.services.run_prediction(request, cancel, cluster),
            "batch run",
            on_event=self._on_run_event,
            on_error=self._on_run_failed,
            on_finished=self._on_run_ended,
        )
        self._update_buttons()
        self.running_changed.emit(True)

    def cancel_run(self) -> None:
        """Ask the run to stop after the current block; finished files are kept."""
        if self._run is not None:
            self._run.cancel()
            self.status_label.setText("Cancelling after the current block…")
            self._update_buttons()

    def _on_run_event(self, event: Any) -> None:
        kind = type(event).__name__
        handler = getattr(self, f"_on_{_snake(kind)}", None)
        if handler is not None:
            handler(event)

    def _on_run_started(self, event: Any) -> None:
        self.record_path = Path(event.record_path)
        self._run_total, self._run_to_do = event.total, event.to_do
        self.overall_bar.setRange(0, max(1, event.total))
        warnings = f" Warning: {'; '.join(event.warnings)}" if event.warnings else ""
        where = event.where or f"{event.device_description} ({event.device})"
        self.device_label.setText(f"Runs on: {where}, {event.weights_format} weights.{warnings}")
        done_before = event.total - event.to_do
        self.status_label.setText(
            f"Running: {event.to_do} file(s) to do"
            + (f", {done_before} done earlier" if done_before else "")
            + "…"
        )

    def _on_file_started(self, event: Any) -> None:
        row = self.row_of(event.path, event.scene)
        self._set_cell(row, COL_STATUS, "running…")
        self.file_bar.setRange(0, 100)
        self.file_bar.setValue(0)
        cell = self.table.item(row, COL_FILE)
        if cell is not None:
            self.table.scrollToItem(cell)

    def _on_block_progress(self, event: Any) -> None:
        self.file_bar.setRange(0, max(1, event.total))
        self.file_bar.setValue(event.done)

    def _on_file_finished(self, event: Any) -> None:
        entry: FileEntry = event.entry
        row = self.row_of(event.path, entry.scene)
        self._set_cell(row, COL_STATUS, *_status_cell(entry))
        if entry.seconds is not None and entry.status == "ok":
            self._set_cell(row, COL_TIME, f"{entry.seconds:.1f} s")
        if entry.status == "failed":
            cell = self.table.item(row, COL_STATUS)
            if cell is not None:
                cell.setForeground(Qt.GlobalColor.red)
            self.failures_list.addItem(entry.error or f"{event.path}: failed")
            self.side_tabs.setTabText(1, f"Problems ({self.failures_list.count()})")
        self.overall_bar.setValue(self.overall_bar.value() + 1)
        if entry.status in ("ok", "failed"):
            self._files_done += 1
            self._seconds_done += entry.seconds or 0.0
            if entry.shape and entry.status == "ok":
                self._pixels_done += int(np.prod(entry.shape))
        self._show_throughput()

    def _show_throughput(self) -> None:
        elapsed = time.monotonic() - self._run_started
        if self._files_done == 0 or elapsed <= 0:
            return
        per_file = elapsed / self._files_done
        remaining = max(0, self._run_to_do - self._files_done)
        rate = self._files_done / elapsed * 60
        mp = f", {self._pixels_done / elapsed / 1e6:.2f} MP/s" if self._pixels_done else ""
        eta = f"about {_duration(per_file * remaining)} left" if remaining else "finishing"
        self.progress_label.setText(
            f"{self._files_done} of {self._run_to_do} processed · {rate:.1f} files/min{mp} · {eta}"
        )

    def _on_run_finished(self, event: Any) -> None:
        record: RunRecord = event.record
        self.last_record = record
        self._run_over = True
        summary = record.summary()
        parts = [
            f"{summary.get(k, 0)} {label}"
            for k, label in (
                ("ok", "done"),
                ("skipped", "done earlier"),
                ("failed", "failed"),
                ("not done", "not done"),
            )
            if summary.get(k)
        ]
        verdict = "Cancelled" if record.status == "cancelled" else "Finished"
        self.status_label.setText(f"{verdict}: {', '.join(parts) or 'nothing to do'}.")
        if record.status == "cancelled":
            self.progress_label.setText("Resume processes the files not done yet.")
        self.file_bar.setValue(self.file_bar.maximum())
        # Files the run never reached (cancelled) get their final status too.
        for entry in record.files:
            row = self.row_of(Path(entry.input), entry.scene)
            self._set_cell(row, COL_STATUS, *_status_cell(entry))
        self._update_buttons()
        self.status_message.emit(f"Run {verdict.lower()}: {record.path.parent}")
        self.run_finished.emit(record)

    def _on_run_failed(self, exc: BaseException) -> None:
        self._run_over = True
        self.status_label.setText(f"Failed: {readable_message(exc)}")
        report_error(self, "The run could not start", exc, self.services.log_file)
        self.run_finished.emit(None)

    def _on_run_ended(self) -> None:
        self._run = None
        self._update_buttons()
        self.running_changed.emit(False)

    def _on_results_clicked(self) -> None:
        if self.record_path is not None:
            self.open_results_requested.emit(self.record_path)

    def _on_open_folder_clicked(self) -> None:
        folder = self.output_edit.text().strip()
        if folder and Path(folder).is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(folder))

    def _update_buttons(self) -> None:
        running = self.running
        ready = self.package is not None and bool(self.inputs()) and self._scan is None
        objects_problem = self.objects_box.problem()
        objects_ok = objects_problem is None
        self.action_start.setEnabled(ready and not running and objects_ok)
        self.start_button.setToolTip(f"Objects: {objects_problem}" if objects_problem else "")
        self.start_button.setEnabled(self.action_start.isEnabled())
        self.action_cancel.setEnabled(running)
        self.cancel_button.setEnabled(running)
        record = self.last_record
        resumable = record is not None and any(f.status == "not done" for f in record.files)
        self.action_resume.setEnabled(ready and not running and resumable and objects_ok)
        self.resume_button.setEnabled(self.action_resume.isEnabled())
        can_preview = self.package is not None and self.table.rowCount() > 0
        self.action_preview.setEnabled(can_preview and self._preview_worker is None)
        self.preview_button.setEnabled(self.action_preview.isEnabled())
        self.results_button.setEnabled(record is not None and not running)
        output = self.output_edit.text().strip()
        self.open_folder_button.setEnabled(bool(output) and Path(output).is_dir())
        for widget in (
            self.model_combo,
            self.inputs_list,
            self.patterns_edit,
            self.axes_edit,
            self.channel_spin,
            self.device_combo,
            self.output_edit,
            self.samples_button,
            self.objects_box,
        ):
            widget.setEnabled(not running)


def _status_cell(entry: FileEntry) -> tuple[str, str]:
    """A file's status for the table (with its objects, when the run makes them) and the
    tooltip that says what went wrong."""
    text = _STATUS_TEXT.get(entry.status, entry.status)
    found = entry.instances or {}
    if entry.status in ("ok", "skipped") and "count" in found:
        text += f" · {found['count']} objects"
    elif "error" in found and entry.status == "ok":
        return f"{text} · objects failed", str(found["error"])
    return text, entry.error or ""


def _snake(name: str) -> str:
    """``RunStarted`` -> ``run_started``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


#: Where a file row keeps its scene (None for a file that is not one series of many).
_SCENE_ROLE = Qt.ItemDataRole.UserRole + 1
#: The side tab of the objects options.
_TAB_OBJECTS = 2


def _pixel_size_text(sizes: dict[str, tuple[float, str]]) -> str:
    """``0.65 µm`` (X and Y alike), ``0.65 × 0.7 µm``, plus ``, z 2 µm``; empty if none."""
    if "X" not in sizes:
        return ""
    x, unit = sizes["X"]
    y = sizes.get("Y", (x, unit))[0]
    text = f"{x:.4g} {unit}" if y == x else f"{x:.4g} × {y:.4g} {unit}"
    if "Z" in sizes:
        text += f", z {sizes['Z'][0]:.4g} {sizes['Z'][1]}"
    return text
