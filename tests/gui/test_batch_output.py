"""The batch page's output folder: it follows the inputs unless chosen by hand, and a
folder holding another run is never written into without asking."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from zoodesk.gui.main_window import MainWindow


def _scanned(qtbot: Any, batch: Any) -> None:
    qtbot.waitUntil(
        lambda: batch.package is not None and not batch.scanning and batch.table.rowCount() > 0,
        timeout=60000,
    )


def _remove_all_inputs(qtbot: Any, batch: Any) -> None:
    batch.inputs_list.selectAll()
    qtbot.mouseClick(batch.remove_button, Qt.MouseButton.LeftButton)


def _output(batch: Any) -> Path:
    return Path(batch.output_edit.text())


@pytest.fixture
def images(tmp_path: Path, window: MainWindow) -> dict[str, Path]:
    """Two folders of the sample images: ``plate_a`` (three) and ``plate_b`` (one)."""
    samples = window.services.demo_images_dir()
    a = tmp_path / "plate_a"
    shutil.copytree(samples, a)
    b = tmp_path / "plate_b"
    b.mkdir()
    shutil.copy(samples / "nuclei_plain.tif", b / "other.tif")
    return {"a": a, "b": b, "samples": samples}


def test_the_output_folder_follows_the_inputs(
    window: MainWindow, qtbot: Any, images: dict[str, Path]
) -> None:
    batch = window.batch_page
    qtbot.mouseClick(batch.samples_button, Qt.MouseButton.LeftButton)
    _scanned(qtbot, batch)
    results = window.services.settings.home / "results"
    assert _output(batch).parent == results
    assert _output(batch).name.startswith("samples-")
    # Removing the samples and adding a folder: the output goes with the folder.
    _remove_all_inputs(qtbot, batch)
    assert batch.output_edit.text() == ""
    batch.add_inputs([images["a"]])
    assert _output(batch).parent == images["a"].parent
    assert _output(batch).name.startswith("plate_a-zoodesk-")
    # A second folder does not move it; removing the first one does.
    batch.add_inputs([images["b"]])
    assert _output(batch).name.startswith("plate_a-zoodesk-")
    batch.inputs_list.item(0).setSelected(True)
    qtbot.mouseClick(batch.remove_button, Qt.MouseButton.LeftButton)
    assert _output(batch).name.startswith("plate_b-zoodesk-")
    # The samples' results never go next to the real images.
    qtbot.mouseClick(batch.samples_button, Qt.MouseButton.LeftButton)
    assert _output(batch).parent == results


def test_a_folder_chosen_by_hand_stays(
    window: MainWindow,
    qtbot: Any,
    images: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = window.batch_page
    batch.add_inputs([images["a"]])
    typed = tmp_path / "typed"
    batch.output_edit.clear()
    qtbot.keyClicks(batch.output_edit, str(typed))
    batch.add_inputs([images["b"]])
    _remove_all_inputs(qtbot, batch)
    batch.add_inputs([images["b"]])
    assert _output(batch) == typed
    browsed = tmp_path / "browsed"
    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(browsed))
    )
    qtbot.mouseClick(batch.output_folder.browse_button, Qt.MouseButton.LeftButton)
    _remove_all_inputs(qtbot, batch)
    batch.add_inputs([images["a"]])
    assert _output(batch) == browsed
    # An emptied field follows the inputs again.
    batch.output_edit.clear()
    batch.add_inputs([images["b"]])
    assert _output(batch).name.startswith("plate_a-zoodesk-")


def _start(qtbot: Any, batch: Any) -> None:
    qtbot.waitUntil(lambda: batch.start_button.isEnabled(), timeout=60000)
    qtbot.mouseClick(batch.start_button, Qt.MouseButton.LeftButton)


def _run(qtbot: Any, batch: Any) -> Any:
    with qtbot.waitSignal(batch.run_finished, timeout=120000) as finished:
        _start(qtbot, batch)
    qtbot.waitUntil(lambda: not batch.running, timeout=30000)
    return finished.args[0]


def _asked(qtbot: Any, batch: Any) -> Any:
    qtbot.waitUntil(lambda: batch.earlier_dialog is not None, timeout=30000)
    dialog = batch.earlier_dialog
    qtbot.waitUntil(dialog.isVisible)
    return dialog


def _plate_a_into(qtbot: Any, batch: Any, images: dict[str, Path], out: Path) -> None:
    """The sample model (chosen by the samples button), the inputs of ``plate_a`` only,
    and ``out`` typed as the output folder."""
    qtbot.mouseClick(batch.samples_button, Qt.MouseButton.LeftButton)
    _remove_all_inputs(qtbot, batch)
    batch.add_inputs([images["a"]])
    _scanned(qtbot, batch)
    batch.output_edit.setText(str(out))


def _inputs_in_record(folder: Path) -> list[str]:
    record = json.loads((folder / "zoodesk-run.json").read_text(encoding="utf-8"))
    return sorted(Path(f["input"]).name for f in record["files"])


def test_a_run_into_another_runs_folder_asks_new_folder_or_add(
    window: MainWindow, qtbot: Any, images: dict[str, Path], tmp_path: Path
) -> None:
    batch = window.batch_page
    out = tmp_path / "out"
    _plate_a_into(qtbot, batch, images, out)
    first = _run(qtbot, batch)
    assert first.status == "finished"
    # The same inputs again: a resume, without a question.
    again = _run(qtbot, batch)
    assert [f.status for f in again.files] == ["skipped"] * 3
    assert batch.earlier_dialog is None
    record_before = (out / "zoodesk-run.json").read_bytes()

    # Other inputs into that folder: asked; Cancel starts nothing.
    _remove_all_inputs(qtbot, batch)
    batch.add_inputs([images["b"]])
    _scanned(qtbot, batch)
    batch.output_edit.setText(str(out))
    _start(qtbot, batch)
    dialog = _asked(qtbot, batch)
    assert "demo blob detector" in dialog.text()
    assert "3 of them are not among this run's inputs" in dialog.informativeText()
    assert dialog.add_button.isVisible()
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: batch.earlier_dialog is None)
    assert batch.status_label.text().startswith("Not started")
    assert not batch.running
    assert (out / "zoodesk-run.json").read_bytes() == record_before

    # New folder: the run goes beside it; the earlier record is untouched.
    with qtbot.waitSignal(batch.run_finished, timeout=120000) as finished:
        _start(qtbot, batch)
        qtbot.mouseClick(_asked(qtbot, batch).new_button, Qt.MouseButton.LeftButton)
    assert finished.args[0].path.parent == tmp_path / "out-2"
    assert _output(batch) == tmp_path / "out-2"
    assert _inputs_in_record(tmp_path / "out-2") == ["other.tif"]
    assert (out / "zoodesk-run.json").read_bytes() == record_before
    qtbot.waitUntil(lambda: not batch.running, timeout=30000)

    # Add to that run: its record keeps the earlier images, as done earlier.
    batch.output_edit.setText(str(out))
    with qtbot.waitSignal(batch.run_finished, timeout=120000) as finished:
        _start(qtbot, batch)
        qtbot.mouseClick(_asked(qtbot, batch).add_button, Qt.MouseButton.LeftButton)
    statuses = {Path(f.input).name: f.status for f in finished.args[0].files}
    assert statuses == {
        "other.tif": "ok",
        "nuclei_large.ome.tif": "skipped",
        "nuclei_plain.tif": "skipped",
        "nuclei_small.ome.tif": "skipped",
    }
    assert _inputs_in_record(out) == sorted(statuses)


def test_another_set_up_is_not_offered_to_add_to(
    window: MainWindow, qtbot: Any, images: dict[str, Path], tmp_path: Path
) -> None:
    batch = window.batch_page
    out = tmp_path / "out"
    _plate_a_into(qtbot, batch, images, out)
    _run(qtbot, batch)
    record_before = (out / "zoodesk-run.json").read_bytes()
    batch.channel_spin.setValue(0)
    _scanned(qtbot, batch)
    _start(qtbot, batch)
    dialog = _asked(qtbot, batch)
    assert not dialog.add_button.isVisible()
    assert "different Channel" in dialog.informativeText()
    assert "Redo files already done" in dialog.informativeText()
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: batch.earlier_dialog is None)
    assert (out / "zoodesk-run.json").read_bytes() == record_before
    # Redoing every image there with the new set-up is a choice made on the page.
    batch.overwrite_check.setChecked(True)
    record = _run(qtbot, batch)
    assert [f.status for f in record.files] == ["ok"] * 3
    assert record.parameters["channels"] == [0]
