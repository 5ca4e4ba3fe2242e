"""A compressed TIFF read tile by tile: for images read block by block in bounded memory.

Uncompressed TIFF data is memory-mapped, but compressed data (a run's tiled outputs,
zlib or zstd) would be decoded whole: a 16384 x 16384 float32 output takes 1 GiB
of memory, four times what its prediction needed.  :class:`TiffTiles` instead
decodes only the tiles (or strips) that an index touches, keeping the most recently
used ones in a small cache, so that reading an image block by block, or object by
object, holds a few tiles at a time whatever the image's size.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

#: Bytes of decoded tiles kept for reads that come back to them.
TILE_CACHE_BYTES = 16 << 20


class TiffTiles:
    """The pixels of one TIFF series (full resolution), decoded where indexed.

    Indexing with integers and slices (``array[0, 100:600, :]``) returns a NumPy
    array, as indexing the decoded image would; ``numpy.asarray`` decodes it all.
    The file stays open until :meth:`close` (or until the object is collected).
    """

    def __init__(self, path: Path, series: int = 0, cache_bytes: int | None = None):
        import tifffile
        import zarr

        self.path = Path(path)
        self._tif = tifffile.TiffFile(self.path)
        try:
            tseries = self._tif.series[series]
            self._array = zarr.open_array(tseries.aszarr(level=0), mode="r")
            if tuple(self._array.shape) != tuple(tseries.shape):
                raise ValueError(
                    f"tiles of shape {self._array.shape} for a series of {tseries.shape}"
                )
        except BaseException:
            self._tif.close()
            raise
        self.shape: tuple[int, ...] = tuple(int(n) for n in self._array.shape)
        self.dtype = np.dtype(self._array.dtype).newbyteorder("=")
        self.ndim = len(self.shape)
        self.chunks: tuple[int, ...] = tuple(int(c) for c in self._array.chunks)
        self._cache_bytes = TILE_CACHE_BYTES if cache_bytes is None else cache_bytes
        self._cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def close(self) -> None:
        """Close the file and drop the cached tiles."""
        with self._lock:
            self._cache.clear()
            self._cached = 0
        self._tif.close()

    def __enter__(self) -> TiffTiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        whole = self[tuple(slice(None) for _ in self.shape)]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def _chunk(self, index: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            found = self._cache.get(index)
            if found is not None:
                self._cache.move_to_end(index)
                return found
        region = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(index, self.chunks, self.shape, strict=True)
        )
        found = np.asarray(self._array[region], dtype=self.dtype)
        with self._lock:
            self._cache[index] = found
            self._cached += found.nbytes
            while self._cached > self._cache_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cached -= old.nbytes
        return found

    def __getitem__(self, key: Any) -> np.ndarray:
        items = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in items):
            at = next(i for i, k in enumerate(items) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(items) + 1)
            items = items[:at] + fill + items[at + 1 :]
        if len(items) > self.ndim or not all(
            isinstance(k, (slice, int, np.integer)) for k in items
        ):
            # Fancy indexing: rare here, left to zarr.
            return np.asarray(self._array[key], dtype=self.dtype)
        items = items + (slice(None),) * (self.ndim - len(items))
        bounds: list[tuple[int, int]] = []
        keep: list[bool] = []
        for k, n in zip(items, self.shape, strict=True):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step != 1:
                    return np.asarray(self._array[key], dtype=self.dtype)
                bounds.append((start, max(start, stop)))
                keep.append(True)
            else:
                i = int(k) + n if int(k) < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {int(k)} is out of bounds for size {n}")
                bounds.append((i, i + 1))
                keep.append(False)
        out = np.empty(tuple(b - a for a, b in bounds), dtype=self.dtype)
        if out.size:
            ranges = [
                range(a // c, (b - 1) // c + 1)
                for (a, b), c in zip(bounds, self.chunks, strict=True)
            ]
            for index in product(*ranges):
                chunk = self._chunk(index)
                source, target = [], []
                for i, (a, b), c in zip(index, bounds, self.chunks, strict=True):
                    lo, hi = max(a, i * c), min(b, (i + 1) * c)
                    source.append(slice(lo - i * c, hi - i * c))
                    target.append(slice(lo - a, hi - a))
                out[tuple(target)] = chunk[tuple(source)]
        return out.reshape(tuple(n for n, k in zip(out.shape, keep, strict=True) if k))
