"""PyInstaller hook for the desktop application (``zoodesk.gui``).

PySide6's own hooks collect the Qt libraries and plugins of the Qt modules that the
GUI imports.  This hook names the three modules the application needs, so that the
bundle carries Qt even where a GUI module imports it lazily, and collects the plugin
types a workstation needs to show a window: ``platforms`` (xcb and wayland on a
Linux desktop, offscreen for headless checks, windows, cocoa), ``platformthemes``,
``styles``, ``imageformats`` and ``iconengines`` (the window icon), and the xcb GL
integrations.
"""

from __future__ import annotations

from pathlib import Path

from PyInstaller.utils.hooks import can_import_module
from PyInstaller.utils.hooks.qt import pyside6_library_info

#: Qt plugin types that the application needs at run time.
PLUGIN_TYPES = (
    "platforms",
    "platformthemes",
    "styles",
    "imageformats",
    "iconengines",
    "xcbglintegrations",
)

hiddenimports: list[str] = []
binaries: list[tuple[str, str]] = []

if can_import_module("PySide6.QtWidgets"):
    hiddenimports = ["PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets"]
    _plugins_root = Path(pyside6_library_info.location["PluginsPath"])
    for _kind in PLUGIN_TYPES:
        if (_plugins_root / _kind).is_dir():
            binaries += pyside6_library_info.collect_plugins(_kind)
