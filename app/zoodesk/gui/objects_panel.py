"""The objects of a run on the results page: one object's measurements, and a histogram
of one measurement over every object of the run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from zoodesk.gui.histogram import HistogramWidget

if TYPE_CHECKING:
    from zoodesk.batch.objects import RunMeasurements

#: The measurement shown first, when the run has it.
PREFERRED_COLUMNS = ("area_px", "volume_px", "area_um2", "volume_um3")
DEFAULT_BINS = 20
#: Measurements named in the one-line description of the object under the cursor.
_BRIEF_COLUMNS = ("area_px", "volume_px", "area_um2", "volume_um3", "equivalent_diameter_um")
#: Columns of where an object is, listed after the others.
_POSITIONS = ("centroid_", "bbox_")
_HINT = "Point at an object to see its measurements; click it to keep them."


def cell_text(value: str | None) -> str:
    """A table cell for people: numbers to 4 significant digits, "–" where unknown."""
    if value is None or value == "":
        return "–"
    try:
        number = float(value)
    except ValueError:
        return value
    if math.isfinite(number) and number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return f"{number:.4g}"


class ObjectsPanelWidget(QWidget):
    """Measurements of the object under the cursor (or clicked), and the run's histogram.

    The results page feeds it: :meth:`show_object` with an ``objects.csv`` row,
    :meth:`set_measurements` with the run's tables read by the core.
    """

    #: The user asked to remake the run's objects with other settings.
    remeasure_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("objectsPanel")
        self.measurements: RunMeasurements | None = None
        self.pinned: tuple[int, int] | None = None

        self.object_box = QGroupBox("Object")
        self.object_label = QLabel(_HINT)
        self.object_label.setObjectName("objectLabel")
        self.object_label.setWordWrap(True)
        self.object_table = QTableWidget(0, 2)
        self.object_table.setObjectName("objectTable")
        self.object_table.setHorizontalHeaderLabels(["Measurement", "Value"])
        self.object_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.object_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.object_table.verticalHeader().setVisible(False)
        self.object_table.verticalHeader().setDefaultSectionSize(
            self.object_table.fontMetrics().height() + 6
        )
        header = self.object_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        object_layout = QVBoxLayout(self.object_box)
        object_layout.addWidget(self.object_label)
        object_layout.addWidget(self.object_table, 1)

        self.run_box = QGroupBox("All objects of the run")
        self.column_combo = QComboBox()
        self.column_combo.setObjectName("histogramColumn")
        self.column_combo.setToolTip("The measurement whose distribution is shown")
        self.column_combo.currentIndexChanged.connect(self._on_histogram_changed)
        self.bins_spin = QSpinBox()
        self.bins_spin.setObjectName("histogramBins")
        self.bins_spin.setRange(2, 200)
        self.bins_spin.setValue(DEFAULT_BINS)
        self.bins_spin.setPrefix("bins: ")
        self.bins_spin.valueChanged.connect(self._on_histogram_changed)
        self.histogram = HistogramWidget()
        self.remeasure_button = QPushButton("Remake objects…")
        self.remeasure_button.setObjectName("remeasureButton")
        self.remeasure_button.setToolTip(
            "Make the objects of every image of this run again, with other settings, from "
            "the outputs in its folder; the model does not run again"
        )
        self.remeasure_button.clicked.connect(self.remeasure_requested)
        self.run_label = QLabel("")
        self.run_label.setObjectName("objectsRunLabel")
        self.run_label.setWordWrap(True)
        choose = QHBoxLayout()
        choose.addWidget(QLabel("Measurement:"))
        choose.addWidget(self.column_combo, 1)
        choose.addWidget(self.bins_spin)
        bottom = QHBoxLayout()
        bottom.addWidget(self.run_label, 1)
        bottom.addWidget(self.remeasure_button)
        run_layout = QVBoxLayout(self.run_box)
        run_layout.addLayout(choose)
        run_layout.addWidget(self.histogram, 1)
        run_layout.addLayout(bottom)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.object_box, 2)
        layout.addWidget(self.run_box, 3)
        self.set_measurements(None)

    # ------------------------------------------------------------------- object

    def show_object(
        self, label: int, frame: int, row: dict[str, str] | None, *, pinned: bool = False
    ) -> None:
        """Show object ``label`` (of time point ``frame``) and its ``objects.csv`` row.

        A pinned object (clicked) stays in the table until another one is clicked;
        the line above the table always follows the cursor.
        """
        if label <= 0:
            self.object_label.setText(_HINT if self.pinned is None else self._pinned_text())
            return
        where = f" (time point {frame})" if frame else ""
        if row is None:
            text = f"Object {label}{where}: not in the image's table"
        else:
            brief = [f"{c} {cell_text(row[c])}" for c in _BRIEF_COLUMNS if row.get(c)]
            text = f"Object {label}{where}" + (f": {', '.join(brief)}" if brief else "")
        self.object_label.setText(text)
        if pinned:
            self.pinned = (label, frame)
        if pinned or self.pinned is None:
            self._fill_table(row)
            self.object_box.setTitle(f"Object {label}{' (clicked)' if pinned else ''}")

    def unpin(self) -> None:
        """Forget the clicked object; the table follows the cursor again."""
        self.pinned = None
        self.object_box.setTitle("Object")
        self.object_label.setText(_HINT)
        self._fill_table(None)

    def _pinned_text(self) -> str:
        assert self.pinned is not None
        return f"Object {self.pinned[0]} is kept: click another, or the background to let go."

    def _fill_table(self, row: dict[str, str] | None) -> None:
        self.object_table.setRowCount(0)
        # What the object is like before where it is: the sizes are what one looks for.
        items = sorted((row or {}).items(), key=lambda kv: kv[0].startswith(_POSITIONS))
        for name, value in items:
            i = self.object_table.rowCount()
            self.object_table.insertRow(i)
            self.object_table.setItem(i, 0, QTableWidgetItem(name))
            cell = QTableWidgetItem(cell_text(value))
            cell.setToolTip(value or "unknown (the image has no pixel size)")
            cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.object_table.setItem(i, 1, cell)

    def table_values(self) -> dict[str, str]:
        """The measurements shown in the table, as displayed."""
        values = {}
        for i in range(self.object_table.rowCount()):
            name, value = self.object_table.item(i, 0), self.object_table.item(i, 1)
            if name is not None and value is not None:
                values[name.text()] = value.text()
        return values

    # ---------------------------------------------------------------------- run

    def set_measurements(self, measurements: RunMeasurements | None) -> None:
        """The run's objects (None: not read yet, or the run has none)."""
        self.measurements = measurements
        current = self.column_combo.currentData()
        self.column_combo.blockSignals(True)
        self.column_combo.clear()
        columns = measurements.columns if measurements is not None else []
        for name in columns:
            unit = measurements.units.get(name, "") if measurements is not None else ""
            self.column_combo.addItem(f"{name} ({unit})" if unit else name, name)
        preferred = [c for c in (current, *PREFERRED_COLUMNS) if c]
        found = [self.column_combo.findData(c) for c in preferred]
        index = next((i for i in found if i >= 0), 0)
        self.column_combo.setCurrentIndex(index if columns else -1)
        self.column_combo.blockSignals(False)
        self.column_combo.setEnabled(bool(columns))
        self.bins_spin.setEnabled(bool(columns))
        if measurements is None or measurements.objects == 0:
            self.run_label.setText("This run has no objects yet.")
        else:
            self.run_label.setText(
                f"{measurements.objects} objects in {measurements.images} image(s)"
                + (f"; {'; '.join(measurements.problems)}" if measurements.problems else "")
            )
        self._on_histogram_changed()

    def _on_histogram_changed(self, *_args: object) -> None:
        column = self.column_combo.currentData()
        m = self.measurements
        if m is None or not column:
            self.histogram.clear(
                "No objects: press Remake objects… to make them from this run's outputs."
            )
            return
        counts, edges = m.histogram(str(column), self.bins_spin.value())
        self.histogram.set_histogram(counts, edges, self.column_combo.currentText())
