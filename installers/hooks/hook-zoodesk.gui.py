"""PyInstaller hook for the desktop application (``zoodesk.gui``).

Names the three Qt modules the application is built on, so that the bundle carries
Qt even where a GUI module imports it lazily.  Their hooks then collect the Qt
libraries and the plugins a workstation needs to show a window:

- ``PySide6.QtGui`` (``hook-PySide6.QtGui.py`` in this folder): ``platforms``
  (xcb and wayland on Linux desktops, offscreen and minimal for headless runs,
  windows, cocoa), ``platformthemes``, ``imageformats``, ``iconengines``,
  ``platforminputcontexts`` and the xcb GL integrations;
- ``PySide6.QtWidgets`` (PyInstaller's hook): ``styles`` (the native Windows and
  macOS styles; Fusion is built in).

``tests/test_bundle.py`` checks that the platform plugins arrived.
"""

from __future__ import annotations

from PyInstaller.utils.hooks import can_import_module

hiddenimports: list[str] = []
if can_import_module("PySide6.QtWidgets"):
    hiddenimports = ["PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets"]
