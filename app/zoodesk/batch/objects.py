"""Objects and measurements in runs: after an image's outputs, and again for a finished run.

:func:`add_instances` runs the instance step (:mod:`zoodesk.instances`) on one
image's freshly written outputs, inside the prediction run's writer; its label image
and table become outputs of that image in the run record.  :func:`measure_run` does
the same for every image of an earlier run, from the files in its folder, without
running the model again (``zoodesk measure``).  :func:`write_summary` writes the
run's ``summary.csv``, one row per image.  :func:`object_table` and
:func:`run_measurements` read the tables back, for viewers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoodesk.batch.outfolder import FolderLock
from zoodesk.batch.record import (
    RECORD_NAME,
    SUMMARY_NAME,
    FileEntry,
    OutputEntry,
    RunRecord,
    now_iso,
)
from zoodesk.errors import CancelledError, ZooDeskError
from zoodesk.fileutils import path_inside, sha256_input
from zoodesk.instances import InstanceSettings, InstanceSettingsError
from zoodesk.instances.measure import (
    histogram,
    numbers,
    object_columns,
    read_table,
    summary_columns,
    write_table,
)
from zoodesk.instances.settings import check_against, resolve
from zoodesk.models.spec import ModelSpec, TensorSpec

log = logging.getLogger(__name__)

#: The kinds of the outputs that the instance step adds to an image.
INSTANCE_KINDS = ("instance-labels", "measurements")


def instance_names(key: str, output_format: str) -> list[str]:
    """The files the instance step writes for the input ``key`` (relative to the folder)."""
    names = [f"{key}_objects.csv"]
    if output_format != "ome-zarr":
        names.append(f"{key}_instances.ome.tif")
    return names


def _source_tensor(spec: ModelSpec | None, settings: InstanceSettings) -> TensorSpec | None:
    if spec is None or settings.source is None:
        return None
    with contextlib.suppress(KeyError):
        return spec.tensor(settings.source)
    return None


def add_instances(
    out_dir: Path,
    entry: FileEntry,
    written: list[OutputEntry],
    settings: InstanceSettings,
    spec: ModelSpec | None,
    *,
    arrays: Mapping[str, tuple[np.ndarray, str]] | None,
    pixel_sizes: Mapping[str, tuple[float, str]] | None,
    image: Any | None,
    output_format: str,
    compression: str,
    provenance: Mapping[str, str],
    whole_frames: bool,
    cancelled: Callable[[], bool] = lambda: False,
) -> list[OutputEntry]:
    """Objects of one image from its written outputs; returns all its outputs.

    The outputs returned are ``written`` (with an OME-Zarr store's checksum renewed,
    as its label image now lies inside it) plus the label image and the table.
    ``entry.instances`` gets what was found.  ``arrays`` are the outputs still in
    memory, with the source output's ``pixel_sizes`` (else both are read back from
    the files); ``image`` is the input, for intensities.
    """
    from zoodesk.images import read_image
    from zoodesk.images.tiles import TiffTiles

    source = next((o for o in written if o.tensor == settings.source), None)
    if source is None:
        raise InstanceSettingsError(f"no output {settings.source!r} was written for this image")
    if arrays is not None and source.tensor in arrays:
        array, axes = arrays[source.tensor]
        sizes = dict(pixel_sizes or {})
    else:
        # Read back from the file: a large output comes as a map, paged from disk, or
        # (compressed tiles) decoded tile by tile as the blocks are read.
        written_image = read_image(out_dir / source.path, tiles=not whole_frames)
        array, axes, sizes = written_image.array, written_image.axes, written_image.pixel_sizes
    from zoodesk.instances.step import find_instances

    try:
        result = find_instances(
            array,
            axes,
            settings,
            out_dir=out_dir,
            key=entry.key,
            pixel_sizes=sizes,
            output_format=output_format,
            zarr_store=source.path if output_format == "ome-zarr" else None,
            tensor=_source_tensor(spec, settings),
            image=image.array if image is not None else None,
            image_axes=image.axes if image is not None else None,
            image_channel_names=image.channel_names if image is not None else None,
            provenance=provenance,
            whole_frames=whole_frames,
            compression=compression,
            cancelled=cancelled,
        )
    finally:
        if isinstance(array, TiffTiles):
            array.close()
    outputs = [o for o in written if o.kind not in INSTANCE_KINDS]
    if output_format == "ome-zarr":
        source.sha256 = sha256_input(out_dir / source.path)
    outputs.append(
        OutputEntry(
            tensor=str(settings.source),
            path=result.labels,
            sha256=sha256_input(out_dir / result.labels),
            axes=result.label_axes,
            shape=result.label_shape,
            dtype=result.label_dtype,
            kind="instance-labels",
        )
    )
    columns = len((out_dir / result.objects).open(encoding="utf-8").readline().split(","))
    outputs.append(
        OutputEntry(
            tensor=str(settings.source),
            path=result.objects,
            sha256=sha256_input(out_dir / result.objects),
            axes="",
            shape=[result.count, columns],
            dtype="csv",
            kind="measurements",
        )
    )
    entry.instances = {"settings": settings.as_dict(), **result.as_record()}
    return outputs


def _drop_stale_objects(run_dir: Path, entry: FileEntry, output_format: str) -> None:
    """Forget (and delete) an image's objects of earlier settings after remaking them failed.

    The record's settings are the new ones: the old label image and table would
    otherwise stay listed as this image's outputs, and stay in the folder, as if made
    with them.  A label image inside an OME-Zarr store is left there (the store's
    checksum covers it) but no longer listed.
    """
    entry.outputs = [o for o in entry.outputs if o.kind not in INSTANCE_KINDS]
    for name in instance_names(entry.key, output_format):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink(missing_ok=True)


def summary_rows(record: RunRecord) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and rows of a run's ``summary.csv`` (images with objects only)."""
    rows: list[dict[str, Any]] = []
    columns: list[str] = []
    for entry in record.files:
        found = entry.instances
        if entry.status not in ("ok", "skipped") or not found or "summary" not in found:
            continue
        spatial = str(found.get("spatial_axes") or "YX")
        channels = list(found.get("intensity_channels") or [])
        for col in summary_columns(spatial, channels):
            if col["name"] not in columns:
                columns.append(col["name"])
        rows.append(
            {
                "image": entry.key,
                "input": entry.input,
                "scene": entry.scene or "",
                "frames": found.get("frames", 1),
                **found["summary"],
            }
        )
    return columns, rows


