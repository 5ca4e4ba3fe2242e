"""The events a prediction run yields (:func:`zoodesk.batch.runner.run_prediction`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoodesk.batch.record import FileEntry, RunRecord


@dataclass(frozen=True)
class RunStarted:
    """The run is set up: files found, model loaded, device known.

    ``skipped`` inputs are already done (verified outputs of an earlier run);
    ``to_do_bytes`` is the size of the input files still to process (for an ETA);
    ``cleaned`` lists leftover temporary files of an interrupted run that were
    deleted; ``warnings`` (also kept in the record) include the folders whose files
    were not looked at (unreadable, links to folders).
    """

    run_id: str
    total: int
    to_do: int
    device: str
    device_description: str
    weights_format: str
    record_path: Path
    warnings: tuple[str, ...] = ()
    skipped: int = 0
    to_do_bytes: int = 0
    cleaned: tuple[str, ...] = ()
    #: Where the inputs are processed, when not in this process (a cluster).
    where: str = ""


@dataclass(frozen=True)
class FileStarted:
    """Work on one input begins (it may still be being read in the background)."""

    index: int
    path: Path
    #: The series' name for an input that is one series of a multi-series file.
    scene: str | None = None


@dataclass(frozen=True)
class BlockProgress:
    """Progress within one input: ``done`` of ``total`` units of ``phase``.

    ``phase`` is ``blocks`` (session calls over all frames) or, for images
    processed block by block from disk, first ``statistics`` (bands read to compute
    the whole-image statistics).
    """

    index: int
    done: int
    total: int
    phase: str = "blocks"


@dataclass(frozen=True)
class FileFinished:
    """One input is done (ok, failed, skipped or not done); ``entry`` is its record."""

    index: int
    path: Path
    entry: FileEntry


@dataclass(frozen=True)
class RunWarning:
    """Something the user should know that does not fail an input."""

    message: str


@dataclass(frozen=True)
class RunFinished:
    """The run is over; ``record`` is final (``record_saved``: it reached the disk)."""

    record: RunRecord
    record_saved: bool = True

    @property
    def all_ok(self) -> bool:
        return all(f.status in ("ok", "skipped") for f in self.record.files)


Event = RunStarted | FileStarted | BlockProgress | FileFinished | RunWarning | RunFinished
