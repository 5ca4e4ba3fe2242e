"""Prediction of images larger than memory: block by block from disk to disk.

:meth:`Predictor.predict <zoodesk.inference.predict.Predictor.predict>` holds a whole
sample in memory (its float32 preprocessed copy and every output), which is right
for ordinary images and impossible for a 40000 x 40000 slide scan.
:func:`predict_streaming` gives the same result in memory bounded by the block size:

1. *Statistics pass*: the preprocessing's whole-sample statistics (and those of the
   input that postprocessing refers to) are accumulated over bands of the image
   read from disk (:class:`~zoodesk.inference.processing.StatsAccumulator`).  A
   preprocessing whose later operations need statistics of data changed by earlier
   ones (several stages) takes one pass per stage.
2. *Block pass*: for each block of the tile plan (the same plan as in memory), the
   block with its halo is read from the image, preprocessed with the whole-sample
   statistics (the operations are elementwise once those are known), padded, run
   through the session; the region the block owns is cropped, postprocessed, and
   handed to a sink (normally a :class:`~zoodesk.images.TiledOmeTiffWriter`) with its
   place in the assembled output image.

Percentiles are exact for 8- and 16-bit images (integer histograms) and for others
up to :data:`STATS_EXACT_SAMPLES` values; beyond, they are estimated from a
histogram (to about 1/16384 of the value range), which the in-memory path never
does.  Mean and standard deviation are exact up to float64 rounding.

Frames (time points, extra z planes of a 2D model) are streamed one after another,
each with its own statistics, as the in-memory path does.  Pages of a memory-mapped
input are released after each band of blocks so that they do not accumulate in the
process's resident memory (:func:`zoodesk.images.release_mapped_pages`).

Postprocessing that needs statistics of the *output itself* (e.g. ``scale_range``
without a reference tensor on an output) cannot be applied block by block before
the whole output exists; such models are refused with a clear message
(:func:`check_streamable`).  No model of the zoo snapshot used for development
does this; the zoo's postprocessing is sigmoid, binarize, ensure_dtype and fixed
normalisations.  Postprocessing that refers to an *input* (``scale_range`` with a
``reference_tensor``) streams: the input's statistics come from pass 1, computed
on the unprocessed input as the specification says.

:class:`StreamingPolicy` says when the batch runner takes this path: by default for
images of more than 256 megapixels, or whose in-memory processing would need more
than a quarter of the memory available.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from zoodesk.errors import CancelledError, ShapeError, ZooDeskError
from zoodesk.images.axes import AxisMapping, OutputPlacement, output_placement
from zoodesk.images.readers import available_memory, release_mapped_pages
from zoodesk.inference.predict import Predictor
from zoodesk.inference.processing import (
    Processing,
    StatRequest,
    StatsAccumulator,
    align_stat,
)
from zoodesk.inference.session import map_tensors_to_graph
from zoodesk.inference.tiling import (
    AxisBlock,
    OutputAxisMap,
    TilePlan,
    block_region,
    final_output_shape,
    output_axis_maps,
    owned_slices,
    pad_array,
)
from zoodesk.models.spec import ModelSpec, TensorSpec

#: Images with more voxels than this (in millions, all frames and channels) stream.
DEFAULT_MAX_MEGAPIXELS = 256.0
#: Images whose in-memory processing would need more than this fraction of the
#: available memory stream.
DEFAULT_MEMORY_FRACTION = 0.25
#: Values kept for exact percentiles of images that are not 8- or 16-bit integers
#: (those always get exact histograms); beyond, percentiles come from a histogram of
#: 16384 bins (error about 1/16384 of the value range).  Keeps the statistics pass
#: within about 64 MiB where the in-memory default would keep 512 MiB.
STATS_EXACT_SAMPLES = 1 << 23
#: Voxels read at once by the statistics pass (the float64 temporaries of the
#: moments take 8 bytes per voxel each, so a band costs about 32 MiB per temporary).
STATS_BAND_VOXELS = 1 << 22

StreamingMode = Literal["auto", "always", "never"]
Phase = Literal["statistics", "blocks"]


class StreamingUnsupportedError(ZooDeskError):
    """A model whose processing cannot be done block by block."""


@dataclass(frozen=True)
class StreamingPolicy:
    """When the batch runner processes an image block by block from disk.

    Parameters
    ----------
    mode
        ``auto`` (by the two thresholds below), ``always`` or ``never``.
    max_megapixels
        ``auto`` streams images with more voxels than this, in millions (all
        frames and channels counted).
    memory_fraction
        ``auto`` also streams images whose in-memory processing would need more
        than this fraction of the memory available (see
        :func:`estimate_in_memory_bytes`).
    """

    mode: StreamingMode = "auto"
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    memory_fraction: float = DEFAULT_MEMORY_FRACTION

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "always", "never"):
            raise ValueError(f"streaming mode must be auto, always or never, not {self.mode!r}")
        if not self.max_megapixels > 0:
            raise ValueError(f"max_megapixels must be positive, not {self.max_megapixels!r}")
        if not 0 < self.memory_fraction <= 1:
            raise ValueError(f"memory_fraction must be in (0, 1], not {self.memory_fraction!r}")

    def should_stream(
        self, spec: ModelSpec, mapping: AxisMapping, *, available: int | None = None
    ) -> bool:
        """Whether an image mapped by ``mapping`` onto ``spec``'s input streams.

        Parameters
        ----------
        spec
            The model.
        mapping
            How the image feeds the model.
        available
            Bytes of memory available (default: measured now).
        """
        if self.mode != "auto":
            return self.mode == "always"
        voxels = math.prod(mapping.image_shape)
        if voxels > self.max_megapixels * 1e6:
            return True
        free = available if available is not None else available_memory()
        if free is None:
            return False
        return estimate_in_memory_bytes(spec, mapping) > self.memory_fraction * free

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy for run records."""
        return {
            "mode": self.mode,
            "max_megapixels": self.max_megapixels,
            "memory_fraction": self.memory_fraction,
        }


