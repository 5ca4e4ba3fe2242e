"""The results page and the export for deposition, driven through their widgets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from tests.gui.helpers import table_column
from zoodesk.gui.main_window import PAGE_RESULTS, MainWindow
from zoodesk.gui.results import COL_PROBLEM


@pytest.fixture
def finished_run(tmp_path: Path, isolated_home: Path) -> Path:
    """A finished run of the demo model over the sample images (made by the engine)."""
    from zoodesk.batch.runner import PredictionRequest, run_prediction
    from zoodesk.demo import demo_images_dir, demo_model_path

    output = tmp_path / "demo-run"
    request = PredictionRequest(
        model=demo_model_path(), inputs=[demo_images_dir()], output_dir=output, device="cpu"
    )
    for _event in run_prediction(request):
        pass
    return output / "zoodesk-run.json"


def _picture(window: MainWindow) -> np.ndarray:
    """The pixels the results view shows, as an (H, W, 3) array."""
    image = window.results_page.view._item.pixmap().toImage()
    image = image.convertToFormat(image.Format.Format_RGB888)
    width, height = image.width(), image.height()
    data = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes())
    rows = data.reshape(height, image.bytesPerLine())[:, : width * 3]
    # A copy: the QImage (and the memory it lends) goes away when this returns.
    return np.array(rows.reshape(height, width, 3))


def test_open_a_finished_run_and_step_through_it(
    window: MainWindow, qtbot: Any, finished_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = window.results_page
    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(finished_run), ""))
    )
    window.show_page(PAGE_RESULTS)
    with qtbot.waitSignal(results.image_shown, timeout=30000) as shown:
        results.action_open.trigger()
    assert shown.args[0] == 0
    assert table_column(results.table, 0) == [
        "nuclei_large.ome.tif",
        "nuclei_plain.tif",
        "nuclei_small.ome.tif",
    ]
    assert table_column(results.table, 1) == ["ok", "ok", "ok"]
    assert table_column(results.table, 2) == ["probability, mask"] * 3
    summary = results.summary_label.text()
    assert "ZooDesk demo blob detector" in summary and "run finished" in summary
    assert "3 ok" in summary
    assert results.view.picture_size == (700, 500)
    assert results.image_label.text() == "nuclei_large.ome.tif: YX 700 × 500"
    assert [results.output_combo.itemData(i) for i in range(results.output_combo.count())] == [
        "",
        "probability",
        "mask",
    ]
    assert results.output_combo.currentData() == "probability"

    # Opacity changes what is drawn; with no overlay the input alone is shown in grey.
    results.opacity_slider.setValue(0)
    plain = _picture(window)
    assert np.array_equal(plain[..., 0], plain[..., 1])
    results.opacity_slider.setValue(100)
    strong = _picture(window)
    assert not np.array_equal(plain, strong)
    results.output_combo.setCurrentIndex(results.output_combo.findData("mask"))
    masked = _picture(window)
    assert not np.array_equal(masked, strong)
    # Contrast limits change the input's grey levels.
    results.output_combo.setCurrentIndex(0)
    before = _picture(window)
    results.high_spin.setValue(results.high_spin.value() * 4)
    assert _picture(window).mean() < before.mean()

    with qtbot.waitSignal(results.image_shown, timeout=30000) as shown:
        results.action_next.trigger()
    assert shown.args[0] == 1
    assert results.view.picture_size == (250, 330)
    with qtbot.waitSignal(results.image_shown, timeout=30000) as shown:
        results.action_previous.trigger()
    assert shown.args[0] == 0


def test_export_for_deposition_remembers_the_study(
    window: MainWindow, qtbot: Any, finished_run: Path, tmp_path: Path
) -> None:
    from zoodesk.gui.export_dialog import ExportDialog

    results = window.results_page
    with qtbot.waitSignal(results.image_shown, timeout=30000):
        results.open_record(finished_run)
    assert results.export_button.isEnabled()
    qtbot.mouseClick(results.export_button, Qt.MouseButton.LeftButton)
    dialog = window.findChild(ExportDialog)
    assert dialog is not None and dialog.isVisible()
    assert dialog.title_edit.text() == ""
    # What the archive requires is asked for, and what is still missing is named.
    assert "title, description, authors" in dialog.required_label.text()
    destination = tmp_path / "deposit"
    dialog.title_edit.setText("Demo blobs in synthetic nuclei")
    dialog.authors_edit.setPlainText("Ada Lovelace | 0000-0002-1825-0097 | Analytical Engines")
    dialog.organism_edit.setText("Homo sapiens")
    assert "missing for the BioImage Archive: description, imaging method, instrument" in (
        dialog.required_label.text()
    )
    dialog.destination_edit.setText(str(destination))
    with qtbot.waitSignal(dialog.export_finished, timeout=120000) as finished:
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    result = finished.args[0]
    assert result is not None
    assert dialog.status_label.text().startswith(f"Exported {result.files} files")
    assert "A draft" in dialog.status_label.text() and "instrument" in dialog.status_label.text()
    assert (destination / "manifest-sha256.txt").is_file()
    assert (destination / "ro-crate-metadata.json").is_file()
    rembi = (destination / "metadata" / "rembi_mifa.yaml").read_text(encoding="utf-8")
    assert "Homo sapiens" in rembi
    qtbot.waitUntil(lambda: dialog.export_button.isEnabled())
    dialog.accept()

    # The next export starts from the same study.
    qtbot.mouseClick(results.export_button, Qt.MouseButton.LeftButton)
    dialogs = [d for d in window.findChildren(ExportDialog) if d.isVisible()]
    assert len(dialogs) == 1
    again = dialogs[0]
    assert again.title_edit.text() == "Demo blobs in synthetic nuclei"
    assert again.authors_edit.toPlainText() == (
        "Ada Lovelace | 0000-0002-1825-0097 | Analytical Engines"
    )
    assert again.organism_edit.text() == "Homo sapiens"
    again.reject()


def test_export_form_errors_are_shown_in_the_dialog(
    window: MainWindow, qtbot: Any, finished_run: Path, tmp_path: Path
) -> None:
    from zoodesk.gui.export_dialog import ExportDialog

    dialog = ExportDialog(window.services, window.runner, finished_run, window)
    qtbot.addWidget(dialog)
    dialog.authors_edit.setPlainText("Ada Lovelace | not-an-orcid")
    dialog.destination_edit.setText(str(tmp_path / "never"))
    dialog.start_export()
    assert "not an ORCID" in dialog.status_label.text()
    assert not (tmp_path / "never").exists()


def test_ome_zarr_outputs_of_each_scene_are_viewed(
    window: MainWindow, qtbot: Any, tmp_path: Path, isolated_home: Path
) -> None:
    """A run over a multi-scene CZI with --format ome-zarr: a row per scene, and the
    OME-Zarr output overlays its scene."""
    from tests.batch_helpers import box_package
    from tests.conftest import SHARED
    from zoodesk.batch.runner import PredictionRequest, run_prediction

    czi = SHARED / "sample-images" / "czi" / "S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi"
    output = tmp_path / "zarr-run"
    request = PredictionRequest(
        model=box_package(tmp_path / "box"),
        inputs=[czi],
        output_dir=output,
        device="cpu",
        channels=[0],
        output_format="ome-zarr",
        settle_seconds=0.0,
    )
    for _event in run_prediction(request):
        pass
    results = window.results_page
    with qtbot.waitSignal(results.image_shown, timeout=30000):
        results.open_record(output / "zoodesk-run.json")
    assert table_column(results.table, 0) == [f"{czi.name}[{s}]" for s in ("TR1", "P1", "TR2")]
    assert table_column(results.table, 1) == ["ok", "ok", "ok"]
    assert results.output_combo.currentData() == "out"
    with qtbot.waitSignal(results.image_shown, timeout=30000) as shown:
        results.action_next.trigger()
    assert shown.args[0] == 1
    assert results.view.picture_size == (64, 64)


def test_a_failed_input_shows_its_problem_first_and_its_path_second(
    window: MainWindow, qtbot: Any, tmp_path: Path, isolated_home: Path
) -> None:
    from zoodesk.batch.runner import PredictionRequest, run_prediction
    from zoodesk.demo import demo_model_path

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    broken = inputs / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\xff" * 64)  # a TIFF header and nothing readable
    request = PredictionRequest(
        model=demo_model_path(), inputs=[inputs], output_dir=tmp_path / "run", device="cpu"
    )
    for _event in run_prediction(request):
        pass
    results = window.results_page
    window.show_page(PAGE_RESULTS)
    results.open_record(tmp_path / "run" / "zoodesk-run.json")
    qtbot.waitUntil(lambda: results.table.rowCount() == 1, timeout=30000)
    cell = results.table.item(0, COL_PROBLEM)
    assert table_column(results.table, 1) == ["failed"]
    assert cell.text() and not cell.text().startswith(str(broken))
    assert cell.text().endswith(str(broken))
    assert str(broken) in cell.toolTip()
