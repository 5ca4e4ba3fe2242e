"""Turn a finished run into a deposition package, as a generator of events.

:func:`export_run` is the one engine behind ``zoodesk export`` and the desktop
application's export page: it yields plain event objects (progress in bytes while
files are copied) and checks a ``cancelled`` callable between chunks, so any front
end can drive it; :func:`run_export` is the blocking wrapper.

The run directory is only read.  Everything is written into a temporary folder
beside the destination, which is renamed to the destination's name only once the
package is complete (manifest last); a failed or cancelled export removes it and
leaves nothing under the final name.

Replacing an earlier export (``overwrite``) deletes only what ZooDesk wrote there:
the files its manifest lists, unchanged.  Files added since, or changed since, are
moved into a folder beside it, ``<name>-kept-files-<date>-<time>``
(:mod:`zoodesk.export.replace`), and a warning says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zoodesk.batch.record import RECORD_NAME, RunRecord
from zoodesk.errors import CancelledError, ZooDeskError
from zoodesk.export.annotations import instance_method_text
from zoodesk.export.bia import (
    BIA_FILE_LIST,
    facts_text,
    missing_for_archive,
    submission_crate,
)
from zoodesk.export.bia import file_list as bia_file_list
from zoodesk.export.crate import CRATE_METADATA, FileFacts, build_crate, write_crate
from zoodesk.export.filelists import IMAGES_LIST, MEASUREMENTS_LIST, images_list, output_lists
from zoodesk.export.layout import ExportPlan, InputMode, PlannedInput, plan_export
from zoodesk.export.ome import companion_xml, ome_xml_of, pixel_sizes_of, provenance_of
from zoodesk.export.pagetab import PAGETAB_PATH, pagetab
from zoodesk.export.provenance import (
    MODEL_RDF_PATH,
    RUN_JSON_PATH,
    ModelSummary,
    describe_model,
    run_provenance,
)
from zoodesk.export.readme import readme_text
from zoodesk.export.rembi import (
    REMBI_PATH,
    acquisition_section,
    coverage,
    image_info,
    rembi_mifa,
)
from zoodesk.export.replace import replace_folder
from zoodesk.export.study import StudyMetadata, dump_yaml
from zoodesk.export.tables import write_tables_metadata
from zoodesk.export.zenodo import ZENODO_PATH, zenodo_metadata
from zoodesk.fileutils import folder_files, sha256_file

log = logging.getLogger(__name__)

MANIFEST = "manifest-sha256.txt"
README = "README.md"

_CHUNK = 1 << 20

# Files whose presence marks a folder as an earlier export (safe to replace).
_EXPORT_MARKERS = (MANIFEST, CRATE_METADATA)


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class ExportStarted:
    """The run is read and checked; copying starts."""

    run_id: str
    run_dir: Path
    destination: Path
    mode: InputMode
    inputs: int
    inputs_done: int
    outputs: int
    total_bytes: int


@dataclass(frozen=True)
class ExportProgress:
    """Progress within a stage: ``copy`` (bytes), ``metadata`` and ``checksums`` (files)."""

    stage: str
    done: int
    total: int
    path: str = ""


@dataclass(frozen=True)
class ExportWarning:
    """Something the user should know; the export goes on."""

    message: str


@dataclass(frozen=True)
class ExportResult:
    """What was written."""

    destination: Path
    mode: InputMode
    files: int
    size: int
    inputs: int
    inputs_done: int
    failures: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...] = ()
    #: What the archive requires that the study metadata did not give: a draft.
    missing_for_archive: tuple[str, ...] = ()
    #: Where the files of the replaced export that ZooDesk had not written (or that
    #: were changed since) were moved, and those files (relative paths).
    kept_folder: Path | None = None
    kept_files: tuple[str, ...] = ()

    @property
    def draft(self) -> bool:
        """True when the archive would not accept the package as it is."""
        return bool(self.missing_for_archive)

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": str(self.destination),
            "mode": self.mode,
            "files": self.files,
            "size": self.size,
            "inputs": self.inputs,
            "inputs_done": self.inputs_done,
            "failures": [{"input": i, "error": e} for i, e in self.failures],
            "warnings": list(self.warnings),
            "draft": self.draft,
            "missing_for_archive": list(self.missing_for_archive),
            "kept_folder": str(self.kept_folder) if self.kept_folder else None,
            "kept_files": list(self.kept_files),
        }


@dataclass(frozen=True)
class ExportFinished:
    result: ExportResult


ExportEvent = ExportStarted | ExportProgress | ExportWarning | ExportFinished


# ----------------------------------------------------------------------------- request


@dataclass
class ExportRequest:
    """Everything an export needs.

    Attributes
    ----------
    run_dir
        The output folder of a ``zoodesk predict`` run (holds ``zoodesk-run.json``).
    destination
        The package folder to create.
    inputs
        ``include`` copies the input images into ``images/``; ``reference`` leaves
        them where they are and records their paths and checksums.
    study
        The user's study metadata (None: an empty form, licence CC-BY-4.0).
    overwrite
        Replace an earlier export in ``destination``; files there that ZooDesk did
        not write are moved aside, never deleted.
    """

    run_dir: Path
    destination: Path
    inputs: InputMode = "include"
    study: StudyMetadata | None = None
    overwrite: bool = False


@dataclass
class _Package:
    """The temporary folder being filled, and the facts of every file in it."""

    root: Path
    facts: dict[str, FileFacts] = field(default_factory=dict)
    #: OME-Zarr stores copied whole.  Each has its own facts (total size, checksum of
    #: its files in order) for the crates, and its files have theirs for the manifest.
    stores: set[str] = field(default_factory=set)

    def write_text(self, rel: str, text: str) -> None:
        data = text.encode("utf-8")
        self.write_bytes(rel, data)

    def write_bytes(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.facts[rel] = FileFacts(len(data), hashlib.sha256(data).hexdigest())


# ---------------------------------------------------------------------------- checks


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_destination(request: ExportRequest, run_dir: Path, plan: ExportPlan) -> Path:
    dest = Path(request.destination).expanduser().resolve()
    if _inside(dest, run_dir) or _inside(run_dir, dest):
        raise ZooDeskError(
            f"{dest}: the package cannot be written inside the run folder {run_dir} or "
            "around it (an export never modifies the run)"
        )
    for item in plan.inputs:
        if _inside(Path(item.entry.input), dest):
            raise ZooDeskError(
                f"{dest}: holds the run's input {item.entry.input}; choose another folder"
            )
    if dest.exists() and not dest.is_dir():
        raise ZooDeskError(f"{dest}: exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()):
        if not request.overwrite:
            raise ZooDeskError(
                f"{dest}: already exists and is not empty (use --overwrite to replace an "
                "earlier export)"
            )
        if not any((dest / marker).is_file() for marker in _EXPORT_MARKERS):
            raise ZooDeskError(
                f"{dest}: is not a ZooDesk export (no {MANIFEST}); --overwrite only "
                "replaces an earlier export, never another folder"
            )
    return dest


def _load_record(run_dir: Path) -> RunRecord:
    path = run_dir / RECORD_NAME
    if not path.is_file():
        raise ZooDeskError(f"{run_dir}: not a ZooDesk run folder (no {RECORD_NAME})")
    record = RunRecord.load(path)
    if record.status == "running":
        raise ZooDeskError(
            f"{path}: the run has not finished (status 'running'): wait for it, or run "
            "the same 'zoodesk predict' command again to complete it"
        )
    return record


def _model_description(record: RunRecord) -> tuple[Path, str]:
    source = record.model.get("source")
    expected = record.model.get("description_sha256", "")
    if not source:
        raise ZooDeskError(f"run {record.run_id}: the record names no model description")
    path = Path(source)
    if not path.is_file():
        raise ZooDeskError(
            f"{path}: the model description used by run {record.run_id} is gone; put the "
            f"model back there (its sha256 in the run record is {expected or 'unknown'}, "
            "to check the copy)"
        )
    actual = sha256_file(path)
    if expected and actual != expected:
        raise ZooDeskError(
            f"{path}: the model description changed since run {record.run_id} (sha256 "
            f"{actual}, recorded {expected}); the package would not describe the model "
            "that ran"
        )
    return path, actual


def _check_sources(plan: ExportPlan) -> None:
    for item in plan.done:
        for source in [o.source for o in item.outputs] + [t.source for t in item.tables]:
            if not source.exists():
                raise ZooDeskError(
                    f"{source}: output of run {plan.record.run_id} is missing; run "
                    "'zoodesk predict' again to recreate it"
                )
        if not Path(item.entry.input).exists():
            raise ZooDeskError(
                f"{item.entry.input}: input of run {plan.record.run_id} is not at its "
                "original path any more; the export reads it (to copy or reference it with "
                "its metadata)"
            )


# ----------------------------------------------------------------------------- copying


def _size(path: Path) -> int:
    """A file's size, or the total size of the files of a folder (an OME-Zarr store)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in folder_files(path))
    return path.stat().st_size


