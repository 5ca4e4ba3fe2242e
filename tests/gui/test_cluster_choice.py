"""The batch page runs on a Dask cluster when asked: the choice, the run, its record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from tests.gui.helpers import import_nuclei, table_column, use_model
from zoodesk.gui.batch import COL_STATUS
from zoodesk.gui.main_window import MainWindow

pytest.importorskip("distributed")


def test_the_cluster_setting_is_offered_first(window: MainWindow) -> None:
    services = window.batch_page.services
    services.settings = services.settings.with_changes(cluster="tcp://scheduler")
    window.batch_page.fill_cluster_choices()
    combo = window.batch_page.cluster_combo
    assert combo.currentData() == "tcp://scheduler:8786"
    assert combo.currentText() == "Cluster tcp://scheduler:8786"
    assert "" in [combo.itemData(i) for i in range(combo.count())]


def test_a_batch_runs_on_two_local_worker_processes(
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
    folder = tmp_path / "few"
    folder.mkdir()
    for name in sorted(p.name for p in plate.iterdir())[:3]:
        shutil.copy(plate / name, folder / name)
    with qtbot.waitSignal(batch.scan_finished, timeout=60000):
        batch.add_inputs([folder])
    output = tmp_path / "out"
    batch.output_edit.setText(str(output))
    services = batch.services
    services.settings = services.settings.with_changes(cluster="local:2")
    batch.fill_cluster_choices()
    assert batch.cluster_combo.currentData() == "local:2"
    with qtbot.waitSignal(batch.run_finished, timeout=240000) as finished:
        qtbot.mouseClick(batch.start_button, Qt.MouseButton.LeftButton)
    record = finished.args[0]
    assert record.status == "finished"
    assert [f.status for f in record.files] == ["ok"] * 3
    assert table_column(batch.table, COL_STATUS) == ["done"] * 3
    assert "the cluster tcp://127.0.0.1:" in batch.device_label.text()
    on_disk = json.loads((output / "zoodesk-run.json").read_text(encoding="utf-8"))
    workers = {f["worker"]["address"] for f in on_disk["files"]}
    assert workers <= set(on_disk["device"]["cluster"]["workers"])
    assert all(f["worker"]["device"] == "cpu" for f in on_disk["files"])
