"""One image larger than any worker's memory, spread over a cluster block by block.

An input the streaming policy sends to disk (:class:`~zoodesk.inference.streaming.
StreamingPolicy`), in a run writing OME-Zarr, is not given to one worker whole:

1. *Statistics* of every frame, as a reduction: each band of the frame (cut along an
   axis every statistic reduces) is one task returning a
   :class:`~zoodesk.inference.processing.StatsAccumulator`; the accumulators are merged
   pairwise on the workers and only the final statistics come back.  Mean and
   standard deviation are exact up to float64 rounding; percentiles are exact for 8-
   and 16-bit images and for others while the frame has at most
   :data:`~zoodesk.inference.streaming.STATS_EXACT_SAMPLES` values, beyond which they
   come from merged histograms (to about 1/16384 of the value range), as when one
   process streams the image.  A multi-stage preprocessing takes one reduction per
   stage.  Float images are checked for NaN and infinite values in the same pass.
2. *Output stores*: this process runs the first block itself (it learns the outputs'
   shapes and types) and creates each output's OME-Zarr store under a temporary name.
3. *Bands of blocks*: the frame is cut along the tile plan's outer axis into bands
   whose edges fall on chunk boundaries of every output (:data:`~zoodesk.images.
   zarr_writer.CHUNK` pixels in Y and X).  Each band is a task: the worker runs every
   block whose owned region reaches into the band, with the whole-frame statistics,
   and writes only the band's rows into the store.  Blocks on a band's edge are run
   by both neighbours (each keeps its side), so no chunk is ever written by two
   tasks and the pixels equal those of a run in one process.
4. This process builds the pyramid, renames the stores into place and makes the
   objects, as a local run does.

A task lost with its worker is rerun elsewhere and rewrites the same chunks.  A run
writing OME-TIFF streams such an image on one worker instead (a TIFF cannot be
written by several processes at once): memory stays bounded, but one worker does it.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, Event, Future, get_worker, wait

from zoodesk.batch.events import BlockProgress
from zoodesk.batch.events import Event as RunEvent
from zoodesk.batch.messages import describe_error
from zoodesk.batch.record import FileEntry
from zoodesk.batch.runner import RunPlan
from zoodesk.batch.steps import (
    StreamedFile,
    close_streamed,
    objects_step,
    run_to_end,
    settle_outputs,
    sink_opener,
    write_and_measure,
)
from zoodesk.cluster.worker import (
    PLUGIN_NAME,
    ModelOnWorker,
    SessionCache,
    _cancel_check,
    cores_for,
    workers_per_host,
)
from zoodesk.errors import CancelledError, ImageReadError
from zoodesk.fileutils import sha256_input
from zoodesk.images.axes import AxisMapping, map_image_to_tensor
from zoodesk.images.zarr_writer import CHUNK
from zoodesk.inference.processing import (
    Processing,
    StatRequest,
    StatsAccumulator,
    merge_accumulators,
)
from zoodesk.inference.streaming import (
    StreamResult,
    band_statistics,
    predict_streaming,
    statistics_stages,
)
from zoodesk.inference.tiling import AxisBlock, TilePlan, output_axis_maps, output_position
from zoodesk.models.spec import ModelSpec, TensorSpec

log = logging.getLogger(__name__)

#: A band holds at least this many blocks along the outer axis (fewer bands mean
#: fewer blocks run twice on band edges; more mean more parallel tasks).
BLOCKS_PER_BAND = 4
#: Seconds between looks at finished tasks and the cancel flag.
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class ImageSource:
    """How a worker opens the input and finds the model's view of it."""

    path: str
    series: int
    axes: str | None
    mapping: AxisMapping

    def frame(self, number: int) -> Any:
        """Frame ``number`` (a view of the lazily read image)."""
        for f, (_index, frame) in enumerate(self.mapping.frames(self.array())):
            if f == number:
                return frame
        raise IndexError(f"{self.path}: no frame {number}")

    def array(self) -> Any:
        """The image, read only where used (memory-mapped, or Dask over OME-Zarr chunks)."""
        return _lazy_image(Path(self.path), self.series, self.axes).array


