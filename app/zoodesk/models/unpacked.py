"""Unpacked copies of model zip files used in place: ``ZOODESK_HOME/unpacked/``.

A model zip given directly as MODEL (``zoodesk predict --model model.zip``) is not
imported into the cache: it is unpacked into a folder named after the zip's content
(its sha256), and every later use of the same zip, under any name or in any place,
reuses that copy.  A copy is unpacked under a temporary hidden name and renamed when
complete, so a half-unpacked copy is never used.

While a package loaded from a copy is alive, the copy is *in use*: a file inside it
is held open (and, where the system has ``flock``, share-locked), which any process
cleaning up sees.  Copies are cleaned up each time a zip is used: a copy in use is
never removed; of the others, the :data:`KEEP_RECENT` most recently used are kept
unless unused for more than :data:`MAX_UNUSED_DAYS` days.  See docs/models.md.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import IO

from zoodesk.errors import ModelPackageError
from zoodesk.fileutils import sha256_file, write_error_reason
from zoodesk.models.archive import safe_extract_zip
from zoodesk.settings import zoodesk_home

try:  # POSIX; on Windows an open file already keeps its folder from being renamed.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Unpacked copies kept, counting the one just used (copies in use are never removed).
KEEP_RECENT = 5
#: Copies unused for longer than this are removed, however few there are.
MAX_UNUSED_DAYS = 30
#: Held open while a copy is in use; its modification time is the copy's last use.
IN_USE_FILE = ".zoodesk-in-use"
#: A temporary unpacking folder older than this was left by a process that died.
_STALE_SECONDS = 3600
_REMOVED_PREFIX = ".removed-"


def unpacked_root() -> Path:
    """The folder holding the unpacked copies."""
    return zoodesk_home() / "unpacked"


class UnpackedLease:
    """Marks an unpacked copy as in use until :meth:`close` (or until it is collected)."""

    def __init__(self, folder: Path, handle: IO[bytes]) -> None:
        self.folder = folder
        self._handle: IO[bytes] | None = handle

    def close(self) -> None:
        """Release the copy: a later clean-up may remove it."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __del__(self) -> None:
        self.close()


def open_unpacked(archive: Path) -> tuple[Path, UnpackedLease]:
    """The unpacked copy of ``archive`` (unpacked now if there is none), marked in use.

    Other unpacked copies are cleaned up according to the policy of this module.

    Raises
    ------
    ModelPackageError
        When the archive is refused (:mod:`zoodesk.models.archive`) or cannot be
        unpacked, naming the archive.
    """
    archive = Path(archive)
    try:
        digest = sha256_file(archive)
    except OSError as exc:
        raise ModelPackageError(f"{archive}: cannot read ({exc.strerror or exc})") from exc
    root = unpacked_root()
    folder = root / f"{archive.stem[:60]}-{digest[:16]}"
    # A clean-up in another process may remove the copy between the check and the
    # lease; the lease then notices and the copy is unpacked again.
    for _ in range(3):
        if not folder.is_dir():
            _unpack(archive, folder)
        lease = _lease(folder)
        if lease is not None:
            clean_unpacked(root, keep=folder)
            return folder, lease
    raise ModelPackageError(f"{archive}: its unpacked copy in {root} keeps being removed")


def _unpack(archive: Path, folder: Path) -> None:
    tmp = folder.parent / f".{folder.name}.{secrets.token_hex(4)}.part"
    safe_extract_zip(archive, tmp)
    try:
        tmp.rename(folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not folder.is_dir():  # otherwise another process unpacked it first: use theirs
            raise ModelPackageError(
                f"{archive}: cannot unpack into {folder.parent}: {write_error_reason(exc)}"
            ) from exc


def _lease(folder: Path) -> UnpackedLease | None:
    """Mark ``folder`` in use; None when it was removed meanwhile."""
    path = folder / IN_USE_FILE
    try:
        handle = path.open("a+b")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelPackageError(f"{folder}: cannot use the unpacked model ({exc})") from exc
    try:
        if fcntl is not None:
            # Waits only while a clean-up is renaming this very copy away.
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            if not os.path.samestat(os.fstat(handle.fileno()), path.stat()):
                raise FileNotFoundError(path)
        os.utime(path)
    except FileNotFoundError:
        handle.close()
        return None
    except BaseException:
        handle.close()
        raise
    return UnpackedLease(folder, handle)


def _last_used(folder: Path) -> float:
    for path in (folder / IN_USE_FILE, folder):
        with contextlib.suppress(OSError):
            return path.stat().st_mtime
    return 0.0


def clean_unpacked(root: Path | None = None, *, keep: Path | None = None) -> list[Path]:
    """Remove unpacked copies the policy no longer keeps; return those removed.

    ``keep`` (the copy just used) counts among the :data:`KEEP_RECENT` and is never
    removed; neither is any copy in use.  Leftovers of interrupted unpacking and
    removal are removed too.
    """
    root = root or unpacked_root()
    if not root.is_dir():
        return []
    now = time.time()
    copies: list[tuple[float, Path]] = []
    for child in root.iterdir():
        if child.name.startswith(_REMOVED_PREFIX):
            shutil.rmtree(child, ignore_errors=True)
        elif child.name.startswith("."):
            if child.name.endswith(".part") and now - _last_used(child) > _STALE_SECONDS:
                shutil.rmtree(child, ignore_errors=True)
        elif child.is_dir() and child != keep:
            copies.append((_last_used(child), child))
    copies.sort(reverse=True)
    others = KEEP_RECENT - (1 if keep is not None else 0)
    removed = []
    for rank, (used, child) in enumerate(copies):
        if rank < others and now - used <= MAX_UNUSED_DAYS * 86400:
            continue
        if _remove_unless_in_use(child):
            removed.append(child)
    return removed


def _remove_unless_in_use(folder: Path) -> bool:
    trash = folder.parent / f"{_REMOVED_PREFIX}{folder.name}-{secrets.token_hex(4)}"
    try:
        if fcntl is None:  # pragma: no cover - Windows: a folder in use cannot be renamed
            folder.rename(trash)
        else:
            with (folder / IN_USE_FILE).open("a+b") as handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return False  # in use
                # Renamed away while locked: a process about to use it then sees it gone.
                folder.rename(trash)
    except OSError:
        return False  # in use, or already gone
    shutil.rmtree(trash, ignore_errors=True)
    return True
