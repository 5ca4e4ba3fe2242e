"""Write results as OME-TIFF, with physical metadata and provenance, atomically.

The OME-XML is produced here (OME 2016-06 schema) and written as the first page's
ImageDescription; tifffile only writes the pixel data (its own OME writer cannot
write MapAnnotations, which carry the provenance).  Planes are stored in the array's
order of ``T``, ``C`` and ``Z`` (any of the six OME dimension orders), followed by
``Y`` and ``X`` (and RGB samples ``S``): an array whose ``Y``/``X`` are not its last
axes (e.g. ``"YXC"``) is stored with them moved to the end, so reading the file back
gives ``"CYX"``.

Pixel types are kept, except those OME-TIFF cannot hold: bool is stored as uint8
(0/1), float16 as float32, and int64/uint64 as uint32 or int32 when the values fit
(a ValueError otherwise).  Compression is lossless only.  A temporary file beside
the destination receives the data and is renamed to the final name once complete,
so an interrupted write never leaves a partial file under that name.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import tifffile

from zoodesk import __version__
from zoodesk.fileutils import atomic_path, temporary_sibling
from zoodesk.images._ome import (
    AXES_LETTERS,
    OME_NAMESPACE,
    OME_SCHEMA_LOCATION,
    PROVENANCE_NAMESPACE,
    XSI_NAMESPACE,
    add_acquisition,
    normalize_length_unit,
    valid_size,
    xml_safe,
)

#: Outputs whose pixel data exceed this many bytes are written as BigTIFF (classic
#: TIFF offsets are 32-bit; some readers already fail past 2 GiB).
BIGTIFF_THRESHOLD = 2**31 - 2**25

#: Most bytes of tiles that tifffile holds at once while compressing them in threads
#: (its own default, 512 MiB, would dominate the memory of a streamed run).
_ENCODE_BUFFER_BYTES = 32 * 2**20

#: Lossless compressions accepted by :func:`write_ome_tiff`.
LOSSLESS_COMPRESSIONS = ("zlib", "zstd", "lzw", "lzma", "packbits")

_COMPRESSION_ALIASES = {"deflate": "zlib", "adobe_deflate": "zlib"}

_OME_PIXEL_TYPES = {
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.int16): "int16",
    np.dtype(np.uint32): "uint32",
    np.dtype(np.int32): "int32",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}

_CREATOR = f"ZooDesk {__version__}"


@dataclass(frozen=True)
class _Layout:
    """Where the caller's axes go in the file."""

    axes: str  # stored order: T/C/Z in the caller's order, then Y, X (and S)
    order: tuple[int, ...]  # permutation from the caller's array to the stored order
    sizes: dict[str, int]
    dimension_order: str

    @property
    def lead_shape(self) -> tuple[int, ...]:
        return tuple(self.sizes[a] for a in self.axes if a in "TCZ")

    @property
    def plane_shape(self) -> tuple[int, ...]:
        return tuple(self.sizes[a] for a in self.axes if a in "YXS")

    @property
    def planes(self) -> int:
        return math.prod(self.lead_shape)

    @property
    def samples(self) -> int:
        return self.sizes.get("S", 1)

    @property
    def channels(self) -> int:
        return self.sizes.get("C", 1)


def _layout(shape: Sequence[int], axes: str) -> _Layout:
    if not isinstance(axes, str):
        raise ValueError(f"axes must be a string such as 'CYX', not {axes!r}")
    axes = axes.upper()
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes!r} have {len(axes)} letters for shape {tuple(shape)}")
    if set(axes) - set(AXES_LETTERS) or len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes!r} must be distinct letters of {AXES_LETTERS!r}")
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"axes {axes!r} lack Y or X")
    sizes = dict(zip(axes, (int(n) for n in shape), strict=True))
    if any(n <= 0 for n in sizes.values()):
        raise ValueError(f"shape {tuple(shape)} has an empty dimension")
    if sizes.get("S", 3) not in (3, 4):
        raise ValueError(f"an S (RGB samples) axis must have 3 or 4 samples, not {sizes['S']}")
    lead = "".join(a for a in axes if a in "TCZ")
    stored = lead + "YX" + ("S" if "S" in sizes else "")
    # OME lists dimensions fastest first; T, C, Z absent from the array have size 1
    # and may go anywhere after those present.
    dimension_order = "XY" + lead[::-1] + "".join(a for a in "ZCT" if a not in lead)
    return _Layout(
        axes=stored,
        order=tuple(axes.index(a) for a in stored),
        sizes=sizes,
        dimension_order=dimension_order,
    )