def _lazy_image(path: Path, series: int, axes: str | None) -> Any:
    from zoodesk.images import fold_colour_samples, read_image

    return fold_colour_samples(read_image(path, series=series, axes=axes, lazy=True))


def _synchronous() -> Any:
    """Dask arrays computed right here, in this thread: never as tasks of the cluster
    this process is a client or a worker of."""
    import dask

    return dask.config.set(scheduler="synchronous")


def wants_blocks(plan: RunPlan, entry: FileEntry) -> bool:
    """Whether an input is spread over the cluster by blocks: the run writes OME-Zarr
    and the streaming policy would stream it.  Only inputs that may be large are
    opened (folders, and files of 32 MB or more, or all when streaming is forced)."""
    request = plan.request
    if request.output_format != "ome-zarr" or request.streaming.mode == "never":
        return False
    path = Path(entry.input)
    try:
        small = path.is_file() and path.stat().st_size < 32 * 2**20
    except OSError:
        return False
    if small and request.streaming.mode != "always":
        return False
    try:
        image, mapping = _open(plan, entry)
    except Exception:  # the worker's read will report it, with the usual message
        return False
    del image
    return bool(request.streaming.should_stream(plan.predictor.spec, mapping))


def _open(plan: RunPlan, entry: FileEntry) -> tuple[Any, AxisMapping]:
    from zoodesk.images import channel_indices

    request = plan.request
    image = _lazy_image(Path(entry.input), entry.series or 0, request.axes)
    mapping = map_image_to_tensor(
        image.axes,
        image.shape,
        plan.input_tensor,
        channels=channel_indices(image, request.channels),
    )
    return image, mapping


# ------------------------------------------------------------------- worker tasks


def _predictor(model: ModelOnWorker, workers_per_host: Mapping[str, int]) -> Any:
    worker = get_worker()
    cache = worker.plugins.get(PLUGIN_NAME)
    if not isinstance(cache, SessionCache):
        raise RuntimeError("the worker lacks the ZooDesk session plugin")
    return cache.predictor(model, cores_for(workers_per_host))


def _statistics_task(
    source: ImageSource,
    frame_number: int,
    index: tuple[slice, ...],
    stage: int,
    requests: frozenset[StatRequest],
    stats: Mapping[StatRequest, np.ndarray],
) -> StatsAccumulator | None:
    """One band's statistics (None when only checking values), after checking them."""
    with _synchronous():
        frame = source.frame(frame_number)
        tensor = source.mapping.tensor
        band = np.asarray(frame[index])
        if np.issubdtype(band.dtype, np.floating) and not np.isfinite(band).all():
            raise ImageReadError(f"{source.path}: the image contains NaN or infinite values")
        if not requests:
            return None
        pre = Processing(tensor.preprocessing, tensor)
        return band_statistics(frame, index, tensor, pre, stage, requests, stats)


def _merge_task(*parts: StatsAccumulator) -> StatsAccumulator:
    return merge_accumulators(parts)


def _finalize_task(accumulator: StatsAccumulator) -> dict[StatRequest, np.ndarray]:
    return accumulator.finalize()


@dataclass(frozen=True)
class _BandSink:
    """Writes the rows of one band (along one image axis) into a store's level 0."""

    target: Any
    axis: int
    start: int
    stop: int

    def write_block(self, region: Sequence[slice], data: np.ndarray) -> None:
        region = list(region)
        rows = region[self.axis]
        lo, hi = max(rows.start, self.start), min(rows.stop, self.stop)
        if lo >= hi:
            return
        cut = [slice(None)] * data.ndim
        cut[self.axis] = slice(lo - rows.start, hi - rows.start)
        region[self.axis] = slice(lo, hi)
        self.target.write_block(tuple(region), data[tuple(cut)])


