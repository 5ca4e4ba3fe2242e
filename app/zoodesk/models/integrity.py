"""What the files of a cached model must match, and how damage is told.

A cached model's folder holds its cache manifest (``zoodesk-cache.json``), which
records every file's sha256 at installation.  A package loaded from such a folder is
checked against it (:func:`zoodesk.models.package.load_model_package`): its
description at once, which is cheap, and every other file when a task uses it.  A
model whose files no longer match is refused with the same words as
``zoodesk models verify``.
"""

from __future__ import annotations

import json
from pathlib import Path

from zoodesk.errors import ChecksumError

MANIFEST_NAME = "zoodesk-cache.json"
#: What to do about a damaged cached model.
DAMAGED_ADVICE = "remove it and download or import it again"


class DamagedModelError(ChecksumError):
    """A file of a cached model no longer matches the sha256 recorded at installation."""


def recorded_checksums(folder: Path) -> dict[str, str] | None:
    """The sha256 the cache manifest in ``folder`` records for each file (POSIX paths).

    None when ``folder`` holds no readable manifest: it is then not a cached model
    (the cache itself does not list it either).
    """
    path = Path(folder) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(f["path"]): str(f["sha256"]) for f in data["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recorded_mismatch(recorded: str, actual: str) -> str:
    """The problem of a file whose sha256 is not the one its cache manifest records."""
    return f"sha256 mismatch (recorded {recorded[:12]}..., now {actual[:12]}...)"


def declared_mismatch(declared: str, actual: str) -> str:
    """The problem of a file whose sha256 is not the one its description declares."""
    return (
        f"sha256 mismatch with its description (declares {declared[:12]}..., now {actual[:12]}...)"
    )


def damaged_summary(key: str, damaged: int | None = None, checked: int | None = None) -> str:
    """``<key>: DAMAGED (2 of 6 files); remove it and download or import it again``."""
    counts = f" ({damaged} of {checked} files)" if damaged is not None else ""
    return f"{key}: DAMAGED{counts}; {DAMAGED_ADVICE}"


def damaged_message(path: Path | str, problem: str, key: str) -> str:
    """One line refusing a damaged cached model: the file, its problem, the verdict."""
    return f"{path}: {problem}; {damaged_summary(key)}"
