"""Small file helpers shared by every layer: checksums, atomic writes, and reading
what other files say safely (relative paths that must stay in their folder, JSON
that may be nested absurdly deep)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20

#: Deepest nesting of mappings and lists accepted in a file that comes from elsewhere
#: (descriptions, catalogues, manifests, run records); real ones nest a few levels.
MAX_DEPTH = 64

#: Errors of a write that more free space would have let through: a full disk, a full
#: quota, a file larger than the file system (or the process's file size limit) allows.
NO_SPACE_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if code is not None
)


def is_no_space(exc: BaseException) -> bool:
    """True for an :class:`OSError` that says the device has no room for the write."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def write_error_reason(exc: OSError) -> str:
    """Why a write failed, in words for the user.

    A full disk or quota reads ``no space left on the device`` whatever the system's
    wording (the system's own follows in brackets when it says something else, e.g.
    ``File too large``); other errors give the system's message.
    """
    reason = exc.strerror or str(exc)
    if exc.errno in NO_SPACE_ERRNOS:
        same = reason.lower().startswith("no space left")
        return "no space left on the device" + ("" if same else f" ({reason})")
    return reason


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_files(folder: Path) -> list[Path]:
    """The files below ``folder`` in the order :func:`sha256_input` hashes them."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def sha256_input(path: Path) -> str:
    """The hex sha256 of an input: a file's bytes, or, for a folder (an OME-Zarr), every
    file below it in sorted order, each as its relative path, a NUL, its bytes."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in folder_files(path):
        digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
        with file.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def temporary_sibling(final: Path, suffix: str = "") -> Path:
    """A unique temporary path in the same folder as ``final`` (same file system).

    Temporary names start with ``.`` and end with ``.part`` so that an interrupted
    write never carries the final name and is easy to recognise and clean up.
    """
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f"{suffix}.part", dir=final.parent)
    try:
        # mkstemp creates the file private (0600); results are ordinary files.
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to ``final`` only on success.

    On any exception the temporary file is removed and ``final`` is left untouched.
    ``suffix`` keeps an extension on the temporary name for writers that look at it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final, suffix)
    try:
        yield tmp
        tmp.replace(final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(final: Path, text: str) -> None:
    """Write text to ``final`` through a temporary file and an atomic rename."""
    with atomic_path(final) as tmp, tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


# ------------------------------------------------------------ reading untrusted files


class UnsafePathError(ValueError):
    """A path read from a file (a catalogue, a manifest, a run record) that could lead
    outside the folder it belongs to.  The message quotes the path and says why; the
    caller adds which file it came from."""


def relative_parts(path: str) -> tuple[str, ...]:
    """The parts of ``path``, a relative path that must stay inside its folder.

    Backslashes count as separators and ``.`` parts are dropped.

    Raises
    ------
    UnsafePathError
        For an absolute path, a drive letter, a ``..`` part, a NUL character, or a
        path that names no file.
    """
    text = str(path).replace("\\", "/")
    if "\x00" in text:
        raise UnsafePathError(f"{path!r} contains a NUL character")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UnsafePathError(f"{path!r} is an absolute path")
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafePathError(f"{path!r} leads out of its folder")
    if not parts:
        raise UnsafePathError(f"{path!r} names no file")
    return parts


def path_inside(folder: Path, path: str) -> Path:
    """``folder / path`` for a relative ``path`` read from a file, once it is sure to
    stay inside ``folder``: checked as :func:`relative_parts` does, then with every
    link resolved (a link inside the folder may point anywhere on the machine).

    Raises
    ------
    UnsafePathError
        Naming the path and why it is refused.
    """
    folder = Path(folder)
    target = folder.joinpath(*relative_parts(path))
    try:
        inside = target.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of links
        raise UnsafePathError(f"{path!r} cannot be resolved ({exc})") from exc
    if not inside:
        raise UnsafePathError(f"{path!r} links outside its folder")
    return target


class NestingError(ValueError):
    """Data nested deeper than :data:`MAX_DEPTH` levels."""

    def __init__(self) -> None:
        super().__init__(f"nested too deeply to be read: more than {MAX_DEPTH} levels")


def check_nesting(data: Any, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`NestingError` when lists and mappings in ``data`` nest deeper
    than ``limit`` (walked without recursion, so any depth is measured safely)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            raise NestingError()
        stack.extend((child, depth + 1) for child in children)


def parse_json(raw: str | bytes) -> Any:
    """``json.loads`` for text from elsewhere.

    Python's parser recurses once per level and gives up with ``RecursionError``
    around a thousand levels; below that, deep data would exhaust the stack of the
    code that walks it.  Both are refused as :class:`NestingError`, a ``ValueError``
    like every other reason JSON cannot be read.
    """
    try:
        data = json.loads(raw)
    except RecursionError as exc:
        raise NestingError() from exc
    check_nesting(data)
    return data