def _copy_verified(
    source: Path, target: Path, expected: str | None, cancelled: Callable[[], bool]
) -> Generator[int, None, tuple[FileFacts, dict[str, FileFacts]]]:
    """Copy byte for byte, hashing on the way; yield bytes copied per chunk.

    A folder (an OME-Zarr store) is copied file by file; its checksum is that of
    :func:`zoodesk.fileutils.sha256_input` (each file's relative path, a NUL, its
    bytes), and each file's own facts are returned beside it.
    """
    files = folder_files(source) if source.is_dir() else [source]
    tree = hashlib.sha256()
    inner: dict[str, FileFacts] = {}
    total = 0
    for file in files:
        rel = file.relative_to(source).as_posix() if source.is_dir() else ""
        if rel:
            tree.update(rel.encode("utf-8") + b"\0")
        destination = target / rel if rel else target
        destination.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        with file.open("rb") as src, destination.open("wb") as dst:
            while chunk := src.read(_CHUNK):
                if cancelled():
                    raise CancelledError("export cancelled")
                digest.update(chunk)
                tree.update(chunk)
                dst.write(chunk)
                size += len(chunk)
                yield len(chunk)
        inner[rel] = FileFacts(size, digest.hexdigest())
        total += size
    sha = tree.hexdigest() if source.is_dir() else inner[""].sha256
    if expected and sha != expected:
        raise ZooDeskError(
            f"{source}: changed since the run (sha256 {sha}, recorded {expected}); "
            "run 'zoodesk predict' again before exporting"
        )
    return FileFacts(total, sha), ({} if not source.is_dir() else inner)


