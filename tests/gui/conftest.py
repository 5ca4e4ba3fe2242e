"""Fixtures for the desktop application's tests: a real window on a temporary home.

Every test gets the main window on services bound to its own ZOODESK_HOME (the
autouse fixture of ``tests/conftest.py``), shown offscreen, with the library
loaded.  At teardown every task is cancelled and waited for, so no worker thread
outlives its test.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("PySide6.QtWidgets")
pytest.importorskip("pytestqt")

from zoodesk.gui.app import create_main_window
from zoodesk.gui.main_window import MainWindow
from zoodesk.gui.services import Services
from zoodesk.settings import load_settings

SNAPSHOT = Path(__file__).resolve().parents[2].parent / "shared" / "zoo-snapshot"
#: Catalogue entries used by the tests: 2D needing conversion, 2D running, 3D unusable.
SNAPSHOT_IDS = ("affable-shark", "nice-peacock", "humorous-owl")


@pytest.fixture
def services(isolated_home: Path) -> Services:
    """The engine on this test's ZOODESK_HOME."""
    return Services(load_settings(), log_file=isolated_home / "logs" / "zoodesk.log")


@pytest.fixture
def window(qtbot: Any, services: Services) -> Iterator[MainWindow]:
    """The main window, shown, with its library loaded."""
    win = create_main_window(services)

    def stop_tasks(widget: MainWindow) -> None:
        # Let the tasks end and their last signals arrive before pytest-qt closes it.
        widget.runner.cancel_all()
        qtbot.waitUntil(lambda: not widget.runner.active, timeout=60000)

    qtbot.addWidget(win, before_close_func=stop_tasks)
    with qtbot.waitSignal(win.library_page.library_changed, timeout=30000):
        win.show()
    yield win
    # A test may end while a task it started (a scan after adding inputs) still runs:
    # every task must stop when cancelled.
    stop_tasks(win)


@pytest.fixture
def saved_catalogue(isolated_home: Path, tmp_path: Path) -> Path:
    """A saved catalogue of three real zoo entries (from the snapshot in ../shared)."""
    from zoodesk.models.catalogue import INDEX_FILE, catalogue_from_snapshot, save_catalogue

    if not (SNAPSHOT / INDEX_FILE).is_file():
        pytest.fail(f"test data missing: {SNAPSHOT}")
    index = json.loads((SNAPSHOT / INDEX_FILE).read_text(encoding="utf-8"))
    wanted = {f"bioimage-io/{n}" for n in SNAPSHOT_IDS}
    index["items"] = [i for i in index["items"] if i["id"] in wanted]
    mini = tmp_path / "snapshot"
    (mini / "rdfs").mkdir(parents=True)
    raw_index = json.dumps(index).encode()
    (mini / INDEX_FILE).write_bytes(raw_index)
    for name in SNAPSHOT_IDS:
        shutil.copy(SNAPSHOT / "rdfs" / f"{name}.json", mini / "rdfs" / f"{name}.json")
    catalogue = catalogue_from_snapshot(mini)
    rdfs = {e.rdf_file: (mini / e.rdf_file).read_bytes() for e in catalogue.entries if e.rdf_file}
    folder = load_settings().catalogue_dir
    save_catalogue(catalogue, folder, raw_index, rdfs)
    return folder


@pytest.fixture
def plate(tmp_path: Path, nuclei_dir: Path) -> Path:
    """A folder of six 1024 x 1024 nuclei images (four 512 blocks each for the nuclei model)."""
    from zoodesk.images import write_ome_tiff

    folder = tmp_path / "plate"
    folder.mkdir()
    base = np.load(nuclei_dir / "test_input.npy")[0, 0]
    for i in range(6):
        image = np.block([[base, np.rot90(base)], [np.rot90(base, 2), np.rot90(base, 3)]])
        scaled = (image / float(image.max()) * (3000 + 100 * i)).astype(np.uint16)
        write_ome_tiff(folder / f"well_{i:02d}.ome.tif", scaled, "YX")
    return folder
