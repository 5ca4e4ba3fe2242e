"""The one line recorded when an input fails: the file and what went wrong, in plain words."""

from __future__ import annotations

import errno
import re
from pathlib import Path

from zoodesk.errors import ZooDeskError, not_enough_memory

# numpy's message when the system wrote fewer bytes than asked (``ndarray.tofile``,
# which tifffile uses for uncompressed data): what a full disk looks like there, with
# no error number to tell.
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")


def describe_error(path: Path, exc: BaseException, out_dir: Path | None = None) -> str:
    """One line for the record: ``path`` (the input) and what went wrong with it.

    Errors of the file system while writing outputs are told in plain words, naming
    the folder written to (``out_dir`` when the error does not name the file).
    """
    if isinstance(exc, ZooDeskError):
        text = str(exc)
        return text if str(path) in text or path.name in text else f"{path}: {text}"
    if isinstance(exc, MemoryError):
        return not_enough_memory(exc, path, "to process this image")
    if isinstance(exc, OSError):
        target = exc.filename or "the output"
        named = Path(exc.filename) if isinstance(exc.filename, str) else None
        folder = named.parent if named and named.is_absolute() else out_dir or "the output folder"
        if exc.errno == errno.ENOSPC or (
            exc.errno is None and _SHORT_WRITE.match(str(exc).strip())
        ):
            return f"{path}: the disk is full: no space left on the device holding {folder}"
        if exc.errno == getattr(errno, "EDQUOT", None):
            return (
                f"{path}: the disk quota is used up: no space left for your files on the "
                f"device holding {folder}"
            )
        if exc.errno == errno.EFBIG:
            return (
                f"{path}: cannot write {target}: the file is too large for the file system "
                f"of {folder} (or for the file size limit of this process)"
            )
        if exc.errno == errno.EROFS:
            return f"{path}: cannot write {target}: the file system is read-only"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"{path}: permission denied writing {target}"
        return f"{path}: {exc.strerror or exc}"
    return f"{path}: unexpected error ({type(exc).__name__}: {exc})"
