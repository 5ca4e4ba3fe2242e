"""Where conversion can run, and how its worker process is started.

Converting needs torch (PyTorch weights) or TensorFlow with tf2onnx (Keras and
TensorFlow weights).  Neither is ever imported by ZooDesk's own process: they are
looked up without importing them, and the conversion itself runs in a worker
process (:mod:`zoodesk.conversion._worker`):

- from a Python installation: ``python -m zoodesk.conversion._worker JOB.json``;
- in the standalone application (frozen, no Python on the machine): its own
  command-line executable with the hidden command ``_conversion-worker JOB.json``.
  Only the "full" variant of the installers carries torch.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoodesk.models.compat import Installation

#: The hidden command of the command line that runs a conversion job.
WORKER_COMMAND = "_conversion-worker"
#: The worker module.
WORKER_MODULE = "zoodesk.conversion._worker"

# zoodesk.models is imported in the functions below, not here: the command line
# imports this module at start-up (for WORKER_COMMAND) and must stay quick.


def is_frozen() -> bool:
    """True inside the standalone application (PyInstaller)."""
    return bool(getattr(sys, "frozen", False))


@functools.cache
def torch_available() -> bool:
    """True when torch can be found (it is not imported: conversion runs elsewhere)."""
    from zoodesk.models.compat import module_installed

    return module_installed("torch")


@functools.cache
def tensorflow_available() -> bool:
    """True when TensorFlow and tf2onnx can be found (neither is imported)."""
    from zoodesk.models.compat import module_installed

    return module_installed("tensorflow") and module_installed("tf2onnx")


def can_convert(weights_format: str) -> bool:
    """True when this installation converts weights of this format to ONNX."""
    from zoodesk.models.spec import PYTORCH_WEIGHTS_FORMATS, TENSORFLOW_WEIGHTS_FORMATS

    if weights_format in PYTORCH_WEIGHTS_FORMATS:
        return torch_available()
    if weights_format in TENSORFLOW_WEIGHTS_FORMATS:
        return tensorflow_available()
    return False


def missing_framework_hint(weights_format: str) -> str:
    """One line: what this installation lacks to convert such weights, and what to do."""
    from zoodesk.models.spec import PYTORCH_WEIGHTS_FORMATS

    if weights_format not in PYTORCH_WEIGHTS_FORMATS:
        return (
            f"converting {weights_format} weights needs TensorFlow and tf2onnx, which no "
            "installer carries: install ZooDesk with Python and the 'tensorflow' extra "
            "(pip install 'zoodesk[tensorflow]'), convert there, and move the model to "
            "other PCs by bundle (zoodesk bundle export)"
        )
    if is_frozen():
        return (
            "weights conversion needs the full variant of ZooDesk (or a Python installation "
            "with the 'convert' extra); converted models move to other PCs by bundle "
            "(zoodesk bundle export)"
        )
    return (
        "weights conversion needs torch: install the convert extra "
        "(pip install 'zoodesk[convert]'), or use the full variant of the installers; "
        "converted models move to other PCs by bundle (zoodesk bundle export)"
    )


def installation() -> Installation:
    """What this installation converts (for :func:`zoodesk.models.compat.capability_here`)."""
    from zoodesk.models.compat import Installation
    from zoodesk.models.spec import CONVERTIBLE_WEIGHTS_FORMATS

    formats = [f for f in CONVERTIBLE_WEIGHTS_FORMATS if can_convert(f)]
    return Installation(convertible=frozenset(formats), frozen=is_frozen())


def worker_command(job: Path) -> list[str]:
    """The command line that runs one conversion job in a worker process."""
    if is_frozen():
        executable = Path(sys.executable)
        suffix = ".exe" if sys.platform == "win32" else ""
        # The console executable: the desktop one has no standard streams on Windows.
        cli = executable.with_name(f"zoodesk-cli{suffix}")
        return [str(cli if cli.is_file() else executable), WORKER_COMMAND, str(job)]
    return [sys.executable, "-m", WORKER_MODULE, str(job)]


def worker_environment() -> dict[str, str]:
    """The worker's environment: this very zoodesk importable, unbuffered output."""
    import zoodesk

    env = dict(os.environ)
    if not is_frozen():
        # The worker imports this very zoodesk, wherever it is installed or checked out.
        own = str(Path(zoodesk.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (own, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env
