"""Find the image files of a batch: folders, glob patterns, list files."""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zoodesk.errors import ImageReadError
from zoodesk.images.omezarr import ZARR_SUFFIXES, is_ome_zarr

#: File name endings read by :func:`zoodesk.images.read_image` (compared
#: case-insensitively); the double ones first so that :func:`output_stem` strips
#: them whole.
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".ome.tiff",
    ".ome.tif",
    ".tiff",
    ".tif",
    ".npy",
    ".png",
    ".jpeg",
    ".jpg",
    ".bmp",
    # The microscope vendors' formats (zoodesk.images.vendor).
    ".czi",
    ".nd2",
    ".lif",
    ".oib",
    ".oif",
)

_DIGITS = re.compile(r"(\d+)")


def image_suffix(path: Path | str) -> str | None:
    """The image suffix that ``path``'s name ends with (as written), or None."""
    name = Path(path).name
    lowered = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[-len(suffix) :]
    return None


def output_stem(path: Path | str) -> str:
    """A file's name without its image suffix: ``"a.ome.tif"`` and ``"a.ome.zarr"``
    give ``"a"``.

    Names without an image suffix lose their last suffix, as with :attr:`Path.stem`.
    """
    name = Path(path).name
    for zarr_suffix in ZARR_SUFFIXES:
        if name.lower().endswith(zarr_suffix) and len(name) > len(zarr_suffix):
            return name[: -len(zarr_suffix)]
    suffix = image_suffix(name)
    if suffix is None:
        return Path(name).stem
    return name[: -len(suffix)]


def natural_key(path: Path | str) -> tuple[tuple[tuple[int, str], ...], ...]:
    """Sort key ordering ``file2`` before ``file10`` (case-insensitive, per path part)."""
    parts = Path(path).parts
    return tuple(
        tuple(
            (int(token), token) if token.isdigit() else (-1, token.lower())
            for token in _DIGITS.split(part)
        )
        for part in parts
    )


def _skipped(name: str) -> bool:
    # Hidden files, and the temporary ".<name>.<random>.part" files of our writers.
    return name.startswith(".") or name.endswith(".part")


def _matches(relative: str, name: str, patterns: Sequence[str]) -> bool:
    if not patterns:
        return True
    # Case-insensitive on every system, so that a batch selects the same files on
    # Windows and Linux; a pattern may name the file or its path in the folder.
    relative, name = relative.lower(), name.lower()
    return any(
        fnmatch.fnmatchcase(name, p.lower()) or fnmatch.fnmatchcase(relative, p.lower())
        for p in patterns
    )


@dataclass(frozen=True)
class SkippedFolder:
    """A folder whose files were not looked at, and why (one line for the user)."""

    path: Path
    reason: str

    @property
    def message(self) -> str:
        """``"<folder>: <reason>; its images are not processed"``."""
        return f"{self.path}: {self.reason}; its images are not processed"


def _is_link(entry: os.DirEntry[str]) -> bool:
    """A symbolic link, or on Windows any reparse point (a junction is one too)."""
    if entry.is_symlink():
        return True
    if os.name == "nt":
        try:
            attributes = getattr(entry.stat(follow_symlinks=False), "st_file_attributes", 0)
        except OSError:
            return False
        return bool(attributes & stat.FILE_ATTRIBUTE_REPARSE_POINT)
    return False


def _link_reason(path: Path) -> str:
    try:
        target = Path(os.path.realpath(path, strict=True))
    except (OSError, RuntimeError):
        return "a link to a folder, not followed"
    here = Path(os.path.realpath(path.parent))
    if target == here or target in here.parents:
        return f"a link back to {target} (a loop), not followed"
    return (
        f"a link to the folder {target}, not followed (give that folder as an input of "
        "its own to process it)"
    )


def _folder_reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "cannot be read (permission denied)"
    return f"cannot be read ({exc.strerror or exc})"