@dataclass(frozen=True)
class _Band:
    frame: int
    blocks: tuple[int, ...]
    #: Per output tensor: the image axis that is cut, and the rows of the band.
    rows: Mapping[str, tuple[int, int, int]]


def _band_task(
    source: ImageSource,
    model: ModelOnWorker,
    band: _Band,
    stats: Mapping[StatRequest, np.ndarray],
    targets: Mapping[str, Any],
    cancel_event: str,
    workers_per_host: Mapping[str, int],
) -> float:
    """Run one band's blocks on this worker into the stores; return the runtime's time."""
    predictor = _predictor(model, workers_per_host)
    chosen = set(band.blocks)

    def open_sink(tensor: TensorSpec, *_: Any) -> _BandSink:
        axis, start, stop = band.rows[tensor.id]
        return _BandSink(targets[tensor.id], axis, start, stop)

    with _synchronous():
        result = run_to_end(
            predict_streaming(
                predictor,
                source.mapping,
                source.array(),
                open_sink,
                cancelled=_cancel_check(cancel_event),
                frame_stats={band.frame: stats},
                select=lambda f, b: f == band.frame and b in chosen,
            )
        )
    return float(result.inference_seconds)


# ------------------------------------------------------------------------ banding


def _outer_axis_rows(
    spec: ModelSpec, tensor: TensorSpec, plan: TilePlan, outer: str, result: StreamResult
) -> tuple[int, Callable[[int], int], int] | None:
    """For one output: the image axis that follows the outer input axis, the map of
    input positions to its rows, and its chunk size; None when it has no such axis."""
    info = result.outputs.get(tensor.id)
    if info is None:
        return None
    for i, (axis, amap) in enumerate(
        (ax, output_axis_maps(spec, tensor).get(ax.id)) for ax in tensor.axes
    ):
        if amap is None or amap.input_axis.split("/", 1)[-1] != outer:
            continue
        letter = axis.id.upper()
        if letter not in info.axes:
            return None
        length, final = plan.lengths[outer], info.frame_shape[i]

        def to_rows(x: int, _l: int = length, _f: int = final, _m: Any = amap) -> int:
            return output_position(x, _l, _f, _m)

        return info.axes.index(letter), to_rows, CHUNK if letter in "YX" else 1
    return None


def plan_bands(spec: ModelSpec, plan: TilePlan, result: StreamResult, frames: int) -> list[_Band]:
    """Bands of blocks whose rows in every output start on a chunk boundary."""
    outer = next(iter(plan.axis_blocks), None)
    count = plan.block_count
    if outer is None:
        return [_Band(f, tuple(range(count)), {}) for f in range(frames)]
    axis_blocks: list[AxisBlock] = plan.axis_blocks[outer]
    inner = count // len(axis_blocks)
    length = plan.lengths[outer]
    rows = {
        t.id: found
        for t in spec.outputs
        if (found := _outer_axis_rows(spec, t, plan, outer, result)) is not None
    }
    step = max(1, axis_blocks[0].own_stop - axis_blocks[0].own_start)
    base = max([chunk for _axis, _to, chunk in rows.values()] + [1])
    height = base * max(1, math.ceil(BLOCKS_PER_BAND * step / base))

    def aligned(edge: int) -> bool:
        return all(to(edge) % chunk == 0 for _axis, to, chunk in rows.values())

    edges = [0]
    while edges[-1] < length:
        edge = min(length, edges[-1] + height)
        while edge < length and not aligned(edge):
            edge = min(length, edge + base)
        edges.append(edge)
    bands = []
    for f in range(frames):
        for lo, hi in itertools.pairwise(edges):
            numbers = tuple(
                k * inner + j
                for k, blk in enumerate(axis_blocks)
                if blk.own_start < hi and blk.own_stop > lo
                for j in range(inner)
            )
            band_rows = {tid: (axis, to(lo), to(hi)) for tid, (axis, to, _c) in rows.items()}
            bands.append(_Band(f, numbers, band_rows))
    return bands