def write_summary(record: RunRecord) -> Path | None:
    """Write ``summary.csv`` beside the record; None (and no file) when no image has objects."""
    columns, rows = summary_rows(record)
    path = record.path.parent / SUMMARY_NAME
    if not rows:
        # A summary of earlier objects would contradict the record.
        path.unlink(missing_ok=True)
        return None
    write_table(path, columns, rows)
    return path


# ------------------------------------------------------------------ reading the tables back

#: Columns of ``objects.csv`` that name an object rather than measure it.
_IDENTIFIERS = ("label", "frame")
#: Where an object is, rather than what it is like: offered after the others.
_POSITION_PREFIXES = ("centroid_", "bbox_")


@dataclass
class ObjectTable:
    """One image's ``objects.csv`` read back: its columns and rows (cells as text)."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str]]
    _index: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            try:
                key = (int(row.get("label") or 0), int(row.get("frame") or 0))
            except ValueError:
                continue
            self._index.setdefault(key, i)

    def find(self, label: int, frame: int = 0) -> dict[str, str] | None:
        """The row of object ``label`` in time point ``frame``; None when there is none."""
        i = self._index.get((int(label), int(frame)))
        return self.rows[i] if i is not None else None


def object_table(record: RunRecord, entry: FileEntry) -> ObjectTable | None:
    """The objects table of one image of a run; None when the image has no objects.

    Raises :class:`ZooDeskError` naming the file when the table is gone or unreadable.
    """
    found = entry.instances
    if not found or not found.get("objects"):
        return None
    path = path_inside(record.path.parent, str(found["objects"]))
    columns, rows = read_table(path)
    return ObjectTable(path, columns, rows)


@dataclass
class RunMeasurements:
    """Every object of a run, one array of values per measurement column.

    Attributes
    ----------
    columns
        The measurement columns holding at least one number: sizes, shapes and
        intensities first, then positions (centroids, bounding boxes).
    values
        Per column, the values of every object of every image (NaN where unknown).
    units
        Per column, its unit (empty when it has none).
    images, objects
        Images with a table, and objects in them.
    problems
        One line per table that could not be read (those images are left out).
    """

    columns: list[str]
    values: dict[str, np.ndarray]
    units: dict[str, str]
    images: int = 0
    objects: int = 0
    problems: list[str] = field(default_factory=list)

    def histogram(self, column: str, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Counts and edges of the column's values in ``bins`` equal bins."""
        return histogram(self.values.get(column, np.empty(0)), bins)