def _hash_file(path: Path, cancelled: Callable[[], bool]) -> Generator[int, None, FileFacts]:
    """Hash a file (or a store, as :func:`zoodesk.fileutils.sha256_input` does)."""
    digest = hashlib.sha256()
    size = 0
    for file in folder_files(path) if path.is_dir() else [path]:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
        with file.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                if cancelled():
                    raise CancelledError("export cancelled")
                digest.update(chunk)
                size += len(chunk)
                yield len(chunk)
    return FileFacts(size, digest.hexdigest())


def _store_metadata(store: Path) -> tuple[dict[str, str], dict[str, tuple[float, str]]]:
    """An OME-Zarr output's provenance (its ``zoodesk`` attributes) and pixel sizes."""
    from zoodesk.images import read_image
    from zoodesk.images.omezarr import group_attributes

    ours = group_attributes(store).get("zoodesk") or {}
    provenance = ours.get("provenance") if isinstance(ours, dict) else None
    sizes = read_image(store).pixel_sizes
    return (dict(provenance) if isinstance(provenance, dict) else {}), dict(sizes)


def _pixel_size_problem(
    item: PlannedInput,
    out_path: str,
    written: Mapping[str, tuple[float, str]],
    out_axes: str,
    out_shape: list[int],
) -> str | None:
    """Why an output's pixel sizes differ from its source's, or None."""
    source = {k: (float(v[0]), str(v[1])) for k, v in (item.entry.pixel_sizes or {}).items()}
    in_sizes = dict(zip(item.entry.axes or "", item.entry.shape or [], strict=False))
    out_sizes = dict(zip(out_axes, out_shape, strict=False))
    for axis, value in source.items():
        if in_sizes.get(axis) != out_sizes.get(axis):
            continue  # resampled by the model: the size differs by design
        got = written.get(axis)
        if (
            got is None
            or abs(got[0] - value[0]) > 1e-9 * max(1.0, abs(value[0]))
            or got[1] != value[1]
        ):
            return (
                f"{out_path}: physical size {axis} is {got} but the source image "
                f"{item.entry.input} has {value}"
            )
    return None


