"""Putting a finished package in place, replacing an earlier export safely.

Replacing an earlier export deletes only what ZooDesk wrote there: the files its
manifest lists, unchanged.  Files added since, or changed since, are moved into a
folder beside it, ``<name>-kept-files-<date>-<time>``, never deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

from zoodesk.fileutils import sha256_file


def _not_written_by_us(folder: Path, manifest: str) -> list[str]:
    """Files (and links) in an earlier export that its manifest does not vouch for.

    A file is ZooDesk's when the manifest lists it with the sha256 it still has; any
    other file, a changed one, a link, and everything when there is no manifest, is
    the user's.
    """
    listed: dict[str, str] = {}
    try:
        for line in (folder / manifest).read_text(encoding="utf-8").splitlines():
            sha, sep, rel = line.partition("  ")
            if sep:
                listed[rel] = sha
    except (OSError, UnicodeDecodeError):
        listed = {}
    theirs: list[str] = []
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        links = [d for d in dirs if (base / d).is_symlink()]
        dirs[:] = [d for d in dirs if d not in links]
        for name in [*files, *links]:
            path = base / name
            rel = path.relative_to(folder).as_posix()
            if rel == manifest and listed:
                continue
            ours = (
                rel in listed
                and path.is_file()
                and not path.is_symlink()
                and sha256_file(path) == listed[rel]
            )
            if not ours:
                theirs.append(rel)
    return sorted(theirs)


def _kept_folder(destination: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{destination.name}-kept-files-{stamp}"
    n = 1
    while True:
        candidate = destination.with_name(base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1


def _move(source_root: Path, target_root: Path, names: list[str]) -> None:
    for rel in names:
        target = target_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        (source_root / rel).replace(target)


def replace_folder(tmp: Path, destination: Path, manifest: str) -> tuple[Path | None, list[str]]:
    """Put the finished package under its final name, replacing an earlier export.

    The earlier export's files that ZooDesk did not write (those its ``manifest``,
    a file name in it, does not list with their current sha256) are moved into a
    folder beside it first; returns that folder and those files.
    """
    old: Path | None = None
    kept_folder: Path | None = None
    kept: list[str] = []
    if destination.exists():
        kept = _not_written_by_us(destination, manifest)
        if kept:
            kept_folder = _kept_folder(destination)
            try:
                _move(destination, kept_folder, kept)
            except OSError:
                # Put back what moved: the earlier export stays as it was.
                _move(kept_folder, destination, [r for r in kept if (kept_folder / r).exists()])
                shutil.rmtree(kept_folder, ignore_errors=True)
                raise
        old = Path(
            tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".old", dir=destination.parent)
        )
        old.rmdir()
        destination.replace(old)
    try:
        tmp.replace(destination)
    except OSError:
        if old is not None:
            old.replace(destination)
            if kept_folder is not None:
                _move(kept_folder, destination, kept)
                shutil.rmtree(kept_folder, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return kept_folder, kept
