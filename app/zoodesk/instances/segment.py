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
from array import array
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any, overload

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


#: Bytes of decoded scratch tiles kept in memory while objects are cut out (pass 2).
TILE_CACHE_BYTES = 64 << 20

#: Largest side of a scratch tile.
_TILE_SIDE = 256


def _tile_side(block_side: int) -> int:
    """A scratch tile's side along one axis: at most 256 pixels, dividing the block's."""
    for side in range(min(block_side, _TILE_SIDE), 63, -1):
        if block_side % side == 0:
            return side
    return block_side


class _TileStore:
    """A frame's temporary labels on disk: cut into tiles, each compressed (zstd).

    Written one block at a time (pass 1, blocks made of whole tiles) and read back
    through a cache of decoded tiles (pass 2): plain file reads and writes, so none of
    it counts as the process's memory, and no tile is decoded twice while the objects
    that need it are cut out in raster order.
    """

    def __init__(self, folder: Path, shape: tuple[int, ...], tile: tuple[int, ...], dtype: Any):
        from numcodecs import Zstd

        self.shape = shape
        self.tile = tile
        self.dtype = np.dtype(dtype)
        self._codec = Zstd(level=1)
        # Closed by close(); a temporary file leaves nothing behind even on a crash.
        self._file = tempfile.TemporaryFile(prefix=".zoodesk-labels-", dir=folder)  # noqa: SIM115
        self._where: dict[tuple[int, ...], tuple[int, int]] = {}
        self._end = 0
        self._cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._cached = 0

    def close(self) -> None:
        self._cache.clear()
        self._file.close()

    def write(self, region: tuple[slice, ...], values: np.ndarray) -> None:
        """Store a block (a region made of whole tiles)."""
        ranges = [
            range(r.start // t, -(-r.stop // t)) for r, t in zip(region, self.tile, strict=True)
        ]
        for index in product(*ranges):
            part = _region(index, self.shape, self.tile)
            local = tuple(
                slice(p.start - r.start, p.stop - r.start)
                for p, r in zip(part, region, strict=True)
            )
            tile = np.ascontiguousarray(values[local], dtype=self.dtype)
            if not tile.any():
                continue  # an empty tile reads back as zeros
            data = self._codec.encode(tile)
            self._file.seek(self._end)
            self._file.write(data)
            self._where[index] = (self._end, len(data))
            self._end += len(data)

    def _tile(self, index: tuple[int, ...]) -> np.ndarray:
        found = self._cache.get(index)
        if found is not None:
            self._cache.move_to_end(index)
            return found
        shape = tuple(r.stop - r.start for r in _region(index, self.shape, self.tile))
        where = self._where.get(index)
        if where is None:
            found = np.zeros(shape, dtype=self.dtype)
        else:
            self._file.seek(where[0])
            raw = self._codec.decode(self._file.read(where[1]))
            found = np.frombuffer(raw, dtype=self.dtype).reshape(shape)
        self._cache[index] = found
        self._cached += found.nbytes
        while self._cached > TILE_CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= old.nbytes
        return found

    def read(self, bbox: tuple[slice, ...]) -> np.ndarray:
        """The labels over a region."""
        ranges = [
            range(b.start // t, (b.stop - 1) // t + 1) for b, t in zip(bbox, self.tile, strict=True)
        ]
        if all(len(r) == 1 for r in ranges):  # within one tile
            index = tuple(r[0] for r in ranges)
            part = _region(index, self.shape, self.tile)
            inner = tuple(
                slice(b.start - p.start, b.stop - p.start) for b, p in zip(bbox, part, strict=True)
            )
            return self._tile(index)[inner]
        out = np.empty(tuple(b.stop - b.start for b in bbox), dtype=self.dtype)
        for index in product(*ranges):
            part = _region(index, self.shape, self.tile)
            lo = [max(b.start, p.start) for b, p in zip(bbox, part, strict=True)]
            hi = [min(b.stop, p.stop) for b, p in zip(bbox, part, strict=True)]
            source = tuple(
                slice(a - p.start, z - p.start) for a, z, p in zip(lo, hi, part, strict=True)
            )
            target = tuple(
                slice(a - b.start, z - b.start) for a, z, b in zip(lo, hi, bbox, strict=True)
            )
            out[target] = self._tile(index)[source]
        return out


@dataclass
class FoundObject:
    """One object of a frame: where it is and which pixels are its."""

    bbox: tuple[slice, ...]
    mask: np.ndarray
    first: int
    pixels: int


class FrameObjects(Sequence[FoundObject]):
    """A frame's objects, kept compactly, in the raster order of their first pixel.

    Bounding boxes, first pixels and sizes are numbers in arrays, the masks bits in
    one buffer: about 60 bytes and a bit per bounding-box pixel for each object,
    where an object of its own (a dataclass, slices, an array) takes a kilobyte.
    Indexing gives :class:`FoundObject` (its mask unpacked), slicing a list of them.
    """

    def __init__(self, ndim: int):
        self.ndim = ndim
        self._starts = array("q")
        self._stops = array("q")
        self._first = array("q")
        self._pixels = array("q")
        self._offsets = array("q", [0])
        self._bits = bytearray()
        self._order: np.ndarray | None = None

    def append(self, obj: FoundObject) -> None:
        """Add an object (before :meth:`finish`)."""
        assert self._order is None, "objects added after finish()"
        self._starts.extend(s.start for s in obj.bbox)
        self._stops.extend(s.stop for s in obj.bbox)
        self._first.append(obj.first)
        self._pixels.append(obj.pixels)
        self._bits += np.packbits(obj.mask, axis=None).tobytes()
        self._offsets.append(len(self._bits))

    def finish(self) -> FrameObjects:
        """Put the objects in the raster order of their first pixel."""
        first = np.frombuffer(self._first, dtype=np.int64) if self._first else np.zeros(0)
        self._order = np.argsort(first, kind="stable")
        return self

    def __len__(self) -> int:
        return len(self._first)

    def box_pixels(self) -> np.ndarray:
        """The pixels of each object's bounding box, in order (nothing unpacked)."""
        if not self._first:
            return np.zeros(0, dtype=np.int64)
        starts = np.frombuffer(self._starts, dtype=np.int64).reshape(-1, self.ndim)
        stops = np.frombuffer(self._stops, dtype=np.int64).reshape(-1, self.ndim)
        sizes = np.prod(stops - starts, axis=1)
        return sizes if self._order is None else sizes[self._order]

    def _get(self, i: int) -> FoundObject:
        n = self.ndim
        k = int(self._order[i]) if self._order is not None else i
        bbox = tuple(
            slice(a, b)
            for a, b in zip(
                self._starts[k * n : (k + 1) * n], self._stops[k * n : (k + 1) * n], strict=True
            )
        )
        shape = tuple(s.stop - s.start for s in bbox)
        packed = np.frombuffer(
            self._bits, dtype=np.uint8, count=self._offsets[k + 1] - self._offsets[k],
            offset=self._offsets[k],
        )  # fmt: skip
        mask = np.unpackbits(packed, count=math.prod(shape)).reshape(shape).view(np.bool_)
        return FoundObject(bbox, mask, self._first[k], self._pixels[k])

    @overload
    def __getitem__(self, index: int) -> FoundObject: ...

    @overload
    def __getitem__(self, index: slice) -> list[FoundObject]: ...

    def __getitem__(self, index: int | slice) -> FoundObject | list[FoundObject]:
        if isinstance(index, slice):
            return [self._get(i) for i in range(*index.indices(len(self)))]
        i = index + len(self) if index < 0 else index
        if not 0 <= i < len(self):
            raise IndexError(index)
        return self._get(i)


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
        self.temp: np.ndarray | None = None
        # A frame has fewer components than pixels: 32-bit numbers do below 2**31.
        self.dtype = np.dtype(np.int32 if math.prod(shape) < 2**31 else np.int64)
        self._store: _TileStore | None = None
        if math.prod(shape) <= IN_MEMORY_PIXELS or scratch is None:
            self.temp = np.zeros(shape, dtype=self.dtype)
        else:
            tile = tuple(_tile_side(b) for b in block)
            self._store = _TileStore(scratch, shape, tile, self.dtype)
        self.count = 0
        self._starts: list[np.ndarray] = [np.zeros((1, len(shape)), dtype=np.int64)]
        self._stops: list[np.ndarray] = [np.zeros((1, len(shape)), dtype=np.int64)]
        self._first: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self._pixels: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self._edges: list[np.ndarray] = []
        self._faces: dict[tuple[tuple[int, ...], int], np.ndarray] = {}
        self._by_value: dict[int, int] = {}

    def read(self, bbox: tuple[slice, ...]) -> np.ndarray:
        """The temporary labels over a region (pass 2)."""
        if self._store is not None:
            return self._store.read(bbox)
        assert self.temp is not None
        return self.temp[bbox]

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def add_block(
        self, index: tuple[int, ...], local: np.ndarray, values: np.ndarray | None
    ) -> None:
        """Add one block's local labels (1..n); ``values`` are the label values in labels mode."""
        region = _region(index, self.shape, self.block)
        n = int(local.max()) if local.size else 0
        glob = local.astype(self.dtype)
        if self.count:
            np.add(glob, self.count, out=glob, where=glob > 0)
        if self._store is not None:
            self._store.write(region, glob)
        else:
            assert self.temp is not None
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
            # The first pixel of each label: the smallest flat index that holds it.
            where = np.flatnonzero(flat)
            first_local = np.full(n + 1, flat.size, dtype=np.int64)
            np.minimum.at(first_local, flat[where], where)
            present = np.flatnonzero(first_local < flat.size)
            first = np.zeros(n + 1, dtype=np.int64)
            coords = np.unravel_index(first_local[present], local.shape)
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
    from skimage.segmentation import watershed

    # Padding makes the bounding box's edge background, as the image's edge is.
    inner = tuple(slice(1, -1) for _ in mask.shape)
    padded = np.zeros(tuple(n + 2 for n in mask.shape), dtype=mask.dtype)
    padded[inner] = mask
    distance = ndi.distance_transform_edt(padded, sampling=sampling)[inner]
    peaks = _local_maxima(distance, mask, settings.min_distance)
    if len(peaks) <= 1:
        return mask.astype(np.int32)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return np.asarray(watershed(-distance, markers, mask=mask), dtype=np.int32)


def _local_maxima(distance: np.ndarray, mask: np.ndarray, min_distance: int) -> np.ndarray:
    """The seeds of one object: the peaks that scikit-image's ``peak_local_max`` finds
    in ``distance`` with ``labels=mask``, ``min_distance`` and ``exclude_border=False``,
    the same points in the same order.

    Its steps, for one label: candidates are the pixels of the mask that equal the
    maximum within ``min_distance`` (a square window, the map's edge repeated) and
    exceed the map's minimum, or, when every pixel of the mask is such a maximum, the
    pixels an opening removes; they are ordered by height (ties in raster order), and
    each is kept unless a point kept before it is nearer than ``min_distance`` (in
    the maximum norm).  Done here without the k-d tree it builds for every object,
    which costs more than the rest of the object's work.
    """
    roi = ndi.find_objects(mask.astype(np.uint8), max_label=1)[0]
    if roi is None:
        return np.zeros((0, mask.ndim), dtype=np.intp)
    inside = mask[roi]
    image = distance[roi].copy()
    image[~inside] = np.finfo(image.dtype).min
    threshold = distance.min()
    if image.size == 1:
        candidates = image > threshold
    else:
        # A full square window: scipy filters it as a separable one (size=).
        size = 2 * min_distance + 1
        candidates = image == ndi.maximum_filter(image, size=size, mode="nearest")
        if np.all(candidates[inside]):
            candidates[:] = False
            candidates[np.logical_xor(inside, ndi.binary_opening(inside))] = True
        candidates &= image > threshold
    where = np.nonzero(candidates)
    points = np.transpose(where)[np.argsort(-image[where], kind="stable")]
    if min_distance > 1 and len(points) > 1:
        kept: list[int] = []
        if len(points) <= 64:  # the usual few: plain Python is quickest
            listed = points.tolist()
            for i, p in enumerate(listed):
                if all(max(abs(a - b) for a, b in zip(p, listed[k], strict=True)) >= min_distance
                       for k in kept):  # fmt: skip
                    kept.append(i)
        else:
            rejected = np.zeros(len(points), dtype=bool)
            for i in range(len(points)):
                if not rejected[i]:
                    kept.append(i)
                    rejected |= np.abs(points - points[i]).max(axis=1) < min_distance
        points = points[kept]
    return points + np.array([s.start for s in roi], dtype=np.intp)


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
    others: np.ndarray | None,
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
        assert others is not None
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
) -> FrameObjects:
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
                components.add_block(index, local, None)
        comp_of, starts, stops, first, pixels = components.join()
        # Thresholded components (and given labels) are the objects as they are.
        simple = settings.method == "labels" or (
            settings.method == "threshold" and not settings.fill_holes
        )
        found = FrameObjects(len(shape))
        for c in range(len(pixels)):
            if cancelled():
                raise CancelledError
            bbox = tuple(slice(int(a), int(b)) for a, b in zip(starts[c], stops[c], strict=True))
            if math.prod(s.stop - s.start for s in bbox) > MAX_COMPONENT_PIXELS:
                raise InstanceSettingsError(
                    f"one object spans {int(pixels[c])} pixels: the threshold is probably "
                    "too low for this image"
                )
            if simple and not _size_ok(int(pixels[c]), settings):
                continue
            crop = comp_of[components.read(bbox)]
            comp_mask = crop == c + 1
            if simple:
                # The bounding box is the component's own, tight, and so is its first pixel.
                found.append(FoundObject(bbox, comp_mask, int(first[c]), int(pixels[c])))
                continue
            others = (crop > 0) & ~comp_mask if settings.fill_holes else None
            bmap = np.asarray(boundary(bbox)) if boundary is not None else None
            for box, mask in _refine(comp_mask, others, bmap, settings, sampling, structure):
                if mask is comp_mask:
                    # Neither filled nor split: the component itself.
                    if _size_ok(int(pixels[c]), settings):
                        found.append(FoundObject(bbox, mask, int(first[c]), int(pixels[c])))
                    continue
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
    return found.finish()


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
