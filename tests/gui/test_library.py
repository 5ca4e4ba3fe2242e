"""The model library page, driven through its widgets."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractScrollArea,
    QComboBox,
    QLabel,
    QLineEdit,
    QMessageBox,
    QWidget,
)

from tests.gui.helpers import import_nuclei
from zoodesk.gui.errors import ErrorDialog
from zoodesk.gui.main_window import MainWindow


def _rows(window: MainWindow) -> list[tuple[str, str, str]]:
    tree = window.library_page.tree
    return [
        (tree.topLevelItem(i).text(0), tree.topLevelItem(i).text(1), tree.topLevelItem(i).text(2))
        for i in range(tree.topLevelItemCount())
    ]


def test_fresh_install_lists_the_demo_model(window: MainWindow, qtbot: Any) -> None:
    rows = _rows(window)
    assert rows == [("ZooDesk demo blob detector", "built in", "runs")]
    library = window.library_page
    assert "No zoo catalogue saved yet" in library.catalogue_label.text()
    qtbot.waitUntil(lambda: library._package is not None, timeout=30000)
    assert library.name_label.text() == "ZooDesk demo blob detector"
    assert "MIT" in library.field_labels["license"].text()
    assert "bcyx" in library.field_labels["inputs"].text()
    assert "probability" in library.field_labels["outputs"].text()
    assert "Marr" in library.field_labels["cite"].text()
    assert not library.cover_label.pixmap().isNull()
    assert "not tested yet" in library.test_status_text()
    # The demo model is offered on the batch page straight away.
    assert window.batch_page.model_combo.itemText(0).startswith("ZooDesk demo blob detector")


def test_import_nuclei_model_and_run_its_test(
    window: MainWindow,
    qtbot: Any,
    nuclei_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_home: Path,
) -> None:
    item_id = import_nuclei(qtbot, window, nuclei_dir, monkeypatch)
    library = window.library_page
    assert ("UNet 2D Nuclei Broad", "installed", "runs") in _rows(window)
    assert library.name_label.text() == "UNet 2D Nuclei Broad"
    assert "onnx" in library.field_labels["weights"].text()
    assert str(isolated_home / "models") in library.field_labels["where"].text()
    assert "not tested yet" in library.test_status_text()
    assert library.test_button.isEnabled()

    with qtbot.waitSignal(library.test_finished, timeout=120000) as finished:
        qtbot.mouseClick(library.test_button, Qt.MouseButton.LeftButton)
    assert finished.args[0] == item_id
    text = library.test_status_text()
    assert text.startswith("passed on cpu (onnx): max abs diff")
    assert "Test passed." in library.task_label.text()
    # The result is remembered: selecting the model again shows it.
    library.select_item("builtin:demo")
    qtbot.waitUntil(lambda: library.name_label.text() == "ZooDesk demo blob detector")
    with qtbot.waitSignal(library.details_loaded, timeout=30000):
        library.select_item(item_id)
    assert library.test_status_text().startswith("passed on cpu (onnx)")


def test_remove_asks_then_removes(
    window: MainWindow,
    qtbot: Any,
    nuclei_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_home: Path,
) -> None:
    import_nuclei(qtbot, window, nuclei_dir, monkeypatch)
    asked: list[str] = []

    def answer(_parent: Any, _title: str, text: str, *a: Any) -> QMessageBox.StandardButton:
        asked.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", staticmethod(answer))
    library = window.library_page
    assert library.remove_button.isVisible()
    with qtbot.waitSignal(library.library_changed, timeout=30000):
        qtbot.mouseClick(library.remove_button, Qt.MouseButton.LeftButton)
    assert asked and "UNet 2D Nuclei Broad" in asked[0]
    assert [r[0] for r in _rows(window)] == ["ZooDesk demo blob detector"]
    assert not any((isolated_home / "models").glob("unet*"))


def test_import_of_a_folder_that_is_no_model_shows_a_readable_error(
    window: MainWindow, qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PySide6.QtWidgets import QFileDialog

    empty = tmp_path / "not-a-model"
    empty.mkdir()
    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(empty))
    )
    library = window.library_page
    library.action_import_folder.trigger()
    qtbot.waitUntil(lambda: bool(library.findChildren(ErrorDialog)), timeout=30000)
    dialog = library.findChildren(ErrorDialog)[0]
    assert str(empty) in dialog.informativeText()
    assert "no model description" in dialog.informativeText()
    assert str(window.services.log_file) in dialog.informativeText()
    assert window.services.log_file is not None
    assert library.task_label.text() == "Import failed."
    assert window.isVisible()


def test_catalogue_search_and_filters(saved_catalogue: Path, qtbot: Any, services: Any) -> None:
    from zoodesk.gui.app import create_main_window

    window = create_main_window(services)
    qtbot.addWidget(window)
    library = window.library_page
    with qtbot.waitSignal(library.library_changed, timeout=30000):
        window.show()
    rows = _rows(window)
    assert len(rows) == 4
    # A torchscript model: this installation converts it when torch is at hand.
    torch_here = importlib.util.find_spec("torch") is not None
    verdict = "converts here" if torch_here else "needs the convert extra"
    assert ("NucleiSegmentationBoundaryModel", "in the zoo", verdict) in rows
    assert ("EmbryoNet base model", "in the zoo", "runs") in rows
    assert "days old" in library.catalogue_label.text()

    library.search_edit.setText("nuclei")
    names = [r[0] for r in _rows(window)]
    assert "NucleiSegmentationBoundaryModel" in names
    assert "EmbryoNet base model" not in names

    library.search_edit.clear()
    library.show_combo.setCurrentIndex(library.show_combo.findData("installed"))
    assert [r[0] for r in _rows(window)] == ["ZooDesk demo blob detector"]

    library.show_combo.setCurrentIndex(library.show_combo.findData("all"))
    library.dims_combo.setCurrentIndex(library.dims_combo.findData(3))
    assert [r[0] for r in _rows(window)] == [
        "Cell Segmentation from Membrane Staining for Plant Tissues"
    ]
    library.dims_combo.setCurrentIndex(0)
    library.runnable_check.setChecked(True)
    # A Keras model: it runs after a conversion with TensorFlow (here, or elsewhere).
    tensorflow_here = all(importlib.util.find_spec(m) for m in ("tensorflow", "tf2onnx"))
    keras = ("Cell Segmentation from Membrane Staining for Plant Tissues", "in the zoo")
    verdict = "converts here" if tensorflow_here else "needs TensorFlow"
    assert (*keras, verdict) in _rows(window)

    # A catalogue model shows what ZooDesk can do with it and offers the download.
    library.runnable_check.setChecked(False)
    library.search_edit.setText("NucleiSegmentationBoundaryModel")
    assert library.name_label.text() == "NucleiSegmentationBoundaryModel"
    assert "torchscript" in library.field_labels["can"].text()
    assert library.download_button.isVisible() and library.download_button.isEnabled()
    assert not library.remove_button.isVisible()
    window.runner.wait(30000)


def test_bundle_opened_from_the_file_manager_is_imported(
    window: MainWindow, qtbot: Any, nuclei_dir: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    # Another installation prepared a bundle; the launcher passes it in ZOODESK_OPEN_FILES.
    from zoodesk.gui.app import OPEN_FILES_ENV, open_files, requested_files
    from zoodesk.models.bundle import export_bundle
    from zoodesk.models.cache import ModelCache
    from zoodesk.settings import Settings

    elsewhere = Settings(cache_dir=str(tmp_path / "elsewhere" / "models"))
    key = ModelCache(elsewhere.models_dir).import_package(nuclei_dir).key
    bundle = tmp_path / "for-the-microscope.zdbundle"
    export_bundle(bundle, [key], settings=elsewhere, include_catalogue=False)
    assert ("UNet 2D Nuclei Broad", "installed", "runs") not in _rows(window)

    monkeypatch.setenv(OPEN_FILES_ENV, str(bundle))
    assert requested_files() == [bundle]
    with qtbot.waitSignal(window.library_page.model_installed, timeout=60000):
        open_files(window, requested_files())
    qtbot.waitUntil(lambda: ("UNet 2D Nuclei Broad", "installed", "runs") in _rows(window))
    assert window.pages.currentWidget() is window.library_page


# ------------------------------------------------------------------ small screens


def _clipped(root: QWidget) -> list[str]:
    """The visible controls under ``root`` that are cut off: narrower than their text
    needs, or reaching past the visible part of their scroll area (or of ``root``)."""
    found = []
    for widget in root.findChildren(QWidget):
        if not widget.isVisibleTo(root) or isinstance(widget, QAbstractScrollArea):
            continue
        name = widget.objectName() or type(widget).__name__
        if isinstance(widget, QLabel) and widget.text():
            label = widget.text()[:30]
            if widget.wordWrap():
                if widget.heightForWidth(widget.width()) > widget.height() + 1:
                    found.append(f"label {label!r}: its wrapped text is taller than it")
            elif widget.width() < widget.minimumSizeHint().width():
                found.append(f"label {label!r}: {widget.width()} < {widget.minimumSizeHint()}")
        elif isinstance(widget, QAbstractButton | QComboBox | QLineEdit):
            if widget.width() < widget.minimumSizeHint().width():
                found.append(f"{name}: {widget.width()} < {widget.minimumSizeHint()}")
            if isinstance(widget, QAbstractButton) and widget.width() < widget.sizeHint().width():
                found.append(f"button {widget.text()!r}: {widget.width()} < {widget.sizeHint()}")
        else:
            continue
        # The part of the window it can be seen in: its scroll area's viewport, else root.
        clip, parent = root, widget.parentWidget()
        while parent is not None and parent is not root:
            if isinstance(parent, QAbstractScrollArea):
                clip = parent.viewport()
                break
            parent = parent.parentWidget()
        where = QRect(widget.mapTo(clip, QPoint(0, 0)), widget.size())
        if where.left() < 0 or where.right() > clip.width() - 1:
            found.append(f"{name} {where} reaches outside {clip.objectName()} {clip.rect()}")
    return found


def test_the_library_fits_a_small_window(
    window: MainWindow,
    qtbot: Any,
    nuclei_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    saved_catalogue: Path,
) -> None:
    window.resize(1024, 680)
    library = window.library_page
    with qtbot.waitSignal(library.library_changed, timeout=30000):
        library.refresh()
    import_nuclei(qtbot, window, nuclei_dir, monkeypatch)
    qtbot.waitUntil(lambda: library.remove_button.isVisible(), timeout=30000)
    assert window.width() == 1024 and window.height() == 680
    assert _clipped(library) == []
    # The model's title and the Remove button are whole and inside the details pane.
    pane = library.details.viewport()
    for widget in (library.name_label, library.remove_button):
        where = QRect(widget.mapTo(pane, QPoint(0, 0)), widget.size())
        assert pane.rect().contains(where), (widget.objectName(), where, pane.rect())
    assert library.name_label.text() == "UNet 2D Nuclei Broad"
    # A catalogue model shows other buttons: they fit too.
    assert library.select_item("zoo:bioimage-io/nice-peacock")
    qtbot.waitUntil(lambda: library.download_button.isVisible())
    assert _clipped(library) == []


def test_the_settings_dialog_fits_a_small_screen(window: MainWindow, qtbot: Any) -> None:
    from zoodesk.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(window.services.settings, window)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    hint = dialog.sizeHint()
    assert hint.width() <= 1024 and hint.height() <= 680 - 60  # room for a title bar
    assert _clipped(dialog) == []
