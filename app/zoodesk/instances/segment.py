"""Labelled objects from a foreground map, block by block, in bounded memory.

One algorithm serves small and large images alike, so that a frame labelled in one
block and the same frame labelled in many give the same objects, pixel for pixel
and number for number:

1. **Components.**  Each block is thresholded and its connected components are
   labelled (face connectivity); components touching across a block face are
   joined (a union over the faces' label pairs), so no object is cut at a seam.
2. **Objects.**  Each component is cut out by its bounding box and refined on its
   own: holes filled, touching objects split by a watershed, sizes filtered.  A
   component's refinement depends only on its own pixels and maps, never on the
   block grid.
3. **Numbers.**  Objects are numbered 1, 2, ... in the raster order of their first
   pixel; then the label image is painted block by block into the writer.

Memory is one block plus the largest object's bounding box plus the objects' masks
(about the foreground's size in bytes); the components of a large frame are kept
in a compressed scratch store on disk.
"""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from zoodesk.errors import CancelledError
from zoodesk.instances.settings import (
    InstanceSettings,
    InstanceSettingsError,
    method_unavailable,
)

#: A read of one map over a region of a frame: ``read(spatial_slices) -> array``.
MapReader = Callable[[tuple[slice, ...]], np.ndarray]

#: A component whose bounding box holds more pixels than this is refused: it is what
#: a threshold far too low gives, and refining it would need the whole image.
MAX_COMPONENT_PIXELS = 1 << 27

#: Frames up to this many pixels keep their components in memory, larger ones on disk.
IN_MEMORY_PIXELS = 1 << 24


@dataclass
class FoundObject:
    """One object of a frame: where it is and which pixels are its."""

    bbox: tuple[slice, ...]
    mask: np.ndarray
    first: int
    pixels: int


def block_shape(frame_shape: Sequence[int], edge: int) -> tuple[int, ...]:
    """Blocks of about ``edge**2`` pixels: ``edge`` wide in 2D, a cube as big in 3D."""
    side = edge if len(frame_shape) == 2 else max(16, round(edge ** (2 / len(frame_shape))))
    return tuple(min(int(n), side) for n in frame_shape)


def _blocks(shape: Sequence[int], block: Sequence[int]) -> Iterator[tuple[int, ...]]:
    yield from product(*(range(math.ceil(n / b)) for n, b in zip(shape, block, strict=True)))


def _region(index: Sequence[int], shape: Sequence[int], block: Sequence[int]) -> tuple[slice, ...]:
    return tuple(
        slice(i * b, min((i + 1) * b, n)) for i, n, b in zip(index, shape, block, strict=True)
    )


def otsu_threshold(read_blocks: Callable[[], Iterator[np.ndarray]]) -> float:
    """Otsu's threshold over all blocks, from one histogram (256 bins, global range)."""
    from skimage.filters import threshold_otsu

    low, high = math.inf, -math.inf
    for values in read_blocks():
        finite = values[np.isfinite(values)]
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    if not math.isfinite(low) or low == high:
        return low if math.isfinite(low) else 0.0
    counts = np.zeros(256, dtype=np.int64)
    edges = np.linspace(low, high, 257)
    for values in read_blocks():
        counts += np.histogram(values, bins=edges)[0]
    centres = (edges[:-1] + edges[1:]) / 2
    return float(threshold_otsu(hist=(counts, centres)))


