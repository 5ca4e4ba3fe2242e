"""Batch prediction over files and folders, as a generator of events.

:func:`run_prediction` is the one engine behind ``zoodesk predict``, ``zoodesk
demo`` and the desktop application's batch page.  It yields plain event objects and
checks a ``cancelled`` callable between blocks, so any front end can drive it.

Pipeline
    The next file is read (decoded, checked for NaN/Inf, hashed) in a reader
    thread while the current one is computed, and the previous one's outputs are
    compressed and written in a writer thread.  Images above the streaming policy's
    threshold (:class:`~zoodesk.inference.streaming.StreamingPolicy`: by default
    more than 256 megapixels or a quarter of the available memory) are processed
    block by block from disk (:func:`~zoodesk.inference.streaming.predict_streaming`)
    and written tile by tile (:class:`~zoodesk.images.TiledOmeTiffWriter`).

Files still being written
    A file modified less than ``settle_seconds`` ago (default 2 s) is watched for
    that long before reading: if its size or modification time changes meanwhile,
    it fails as "still being written".  A file that changes while it is read fails
    the same way, and a truncated file fails with the reader's message.  Run the
    batch again once the acquisition is complete: finished files are skipped.

Crash safety and resume
    Outputs are written under temporary names (``.NAME.XXXXXXXX.part``) and renamed
    when complete; the run record is rewritten atomically as inputs finish (at
    most once a second, and at the end; a run killed in between redoes the inputs
    finished since the last save).  A
    re-run into the same output folder skips inputs whose record entry is ``ok``,
    whose size and modification time are unchanged, and whose outputs still have
    their recorded sha256; everything else is redone (outputs that exist but whose
    entry was still pending when the run was killed are rewritten).  The record's
    *signature* (model description and weights checksums, weights format, axes,
    channels, series, tile size, padding) must match: a folder holding results of
    another model or other parameters is refused unless ``overwrite`` is set, so
    results of two set-ups never mix.  Leftover temporary files of our own outputs
    and record (nothing else) are deleted at the start.  A lock file
    (``.zoodesk-run.lock``, an OS lock released when the process dies, even by
    SIGKILL) keeps two runs from writing into one folder at the same time.

Errors
    A problem with one input (unreadable, NaN/Inf, too small, axes that do not fit,
    disk full or a read-only sub-folder while writing its outputs) fails that input
    with a one-line message and the run goes on.  An output folder that cannot be
    created or written at all stops the run before it starts (the record could not
    be kept either).  If the record cannot be saved during the run (disk full), a
    :class:`RunWarning` says so and the run goes on; :attr:`RunFinished.record_saved`
    tells whether the final record reached the disk.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from zoodesk.batch.inputs import collect_inputs, expand_series, unique_keys
from zoodesk.batch.messages import describe_error
from zoodesk.batch.objects import SUMMARY_NAME, add_instances, instance_names, write_summary
from zoodesk.batch.outfolder import LOCK_NAME, FolderLock, clean_leftovers, prepare_output_folder
from zoodesk.batch.record import RECORD_NAME, FileEntry, OutputEntry, RunRecord, now_iso
from zoodesk.errors import CancelledError, ImageReadError, ZooDeskError
from zoodesk.fileutils import sha256_file, sha256_input
from zoodesk.images import channel_indices
from zoodesk.images.axes import AxisMapping, assemble_output, map_image_to_tensor
from zoodesk.images.discovery import SkippedFolder
from zoodesk.inference.predict import Predictor
from zoodesk.inference.streaming import (
    StreamingPolicy,
    StreamResult,
    finalize_output_dtype,
    predict_streaming,
)
from zoodesk.instances import InstanceSettings
from zoodesk.instances.settings import check_against
from zoodesk.models.package import ModelPackage
from zoodesk.models.spec import ModelSpec, TensorSpec

log = logging.getLogger(__name__)

__all__ = [
    "LOCK_NAME",
    "BlockProgress",
    "Event",
    "FileFinished",
    "FileStarted",
    "PredictionRequest",
    "RunFinished",
    "RunStarted",
    "RunWarning",
    "collect_inputs",
    "exit_code",
    "finalize_output_dtype",
    "output_kind",
    "output_pixel_sizes",
    "run_prediction",
    "run_signature",
    "unique_keys",
]

#: Default seconds a recently modified input is watched for changes before reading.
DEFAULT_SETTLE_SECONDS = 2.0
#: Least seconds between two saves of the run record during a run: rewriting it
#: after every file of a long run would cost time quadratic in the number of files.
#: A run killed in between redoes the files finished since the last save.
RECORD_SAVE_INTERVAL = 1.0
#: Tile shape of outputs written block by block.
STREAMED_TILE = (512, 512)
# Bytes checked at once for NaN/Inf.
_FINITE_CHECK_BYTES = 64 * 2**20


# ------------------------------------------------------------------------------ events


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


# ----------------------------------------------------------------------------- request


@dataclass
class PredictionRequest:
    """Everything a prediction run needs.  Paths are resolved by the runner.

    Attributes
    ----------
    model
        A model package, or a path / cached id for :func:`zoodesk.models.resolve_model`.
    inputs
        Image files and folders (a ``.txt``/``.lst``/``.list`` file is read as a list).
    output_dir
        Where outputs and the run record go.
    lists
        Files listing inputs (files or folders), one per line.
    series
        Which series of every file to read.  None (the default) reads each series of
        a multi-series microscope file (the scenes of a CZI, the positions of an ND2,
        the images of a LIF) as an input of its own, named ``file[scene]``, and the
        first series of other files.
    scenes
        Glob patterns (case-insensitive) on scene names: only the series of
        multi-series files whose name matches one are read; empty means all.
    streaming
        When images are processed block by block from disk.
    settle_seconds
        How long a recently modified input is watched for changes before reading.
    """

    model: str | Path | ModelPackage
    inputs: Sequence[Path]
    output_dir: Path
    device: str = "auto"
    weights_format: str | None = None
    patterns: Sequence[str] = ()
    recursive: bool = False
    axes: str | None = None
    #: Channels to feed the model, by index or by the name the file gives them.
    channels: Sequence[int | str] | None = None
    tile: Mapping[str, int] | None = None
    threads: int | None = None
    overwrite: bool = False
    pad_mode: str = "reflect"
    extra: dict[str, Any] = field(default_factory=dict)
    lists: Sequence[Path] = ()
    series: int | None = None
    scenes: Sequence[str] = ()
    streaming: StreamingPolicy = field(default_factory=StreamingPolicy)
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    #: Lossless compression of the OME-TIFF outputs: ``zlib`` (deflate, readable
    #: everywhere, the default), ``zstd`` (several times faster to write; needs a
    #: recent Bio-Formats or tifffile to read) or ``none``.
    compression: str = "zlib"
    #: ``ome-tiff`` (the default) or ``ome-zarr`` (NGFF 0.5 stores with a pyramid for
    #: large images; ``compression`` does not apply, they are zstd-compressed).
    output_format: str = "ome-tiff"
    #: Objects to make from an output after each image (label image, ``objects.csv``,
    #: and the run's ``summary.csv``); None makes none.
    instances: InstanceSettings | None = None

    def parameters(self) -> dict[str, Any]:
        """The request as recorded in the run record."""
        return {
            "inputs": [str(Path(p).resolve()) for p in self.inputs],
            "lists": [str(Path(p).resolve()) for p in self.lists],
            "output_dir": str(Path(self.output_dir).resolve()),
            "device_requested": self.device,
            "weights_format": self.weights_format,
            "patterns": list(self.patterns),
            "recursive": self.recursive,
            "axes": self.axes,
            "channels": list(self.channels) if self.channels is not None else None,
            "series": self.series,
            "scenes": list(self.scenes),
            "tile": dict(self.tile) if self.tile else None,
            "threads": self.threads,
            "pad_mode": self.pad_mode,
            "streaming": self.streaming.as_dict(),
            "settle_seconds": self.settle_seconds,
            "compression": self.compression,
            "output_format": self.output_format,
            "instances": self.instances.as_dict() if self.instances else None,
            **self.extra,
        }


# ---------------------------------------------------------------------------- helpers


def output_kind(tensor: TensorSpec, dtype: np.dtype[Any]) -> str:
    """``labels`` for integer outputs, ``probabilities`` for [0, 1] floats, else ``image``."""
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        return "labels"
    lo, hi = tensor.data_range
    if lo is not None and hi is not None and lo >= 0 and hi <= 1:
        return "probabilities"
    if any(op.id == "sigmoid" for op in tensor.postprocessing):
        return "probabilities"
    return "image"


def output_pixel_sizes(
    spec: ModelSpec,
    tensor: TensorSpec,
    source: Mapping[str, tuple[float, str]],
    axes: str = "",
) -> dict[str, tuple[float, str]]:
    """Physical pixel sizes of an output: the source's, rescaled where the model resamples.

    ``axes`` are the output's axes as written: a spatial axis there that the model does
    not have (the z-planes of a stack run plane by plane through a 2D model) keeps the
    source's size.
    """
    result: dict[str, tuple[float, str]] = {}
    model_letters = {ax.id.upper() for ax in tensor.axes if ax.kind == "space"}
    for letter in axes.upper():
        if letter in "XYZ" and letter not in model_letters and letter in source:
            result[letter] = source[letter]
    for ax in tensor.axes:
        letter = ax.id.upper()
        if ax.kind != "space" or letter not in "XYZ":
            continue
        ratio = 1.0
        if ax.reference is not None:
            ref = spec.tensor(ax.reference.tensor_id).axis(ax.reference.axis_id)
            ratio = ref.scale / ax.scale
            letter_src = ref.id.upper()
        else:
            letter_src = letter
        if letter_src in source:
            size, unit = source[letter_src]
            result[letter] = (size / ratio, unit)
    return result


def run_signature(
    package: ModelPackage, predictor: Predictor, request: PredictionRequest
) -> dict[str, Any]:
    """What makes outputs comparable between runs into one folder.

    Model description and weights (by checksum and format) and the parameters
    that change the pixels of the outputs: axes, channels, series, tile size and
    padding.  The device, threads and input list are not part of it.
    """
    weights = predictor.weights
    return {
        "description_sha256": sha256_file(package.description_path),
        "weights_format": weights.format,
        "weights_sha256": weights.source.sha256 or sha256_file(package.path_of(weights.source)),
        "axes": request.axes.upper() if request.axes else None,
        "channels": list(request.channels) if request.channels is not None else None,
        "series": request.series,
        "tile": dict(sorted(request.tile.items())) if request.tile else None,
        "pad_mode": request.pad_mode,
        "instances": request.instances.as_dict() if request.instances else None,
    }


_SIGNATURE_NAMES = {
    "description_sha256": "model description",
    "weights_format": "weights format",
    "weights_sha256": "model weights",
    "axes": "--axes",
    "channels": "--channel",
    "series": "--series",
    "tile": "--tile",
    "pad_mode": "padding mode",
    "instances": "--instances",
}


def _check_same_setup(old: RunRecord, signature: Mapping[str, Any], out_dir: Path) -> None:
    """Refuse to mix results of another model or other parameters into a folder."""
    if not any(f.status in ("ok", "skipped") for f in old.files):
        return
    previous = old.signature
    if not previous:
        # Records written before signatures existed: compare the weights only.
        old_sha = old.model.get("weights", {}).get("sha256")
        previous = {**signature, "weights_sha256": old_sha}
    differences = [
        _SIGNATURE_NAMES.get(k, k) for k in signature if previous.get(k) != signature.get(k)
    ]
    if differences:
        model = old.model.get("name") or old.model.get("id") or "another model"
        hint = ""
        if differences == ["--instances"]:
            hint = " (zoodesk measure remakes the objects of a run without the model)"
        raise ZooDeskError(
            f"{out_dir}: holds results of an earlier run ({model}) with a different "
            f"{', '.join(differences)}; choose another output folder, or use --overwrite "
            f"to redo every input with the new set-up{hint}"
        )


# ------------------------------------------------------------------------------ reading


@dataclass
class _Loaded:
    image: Any
    sha256: str
    size: int
    mtime_ns: int
    seconds: float


def _check_finite(path: Path, array: np.ndarray) -> None:
    """Refuse NaN and infinite values, a band at a time (memory-mapped images too)."""
    from zoodesk.images import release_mapped_pages

    if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
        return
    flat = array.reshape(-1) if array.flags.c_contiguous else None
    if flat is None:
        if not np.isfinite(array).all():
            raise ImageReadError(f"{path}: the image contains NaN or infinite values")
        return
    step = max(1, _FINITE_CHECK_BYTES // array.itemsize)
    for start in range(0, flat.size, step):
        finite = np.isfinite(flat[start : start + step]).all()
        release_mapped_pages(array)
        if not finite:
            raise ImageReadError(f"{path}: the image contains NaN or infinite values")


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: the file disappeared before it could be read") from None


def _read(path: Path, axes: str | None, series: int, settle_seconds: float) -> _Loaded:
    from zoodesk.images import fold_colour_samples, read_image

    start = time.perf_counter()
    before = _stat(path)
    age = time.time() - before.st_mtime
    if age < settle_seconds:
        # Recently modified: make sure nobody is still writing it.
        time.sleep(settle_seconds - max(0.0, age))
        now = _stat(path)
        if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise ImageReadError(
                f"{path}: the file is still being written (its size went from "
                f"{before.st_size} to {now.st_size} bytes within {settle_seconds:g} s); run "
                "the batch again once it is complete"
            )
        before = now
    image = fold_colour_samples(read_image(path, series=series, axes=axes))
    _check_finite(path, image.array)
    sha = sha256_input(path)
    after = _stat(path)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise ImageReadError(
            f"{path}: the file changed while it was being read (still being written?); run "
            "the batch again once it is complete"
        )
    return _Loaded(image, sha, before.st_size, before.st_mtime_ns, time.perf_counter() - start)


# ------------------------------------------------------------------------------ writing


def _provenance(
    record: RunRecord, predictor: Predictor, tensor: TensorSpec, entry: FileEntry
) -> dict[str, str]:
    spec = predictor.spec
    threshold = next(
        (str(op.kwargs.get("threshold")) for op in tensor.postprocessing if op.id == "binarize"),
        "",
    )
    prov = {
        "description": "model-generated, not manually curated",
        "source_image": Path(entry.input).name,
        "source_image_sha256": entry.input_sha256 or "",
        "model_id": spec.id or spec.name,
        "model_name": spec.name,
        "model_version": spec.version or "",
        "weights_format": predictor.weights.format,
        "weights_sha256": predictor.weights.source.sha256 or "",
        "output_tensor": tensor.id,
        "postprocessing": ", ".join(op.id for op in tensor.postprocessing) or "none",
        "run_id": record.run_id,
        "device": predictor.session.device.name,
        "created": now_iso(),
        "software": f"zoodesk {record.software.get('zoodesk', '')}",
    }
    if threshold:
        prov["threshold"] = threshold
    return prov


def acquisition_of(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What an input records of its acquisition, to carry into its outputs."""
    return {k: metadata[k] for k in ("microscope", "objective", "time_increment") if k in metadata}


