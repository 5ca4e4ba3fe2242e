"""Error messages for people: one readable line, the details, and where the log is."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from PySide6.QtWidgets import QMessageBox, QWidget

from zoodesk.errors import ZooDeskError, not_enough_memory

log = logging.getLogger("zoodesk.gui")


def readable_message(exc: BaseException) -> str:
    """The line shown to the user: ZooDesk's own message, or a plain description."""
    if isinstance(exc, ZooDeskError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return not_enough_memory(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return f"unexpected error: {type(exc).__name__}: {exc}"


class ErrorDialog(QMessageBox):
    """A warning box with the readable message, the traceback and the log file path.

    Parameters
    ----------
    parent
        The window it belongs to.
    title
        What failed, e.g. ``"Import failed"``.
    exc
        The error.
    log_file
        The log file named in the box (the full traceback is logged there).
    """

    def __init__(
        self, parent: QWidget | None, title: str, exc: BaseException, log_file: Path | None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("errorDialog")
        self.setIcon(QMessageBox.Icon.Warning)
        self.setWindowTitle(title)
        self.message = readable_message(exc)
        self.setText(f"<b>{title}</b>")
        info = self.message
        if log_file is not None:
            info += f"\n\nDetails are in the log file:\n{log_file}"
        self.setInformativeText(info)
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.setDetailedText(details)
        self.setStandardButtons(QMessageBox.StandardButton.Ok)


def report_error(
    parent: QWidget | None, title: str, exc: BaseException, log_file: Path | None
) -> ErrorDialog:
    """Log the error with its traceback and show it in a window-modal box.

    The box is opened with ``open()`` so the event loop keeps running (a run in
    progress keeps updating the window behind it).
    """
    expected = isinstance(exc, ZooDeskError)
    log.log(
        logging.WARNING if expected else logging.ERROR,
        "%s: %s",
        title,
        readable_message(exc),
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    dialog = ErrorDialog(parent, title, exc, log_file)
    dialog.open()
    return dialog