# ------------------------------------------------------------------------------ export


def export_run(
    request: ExportRequest, *, cancelled: Callable[[], bool] | None = None
) -> Iterator[ExportEvent]:
    """Write the deposition package of a run; yield events; the last is ExportFinished.

    Parameters
    ----------
    request
        Run folder, destination, input mode, study metadata, overwrite.
    cancelled
        Called between chunks; when it returns True the export stops, removes what
        it wrote and raises :class:`~zoodesk.errors.CancelledError`.

    Raises
    ------
    ZooDeskError
        When the run cannot be exported (not a run, unfinished, a file missing or
        changed since the run, destination not allowed); nothing is then written.
    """
    is_cancelled = cancelled or (lambda: False)
    run_dir = Path(request.run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise ZooDeskError(f"{run_dir}: no such run folder")
    record = _load_record(run_dir)
    plan = plan_export(record, run_dir, request.inputs)
    destination = _check_destination(request, run_dir, plan)
    description, rdf_sha = _model_description(record)
    _check_sources(plan)
    study = request.study or StudyMetadata()
    warnings: list[str] = []

    copies: list[tuple[Path, str, str | None]] = []
    for item in plan.done:
        if item.included and item.package_path and item.package_path not in {c[1] for c in copies}:
            copies.append((Path(item.entry.input), item.package_path, item.entry.input_sha256))
        copies.extend((o.source, o.package_path, o.entry.sha256) for o in item.outputs)
    # Each image's table is checked against the record; the run's summary has no checksum.
    copies.extend(
        (t.source, t.package_path, t.entry.sha256 if t.entry else None) for t in plan.tables
    )
    unread = [i for i in plan.inputs if not i.included and Path(i.entry.input).exists()]
    total_bytes = sum(_size(src) for src, _, _ in copies) + sum(
        _size(Path(i.entry.input)) for i in unread
    )

    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    )
    package = _Package(tmp)
    finished = False
    try:
        yield ExportStarted(
            run_id=record.run_id,
            run_dir=run_dir,
            destination=destination,
            mode=plan.mode,
            inputs=len(plan.inputs),
            inputs_done=len(plan.done),
            outputs=len(plan.outputs),
            total_bytes=total_bytes,
        )
        done_bytes = 0
        for source, rel, expected in copies:
            steps = _copy_verified(source, tmp / rel, expected, is_cancelled)
            while True:
                try:
                    done_bytes += next(steps)
                except StopIteration as stop:
                    facts, inner = stop.value
                    package.facts[rel] = facts
                    if source.is_dir():
                        package.stores.add(rel)
                        package.facts.update({f"{rel}/{k}": v for k, v in inner.items()})
                    break
                yield ExportProgress("copy", done_bytes, total_bytes, rel)
        originals: dict[int, FileFacts] = {}
        for item in unread:
            hashing = _hash_file(Path(item.entry.input), is_cancelled)
            while True:
                try:
                    done_bytes += next(hashing)
                except StopIteration as stop:
                    originals[item.number] = stop.value
                    break
                yield ExportProgress("copy", done_bytes, total_bytes, item.entry.input)
        for item in plan.done:
            recorded = item.entry.input_sha256
            measured = originals.get(item.number)
            if not item.included and measured and recorded and measured.sha256 != recorded:
                raise ZooDeskError(
                    f"{item.entry.input}: changed since the run (sha256 {measured.sha256}, "
                    f"recorded {recorded})"
                )

        yield from _write_metadata(
            plan, package, study, description, rdf_sha, originals, warnings, is_cancelled
        )
        for message in warnings:
            yield ExportWarning(message)

        manifest = "".join(
            f"{package.facts[rel].sha256}  {rel}\n"
            for rel in sorted(package.facts)
            if rel not in package.stores  # a folder: its files are listed instead
        )
        (tmp / MANIFEST).write_text(manifest, encoding="utf-8")
        if is_cancelled():
            raise CancelledError("export cancelled")
        kept_folder, kept = replace_folder(tmp, destination, MANIFEST)
        finished = True
        if kept_folder is not None:
            shown = ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
            message = (
                f"{destination}: {len(kept)} file(s) there that ZooDesk had not written "
                f"(added or changed since the earlier export) were moved to {kept_folder}: "
                f"{shown}"
            )
            warnings.append(message)
            yield ExportWarning(message)
        cover = coverage(plan)
        yield ExportFinished(
            ExportResult(
                destination=destination,
                mode=plan.mode,
                files=len(package.facts) - len(package.stores) + 1,
                size=sum(f.size for r, f in package.facts.items() if r not in package.stores)
                + len(manifest.encode()),
                inputs=len(plan.inputs),
                inputs_done=len(plan.done),
                failures=tuple((f["image"], f["error"] or f["status"]) for f in cover["failures"]),
                warnings=tuple(warnings),
                missing_for_archive=tuple(missing_for_archive(study)),
                kept_folder=kept_folder,
                kept_files=tuple(kept),
            )
        )
    finally:
        if not finished:
            shutil.rmtree(tmp, ignore_errors=True)


