"""File names inside a deposition package.

Archives are strict about names: BioStudies file lists and Zenodo uploads are safest
with relative paths that use ``/`` and only ``[A-Za-z0-9._-]``.  Names are made safe
here, kept unique (case-insensitively, for case-insensitive file systems), and
checked again by ``zoodesk export --check``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")

# Extensions of two parts that must stay together when a name is made unique.
_DOUBLE_SUFFIXES = (".ome.tiff", ".ome.tif", ".companion.ome", ".ome.zarr", ".tar.gz")


def safe_name(name: str, default: str = "file") -> str:
    """One path component made of ``[A-Za-z0-9._-]`` only.

    Accents are dropped (``é`` becomes ``e``), every other run of unsafe characters
    becomes one ``_``, and a leading ``.`` is removed so that no file is hidden.

    Parameters
    ----------
    name
        Any file or folder name.
    default
        Returned when nothing usable is left.

    Returns
    -------
    str
        The safe name.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE.sub("_", ascii_name).lstrip(".")
    cleaned = re.sub(r"_+", "_", cleaned)
    return cleaned if cleaned and cleaned not in (".", "..") else default


def safe_relative_path(parts: Iterable[str]) -> str:
    """A ``/``-joined relative path whose every component is :func:`safe_name`."""
    return "/".join(safe_name(p) for p in parts if p not in ("", ".", ".."))


def is_safe_path(path: str) -> bool:
    """Whether a package path is relative, uses ``/`` and only ``[A-Za-z0-9._-]``."""
    parts = path.split("/")
    return bool(path) and all(_SAFE_PART.fullmatch(p) for p in parts)


def split_suffix(name: str) -> tuple[str, str]:
    """``("cell_1", ".ome.tif")`` for ``"cell_1.ome.tif"``; keeps known double suffixes."""
    lower = name.lower()
    for suffix in _DOUBLE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    dot = name.rfind(".")
    if dot > 0:
        return name[:dot], name[dot:]
    return name, ""


class UniqueNames:
    """Hands out package paths that differ case-insensitively from all earlier ones."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, path: str) -> str:
        """``path`` itself, or ``path`` with ``-2``, ``-3``, ... before its suffix."""
        folder, _, name = path.rpartition("/")
        stem, suffix = split_suffix(name)
        candidate, n = path, 2
        while candidate.lower() in self._taken:
            candidate = f"{folder}/{stem}-{n}{suffix}" if folder else f"{stem}-{n}{suffix}"
            n += 1
        self._taken.add(candidate.lower())
        return candidate
