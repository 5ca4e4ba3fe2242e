"""Run a child process on which file permissions hold, even when the tests run as root.

Root reads a ``chmod 000`` folder anyway (it holds CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH).  On Linux the child drops every capability from its bounding
set before it starts Python, so it runs as a plain owner of the test's files and a
``chmod 000`` folder cannot be listed.  Tests that cannot get there skip, saying why.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

_PR_CAPBSET_DROP = 24
_LAST_CAPABILITY = 63


def _drop_capabilities() -> None:
    # Runs in the child between fork and exec: with an empty bounding set, the
    # program it executes starts with no capability at all, root or not.
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in range(_LAST_CAPABILITY + 1):
        libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)


def run_unprivileged(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(args)`` (text, output captured) without root's capabilities;
    the child imports the same ZooDesk as the tests."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200"}
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        preexec_fn=_drop_capabilities if as_root else None,
        **kwargs,
    )


@contextmanager
def unreadable(folder: Path) -> Iterator[Path]:
    """``chmod 000`` on ``folder`` for the duration (skip where that does not deny
    :func:`run_unprivileged` children access)."""
    if os.name != "posix":
        pytest.skip("folder permissions are POSIX modes here; Windows uses ACLs")
    if os.geteuid() == 0 and not sys.platform.startswith("linux"):
        pytest.skip("running as root, and capabilities can be dropped on Linux only")
    folder.chmod(0)
    try:
        probe = run_unprivileged(
            [sys.executable, "-c", "import os, sys; os.listdir(sys.argv[1])", str(folder)]
        )
        if probe.returncode == 0:
            pytest.skip("cannot make a folder unreadable here (capabilities not dropped)")
        yield folder
    finally:
        folder.chmod(0o755)