def _write_metadata(
    plan: ExportPlan,
    package: _Package,
    study: StudyMetadata,
    description: Path,
    rdf_sha: str,
    originals: dict[int, FileFacts],
    warnings: list[str],
    cancelled: Callable[[], bool],
) -> Iterator[ExportEvent]:
    steps = len(plan.done) + len(plan.outputs) + 8
    step = 0

    def progress(path: str) -> ExportProgress:
        nonlocal step
        step += 1
        if cancelled():
            raise CancelledError("export cancelled")
        return ExportProgress("metadata", min(step, steps), steps, path)

    package.write_bytes(MODEL_RDF_PATH, description.read_bytes())
    model = describe_model(description, plan.record.model, rdf_sha)
    yield progress(MODEL_RDF_PATH)

    infos: dict[int, dict[str, Any]] = {}
    for item in plan.done:
        # Runs over multi-series files record which series was processed.
        series = getattr(item.entry, "series", None) or 0
        infos[item.number] = image_info(Path(item.entry.input), series)
        if item.package_path and not item.included:
            package.write_text(item.package_path, _companion(item, infos[item.number], originals))
        yield progress(item.package_path or item.entry.input)

    created: dict[str, str] = {}
    for out in plan.outputs:
        item = plan.input_of(out)
        if out.package_path in package.stores:
            prov, written = _store_metadata(package.root / out.package_path)
        else:
            xml = ome_xml_of(package.root / out.package_path)
            if xml is None:
                warnings.append(f"{out.package_path}: not an OME-TIFF (no OME-XML)")
                yield progress(out.package_path)
                continue
            prov, written = provenance_of(xml), pixel_sizes_of(xml)
        if prov.get("created"):
            created[out.package_path] = prov["created"]
        problem = _pixel_size_problem(
            item, out.package_path, written, out.entry.axes, out.entry.shape
        )
        if problem:
            warnings.append(problem)
        yield progress(out.package_path)

    package.write_text(IMAGES_LIST, images_list(plan, infos))
    lists = output_lists(plan, model, created, instance_method_text(plan, model))
    for rel, text in lists.items():
        package.write_text(rel, text)
    schemas = write_tables_metadata(plan, package.root, package.write_text, warnings)
    package.write_text(BIA_FILE_LIST, bia_file_list(plan, schemas))
    yield progress("filelists")

    rembi = rembi_mifa(study, plan, model, infos, schemas)
    package.write_text(REMBI_PATH, dump_yaml(rembi))
    package.write_text(PAGETAB_PATH, pagetab(study, plan, model, rembi))
    package.write_text(
        ZENODO_PATH,
        json.dumps(zenodo_metadata(study, plan, model), indent=2, ensure_ascii=False) + "\n",
    )
    yield progress("metadata")

    package.write_text(
        RUN_JSON_PATH,
        json.dumps(run_provenance(plan, model), indent=2, ensure_ascii=False, default=str) + "\n",
    )
    listed = [IMAGES_LIST, *lists, *([MEASUREMENTS_LIST] if schemas else [])]
    package.write_text(README, readme_text(study, plan, model, listed))
    yield progress(README)

    title = study.title or f"Predictions of {model.name} on {len(plan.done)} images"
    summary = study.description or _crate_description(plan, model)
    published = datetime.now(UTC).isoformat(timespec="seconds")
    crate = build_crate(
        plan,
        model,
        study,
        package.facts,
        originals=originals,
        rdf_path=MODEL_RDF_PATH,
        title=title,
        description=summary,
        date_published=published,
        schemas=schemas,
    )
    path = write_crate(crate, package.root)
    package.facts[path.relative_to(package.root).as_posix()] = FileFacts(
        path.stat().st_size, sha256_file(path)
    )
    yield progress(path.relative_to(package.root).as_posix())

    acquisition = acquisition_section(study, plan, infos)["from_image_metadata"]
    submission = submission_crate(
        plan,
        model,
        study,
        title=title,
        description=summary,
        date_published=published,
        acquisition_facts=facts_text(acquisition),
        schemas=schemas,
    )
    package.write_text(CRATE_METADATA, json.dumps(submission, indent=2, ensure_ascii=False) + "\n")
    yield progress(CRATE_METADATA)


