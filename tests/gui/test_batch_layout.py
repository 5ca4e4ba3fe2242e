"""The batch page on small screens: nothing cut off at 1024 x 680, nor at 1366 x 768."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QComboBox,
    QLabel,
    QLineEdit,
    QScrollArea,
    QSpinBox,
    QWidget,
)

from zoodesk.gui.batch import COL_FILE, COL_FIT, COL_STATUS
from zoodesk.gui.main_window import PAGE_BATCH, MainWindow


def _clipped(page: QWidget) -> list[str]:
    """The visible labels and controls of the page narrower or lower than they need, or
    reaching out of their parent."""
    problems = []
    kinds = (QLabel, QAbstractButton, QComboBox, QLineEdit, QSpinBox)
    for widget in page.findChildren(QWidget):
        if not isinstance(widget, kinds) or not widget.isVisible():
            continue
        if widget.window() is not page.window() or isinstance(widget.parent(), QScrollArea):
            continue
        name = f"{type(widget).__name__} {widget.objectName() or ''} {_text(widget)!r}"
        size = widget.size()
        if isinstance(widget, QLabel) and widget.wordWrap():
            if widget.text() and size.height() < widget.heightForWidth(size.width()):
                problems.append(
                    f"{name}: {size.height()} high, needs {widget.heightForWidth(size.width())}"
                )
        elif isinstance(widget, QLabel | QAbstractButton):
            if widget.text() and size.width() < widget.sizeHint().width():
                problems.append(f"{name}: {size.width()} wide, needs {widget.sizeHint().width()}")
        elif isinstance(widget, QComboBox):
            needed = widget.fontMetrics().horizontalAdvance(widget.currentText())
            if size.width() < needed + 24:
                problems.append(f"{name}: {size.width()} wide for its text ({needed})")
        elif size.width() < widget.minimumSizeHint().width():
            problems.append(
                f"{name}: {size.width()} wide, needs {widget.minimumSizeHint().width()}"
            )
        parent = widget.parentWidget()
        if parent is not None and not parent.rect().contains(widget.geometry()):
            problems.append(f"{name}: reaches out of its parent")
    return problems


def _text(widget: QWidget) -> str:
    if isinstance(widget, QComboBox):
        return widget.currentText()
    text = getattr(widget, "text", None)
    return str(text())[:40] if callable(text) else ""


@pytest.mark.parametrize("size", [(1024, 680), (1366, 768)])
def test_nothing_on_the_batch_page_is_cut_off(
    window: MainWindow, qtbot: Any, size: tuple[int, int]
) -> None:
    batch = window.batch_page
    window.show_page(PAGE_BATCH)
    window.resize(*size)
    qtbot.mouseClick(batch.samples_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: batch.package is not None and not batch.scanning and batch.table.rowCount() == 3,
        timeout=60000,
    )
    # A long status, as after a run, wraps rather than widening the page.
    batch.status_label.setText("Finished: 120 done, 4 done earlier, 3 failed, 2 not done.")
    qtbot.waitUntil(lambda: window.size().toTuple() == size)
    qtbot.wait(50)
    assert _clipped(batch) == []
    # The page fits the window as it is: no scrolling needed.
    scroll = batch.findChild(QScrollArea, "batchScroll")
    assert scroll.widget().height() <= scroll.viewport().height()
    # The table's first columns, "Fits the model" among them, are in view in full.
    header = batch.table.horizontalHeader()
    for col in (COL_FILE, COL_FIT, COL_STATUS):
        left = header.sectionViewportPosition(col)
        assert left >= 0
        assert left + header.sectionSize(col) <= header.viewport().width(), col
    assert header.sectionSize(COL_FIT) >= header.sectionSizeHint(COL_FIT)
    fits = batch.table.item(0, COL_FIT)
    shown = batch.table.visualItemRect(fits).width()
    assert shown >= batch.table.fontMetrics().horizontalAdvance(fits.text())


def test_below_its_size_the_page_scrolls_instead_of_overlapping(
    window: MainWindow, qtbot: Any
) -> None:
    batch = window.batch_page
    window.show_page(PAGE_BATCH)
    window.resize(window.minimumSize())
    qtbot.wait(50)
    content = batch.findChild(QScrollArea, "batchScroll").widget()
    assert content.height() >= content.minimumSizeHint().height()
    assert content.width() >= content.minimumSizeHint().width()


def test_the_window_opens_at_a_size_that_fits_a_laptop(window: MainWindow) -> None:
    # 1366 x 768, less a title bar and a task bar.
    assert window.width() <= 1366
    assert window.height() <= 768 - 80
