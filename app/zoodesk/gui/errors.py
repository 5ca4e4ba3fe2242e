"""Error messages for people: one readable line, the details, and where the log is.

The line is in the desktop application's words (:mod:`zoodesk.gui.wording`); the
engine's own text, as the command line and the log show it, is in the details.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from PySide6.QtWidgets import QMessageBox, QWidget

from zoodesk.errors import ZooDeskError, not_enough_memory
from zoodesk.gui.wording import in_gui_words, plain_problem_lines

log = logging.getLogger("zoodesk.gui")

#: What a failed connection means to the user; the details name the address.
NO_CONNECTION = "No connection to the zoo (offline?)"


def readable_message(exc: BaseException) -> str:
    """The line shown to the user: ZooDesk's own message in the desktop
    application's words, or a plain description."""
    from zoodesk.models.description import InvalidDescriptionError
    from zoodesk.models.http import NoConnectionError

    if isinstance(exc, NoConnectionError):
        return NO_CONNECTION
    if isinstance(exc, InvalidDescriptionError) and exc.problems:
        # "SOURCE: WHAT: first problem", then one problem per line.
        head = str(exc).splitlines()[0].removesuffix(exc.problems[0])
        plain = plain_problem_lines(exc.problems)
        return in_gui_words(head + plain[0] + "".join(f"\n  {p}" for p in plain[1:]))
    if isinstance(exc, ZooDeskError):
        return in_gui_words(str(exc))
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
    message
        The line shown (default: :func:`readable_message`).

    The details (**Show Details…**) hold the engine's own message, as the log has
    it, then the traceback.
    """

    def __init__(
        self,
        parent: QWidget | None,
        title: str,
        exc: BaseException,
        log_file: Path | None,
        message: str | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("errorDialog")
        self.setIcon(QMessageBox.Icon.Warning)
        self.setWindowTitle(title)
        self.message = message if message is not None else readable_message(exc)
        self.setText(f"<b>{title}</b>")
        info = self.message
        if log_file is not None:
            info += f"\n\nDetails are in the log file:\n{log_file}"
        self.setInformativeText(info)
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.setDetailedText(f"{exc}\n\n{trace}" if str(exc) else trace)
        self.setStandardButtons(QMessageBox.StandardButton.Ok)


def report_error(
    parent: QWidget | None,
    title: str,
    exc: BaseException,
    log_file: Path | None,
    message: str | None = None,
) -> ErrorDialog:
    """Log the error with its traceback and show it in a window-modal box.

    The box is opened with ``open()`` so the event loop keeps running (a run in
    progress keeps updating the window behind it).  ``message`` replaces the
    readable line in the box; the log keeps the engine's own text.
    """
    expected = isinstance(exc, ZooDeskError)
    log.log(
        logging.WARNING if expected else logging.ERROR,
        "%s: %s",
        title,
        str(exc) if expected else readable_message(exc),
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    dialog = ErrorDialog(parent, title, exc, log_file, message)
    dialog.open()
    return dialog