def _folder_images(
    folder: Path, patterns: Sequence[str], recursive: bool, skipped: list[SkippedFolder]
) -> list[Path]:
    """The image files of ``folder`` (and its sub-folders when ``recursive``).

    Links to folders (symbolic links, Windows junctions) are not followed and are
    reported in ``skipped``, as are folders that cannot be listed; each real folder
    is visited once (by device and inode), so that even a loop of mounts ends.
    """
    found: list[Path] = []
    problems: list[SkippedFolder] = []
    visited: set[tuple[int, int]] = set()
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            st = current.stat()
            with os.scandir(current) as listing:
                entries = list(listing)
        except OSError as exc:
            problems.append(SkippedFolder(current, _folder_reason(exc)))
            continue
        identity = (st.st_dev, st.st_ino)
        if identity in visited:
            problems.append(SkippedFolder(current, "already visited (a loop of folders)"))
            continue
        visited.add(identity)
        for entry in entries:
            name = entry.name
            if _skipped(name):
                continue
            path = current / name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if name.lower().endswith(ZARR_SUFFIXES) and is_ome_zarr(path):
                    # An OME-Zarr is one image stored as a folder: an input, never
                    # descended into.
                    relative = path.relative_to(folder).as_posix()
                    if _matches(relative, name, patterns) and not _is_link(entry):
                        found.append(path)
                    continue
                if not recursive:
                    continue
                if _is_link(entry):
                    problems.append(SkippedFolder(path, _link_reason(path)))
                else:
                    pending.append(path)
                continue
            if image_suffix(name) is None:
                continue
            relative = path.relative_to(folder).as_posix()
            if _matches(relative, name, patterns) and path.is_file():
                found.append(path)
    skipped.extend(sorted(problems, key=lambda p: (natural_key(p.path), str(p.path))))
    return found


def find_images(
    inputs: Sequence[Path],
    *,
    patterns: Sequence[str] = (),
    recursive: bool = False,
    skipped: list[SkippedFolder] | None = None,
) -> list[Path]:
    """The image files named by files and folders, sorted naturally, each once.

    Parameters
    ----------
    inputs
        Files (kept as they are, whatever their name: reading them reports any
        problem), OME-Zarr folders (each an image), and folders (every file in them
        with one of :data:`IMAGE_SUFFIXES`, case-insensitive, and every OME-Zarr
        folder named ``*.zarr``; hidden files and unfinished ``.part`` files are
        skipped).
    patterns
        Glob patterns (``*``, ``?``, ``[...]``; case-insensitive) that a folder's
        files must match, by name or by path relative to the folder (``"sub/*.tif"``);
        empty means all.  Files given directly are not filtered.
    recursive
        Also look into sub-folders (hidden ones excepted).  Links to folders
        (symbolic links, Windows junctions) are not followed: a link may lead to
        another disk, back up the tree or into the output folder, and outputs are
        named after the path below the input folder.
    skipped
        Receives the folders whose files were not looked at (a sub-folder that
        cannot be listed, a link to a folder), so that they can be reported.

    Returns
    -------
    list of Path
        Sorted naturally (``img2`` before ``img10``); a file reached twice (given
        twice, or both directly and through its folder) is listed once.

    Raises
    ------
    ImageReadError
        When an input does not exist.
    """
    collected: list[Path] = []
    problems = skipped if skipped is not None else []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir() and is_ome_zarr(path):
            collected.append(path)  # an OME-Zarr given by name is the image itself
        elif path.is_dir():
            collected.extend(_folder_images(path, patterns, recursive, problems))
        elif path.exists():
            collected.append(path)
        else:
            raise ImageReadError(f"{path}: no such file or folder")
    unique: dict[str, Path] = {}
    for path in collected:
        unique.setdefault(os.path.normcase(os.path.realpath(path)), path)
    return sorted(unique.values(), key=lambda p: (natural_key(p), str(p)))


def read_list_file(path: Path) -> list[Path]:
    """The paths listed in a text file, one per line.

    Blank lines and lines starting with ``#`` are ignored; surrounding spaces are
    removed; ``~`` is expanded; relative paths are taken relative to the list
    file's folder.

    Parameters
    ----------
    path
        The list file (UTF-8, with or without a byte-order mark).

    Returns
    -------
    list of Path
        The listed paths, in the file's order (not checked for existence; pass them
        to :func:`find_images`).

    Raises
    ------
    ImageReadError
        When the list file cannot be read.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ImageReadError(f"{path}: list file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageReadError(f"{path}: cannot read the list file: {exc}") from None
    listed: list[Path] = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        item = Path(entry).expanduser()
        listed.append(item if item.is_absolute() else path.parent / item)
    return listed