def _compression(compression: str | None) -> str | None:
    if compression is None or compression.lower() == "none":
        return None
    name = _COMPRESSION_ALIASES.get(compression.lower(), compression.lower())
    if name not in LOSSLESS_COMPRESSIONS:
        raise ValueError(
            f"compression {compression!r} is not one of the lossless "
            f"{', '.join(LOSSLESS_COMPRESSIONS)} (or None)"
        )
    return name


def _tile(tile: tuple[int, int] | None) -> tuple[int, int] | None:
    if tile is None:
        return None
    if len(tile) != 2 or any(int(n) <= 0 or int(n) % 16 for n in tile):
        raise ValueError(f"tile {tile!r} must be two positive multiples of 16")
    return int(tile[0]), int(tile[1])


def _pixel_sizes(
    pixel_sizes: Mapping[str, tuple[float, str]] | None,
) -> dict[str, tuple[float, str]]:
    checked: dict[str, tuple[float, str]] = {}
    for axis, entry in (pixel_sizes or {}).items():
        key = axis.upper()
        if key not in ("X", "Y", "Z"):
            raise ValueError(f"pixel size for axis {axis!r}: only X, Y and Z have one")
        try:
            value, unit = entry
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"pixel size for {axis!r} must be (size, unit), not {entry!r}"
            ) from None
        ome_unit = normalize_length_unit(str(unit))
        if ome_unit is None:
            raise ValueError(f"pixel size unit {unit!r} for {axis!r} is not a length unit")
        if not valid_size(value):
            raise ValueError(f"pixel size {value!r} for {axis!r} must be positive and finite")
        checked[key] = (value, ome_unit)
    return checked


def _channel_names(names: Sequence[str] | None, layout: _Layout) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    names = [str(n) for n in names]
    if len(names) != layout.channels:
        raise ValueError(
            f"{len(names)} channel names for {layout.channels} channel(s) (axes {layout.axes!r})"
        )
    return names


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.kind not in "buif" or dtype.fields is not None:
        raise ValueError(f"pixel type {dtype} cannot be written to OME-TIFF")


def _stored_dtype(array: np.ndarray) -> np.dtype:
    """The pixel type written for ``array`` (see the module documentation)."""
    dtype = array.dtype
    _check_dtype(dtype)
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype.kind == "f" and dtype.itemsize < 4:
        return np.dtype(np.float32)
    native = dtype.newbyteorder("=")
    if native in _OME_PIXEL_TYPES:
        return native
    low, high = _value_range(array)
    return _narrowest_int(low, high, dtype)


def _value_range(array: np.ndarray) -> tuple[int, int]:
    # Plane by plane, so that a memory-mapped image is never loaded whole.
    low, high = 0, 0
    first = True
    for index in np.ndindex(*array.shape[:-2]):
        plane = array[index]
        plane_low, plane_high = int(plane.min()), int(plane.max())
        low = plane_low if first else min(low, plane_low)
        high = plane_high if first else max(high, plane_high)
        first = False
    return low, high


def _provenance(provenance: Mapping[str, str] | None) -> dict[str, str]:
    return {xml_safe(str(k)): xml_safe(str(v)) for k, v in (provenance or {}).items()}


def _number(value: float) -> str:
    return repr(float(value))


