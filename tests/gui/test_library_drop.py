"""Drag and drop: model zips, model folders and bundles onto the library; images onto
the batch page.  Real drag-enter and drop events with file URLs, sent as Qt sends them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QWidget

from zoodesk.gui.main_window import MainWindow

NUCLEI_ROW = ("UNet 2D Nuclei Broad", "installed", "runs")


def _rows(window: MainWindow) -> list[tuple[str, str, str]]:
    tree = window.library_page.tree
    return [
        tuple(tree.topLevelItem(i).text(c) for c in range(3))  # type: ignore[misc]
        for i in range(tree.topLevelItemCount())
    ]


def _drop(widget: QWidget, paths: list[Path]) -> tuple[bool, bool]:
    """Drag ``paths`` over ``widget`` and drop them; whether the drag-enter and the
    drop were accepted."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(
        QPoint(20, 20),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    enter.ignore()
    QApplication.sendEvent(widget, enter)
    drop = QDropEvent(
        QPointF(20, 20),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    drop.ignore()
    if enter.isAccepted():
        QApplication.sendEvent(widget, drop)
    return enter.isAccepted(), drop.isAccepted()


def test_a_dropped_model_zip_is_imported(
    window: MainWindow, qtbot: Any, nuclei_dir: Path, tmp_path: Path
) -> None:
    archive = Path(shutil.make_archive(str(tmp_path / "nuclei-model"), "zip", nuclei_dir))
    library = window.library_page
    with qtbot.waitSignal(library.model_installed, timeout=60000) as installed:
        assert _drop(library, [archive]) == (True, True)
    qtbot.waitUntil(lambda: NUCLEI_ROW in _rows(window), timeout=30000)
    qtbot.waitUntil(lambda: library.current_item().item_id == installed.args[0], timeout=30000)
    assert library.task_label.text().startswith("Imported UNet 2D Nuclei Broad as ")


def test_a_dropped_model_folder_is_imported(
    window: MainWindow, qtbot: Any, nuclei_dir: Path
) -> None:
    library = window.library_page
    with qtbot.waitSignal(library.model_installed, timeout=60000):
        assert _drop(library, [nuclei_dir]) == (True, True)
    qtbot.waitUntil(lambda: NUCLEI_ROW in _rows(window), timeout=30000)


def test_a_dropped_bundle_is_imported(
    window: MainWindow, qtbot: Any, nuclei_dir: Path, tmp_path: Path
) -> None:
    from zoodesk.models.bundle import export_bundle
    from zoodesk.models.cache import ModelCache
    from zoodesk.settings import Settings

    elsewhere = Settings(cache_dir=str(tmp_path / "elsewhere" / "models"))
    key = ModelCache(elsewhere.models_dir).import_package(nuclei_dir).key
    bundle = tmp_path / "for-the-microscope.zdbundle"
    export_bundle(bundle, [key], settings=elsewhere, include_catalogue=False)
    library = window.library_page
    with qtbot.waitSignal(library.model_installed, timeout=60000):
        assert _drop(library, [bundle]) == (True, True)
    qtbot.waitUntil(lambda: NUCLEI_ROW in _rows(window), timeout=30000)
    assert library.task_label.text().startswith("Installed UNet 2D Nuclei Broad.")


def test_drops_that_are_no_model_are_refused_with_a_message(
    window: MainWindow, qtbot: Any, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model", encoding="utf-8")
    empty = tmp_path / "holiday photos"
    empty.mkdir()
    library = window.library_page
    said: list[str] = []
    library.status_message.connect(said.append)
    before = _rows(window)
    assert _drop(library, [notes, empty]) == (True, False)
    assert not library.busy
    message = library.task_label.text()
    assert message.startswith("Not imported: notes.txt, holiday photos: the library takes ")
    assert "a model zip, a model folder (with rdf.yaml or bioimageio.yaml)" in message
    assert said == [message]
    assert _rows(window) == before


def test_a_mixed_drop_imports_the_models_one_after_the_other(
    window: MainWindow, qtbot: Any, nuclei_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "fixed-shape"
    shutil.copytree(Path(nuclei_dir).parent / "unet2d_fixed_shape", other)
    stray = tmp_path / "readme.md"
    stray.write_text("#", encoding="utf-8")
    library = window.library_page
    installed: list[str] = []
    library.model_installed.connect(installed.append)
    said: list[str] = []
    library.status_message.connect(said.append)
    assert _drop(library, [nuclei_dir, stray, other]) == (True, True)
    assert said[0].startswith("Not imported: readme.md: ")
    qtbot.waitUntil(lambda: len(installed) == 2, timeout=120000)
    qtbot.waitUntil(lambda: len(_rows(window)) == 3, timeout=30000)
    assert {r[0] for r in _rows(window)} >= {"UNet 2D Nuclei Broad", "Fixed-shape"}


def test_images_dropped_on_the_batch_page_become_its_inputs(
    window: MainWindow, qtbot: Any, tmp_path: Path
) -> None:
    from zoodesk.demo import demo_image_paths

    folder = tmp_path / "plate"
    folder.mkdir()
    images = demo_image_paths()[:2]
    for image in images:
        shutil.copy(image, folder / image.name)
    single = tmp_path / images[0].name
    shutil.copy(images[0], single)
    batch = window.batch_page
    with qtbot.waitSignal(batch.scan_finished, timeout=60000):
        assert _drop(batch, [folder, single]) == (True, True)
    listed = [batch.inputs_list.item(i).text() for i in range(batch.inputs_list.count())]
    assert listed == [str(folder), str(single)]
    qtbot.waitUntil(lambda: batch.table.rowCount() == 3, timeout=30000)
