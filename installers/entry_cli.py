"""Entry script of the ``zoodesk-cli`` executable in the standalone installers.

A console program on every platform: the same commands as the ``zoodesk`` console
script of a pip installation (``zoodesk.cli.main``).
"""

from __future__ import annotations

import multiprocessing
import sys

from zoodesk.cli import main

if __name__ == "__main__":
    # A frozen program re-executes itself for worker processes on Windows.
    multiprocessing.freeze_support()
    sys.exit(main())
