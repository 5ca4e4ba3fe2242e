"""Starting the desktop application: logging, appearance, services, the main window.

This is the one module that wires the application together.  ``zoodesk`` (no
arguments) and ``zoodesk gui`` call :func:`run_gui`; tests call
:func:`create_main_window` with services on a temporary ZOODESK_HOME.

When ``ZOODESK_EXIT_AFTER_SHOWN=1`` is set, the application prints one line
``zoodesk-gui-shown <seconds since the process started>`` to standard output once
the main window has been shown and the event loop has processed it, then quits
with exit code 0 (the installers' smoke test uses this).

Offline bundles opened from the file manager arrive in ``ZOODESK_OPEN_FILES``
(paths joined by ``os.pathsep``, set by the installed launcher) or, on macOS while
the application runs, as file-open events; either way the library imports them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtGui import QFileOpenEvent
from PySide6.QtWidgets import QApplication

from zoodesk.gui.main_window import PAGE_LIBRARY, MainWindow
from zoodesk.gui.services import Services
from zoodesk.logs import setup_logging

log = logging.getLogger("zoodesk.gui")

EXIT_AFTER_SHOWN_ENV = "ZOODESK_EXIT_AFTER_SHOWN"
OPEN_FILES_ENV = "ZOODESK_OPEN_FILES"
BUNDLE_SUFFIX = ".zdbundle"
_IMPORTED_AT = time.time()


def seconds_since_process_start() -> float:
    """Wall-clock seconds since this process started, as precisely as the system tells.

    Falls back to the time since this module was imported where the system does not say.
    """
    try:
        # Linux: field 22 of /proc/self/stat is the start time in clock ticks after
        # boot, on the same clock as CLOCK_BOOTTIME (10 ms resolution).
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return time.time() - float(psutil.Process().create_time())
    except Exception:
        return time.time() - _IMPORTED_AT


def create_main_window(services: Services) -> MainWindow:
    """The main window on the given services (not shown yet)."""
    return MainWindow(services)


def open_files(window: MainWindow, paths: list[Path]) -> None:
    """Import the offline bundles among ``paths`` (the library runs one task at a time)."""
    bundles = [p for p in paths if p.suffix.lower() == BUNDLE_SUFFIX]
    if bundles:
        window.show_page(PAGE_LIBRARY)
        window.library_page.import_bundle(bundles[0])
    for skipped in bundles[1:]:
        log.warning("%s: one bundle is imported at a time; open it again afterwards", skipped)


def requested_files() -> list[Path]:
    """Files the launcher asked the application to open (``ZOODESK_OPEN_FILES``)."""
    value = os.environ.get(OPEN_FILES_ENV, "")
    return [Path(p) for p in value.split(os.pathsep) if p]


class _FileOpenFilter(QObject):
    """macOS sends documents opened while the application runs as QFileOpenEvent."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self._window = window

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.FileOpen and isinstance(event, QFileOpenEvent):
            open_files(self._window, [Path(event.file())])
            return True
        return super().eventFilter(watched, event)


def _install_excepthook(window: MainWindow) -> None:
    """Show unexpected errors in a message box (and the log) instead of dying."""

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        from zoodesk.gui.errors import report_error

        exc.__traceback__ = tb
        try:
            report_error(window, "Unexpected error", exc, window.services.log_file)
        except Exception:
            sys.__excepthook__(kind, exc, tb)

    sys.excepthook = hook


def run_gui(argv: list[str] | None = None) -> int:
    """Open the main window and run until it is closed; returns the exit code."""
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("ZooDesk")
    app.setOrganizationName("ZooDesk")
    app.setApplicationDisplayName("ZooDesk")
    from zoodesk.gui._style import app_icon, follow_system_appearance

    follow_system_appearance(app)
    app.setWindowIcon(app_icon())

    from zoodesk.errors import ZooDeskError
    from zoodesk.settings import Settings, load_settings

    settings_problem: ZooDeskError | None = None
    try:
        settings = load_settings()
    except ZooDeskError as exc:
        settings_problem = exc
        settings = Settings()
    log_file = setup_logging(settings.logs_dir)
    services = Services(settings, log_file=log_file)
    window = create_main_window(services)
    _install_excepthook(window)
    app.installEventFilter(_FileOpenFilter(window))
    window.show()
    if requested := requested_files():
        QTimer.singleShot(0, lambda: open_files(window, requested))
    if settings_problem is not None:
        from zoodesk.gui.errors import report_error

        report_error(
            window, "The settings could not be read (defaults are used)", settings_problem, log_file
        )
    if os.environ.get(EXIT_AFTER_SHOWN_ENV) == "1":

        def report_shown() -> None:
            sys.stdout.write(f"zoodesk-gui-shown {seconds_since_process_start():.3f}\n")
            sys.stdout.flush()
            window.runner.cancel_all()
            window.runner.wait(10000)
            app.exit(0)

        # Queued behind the show and first paint events of the window.
        QTimer.singleShot(0, report_shown)
    return int(app.exec())
