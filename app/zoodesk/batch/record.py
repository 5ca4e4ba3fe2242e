"""The run record: a JSON file in the output folder, updated after every input.

It says what ran (model, weights and their checksums, device, parameters, software
versions), when, and what became of every input (ok / failed with the error /
skipped / not done), with the sha256 of every output so that a re-run can skip
finished inputs and an export can prove which file came from where.
"""

from __future__ import annotations

import json
import platform
import sys
import uuid
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from zoodesk import __version__
from zoodesk.errors import ZooDeskError
from zoodesk.fileutils import UnsafePathError, atomic_write_text, parse_json, path_inside
from zoodesk.versions import installed_versions

RECORD_NAME = "zoodesk-run.json"
#: The per-image table of a run that made objects (written by :mod:`zoodesk.batch.objects`).
SUMMARY_NAME = "summary.csv"
RECORD_SCHEMA = "zoodesk-run/1"

FileStatus = Literal["pending", "ok", "failed", "skipped", "not done"]
RunStatus = Literal["running", "finished", "cancelled", "failed"]

_VERSIONED_PACKAGES = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "bioimageio.spec",
    "bioimageio.core",
    "numpy",
    "tifffile",
)


def now_iso() -> str:
    """The current UTC time in ISO 8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def software_versions() -> dict[str, str]:
    """Versions of ZooDesk, Python and the libraries that shape the results."""
    versions = {"zoodesk": __version__, "python": platform.python_version()}
    installed = installed_versions(_VERSIONED_PACKAGES)
    versions.update((n, installed[n]) for n in _VERSIONED_PACKAGES if n in installed)
    versions["platform"] = f"{platform.system()} {platform.release()} {platform.machine()}"
    if getattr(sys, "frozen", False):
        versions["frozen"] = "yes"
    return versions


@dataclass
class OutputEntry:
    """One written output file.

    ``kind`` is ``probabilities``, ``labels`` (integer outputs of the model),
    ``image``, or what the instance step added: ``instance-labels`` (a label image
    of objects) and ``measurements`` (the objects' table, ``dtype`` ``csv``).
    """

    tensor: str
    path: str
    sha256: str
    axes: str
    shape: list[int]
    dtype: str
    kind: str = "probabilities"


@dataclass
class FileEntry:
    """What happened to one input.

    ``seconds`` is the prediction time (reading and writing overlap with other
    inputs and are given apart: ``read_seconds`` includes hashing and checks,
    ``write_seconds`` compression and checksums); ``inference_seconds`` the part
    spent in the runtime.  ``axes``, ``shape``, ``pixel_sizes``, ``channel_names``
    ``series`` and ``scene`` describe the input image as read.  ``streamed`` is true when the
    image was processed block by block from disk.  ``run_id`` names the run that
    wrote the outputs (an earlier one for inputs ``skipped`` by a re-run).
    """

    input: str
    status: FileStatus = "pending"
    key: str = ""
    input_size: int | None = None
    input_mtime_ns: int | None = None
    input_sha256: str | None = None
    error: str | None = None
    outputs: list[OutputEntry] = field(default_factory=list)
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    axes: str | None = None
    axes_mapping: str | None = None
    tiling: dict[str, Any] | None = None
    pixel_sizes: dict[str, list[Any]] | None = None
    shape: list[int] | None = None
    series: int | None = None
    #: The series' name, for an input that is one series of a multi-series file.
    scene: str | None = None
    channel_names: list[str] | None = None
    streamed: bool = False
    read_seconds: float | None = None
    inference_seconds: float | None = None
    write_seconds: float | None = None
    run_id: str | None = None
    #: The objects made from the outputs (:mod:`zoodesk.batch.objects`): settings,
    #: count, summary, the label image and table; or ``error``.
    instances: dict[str, Any] | None = None
    #: Where a cluster ran it (:mod:`zoodesk.cluster`): the worker's ``address``,
    #: ``host``, ``pid`` and ``device``, and ``lost_workers`` that died running it
    #: before it was rerun elsewhere.  None for a run in this process.
    worker: dict[str, Any] | None = None


@dataclass
class RunRecord:
    """The whole record; :meth:`save` writes it atomically."""

    path: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    schema: str = RECORD_SCHEMA
    status: RunStatus = "running"
    started: str = field(default_factory=now_iso)
    finished: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    software: dict[str, str] = field(default_factory=software_versions)
    files: list[FileEntry] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    signature: dict[str, Any] = field(default_factory=dict)
    #: What the user was warned of when the run started (folders not looked into,
    #: a device fallback, an unreadable earlier record), one line each.
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        data["summary"] = self.summary()
        return data

    def inputs_left_out(self, processed: Collection[str]) -> tuple[str, ...]:
        """This run's inputs that have outputs (finished, or done by a run before it)
        and are not among ``processed``, the inputs of a run about to start here: the
        record of that run would leave them, and their outputs, unnamed."""
        return tuple(
            dict.fromkeys(
                f.input
                for f in self.files
                if f.status in ("ok", "skipped") and f.outputs and f.input not in processed
            )
        )

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {"total": len(self.files)}
        for f in self.files:
            counts[f.status] = counts.get(f.status, 0) + 1
        return counts

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.to_json(), indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        """Read a record written by :meth:`save`.

        Output paths and input keys (the stems of output names) must stay inside the
        record's folder: a record naming a file elsewhere is refused as a whole, so
        that neither a re-run nor an export reads, writes or deletes outside it.
        """
        try:
            data = parse_json(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ZooDeskError(f"{path}: not a readable run record ({exc})") from exc
        if not isinstance(data, dict) or data.get("schema") != RECORD_SCHEMA:
            raise ZooDeskError(f"{path}: not a ZooDesk run record")
        try:
            files = []
            for f in data.get("files", []):
                outputs = [OutputEntry(**_known(OutputEntry, o)) for o in f.pop("outputs", [])]
                files.append(FileEntry(**_known(FileEntry, f), outputs=outputs))
            data["files"] = files
            known = _known(cls, data)
            known.pop("path", None)
            record = cls(path=Path(path), **known)
        except (TypeError, AttributeError) as exc:
            raise ZooDeskError(f"{path}: damaged run record ({exc})") from exc
        _check_paths(record)
        return record


def _check_paths(record: RunRecord) -> None:
    folder = record.path.parent
    for entry in record.files:
        named = [("output path", o.path) for o in entry.outputs]
        if entry.key:
            named.append(("key", entry.key))
        for what, rel in named:
            try:
                path_inside(folder, str(rel))
            except UnsafePathError as exc:
                raise ZooDeskError(
                    f"{record.path}: refused: {what} {exc} (input {entry.input!r})"
                ) from exc


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of ``cls`` (records written by a newer
    version may carry more)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
