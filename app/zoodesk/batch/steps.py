"""The steps of one input: read, predict (in memory or block by block), write, objects.

:mod:`zoodesk.batch.runner` pipelines them over a folder (reading, computing and
writing overlap in threads); :func:`process_input` runs them one after the other
for a single input, as a cluster worker does (:mod:`zoodesk.cluster`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from zoodesk.batch.events import BlockProgress, Event
from zoodesk.batch.messages import describe_error
from zoodesk.batch.record import FileEntry, OutputEntry, RunRecord, now_iso
from zoodesk.batch.request import PredictionRequest
from zoodesk.errors import CancelledError, ImageReadError
from zoodesk.fileutils import sha256_input
from zoodesk.images.axes import AxisMapping, assemble_output
from zoodesk.inference.predict import Predictor
from zoodesk.inference.streaming import (
    OpenSink,
    StreamResult,
    finalize_output_dtype,
    predict_streaming,
)
from zoodesk.models.spec import ModelSpec, TensorSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Tile shape of outputs written block by block.
STREAMED_TILE = (512, 512)
# Bytes checked at once for NaN/Inf.
_FINITE_CHECK_BYTES = 64 * 2**20


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


# ------------------------------------------------------------------------------ reading


@dataclass
class LoadedInput:
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


def read_input(path: Path, axes: str | None, series: int, settle_seconds: float) -> LoadedInput:
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
    return LoadedInput(image, sha, before.st_size, before.st_mtime_ns, time.perf_counter() - start)


# ------------------------------------------------------------------------------ writing


def provenance(
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


def output_rel(entry: FileEntry, tensor: TensorSpec, output_format: str) -> str:
    return f"{entry.key}_{tensor.id}{OUTPUT_SUFFIXES[output_format]}"


def _channel_names(tensor: TensorSpec) -> list[str] | None:
    axis = next((a for a in tensor.axes if a.kind == "channel"), None)
    return list(axis.channel_names) if axis is not None and axis.channel_names else None


def write_outputs(
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

    spec = predictor.spec
    written: list[OutputEntry] = []
    for tensor in spec.outputs:
        if tensor.id not in outputs:
            continue
        array, axes = outputs[tensor.id]
        rel = output_rel(entry, tensor, output_format)
        path = out_dir / rel
        channel_names = _channel_names(tensor)
        sizes = output_pixel_sizes(spec, tensor, pixel_sizes, axes)
        names = channel_names if channel_names and "C" in axes else None
        prov = provenance(record, predictor, tensor, entry)
        if output_format == "ome-zarr":
            from zoodesk.images.zarr_writer import write_ome_zarr

            write_ome_zarr(
                path,
                array,
                axes,
                pixel_sizes=sizes,
                channel_names=names,
                provenance=prov,
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
                provenance=prov,
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
class StreamedFile:
    """The tiled writers of one input processed block by block."""

    writers: dict[str, tuple[str, Any]] = field(default_factory=dict)

    def abort(self) -> None:
        for _rel, writer in self.writers.values():
            writer.abort()
        self.writers.clear()


def close_streamed(
    out_dir: Path, streamed: StreamedFile, result: StreamResult, predictor: Predictor
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


class ObjectsFailedError(Exception):
    """The outputs were written, but the objects could not be made from them."""

    def __init__(self, written: list[OutputEntry], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.written = written
        self.cause = cause


def write_and_measure(
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
            raise ObjectsFailedError(written, exc) from exc
    return written, time.perf_counter() - start


def objects_step(
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
    # Imported here: a run without objects never loads the objects step.
    from zoodesk.batch.objects import add_instances

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
        provenance=provenance(record, predictor, tensor, entry),
        whole_frames=not entry.streamed,
        cancelled=cancelled,
    )


def sink_opener(
    predictor: Predictor,
    image: Any,
    out_dir: Path,
    entry: FileEntry,
    record: RunRecord,
    streamed: StreamedFile,
    compression: str,
    output_format: str,
) -> OpenSink:
    """The ``open_sink`` of :func:`~zoodesk.inference.streaming.predict_streaming` for
    one input: tiled writers of its outputs (kept in ``streamed``), with provenance."""
    from zoodesk.images import TiledOmeTiffWriter
    from zoodesk.images.zarr_writer import TiledOmeZarrWriter

    spec = predictor.spec

    def open_sink(
        tensor: TensorSpec, shape: tuple[int, ...], dtype: np.dtype[Any], axes: str
    ) -> TiledOmeTiffWriter | TiledOmeZarrWriter:
        rel = output_rel(entry, tensor, output_format)
        names = _channel_names(tensor)
        common: dict[str, Any] = {
            "pixel_sizes": output_pixel_sizes(spec, tensor, image.pixel_sizes, axes),
            "channel_names": names if names and "C" in axes else None,
            "provenance": provenance(record, predictor, tensor, entry),
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

    return open_sink


def stream_file(
    predictor: Predictor,
    mapping: AxisMapping,
    image: Any,
    out_dir: Path,
    entry: FileEntry,
    record: RunRecord,
    streamed: StreamedFile,
    index: int,
    cancelled: Callable[[], bool],
    compression: str,
    output_format: str,
) -> Generator[Event, None, StreamResult]:
    """Predict one image block by block from disk into tiled writers."""
    open_sink = sink_opener(
        predictor, image, out_dir, entry, record, streamed, compression, output_format
    )
    steps = predict_streaming(predictor, mapping, image.array, open_sink, cancelled=cancelled)
    while True:
        try:
            progress = next(steps)
        except StopIteration as stop:
            result: StreamResult = stop.value
            return result
        yield BlockProgress(index, progress.done, progress.total, progress.phase)


def predict_frames(
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


# --------------------------------------------------------------------- one whole input


def describe_input(entry: FileEntry, loaded: LoadedInput) -> None:
    """Record what was read: checksum, size, timings, axes, shape, pixel sizes."""
    image = loaded.image
    entry.input_sha256 = loaded.sha256
    entry.input_size = loaded.size
    entry.input_mtime_ns = loaded.mtime_ns
    entry.read_seconds = round(loaded.seconds, 4)
    entry.axes = image.axes
    entry.shape = [int(s) for s in image.shape]
    entry.pixel_sizes = {k: [v[0], v[1]] for k, v in image.pixel_sizes.items()}
    entry.channel_names = list(image.channel_names) if image.channel_names else None


WriteJob = Callable[[], list[OutputEntry]]
ObjectsJob = Callable[[list[OutputEntry]], list[OutputEntry]] | None


def compute_input(
    request: PredictionRequest,
    predictor: Predictor,
    input_tensor: TensorSpec,
    loaded: LoadedInput,
    entry: FileEntry,
    record: RunRecord,
    out_dir: Path,
    streamed: StreamedFile,
    index: int,
    cancelled: Callable[[], bool],
) -> Generator[Event, None, tuple[WriteJob, ObjectsJob]]:
    """Predict one read input; yield block progress; return its write and objects jobs.

    Images the streaming policy sends to disk are predicted block by block into
    ``streamed``'s tiled writers (the write job then only closes them).
    """
    from zoodesk.images import channel_indices
    from zoodesk.images.axes import map_image_to_tensor

    spec = predictor.spec
    image = loaded.image
    describe_input(entry, loaded)
    mapping = map_image_to_tensor(
        image.axes,
        image.shape,
        input_tensor,
        channels=channel_indices(image, request.channels),
    )
    entry.axes_mapping = mapping.describe()
    entry.streamed = request.streaming.should_stream(spec, mapping)
    job: WriteJob
    if entry.streamed:
        result = yield from stream_file(
            predictor, mapping, image, out_dir, entry, record, streamed, index, cancelled,
            request.compression, request.output_format,
        )  # fmt: skip
        entry.tiling = {**result.plan.describe(), "frames": result.frames}
        entry.seconds = result.seconds
        entry.inference_seconds = round(result.inference_seconds, 4)
        job = functools.partial(close_streamed, out_dir, streamed, result, predictor)
        arrays = None
    else:
        outputs, plan_info, seconds, inference = yield from predict_frames(
            predictor, mapping, image.array, index, cancelled
        )
        entry.tiling = plan_info
        entry.seconds = seconds
        entry.inference_seconds = round(inference, 4)
        job = functools.partial(
            write_outputs, out_dir, entry, outputs, predictor, record, image.pixel_sizes,
            request.compression, request.output_format, acquisition_of(image.metadata),
        )  # fmt: skip
        arrays = outputs
    objects = objects_step(request, predictor, record, entry, out_dir, image, arrays, cancelled)
    return job, objects


def settle_outputs(
    entry: FileEntry,
    written: Callable[[], tuple[list[OutputEntry], float]],
    out_dir: Path,
    output_format: str,
    run_id: str,
) -> bool:
    """Record the outcome of an input's write (and objects) job; True when it was cancelled.

    Outputs that were written stay recorded even when the objects could not be made
    from them; the input then counts as failed (or not done, when cancelled), a re-run
    redoes it, and the objects of an earlier run of it are removed.
    """
    cancelled = False
    try:
        entry.outputs, entry.write_seconds = written()
        entry.status = "ok"
        entry.run_id = run_id
    except ObjectsFailedError as exc:
        entry.outputs = exc.written
        entry.run_id = run_id
        if isinstance(exc.cause, CancelledError):
            cancelled = True
            entry.status = "not done"
            entry.error = "cancelled"
        else:
            log.debug("making objects for %s failed", entry.input, exc_info=exc.cause)
            entry.status = "failed"
            reason = describe_error(Path(entry.input), exc.cause, out_dir)
            entry.error = f"objects not made: {reason}"
        entry.instances = {"error": entry.error}
        from zoodesk.batch.objects import instance_names

        # Objects of an earlier run of this input would pass for this run's.
        for name in instance_names(entry.key, output_format):
            with contextlib.suppress(OSError):
                (out_dir / name).unlink(missing_ok=True)
    except Exception as exc:  # recorded per input, the run goes on
        log.debug("writing outputs for %s failed", entry.input, exc_info=True)
        entry.status = "failed"
        entry.error = describe_error(Path(entry.input), exc, out_dir)
    entry.finished = now_iso()
    return cancelled


def run_to_end(steps: Generator[Any, None, T]) -> T:
    """Run a generator of progress events to its end, ignoring them; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            result: T = stop.value
            return result


