"""The batch page: inputs, preview, run, cancel, resume, responsiveness, closing."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QMessageBox

from tests.gui.helpers import import_nuclei, table_column, use_model
from zoodesk.gui.batch import COL_AXES, COL_FILE, COL_FIT, COL_SHAPE, COL_STATUS
from zoodesk.gui.main_window import PAGE_RESULTS, MainWindow


def _try_samples(window: MainWindow, qtbot: Any, output: Path) -> None:
    batch = window.batch_page
    qtbot.mouseClick(batch.samples_button, Qt.MouseButton.LeftButton)
    # The model loads while the files are listed; the list is made again once it has.
    qtbot.waitUntil(
        lambda: batch.package is not None and not batch.scanning and batch.table.rowCount() > 0,
        timeout=60000,
    )
    batch.output_edit.setText(str(output))


def _record(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "zoodesk-run.json").read_text(encoding="utf-8"))


def test_sample_images_run_with_the_demo_model(
    window: MainWindow, qtbot: Any, tmp_path: Path
) -> None:
    batch = window.batch_page
    output = tmp_path / "results"
    _try_samples(window, qtbot, output)
    assert table_column(batch.table, COL_FILE) == [
        "nuclei_large.ome.tif",
        "nuclei_plain.tif",
        "nuclei_small.ome.tif",
    ]
    assert table_column(batch.table, COL_AXES) == ["YX", "YX", "YX"]
    assert table_column(batch.table, COL_SHAPE) == ["700 × 500", "250 × 330", "300 × 400"]
    assert table_column(batch.table, COL_FIT) == ["Y, X → model's y, x"] * 3
    assert "3 file(s) found, 3 fit the model" in batch.files_label.text()
    assert "channel: 1 channel (raw_intensity)" in batch.expect_label.text()
    assert batch.start_button.isEnabled()

    with qtbot.waitSignal(batch.run_finished, timeout=120000) as finished:
        qtbot.mouseClick(batch.start_button, Qt.MouseButton.LeftButton)
    record = finished.args[0]
    assert record.status == "finished"
    assert table_column(batch.table, COL_STATUS) == ["done", "done", "done"]
    assert batch.status_label.text() == "Finished: 3 done."
    assert batch.overall_bar.value() == 3
    assert "Runs on: CPU (cpu)" in batch.device_label.text()
    written = sorted(p.name for p in output.glob("*.ome.tif"))
    assert written == sorted(
        f"{stem}_{out}.ome.tif"
        for stem in ("nuclei_large", "nuclei_plain", "nuclei_small")
        for out in ("probability", "mask")
    )
    assert [f["status"] for f in _record(output)["files"]] == ["ok", "ok", "ok"]
    # The results page shows the finished run.
    results = window.results_page
    qtbot.waitUntil(lambda: results.record is not None, timeout=10000)
    assert results.table.rowCount() == 3
    qtbot.waitUntil(lambda: not batch.running)
    assert batch.results_button.isEnabled()
    with qtbot.waitSignal(results.image_shown, timeout=30000):
        qtbot.mouseClick(batch.results_button, Qt.MouseButton.LeftButton)
    assert window.pages.currentIndex() == PAGE_RESULTS


def test_a_bad_file_is_listed_and_does_not_stop_the_rest(
    window: MainWindow, qtbot: Any, tmp_path: Path
) -> None:
    batch = window.batch_page
    folder = tmp_path / "images"
    shutil.copytree(window.services.demo_images_dir(), folder)
    (folder / "broken.tif").write_bytes(b"this is not a TIFF file")
    _try_samples(window, qtbot, tmp_path / "unused")
    batch.inputs_list.clear()
    batch.output_edit.setText(str(tmp_path / "out"))
    with qtbot.waitSignal(batch.scan_finished, timeout=60000):
        batch.add_inputs([folder])
    assert "1 with problems" in batch.files_label.text()
    row = table_column(batch.table, COL_FILE).index("broken.tif")
    assert "broken.tif" in batch.table.item(row, COL_FIT).text()

    with qtbot.waitSignal(batch.run_finished, timeout=120000):
        batch.action_start.trigger()
    statuses = table_column(batch.table, COL_STATUS)
    assert statuses[row] == "failed"
    assert statuses.count("done") == 3
    assert batch.failures_list.count() == 1
    assert "broken.tif" in batch.failures_list.item(0).text()
    assert batch.side_tabs.tabText(1) == "Problems (1)"
    assert batch.status_label.text() == "Finished: 3 done, 1 failed."


def test_preview_shows_the_output_over_the_input(
    window: MainWindow, qtbot: Any, tmp_path: Path
) -> None:
    batch = window.batch_page
    _try_samples(window, qtbot, tmp_path / "out")
    batch.table.selectRow(0)
    with qtbot.waitSignal(batch.preview_shown, timeout=60000) as shown:
        qtbot.mouseClick(batch.preview_button, Qt.MouseButton.LeftButton)
    result = shown.args[0]
    assert result.region == (94, 0, 512, 500)  # rows 94..606 of 700: centred, 512 high
    assert batch.view.picture_size == (512, 500)
    assert [batch.output_combo.itemData(i) for i in range(batch.output_combo.count())] == [
        "probability",
        "mask",
    ]
    assert "ran on cpu" in batch.preview_label.text()
    assert "Y, X → model's y, x" in batch.preview_label.text()
    assert "->" not in batch.preview_label.text()
    # Selecting a region on the picture previews that region.
    with qtbot.waitSignal(batch.preview_shown, timeout=60000) as shown:
        batch.view.region_selected.emit(10, 20, 100, 120)
    assert shown.args[0].region == (94 + 10, 20, 100, 120)  # relative to the last preview
    assert batch.view.picture_size == (100, 120)
    # Nothing was written by the preview.
    assert not (tmp_path / "out").exists()


def _cancel_after_first_file(qtbot: Any, batch: Any) -> None:
    def on_event(event: Any) -> None:
        if type(event).__name__ == "FileFinished":
            batch.cancel_button.click()

    # The run starts once the output folder is checked.
    qtbot.waitUntil(lambda: batch._run is not None, timeout=30000)
    batch._run.signals.yielded.connect(on_event)


def test_cancel_then_resume(
    window: MainWindow,
    qtbot: Any,
    tmp_path: Path,
    plate: Path,
    nuclei_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    item_id = import_nuclei(qtbot, window, nuclei_dir, monkeypatch)
    use_model(qtbot, window, item_id)
    batch = window.batch_page
    output = tmp_path / "plate-out"
    with qtbot.waitSignal(batch.scan_finished, timeout=60000):
        batch.add_inputs([plate])
    batch.output_edit.setText(str(output))
    assert not batch.resume_button.isEnabled()

    with qtbot.waitSignal(batch.run_finished, timeout=120000) as finished:
        qtbot.mouseClick(batch.start_button, Qt.MouseButton.LeftButton)
        _cancel_after_first_file(qtbot, batch)
    record = finished.args[0]
    assert record.status == "cancelled"
    statuses = [f.status for f in record.files]
    assert statuses[0] == "ok"
    assert "not done" in statuses
    assert set(statuses) <= {"ok", "not done"}
    on_disk = _record(output)
    assert on_disk["status"] == "cancelled"
    assert [f["status"] for f in on_disk["files"]] == statuses
    assert batch.status_label.text().startswith("Cancelled:")
    assert "not done" in batch.status_label.text()
    # The bar and the status line count the same files.
    done = statuses.count("ok")
    assert f"{done} done" in batch.status_label.text()
    assert batch.overall_bar.text() == f"{done} of 6 files"
    assert "not done" in table_column(batch.table, COL_STATUS)
    qtbot.waitUntil(lambda: not batch.running)
    assert batch.resume_button.isEnabled()

    with qtbot.waitSignal(batch.run_finished, timeout=120000) as finished:
        qtbot.mouseClick(batch.resume_button, Qt.MouseButton.LeftButton)
    record = finished.args[0]
    assert record.status == "finished"
    done_before = statuses.count("ok")
    assert [f.status for f in record.files].count("skipped") == done_before
    assert all(f.status in ("ok", "skipped") for f in record.files)
    assert table_column(batch.table, COL_STATUS).count("done earlier") == done_before
    assert len(list(output.glob("*_probability.ome.tif"))) == 6


def test_window_stays_responsive_during_a_run(
    window: MainWindow,
    qtbot: Any,
    tmp_path: Path,
    plate: Path,
    nuclei_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    item_id = import_nuclei(qtbot, window, nuclei_dir, monkeypatch)
    use_model(qtbot, window, item_id)
    batch = window.batch_page
    with qtbot.waitSignal(batch.scan_finished, timeout=60000):
        batch.add_inputs([plate])
    batch.output_edit.setText(str(tmp_path / "out"))
    ticks = {"n": 0, "while_running": 0}
    progress_seen: set[int] = set()

    def tick() -> None:
        ticks["n"] += 1
        if batch.running:
            ticks["while_running"] += 1
            progress_seen.add(batch.overall_bar.value())

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(tick)
    timer.start()
    started = time.monotonic()
    with qtbot.waitSignal(batch.run_finished, timeout=180000):
        batch.action_start.trigger()
    elapsed = time.monotonic() - started
    timer.stop()
    # A 20 ms timer fires throughout the run (a blocked event loop would let it fire
    # hardly at all), and it sees the progress bar move file by file.
    assert elapsed > 0.5
    assert ticks["while_running"] >= 0.1 * elapsed / 0.02
    assert len(progress_seen) >= 3
    assert batch.overall_bar.value() == 6


@pytest.mark.parametrize("answer", ["yes", "no"])
def test_closing_during_a_run_asks_first(
    window: MainWindow,
    qtbot: Any,
    tmp_path: Path,
    plate: Path,
    nuclei_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
) -> None:
    item_id = import_nuclei(qtbot, window, nuclei_dir, monkeypatch)
    use_model(qtbot, window, item_id)
    batch = window.batch_page
    output = tmp_path / "out"
    with qtbot.waitSignal(batch.scan_finished, timeout=60000):
        batch.add_inputs([plate])
    batch.output_edit.setText(str(output))
    asked: list[str] = []
    button = QMessageBox.StandardButton.Yes if answer == "yes" else QMessageBox.StandardButton.No

    def question(_parent: Any, title: str, *a: Any) -> QMessageBox.StandardButton:
        asked.append(title)
        return button

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    batch.action_start.trigger()
    qtbot.waitUntil(lambda: batch.overall_bar.value() >= 1, timeout=60000)
    window.close()
    assert asked == ["A run is in progress"]
    if answer == "no":
        assert window.isVisible()
        assert batch.running
        batch.cancel_run()
    qtbot.waitUntil(lambda: not batch.running, timeout=60000)
    record = _record(output)
    assert record["status"] == "cancelled"
    assert "not done" in [f["status"] for f in record["files"]]
    if answer == "yes":
        qtbot.waitUntil(lambda: not window.isVisible(), timeout=10000)
    else:
        assert window.isVisible()


def test_each_scene_of_a_microscope_file_is_a_row_with_its_pixel_size(
    window: MainWindow, qtbot: Any
) -> None:
    from tests.conftest import SHARED
    from zoodesk.gui.batch import COL_PIXEL

    czi = SHARED / "sample-images" / "czi" / "S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi"
    batch = window.batch_page
    batch.add_inputs([czi])
    qtbot.waitUntil(lambda: not batch.scanning and batch.table.rowCount() == 3, timeout=60000)
    names = [f"{czi.name}[{scene}]" for scene in ("TR1", "P1", "TR2")]
    assert table_column(batch.table, COL_FILE) == names
    assert table_column(batch.table, COL_SHAPE)[1] == "2 × 2 × 3 × 64 × 64"
    assert table_column(batch.table, COL_PIXEL) == ["1.6 µm, z 1 µm"] * 3
    assert "format: czi" in batch.table.item(0, COL_FILE).toolTip()
    # Run events find the row of their scene.
    # (the runner names inputs by their resolved path, as the scan does)
    found = [batch.row_of(czi.resolve(), scene) for scene in ("TR1", "P1", "TR2")]
    assert found == [0, 1, 2]
    # Selecting a scene shows that scene (P1 is 64 x 64, TR1 122 x 295).
    batch.table.selectRow(1)
    qtbot.waitUntil(lambda: batch.view.picture_size == (64, 64), timeout=30000)
    # The scene filter keeps the matching scenes only.
    batch.scenes_edit.setText("tr*")
    batch.scenes_edit.editingFinished.emit()
    qtbot.waitUntil(lambda: not batch.scanning and batch.table.rowCount() == 2, timeout=60000)
    assert table_column(batch.table, COL_FILE) == [names[0], names[2]]
