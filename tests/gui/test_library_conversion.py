"""Conversion in the desktop application: what the list says, the consent dialog, one click."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from tests.conftest import SHARED
from tests.gui.test_library import _rows
from zoodesk.gui.main_window import MainWindow
from zoodesk.models.cache import ModelCache

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.torch,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("torch") is None, reason="needs torch: the convert extra"
    ),
]


@pytest.fixture
def state_dict_package(tmp_path: Path) -> Path:
    out = tmp_path / "packages"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "conversion_packages.py"),
            str(out),
            "--kind",
            "state-dict",
        ],
        check=True,
        timeout=600,
    )
    return out / "state-dict"


def test_the_list_tells_and_one_click_converts_with_consent(
    window: MainWindow, qtbot: Any, state_dict_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ModelCache.from_settings()
    tiny = cache.import_package(state_dict_package)
    cache.import_package(SHARED / "zoo-models" / "unet2d_fixed_shape")
    library = window.library_page
    with qtbot.waitSignal(library.library_changed, timeout=30000):
        library.refresh()
    rows = {name: verdict for name, _origin, verdict in _rows(window)}
    assert rows["tiny state-dict"] == "converts here"
    # Its architecture file is missing: the list says so before anything is loaded.
    assert rows["Fixed-shape"].startswith("cannot run: ")
    assert "unet.py" in rows["Fixed-shape"]

    asked: list[str] = []

    def answer(_parent: Any, _title: str, text: str, *args: Any) -> QMessageBox.StandardButton:
        asked.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", answer)
    assert library.select_item(f"cache:{tiny.key}")
    qtbot.waitUntil(lambda: library.convert_button.isEnabled(), timeout=30000)
    qtbot.mouseClick(library.convert_button, Qt.MouseButton.LeftButton)
    # The consent dialog names the code that would run.
    assert len(asked) == 1 and str(tiny.root / "tiny_nets.py") in asked[0]
    qtbot.waitUntil(
        lambda: ("tiny state-dict", "installed", "runs") in _rows(window), timeout=180000
    )
    assert "the model's test passed on cpu" in library.task_label.text()

    # Another model: the status line no longer speaks of the conversion.
    fixed = next(m for m in cache.list() if m.name == "Fixed-shape")
    assert library.select_item(f"cache:{fixed.key}")
    assert "Converted" not in library.task_label.text()
    qtbot.waitUntil(lambda: library._package is not None, timeout=30000)
    assert not library.convert_button.isVisible() or not library.convert_button.isEnabled()
