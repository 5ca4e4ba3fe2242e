"""The output folder of a run: its lock, and what an interrupted run left in it."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import IO

from zoodesk.errors import ZooDeskError

#: Lock file in the output folder while a run writes into it.
LOCK_NAME = ".zoodesk-run.lock"


class FolderLock:
    """An exclusive OS lock on a file in the output folder, released at process exit."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._handle: IO[str] | None = None
        handle = self.path.open("a+", encoding="utf-8")
        try:
            _lock_file(handle)
        except OSError:
            handle.close()
            raise ZooDeskError(
                f"{folder}: another ZooDesk run is writing to this folder; wait for it to "
                "finish or choose another output folder"
            ) from None
        self._handle = handle
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()

    def release(self) -> None:
        # The file stays: deleting it would let a third run lock a new file while a
        # second one still holds the old one.
        if self._handle is not None:
            with contextlib.suppress(OSError):
                _unlock_file(self._handle)
            self._handle.close()
            self._handle = None


def _lock_file(handle: IO[str]) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock_file(handle: IO[str]) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def probe_writable(folder: Path, tag: str) -> None:
    """Create and delete an empty file in ``folder``; raises OSError where it cannot.

    The probe is named as :func:`clean_leftovers` recognises it
    (``.zoodesk-write-test-TAG.part``), should the process die in between.
    """
    probe = folder / f".zoodesk-write-test-{tag}.part"
    probe.write_bytes(b"")
    probe.unlink()


def prepare_output_folder(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe_writable(out_dir, str(os.getpid()))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EROFS:
            reason = "the file system is read-only"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            reason = "permission denied"
        raise ZooDeskError(f"{out_dir}: the output folder is not writable ({reason})") from exc


def clean_leftovers(out_dir: Path, names: set[str]) -> list[str]:
    """Delete temporary files of our own outputs and record left by a killed run.

    Only ``.NAME.*.part`` files next to a ``NAME`` this run (or the record's earlier
    run) writes, and the folder probe's ``.zoodesk-write-test-*.part``, are touched.
    """
    removed: list[str] = []
    folders: dict[Path, set[str]] = {}
    for rel in names:
        path = out_dir / rel
        folders.setdefault(path.parent, set()).add(path.name)
    folders.setdefault(out_dir, set())
    for folder, finals in folders.items():
        if not folder.is_dir():
            continue
        for candidate in folder.iterdir():
            name = candidate.name
            if not (name.startswith(".") and name.endswith(".part")):
                continue
            # ".NAME.<random>[suffix].part": try NAME at every dot (few per name).
            dots = [i for i, ch in enumerate(name) if ch == "." and i > 1]
            ours = name.startswith(".zoodesk-write-test-") and folder == out_dir
            ours = ours or any(name[1:i] in finals for i in dots)
            if not ours or candidate.is_symlink():
                continue
            with contextlib.suppress(OSError):
                if candidate.is_dir():  # an OME-Zarr store being written
                    shutil.rmtree(candidate)
                else:
                    candidate.unlink()
                removed.append(str(candidate.relative_to(out_dir)))
    return sorted(removed)


def default_output_folder(
    first_input: Path, *, samples: Path | None, home: Path, stamp: str
) -> Path:
    """Where a run's results go unless the user says otherwise: a new folder beside
    the first input, ``NAME-zoodesk-STAMP``; the built-in samples' results go under
    ``home/results`` (the samples sit inside the installation, which may be
    read-only)."""
    if samples is not None and first_input.resolve() == samples.resolve():
        return home / "results" / f"samples-{stamp}"
    folder = first_input if first_input.is_dir() else first_input.parent
    return folder.parent / f"{folder.name}-zoodesk-{stamp}"
