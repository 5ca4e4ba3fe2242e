"""The Help menu's windows: the keyboard shortcuts and the user guide (docs/gui.md).

The user guide ships with the application (the bundle carries ``docs/``; a source
checkout has it beside ``app/``) and is shown here, offline, rendered from its
Markdown.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

GUIDE_NAME = "gui.md"


def user_guide_path() -> Path | None:
    """The user guide (``docs/gui.md``) of a bundle or a source checkout; None if absent."""
    candidates = []
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        candidates.append(Path(frozen_root) / "docs" / GUIDE_NAME)
    here = Path(__file__).resolve()
    candidates.append(here.parents[1] / "resources" / "docs" / GUIDE_NAME)  # installed
    candidates.append(here.parents[3] / "docs" / GUIDE_NAME)  # <repo>/docs
    return next((c for c in candidates if c.is_file()), None)


def action_text(action: QAction) -> str:
    """An action's text as a menu shows it: without the ``&`` of its mnemonic."""
    return action.text().replace("&&", "\0").replace("&", "").replace("\0", "&")


def shortcut_text(action: QAction) -> str:
    """An action's keys as this platform writes them (``Ctrl+O``, ``PgUp or [``)."""
    keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()]
    return " or ".join(k for k in keys if k)


class ShortcutsDialog(QDialog):
    """Every keyboard shortcut, by part of the window, taken from the actions themselves.

    Parameters
    ----------
    sections
        (title, actions) in the order to list them; actions without a shortcut are
        left out.
    """

    def __init__(
        self, sections: Sequence[tuple[str, Sequence[QAction]]], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.setObjectName("shortcutsDialog")
        self.table = QTableWidget(0, 2)
        self.table.setObjectName("shortcutsTable")
        self.table.setHorizontalHeaderLabels(["Keys", "Does"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for title, actions in sections:
            listed = [(shortcut_text(a), action_text(a)) for a in actions if shortcut_text(a)]
            if not listed:
                continue
            row = self.table.rowCount()
            self.table.insertRow(row)
            heading = QTableWidgetItem(title)
            font = heading.font()
            font.setBold(True)
            heading.setFont(font)
            self.table.setItem(row, 0, heading)
            self.table.setSpan(row, 0, 1, 2)
            for keys, text in listed:
                row = self.table.rowCount()
                self.table.insertRow(row)
                self.table.setItem(row, 0, QTableWidgetItem(keys))
                self.table.setItem(row, 1, QTableWidgetItem(text.rstrip("…")))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(480, 560)

    def listed(self) -> list[tuple[str, str]]:
        """The (keys, action) rows listed, without the section headings."""
        rows = []
        for row in range(self.table.rowCount()):
            does = self.table.item(row, 1)
            if does is not None:
                rows.append((self.table.item(row, 0).text(), does.text()))
        return rows


class UserGuideDialog(QDialog):
    """The user guide, rendered from its Markdown with its pictures; links to other
    pages of the guide open in the same window, web links in the browser."""

    def __init__(self, path: Path | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("ZooDesk user guide")
        self.setObjectName("userGuideDialog")
        self.browser = QTextBrowser()
        self.browser.setObjectName("userGuide")
        self.browser.setOpenExternalLinks(True)
        layout = QVBoxLayout(self)
        if path is None:
            layout.addWidget(QLabel("The user guide is not part of this installation."))
        else:
            self.browser.setSearchPaths([str(path.parent)])
            self.browser.setSource(QUrl.fromLocalFile(str(path)))
            layout.addWidget(self.browser)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(860, 680)
