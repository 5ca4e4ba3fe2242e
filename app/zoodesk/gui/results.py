"""The results page: a finished run's inputs and outputs, overlaid, and its objects."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
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
from zoodesk.gui.objects_panel import ObjectsPanelWidget
from zoodesk.gui.services import Services
from zoodesk.gui.viewer import STEP_AXES, ViewerContent, ViewerWidget
from zoodesk.gui.wording import local_time, problem_cell

if TYPE_CHECKING:
    from zoodesk.batch.objects import ObjectTable, RunMeasurements
    from zoodesk.batch.record import FileEntry, OutputEntry, RunRecord
    from zoodesk.images import ImageData

log = logging.getLogger(__name__)

COLUMNS = ("Input", "Status", "Outputs", "Objects", "Time", "Problem")
COL_INPUT, COL_STATUS, COL_OUTPUTS, COL_OBJECTS, COL_TIME, COL_PROBLEM = range(len(COLUMNS))
#: The overlay entry of an image's objects (its label image).
OBJECTS_KEY = "objects"
#: An output with more channels than this is overlaid by its first ones only.
MAX_OVERLAY_CHANNELS = 8


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


def _step_sizes(opened: _Opened) -> dict[str, int]:
    """The lengths of the axes the viewer steps through (C, Z, T) of a row's input, or
    of its first output when the input cannot be read."""
    image = opened.input if opened.input is not None else None
    if image is None and opened.outputs:
        image = opened.outputs[0][1]
    if image is None:
        return {}
    return {a: n for a, n in image.sizes.items() if a in STEP_AXES}


@dataclass
class _Opened:
    """The images of one row, opened where they lie: planes are read as they are shown."""

    row: int
    input: ImageData | None
    #: (overlay key, the output image, its kind) for every output that is a picture.
    outputs: list[tuple[str, ImageData, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    described: str = ""
    table: ObjectTable | None = None


@dataclass
class _Shown:
    """What a pool thread read for one row at one position: the planes to draw."""

    opened: _Opened
    content: ViewerContent
    frame: int = 0
    generation: int = 0


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
    #: Another channel, Z plane or time point of the same input is shown (its position).
    plane_shown = Signal(object)

    def __init__(
        self, services: Services, runner: TaskRunner, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("resultsPage")
        self.services = services
        self.runner = runner
        self.record: RunRecord | None = None
        self._opened: _Opened | None = None
        self._table: ObjectTable | None = None
        self._position_generation = 0
        self._reading_position = False
        self._pending_position: dict[str, int] | None = None
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

        self.viewer = ViewerWidget("Select an input to see it with its outputs.")
        self.viewer.pixel_hovered.connect(self._on_pixel_hovered)
        self.viewer.pixel_clicked.connect(self._on_pixel_clicked)
        self.viewer.position_changed.connect(self._on_position_changed)
        # The viewer's parts, under the names the rest of the page and its tests use.
        self.view = self.viewer.view
        self.output_combo = self.viewer.output_combo
        self.opacity_slider = self.viewer.opacity_slider
        self.labels_check = self.viewer.labels_check
        self.outlines_check = self.viewer.outlines_check
        self.low_spin = self.viewer.low_spin
        self.high_spin = self.viewer.high_spin
        self.image_label = self.viewer.image_label
        self.objects_panel = ObjectsPanelWidget()
        self.objects_panel.remeasure_requested.connect(self._on_remeasure_requested)
        previous = QPushButton(icon("previous"), "")
        previous.setToolTip("Previous image (Alt+Left)")
        previous.clicked.connect(self.action_previous.trigger)
        following = QPushButton(icon("next"), "")
        following.setToolTip("Next image (Alt+Right)")
        following.clicked.connect(self.action_next.trigger)
        self.viewer.navigation_layout.insertWidget(0, previous)
        self.viewer.navigation_layout.insertWidget(1, following)
        viewer = self.viewer

        self.table.setMinimumWidth(260)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.table)
        # On a small screen the objects' measurements scroll rather than being squeezed.
        objects_area = QScrollArea()
        objects_area.setObjectName("objectsArea")
        objects_area.setWidgetResizable(True)
        objects_area.setFrameShape(QScrollArea.Shape.NoFrame)
        objects_area.setWidget(self.objects_panel)
        left.addWidget(objects_area)
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
            f"started {html.escape(local_time(record.started))}<br>"
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
            problem_text, problem_tip = (
                problem_cell(entry.error, entry.input) if entry.error else ("", "")
            )
            cells = (name, entry.status, outputs, objects_text, seconds, problem_text)
            for col, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                if col == COL_INPUT:
                    cell.setToolTip(entry.input)
                if col == COL_PROBLEM and entry.error:
                    cell.setToolTip(problem_tip)
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
            (key, run_dir / o.path, o.kind)
            for o in entry.outputs
            if (key := _output_key(o)) is not None
        ]
        # Moving to an image of the same channels, depth and length keeps the plane.
        shown = self.viewer.content
        before = (dict(shown.sizes), self.viewer.position()) if shown is not None else None
        self._position_generation += 1
        generation = self._position_generation
        self.image_label.setText(f"Loading {input_name(Path(entry.input), entry.scene)}…")
        self.runner.start(
            lambda _cancel: self._open_row(
                row, record, Path(entry.input), entry.series or 0, entry.scene, outputs, before
            ),
            "show result",
            on_result=lambda shown: self._on_planes_loaded(shown, generation),
            on_error=self._on_planes_failed,
        )

    def _open_row(
        self,
        row: int,
        record: RunRecord,
        source: Path,
        series: int,
        scene: str | None,
        outputs: list[tuple[str, Path, str]],
        before: tuple[dict[str, int], dict[str, int]] | None,
    ) -> _Shown:
        """Runs on a pool thread: open the input and outputs of a row (nothing is read
        but the planes shown) and the row's objects table."""
        name = input_name(source, scene)
        opened = _Opened(row, None)
        try:
            opened.input = self.services.read_image(source, series, lazy=True)
            shape = " × ".join(map(str, opened.input.shape))
            opened.described = f"{name}: {opened.input.axes} {shape}"
        except Exception as exc:
            opened.problems.append(readable_message(exc))
            opened.described = f"{name}: input not readable"
        for key, path, kind in outputs:
            try:
                opened.outputs.append((key, self.services.read_image(path, lazy=True), kind))
            except Exception as exc:
                opened.problems.append(readable_message(exc))
        if any(key == OBJECTS_KEY for key, _image, _kind in opened.outputs):
            try:
                opened.table = self.services.object_table(record, row)
            except Exception as exc:
                opened.problems.append(readable_message(exc))
        sizes = _step_sizes(opened)
        # The first channel, the middle of a stack and of a time series.
        position = {letter: 0 if letter == "C" else n // 2 for letter, n in sizes.items()}
        if before is not None:
            old_sizes, old_position = before
            for letter in sizes:
                if old_sizes.get(letter) == sizes[letter] and letter in old_position:
                    position[letter] = old_position[letter]
        return self._read_planes(opened, position)

    def _read_planes(self, opened: _Opened, position: dict[str, int]) -> _Shown:
        """Runs on a pool thread: the planes of an opened row at ``position``."""
        sizes = _step_sizes(opened)
        image = opened.input
        names: dict[str, str] = {}
        planes: dict[str, tuple[np.ndarray, str]] = {}
        frame = 0
        for key, out, kind in opened.outputs:
            at = _render.follow(position, sizes, out.axes, out.shape)
            if key == OBJECTS_KEY:
                # Objects are numbered per time point: the plane shown is of this one.
                frame = at.get("T", 0)
            channels = out.sizes.get("C", 1)
            if channels == 1 or kind in _render.LABEL_KINDS:
                planes[key] = (np.array(_render.plane(out.array, out.axes, at)), kind)
                names[key] = "objects (label image)" if key == OBJECTS_KEY else f"{key} ({kind})"
                continue
            for c in range(min(channels, MAX_OVERLAY_CHANNELS)):
                label = out.channel_names[c] if out.channel_names else f"channel {c + 1}"
                entry = f"{key} · {label}"
                planes[entry] = (np.array(_render.plane(out.array, out.axes, {**at, "C": c})), kind)
                names[entry] = f"{key} ({kind}) · {label}"
        if image is not None:
            input_plane = np.array(_render.plane(image.array, image.axes, position))
        else:
            first = next(iter(planes.values()))[0] if planes else np.zeros((1, 1))
            input_plane = np.zeros(first.shape[:2], np.uint8)
        content = ViewerContent(
            input=input_plane,
            outputs=planes,
            names=names,
            sizes=sizes,
            position={k: v for k, v in position.items() if k in sizes},
            channel_names=image.channel_names if image is not None else None,
            pixel_sizes=dict(image.pixel_sizes) if image is not None else {},
            # Objects, when the run made them, are what the user came for.
            preferred=OBJECTS_KEY if OBJECTS_KEY in planes else None,
        )
        return _Shown(opened, content, frame)

    def _on_planes_loaded(self, shown: _Shown, generation: int) -> None:
        row = shown.opened.row
        if row != self.current_row() or generation != self._position_generation:
            return
        self._shown_row = row
        self._opened = shown.opened
        self._table, self._frame = shown.opened.table, shown.frame
        self.objects_panel.unpin()
        self.viewer.show_content(shown.content, new_image=True)
        entry = self.record.files[row] if self.record else None
        text = shown.opened.described
        if entry is not None and entry.error:
            text += f" · {entry.error}"
        if shown.opened.problems:
            text += " · " + "; ".join(shown.opened.problems)
        self.image_label.setText(text)
        self.image_shown.emit(row)

    def _on_planes_failed(self, exc: BaseException) -> None:
        self.image_label.setText(readable_message(exc))

    def _on_position_changed(self, position: dict[str, int]) -> None:
        """Read the planes at another channel, Z or T (one read at a time: a slider
        dragged over many planes reads the last one it rests on)."""
        if self._opened is None:
            return
        if self._reading_position:
            self._pending_position = position
            return
        self._reading_position = True
        opened, generation = self._opened, self._position_generation
        self.runner.start(
            lambda _cancel: self._read_planes(opened, position),
            "show plane",
            on_result=lambda shown: self._on_plane_read(shown, generation),
            on_error=self._on_plane_failed,
        )

    def _on_plane_read(self, shown: _Shown, generation: int) -> None:
        self._reading_position = False
        current = generation == self._position_generation and shown.opened is self._opened
        # A newer position waits: showing this one would only flicker.
        if current and self._pending_position is None:
            if shown.frame != self._frame:
                # Objects are numbered per time point: the one kept is of another.
                self._frame = shown.frame
                self.objects_panel.unpin()
                self.viewer.set_highlight(OBJECTS_KEY, None)
            self.viewer.show_content(shown.content, new_image=False)
            self.plane_shown.emit(dict(shown.content.position))
        self._next_position()

    def _on_plane_failed(self, exc: BaseException) -> None:
        self._reading_position = False
        self.image_label.setText(readable_message(exc))
        self._next_position()

    def _next_position(self) -> None:
        pending, self._pending_position = self._pending_position, None
        if pending is not None:
            self._on_position_changed(pending)

    # ---------------------------------------------------------------- objects

    def object_at(self, y: int, x: int) -> int:
        """The object (its label) under picture pixel (y, x); 0 for none."""
        content = self.viewer.content
        if content is None or OBJECTS_KEY not in content.outputs:
            return 0
        labels = content.outputs[OBJECTS_KEY][0]
        return _render.label_at(labels, content.input.shape, y, x)

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
                self._show_pinned()
            return
        self._show_object_at(y, x, pinned=True)
        self._show_pinned()

    def _show_pinned(self) -> None:
        """Outline the object clicked (the one the objects panel keeps) on the picture."""
        pinned = self.objects_panel.pinned
        self.viewer.set_highlight(OBJECTS_KEY, None if pinned is None else int(pinned[0]))

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