class _Components:
    """Pass 1: block-wise components joined across block faces."""

    def __init__(self, shape: tuple[int, ...], block: tuple[int, ...], scratch: Path | None):
        self.shape = shape
        self.block = block
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.temp: Any
        if math.prod(shape) <= IN_MEMORY_PIXELS or scratch is None:
            self.temp = np.zeros(shape, dtype=np.int64)
        else:
            import zarr

            self._tmp = tempfile.TemporaryDirectory(prefix=".zoodesk-labels-", dir=scratch)
            self.temp = zarr.create_array(
                store=zarr.storage.LocalStore(self._tmp.name),
                shape=shape,
                chunks=block,
                dtype=np.int64,
                fill_value=0,
            )
        self.count = 0
        self._starts: list[np.ndarray] = [np.zeros((1, len(shape)), dtype=np.int64)]
        self._stops: list[np.ndarray] = [np.zeros((1, len(shape)), dtype=np.int64)]
        self._first: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self._pixels: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self._edges: list[np.ndarray] = []
        self._faces: dict[tuple[tuple[int, ...], int], np.ndarray] = {}
        self._by_value: dict[int, int] = {}

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def add_block(
        self, index: tuple[int, ...], local: np.ndarray, values: np.ndarray | None
    ) -> None:
        """Add one block's local labels (1..n); ``values`` are the label values in labels mode."""
        region = _region(index, self.shape, self.block)
        n = int(local.max()) if local.size else 0
        glob = np.where(local > 0, local + self.count, 0)
        self.temp[region] = glob
        if n:
            slices = ndi.find_objects(local, max_label=n)
            starts = np.zeros((n, local.ndim), dtype=np.int64)
            stops = np.zeros((n, local.ndim), dtype=np.int64)
            for k, sl in enumerate(slices):
                if sl is None:  # a value absent from the block (labels mode never has one)
                    continue
                starts[k] = [s.start + r.start for s, r in zip(sl, region, strict=True)]
                stops[k] = [s.stop + r.start for s, r in zip(sl, region, strict=True)]
            flat = local.ravel()
            present, first_local = np.unique(flat, return_index=True)
            first = np.zeros(n + 1, dtype=np.int64)
            coords = np.unravel_index(first_local, local.shape)
            global_coords = tuple(c + r.start for c, r in zip(coords, region, strict=True))
            first[present] = np.ravel_multi_index(global_coords, self.shape)
            self._starts.append(starts)
            self._stops.append(stops)
            self._first.append(first[1:])
            self._pixels.append(np.bincount(flat, minlength=n + 1)[1:].astype(np.int64))
            if values is not None:
                pairs = []
                for k, value in enumerate(values, start=1):
                    known = self._by_value.setdefault(int(value), self.count + k)
                    if known != self.count + k:
                        pairs.append((known, self.count + k))
                if pairs:
                    self._edges.append(np.asarray(pairs, dtype=np.int64))
        if values is None:
            for axis in range(local.ndim):
                if index[axis] > 0:
                    lower = list(index)
                    lower[axis] -= 1
                    face = self._faces.pop((tuple(lower), axis), None)
                    if face is not None:
                        mine = np.take(glob, 0, axis=axis)
                        both = (face > 0) & (mine > 0)
                        if both.any():
                            self._edges.append(np.stack([face[both], mine[both]], axis=1))
                if region[axis].stop < self.shape[axis]:
                    self._faces[(index, axis)] = np.take(glob, -1, axis=axis).copy()
        self.count += n

    def join(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Components: ``comp_of`` (temp label -> 1..K, 0 background) and per component
        its bounding box starts and stops, first pixel and pixel count, in raster order
        of the first pixel."""
        nodes = self.count + 1
        edges = np.concatenate(self._edges) if self._edges else np.zeros((0, 2), dtype=np.int64)
        graph = coo_matrix(
            (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(nodes, nodes)
        )
        _, raw = connected_components(graph, directed=False)
        starts = np.concatenate(self._starts)
        stops = np.concatenate(self._stops)
        first = np.concatenate(self._first)
        pixels = np.concatenate(self._pixels)
        # Component numbers in the raster order of each component's first pixel.
        k = int(raw.max()) + 1
        comp_first = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(comp_first, raw[1:], first[1:])
        background = raw[0]
        order = np.argsort(comp_first, kind="stable")
        order = order[order != background]
        rank = np.zeros(k, dtype=np.int64)
        rank[order] = np.arange(1, len(order) + 1)
        comp_of = rank[raw]
        comp_of[0] = 0
        count = len(order)
        c_starts = np.full((count + 1, len(self.shape)), np.iinfo(np.int64).max, dtype=np.int64)
        c_stops = np.zeros((count + 1, len(self.shape)), dtype=np.int64)
        c_first = np.full(count + 1, np.iinfo(np.int64).max, dtype=np.int64)
        c_pixels = np.zeros(count + 1, dtype=np.int64)
        np.minimum.at(c_starts, comp_of[1:], starts[1:])
        np.maximum.at(c_stops, comp_of[1:], stops[1:])
        np.minimum.at(c_first, comp_of[1:], first[1:])
        np.add.at(c_pixels, comp_of[1:], pixels[1:])
        return comp_of, c_starts[1:], c_stops[1:], c_first[1:], c_pixels[1:]


def _first_index(mask: np.ndarray, bbox: tuple[slice, ...], shape: tuple[int, ...]) -> int:
    local = np.unravel_index(int(np.argmax(mask.ravel())), mask.shape)
    return int(
        np.ravel_multi_index(tuple(c + s.start for c, s in zip(local, bbox, strict=True)), shape)
    )


def _split_by_distance(
    mask: np.ndarray, settings: InstanceSettings, sampling: Sequence[float] | None
) -> np.ndarray:
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    # Padding makes the bounding box's edge background, as the image's edge is.
    padded = np.pad(mask, 1)
    distance = ndi.distance_transform_edt(padded, sampling=sampling)
    inner = tuple(slice(1, -1) for _ in mask.shape)
    distance = distance[inner]
    peaks = peak_local_max(
        distance,
        min_distance=settings.min_distance,
        labels=mask.astype(np.uint8),
        exclude_border=False,
    )
    if len(peaks) <= 1:
        return mask.astype(np.int32)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return np.asarray(watershed(-distance, markers, mask=mask), dtype=np.int32)


def _split_by_boundary(
    mask: np.ndarray, boundary: np.ndarray, settings: InstanceSettings, structure: np.ndarray
) -> np.ndarray:
    from skimage.segmentation import watershed

    seeds, n = ndi.label(mask & (boundary <= settings.boundary_threshold), structure=structure)
    if n <= 1:
        return mask.astype(np.int32)
    return np.asarray(watershed(boundary, seeds, mask=mask), dtype=np.int32)


def _refine(
    comp_mask: np.ndarray,
    others: np.ndarray,
    boundary: np.ndarray | None,
    settings: InstanceSettings,
    sampling: Sequence[float] | None,
    structure: np.ndarray,
) -> list[tuple[tuple[slice, ...], np.ndarray]]:
    """One component's objects: each one's box (within the component's) and mask over it."""
    mask = comp_mask
    whole = tuple(slice(0, n) for n in mask.shape)
    if settings.fill_holes and settings.method != "labels":
        # Only background fills a hole: another object inside it stays itself.
        mask = ndi.binary_fill_holes(mask) & ~others
    if settings.method == "watershed":
        parts = _split_by_distance(mask, settings, sampling)
    elif settings.method == "boundary":
        assert boundary is not None
        parts = _split_by_boundary(mask, boundary, settings, structure)
    else:
        return [(whole, mask)]
    count = int(parts.max())
    if count <= 1:
        return [(whole, mask)]
    # Each part over its own box, found in one pass: a mask per part over the whole
    # component's box would cost parts x box pixels, which a large clump of touching
    # objects (thousands of nuclei) makes take minutes.
    return [
        (box, parts[box] == k)
        for k, box in enumerate(ndi.find_objects(parts, max_label=count), start=1)
        if box is not None
    ]


def segment_frame(
    shape: Sequence[int],
    foreground: MapReader,
    settings: InstanceSettings,
    *,
    threshold: float,
    boundary: MapReader | None = None,
    block: Sequence[int] | None = None,
    sampling: Sequence[float] | None = None,
    scratch: Path | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> list[FoundObject]:
    """The objects of one frame (2D or 3D), in raster order of their first pixel.

    ``foreground`` reads the foreground map (or the labels, for the ``labels``
    method) over a region; ``boundary`` the boundary map.  ``block`` is the labelling
    block (the whole frame by default); the result does not depend on it.
    ``sampling`` is the pixel size along each axis, for the distance transform.
    """
    shape = tuple(int(n) for n in shape)
    block = tuple(block) if block is not None else shape
    unavailable = method_unavailable(settings.method)
    if unavailable is not None:
        raise InstanceSettingsError(unavailable, setting="method")
    structure = ndi.generate_binary_structure(len(shape), 1)
    components = _Components(shape, block, scratch)
    try:
        for index in _blocks(shape, block):
            if cancelled():
                raise CancelledError
            region = _region(index, shape, block)
            values = np.asarray(foreground(region))
            if settings.method == "labels":
                present, inverse = np.unique(values, return_inverse=True)
                _check_labels(present)
                local = inverse.reshape(values.shape).astype(np.int64)
                if present[0] == 0:
                    values_of = present[1:]
                else:
                    local += 1
                    values_of = present
                components.add_block(index, local, values_of)
            else:
                with np.errstate(invalid="ignore"):
                    local, _ = ndi.label(values > threshold, structure=structure)
                components.add_block(index, local.astype(np.int64), None)
        comp_of, starts, stops, _first, pixels = components.join()
        found: list[FoundObject] = []
        for c in range(len(pixels)):
            if cancelled():
                raise CancelledError
            bbox = tuple(slice(int(a), int(b)) for a, b in zip(starts[c], stops[c], strict=True))
            if math.prod(s.stop - s.start for s in bbox) > MAX_COMPONENT_PIXELS:
                raise InstanceSettingsError(
                    f"one object spans {int(pixels[c])} pixels: the threshold is probably "
                    "too low for this image"
                )
            unrefined = settings.method == "threshold" and not settings.fill_holes
            if unrefined and not _size_ok(int(pixels[c]), settings):
                continue
            crop = comp_of[np.asarray(components.temp[bbox])]
            comp_mask = crop == c + 1
            others = (crop > 0) & ~comp_mask
            bmap = np.asarray(boundary(bbox)) if boundary is not None else None
            for box, mask in _refine(comp_mask, others, bmap, settings, sampling, structure):
                size = int(mask.sum())
                if size == 0 or not _size_ok(size, settings):
                    continue
                part = tuple(
                    slice(b.start + p.start, b.start + p.stop)
                    for b, p in zip(bbox, box, strict=True)
                )
                sub_bbox, sub_mask = _tighten(mask, part)
                found.append(
                    FoundObject(sub_bbox, sub_mask, _first_index(sub_mask, sub_bbox, shape), size)
                )
    finally:
        components.close()
    found.sort(key=lambda o: o.first)
    return found


def _check_labels(present: np.ndarray) -> None:
    """Refuse values that are not labels (whole numbers from 0), e.g. a probability map.

    They would be taken as label numbers truncated to integers: a map's values in
    [0, 1) would all fall into one object, background included.
    """
    if present.dtype.kind == "f":
        # NaN is neither >= 0 nor equal to itself: refused as well.
        wrong = present[~(present >= 0) | (present != np.floor(present))]
    elif present.dtype.kind == "i":
        wrong = present[present < 0]
    else:
        return
    if wrong.size:
        raise InstanceSettingsError(
            f"the output holds {float(wrong[0]):g}, which is not a label (labels are whole "
            "numbers, 0 = background): choose threshold or watershed for a map"
        )


def _size_ok(size: int, settings: InstanceSettings) -> bool:
    return size >= settings.min_size and (settings.max_size is None or size <= settings.max_size)


def _tighten(mask: np.ndarray, bbox: tuple[slice, ...]) -> tuple[tuple[slice, ...], np.ndarray]:
    inner = ndi.find_objects(mask.astype(np.uint8), max_label=1)[0]
    assert inner is not None
    return (
        tuple(slice(b.start + i.start, b.start + i.stop) for b, i in zip(bbox, inner, strict=True)),
        mask[inner],
    )


def label_dtype(count: int) -> np.dtype[Any]:
    """uint16 while the labels fit, else uint32."""
    return np.dtype(np.uint16) if count <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


def paint(
    objects: Sequence[FoundObject],
    shape: Sequence[int],
    block: Sequence[int],
    dtype: np.dtype[Any],
    first_label: int = 1,
) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
    """The label image, block by block: ``(region, labels)`` pairs covering ``shape``."""
    shape = tuple(shape)
    block = tuple(block)
    grid: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for k, obj in enumerate(objects):
        ranges = [
            range(s.start // b, (s.stop - 1) // b + 1) for s, b in zip(obj.bbox, block, strict=True)
        ]
        for index in product(*ranges):
            grid[index].append(k)
    for index in _blocks(shape, block):
        region = _region(index, shape, block)
        out = np.zeros(tuple(r.stop - r.start for r in region), dtype=dtype)
        for k in grid.get(index, ()):
            obj = objects[k]
            lo = [max(o.start, r.start) for o, r in zip(obj.bbox, region, strict=True)]
            hi = [min(o.stop, r.stop) for o, r in zip(obj.bbox, region, strict=True)]
            target = tuple(
                slice(a - r.start, b - r.start) for a, b, r in zip(lo, hi, region, strict=True)
            )
            source = tuple(
                slice(a - o.start, b - o.start) for a, b, o in zip(lo, hi, obj.bbox, strict=True)
            )
            out[target][obj.mask[source]] = first_label + k
        yield region, out