def process_input(
    request: PredictionRequest,
    predictor: Predictor,
    record: RunRecord,
    entry: FileEntry,
    out_dir: Path,
    input_tensor: TensorSpec,
    cancelled: Callable[[], bool],
) -> FileEntry:
    """Read, predict, write and make the objects of one input, one step after another.

    What a cluster worker runs per task.  Never raises for a problem with the input:
    the entry says ``ok``, ``failed`` (with a one-line ``error``) or ``not done``
    (cancelled), as :func:`~zoodesk.batch.runner.run_prediction` records it.
    """
    entry.started = now_iso()
    streamed = StreamedFile()
    try:
        loaded = read_input(
            Path(entry.input), request.axes, entry.series or 0, request.settle_seconds
        )
        job, objects = run_to_end(
            compute_input(
                request,
                predictor,
                input_tensor,
                loaded,
                entry,
                record,
                out_dir,
                streamed,
                0,
                cancelled,
            )
        )
    except CancelledError:
        streamed.abort()
        entry.status = "not done"
        entry.error = "cancelled"
        entry.finished = now_iso()
        return entry
    except Exception as exc:  # one bad input never stops the run
        streamed.abort()
        log.debug("processing %s failed", entry.input, exc_info=True)
        entry.status = "failed"
        entry.error = describe_error(Path(entry.input), exc, out_dir)
        entry.finished = now_iso()
        return entry
    settle_outputs(
        entry,
        functools.partial(write_and_measure, job, objects),
        out_dir,
        request.output_format,
        record.run_id,
    )
    return entry
