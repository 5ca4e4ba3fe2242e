"""Icons from ``resources/icons`` and a light or dark palette that follows the system."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPalette
from PySide6.QtWidgets import QApplication


def icons_dir() -> Path | None:
    """The folder holding the UI icons, in a bundle, an installation or the source tree."""
    candidates = []
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        candidates.append(Path(frozen_root) / "resources" / "icons")
    here = Path(__file__).resolve()
    candidates.append(here.parents[1] / "resources" / "icons")  # zoodesk/resources/icons
    candidates.append(here.parents[3] / "resources" / "icons")  # <repo>/resources/icons
    return next((c for c in candidates if (c / "start.svg").is_file()), None)


@cache
def icon(name: str) -> QIcon:
    """The icon ``<name>.svg`` (or ``.png``); an empty icon when it is missing."""
    folder = icons_dir()
    if folder is None:
        return QIcon()
    for suffix in (".svg", ".png"):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            result = QIcon()
            # The same drawing in every mode: Qt's generated "selected" variant of an
            # SVG is blank on some platforms.
            for mode in (QIcon.Mode.Normal, QIcon.Mode.Selected, QIcon.Mode.Active):
                result.addFile(str(path), QSize(), mode)
            return result
    return QIcon()


def app_icon() -> QIcon:
    """The application icon (drawn for the installers), when present."""
    return icon("zoodesk")


def is_dark() -> bool:
    """True when the system asks for a dark appearance."""
    hints = QGuiApplication.styleHints()
    return bool(hints.colorScheme() == Qt.ColorScheme.Dark)


def _dark_palette() -> QPalette:
    palette = QPalette()
    window, base, text = QColor(37, 40, 44), QColor(28, 30, 33), QColor(225, 228, 232)
    accent = QColor(43, 138, 158)
    for group in (QPalette.ColorGroup.Active, QPalette.ColorGroup.Inactive):
        palette.setColor(group, QPalette.ColorRole.Window, window)
        palette.setColor(group, QPalette.ColorRole.WindowText, text)
        palette.setColor(group, QPalette.ColorRole.Base, base)
        palette.setColor(group, QPalette.ColorRole.AlternateBase, QColor(44, 47, 52))
        palette.setColor(group, QPalette.ColorRole.Text, text)
        palette.setColor(group, QPalette.ColorRole.Button, QColor(50, 54, 59))
        palette.setColor(group, QPalette.ColorRole.ButtonText, text)
        palette.setColor(group, QPalette.ColorRole.Highlight, accent)
        palette.setColor(group, QPalette.ColorRole.HighlightedText, QColor(255, 255, 255))
        palette.setColor(group, QPalette.ColorRole.ToolTipBase, QColor(50, 54, 59))
        palette.setColor(group, QPalette.ColorRole.ToolTipText, text)
        palette.setColor(group, QPalette.ColorRole.PlaceholderText, QColor(140, 145, 150))
        palette.setColor(group, QPalette.ColorRole.Link, QColor(95, 190, 210))
    disabled = QColor(120, 124, 130)
    for role in (
        QPalette.ColorRole.WindowText,
        QPalette.ColorRole.Text,
        QPalette.ColorRole.ButtonText,
    ):
        palette.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return palette


def _light_palette() -> QPalette:
    palette = QApplication.style().standardPalette()
    accent = QColor(43, 138, 158)
    for group in (QPalette.ColorGroup.Active, QPalette.ColorGroup.Inactive):
        palette.setColor(group, QPalette.ColorRole.Highlight, accent)
        palette.setColor(group, QPalette.ColorRole.HighlightedText, QColor(255, 255, 255))
    return palette


def apply_appearance(app: QApplication) -> None:
    """Use the Fusion style with a light or dark palette, as the system asks."""
    app.setStyle("Fusion")
    app.setPalette(_dark_palette() if is_dark() else _light_palette())


def follow_system_appearance(app: QApplication) -> None:
    """Apply the appearance now and again whenever the system switches light/dark."""
    apply_appearance(app)
    QGuiApplication.styleHints().colorSchemeChanged.connect(lambda _scheme: apply_appearance(app))