def run_measurements(record: RunRecord) -> RunMeasurements:
    """Read the objects tables of every image of a run (images without objects skipped)."""
    seen: list[str] = []
    parts: dict[str, list[np.ndarray]] = {}
    units: dict[str, str] = {}
    images = objects = 0
    problems: list[str] = []
    for entry in record.files:
        if entry.status not in ("ok", "skipped"):
            continue
        try:
            table = object_table(record, entry)
        except ZooDeskError as exc:
            problems.append(str(exc))
            continue
        if table is None:
            continue
        found = entry.instances or {}
        spatial = str(found.get("spatial_axes") or "YX")
        for col in object_columns(spatial, list(found.get("intensity_channels") or [])):
            units.setdefault(col["name"], col["unit"])
        for name in table.columns:
            if name not in _IDENTIFIERS and name not in parts:
                seen.append(name)
                # Objects of the images before this one have no value in this column.
                parts[name] = [np.full(objects, np.nan)]
        for name in seen:
            if name in table.columns:
                parts[name].append(numbers(table.rows, name))
            else:
                parts[name].append(np.full(len(table.rows), np.nan))
        images += 1
        objects += len(table.rows)
    values = {name: np.concatenate(parts[name]) for name in seen}
    usable = [name for name in seen if np.isfinite(values[name]).any()]
    usable.sort(key=lambda name: name.startswith(_POSITION_PREFIXES))
    return RunMeasurements(
        columns=usable,
        values={name: values[name] for name in usable},
        units={name: units.get(name, "") for name in usable},
        images=images,
        objects=objects,
        problems=problems,
    )


# ------------------------------------------------------------------ measuring a whole run


@dataclass(frozen=True)
class MeasureStarted:
    """``zoodesk measure`` begins: ``total`` images, with these settings."""

    total: int
    settings: InstanceSettings
    reason: str


@dataclass(frozen=True)
class ImageMeasured:
    """One image is done: ``entry.instances`` holds its objects (or ``error`` says why not)."""

    index: int
    entry: FileEntry
    error: str | None = None


@dataclass(frozen=True)
class MeasureFinished:
    """All images are done, or ``cancelled`` stopped it before the last one;
    ``summary`` is the run's ``summary.csv`` (None if empty)."""

    record: RunRecord
    summary: Path | None
    failed: int
    cancelled: bool = False


MeasureEvent = MeasureStarted | ImageMeasured | MeasureFinished


def run_model_spec(record: RunRecord) -> ModelSpec | None:
    """The description of the model that made the run, if it can still be loaded."""
    source = record.model.get("source")
    if not source:
        return None
    try:
        from zoodesk.models import resolve_model

        return resolve_model(str(source)).spec
    except Exception:  # the model may be gone from the cache: measure without it
        log.debug("cannot load the run's model %s", source, exc_info=True)
        return None


def measure_settings(
    record: RunRecord, choice: str | None, overrides: Mapping[str, Any] | None
) -> tuple[InstanceSettings, str, ModelSpec | None]:
    """The settings ``zoodesk measure`` uses: the choice, or the run's own, with overrides."""
    spec = run_model_spec(record)
    recorded = record.parameters.get("instances")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if choice is None and isinstance(recorded, Mapping):
        settings = InstanceSettings.from_dict({**recorded, **overrides})
        reason = "the run's own settings"
    elif choice is None or choice == "auto":
        if spec is None:
            raise ZooDeskError(
                f"{record.path}: the run's model is not in the cache, so no method can be "
                "proposed; choose one with --instances"
            )
        settings, reason = resolve(spec, "auto", overrides)
    else:
        if spec is not None:
            settings, reason = resolve(spec, choice, overrides)
        else:
            settings = InstanceSettings.from_dict({"method": choice, **overrides})
            reason = "chosen"
    if settings.source is None:
        outputs = record.model.get("outputs") or []
        if not outputs:
            raise ZooDeskError(f"{record.path}: the record names no model outputs")
        settings = InstanceSettings.from_dict({**settings.as_dict(), "source": outputs[0]["id"]})
    if spec is not None:
        settings = check_against(spec, settings)
    return settings, reason, spec