def build_ome_xml(
    *,
    name: str,
    axes: str,
    shape: Sequence[int],
    pixel_type: str,
    pixel_sizes: Mapping[str, tuple[float, str]] | None = None,
    channel_names: Sequence[str] | None = None,
    provenance: Mapping[str, str] | None = None,
    description: str | None = None,
    acquisition: Mapping[str, Any] | None = None,
) -> str:
    """The OME-XML (2016-06) that :func:`write_ome_tiff` stores for an image.

    Parameters
    ----------
    name
        The image's name (the file name).
    axes, shape
        The array as stored: ``T``, ``C``, ``Z`` in any order, then ``YX`` (and ``S``).
    pixel_type
        The OME pixel type (``"uint16"``, ``"float"``, ...).
    pixel_sizes, channel_names, provenance, description, acquisition
        As for :func:`write_ome_tiff` (already validated).

    Returns
    -------
    str
        The XML document, one TiffData block covering all planes from IFD 0.
    """
    layout = _layout(shape, axes)
    if layout.axes != axes.upper():
        raise ValueError(f"axes {axes!r} are not in stored order ({layout.axes!r})")
    sizes = layout.sizes
    root = ET.Element(
        "OME",
        {
            # Written as plain attributes so that the module-wide namespace registry
            # of ElementTree is left alone.
            "xmlns": OME_NAMESPACE,
            "xmlns:xsi": XSI_NAMESPACE,
            "xsi:schemaLocation": OME_SCHEMA_LOCATION,
            "UUID": f"urn:uuid:{uuid.uuid4()}",
            "Creator": _CREATOR,
        },
    )
    image = ET.SubElement(root, "Image", {"ID": "Image:0", "Name": xml_safe(name)})
    if description:
        ET.SubElement(image, "Description").text = xml_safe(description)
    time_increment = add_acquisition(root, image, acquisition or {})
    pixels_attrs = {
        "ID": "Pixels:0",
        "DimensionOrder": layout.dimension_order,
        "Type": pixel_type,
        "SizeX": str(sizes["X"]),
        "SizeY": str(sizes["Y"]),
        "SizeZ": str(sizes.get("Z", 1)),
        # OME counts RGB samples as channels.
        "SizeC": str(layout.channels * layout.samples),
        "SizeT": str(sizes.get("T", 1)),
    }
    for axis, (size, unit) in sorted((pixel_sizes or {}).items()):
        pixels_attrs[f"PhysicalSize{axis}"] = _number(size)
        pixels_attrs[f"PhysicalSize{axis}Unit"] = unit
    if time_increment is not None and "T" in sizes:
        pixels_attrs["TimeIncrement"] = _number(time_increment)
        pixels_attrs["TimeIncrementUnit"] = "s"
    pixels = ET.SubElement(image, "Pixels", pixels_attrs)
    for index in range(layout.channels):
        channel_attrs = {"ID": f"Channel:0:{index}", "SamplesPerPixel": str(layout.samples)}
        if channel_names is not None:
            channel_attrs["Name"] = xml_safe(channel_names[index])
        ET.SubElement(pixels, "Channel", channel_attrs)
    ET.SubElement(pixels, "TiffData", {"IFD": "0", "PlaneCount": str(layout.planes)})
    if provenance:
        annotation_id = "Annotation:Provenance:0"
        ET.SubElement(image, "AnnotationRef", {"ID": annotation_id})
        annotations = ET.SubElement(root, "StructuredAnnotations")
        map_annotation = ET.SubElement(
            annotations,
            "MapAnnotation",
            {"ID": annotation_id, "Namespace": PROVENANCE_NAMESPACE},
        )
        pairs = ET.SubElement(map_annotation, "Value")
        for key, text in provenance.items():
            ET.SubElement(pairs, "M", {"K": key}).text = text
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode")


