"""The results page: a finished run's inputs and outputs, overlaid, and its objects."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from zoodesk.batch.console import input_name
from zoodesk.gui import _render
from zoodesk.gui._style import icon
from zoodesk.gui._worker import TaskRunner
from zoodesk.gui.errors import readable_message, report_error
from zoodesk.gui.image_view import ImageViewWidget
from zoodesk.gui.objects_panel import ObjectsPanelWidget
from zoodesk.gui.services import Services

if TYPE_CHECKING:
    from zoodesk.batch.objects import ObjectTable, RunMeasurements
    from zoodesk.batch.record import FileEntry, OutputEntry, RunRecord

log = logging.getLogger(__name__)

COLUMNS = ("Input", "Status", "Outputs", "Objects", "Time", "Problem")
COL_INPUT, COL_STATUS, COL_OUTPUTS, COL_OBJECTS, COL_TIME, COL_PROBLEM = range(len(COLUMNS))
#: The overlay entry of an image's objects (its label image).
OBJECTS_KEY = "objects"


def _output_key(output: OutputEntry) -> str | None:
    """The overlay entry of an output: its tensor, ``objects`` for the label image of
    objects; None for what is not a picture (the objects' table)."""
    if output.kind == "measurements":
        return None
    return OBJECTS_KEY if output.kind == "instance-labels" else output.tensor


def _objects_cell(entry: FileEntry) -> tuple[str, str]:
    """The objects count of an input for the table, and its tooltip."""
    found = entry.instances
    if not found:
        return "", ""
    if "error" in found:
        return "failed", str(found["error"])
    settings = found.get("settings") or {}
    method = f"{settings.get('method')}" if settings else ""
    return str(found.get("count", "")), f"objects made by {method}" if method else ""


@dataclass
class _Shown:
    """What a pool thread read for one row: the planes to draw and the objects."""

    row: int
    input_plane: np.ndarray | None
    described: str
    planes: dict[str, tuple[np.ndarray, str]]
    problems: list[str]
    table: ObjectTable | None = None
    frame: int = 0


class ResultsWidget(QWidget):
    """Open a run record and step through its inputs with their outputs.

    Parameters
    ----------
    services
        The engine.
    runner
        Reads the images off the GUI thread.
    """

    #: A run record is shown (the :class:`RunRecord`).
    record_loaded = Signal(object)
    #: The pictures of a row are shown (the row).
    image_shown = Signal(int)
    #: The user asked to export the shown run (the record path).
    export_requested = Signal(Path)
    #: The measurements of the run's objects are shown (the core's RunMeasurements).
    measurements_shown = Signal(object)
    #: The objects of the shown run were remade (the updated RunRecord).
    objects_remade = Signal(object)

    def __init__(
        self, services: Services, runner: TaskRunner, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("resultsPage")
        self.services = services
        self.runner = runner
        self.record: RunRecord | None = None
        self._input_plane: np.ndarray | None = None
        self._outputs: dict[str, tuple[np.ndarray, str]] = {}
        self._table: ObjectTable | None = None
        self._frame = 0
        self._shown_row = -1
        self._keep_row = -1
        self._measurements_generation = 0
        self._build_actions()
        self._build_ui()
        self._update_buttons()

    def _build_actions(self) -> None:
        self.action_open = QAction(icon("open"), "&Open run results…", self)
        self.action_open.setShortcut(QKeySequence.StandardKey.Open)
        self.action_open.triggered.connect(self._on_open_triggered)
        self.action_previous = QAction(icon("previous"), "Previous image", self)
        self.action_previous.setShortcut(QKeySequence("Alt+Left"))
        self.action_previous.triggered.connect(self._on_previous_triggered)
        self.action_next = QAction(icon("next"), "Next image", self)
        self.action_next.setShortcut(QKeySequence("Alt+Right"))
        self.action_next.triggered.connect(self._on_next_triggered)
        self.action_export = QAction(icon("export"), "&Export for deposition…", self)
        self.action_export.setShortcut(QKeySequence("Ctrl+E"))
        self.action_export.triggered.connect(self._on_export_triggered)
        for action in (self.action_previous, self.action_next):
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(action)

    def _build_ui(self) -> None:
        self.summary_label = QLabel(
            "Open a finished run (its zoodesk-run.json) to see its results."
        )
        self.summary_label.setObjectName("runSummary")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        open_button = QPushButton(icon("open"), "Open run…")
        open_button.clicked.connect(self.action_open.trigger)
        self.folder_button = QPushButton(icon("folder"), "Open output folder")
        self.folder_button.clicked.connect(self._on_open_folder_clicked)
        self.export_button = QPushButton(icon("export"), "Export for deposition…")
        self.export_button.setObjectName("exportButton")
        self.export_button.clicked.connect(self.action_export.trigger)
        top = QHBoxLayout()
        top.addWidget(self.summary_label, 1)
        top.addWidget(open_button)
        top.addWidget(self.folder_button)
        top.addWidget(self.export_button)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("resultsTable")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_row_selected)

        self.view = ImageViewWidget("Select an input to see it with its outputs.")
        self.view.setObjectName("resultsView")
        self.view.pixel_hovered.connect(self._on_pixel_hovered)
        self.view.pixel_clicked.connect(self._on_pixel_clicked)
        self.objects_panel = ObjectsPanelWidget()
        self.objects_panel.remeasure_requested.connect(self._on_remeasure_requested)
        previous = QPushButton(icon("previous"), "")
        previous.setToolTip("Previous image (Alt+Left)")
        previous.clicked.connect(self.action_previous.trigger)
        following = QPushButton(icon("next"), "")
        following.setToolTip("Next image (Alt+Right)")
        following.clicked.connect(self.action_next.trigger)
        self.output_combo = QComboBox()
        self.output_combo.setObjectName("resultsOutput")
        self.output_combo.setMinimumContentsLength(16)
        self.output_combo.currentIndexChanged.connect(self._on_display_changed)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setObjectName("opacitySlider")
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setMinimumWidth(90)
        self.opacity_slider.setMaximumWidth(140)
        self.opacity_slider.valueChanged.connect(self._on_display_changed)
        self.labels_check = QCheckBox("Colour labels")
        self.labels_check.setChecked(True)
        self.labels_check.setToolTip("One colour per label (off: one colour for every object)")
        self.labels_check.toggled.connect(self._on_display_changed)
        self.outlines_check = QCheckBox("Outlines")
        self.outlines_check.setObjectName("outlinesCheck")
        self.outlines_check.setToolTip("Labels and objects: draw only their edges")
        self.outlines_check.toggled.connect(self._on_display_changed)
        self.low_spin = QDoubleSpinBox()
        self.high_spin = QDoubleSpinBox()
        for spin in (self.low_spin, self.high_spin):
            spin.setRange(-1e12, 1e12)
            spin.setDecimals(2)
            spin.setKeyboardTracking(False)
            spin.setMaximumWidth(110)
            spin.valueChanged.connect(self._on_display_changed)
        auto = QPushButton("Auto")
        auto.setToolTip("Contrast from the 0.5 and 99.5 percentiles of the input")
        auto.clicked.connect(self._on_auto_contrast_clicked)
        controls = QHBoxLayout()
        controls.addWidget(previous)
        controls.addWidget(following)
        controls.addWidget(QLabel("Overlay:"))
        controls.addWidget(self.output_combo)
        controls.addWidget(QLabel("Opacity:"))
        controls.addWidget(self.opacity_slider)
        controls.addWidget(self.labels_check)
        controls.addWidget(self.outlines_check)
        controls.addStretch(1)
        contrast = QHBoxLayout()
        contrast.addWidget(QLabel("Contrast:"))
        contrast.addWidget(self.low_spin)
        contrast.addWidget(QLabel("–"))
        contrast.addWidget(self.high_spin)
        contrast.addWidget(auto)
        self.image_label = QLabel("")
        self.image_label.setObjectName("imageLabel")
        self.image_label.setWordWrap(True)
        contrast.addWidget(self.image_label, 1)
        viewer = QWidget()
        viewer_layout = QVBoxLayout(viewer)
        viewer_layout.setContentsMargins(0, 0, 0, 0)
        viewer_layout.addWidget(self.view, 1)
        viewer_layout.addLayout(controls)
        viewer_layout.addLayout(contrast)

        self.table.setMinimumWidth(360)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.table)
        left.addWidget(self.objects_panel)
        left.setStretchFactor(0, 1)
        left.setStretchFactor(1, 3)
        left.setSizes([190, 520])
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(viewer)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([430, 800])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)

    # ------------------------------------------------------------------ loading

    def _on_open_triggered(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open run results", "", "Run records (zoodesk-run.json);;All files (*)"
        )
        if path:
            self.open_record(Path(path))

    def open_record(self, path: Path) -> None:
        """Show the run whose record is ``path`` (or the folder holding it)."""
        self.summary_label.setText(f"Opening {html.escape(str(path))}…")
        self.runner.start(
            lambda _cancel: self.services.load_record(path),
            "open run",
            on_result=self._on_record_loaded,
            on_error=self._on_record_failed,
        )

    def show_record(self, record: RunRecord) -> None:
        """Show a record already in memory (e.g. the run that just finished)."""
        self._on_record_loaded(record)

    def _on_record_loaded(self, record: RunRecord) -> None:
        self.record = record
        model = record.model
        device = record.device
        counts = record.summary()
        parts = ", ".join(
            f"{counts[k]} {k}" for k in ("ok", "skipped", "failed", "not done") if counts.get(k)
        )
        found = [f.instances for f in record.files if f.instances and "count" in f.instances]
        objects = (
            f" · {sum(int(i['count']) for i in found)} objects in {len(found)} image(s)"
            if found
            else ""
        )
        self.summary_label.setText(
            f"<b>{html.escape(str(model.get('name', 'model')))}</b> "
            f"{html.escape(str(model.get('version') or ''))} · run {record.status} · "
            f"{counts['total']} input(s): {html.escape(parts or 'none')}{objects} · "
            f"device {html.escape(str(device.get('used', '?')))} · "
            f"started {html.escape(record.started[:16].replace('T', ' '))}<br>"
            f"<span>{html.escape(str(record.path.parent))}</span>"
        )
        self.table.setRowCount(0)
        for entry in record.files:
            row = self.table.rowCount()
            self.table.insertRow(row)
            keys = [_output_key(o) for o in entry.outputs]
            outputs = ", ".join(dict.fromkeys(k for k in keys if k))
            seconds = f"{entry.seconds:.1f} s" if entry.seconds is not None else ""
            name = input_name(Path(entry.input), entry.scene)
            objects_text, objects_tip = _objects_cell(entry)
            cells = (name, entry.status, outputs, objects_text, seconds, entry.error or "")
            for col, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                if col == COL_INPUT:
                    cell.setToolTip(entry.input)
                if col == COL_PROBLEM and entry.error:
                    cell.setToolTip(entry.error)
                if col == COL_STATUS and entry.status == "failed":
                    cell.setForeground(Qt.GlobalColor.red)
                if col == COL_OBJECTS:
                    cell.setToolTip(objects_tip)
                    cell.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                    if objects_text == "failed":
                        cell.setForeground(Qt.GlobalColor.red)
                self.table.setItem(row, col, cell)
        self._shown_row = -1
        self.objects_panel.unpin()
        self._load_measurements(record)
        self._update_buttons()
        self.record_loaded.emit(record)
        first = next((i for i, f in enumerate(record.files) if f.outputs), 0)
        if 0 <= self._keep_row < len(record.files):
            first, self._keep_row = self._keep_row, -1
        if record.files:
            self.table.selectRow(first)

    def _load_measurements(self, record: RunRecord) -> None:
        """Read every image's objects table off the GUI thread, for the histogram."""
        self._measurements_generation += 1
        generation = self._measurements_generation
        self.objects_panel.set_measurements(None)
        if not any(f.instances and "objects" in f.instances for f in record.files):
            return
        self.runner.start(
            lambda _cancel: (generation, self.services.run_measurements(record)),
            "read objects",
            on_result=self._on_measurements_loaded,
            on_error=self._on_measurements_failed,
        )

    def _on_measurements_loaded(self, result: tuple[int, RunMeasurements]) -> None:
        generation, measurements = result
        if generation == self._measurements_generation:
            self.objects_panel.set_measurements(measurements)
            self.measurements_shown.emit(measurements)

    def _on_measurements_failed(self, exc: BaseException) -> None:
        self.objects_panel.run_label.setText(readable_message(exc))

    def _on_record_failed(self, exc: BaseException) -> None:
        self.summary_label.setText("The run could not be opened.")
        report_error(self, "Cannot open the run", exc, self.services.log_file)

    # ---------------------------------------------------------------- stepping

    def current_row(self) -> int:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows else -1

    def _on_previous_triggered(self) -> None:
        if self.current_row() > 0:
            self.table.selectRow(self.current_row() - 1)

    def _on_next_triggered(self) -> None:
        if 0 <= self.current_row() < self.table.rowCount() - 1:
            self.table.selectRow(self.current_row() + 1)

    def _on_row_selected(self) -> None:
        row = self.current_row()
        if self.record is None or row < 0 or row == self._shown_row:
            return
        record = self.record
        entry = record.files[row]
        run_dir = record.path.parent
        outputs = [
            (key, run_dir / o.path, o.kind, o.axes, tuple(o.shape))
            for o in entry.outputs
            if (key := _output_key(o)) is not None
        ]
        self.image_label.setText(f"Loading {input_name(Path(entry.input), entry.scene)}…")
        self.runner.start(
            lambda _cancel: self._load_planes(
                row, record, Path(entry.input), entry.series or 0, entry.scene, outputs
            ),
            "show result",
            on_result=self._on_planes_loaded,
            on_error=self._on_planes_failed,
        )

    def _load_planes(
        self,
        row: int,
        record: RunRecord,
        source: Path,
        series: int,
        scene: str | None,
        outputs: list[tuple[str, Path, str, str, tuple[int, ...]]],
    ) -> _Shown:
        """Runs on a pool thread: read the input, outputs and objects table of a row."""
        problems = []
        input_plane = None
        name = input_name(source, scene)
        try:
            image = self.services.read_image(source, series)
            input_plane = np.array(_render.plane(image.array, image.axes))
            described = f"{name}: {image.axes} {' × '.join(map(str, image.shape))}"
        except Exception as exc:
            problems.append(readable_message(exc))
            described = f"{name}: input not readable"
        shown = _Shown(row, input_plane, described, {}, problems)
        for key, path, kind, axes, shape in outputs:
            try:
                out = self.services.read_image(path)
                shown.planes[key] = (np.array(_render.plane(out.array, out.axes)), kind)
            except Exception as exc:
                problems.append(readable_message(exc))
                continue
            if key == OBJECTS_KEY:
                # Objects are numbered per time point: the plane shown is of this one.
                shown.frame = _render.shown_index(axes, shape, "T")
        if OBJECTS_KEY in shown.planes:
            try:
                shown.table = self.services.object_table(record, row)
            except Exception as exc:
                problems.append(readable_message(exc))
        return shown

    def _on_planes_loaded(self, shown: _Shown) -> None:
        row, input_plane, planes = shown.row, shown.input_plane, shown.planes
        if row != self.current_row():
            return
        self._shown_row = row
        if input_plane is None and planes:
            first = next(iter(planes.values()))[0]
            input_plane = np.zeros(first.shape[:2], np.uint8)
        self._input_plane = input_plane
        self._outputs = planes
        self._table, self._frame = shown.table, shown.frame
        self.objects_panel.unpin()
        current = self.output_combo.currentData()
        self.output_combo.blockSignals(True)
        self.output_combo.clear()
        self.output_combo.addItem("none (input only)", "")
        for key, (_plane, kind) in planes.items():
            text = "objects (label image)" if key == OBJECTS_KEY else f"{key} ({kind})"
            self.output_combo.addItem(text, key)
        index = self.output_combo.findData(current) if current else -1
        if index < 0:
            # Objects, when the run made them, are what the user came for.
            index = self.output_combo.findData(OBJECTS_KEY)
        self.output_combo.setCurrentIndex(index if index >= 0 else min(1, len(planes)))
        self.output_combo.blockSignals(False)
        self._set_auto_contrast()
        entry = self.record.files[row] if self.record else None
        text = shown.described
        problems = shown.problems
        if entry is not None and entry.error:
            text += f" · {entry.error}"
        if problems:
            text += " · " + "; ".join(problems)
        self.image_label.setText(text)
        self._draw()
        self.image_shown.emit(row)

    def _on_planes_failed(self, exc: BaseException) -> None:
        self.image_label.setText(readable_message(exc))

    # ---------------------------------------------------------------- drawing

    def _set_auto_contrast(self) -> None:
        if self._input_plane is None:
            return
        lo, hi = _render.auto_limits(self._input_plane)
        for spin, value in ((self.low_spin, lo), (self.high_spin, hi)):
            spin.blockSignals(True)
            spin.setValue(value)
            spin.blockSignals(False)

    def _on_auto_contrast_clicked(self) -> None:
        self._set_auto_contrast()
        self._draw()

    def _on_display_changed(self, *_args: Any) -> None:
        self._draw()

    def _draw(self) -> None:
        if self._input_plane is None:
            self.view.set_picture(None)
            return
        limits = (self.low_spin.value(), self.high_spin.value())
        if limits[1] <= limits[0]:
            limits = (limits[0], limits[0] + 1)
        picture = _render.to_rgb(self._input_plane, limits)
        chosen = self.output_combo.currentData()
        if chosen and chosen in self._outputs:
            plane, kind = self._outputs[chosen]
            style = _render.OverlayStyle(
                opacity=self.opacity_slider.value() / 100,
                colour_labels=self.labels_check.isChecked(),
                outlines=self.outlines_check.isChecked(),
            )
            picture = _render.overlay(picture, plane, kind, style)
        pinned = self.objects_panel.pinned
        if pinned is not None and OBJECTS_KEY in self._outputs:
            picture = _render.highlight(picture, self._outputs[OBJECTS_KEY][0], pinned[0])
        self.view.set_picture(picture)

    # ---------------------------------------------------------------- objects

    def object_at(self, y: int, x: int) -> int:
        """The object (its label) under picture pixel (y, x); 0 for none."""
        if OBJECTS_KEY not in self._outputs or self._input_plane is None:
            return 0
        labels = self._outputs[OBJECTS_KEY][0]
        return _render.label_at(labels, self._input_plane.shape, y, x)

    def _show_object_at(self, y: int, x: int, *, pinned: bool) -> None:
        label = self.object_at(y, x) if y >= 0 else 0
        row = self._table.find(label, self._frame) if self._table and label else None
        self.objects_panel.show_object(label, self._frame, row, pinned=pinned and label > 0)

    def _on_pixel_hovered(self, y: int, x: int) -> None:
        self._show_object_at(y, x, pinned=False)

    def _on_pixel_clicked(self, y: int, x: int) -> None:
        if self.object_at(y, x) == 0:
            if self.objects_panel.pinned is not None:
                self.objects_panel.unpin()
                self._draw()
            return
        self._show_object_at(y, x, pinned=True)
        self._draw()

    def _on_remeasure_requested(self) -> None:
        from zoodesk.gui.remeasure_dialog import RemeasureDialog

        if self.record is None:
            return
        dialog = RemeasureDialog(self.services, self.runner, self.record, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.measured.connect(self._on_objects_remade)
        dialog.open()

    def _on_objects_remade(self, record: RunRecord) -> None:
        self._keep_row = self.current_row()
        self._on_record_loaded(record)
        self.objects_remade.emit(record)

    # ---------------------------------------------------------------- actions

    def _on_open_folder_clicked(self) -> None:
        if self.record is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.record.path.parent)))

    def _on_export_triggered(self) -> None:
        if self.record is not None:
            self.export_requested.emit(self.record.path)

    def _update_buttons(self) -> None:
        record = self.record
        self.folder_button.setEnabled(record is not None)
        self.export_button.setEnabled(
            record is not None and any(f.status in ("ok", "skipped") for f in record.files)
        )
        self.action_export.setEnabled(self.export_button.isEnabled())
        self.objects_panel.remeasure_button.setEnabled(
            record is not None and any(f.status in ("ok", "skipped") for f in record.files)
        )