def _crate_description(plan: ExportPlan, model: ModelSummary) -> str:
    return (
        f"Results of the bioimage.io model {model.label} on {coverage(plan)['text']}, "
        "model-generated and not manually curated, with the provenance of the run."
    )


def _companion(item: PlannedInput, info: dict[str, Any], originals: dict[int, FileFacts]) -> str:
    entry = item.entry
    facts = originals.get(item.number)
    axes = info.get("axes") or entry.axes or "YX"
    shape = info.get("shape") or entry.shape or [1, 1]
    sizes = {k: (float(v[0]), str(v[1])) for k, v in (entry.pixel_sizes or {}).items()}
    return companion_xml(
        name=Path(entry.input).name,
        axes=axes,
        shape=shape,
        dtype=info.get("dtype", "uint8"),
        pixel_sizes=sizes,
        channel_names=info.get("channel_names"),
        reference={
            "original_path": entry.input,
            "original_size": str(facts.size if facts else entry.input_size),
            "original_sha256": facts.sha256 if facts else (entry.input_sha256 or ""),
            "note": "the image is referenced, not included in this package",
        },
    )


def run_export(
    request: ExportRequest,
    *,
    cancelled: Callable[[], bool] | None = None,
    on_event: Callable[[ExportEvent], None] | None = None,
) -> ExportResult:
    """Run :func:`export_run` to the end and return its result (blocking).

    ``on_event`` sees every event (e.g. to print progress).
    """
    result: ExportResult | None = None
    for event in export_run(request, cancelled=cancelled):
        if on_event is not None:
            on_event(event)
        if isinstance(event, ExportFinished):
            result = event.result
    if result is None:  # the generator always ends with ExportFinished or raises
        raise ZooDeskError("export ended without a result")
    return result