def write_ome_tiff(
    path: Path,
    array: npt.ArrayLike,
    axes: str,
    *,
    pixel_sizes: Mapping[str, tuple[float, str]] | None = None,
    channel_names: Sequence[str] | None = None,
    provenance: Mapping[str, str] | None = None,
    description: str | None = None,
    compression: str | None = "zlib",
    tile: tuple[int, int] | None = None,
    acquisition: Mapping[str, Any] | None = None,
) -> None:
    """Write an array to an OME-TIFF file, atomically.

    Parameters
    ----------
    path
        Destination, conventionally ending in ``.ome.tif``; its folder is created.
        An existing file is replaced only once the new one is complete.
    array
        The pixels (labels, probabilities, images; a memmap is read plane by plane).
    axes
        One letter of ``TCZYXS`` per dimension of ``array``; must include ``Y``, ``X``.
    pixel_sizes
        ``{"X": (0.65, "µm"), "Y": ..., "Z": ...}``; units may be given as ``"um"``,
        ``"micron"``, ... and are stored in the OME spelling.
    channel_names
        One name per index along ``C`` (one name when there is no ``C`` axis).
    provenance
        Key/value pairs stored as an OME MapAnnotation in the namespace
        :data:`PROVENANCE_NAMESPACE`, attached to the image.
    description
        Free text stored as the OME image description.
    compression
        One of :data:`LOSSLESS_COMPRESSIONS`, or None for uncompressed (which
        readers can memory-map).
    tile
        Tile height and width (multiples of 16) for a tiled TIFF, which is written
        tile by tile; None writes strips, plane by plane.
    acquisition
        What the source image records of its acquisition, as the readers give it
        (``objective``, ``microscope``, ``time_increment``): written as the OME
        Instrument, the image's objective settings and the time increment.

    Raises
    ------
    ValueError
        For arguments that do not describe a writable image.
    OSError
        When the file cannot be written; nothing is then left under ``path``.
    """
    data = np.asanyarray(array)  # an ndarray or memmap is used as it is, not copied
    _write(
        Path(path),
        data,
        axes,
        pixel_sizes=pixel_sizes,
        channel_names=channel_names,
        provenance=provenance,
        description=description,
        compression=compression,
        tile=tile,
        acquisition=acquisition,
    )


def _write(
    path: Path,
    data: np.ndarray,
    axes: str,
    *,
    pixel_sizes: Mapping[str, tuple[float, str]] | None,
    channel_names: Sequence[str] | None,
    provenance: Mapping[str, str] | None,
    description: str | None,
    compression: str | None,
    tile: tuple[int, int] | None,
    acquisition: Mapping[str, Any] | None = None,
) -> None:
    layout = _layout(data.shape, axes)
    codec = _compression(compression)
    tile_shape = _tile(tile)
    sizes = _pixel_sizes(pixel_sizes)
    names = _channel_names(channel_names, layout)
    stored_dtype = _stored_dtype(data)
    view = data.transpose(layout.order)  # a view: nothing is copied here
    chunks = (
        _tiles(view, layout, stored_dtype, tile_shape)
        if tile_shape
        else _planes(view, layout, stored_dtype)
    )
    _write_chunks(
        path,
        layout,
        stored_dtype,
        chunks,
        pixel_sizes=sizes,
        channel_names=names,
        provenance=provenance,
        description=description,
        codec=codec,
        tile=tile_shape,
        acquisition=acquisition,
    )


def _write_chunks(
    path: Path,
    layout: _Layout,
    stored_dtype: np.dtype,
    chunks: Iterator[np.ndarray],
    *,
    pixel_sizes: Mapping[str, tuple[float, str]],
    channel_names: Sequence[str] | None,
    provenance: Mapping[str, str] | None,
    description: str | None,
    codec: str | None,
    tile: tuple[int, int] | None,
    acquisition: Mapping[str, Any] | None = None,
) -> None:
    """Write validated planes (or tiles, in row-major order per plane) as OME-TIFF."""
    xml = build_ome_xml(
        name=path.name,
        axes=layout.axes,
        shape=tuple(layout.sizes[a] for a in layout.axes),
        pixel_type=_OME_PIXEL_TYPES[stored_dtype],
        pixel_sizes=pixel_sizes,
        channel_names=channel_names,
        provenance=_provenance(provenance),
        description=description,
        acquisition=acquisition,
    )
    nbytes = layout.planes * math.prod(layout.plane_shape) * stored_dtype.itemsize
    with (
        atomic_path(path, suffix=".ome.tif") as tmp,
        tifffile.TiffWriter(tmp, bigtiff=nbytes > BIGTIFF_THRESHOLD, ome=False) as writer,
    ):
        writer.write(
            chunks,
            shape=(layout.planes, *layout.plane_shape),
            dtype=stored_dtype,
            photometric="rgb" if layout.samples > 1 else "minisblack",
            planarconfig="contig" if layout.samples > 1 else None,
            compression=codec,
            # Deflate at level 1: about 2x faster than the default level for nearly
            # the same size (512x512 float32 probabilities: 10 ms against 24 ms).
            # Horizontal differencing for integers only: readers such as
            # Bio-Formats do not all support the floating-point predictor.
            compressionargs={"level": 1} if codec == "zlib" else None,
            predictor=(
                "horizontal"
                if codec in ("zlib", "lzw", "zstd") and stored_dtype.kind in "iu"
                else None
            ),
            tile=tile,
            description=xml.encode("utf-8"),
            # No metadata of tifffile's own: the description above is the only one.
            metadata=None,
            software=_CREATOR,
            buffersize=_ENCODE_BUFFER_BYTES,
        )


