"""Starting the application, its settings dialog, logging and appearance."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication, QMessageBox

from zoodesk.gui.main_window import PAGE_BATCH, PAGE_LIBRARY, PAGE_RESULTS, MainWindow


def test_zoodesk_without_arguments_opens_the_window_and_reports_when_shown(
    isolated_home: Path,
) -> None:
    env = {**os.environ, "ZOODESK_EXIT_AFTER_SHOWN": "1", "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run(
        [sys.executable, "-c", "import sys, zoodesk.cli; sys.exit(zoodesk.cli.main([]))"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    match = re.fullmatch(r"zoodesk-gui-shown (\d+\.\d{3})", lines[0])
    assert match, lines[0]
    assert 0 < float(match.group(1)) < 60
    # The log file was set up in the data folder.
    assert (isolated_home / "logs" / "zoodesk.log").is_file()


def test_main_window_pages_shortcuts_and_title(window: MainWindow, qtbot: Any) -> None:
    assert window.windowTitle() == "ZooDesk"
    assert [window.nav.item(i).text() for i in range(window.nav.count())] == [
        "Models",
        "Batch run",
        "Results",
    ]
    assert window.pages.currentIndex() == PAGE_LIBRARY
    shortcuts = {
        a.text().replace("&", ""): a.shortcut().toString()
        for menu in window.menuBar().findChildren(type(window.menuBar().addMenu("x")))
        for a in menu.actions()
        if not a.shortcut().isEmpty()
    }
    assert shortcuts["Start run"] == "Ctrl+R"
    assert shortcuts["Cancel run"] == "Ctrl+."
    assert shortcuts["Import model folder…"] == "Ctrl+I"
    assert shortcuts["Open run results…"] == "Ctrl+O"
    assert shortcuts["Settings…"] == "Ctrl+,"
    assert shortcuts["Batch run"] == "Ctrl+2"
    window.show_page(PAGE_BATCH)
    assert window.pages.currentWidget() is window.batch_page
    window.show_page(PAGE_RESULTS)
    assert window.pages.currentWidget() is window.results_page
    assert not window.nav.item(0).icon().isNull()


def test_settings_dialog_saves_the_settings(
    window: MainWindow, qtbot: Any, isolated_home: Path, tmp_path: Path
) -> None:
    from zoodesk.gui.settings_dialog import SettingsDialog

    window.action_settings.trigger()
    dialog = window.findChild(SettingsDialog)
    assert dialog is not None and dialog.isVisible()
    assert dialog.network_check.isChecked()
    dialog.cache_edit.setText(str(tmp_path / "cache"))
    dialog.network_check.setChecked(False)
    assert not dialog.proxy_edit.isEnabled()
    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cpu"))
    dialog.threads_spin.setValue(2)
    with qtbot.waitSignal(window.library_page.library_changed, timeout=30000):
        dialog.accept()
    saved = json.loads((isolated_home / "settings.json").read_text(encoding="utf-8"))
    assert saved["network_enabled"] is False
    assert saved["device"] == "cpu"
    assert saved["threads"] == 2
    assert saved["cache_dir"] == str(tmp_path / "cache")
    assert window.services.settings.threads == 2
    assert window.services.threads == 2
    assert "Settings saved" in window.statusBar().currentMessage()


def test_network_off_means_the_catalogue_is_not_refreshed(
    window: MainWindow, qtbot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.services.settings = window.services.settings.with_changes(network_enabled=False)
    told: list[str] = []
    monkeypatch.setattr(
        QMessageBox, "information", staticmethod(lambda _p, title, text: told.append(title))
    )
    window.library_page.action_refresh_catalogue.trigger()
    assert told == ["Network is off"]
    assert "catalogue" not in " ".join(w.name for w in window.runner.active)
    assert not window.library_page.busy


def test_appearance_follows_the_colour_scheme(qtbot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QPalette

    from zoodesk.gui import _style

    app = QApplication.instance()
    assert isinstance(app, QApplication)
    original = app.palette()
    scheme = {"dark": True}
    # The offscreen platform has no colour scheme of its own: stand in for the system.
    monkeypatch.setattr(_style, "is_dark", lambda: scheme["dark"])
    hints = QApplication.styleHints()
    try:
        _style.follow_system_appearance(app)
        dark = app.palette().color(QPalette.ColorRole.Window).lightness()
        scheme["dark"] = False
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
        light = app.palette().color(QPalette.ColorRole.Window).lightness()
    finally:
        app.setPalette(original)
    assert dark < 100 < light