def estimate_in_memory_bytes(spec: ModelSpec, mapping: AxisMapping) -> int:
    """A rough estimate of the memory that predicting an image in memory takes.

    The in-memory path holds, per frame, a float32 copy of the input and of every
    raw output, and keeps every frame's outputs until the image is written: about
    ``4 * voxels * (2 + output channels)`` bytes.  Resampling outputs are not
    accounted for.
    """
    voxels = math.prod(mapping.image_shape)
    channels = 0
    for t in spec.outputs:
        axis = next((a for a in t.axes if a.kind == "channel"), None)
        count = (len(axis.channel_names) or axis.size or 1) if axis is not None else 1
        channels += count
    return 4 * voxels * (2 + channels)


def check_streamable(spec: ModelSpec) -> None:
    """Refuse models whose processing cannot be done block by block.

    Raises
    ------
    StreamingUnsupportedError
        For a model with more than one input, or whose postprocessing needs
        statistics of its own output.
    """
    if len(spec.inputs) != 1:
        raise StreamingUnsupportedError(
            f"model {spec.name!r} has {len(spec.inputs)} inputs; images too large for memory "
            "can only be processed with single-input models"
        )
    for t in spec.outputs:
        needing = [
            op.id
            for op in t.postprocessing
            if any(r.tensor_id == t.id for r in Processing([op], t).stat_requests())
        ]
        if needing:
            ops = ", ".join(dict.fromkeys(needing))
            raise StreamingUnsupportedError(
                f"model {spec.name!r}: the postprocessing of output {t.id!r} ({ops}) needs "
                "statistics of the whole output, which an image too large for memory cannot "
                "provide block by block; crop or downsample the image"
            )


class BlockSink(Protocol):
    """Where streamed output blocks go (a :class:`~zoodesk.images.TiledOmeTiffWriter`)."""

    def write_block(self, region: Sequence[slice], data: np.ndarray) -> None:
        """Store ``data`` at ``region`` of the output image."""


#: ``open_sink(tensor, shape, dtype, axes)``: the sink for one output image, called
#: once per output when its first block is ready.
OpenSink = Callable[[TensorSpec, tuple[int, ...], np.dtype[Any], str], BlockSink]


@dataclass(frozen=True)
class StreamProgress:
    """Progress of :func:`predict_streaming`: a phase and its units done so far."""

    phase: Phase
    done: int
    total: int


@dataclass(frozen=True)
class StreamedOutput:
    """One output image that was streamed into its sink."""

    tensor_id: str
    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype[Any]
    #: One frame's whole output, in the tensor's axis order.
    frame_shape: tuple[int, ...] = ()


@dataclass
class StreamResult:
    """What :func:`predict_streaming` did."""

    plan: TilePlan
    frames: int
    seconds: float
    inference_seconds: float
    outputs: dict[str, StreamedOutput] = field(default_factory=dict)