# ------------------------------------------------------------------------- client


def predict_by_blocks(
    client: Client,
    plan: RunPlan,
    index: int,
    model: ModelOnWorker,
    is_cancelled: Callable[[], bool],
) -> Generator[RunEvent, None, bool]:
    """Predict ``plan.entries[index]`` spread over the cluster; fill in its entry.

    Yields block progress (``statistics``, then ``blocks``: bands done); returns True
    when the run was cancelled meanwhile.  The input's tasks watch a cancel flag of
    their own, set when the run is cancelled or the input fails.
    """
    with _synchronous():
        return (yield from _predict_by_blocks(client, plan, index, model, is_cancelled))


def _predict_by_blocks(
    client: Client,
    plan: RunPlan,
    index: int,
    model: ModelOnWorker,
    is_cancelled: Callable[[], bool],
) -> Generator[RunEvent, None, bool]:
    cancel = Event(f"zoodesk-cancel-{uuid.uuid4().hex}", client=client)
    entry = plan.entries[index]
    request, predictor, out_dir = plan.request, plan.predictor, plan.out_dir
    event_index = plan.offset + index
    path = Path(entry.input)
    streamed = StreamedFile()
    futures: list[Future] = []
    start = time.perf_counter()
    try:
        before = path.stat()
        hashing = client.submit(sha256_input, path, pure=False)
        futures.append(hashing)
        image, mapping = _open(plan, entry)
        _describe(entry, image, mapping, before)
        source = ImageSource(str(path), entry.series or 0, request.axes, mapping)
        frame_stats: dict[int, dict[StatRequest, np.ndarray]] = {}
        frames = [frame.shape for _i, frame in mapping.frames(image.array)]
        floating = bool(np.issubdtype(image.array.dtype, np.floating))
        for f, shape in enumerate(frames):
            frame_stats[f] = yield from _reduce_statistics(
                client, source, f, shape, floating, plan, event_index, is_cancelled, futures
            )
        # The first block here: the outputs' shapes and types, and their stores.
        open_sink = sink_opener(
            predictor, image, out_dir, entry, plan.record, streamed,
            request.compression, request.output_format,
        )  # fmt: skip
        probe = run_to_end(
            predict_streaming(
                predictor,
                mapping,
                image.array,
                open_sink,
                frame_stats=frame_stats,
                select=lambda f, b: f == 0 and b == 0,
            )
        )
        targets = {tid: writer.level_zero() for tid, (_rel, writer) in streamed.writers.items()}
        bands = plan_bands(predictor.spec, probe.plan, probe, len(frames))
        per_host = workers_per_host(client)
        inference = 0.0
        band_futures = [
            client.submit(
                _band_task,
                source,
                model,
                band,
                frame_stats[band.frame],
                targets,
                cancel.name,
                per_host,
                pure=False,
            )
            for band in bands
        ]
        futures.extend(band_futures)
        for done_count, future in enumerate(_as_done(band_futures, is_cancelled), start=1):
            inference += float(future.result())
            yield BlockProgress(event_index, done_count, len(bands), "blocks")
        entry.input_sha256 = str(hashing.result())
        after = path.stat()
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise ImageReadError(
                f"{path}: the file changed while it was being read (still being written?); "
                "run the batch again once it is complete"
            )
        result = StreamResult(
            plan=probe.plan,
            frames=len(frames),
            seconds=time.perf_counter() - start,
            inference_seconds=inference,
            outputs=probe.outputs,
        )
        entry.tiling = {
            **result.plan.describe(),
            "frames": result.frames,
            "bands": len(bands),
            "blocks_run": sum(len(b.blocks) for b in bands),
        }
        entry.seconds = result.seconds
        entry.inference_seconds = round(inference, 4)
    except GeneratorExit:
        # The consumer stopped iterating: stop the input's tasks, drop its stores.
        _stop(client, cancel, futures, streamed)
        raise
    except (CancelledError, KeyboardInterrupt):
        _stop(client, cancel, futures, streamed)
        entry.status, entry.error = "not done", "cancelled"
        return True
    except Exception as exc:  # this input fails, the run goes on
        _stop(client, cancel, futures, streamed)
        log.debug("processing %s by blocks failed", path, exc_info=True)
        entry.status = "failed"
        entry.error = describe_error(path, exc, out_dir)
        return False
    job = _closer(out_dir, streamed, result, predictor)
    objects = objects_step(
        request, predictor, plan.record, entry, out_dir, image, None, is_cancelled
    )
    return settle_outputs(
        entry,
        lambda: write_and_measure(job, objects),
        out_dir,
        request.output_format,
        plan.record.run_id,
    )


