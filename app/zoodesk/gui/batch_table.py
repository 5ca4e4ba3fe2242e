"""The batch page's table of inputs: one row per file (or scene), what the scan found
and what the run made of it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from zoodesk.batch.console import input_name
from zoodesk.gui.wording import local_time, problem_cell
from zoodesk.units import human_size

if TYPE_CHECKING:
    from zoodesk.batch.preview import InputInfo
    from zoodesk.batch.record import FileEntry

# The columns a user reads first come first, so that they stay in view on a narrow
# window; the image's details follow.
COLUMNS = (
    "File",
    "Fits the model",
    "Status",
    "Time",
    "Axes",
    "Shape",
    "Type",
    "Pixel size",
    "Size",
)
(
    COL_FILE,
    COL_FIT,
    COL_STATUS,
    COL_TIME,
    COL_AXES,
    COL_SHAPE,
    COL_TYPE,
    COL_PIXEL,
    COL_SIZE,
) = range(len(COLUMNS))
#: Widest the file name column starts (longer names are elided; the tooltip has all).
FILE_COLUMN_WIDTH = 200

_STATUS_TEXT = {
    "ok": "done",
    "failed": "failed",
    "skipped": "done earlier",
    "not done": "not done",
    "pending": "waiting",
}
#: Where a file row keeps its scene (None for a file that is not one series of many).
_SCENE_ROLE = Qt.ItemDataRole.UserRole + 1


class FilesTableWidget(QTableWidget):
    """The inputs of a batch, filled from the scan and updated by the run's events."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setObjectName("filesTable")
        self.setHorizontalHeaderLabels(list(COLUMNS))
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_FILE, QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.setColumnWidth(COL_FILE, FILE_COLUMN_WIDTH)

    def add_input(self, info: InputInfo) -> None:
        """A row for one input found by the scan."""
        row = self.rowCount()
        self.insertRow(row)
        shape = " × ".join(str(s) for s in info.shape) if info.shape else ""
        if info.problem:
            fit, fit_tip = problem_cell(info.problem, info.path)
        else:
            fit = info.mapping_words or info.mapping or "not checked"
            fit_tip = info.mapping or ""
        cells = {
            COL_FILE: input_name(info.path, info.scene),
            COL_AXES: info.axes or "",
            COL_SHAPE: shape,
            COL_TYPE: info.dtype or "",
            COL_PIXEL: pixel_size_text(info.pixel_sizes),
            COL_SIZE: human_size(info.size_bytes),
            COL_FIT: fit,
            COL_STATUS: "",
            COL_TIME: "",
        }
        for col, text in cells.items():
            cell = QTableWidgetItem(text)
            if col == COL_FILE:
                where = f"{info.path}" + (f"\nscene: {info.scene}" if info.scene else "")
                cell.setToolTip(where + (f"\nformat: {info.format}" if info.format else ""))
                cell.setData(Qt.ItemDataRole.UserRole, str(info.path))
                cell.setData(_SCENE_ROLE, info.scene)
            if col == COL_FIT:
                cell.setToolTip(fit_tip)
                if info.problem:
                    cell.setForeground(Qt.GlobalColor.red)
            self.setItem(row, col, cell)

    def row_of(self, path: Path, scene: str | None = None) -> int:
        """The row of an input (a file, or one scene of it); a row is added for an
        input not listed yet."""
        key = str(Path(path))
        for row in range(self.rowCount()):
            cell = self.item(row, COL_FILE)
            if (
                cell is not None
                and cell.data(Qt.ItemDataRole.UserRole) == key
                and cell.data(_SCENE_ROLE) == scene
            ):
                return row
        row = self.rowCount()
        self.insertRow(row)
        cell = QTableWidgetItem(input_name(Path(path), scene))
        cell.setToolTip(key)
        cell.setData(Qt.ItemDataRole.UserRole, key)
        cell.setData(_SCENE_ROLE, scene)
        self.setItem(row, COL_FILE, cell)
        return row

    def path_at(self, row: int) -> Path | None:
        """The file of a row."""
        cell = self.item(row, COL_FILE)
        return Path(cell.data(Qt.ItemDataRole.UserRole)) if cell is not None else None

    def set_cell(self, row: int, col: int, text: str, tooltip: str = "") -> None:
        cell = self.item(row, col)
        if cell is None:
            cell = QTableWidgetItem()
            self.setItem(row, col, cell)
        cell.setText(text)
        cell.setToolTip(tooltip)

    def set_waiting(self) -> None:
        """Every row waits for the run."""
        for row in range(self.rowCount()):
            self.set_cell(row, COL_STATUS, "waiting")
            self.set_cell(row, COL_TIME, "")

    def show_entry(self, entry: FileEntry) -> int:
        """Show what the run made of an input; returns its row."""
        row = self.row_of(Path(entry.input), entry.scene)
        text, tooltip = status_cell(entry)
        self.set_cell(row, COL_STATUS, text, tooltip)
        cell = self.item(row, COL_STATUS)
        if cell is not None and entry.status == "failed":
            cell.setForeground(Qt.GlobalColor.red)
        if entry.seconds is not None and entry.status == "ok":
            finished = local_time(entry.finished, seconds=True)
            self.set_cell(
                row,
                COL_TIME,
                f"{entry.seconds:.1f} s",
                f"finished {finished}" if finished else "",
            )
        return row


def status_cell(entry: FileEntry) -> tuple[str, str]:
    """A file's status for the table (with its objects, when the run makes them) and the
    tooltip that says what went wrong."""
    text = _STATUS_TEXT.get(entry.status, entry.status)
    found = entry.instances or {}
    if entry.status in ("ok", "skipped") and "count" in found:
        text += f" · {found['count']} objects"
    elif "error" in found and entry.status == "ok":
        return f"{text} · objects failed", str(found["error"])
    return text, entry.error or ""


def pixel_size_text(sizes: dict[str, tuple[float, str]]) -> str:
    """``0.65 µm`` (X and Y alike), ``0.65 × 0.7 µm``, plus ``, z 2 µm``; empty if none."""
    if "X" not in sizes:
        return ""
    x, unit = sizes["X"]
    y = sizes.get("Y", (x, unit))[0]
    text = f"{x:.4g} {unit}" if y == x else f"{x:.4g} × {y:.4g} {unit}"
    if "Z" in sizes:
        text += f", z {sizes['Z'][0]:.4g} {sizes['Z'][1]}"
    return text