#: File name ending of the outputs, per output format.
OUTPUT_SUFFIXES = {"ome-tiff": ".ome.tif", "ome-zarr": ".ome.zarr"}


def _output_rel(entry: FileEntry, tensor: TensorSpec, output_format: str) -> str:
    return f"{entry.key}_{tensor.id}{OUTPUT_SUFFIXES[output_format]}"


def _channel_names(tensor: TensorSpec) -> list[str] | None:
    axis = next((a for a in tensor.axes if a.kind == "channel"), None)
    return list(axis.channel_names) if axis is not None and axis.channel_names else None


def _write_outputs(
    out_dir: Path,
    entry: FileEntry,
    outputs: Mapping[str, tuple[np.ndarray, str]],
    predictor: Predictor,
    record: RunRecord,
    pixel_sizes: Mapping[str, tuple[float, str]],
    compression: str,
    output_format: str,
    acquisition: Mapping[str, Any],
) -> list[OutputEntry]:
    from zoodesk.images import write_ome_tiff
    from zoodesk.images.zarr_writer import write_ome_zarr

    spec = predictor.spec
    written: list[OutputEntry] = []
    for tensor in spec.outputs:
        if tensor.id not in outputs:
            continue
        array, axes = outputs[tensor.id]
        rel = _output_rel(entry, tensor, output_format)
        path = out_dir / rel
        channel_names = _channel_names(tensor)
        sizes = output_pixel_sizes(spec, tensor, pixel_sizes, axes)
        names = channel_names if channel_names and "C" in axes else None
        provenance = _provenance(record, predictor, tensor, entry)
        if output_format == "ome-zarr":
            write_ome_zarr(
                path,
                array,
                axes,
                pixel_sizes=sizes,
                channel_names=names,
                provenance=provenance,
                labels=output_kind(tensor, array.dtype) == "labels",
                acquisition=acquisition,
            )
        else:
            write_ome_tiff(
                path,
                array,
                axes,
                pixel_sizes=sizes,
                channel_names=names,
                provenance=provenance,
                compression=compression,
                acquisition=acquisition,
            )
        written.append(
            OutputEntry(
                tensor=tensor.id,
                path=rel,
                sha256=sha256_input(path),
                axes=axes,
                shape=list(array.shape),
                dtype=str(array.dtype),
                kind=output_kind(tensor, array.dtype),
            )
        )
    return written


