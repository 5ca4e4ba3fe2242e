"""ZooDesk's log file, and what of the logging reaches the console.

Libraries report problems through their own loggers (tifffile logs ``ERROR
tifffile: ... invalid page offset`` for a truncated file, for example).  ZooDesk
already turns each such problem into one line naming the file, so the libraries'
records go to the log file (``ZOODESK_HOME/logs/zoodesk.log``) and never to the
console; ZooDesk's own warnings are shown as well as logged.  ``--debug`` shows
every record on the console.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

#: The log file's name in the logs folder (``Settings.logs_dir``).
LOG_FILE_NAME = "zoodesk.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


#: Size at which the log file is renamed to ``zoodesk.log.1`` and a new one started.
LOG_MAX_BYTES = 2_000_000
#: Earlier log files kept (``zoodesk.log.1`` .. ``zoodesk.log.3``).
LOG_BACKUPS = 3


class RotatingLogFile(logging.FileHandler):
    """A log file that moves aside (``.1``, ``.2``, ...) once it reaches ``max_bytes``.

    What ``logging.handlers.RotatingFileHandler`` does, as a plain ``FileHandler``:
    that module imports sockets, pickling and queues, a noticeable part of every
    short command's start-up, for the one handler used here.  Opening the file raises
    ``OSError`` as ``FileHandler`` does; later write problems are skipped.
    """

    def __init__(self, path: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS):
        super().__init__(path, encoding="utf-8")
        self.max_bytes = max_bytes
        self.backups = backups

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.stream is None:
                self.stream = self._open()
            if self.stream.tell() >= self.max_bytes:
                self._rotate()
        except (OSError, ValueError):
            return  # the log is a help, not a duty: a file that cannot be written is skipped
        super().emit(record)

    def _rotate(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        base = Path(self.baseFilename)
        try:
            for index in range(self.backups - 1, 0, -1):
                older = base.with_name(f"{base.name}.{index}")
                if older.exists():
                    older.replace(base.with_name(f"{base.name}.{index + 1}"))
            base.replace(base.with_name(f"{base.name}.1"))
        except OSError:
            pass  # another process rotated it first
        self.stream = self._open()


def log_file_handler(logs_dir: Path) -> logging.Handler | None:
    """A rotating handler on ``logs_dir/zoodesk.log`` (INFO and up), or None when the
    folder cannot be written."""
    try:
        logs_dir.mkdir(parents=True, exist_ok=True)
        handler = RotatingLogFile(logs_dir / LOG_FILE_NAME)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(logging.INFO)
    return handler


def _zoodesk_info() -> None:
    """Let ZooDesk's INFO records through (libraries stay at the root's WARNING)."""
    own = logging.getLogger("zoodesk")
    if own.level == logging.NOTSET or own.level > logging.INFO:
        own.setLevel(logging.INFO)


def setup_logging(logs_dir: Path) -> Path | None:
    """Log ZooDesk's messages (INFO and up, with tracebacks) and the libraries'
    warnings to a rotating file, for the desktop application.

    Returns the log file, or None when the folder cannot be written.
    """
    path = logs_dir / LOG_FILE_NAME
    root = logging.getLogger()
    if any(
        isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.absolute()
        for h in root.handlers
    ):
        # Already logged there (``zoodesk gui`` runs inside a command's logging).
        _zoodesk_info()
        return path
    handler = log_file_handler(logs_dir)
    if handler is None:
        return None
    root.addHandler(handler)
    logging.captureWarnings(True)  # libraries' warnings into the log file as well
    _zoodesk_info()
    return path


class _Stderr(logging.StreamHandler[TextIO]):
    """Writes to the *current* ``sys.stderr`` (it may be replaced after set-up)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def _own_records(record: logging.LogRecord) -> bool:
    return record.name == "zoodesk" or record.name.startswith("zoodesk.")


@contextmanager
def command_logging(logs_dir: Path, *, debug: bool) -> Iterator[Path | None]:
    """Logging for one command of the command line; yields the log file (or None).

    Every record of INFO and up (ZooDesk's) or WARNING and up (the libraries') goes
    to the log file; the console (stderr) shows ZooDesk's warnings and errors only,
    or every record down to DEBUG with ``debug``.  Everything is put back as it was
    on exit, so that commands run one after another in one process (tests) do not
    pile up handlers.
    """
    root = logging.getLogger()
    own = logging.getLogger("zoodesk")
    levels = (root.level, own.level)
    console = _Stderr()
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if debug:
        console.setLevel(logging.DEBUG)
        root.setLevel(logging.DEBUG)
    else:
        console.setLevel(logging.WARNING)
        console.addFilter(_own_records)
    handlers: list[logging.Handler] = [console]
    file_handler = log_file_handler(logs_dir)
    if file_handler is not None:
        handlers.append(file_handler)
        _zoodesk_info()
    for handler in handlers:
        root.addHandler(handler)
    # Libraries' warnings (czifile's "unknown segment type" on a damaged file) are
    # log records too: to the log file, not between ZooDesk's own lines.
    logging.captureWarnings(True)
    try:
        yield logs_dir / LOG_FILE_NAME if file_handler is not None else None
    finally:
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(levels[0])
        own.setLevel(levels[1])