def _closer(out_dir: Path, streamed: StreamedFile, result: StreamResult, predictor: Any) -> Any:
    return lambda: close_streamed(out_dir, streamed, result, predictor)


def _describe(entry: FileEntry, image: Any, mapping: AxisMapping, st: Any) -> None:
    entry.input_size = st.st_size
    entry.input_mtime_ns = st.st_mtime_ns
    entry.axes = image.axes
    entry.shape = [int(s) for s in image.shape]
    entry.pixel_sizes = {k: [v[0], v[1]] for k, v in image.pixel_sizes.items()}
    entry.channel_names = list(image.channel_names) if image.channel_names else None
    entry.axes_mapping = mapping.describe()
    entry.streamed = True


def _reduce_statistics(
    client: Client,
    source: ImageSource,
    frame: int,
    shape: tuple[int, ...],
    floating: bool,
    plan: RunPlan,
    event_index: int,
    is_cancelled: Callable[[], bool],
    futures: list[Future],
) -> Generator[RunEvent, None, dict[StatRequest, np.ndarray]]:
    """Whole-frame statistics, stage by stage, reduced on the workers."""
    from zoodesk.inference.streaming import _bands

    tensor = source.mapping.tensor
    pre = Processing(tensor.preprocessing, tensor)
    posts = [Processing(t.postprocessing, t) for t in plan.predictor.spec.outputs]
    post_requests = frozenset(
        r for p in posts for r in p.stat_requests() if r.tensor_id == tensor.id
    )
    stages = statistics_stages(tensor, pre, post_requests, shape)
    stats: dict[StatRequest, np.ndarray] = {}
    if not stages and floating:
        stages = [(0, frozenset(), _bands(shape, 0))]
    total = sum(len(bands) for _k, _r, bands in stages)
    done = 0
    for stage, requests, bands in stages:
        parts = [
            client.submit(
                _statistics_task, source, frame, band, stage, requests, dict(stats), pure=False
            )
            for band in bands
        ]
        futures.extend(parts)
        for _future in _as_done(parts, is_cancelled):
            done += 1
            yield BlockProgress(event_index, done, total, "statistics")
        if not requests:
            continue
        # Pairwise merges on the workers: only the final statistics travel here.
        level: list[Future] = parts
        while len(level) > 1:
            level = [
                client.submit(_merge_task, *level[i : i + 2], pure=False)
                for i in range(0, len(level), 2)
            ]
            futures.extend(level)
        final = client.submit(_finalize_task, level[0], pure=False)
        futures.append(final)
        stats.update(final.result())
    return stats


def _as_done(
    futures: list[Future], is_cancelled: Callable[[], bool]
) -> Generator[Future, None, None]:
    """Futures as they finish; raises the first task's error, or CancelledError."""
    pending = set(futures)
    while pending:
        if is_cancelled():
            raise CancelledError("cancelled")
        try:
            done, _ = wait(list(pending), timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
        except TimeoutError:
            continue
        for future in done:
            pending.discard(future)
            if future.status == "error":
                future.result()  # raises the task's exception
            yield future


def _stop(
    client: Client,
    cancel: Event,
    futures: list[Future],
    streamed: StreamedFile,
) -> None:
    cancel.set()
    client.cancel([f for f in futures if not f.done()])
    streamed.abort()