def finalize_output_dtype(array: np.ndarray, tensor: TensorSpec) -> np.ndarray:
    """Float outputs as float32, integer outputs as the declared integer type."""
    declared = np.dtype(tensor.data_type) if tensor.data_type != "bool" else np.dtype(np.uint8)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(declared, np.integer):
        if np.issubdtype(array.dtype, np.integer):
            return array if array.dtype == declared else array.astype(declared)
        info = np.iinfo(declared)
        return np.clip(np.rint(array), info.min, info.max).astype(declared)
    if array.dtype != np.float32 and np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    return array


class _BlockRunner:
    """Runs stacked blocks through the predictor's session (graph order, dtypes)."""

    def __init__(self, predictor: Predictor) -> None:
        session = predictor.session
        spec = predictor.spec
        source = Path(session.weights_path)
        self._session = session
        self._in = map_tensors_to_graph(
            [t.id for t in spec.inputs], session.inputs, "inputs", source
        )
        self._out = map_tensors_to_graph(
            [t.id for t in spec.outputs], session.outputs, "outputs", source
        )
        self._dtypes = [session.inputs[i].dtype for i in self._in]
        self.seconds = 0.0

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        graph_feeds: list[np.ndarray] = [np.empty(0)] * len(feeds)
        for k, (arr, dtype) in enumerate(zip(feeds, self._dtypes, strict=True)):
            graph_feeds[self._in[k]] = arr if arr.dtype == dtype else arr.astype(dtype)
        start = time.perf_counter()
        raw = self._session.run(graph_feeds)
        self.seconds += time.perf_counter() - start
        return [raw[i] for i in self._out]


def _split_axis(tensor: TensorSpec, requests: frozenset[StatRequest], shape: Sequence[int]) -> int:
    """The axis along which the statistics pass may cut bands: one every request
    reduces (blocks must span the axes a statistic keeps), outermost spatial first."""
    candidates = [i for i, a in enumerate(tensor.axes) if a.is_spatial and shape[i] > 1]
    candidates += [i for i, a in enumerate(tensor.axes) if not a.is_spatial and shape[i] > 1]
    for i in candidates:
        axis_id = tensor.axes[i].id
        if all(r.axes is None or axis_id in r.axes for r in requests):
            return i
    return -1


