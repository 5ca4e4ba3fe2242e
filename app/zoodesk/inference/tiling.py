"""Splitting a sample into blocks the model accepts, and stitching the outputs.

Per spatial axis an input block is either the whole axis (padded up to a size the
model accepts) or one of several overlapping blocks of an allowed size.  Neighbouring
blocks overlap by twice the halo the description declares; each block contributes
only its *owned* region, which excludes the halo except at the image border, where
the model saw the same border a whole-image run would see.  Nothing is padded
around the image: the first block starts at 0 and the last one ends at the border,
so a tiled run reproduces a whole-image run wherever the halo covers the model's
receptive field.

Coordinates are in input pixels; an output axis maps them through its size
reference: ``out = in * ratio + offset`` with ``ratio = in_scale / out_scale``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from zoodesk.errors import ShapeError
from zoodesk.models.spec import AxisSpec, ModelSpec, TensorSpec

#: Largest block (in voxels) used when the model accepts any size: large enough to
#: run most images in one go, small enough for a laptop GPU.
DEFAULT_MAX_BLOCK_VOXELS_2D = 2048 * 2048
DEFAULT_MAX_BLOCK_VOXELS_3D = 160**3
#: Largest number of voxels sent to the runtime in one call when stacking blocks.
MAX_BATCH_VOXELS = 4 * 1024 * 1024
MAX_BATCH = 8
#: The most blocks per call when a device's free memory allows more than the default.
MAX_DEVICE_BATCH = 32

#: Shortest image axis accepted: anything smaller is padding, not an image.
MIN_AXIS_LENGTH = 4

PAD_MODES = ("reflect", "symmetric", "edge", "constant")


@dataclass(frozen=True)
class AxisBlock:
    """One block along one axis, in input coordinates.

    ``start`` may be negative and ``start + size`` may exceed the axis length: the
    difference is padding.  ``own_start:own_stop`` is the part of the axis whose
    output this block provides.
    """

    start: int
    size: int
    own_start: int
    own_stop: int


@dataclass(frozen=True)
class OutputAxisMap:
    """How an output axis relates to a tiled input axis."""

    input_axis: str
    ratio: float
    offset: int


def _tiles_of_size(length: int, size: int, halo: int, axis_id: str) -> list[AxisBlock]:
    if length <= size:
        pad = size - length
        return [AxisBlock(start=-(pad // 2), size=size, own_start=0, own_stop=length)]
    stride = size - 2 * halo
    if stride <= 0:
        raise ShapeError(
            f"axis {axis_id}: block size {size} leaves nothing once the halo of {halo} "
            "is cropped on both sides"
        )
    starts: list[int] = []
    s = 0
    while True:
        starts.append(min(s, length - size))
        if s + size >= length:
            break
        s += stride
    blocks: list[AxisBlock] = []
    previous_stop = 0
    for start in starts:
        own_start = 0 if start <= 0 else start + halo
        own_stop = length if start + size >= length else start + size - halo
        own_start = max(own_start, previous_stop)
        blocks.append(AxisBlock(start, size, own_start, own_stop))
        previous_stop = own_stop
    return blocks


def choose_block_size(axis: AxisSpec, length: int, halo: int, target: int | None) -> int:
    """The block size for one input axis (see :func:`plan_axis`)."""
    if axis.size is not None:
        return axis.size
    if axis.min is None:
        # Free size (no constraint given): any length is accepted.
        if target is None or length <= target:
            return length
        return max(target, 2 * halo + 1)
    step = axis.step or 0
    if step == 0:
        return axis.min
    if target is None or length <= target:
        return axis.allowed_sizes_at_least(length)
    return axis.allowed_sizes_at_least(max(target, 2 * halo + step))


def plan_axis(axis: AxisSpec, length: int, halo: int, target: int | None) -> list[AxisBlock]:
    """Blocks covering ``length`` pixels of an input axis.

    ``target`` is the largest block wanted for axes of flexible size (``None``:
    one block for the whole axis); ``halo`` is the overlap needed on each side, in
    input pixels.
    """
    if length < MIN_AXIS_LENGTH:
        raise ShapeError(
            f"image too small along {axis.id}: {length} pixel(s); at least "
            f"{MIN_AXIS_LENGTH} are needed"
        )
    size = choose_block_size(axis, length, halo, target)
    return _tiles_of_size(length, size, halo, axis.id)


def output_axis_maps(spec: ModelSpec, tensor: TensorSpec) -> dict[str, OutputAxisMap]:
    """For each axis of an output tensor whose size follows an input axis, how it follows."""
    maps: dict[str, OutputAxisMap] = {}
    for ax in tensor.axes:
        ref = ax.reference
        if ref is None:
            continue
        ref_axis = spec.tensor(ref.tensor_id).axis(ref.axis_id)
        maps[ax.id] = OutputAxisMap(
            input_axis=f"{ref.tensor_id}/{ref.axis_id}",
            ratio=ref_axis.scale / ax.scale,
            offset=ref.offset,
        )
    return maps


def input_halos(spec: ModelSpec) -> dict[str, int]:
    """Halo in input pixels per ``"tensor/axis"``, the largest any output asks for."""
    halos: dict[str, int] = {}
    for out in spec.outputs:
        for ax, amap in zip(
            out.axes, (output_axis_maps(spec, out).get(a.id) for a in out.axes), strict=True
        ):
            if amap is None or ax.halo == 0:
                continue
            h = math.ceil(ax.halo / amap.ratio)
            halos[amap.input_axis] = max(halos.get(amap.input_axis, 0), h)
    return halos


@dataclass
class TilePlan:
    """Blocks for one sample: per tiled input axis, the list of axis blocks."""

    primary: str
    axis_blocks: dict[str, list[AxisBlock]]
    lengths: dict[str, int]
    batch_size: int

    @property
    def block_count(self) -> int:
        return math.prod(len(b) for b in self.axis_blocks.values()) if self.axis_blocks else 1

    @property
    def block_shape(self) -> dict[str, int]:
        return {a: blocks[0].size for a, blocks in self.axis_blocks.items()}

    def blocks(self) -> Iterator[dict[str, AxisBlock]]:
        ids = list(self.axis_blocks)
        for combo in itertools.product(*(self.axis_blocks[a] for a in ids)):
            yield dict(zip(ids, combo, strict=True))

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary for run records and provenance."""
        return {
            "block_shape": self.block_shape,
            "blocks": self.block_count,
            "batch_size": self.batch_size,
            "halo": {a: _halo_of(b) for a, b in self.axis_blocks.items()},
        }