@dataclass
class _StreamedFile:
    """The tiled writers of one input processed block by block."""

    writers: dict[str, tuple[str, Any]] = field(default_factory=dict)

    def abort(self) -> None:
        for _rel, writer in self.writers.values():
            writer.abort()
        self.writers.clear()


def _close_streamed(
    out_dir: Path, streamed: _StreamedFile, result: StreamResult, predictor: Predictor
) -> list[OutputEntry]:
    written: list[OutputEntry] = []
    try:
        for tensor in predictor.spec.outputs:
            if tensor.id not in streamed.writers:
                continue
            rel, writer = streamed.writers[tensor.id]
            writer.close()
            info = result.outputs[tensor.id]
            written.append(
                OutputEntry(
                    tensor=tensor.id,
                    path=rel,
                    sha256=sha256_input(out_dir / rel),
                    axes=info.axes,
                    shape=list(info.shape),
                    dtype=str(info.dtype),
                    kind=output_kind(tensor, info.dtype),
                )
            )
    finally:
        streamed.abort()
    return written


class _ObjectsFailedError(Exception):
    """The outputs were written, but the objects could not be made from them."""

    def __init__(self, written: list[OutputEntry], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.written = written
        self.cause = cause


def _timed(
    write: Callable[[], list[OutputEntry]],
    objects: Callable[[list[OutputEntry]], list[OutputEntry]] | None,
) -> tuple[list[OutputEntry], float]:
    """Write an input's outputs, then make its objects; return the outputs and the time."""
    start = time.perf_counter()
    written = write()
    if objects is not None:
        try:
            written = objects(written)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # CancelledError too: the outputs stay recorded
            raise _ObjectsFailedError(written, exc) from exc
    return written, time.perf_counter() - start


# ------------------------------------------------------------------------- run set-up


def _previous_outputs_valid(previous: FileEntry, out_dir: Path, st: os.stat_result) -> bool:
    if previous.status not in ("ok", "skipped") or not previous.outputs:
        return False
    if previous.input_size != st.st_size or previous.input_mtime_ns != st.st_mtime_ns:
        return False
    for o in previous.outputs:
        p = out_dir / o.path
        if not p.exists() or sha256_input(p) != o.sha256:
            return False
    return True


def _model_identity(package: ModelPackage, predictor: Predictor) -> dict[str, Any]:
    spec = package.spec
    w = predictor.weights
    return {
        "source": str(package.description_path),
        "root": str(package.root),
        "description_sha256": sha256_file(package.description_path),
        "id": spec.id,
        "name": spec.name,
        "version": spec.version,
        "format_version": spec.format_version,
        "license": spec.license,
        "weights": {
            "format": w.format,
            "source": w.source.source,
            "sha256": w.source.sha256 or sha256_file(package.path_of(w.source)),
            "parent": w.parent,
            "opset_version": w.opset_version,
        },
        "inputs": [{"id": t.id, "axes": t.axes_letters} for t in spec.inputs],
        "outputs": [{"id": t.id, "axes": t.axes_letters} for t in spec.outputs],
    }


def _load_previous(record_path: Path) -> tuple[RunRecord | None, str | None]:
    if not record_path.is_file():
        return None, None
    try:
        return RunRecord.load(record_path), None
    except ZooDeskError as exc:
        return None, f"{exc}; every input is processed again"


class _RecordKeeper:
    """Saves the record, at most every :data:`RECORD_SAVE_INTERVAL` seconds unless
    forced, turning write failures (disk full) into warnings."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.saved = True
        self._reported = False
        self._last = -math.inf

    def save(self, *, force: bool = False) -> RunWarning | None:
        now = time.monotonic()
        if not force and now - self._last < RECORD_SAVE_INTERVAL:
            return None
        self._last = now
        try:
            self.record.save()
        except OSError as exc:
            self.saved = False
            if self._reported:
                return None
            self._reported = True
            return RunWarning(
                f"{self.record.path}: cannot save the run record ({exc.strerror or exc}); "
                "the run goes on, but a re-run cannot skip what this one finishes"
            )
        self.saved = True
        return None


# ------------------------------------------------------------------------------ runner


def run_prediction(
    request: PredictionRequest,
    *,
    cancelled: Callable[[], bool] | None = None,
    predictor: Predictor | None = None,
) -> Iterator[Event]:
    """Run a model over every input file; yield events; the last one is RunFinished.

    Raises :class:`ZooDeskError` only for problems that stop the whole run (model
    cannot be loaded, output folder not writable or in use by another run, results
    of another set-up in the output folder, nothing to process); a problem with one
    input is recorded for that input and the run goes on.  See the module
    documentation for resume, crash safety and files still being written.
    """
    from zoodesk.models import resolve_model

    is_cancelled = cancelled or (lambda: False)
    package = (
        request.model
        if isinstance(request.model, ModelPackage)
        else resolve_model(str(request.model))
    )
    spec = package.spec
    required_inputs = [t for t in spec.inputs if not t.optional]
    if len(required_inputs) != 1:
        raise ZooDeskError(
            f"model {spec.name!r} needs {len(required_inputs)} input tensors; "
            "running it on image files needs exactly one"
        )
    if request.series is not None and request.series < 0:
        raise ZooDeskError(f"--series must be 0 or more, not {request.series}")
    if request.instances is not None:
        request = replace(request, instances=check_against(spec, request.instances))
    out_dir = Path(request.output_dir).expanduser().resolve()
    prepare_output_folder(out_dir)
    skipped: list[SkippedFolder] = []
    files, missing = collect_inputs(
        request.inputs,
        request.patterns,
        request.recursive,
        lists=request.lists,
        exclude=out_dir,
        skipped=skipped,
    )
    if not files and not missing:
        names = ", ".join(str(p) for p in [*request.inputs, *request.lists])
        inside = [
            str(p) for p in request.inputs if Path(p).expanduser().resolve().is_relative_to(out_dir)
        ]
        if inside:
            # The output folder's contents are never inputs (they are the results).
            raise ZooDeskError(
                f"{', '.join(inside)}: inside the output folder {out_dir}, whose files are "
                "never read as inputs; choose an output folder outside the inputs"
            )
        if skipped:
            # Say why nothing was found where that is known.
            reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
            more = f" (and {len(skipped) - 3} more folders)" if len(skipped) > 3 else ""
            raise ZooDeskError(f"no readable images found in {names} ({reasons}{more})")
        raise ZooDeskError(f"no readable images found in {names}")

    predictor = predictor or Predictor(
        package,
        device=request.device,
        threads=request.threads,
        weights_format=request.weights_format,
        tile=request.tile,
        pad_mode=request.pad_mode,
    )
    lock = FolderLock(out_dir)
    try:
        yield from _run_locked(
            request,
            package,
            predictor,
            out_dir,
            files,
            missing,
            [s.message for s in skipped],
            required_inputs[0],
            is_cancelled,
        )
    finally:
        lock.release()


def _run_locked(
    request: PredictionRequest,
    package: ModelPackage,
    predictor: Predictor,
    out_dir: Path,
    files: list[tuple[Path, Path | None]],
    missing: list[Path],
    skipped_folders: list[str],
    input_tensor: TensorSpec,
    is_cancelled: Callable[[], bool],
) -> Iterator[Event]:
    spec = package.spec
    record_path = out_dir / RECORD_NAME
    signature = run_signature(package, predictor, request)
    old, load_problem = _load_previous(record_path)
    warnings = list(predictor.warnings)
    if load_problem:
        warnings.append(load_problem)
    warnings.extend(skipped_folders)
    previous: dict[tuple[str, int], FileEntry] = {}
    history: list[dict[str, Any]] = []
    if old is not None:
        if not request.overwrite:
            _check_same_setup(old, signature, out_dir)
            previous = {(f.input, f.series or 0): f for f in old.files}
        history = [
            *old.history,
            {
                "run_id": old.run_id,
                "started": old.started,
                "finished": old.finished,
                "status": old.status,
                "summary": old.summary(),
            },
        ]
    this_run = {str(path) for path, _root in files}
    base_keys = unique_keys(
        files,
        preferred={Path(f.input): f.key for f in previous.values() if f.key and f.scene is None},
        reserved=[f.key for f in (old.files if old else []) if f.key and f.input not in this_run],
    )
    samples = expand_series(
        files, base_keys, series=request.series, scenes=request.scenes, warnings=warnings
    )
    suffix = OUTPUT_SUFFIXES[request.output_format]
    planned = {f"{sample.key}_{t.id}{suffix}" for sample in samples for t in spec.outputs}
    planned |= {o.path for f in (old.files if old else []) for o in f.outputs}
    planned |= {
        f"{f.key}_{t.id}{suffix}" for f in (old.files if old else []) if f.key for t in spec.outputs
    }
    if request.instances is not None:
        keys = [s.key for s in samples] + [f.key for f in (old.files if old else []) if f.key]
        planned |= {name for k in keys for name in instance_names(k, request.output_format)}
        planned.add(SUMMARY_NAME)
    cleaned = clean_leftovers(out_dir, planned | {RECORD_NAME})

    record = RunRecord(path=record_path, history=history)
    record.model = _model_identity(package, predictor)
    record.signature = signature
    record.device = {
        "requested": request.device,
        "used": predictor.session.device.name,
        "provider": predictor.session.device.provider,
        "description": predictor.session.device.description,
        "warnings": list(predictor.warnings),
        "setup": predictor.session.describe(),
    }
    record.parameters = request.parameters()
    record.warnings = list(warnings)
    keeper = _RecordKeeper(record)
    for path in missing:
        record.files.append(
            FileEntry(input=str(path), status="failed", error=f"{path}: no such file or folder")
        )
    entries: list[FileEntry] = []
    to_do: list[int] = []
    to_do_bytes = 0
    for sample in samples:
        path, key = sample.path, sample.key
        entry = FileEntry(input=str(path), key=key, series=sample.series, scene=sample.scene)
        prev = previous.get((str(path), sample.series))
        if prev is not None and not request.overwrite and prev.key == key:
            try:
                if _previous_outputs_valid(prev, out_dir, path.stat()):
                    entry = prev
                    entry.status = "skipped"
            except OSError:
                pass
        entries.append(entry)
        if entry.status != "skipped":
            to_do.append(len(entries) - 1)
            with contextlib.suppress(OSError):
                to_do_bytes += path.stat().st_size
    record.files.extend(entries)
    try:
        record.save()
    except OSError as exc:
        # Not even the first record can be written: nothing of this run would be
        # recoverable, so stop now with the reason.
        raise ZooDeskError(
            f"{record_path}: cannot write the run record ({exc.strerror or exc})"
        ) from exc
    yield RunStarted(
        run_id=record.run_id,
        total=len(record.files),
        to_do=len(to_do),
        device=predictor.session.device.name,
        device_description=predictor.session.device.description,
        weights_format=predictor.weights.format,
        record_path=record_path,
        warnings=tuple(warnings),
        skipped=len(entries) - len(to_do),
        to_do_bytes=to_do_bytes,
        cleaned=tuple(cleaned),
    )
    offset = len(missing)
    for k in range(len(missing)):
        yield FileFinished(k, Path(record.files[k].input), record.files[k])
    for i, entry in enumerate(entries):
        if entry.status == "skipped":
            yield FileFinished(offset + i, Path(entry.input), entry)

    reader = ThreadPoolExecutor(1, thread_name_prefix="zoodesk-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="zoodesk-write")
    pending_write: tuple[int, FileEntry, Future[tuple[list[OutputEntry], float]]] | None = None
    cancelled_run = False

    def saved(force: bool = False) -> Iterator[Event]:
        problem = keeper.save(force=force)
        if problem is not None:
            yield problem

    def finish_write() -> Iterator[Event]:
        nonlocal pending_write, cancelled_run
        if pending_write is None:
            return
        index, wentry, future = pending_write
        pending_write = None
        try:
            wentry.outputs, wentry.write_seconds = future.result()
            wentry.status = "ok"
            wentry.run_id = record.run_id
        except _ObjectsFailedError as exc:
            # The outputs stand (and are recorded); the input counts as failed (or not
            # done, when cancelled) because it lacks what the run was asked for, and a
            # re-run redoes it.
            wentry.outputs = exc.written
            wentry.run_id = record.run_id
            if isinstance(exc.cause, CancelledError):
                cancelled_run = True
                wentry.status = "not done"
                wentry.error = "cancelled"
            else:
                log.debug("making objects for %s failed", wentry.input, exc_info=exc.cause)
                wentry.status = "failed"
                reason = describe_error(Path(wentry.input), exc.cause, out_dir)
                wentry.error = f"objects not made: {reason}"
            wentry.instances = {"error": wentry.error}
            # Objects of an earlier run of this input would pass for this run's.
            for name in instance_names(wentry.key, request.output_format):
                with contextlib.suppress(OSError):
                    (out_dir / name).unlink(missing_ok=True)
        except Exception as exc:  # recorded per file, the run goes on
            log.debug("writing outputs for %s failed", wentry.input, exc_info=True)
            wentry.status = "failed"
            wentry.error = describe_error(Path(wentry.input), exc, out_dir)
        wentry.finished = now_iso()
        yield from saved()
        yield FileFinished(offset + index, Path(wentry.input), wentry)

    def submit_read(n: int) -> Future[_Loaded] | None:
        if n >= len(to_do):
            return None
        entry = entries[to_do[n]]
        return reader.submit(
            _read, Path(entry.input), request.axes, entry.series or 0, request.settle_seconds
        )

    try:
        next_read = submit_read(0)
        for n, index in enumerate(to_do):
            entry = entries[index]
            path = Path(entry.input)
            if is_cancelled():
                cancelled_run = True
                break
            yield FileStarted(offset + index, path, entry.scene)
            entry.started = now_iso()
            assert next_read is not None
            current = next_read
            next_read = submit_read(n + 1)
            streamed = _StreamedFile()
            try:
                loaded = current.result()
                image = loaded.image
                entry.input_sha256 = loaded.sha256
                entry.input_size = loaded.size
                entry.input_mtime_ns = loaded.mtime_ns
                entry.read_seconds = round(loaded.seconds, 4)
                entry.axes = image.axes
                entry.shape = [int(s) for s in image.shape]
                entry.pixel_sizes = {k: [v[0], v[1]] for k, v in image.pixel_sizes.items()}
                entry.channel_names = list(image.channel_names) if image.channel_names else None
                mapping = map_image_to_tensor(
                    image.axes,
                    image.shape,
                    input_tensor,
                    channels=channel_indices(image, request.channels),
                )
                entry.axes_mapping = mapping.describe()
                entry.streamed = request.streaming.should_stream(spec, mapping)
                if entry.streamed:
                    result = yield from _stream_file(
                        predictor, mapping, image, out_dir, entry, record, streamed,
                        offset + index, is_cancelled, request.compression,
                        request.output_format,
                    )  # fmt: skip
                    entry.tiling = {**result.plan.describe(), "frames": result.frames}
                    entry.seconds = result.seconds
                    entry.inference_seconds = round(result.inference_seconds, 4)
                    job: Callable[[], list[OutputEntry]] = functools.partial(
                        _close_streamed, out_dir, streamed, result, predictor
                    )
                    arrays = None
                else:
                    outputs, plan_info, seconds, inference = yield from _predict_frames(
                        predictor, mapping, image.array, offset + index, is_cancelled
                    )
                    entry.tiling = plan_info
                    entry.seconds = seconds
                    entry.inference_seconds = round(inference, 4)
                    job = functools.partial(
                        _write_outputs, out_dir, entry, outputs, predictor, record,
                        image.pixel_sizes, request.compression, request.output_format,
                        acquisition_of(image.metadata),
                    )  # fmt: skip
                    arrays = outputs
                objects = _objects_step(
                    request, predictor, record, entry, out_dir, image, arrays, is_cancelled
                )
            except GeneratorExit:
                # The consumer stopped iterating: drop this input's partial outputs.
                streamed.abort()
                raise
            except (CancelledError, KeyboardInterrupt):
                streamed.abort()
                cancelled_run = True
                entry.status = "not done"
                entry.error = "cancelled"
                entry.finished = now_iso()
                yield from finish_write()
                yield from saved(force=True)
                yield FileFinished(offset + index, path, entry)
                break
            except Exception as exc:  # one bad file never stops the run
                streamed.abort()
                log.debug("processing %s failed", path, exc_info=True)
                entry.status = "failed"
                entry.error = describe_error(path, exc, out_dir)
                entry.finished = now_iso()
                yield from finish_write()
                yield from saved()
                yield FileFinished(offset + index, path, entry)
                continue
            yield from finish_write()
            pending_write = (index, entry, writer.submit(_timed, job, objects))
        yield from finish_write()
    except KeyboardInterrupt:
        # A second Ctrl-C: stop at once, but leave a consistent record behind.
        cancelled_run = True
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
    if pending_write is not None:
        yield from finish_write()
    for entry in entries:
        if entry.status == "pending":
            entry.status = "not done"
    record.status = "cancelled" if cancelled_run else "finished"
    record.finished = now_iso()
    if request.instances is not None:
        try:
            write_summary(record)
        except OSError as exc:
            yield RunWarning(f"{out_dir / SUMMARY_NAME}: not written ({exc.strerror or exc})")
    yield from saved(force=True)
    yield RunFinished(record, record_saved=keeper.saved)


def _objects_step(
    request: PredictionRequest,
    predictor: Predictor,
    record: RunRecord,
    entry: FileEntry,
    out_dir: Path,
    image: Any,
    arrays: Mapping[str, tuple[np.ndarray, str]] | None,
    cancelled: Callable[[], bool],
) -> Callable[[list[OutputEntry]], list[OutputEntry]] | None:
    """The instance step for one input, to run after its outputs are written (or None)."""
    settings = request.instances
    if settings is None or settings.source is None:
        return None
    spec = predictor.spec
    tensor = spec.tensor(settings.source)
    sizes = None
    if arrays is not None and settings.source in arrays:
        sizes = output_pixel_sizes(spec, tensor, image.pixel_sizes, arrays[settings.source][1])
    return functools.partial(
        add_instances,
        out_dir,
        entry,
        settings=settings,
        spec=spec,
        arrays=arrays,
        pixel_sizes=sizes,
        image=image,
        output_format=request.output_format,
        compression=request.compression,
        provenance=_provenance(record, predictor, tensor, entry),
        whole_frames=not entry.streamed,
        cancelled=cancelled,
    )


def _stream_file(
    predictor: Predictor,
    mapping: AxisMapping,
    image: Any,
    out_dir: Path,
    entry: FileEntry,
    record: RunRecord,
    streamed: _StreamedFile,
    index: int,
    cancelled: Callable[[], bool],
    compression: str,
    output_format: str,
) -> Generator[Event, None, StreamResult]:
    """Predict one image block by block from disk into tiled writers."""
    from zoodesk.images import TiledOmeTiffWriter
    from zoodesk.images.zarr_writer import TiledOmeZarrWriter

    spec = predictor.spec

    def open_sink(
        tensor: TensorSpec, shape: tuple[int, ...], dtype: np.dtype[Any], axes: str
    ) -> TiledOmeTiffWriter | TiledOmeZarrWriter:
        rel = _output_rel(entry, tensor, output_format)
        names = _channel_names(tensor)
        common: dict[str, Any] = {
            "pixel_sizes": output_pixel_sizes(spec, tensor, image.pixel_sizes, axes),
            "channel_names": names if names and "C" in axes else None,
            "provenance": _provenance(record, predictor, tensor, entry),
            "acquisition": acquisition_of(image.metadata),
        }
        writer: TiledOmeTiffWriter | TiledOmeZarrWriter
        if output_format == "ome-zarr":
            labels = output_kind(tensor, np.dtype(dtype)) == "labels"
            writer = TiledOmeZarrWriter(out_dir / rel, shape, dtype, axes, labels=labels, **common)
        else:
            writer = TiledOmeTiffWriter(
                out_dir / rel,
                shape,
                dtype,
                axes,
                tile=STREAMED_TILE,
                compression=compression,
                **common,
            )
        streamed.writers[tensor.id] = (rel, writer)
        return writer

    steps = predict_streaming(predictor, mapping, image.array, open_sink, cancelled=cancelled)
    while True:
        try:
            progress = next(steps)
        except StopIteration as stop:
            result: StreamResult = stop.value
            return result
        yield BlockProgress(index, progress.done, progress.total, progress.phase)


def _predict_frames(
    predictor: Predictor,
    mapping: AxisMapping,
    array: np.ndarray,
    index: int,
    cancelled: Callable[[], bool],
) -> Generator[Event, None, tuple[dict[str, tuple[np.ndarray, str]], dict[str, Any], float, float]]:
    """Predict every frame of one image in memory; yield block progress; return the outputs."""
    spec = predictor.spec
    input_id = mapping.tensor.id
    per_output: dict[str, list[np.ndarray]] = {t.id: [] for t in spec.outputs}
    plan_info: dict[str, Any] = {}
    seconds = 0.0
    inference = 0.0
    frame_total = mapping.frame_count
    for f, (_frame_index, frame) in enumerate(mapping.frames(array)):
        steps = predictor.iter_predict({input_id: np.asarray(frame)}, cancelled=cancelled)
        while True:
            try:
                done, total = next(steps)
            except StopIteration as stop:
                result = stop.value
                break
            yield BlockProgress(index, f * total + done, frame_total * total)
        seconds += result.seconds
        inference += result.inference_seconds
        plan_info = plan_info or result.plan.describe()
        for t in spec.outputs:
            per_output[t.id].append(finalize_output_dtype(result.outputs[t.id], t))
    outputs = {t.id: assemble_output(mapping, t, per_output[t.id]) for t in spec.outputs}
    return outputs, {**plan_info, "frames": frame_total}, seconds, inference


def exit_code(record: RunRecord) -> int:
    """0 when every input succeeded (or was already done), 1 otherwise."""
    return 0 if all(f.status in ("ok", "skipped") for f in record.files) else 1