def _bands(shape: Sequence[int], axis: int) -> list[tuple[slice, ...]]:
    if axis < 0:
        return [tuple(slice(None) for _ in shape)]
    per_index = math.prod(shape) // max(1, shape[axis])
    step = max(1, STATS_BAND_VOXELS // max(1, per_index))
    bands = []
    for start in range(0, shape[axis], step):
        index = [slice(None)] * len(shape)
        index[axis] = slice(start, min(shape[axis], start + step))
        bands.append(tuple(index))
    return bands


def statistics_stages(
    tensor: TensorSpec,
    pre: Processing,
    post_requests: frozenset[StatRequest],
    frame_shape: Sequence[int],
) -> list[tuple[int, frozenset[StatRequest], list[tuple[slice, ...]]]]:
    """The statistics passes over one frame: per preprocessing stage that needs any,
    ``(stage, requests, bands)``, the bands cutting the frame along an axis every
    request reduces (each band's statistics can be computed apart and merged)."""
    stages = [set(pre.stat_requests(k)) for k in range(pre.n_stages)]
    if not stages:
        stages = [set()]
    stages[0] |= set(post_requests)
    return [
        (k, frozenset(reqs), _bands(frame_shape, _split_axis(tensor, frozenset(reqs), frame_shape)))
        for k, reqs in enumerate(stages)
        if reqs
    ]


def band_statistics(
    frame: np.ndarray,
    index: tuple[slice, ...],
    tensor: TensorSpec,
    pre: Processing,
    stage: int,
    requests: frozenset[StatRequest],
    stats: Mapping[StatRequest, np.ndarray],
    accumulator: StatsAccumulator | None = None,
) -> StatsAccumulator:
    """Add one band of a frame, as seen by preprocessing stage ``stage`` (the earlier
    stages applied with ``stats``), to ``accumulator`` (a new one when None)."""
    accumulator = accumulator or StatsAccumulator(requests, max_exact_samples=STATS_EXACT_SAMPLES)
    block = np.array(frame[index])
    release_mapped_pages(frame)
    for earlier in range(stage):
        block = pre.apply(block, tensor.axis_ids, stats, stage=earlier)
    accumulator.update(tensor.id, block, tensor.axis_ids)
    return accumulator


def _stream_statistics(
    frame: np.ndarray,
    tensor: TensorSpec,
    pre: Processing,
    post_requests: frozenset[StatRequest],
    cancelled: Callable[[], bool],
    report: Callable[[int, int], StreamProgress],
) -> Generator[StreamProgress, None, dict[StatRequest, np.ndarray]]:
    """Whole-frame statistics of every preprocessing stage and of the raw input."""
    stats: dict[StatRequest, np.ndarray] = {}
    plans = statistics_stages(tensor, pre, post_requests, frame.shape)
    total = sum(len(bands) for _k, _r, bands in plans)
    done = 0
    for k, requests, bands in plans:
        accumulator = StatsAccumulator(requests, max_exact_samples=STATS_EXACT_SAMPLES)
        for index in bands:
            if cancelled():
                raise CancelledError("cancelled")
            band_statistics(frame, index, tensor, pre, k, requests, stats, accumulator)
            done += 1
            yield report(done, total)
        stats.update(accumulator.finalize())
    return stats


@dataclass
class _OutputState:
    tensor: TensorSpec
    maps: dict[str, OutputAxisMap]
    frame_shape: tuple[int, ...]
    placement: OutputPlacement
    sink: BlockSink | None = None
    dtype: np.dtype[Any] | None = None


def predict_streaming(
    predictor: Predictor,
    mapping: AxisMapping,
    array: np.ndarray,
    open_sink: OpenSink,
    *,
    cancelled: Callable[[], bool] | None = None,
    frame_stats: Mapping[int, Mapping[StatRequest, np.ndarray]] | None = None,
    select: Callable[[int, int], bool] | None = None,
) -> Generator[StreamProgress, None, StreamResult]:
    """Predict an image block by block, handing each output block to a sink.

    Parameters
    ----------
    predictor
        The model's predictor (its session, tile settings and padding mode are used).
    mapping
        How the image feeds the model's input (frames are streamed one by one).
    array
        The image in the axes of ``mapping`` (normally a read-only memmap).
    open_sink
        Called once per output tensor with the shape, dtype and OME axes of the
        assembled output image; returns where its blocks go.
    cancelled
        Checked between bands and between session calls.
    frame_stats
        The whole-frame statistics, by frame number, computed elsewhere (e.g. as a
        reduction over a cluster's workers): the statistics pass is skipped.
    select
        ``select(frame number, block number)``: only the blocks it accepts are run
        (frames without any are skipped); the others are left to other processes
        writing into the same output.  Block numbers follow ``plan.blocks()``.

    Yields
    ------
    StreamProgress
        ``statistics`` bands, then ``blocks`` (over all frames).

    Returns
    -------
    StreamResult
        The plan, timings and the outputs' shapes, axes and types.

    Raises
    ------
    StreamingUnsupportedError
        For a model whose processing cannot stream (see :func:`check_streamable`).
    CancelledError
        When ``cancelled`` returned True; the sinks then hold partial data.
    """
    is_cancelled = cancelled or (lambda: False)
    spec = predictor.spec
    check_streamable(spec)
    tensor = mapping.tensor
    axes = tensor.axis_ids
    pre = Processing(tensor.preprocessing, tensor)
    posts = {t.id: Processing(t.postprocessing, t) for t in spec.outputs}
    post_requests = frozenset(
        r for p in posts.values() for r in p.stat_requests() if r.tensor_id == tensor.id
    )
    runner = _BlockRunner(predictor)
    start = time.perf_counter()
    frame_count = mapping.frame_count
    states: dict[str, _OutputState] = {}
    plan: TilePlan | None = None
    blocks_done = 0
    for f, (frame_index, frame) in enumerate(mapping.frames(array)):
        if frame.ndim != len(tensor.axes):
            raise ShapeError(
                f"input {tensor.id!r} needs {len(tensor.axes)} dimensions "
                f"({tensor.axes_letters}), got shape {frame.shape}"
            )

        def stats_report(done: int, total: int, _f: int = f) -> StreamProgress:
            return StreamProgress("statistics", _f * total + done, frame_count * total)

        plan = predictor.plan({tensor.id: frame.shape})
        blocks = [
            blk for number, blk in enumerate(plan.blocks()) if select is None or select(f, number)
        ]
        if not blocks:
            continue
        if frame_stats is not None:
            stats = dict(frame_stats[f])
        else:
            stats = yield from _stream_statistics(
                frame, tensor, pre, post_requests, is_cancelled, stats_report
            )
        post_stats = {
            t.id: {
                r: align_stat(v, axes, t.axis_ids)
                for r, v in stats.items()
                if r in posts[t.id].stat_requests()
            }
            for t in spec.outputs
        }
        total = frame_count * len(blocks)
        outer = next(iter(plan.axis_blocks), None)
        last_outer: AxisBlock | None = None
        for chunk_start in range(0, len(blocks), plan.batch_size):
            if is_cancelled():
                raise CancelledError("cancelled")
            chunk = blocks[chunk_start : chunk_start + plan.batch_size]
            parts = [
                _input_block(frame, tensor, blk, pre, stats, predictor.pad_mode) for blk in chunk
            ]
            batch_axis = next((i for i, a in enumerate(tensor.axes) if a.kind == "batch"), None)
            feed = (
                parts[0]
                if len(parts) == 1 or batch_axis is None
                else np.concatenate(parts, axis=batch_axis)
            )
            outputs = runner.run([np.ascontiguousarray(feed)])
            for t, out in zip(spec.outputs, outputs, strict=True):
                if out.ndim != len(t.axes):
                    raise ShapeError(
                        f"output {t.id!r}: the graph returned {out.ndim} dimensions, the "
                        f"description declares {len(t.axes)} ({t.axes_letters})"
                    )
                out_batch = next((i for i, a in enumerate(t.axes) if a.kind == "batch"), None)
                for k, blk in enumerate(chunk):
                    piece = (
                        out
                        if out_batch is None or len(chunk) == 1
                        else np.take(out, [k], axis=out_batch)
                    )
                    _emit(
                        states, spec, t, plan, mapping, frame_index, blk, piece,
                        posts[t.id], post_stats[t.id], open_sink,
                    )  # fmt: skip
            blocks_done += len(chunk)
            # Blocks come band by band along the outer axis: once a band is done, its
            # pages of the input need not stay in this process's memory.
            current = chunk[-1].get(outer) if outer is not None else None
            if current != last_outer:
                release_mapped_pages(frame)
                last_outer = current
            yield StreamProgress("blocks", blocks_done, total)
        release_mapped_pages(frame)
    assert plan is not None
    result = StreamResult(
        plan=plan,
        frames=frame_count,
        seconds=time.perf_counter() - start,
        inference_seconds=runner.seconds,
    )
    for tid, state in states.items():
        assert state.dtype is not None
        result.outputs[tid] = StreamedOutput(
            tid, state.placement.shape, state.placement.axes, state.dtype, state.frame_shape
        )
    return result


def _input_block(
    frame: np.ndarray,
    tensor: TensorSpec,
    block: Mapping[str, AxisBlock],
    pre: Processing,
    stats: Mapping[StatRequest, np.ndarray],
    pad_mode: str,
) -> np.ndarray:
    # Preprocess before padding, so that constant padding is zero in the model's
    # input space, as it is when a whole preprocessed sample is tiled.
    index, pad = block_region(frame.shape, tensor, block)
    raw = np.array(frame[index])
    return pad_array(pre.apply(raw, tensor.axis_ids, stats), pad, pad_mode)


def _emit(
    states: dict[str, _OutputState],
    spec: ModelSpec,
    tensor: TensorSpec,
    plan: TilePlan,
    mapping: AxisMapping,
    frame_index: tuple[int, ...],
    block: Mapping[str, AxisBlock],
    piece: np.ndarray,
    post: Processing,
    stats: Mapping[StatRequest, np.ndarray],
    open_sink: OpenSink,
) -> None:
    """Crop, postprocess and hand one block's output to its sink."""
    state = states.get(tensor.id)
    if state is None:
        frame_shape = final_output_shape(spec, tensor, plan, piece)
        state = _OutputState(
            tensor=tensor,
            maps=output_axis_maps(spec, tensor),
            frame_shape=frame_shape,
            placement=output_placement(mapping, tensor, frame_shape),
        )
        states[tensor.id] = state
    dst, src = owned_slices(tensor, state.maps, plan, block, state.frame_shape, piece.shape)
    owned = finalize_output_dtype(post.apply(piece[src], tensor.axis_ids, stats), tensor)
    if state.sink is None:
        state.dtype = owned.dtype
        state.sink = open_sink(tensor, state.placement.shape, owned.dtype, state.placement.axes)
    region, data = state.placement.place(frame_index, dst, owned)
    state.sink.write_block(region, data)