def _halo_of(blocks: list[AxisBlock]) -> int:
    if len(blocks) < 2:
        return 0
    return blocks[0].start + blocks[0].size - blocks[0].own_stop


def plan_tiles(
    spec: ModelSpec,
    shapes: Mapping[str, Sequence[int]],
    *,
    tile: Mapping[str, int] | None = None,
    max_block_voxels: int | None = None,
    graph_batch: int | None = None,
    batch_voxels: int | None = None,
) -> TilePlan:
    """Plan the blocks for a sample whose input tensors have ``shapes``.

    The first input is tiled; other inputs that share its spatial axes (same id and
    length) follow the same blocks, and any other input is passed whole to every
    block.  ``tile`` forces a block size per axis id; ``graph_batch`` is the graph's
    fixed batch size, if it has one.  ``batch_voxels`` is how many input voxels one
    call may carry when blocks are stacked along a free batch axis (default
    :data:`MAX_BATCH_VOXELS`; a GPU's free memory may allow more).
    """
    primary = spec.inputs[0]
    shape = shapes[primary.id]
    halos = input_halos(spec)
    spatial = [a for a in primary.axes if a.is_spatial]
    nd = max(1, len(spatial))
    budget = max_block_voxels or (
        DEFAULT_MAX_BLOCK_VOXELS_3D if nd >= 3 else DEFAULT_MAX_BLOCK_VOXELS_2D
    )
    total = math.prod(shape[primary.index_of(a.id)] for a in spatial) if spatial else 1
    per_axis_target = None if total <= budget else int(budget ** (1 / nd))
    axis_blocks: dict[str, list[AxisBlock]] = {}
    lengths: dict[str, int] = {}
    for a in spatial:
        length = int(shape[primary.index_of(a.id)])
        halo = halos.get(f"{primary.id}/{a.id}", 0)
        target = (tile or {}).get(a.id, per_axis_target)
        if tile and a.id in tile and a.size is not None and tile[a.id] != a.size:
            raise ShapeError(f"axis {a.id}: the model only accepts blocks of {a.size}")
        axis_blocks[a.id] = plan_axis(a, length, halo, target)
        lengths[a.id] = length
    for a in primary.axes:
        if a.kind in ("channel", "index") and a.size is not None:
            actual = int(shape[primary.index_of(a.id)])
            if actual != a.size:
                raise ShapeError(
                    f"input {primary.id!r}: the model expects {a.size} along {a.id}, "
                    f"the image has {actual}"
                )
    block_voxels = math.prod(b[0].size for b in axis_blocks.values()) if axis_blocks else 1
    count = math.prod(len(b) for b in axis_blocks.values()) if axis_blocks else 1
    batch_axis = next((a for a in primary.axes if a.kind == "batch"), None)
    if batch_axis is None or batch_axis.size == 1 or graph_batch is not None:
        batch_size = 1 if batch_axis is None or batch_axis.size == 1 else (graph_batch or 1)
    else:
        voxels = batch_voxels or MAX_BATCH_VOXELS
        most = MAX_BATCH if voxels <= MAX_BATCH_VOXELS else MAX_DEVICE_BATCH
        batch_size = max(1, min(most, count, voxels // max(block_voxels, 1)))
    return TilePlan(primary.id, axis_blocks, lengths, batch_size)


# ------------------------------------------------------------------------- execution


def _pad_width(length: int, block: AxisBlock) -> tuple[slice, tuple[int, int]]:
    lo = max(0, -block.start)
    hi = max(0, block.start + block.size - length)
    return slice(max(0, block.start), min(length, block.start + block.size)), (lo, hi)


def pad_array(array: np.ndarray, pad: Sequence[tuple[int, int]], mode: str) -> np.ndarray:
    """``np.pad`` that never fails on small images: reflect falls back to symmetric,
    then to edge, when the padding is wider than the image allows."""
    if not any(lo or hi for lo, hi in pad):
        return array
    if mode == "constant":
        return np.pad(array, pad, mode="constant")
    if mode == "reflect" and any(
        max(lo, hi) > n - 1 for (lo, hi), n in zip(pad, array.shape, strict=True) if lo or hi
    ):
        mode = "symmetric"
    if mode == "symmetric" and any(
        max(lo, hi) > n for (lo, hi), n in zip(pad, array.shape, strict=True) if lo or hi
    ):
        mode = "edge"
    return np.pad(array, pad, mode=mode)  # type: ignore[call-overload]


def block_region(
    shape: Sequence[int], tensor: TensorSpec, block: Mapping[str, AxisBlock]
) -> tuple[tuple[slice, ...], tuple[tuple[int, int], ...]]:
    """Where one block lies in an input tensor of ``shape``: the slices of the
    tensor inside the block and the padding that completes it to the block's size.

    Parameters
    ----------
    shape
        The whole tensor's shape (model axis order).
    tensor
        The input tensor's description.
    block
        One block of a :class:`TilePlan` (axis id to :class:`AxisBlock`).

    Returns
    -------
    tuple
        ``(index, pad)``: ``pad_array(array[index], pad, mode)`` is the block.
    """
    index: list[slice] = []
    pad: list[tuple[int, int]] = []
    for i, ax in enumerate(tensor.axes):
        b = block.get(ax.id)
        if b is None:
            index.append(slice(None))
            pad.append((0, 0))
            continue
        sl, pw = _pad_width(int(shape[i]), b)
        index.append(sl)
        pad.append(pw)
    return tuple(index), tuple(pad)


def extract_block(
    array: np.ndarray, tensor: TensorSpec, block: Mapping[str, AxisBlock], pad_mode: str
) -> np.ndarray:
    """Cut one block out of an input tensor (model axis order), padding as needed."""
    index, pad = block_region(array.shape, tensor, block)
    return pad_array(array[index], pad, pad_mode)


@dataclass
class _OutputLayout:
    tensor: TensorSpec
    maps: dict[str, OutputAxisMap]
    shape: tuple[int, ...]


def final_output_shape(
    spec: ModelSpec, tensor: TensorSpec, plan: TilePlan, first_block_output: np.ndarray
) -> tuple[int, ...]:
    """The shape of a whole output, given the output of any one block of ``plan``."""
    maps = output_axis_maps(spec, tensor)
    shape = list(first_block_output.shape)
    for i, ax in enumerate(tensor.axes):
        amap = maps.get(ax.id)
        if amap is None:
            continue
        in_axis = amap.input_axis.split("/", 1)[1]
        if in_axis in plan.lengths:
            shape[i] = round(plan.lengths[in_axis] * amap.ratio + amap.offset)
    return tuple(shape)


def output_position(x: int, length: int, final: int, amap: OutputAxisMap) -> int:
    """Where position ``x`` of an input axis of ``length`` lies on the output axis of
    ``final`` length that ``amap`` relates to it (the ends map to the ends)."""
    if x <= 0:
        return 0
    if x >= length:
        return final
    return round(x * amap.ratio + amap.offset / 2)


def owned_slices(
    tensor: TensorSpec,
    maps: Mapping[str, OutputAxisMap],
    plan: TilePlan,
    block: Mapping[str, AxisBlock],
    out_shape: Sequence[int],
    block_shape: Sequence[int],
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The region of the whole output a block owns, and where it lies in the block's output.

    Parameters
    ----------
    tensor, maps
        The output tensor and its :func:`output_axis_maps`.
    plan, block
        The plan and one of its blocks.
    out_shape
        The whole output's shape (:func:`final_output_shape`).
    block_shape
        The shape of the block's output.

    Returns
    -------
    tuple
        ``(dst, src)``: ``whole[dst] = block_output[src]`` stitches the block in.
    """
    dst: list[slice] = []
    src: list[slice] = []
    for i, ax in enumerate(tensor.axes):
        amap = maps.get(ax.id)
        in_axis = amap.input_axis.split("/", 1)[1] if amap else None
        if amap is None or in_axis is None or in_axis not in block:
            if ax.kind == "batch":
                dst.append(slice(None))
                src.append(slice(None))
                continue
            if plan.block_count > 1 and ax.kind in ("space", "time"):
                raise ShapeError(
                    f"output {tensor.id!r}: axis {ax.id} does not follow an input axis, "
                    "so blocks cannot be stitched; the image must fit in one block"
                )
            dst.append(slice(None))
            src.append(slice(None))
            continue
        b = block[in_axis]
        length = plan.lengths[in_axis]
        final = out_shape[i]

        f0 = output_position(b.own_start, length, final, amap)
        f1 = output_position(b.own_stop, length, final, amap)
        origin = round(b.start * amap.ratio)
        l0, l1 = f0 - origin, f1 - origin
        if l0 < 0 or l1 > block_shape[i]:
            raise ShapeError(
                f"output {tensor.id!r}: block output along {ax.id} is too small for its "
                "owned region; the declared halo or size offset is inconsistent"
            )
        dst.append(slice(f0, f1))
        src.append(slice(l0, l1))
    return tuple(dst), tuple(src)


RunBatch = Callable[[list[np.ndarray]], list[np.ndarray]]


def run_tiled(
    spec: ModelSpec,
    inputs: Mapping[str, np.ndarray],
    plan: TilePlan,
    run_batch: RunBatch,
    *,
    pad_mode: str = "reflect",
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """Run ``run_batch`` over every block of ``plan`` and return the stitched outputs."""
    blocks = iter_tiled(spec, inputs, plan, run_batch, pad_mode=pad_mode, cancelled=cancelled)
    while True:
        try:
            next(blocks)
        except StopIteration as stop:
            result: dict[str, np.ndarray] = stop.value
            return result


def iter_tiled(
    spec: ModelSpec,
    inputs: Mapping[str, np.ndarray],
    plan: TilePlan,
    run_batch: RunBatch,
    *,
    pad_mode: str = "reflect",
    cancelled: Callable[[], bool] | None = None,
) -> Generator[tuple[int, int], None, dict[str, np.ndarray]]:
    """Run ``run_batch`` over every block of ``plan``; yield ``(done, total)`` blocks.

    ``inputs`` are whole (preprocessed) tensors in model axis order with a batch of
    one; ``run_batch`` takes the input blocks (stacked along the batch axis, in the
    order of ``spec.inputs``) and returns the output blocks in the order of
    ``spec.outputs``.  ``cancelled`` is checked between calls.  The stitched
    outputs are the generator's return value.
    """
    from zoodesk.errors import CancelledError

    primary = spec.tensor(plan.primary)
    tiled_inputs = []
    for t in spec.inputs:
        shared = all(
            a.id in plan.axis_blocks and inputs[t.id].shape[t.index_of(a.id)] == plan.lengths[a.id]
            for a in t.axes
            if a.is_spatial
        )
        tiled_inputs.append(t.id == primary.id or shared)
    batch_index = {
        t.id: next((i for i, a in enumerate(t.axes) if a.kind == "batch"), None)
        for t in (*spec.inputs, *spec.outputs)
    }
    layouts: dict[str, _OutputLayout] = {}
    results: dict[str, np.ndarray] = {}
    blocks = list(plan.blocks())
    done = 0
    for chunk_start in range(0, len(blocks), plan.batch_size):
        if cancelled is not None and cancelled():
            raise CancelledError("cancelled")
        chunk = blocks[chunk_start : chunk_start + plan.batch_size]
        feeds: list[np.ndarray] = []
        for t, tiled in zip(spec.inputs, tiled_inputs, strict=True):
            parts = [
                extract_block(inputs[t.id], t, blk, pad_mode) if tiled else inputs[t.id]
                for blk in chunk
            ]
            bi = batch_index[t.id]
            if len(parts) == 1 or bi is None:
                feeds.append(np.ascontiguousarray(parts[0]))
            else:
                feeds.append(np.concatenate(parts, axis=bi))
        outputs = run_batch(feeds)
        for t, out in zip(spec.outputs, outputs, strict=True):
            bi = batch_index[t.id]
            if out.ndim != len(t.axes):
                raise ShapeError(
                    f"output {t.id!r}: the graph returned {out.ndim} dimensions, the "
                    f"description declares {len(t.axes)} ({t.axes_letters})"
                )
            for k, blk in enumerate(chunk):
                piece = out if bi is None or len(chunk) == 1 else np.take(out, [k], axis=bi)
                layout = layouts.get(t.id)
                if layout is None:
                    shape = final_output_shape(spec, t, plan, piece)
                    layout = _OutputLayout(t, output_axis_maps(spec, t), shape)
                    layouts[t.id] = layout
                    results[t.id] = np.empty(shape, dtype=piece.dtype)
                dst, src = owned_slices(t, layout.maps, plan, blk, layout.shape, piece.shape)
                results[t.id][dst] = piece[src]
        done += len(chunk)
        yield done, len(blocks)
    return results