def _planes(view: np.ndarray, layout: _Layout, dtype: np.dtype) -> Iterator[np.ndarray]:
    for index in np.ndindex(*layout.lead_shape):
        yield np.ascontiguousarray(view[index], dtype=dtype)


def _tiles(
    view: np.ndarray, layout: _Layout, dtype: np.dtype, tile: tuple[int, int]
) -> Iterator[np.ndarray]:
    height, width = layout.sizes["Y"], layout.sizes["X"]
    for index in np.ndindex(*layout.lead_shape):
        plane = view[index]
        for y in range(0, height, tile[0]):
            for x in range(0, width, tile[1]):
                # Edge tiles are smaller; tifffile pads them.
                yield np.ascontiguousarray(plane[y : y + tile[0], x : x + tile[1]], dtype=dtype)


def _narrowest_int(low: int, high: int, dtype: np.dtype) -> np.dtype:
    for candidate in (np.uint32, np.int32):
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    raise ValueError(
        f"{dtype} values from {low} to {high} do not fit the 32-bit integers of OME-TIFF"
    )


class TiledOmeTiffWriter:
    """Assemble a large OME-TIFF from blocks written in any order, in bounded memory.

    Blocks go into a scratch file beside the destination (a hidden ``.part`` file,
    initially zero, laid out plane by plane in the stored axis order), written with
    ordinary file writes: neither the whole image nor any ordering of blocks is
    required, blocks may overlap (the last write wins), and the process's memory
    does not grow with the image (the pages written belong to the operating
    system's file cache, not to the process).  :meth:`close` then reads the scratch
    data back one band of tile rows at a time, streams it tile by tile into the
    OME-TIFF (same format and guarantees as :func:`write_ome_tiff`), renames it into
    place and deletes the scratch file.  The scratch file takes the uncompressed
    size of the image on disk while the writer is open (sparse where the file
    system allows it).

    Peak memory while writing is one block; while closing, one band of
    ``tile[0]`` rows of the full image width, plus what the compressor holds
    (at most 32 MiB of tiles).

    Used as a context manager, the output is written when the block ends normally
    and discarded (no file under the final name, no scratch left) when it raises.

    Parameters
    ----------
    path
        Destination of the OME-TIFF.
    shape, dtype, axes
        The full image, as for :func:`write_ome_tiff`.
    pixel_sizes, channel_names, provenance, description, compression
        As for :func:`write_ome_tiff`.
    tile
        TIFF tile height and width (multiples of 16).

    Examples
    --------
    >>> with TiledOmeTiffWriter(out, (2, 4096, 4096), np.float32, "CYX") as writer:
    ...     for region, block in blocks:
    ...         writer.write_block(region, block)
    """

    def __init__(
        self,
        path: Path,
        shape: Sequence[int],
        dtype: npt.DTypeLike,
        axes: str,
        *,
        pixel_sizes: Mapping[str, tuple[float, str]] | None = None,
        channel_names: Sequence[str] | None = None,
        provenance: Mapping[str, str] | None = None,
        description: str | None = None,
        compression: str | None = "zlib",
        tile: tuple[int, int] = (512, 512),
        acquisition: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        # Validate everything now rather than after the caller computed the blocks.
        layout = _layout(self.shape, axes)
        self.axes = axes.upper()
        _check_dtype(self.dtype)
        self._codec = _compression(compression)
        tile_shape = _tile(tile)
        if tile_shape is None:
            raise ValueError("a tiled writer needs a tile shape")
        self._layout = layout
        self._tile = tile_shape
        self._pixel_sizes = _pixel_sizes(pixel_sizes)
        self._channel_names = _channel_names(channel_names, layout)
        self._provenance = _provenance(provenance)
        self._description = description
        self._acquisition = dict(acquisition or {})
        self._stored_shape = tuple(layout.sizes[a] for a in layout.axes)
        self._inverse_order = tuple(int(i) for i in np.argsort(layout.order))
        # 64-bit integers are stored as 32-bit ones when their values fit: track them.
        self._track_range = self.dtype.newbyteorder("=") not in _OME_PIXEL_TYPES and (
            self.dtype.kind in "iu"
        )
        self._low, self._high = 0, 0
        self._lock = threading.Lock()
        self._map: np.memmap | None = None
        self._file: io.BufferedRandom | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._scratch_path: Path | None = temporary_sibling(self.path, suffix=".raw")
        try:
            self._file = self._scratch_path.open("r+b")
            # Extending by truncation leaves a sparse, zero-filled file.
            self._file.truncate(math.prod(self._stored_shape) * self.dtype.itemsize)
        except BaseException:
            self._discard()
            raise

    @property
    def array(self) -> np.ndarray:
        """The writable image in the caller's axes (memory-mapped scratch data).

        Writing through this map is equivalent to :meth:`write_block`, but the pages
        it touches count as the process's memory until the writer is closed: prefer
        :meth:`write_block` for images larger than memory.
        """
        if self._file is None or self._scratch_path is None:
            raise ValueError(f"{self.path}: the writer is closed")
        if self._map is None:
            self._file.flush()
            self._map = np.memmap(
                self._scratch_path, dtype=self.dtype, mode="r+", shape=self._stored_shape
            )
        return self._map.transpose(self._inverse_order)

    def write_block(self, region: Sequence[slice | int] | slice | int, data: npt.ArrayLike) -> None:
        """Store ``data`` at ``region`` (numpy indexing, e.g. ``(slice(0, 2), ...)``).

        Parameters
        ----------
        region
            Where the block goes: one slice (step 1) or index per leading axis, in
            the writer's axes; missing trailing axes are taken whole.
        data
            Pixels broadcastable to the region's shape, converted to the writer's
            pixel type as numpy assignment does.

        Raises
        ------
        ValueError
            For a region outside the image or with a step, or data of another shape.
        OSError
            When the scratch file cannot be written (e.g. the disk is full).
        """
        if self._file is None:
            raise ValueError(f"{self.path}: the writer is closed")
        starts, stops, dropped = self._region(region)
        kept = tuple(b - a for a, b, d in zip(starts, stops, dropped, strict=True) if not d)
        full = tuple(b - a for a, b in zip(starts, stops, strict=True))
        values = np.asarray(data)
        try:
            block = np.broadcast_to(values, kept).reshape(full)
        except ValueError:
            raise ValueError(
                f"{self.path}: data of shape {values.shape} does not fit region shape {kept}"
            ) from None
        block = block.astype(self.dtype, copy=False)
        if self._track_range and block.size:
            self._low = min(self._low, int(block.min()))
            self._high = max(self._high, int(block.max()))
        order = self._layout.order
        self._put(
            [starts[i] for i in order],
            [stops[i] for i in order],
            block.transpose(order),
        )

    def _region(
        self, region: Sequence[slice | int] | slice | int
    ) -> tuple[list[int], list[int], list[bool]]:
        key = tuple(region) if isinstance(region, Sequence) else (region,)
        if len(key) > len(self.shape):
            raise ValueError(f"{self.path}: region {key!r} has more axes than {self.axes!r}")
        key = key + (slice(None),) * (len(self.shape) - len(key))
        starts: list[int] = []
        stops: list[int] = []
        dropped: list[bool] = []
        for item, n in zip(key, self.shape, strict=True):
            if isinstance(item, slice):
                start, stop, step = item.indices(n)
                if step != 1:
                    raise ValueError(f"{self.path}: region {key!r}: steps are not supported")
                starts.append(start)
                stops.append(max(start, stop))
                dropped.append(False)
            else:
                index = int(item)
                if not -n <= index < n:
                    raise ValueError(f"{self.path}: index {index} is outside an axis of {n}")
                index %= n
                starts.append(index)
                stops.append(index + 1)
                dropped.append(True)
        return starts, stops, dropped

    def _put(self, starts: Sequence[int], stops: Sequence[int], block: np.ndarray) -> None:
        """Write a block given in stored order as runs of contiguous bytes."""
        dims = self._stored_shape
        if any(b <= a for a, b in zip(starts, stops, strict=True)):
            return
        # Axes after `k` are covered whole, so each run spans axis k's range of them.
        k = len(dims) - 1
        while k > 0 and starts[k] == 0 and stops[k] == dims[k]:
            k -= 1
        strides = [math.prod(dims[j + 1 :]) for j in range(len(dims))]
        itemsize = self.dtype.itemsize
        for index in itertools.product(*(range(starts[j], stops[j]) for j in range(k))):
            offset = sum(i * strides[j] for j, i in enumerate(index)) + starts[k] * strides[k]
            local = tuple(i - starts[j] for j, i in enumerate(index))
            self._pwrite(np.ascontiguousarray(block[local]), offset * itemsize)

    def _pwrite(self, data: np.ndarray, offset: int) -> None:
        assert self._file is not None
        view = data.data.cast("B")
        with self._lock:
            self._file.seek(offset)
            self._file.write(view)

    def _read_into(self, buffer: np.ndarray, offset: int) -> None:
        assert self._file is not None
        view = buffer.data.cast("B")
        with self._lock:
            self._file.seek(offset)
            got = self._file.readinto(view)
        if got != len(view):
            raise OSError(f"{self._scratch_path}: scratch data ends early ({got} of {len(view)})")

    def _scratch_tiles(self, stored_dtype: np.dtype) -> Iterator[np.ndarray]:
        """The scratch data as TIFF tiles, read one band of tile rows at a time."""
        layout = self._layout
        height, width = layout.sizes["Y"], layout.sizes["X"]
        tile_h, tile_w = self._tile
        row = math.prod(layout.plane_shape[1:])
        plane = height * row
        for p in range(layout.planes):
            for y in range(0, height, tile_h):
                rows = min(tile_h, height - y)
                band = np.empty((rows, *layout.plane_shape[1:]), dtype=self.dtype)
                self._read_into(band, (p * plane + y * row) * self.dtype.itemsize)
                for x in range(0, width, tile_w):
                    yield np.ascontiguousarray(band[:, x : x + tile_w], dtype=stored_dtype)

    def _stored_dtype(self) -> np.dtype:
        if self.dtype.kind == "b":
            return np.dtype(np.uint8)
        if self.dtype.kind == "f" and self.dtype.itemsize < 4:
            return np.dtype(np.float32)
        native = self.dtype.newbyteorder("=")
        if native in _OME_PIXEL_TYPES:
            return native
        return _narrowest_int(self._low, self._high, self.dtype)

    def close(self) -> None:
        """Write the OME-TIFF, rename it into place and delete the scratch data."""
        if self._file is None:
            return
        try:
            if self._map is not None:
                self._map.flush()
                self._map = None
            self._file.flush()
            stored_dtype = self._stored_dtype()
            _write_chunks(
                self.path,
                self._layout,
                stored_dtype,
                self._scratch_tiles(stored_dtype),
                pixel_sizes=self._pixel_sizes,
                channel_names=self._channel_names,
                provenance=self._provenance,
                description=self._description,
                codec=self._codec,
                tile=self._tile,
                acquisition=self._acquisition,
            )
        finally:
            self._discard()

    def abort(self) -> None:
        """Discard everything written; no output file is produced."""
        self._discard()

    def _discard(self) -> None:
        # getattr: __del__ also runs for a writer whose __init__ failed early.
        scratch_path = getattr(self, "_scratch_path", None)
        handle = getattr(self, "_file", None)
        # Drop the map and the handle before deleting the file (Windows refuses otherwise).
        self._map = None
        self._file = None
        self._scratch_path = None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()
        if scratch_path is not None:
            with contextlib.suppress(OSError):
                scratch_path.unlink()

    def __enter__(self) -> TiledOmeTiffWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # A writer dropped without close() must not leave its scratch file behind.
        self._discard()
