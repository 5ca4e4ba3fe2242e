"""Entry script of the ``zoodesk`` executable in the standalone installers.

The desktop entry: built without a console on Windows and macOS.

- No arguments: open the desktop application (``zoodesk gui``).
- Only offline bundle files (``*.zdbundle``, as the file manager passes them when the
  user opens one): open the application and hand it the files through the
  ``ZOODESK_OPEN_FILES`` environment variable (paths joined by ``os.pathsep``); the
  application offers to import them.
- Anything else: a command line, as for ``zoodesk-cli``.
- Started as ``zoodesk-cli`` (on Linux that program is a link to this one, see
  packaging.spec): the command line only, as ``installers/entry_cli.py``.

Without a console, Windows gives the program no standard streams; they are sent
to ``ZOODESK_HOME/logs/zoodesk-gui.log`` so that errors are kept and writing a
message never fails.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Sequence
from pathlib import Path

#: Suffix of offline bundles (zoodesk.models.bundle.BUNDLE_SUFFIX).
BUNDLE_SUFFIX = ".zdbundle"
#: Environment variable through which the files to open reach the application.
OPEN_FILES_VARIABLE = "ZOODESK_OPEN_FILES"
#: Name of the command-line program.
CLI_NAME = "zoodesk-cli"


def started_as_cli(program: str) -> bool:
    """Whether the program was started under the command line's name.

    Parameters
    ----------
    program
        The program as started (``sys.argv[0]``): a link keeps its own name there.
    """
    return Path(program).stem == CLI_NAME


def gui_argv(argv: Sequence[str]) -> list[str]:
    """The ``zoodesk.cli`` arguments for what the desktop entry was started with.

    Parameters
    ----------
    argv
        The program's arguments without the program name.

    Returns
    -------
    list of str
        ``["gui"]`` for no arguments or only bundle files (the files then go to the
        ``ZOODESK_OPEN_FILES`` environment variable), else ``argv`` unchanged.
    """
    if not argv:
        return ["gui"]
    if all(Path(a).suffix.lower() == BUNDLE_SUFFIX for a in argv):
        os.environ[OPEN_FILES_VARIABLE] = os.pathsep.join(str(Path(a).resolve()) for a in argv)
        return ["gui"]
    return list(argv)


def _keep_streams() -> None:
    if sys.stdout is not None and sys.stderr is not None:
        return
    from zoodesk.settings import zoodesk_home

    logs = zoodesk_home() / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        stream = (logs / "zoodesk-gui.log").open("a", encoding="utf-8", buffering=1)
    except OSError:
        # Lives as long as the process, like the standard streams it stands for.
        stream = Path(os.devnull).open("w", encoding="utf-8")  # noqa: SIM115
    if sys.stdout is None:
        sys.stdout = stream
    if sys.stderr is None:
        sys.stderr = stream


def run() -> int:
    """Start the desktop application, or the command line when given a command."""
    _keep_streams()
    from zoodesk.cli import main

    if started_as_cli(sys.argv[0]):
        return main(sys.argv[1:])
    return main(gui_argv(sys.argv[1:]))


if __name__ == "__main__":
    # A frozen program re-executes itself for worker processes on Windows.
    multiprocessing.freeze_support()
    sys.exit(run())