def measure_run(
    run_dir: Path,
    choice: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    cancelled: Callable[[], bool] = lambda: False,
    block: bool = False,
) -> Iterator[MeasureEvent]:
    """(Re)make the objects and measurements of every image of a finished run.

    Reads each image's output from the run folder and its input file (for
    intensities; an input that is gone or changed is measured without them, with a
    warning), writes the label images and tables, updates the run record (the
    settings under ``parameters.instances``) and ``summary.csv``.  ``block`` labels
    in blocks from disk even for images that fit in memory.

    Cancelling stops before the next image or part-way through one: that image and
    the ones after it keep their earlier objects (files and record entry), and the
    run's ``parameters.instances`` stay as they were, since not every image has the
    new settings; each image's entry says which settings made its objects.
    """
    from zoodesk.batch.messages import describe_error
    from zoodesk.images import read_image
    from zoodesk.images.tiles import TiffTiles

    run_dir = Path(run_dir).expanduser().resolve()
    record_path = run_dir / RECORD_NAME
    if not record_path.is_file():
        raise ZooDeskError(f"{run_dir}: no run record ({RECORD_NAME}) here")
    lock = FolderLock(run_dir)
    try:
        record = RunRecord.load(record_path)
        settings, reason, spec = measure_settings(record, choice, overrides)
        output_format = str(record.parameters.get("output_format") or "ome-tiff")
        compression = str(record.parameters.get("compression") or "zlib")
        todo = [
            i for i, e in enumerate(record.files) if e.status in ("ok", "skipped") and e.outputs
        ]
        yield MeasureStarted(total=len(todo), settings=settings, reason=reason)
        failed = 0
        stopped = False
        for n, i in enumerate(todo):
            if cancelled():
                stopped = True
                break
            entry = record.files[i]
            earlier = (entry.instances, list(entry.outputs))
            image = None
            warnings: list[str] = []
            streamed = entry.streamed or block
            try:
                input_path = Path(entry.input)
                if input_path.exists() and sha256_input(input_path) == entry.input_sha256:
                    # A streamed image's input is read where its objects lie, never whole.
                    image = read_image(input_path, series=entry.series or 0, tiles=streamed)
                else:
                    warnings.append(f"{input_path}: gone or changed, intensities not measured")
                written = [o for o in entry.outputs if o.kind not in INSTANCE_KINDS]
                for o in written:
                    path_inside(run_dir, o.path)
                entry.outputs = add_instances(
                    run_dir,
                    entry,
                    written,
                    settings,
                    spec,
                    arrays=None,
                    pixel_sizes=None,
                    image=image,
                    output_format=output_format,
                    compression=compression,
                    provenance={
                        "source_image": Path(entry.input).name,
                        "source_image_sha256": entry.input_sha256 or "",
                        "run_id": record.run_id,
                        "created": now_iso(),
                    },
                    whole_frames=not streamed,
                    cancelled=cancelled,
                )
                assert entry.instances is not None
                entry.instances["warnings"] = [*warnings, *entry.instances.get("warnings", [])]
                entry.instances["measured"] = now_iso()
                yield ImageMeasured(n, entry)
            except CancelledError:
                # Stopped before anything of this image was written: it keeps its objects.
                entry.instances, entry.outputs = earlier
                stopped = True
                break
            except Exception as exc:  # one image's problem never stops the others
                log.debug("measuring %s failed", entry.input, exc_info=True)
                failed += 1
                message = describe_error(Path(entry.input), exc, run_dir)
                entry.instances = {"settings": settings.as_dict(), "error": message}
                _drop_stale_objects(run_dir, entry, output_format)
                yield ImageMeasured(n, entry, error=message)
            finally:
                if image is not None and isinstance(image.array, TiffTiles):
                    image.array.close()
            record.save()
        if not stopped:
            record.parameters["instances"] = settings.as_dict()
            record.signature["instances"] = settings.as_dict()
        record.save()
        yield MeasureFinished(record, write_summary(record), failed, cancelled=stopped)
    finally:
        lock.release()
