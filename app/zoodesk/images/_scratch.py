"""Images larger than memory, decoded into an anonymous memory-mapped file.

Readers whose formats cannot be memory-mapped as stored (compressed chunks, tiles at
stage positions, frames scattered through a container) decode such images plane by
plane into a temporary file and map it read-only: the pixels are then paged in as
used, like those of an uncompressed TIFF, and the process's memory holds one plane
at a time while decoding.  The planes are written with plain file writes (a
writable map would make every page written count as the process's memory), and the
file has no name: it disappears with the process, even one that is killed.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np

#: Images whose decoded size is above this are decoded into a mapped file.
MAP_ABOVE_BYTES = 256 * 2**20
#: Free space left on the temporary folder's disk after decoding.
KEEP_FREE_BYTES = 2 * 2**30


class ScratchSpaceError(ValueError):
    """The temporary folder's disk cannot hold the decoded image."""


def decoded_bytes(shape: Sequence[int], dtype: np.dtype | type | str) -> int:
    """The size of an image once decoded."""
    return math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize


def mapped_from_planes(
    shape: Sequence[int], dtype: np.dtype | type | str, planes: Iterable[np.ndarray]
) -> np.memmap:
    """A read-only map of an image written from ``planes``, in C order.

    ``planes`` are consecutive pieces of the image in C order (planes, bands of rows
    or single rows); together they must fill ``shape`` exactly.
    """
    dtype = np.dtype(dtype)
    expected = decoded_bytes(shape, dtype)
    folder = tempfile.gettempdir()
    free = shutil.disk_usage(folder).free
    if expected > free - KEEP_FREE_BYTES:
        raise ScratchSpaceError(
            f"decoding needs {expected / 2**30:.1f} GiB of temporary space and {folder} has "
            f"{free / 2**30:.1f} GiB free (set TMPDIR to a larger disk)"
        )
    written = 0
    # The map keeps its own handle on the file: closing ours leaves the data mapped.
    with tempfile.TemporaryFile(prefix="zoodesk-image-") as scratch:
        for plane in planes:
            data = np.ascontiguousarray(plane, dtype=dtype).tobytes()
            written += len(data)
            if written > expected:
                break
            scratch.write(data)
        if written != expected:
            raise ValueError(f"the planes hold {written} bytes, the image {expected}")
        scratch.flush()
        return np.memmap(scratch, dtype=dtype, mode="r", shape=tuple(int(n) for n in shape))
