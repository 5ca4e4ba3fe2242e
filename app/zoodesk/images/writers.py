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
import math
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

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
    normalize_length_unit,
    valid_size,
    xml_safe,
)

#: Outputs whose pixel data exceed this many bytes are written as BigTIFF (classic
#: TIFF offsets are 32-bit; some readers already fail past 2 GiB).
BIGTIFF_THRESHOLD = 2**31 - 2**25

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
    for candidate in (np.uint32, np.int32):
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    raise ValueError(
        f"{dtype} values from {low} to {high} do not fit the 32-bit integers of OME-TIFF"
    )


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
    pixel_sizes, channel_names, provenance, description
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
    )


