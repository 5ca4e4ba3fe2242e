"""Small file helpers shared by every layer: checksums and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
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
