"""The batch page never shows what is left over from before: counts, problems,
progress; its set-up is locked during a run; times are local."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from tests.gui.helpers import table_column
from zoodesk.gui.batch import COL_FILE, COL_FIT, COL_STATUS, COL_TIME, TAB_PROBLEMS
from zoodesk.gui.main_window import MainWindow


@pytest.fixture
def india_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This computer's clock is on India time (UTC+05:30, no daylight saving)."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _folder_with(window: MainWindow, folder: Path, broken: bool) -> Path:
    shutil.copytree(window.services.demo_images_dir(), folder)
    if broken:
        (folder / "broken.tif").write_bytes(b"this is not a TIFF file")
    return folder


def _use(qtbot: Any, window: MainWindow, folder: Path, output: Path) -> None:
    batch = window.batch_page
    qtbot.mouseClick(batch.samples_button, Qt.MouseButton.LeftButton)
    batch.inputs_list.selectAll()
    qtbot.mouseClick(batch.remove_button, Qt.MouseButton.LeftButton)
    batch.add_inputs([folder])
    qtbot.waitUntil(
        lambda: batch.package is not None and not batch.scanning and batch.table.rowCount() > 0,
        timeout=60000,
    )
    batch.output_edit.setText(str(output))


def _run(qtbot: Any, batch: Any) -> Any:
    with qtbot.waitSignal(batch.run_finished, timeout=120000) as finished:
        qtbot.mouseClick(batch.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not batch.running, timeout=30000)
    return finished.args[0]


def test_counts_problems_and_progress_are_never_stale(
    window: MainWindow, qtbot: Any, tmp_path: Path, india_time: None
) -> None:
    batch = window.batch_page
    # Before any run: no "0 of 100 files".
    assert not batch.overall_bar.isTextVisible()
    assert not batch.file_bar.isTextVisible()
    _use(qtbot, window, _folder_with(window, tmp_path / "bad", broken=True), tmp_path / "o1")
    assert not batch.overall_bar.isTextVisible()
    # The file the table flags is listed under Problems before the run.
    row = table_column(batch.table, COL_FILE).index("broken.tif")
    assert batch.table.item(row, COL_FIT).foreground().color() == Qt.GlobalColor.red
    assert batch.side_tabs.tabText(TAB_PROBLEMS) == "Problems (1)"
    assert batch.failures_list.count() == 1
    assert "broken.tif" in batch.failures_list.item(0).text()

    record = _run(qtbot, batch)
    assert batch.side_tabs.tabText(TAB_PROBLEMS) == "Problems (1)"
    assert batch.overall_bar.isTextVisible()
    assert batch.overall_bar.text() == "4 of 4 files"
    assert batch.status_label.text() == "Finished: 3 done, 1 failed."
    assert "finishing" not in batch.progress_label.text()
    assert "processed in" in batch.progress_label.text()
    # One click opens the results; the status bar says where the outputs are.
    assert batch.results_button.isEnabled() and batch.results_button.isDefault()
    assert str(tmp_path / "o1") in window.statusBar().currentMessage()
    # Times are this computer's: the record's UTC time plus 5:30.
    entry = next(f for f in record.files if f.status == "ok")
    row = batch.row_of(Path(entry.input))
    utc = datetime.fromisoformat(entry.finished).astimezone(UTC)
    local = (utc + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%d %H:%M:%S")
    assert batch.table.item(row, COL_TIME).toolTip() == f"finished {local}"

    # A clean folder: no problem count is left, before or after its run.
    _use(qtbot, window, _folder_with(window, tmp_path / "good", broken=False), tmp_path / "o2")
    assert batch.side_tabs.tabText(TAB_PROBLEMS) == "Problems"
    assert batch.failures_list.count() == 0
    assert not batch.overall_bar.isTextVisible()
    _run(qtbot, batch)
    assert batch.side_tabs.tabText(TAB_PROBLEMS) == "Problems"
    assert batch.failures_list.count() == 0
    assert batch.overall_bar.text() == "3 of 3 files"
    assert table_column(batch.table, COL_STATUS) == ["done"] * 3


def test_inputs_output_and_model_are_locked_during_a_run(
    window: MainWindow, qtbot: Any, tmp_path: Path
) -> None:
    batch = window.batch_page
    _use(qtbot, window, _folder_with(window, tmp_path / "in", broken=False), tmp_path / "out")
    locked = [
        batch.model_combo,
        batch.inputs_list,
        batch.add_folder_button,
        batch.add_files_button,
        batch.remove_button,
        batch.samples_button,
        batch.patterns_edit,
        batch.scenes_edit,
        batch.recursive_check,
        batch.axes_edit,
        batch.channel_spin,
        batch.device_combo,
        batch.cluster_combo,
        batch.output_edit,
        batch.output_folder.browse_button,
        batch.overwrite_check,
        batch.objects_box,
    ]
    during: dict[str, Any] = {}

    def on_running(running: bool) -> None:
        if running:
            during["enabled"] = [w for w in locked if w.isEnabled()]
            during["actions"] = [
                batch.action_add_folder.isEnabled(),
                batch.action_samples.isEnabled(),
            ]
            # A folder added now (a drop, say) is not taken.
            batch.add_inputs([tmp_path])

    batch.running_changed.connect(on_running)
    record = _run(qtbot, batch)
    assert during["enabled"] == []
    assert during["actions"] == [False, False]
    assert batch.inputs() == [tmp_path / "in"]
    assert len(record.files) == 3
    assert all(w.isEnabled() for w in locked)
