"""Steps shared by the GUI tests, done through the widgets as a user would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoodesk.gui.main_window import MainWindow


def import_nuclei(qtbot: Any, window: MainWindow, nuclei_dir: Path, monkeypatch: Any) -> str:
    """Import the nuclei model through the library's import action; return its item id."""
    from PySide6.QtWidgets import QFileDialog

    library = window.library_page
    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(nuclei_dir))
    )
    with qtbot.waitSignal(library.model_installed, timeout=60000) as installed:
        library.action_import_folder.trigger()
    item_id = str(installed.args[0])
    qtbot.waitUntil(
        lambda: (
            library.current_item() is not None
            and library.current_item().item_id == item_id
            and library._package is not None
        ),
        timeout=60000,
    )
    return item_id


def use_model(qtbot: Any, window: MainWindow, item_id: str) -> None:
    """Choose an installed model on the batch page and wait until it is loaded."""
    batch = window.batch_page
    qtbot.waitUntil(lambda: batch.model_combo.findData(item_id) >= 0, timeout=30000)
    batch.model_combo.setCurrentIndex(batch.model_combo.findData(item_id))
    qtbot.waitUntil(
        lambda: batch.package is not None and batch.model_combo.currentData() == item_id,
        timeout=60000,
    )


def table_column(table: Any, column: int) -> list[str]:
    """The texts of one column of a QTableWidget."""
    return [
        table.item(r, column).text() if table.item(r, column) else ""
        for r in range(table.rowCount())
    ]
