"""Versions of installed distributions, cheap enough for every start.

:func:`installed_versions` answers what ``importlib.metadata.version`` answers for
the few distributions a run record names (onnxruntime or one of its GPU builds,
numpy, tifffile, bioimageio.spec), from the names of their ``*.dist-info`` folders
(``onnxruntime_gpu-1.31.1.dist-info``): importing ``importlib.metadata`` and asking
it for each name cost a one-image prediction tens of milliseconds of its start-up.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable

__all__ = ["installed_versions"]


def _normalised(name: str) -> str:
    """A distribution's name as installers spell it in ``*.dist-info`` folders."""
    return re.sub(r"[-_.]+", "_", name).lower()


def installed_versions(names: Iterable[str]) -> dict[str, str]:
    """The installed versions of the distributions ``names``, from their ``dist-info``
    folders on ``sys.path`` (the first one found wins, as for imports).

    What ``importlib.metadata.version`` answers, read from the folders' names
    (``onnxruntime_gpu-1.31.1.dist-info``): importing ``importlib.metadata`` and
    asking it for each name costs a short run's start-up tens of milliseconds.
    """
    wanted = {_normalised(n): n for n in names}
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            children = os.scandir(entry or ".")
        except OSError:
            continue
        with children:
            for child in children:
                if not child.name.endswith(".dist-info"):
                    continue
                project, _, version = child.name.removesuffix(".dist-info").partition("-")
                name = wanted.get(_normalised(project))
                if name is not None and version and name not in found:
                    found[name] = version
        if len(found) == len(wanted):
            break
    return found
