"""Read the files microscopes write: Zeiss CZI, Nikon ND2, Leica LIF, Olympus OIB/OIF.

Each format is read with a well-kept reader whose licence allows bundling in an
MIT-licensed installer (all BSD-3-Clause): ``czifile`` and ``liffile`` and
``oiffile`` (Christoph Gohlke) and ``nd2`` (Talley Lambert).

A file holds one or more *series*: the scenes of a CZI, the XY positions of an ND2,
the images of a LIF project (and, for a LIF tile scan, each tile), the one image of
an OIB.  :func:`vendor_series` lists them by name without reading pixels, and
:func:`read_vendor` reads one as a :class:`VendorImage`: the pixels with the reader's
own axis letters, physical pixel sizes in micrometres, the time interval, channel
names and wavelengths, and the instrument and objective where the file names them.
:mod:`zoodesk.images.readers` turns that into an :class:`~zoodesk.images.ImageData`
with ZooDesk's axis letters.

CZI mosaics are assembled from their tiles by the tiles' stored positions (as Zeiss
ZEN shows them); LIF tile scans are not stitched, since their stage positions
overlap: each tile is a series of its own.
"""

from __future__ import annotations

import contextlib
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from zoodesk.errors import ImageReadError
from zoodesk.images import _scratch
from zoodesk.images._ome import MICROMETER, local_name
from zoodesk.images._scratch import decoded_bytes, mapped_from_planes

#: Largest image read whole into memory when it cannot be decoded plane by plane.
MAX_IN_MEMORY_BYTES = 16 * 2**30
#: Most that an image may grow once decoded, against the size of its file: the
#: readers' compressions shrink far less, so more means a damaged header.
MAX_EXPANSION = 256


def _check_plausible(path: Path, shape: Sequence[int], dtype: Any) -> None:
    """Refuse a declared image far larger than its file could hold (a damaged header
    would otherwise make ZooDesk decode terabytes of nothing)."""
    size = decoded_bytes(shape, dtype)
    if size > max(MAX_EXPANSION * path.stat().st_size, _scratch.MAP_ABOVE_BYTES):
        raise ImageReadError(
            f"{path}: the file declares an image of {size / 2**30:.1f} GiB "
            f"({' x '.join(str(int(n)) for n in shape)}), more than a file of "
            f"{path.stat().st_size / 2**20:.1f} MiB can hold (damaged?)"
        )


#: Each format read here: its name and the library that reads it.
VENDOR_FORMATS: dict[str, tuple[str, str]] = {
    "czi": ("CZI", "czifile"),
    "nd2": ("ND2", "nd2"),
    "lif": ("LIF", "liffile"),
    "oib": ("OIB", "oiffile"),
    "oif": ("OIF", "oiffile"),
}

#: File suffixes of the formats above (for folder discovery).
VENDOR_SUFFIXES = frozenset(f".{name}" for name in VENDOR_FORMATS)


@dataclass
class VendorImage:
    """One series of a vendor file, as its reader gives it.

    ``axes`` are the reader's letters, one per dimension of ``array`` (``TCZYX``, plus
    ``S`` for RGB samples, ``M`` for tiles, ``E`` for a spectral axis); the reader
    module maps them to ZooDesk's.  ``pixel_sizes`` maps ``X``/``Y``/``Z`` to sizes in
    micrometres; ``metadata`` holds ``format``, ``reader``, ``scene``,
    ``series_count`` and, where known, ``time_increment`` (``(seconds, "s")``), ``channels`` (a
    dict per channel), ``objective`` and ``microscope``.
    """

    array: np.ndarray
    axes: str
    pixel_sizes: dict[str, tuple[float, str]] = field(default_factory=dict)
    channel_names: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def vendor_format(path: Path, head: bytes) -> str | None:
    """The key in :data:`VENDOR_FORMATS` of a file, from its first bytes (or suffix)."""
    if head.startswith(b"ZISRAWFILE"):
        return "czi"
    # ND2: version 3 files start with the chunk magic 0x0ABECEDA (little-endian),
    # older ones are JPEG 2000 containers.
    if head.startswith((b"\xda\xce\xbe\x0a", b"\x00\x00\x00\x0cjP  ")):
        return "nd2"
    # LIF: a 0x70 test value, the XML block's size, then the 0x2A marker.
    if head.startswith(b"\x70\x00\x00\x00") and len(head) > 8 and head[8] == 0x2A:
        return "lif"
    suffix = path.suffix.lower()
    # OIB is an OLE2 compound file, as are old Office documents: trust the suffix.
    if head.startswith(b"\xd0\xcf\x11\xe0") and suffix == ".oib":
        return "oib"
    if suffix == ".oif":
        return "oif"
    return None


def vendor_series(path: Path, fmt: str) -> list[str]:
    """The names of the series in a vendor file (one per scene, position or image)."""
    with _reading(path, fmt):
        return [name for name, _ in _SERIES[fmt](path)]


def read_vendor(path: Path, series: int, fmt: str) -> VendorImage:
    """Read series ``series`` of a vendor file.

    Raises
    ------
    ImageReadError
        One line naming the file: unknown series, damaged file, reader failure.
    """
    with _reading(path, fmt):
        listed = _SERIES[fmt](path)
        if not 0 <= series < len(listed):
            raise ImageReadError(
                f"{path}: series {series} does not exist (the file has {len(listed)} series)"
            )
        name, read = listed[series]
        image = read()
        image.metadata.update(
            format=fmt,
            reader=VENDOR_FORMATS[fmt][1],
            scene=name,
            series_count=len(listed),
        )
        return image


@contextlib.contextmanager
def _reading(path: Path, fmt: str) -> Iterator[None]:
    label, library = VENDOR_FORMATS[fmt]
    try:
        yield
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to read the image") from None
    except ImportError as exc:
        raise ImageReadError(
            f"{path}: {label} files need the {library} package, which is missing ({exc})"
        ) from None
    except Exception as exc:
        text = str(exc).strip().splitlines()
        reason = text[0] if text else type(exc).__name__
        raise ImageReadError(f"{path}: cannot read the {label} file: {reason}") from exc


_Series = list[tuple[str, Callable[[], VendorImage]]]


def _micrometres(value: float | None, unit: str = "m") -> tuple[float, str] | None:
    """A positive length converted to micrometres; None for anything else."""
    if value is None or not math.isfinite(value) or value == 0:
        return None
    factor = {"m": 1e6, "mm": 1e3, "um": 1.0, "µm": 1.0, "nm": 1e-3}.get(unit)
    if factor is None:
        return None
    return float(f"{abs(value) * factor:.12g}"), MICROMETER


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


# --- CZI ----------------------------------------------------------------------------


def _czi_series(path: Path) -> _Series:
    import czifile

    with czifile.CziFile(str(path)) as czi:
        text = czi.metadata()
        # A file whose metadata segment is lost still has its pixels (and no names).
        root = ET.fromstring(text) if text else ET.Element("ImageDocument")
        scenes = sorted({_dimension_start(entry, "S") for entry in czi.filtered_subblock_directory})
    names = {
        int(scene.get("Index", -1)): scene.get("Name") or ""
        for scene in _iter_named(root, "Scene")
        if scene.get("Index") is not None
    }
    return [(names.get(s) or f"scene {s}", partial(_czi_read, path, s, root)) for s in scenes]


def _dimension_start(entry: Any, dimension: str) -> int:
    for dim in entry.dimension_entries:
        if dim.dimension == dimension:
            return int(dim.start)
    return 0


def _czi_read(path: Path, scene: int, root: ET.Element) -> VendorImage:
    import czifile

    with czifile.CziFile(str(path)) as czi:
        entries = [e for e in czi.filtered_subblock_directory if _dimension_start(e, "S") == scene]
        axes = czi.axes
        start = np.min([e.start for e in entries], axis=0)
        stop = np.max([np.add(e.start, e.shape) for e in entries], axis=0)
        shape = tuple(int(n) for n in stop - start)
        _check_plausible(path, shape, czi.dtype)
        if decoded_bytes(shape, czi.dtype) > MAX_IN_MEMORY_BYTES and not axes.endswith("YX0"):
            raise ImageReadError(f"{path}: scene {scene} is too large to read ({shape})")
        bgr = any("bgr" in str(e.pixel_type).lower() for e in entries) and shape[-1] in (3, 4)
        out: np.ndarray
        mapped = decoded_bytes(shape, czi.dtype) > _scratch.MAP_ABOVE_BYTES
        if mapped and axes.endswith("YX0"):
            planes = _czi_planes(entries, start, shape, czi.dtype, bgr)
            out = mapped_from_planes(shape, czi.dtype, planes)
        else:
            out = np.zeros(shape, czi.dtype)
            for entry in entries:
                tile = entry.data_segment().data()
                index = tuple(
                    slice(int(a - b), int(a - b) + int(n))
                    for a, b, n in zip(entry.start, start, tile.shape, strict=True)
                )
                out[index] = tile
            if bgr:
                out = out[..., _RGB_ORDER[: shape[-1]]]
    keep = [i for i, a in enumerate(axes) if a not in "S" and (shape[i] > 1 or a in "YX")]
    array = out.reshape([shape[i] for i in keep])
    letters = "".join("S" if axes[i] == "0" else axes[i] for i in keep)
    pixel_sizes: dict[str, tuple[float, str]] = {}
    for distance in _iter_named(root, "Distance"):
        axis = distance.get("Id", "")
        value = _float(_text(distance, "Value"))
        size = _micrometres(value) if axis in ("X", "Y", "Z") else None
        if size is not None:
            pixel_sizes[axis] = size
    # The image's own channel list, not the acquisition set-up's.
    channels = [
        _czi_channel(c) for c in root.iterfind(".//Information/Image/Dimensions/Channels/Channel")
    ]
    n_channels = dict(zip(letters, array.shape, strict=True)).get("C", 1)
    names = [c.get("name", "") for c in channels]
    metadata: dict[str, Any] = {}
    if len(channels) == n_channels:
        metadata["channels"] = channels
    interval = _czi_time_interval(root)
    if interval is not None:
        metadata["time_increment"] = (interval, "s")
    metadata.update(_czi_instrument(root))
    return VendorImage(
        array=array,
        axes=letters,
        pixel_sizes=pixel_sizes,
        channel_names=names if len(names) == n_channels and all(names) else None,
        metadata=metadata,
    )


#: Zeiss stores colour as BGR(A): the order of the samples as RGB(A).
_RGB_ORDER = [2, 1, 0, 3]


def _czi_planes(
    entries: list[Any], start: np.ndarray, shape: tuple[int, ...], dtype: np.dtype, bgr: bool
) -> Iterator[np.ndarray]:
    """The planes (Y, X, samples) of a scene in C order, each assembled from its tiles:
    memory holds one plane and one tile at a time."""
    lead = len(shape) - 3
    by_plane: dict[tuple[int, ...], list[Any]] = {}
    for entry in entries:
        offset = tuple(int(a - b) for a, b in zip(entry.start[:lead], start[:lead], strict=True))
        by_plane.setdefault(offset, []).append(entry)
    for index in np.ndindex(*shape[:lead]):
        plane = np.zeros(shape[lead:], dtype)
        for entry in by_plane.get(tuple(index), []):
            tile = entry.data_segment().data()
            # A subblock holds one plane: its leading dimensions are all of length 1.
            tile = tile.reshape(tile.shape[lead:])
            y, x = (int(entry.start[i] - start[i]) for i in (lead, lead + 1))
            plane[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
        yield plane[..., _RGB_ORDER[: shape[-1]]] if bgr else plane


def _iter_named(root: ET.Element, name: str) -> Iterator[ET.Element]:
    # CZI and LIF metadata have no XML namespace: the tag filter runs in C.
    return root.iter(name)


def _text(element: ET.Element, child: str) -> str | None:
    for sub in element:
        if local_name(sub.tag) == child:
            return (sub.text or "").strip() or None
    return None


def _czi_channel(channel: ET.Element) -> dict[str, Any]:
    found: dict[str, Any] = {"name": channel.get("Name") or ""}
    for key, tag in (
        ("emission_wavelength", "EmissionWavelength"),
        ("excitation_wavelength", "ExcitationWavelength"),
    ):
        value = _float(_text(channel, tag))
        if value:
            found[key] = (value, "nm")
    fluor = _text(channel, "Fluor")
    if fluor:
        found["fluor"] = fluor
    return found


def _czi_time_interval(root: ET.Element) -> float | None:
    """Seconds between time points: the image's recorded positions along T."""
    positions = root.find(".//Information/Image/Dimensions/T/Positions")
    if positions is None:
        return None
    increment = _float(positions.findtext("Interval/Increment"))
    if increment:
        return increment
    offsets = [_float(v) for v in (positions.findtext("List/Offsets") or "").split()]
    times = [v for v in offsets if v is not None]
    if len(times) > 1 and times[-1] > times[0]:
        return float(f"{(times[-1] - times[0]) / (len(times) - 1):.6g}")
    return None


def _czi_instrument(root: ET.Element) -> dict[str, Any]:
    found: dict[str, Any] = {}
    objectives = {o.get("Id", ""): o for o in _iter_named(root, "Objective") if o.get("Name")}
    chosen = None
    for ref in _iter_named(root, "ObjectiveRef"):
        chosen = objectives.get(ref.get("Id", ""))
        if chosen is not None:
            break
    if chosen is None and len(objectives) == 1:
        chosen = next(iter(objectives.values()))
    if chosen is not None:
        objective: dict[str, Any] = {"model": chosen.get("Name")}
        magnification = _float(_text(chosen, "NominalMagnification"))
        aperture = _float(_text(chosen, "LensNA"))
        if magnification:
            objective["nominal_magnification"] = magnification
        if aperture:
            objective["lens_na"] = aperture
        immersion = _text(chosen, "Immersion")
        if immersion:
            objective["immersion"] = immersion
        found["objective"] = objective
    for microscope in _iter_named(root, "Microscope"):
        name = microscope.get("Name") or _text(microscope, "System")
        if name:
            found["microscope"] = {"model": name, "manufacturer": "Carl Zeiss"}
            break
    return found


# --- ND2 ----------------------------------------------------------------------------


def _nd2_series(path: Path) -> _Series:
    import nd2

    with nd2.ND2File(str(path)) as f:
        positions = int(f.sizes.get("P", 1))
        names: list[str] = []
        with contextlib.suppress(Exception):
            for loop in f.experiment:
                if getattr(loop, "type", "") == "XYPosLoop":
                    points = getattr(loop.parameters, "points", None) or []
                    names = [str(getattr(p, "name", "") or "") for p in points]
    return [
        (
            (names[p] if p < len(names) and names[p] else f"position {p}"),
            partial(_nd2_read, path, p),
        )
        for p in range(positions)
    ]


def _nd2_read(path: Path, position: int) -> VendorImage:
    import nd2

    with nd2.ND2File(str(path)) as f:
        sizes = dict(f.sizes)
        axes = "".join(sizes).replace("P", "")
        shape = tuple(n for a, n in sizes.items() if a != "P")
        _check_plausible(path, shape, f.dtype)
        array: np.ndarray
        if decoded_bytes(shape, f.dtype) > _scratch.MAP_ABOVE_BYTES:
            # Frame by frame, in acquisition order: the loops (T, Z) come first in
            # ``sizes``, each frame holds the channels and the plane.
            frames = (
                f.read_frame(i)
                for i, where in enumerate(f.loop_indices)
                if where.get("P", 0) == position
            )
            array = mapped_from_planes(shape, f.dtype, frames)
        elif "P" in sizes:
            # Only this position's frames are read.
            array = np.asarray(f.asarray(position=position))
        else:
            array = np.asarray(f.asarray())
        voxel = f.voxel_size()
        pixel_sizes: dict[str, tuple[float, str]] = {}
        for axis, value in (("X", voxel.x), ("Y", voxel.y), ("Z", voxel.z)):
            size = _micrometres(value, "um")
            if size is not None and (axis != "Z" or "Z" in axes):
                pixel_sizes[axis] = size
        channels: list[dict[str, Any]] = []
        metadata: dict[str, Any] = {}
        for channel in (f.metadata.channels or []) if f.metadata else []:
            entry: dict[str, Any] = {"name": str(channel.channel.name or "")}
            if channel.channel.emissionLambdaNm:
                entry["emission_wavelength"] = (float(channel.channel.emissionLambdaNm), "nm")
            if channel.channel.excitationLambdaNm:
                entry["excitation_wavelength"] = (float(channel.channel.excitationLambdaNm), "nm")
            channels.append(entry)
            microscope = channel.microscope
            if microscope.objectiveName and "objective" not in metadata:
                objective: dict[str, Any] = {"model": microscope.objectiveName}
                if microscope.objectiveMagnification and microscope.objectiveMagnification > 0:
                    objective["nominal_magnification"] = float(microscope.objectiveMagnification)
                if microscope.objectiveNumericalAperture:
                    objective["lens_na"] = float(microscope.objectiveNumericalAperture)
                if microscope.immersionRefractiveIndex:
                    objective["immersion_refractive_index"] = float(
                        microscope.immersionRefractiveIndex
                    )
                metadata["objective"] = objective
        with contextlib.suppress(Exception):
            for loop in f.experiment:
                period = getattr(loop.parameters, "periodMs", None)
                if getattr(loop, "type", "") == "TimeLoop" and period:
                    seconds = float(period) / 1000.0
                    metadata["time_increment"] = (seconds, "s")
        metadata["microscope"] = {"manufacturer": "Nikon"}
    n_channels = sizes.get("C", 1)
    names = [c["name"] for c in channels]
    if len(channels) == n_channels:
        metadata["channels"] = channels
    return VendorImage(
        array=array,
        axes=axes,
        pixel_sizes=pixel_sizes,
        channel_names=names if len(names) == n_channels and all(names) else None,
        metadata=metadata,
    )


# --- LIF ----------------------------------------------------------------------------


def _lif_series(path: Path) -> _Series:
    import liffile

    found: _Series = []
    with liffile.LifFile(str(path)) as lif:
        for index, image in enumerate(lif.images):
            tiles = int(image.sizes.get("M", 1))
            name = str(image.name or f"image {index}")
            if tiles == 1:
                found.append((name, partial(_lif_read, path, index, None)))
            else:
                for tile in range(tiles):
                    found.append((f"{name} tile {tile + 1}", partial(_lif_read, path, index, tile)))
    return found


def _lif_frames(image: Any, dims: list[str], tile: int | None) -> Iterator[np.ndarray]:
    """The frames (the two innermost dimensions, and samples) of a LIF image in C order,
    one at a time; ``tile`` fixes the tile of a tile scan."""
    frame_dims = 3 if dims[-1] == "S" else 2
    lead = [(d, n) for d, n in zip(dims[:-frame_dims], image.shape, strict=False) if d != "M"]
    fixed = {"M": tile} if tile is not None else {}
    for index in np.ndindex(*[n for _d, n in lead]):
        yield image.frame(**fixed, **{d: int(i) for (d, _n), i in zip(lead, index, strict=True)})


_LIF_LETTERS = {"λ": "E", "Λ": "E", "M": "M"}


def _lif_read(path: Path, index: int, tile: int | None) -> VendorImage:
    import liffile

    with liffile.LifFile(str(path)) as lif:
        image = lif.images[index]
        dims = list(image.dims)
        shape = [int(n) for n in image.shape]
        if tile is not None:
            del shape[dims.index("M")]
        _check_plausible(path, shape, image.dtype)
        array: np.ndarray
        if decoded_bytes(shape, image.dtype) > _scratch.MAP_ABOVE_BYTES:
            array = mapped_from_planes(shape, image.dtype, _lif_frames(image, dims, tile))
        else:
            array = np.asarray(image.asarray())
            if tile is not None:
                array = np.take(array, tile, axis=dims.index("M"))
        coords = {k: np.asarray(v) for k, v in image.coords.items()}
        element = image.xml_element
    if tile is not None:
        del dims[dims.index("M")]
    letters = [_LIF_LETTERS.get(d, d) for d in dims]
    pixel_sizes: dict[str, tuple[float, str]] = {}
    metadata: dict[str, Any] = {}
    for axis in ("X", "Y", "Z"):
        values = coords.get(axis)
        if values is not None and values.size > 1:
            size = _micrometres(float(values[1] - values[0]))
            if size is not None:
                pixel_sizes[axis] = size
    times = coords.get("T")
    if times is not None and times.size > 1:
        metadata["time_increment"] = (float(f"{times[1] - times[0]:.6g}"), "s")
    # A scan whose plane is not XY (XZ, XT line scans): its last two dimensions are
    # the plane; they become Y and X, and the axis they displace takes the other name.
    if len(letters) >= 2 and letters[-2] != "Y":
        plane = letters[-2]
        if "Y" in letters:
            letters[letters.index("Y")] = plane
        letters[-2] = "Y"
        metadata["plane"] = f"X{plane}"
        sizes = dict(pixel_sizes)
        pixel_sizes.pop("Y", None)
        pixel_sizes.pop(plane, None)
        if plane in sizes:
            pixel_sizes["Y"] = sizes[plane]
        if "Y" in sizes and plane == "Z":
            pixel_sizes["Z"] = sizes["Y"]
    channel_elements = list(_iter_named(element, "ChannelDescription"))
    names = [c.get("LUTName") or "" for c in channel_elements]
    n_channels = array.shape[letters.index("C")] if "C" in letters else 1
    if len(names) == n_channels:
        metadata["channels"] = [{"name": n} for n in names]
    objective = _first_attribute(element, "ObjectiveName")
    if objective:
        entry: dict[str, Any] = {"model": objective.strip()}
        aperture = _float(_first_attribute(element, "NumericalAperture"))
        if aperture:
            entry["lens_na"] = aperture
        metadata["objective"] = entry
    model = next(
        (e.get("MicroscopeModel") for e in element.iter() if e.get("MicroscopeModel")), None
    )
    metadata["microscope"] = {"manufacturer": "Leica", **({"model": model} if model else {})}
    return VendorImage(
        array=array,
        axes="".join(letters),
        pixel_sizes=pixel_sizes,
        channel_names=names if len(names) == n_channels and all(names) and n_channels > 1 else None,
        metadata=metadata,
    )


def _first_attribute(element: ET.Element, name: str) -> str | None:
    return next((e.get(name) for e in element.iter() if e.get(name)), None)


# --- OIB / OIF ----------------------------------------------------------------------


def _oif_series(path: Path) -> _Series:
    return [(path.stem, partial(_oif_read, path))]


def _oif_read(path: Path) -> VendorImage:
    import oiffile

    with oiffile.OifFile(str(path)) as oif:
        array = np.asarray(oif.asarray())
        axes = str(oif.axes)
        main = oif.mainfile
    pixel_sizes: dict[str, tuple[float, str]] = {}
    metadata: dict[str, Any] = {"microscope": {"manufacturer": "Olympus"}}
    reference = main.get("Reference Image Parameter", {})
    for axis, key in (("X", "Width"), ("Y", "Height")):
        value = _float(str(reference.get(f"{key}ConvertValue")))
        size = _micrometres(value, str(reference.get(f"{key}Unit", "")))
        if size is not None:
            pixel_sizes[axis] = size
    for key, section in main.items():
        # The Z step: the stack's extent over its planes, in the axis' own unit.
        if re.fullmatch(r"Axis \d+ Parameters Common", key) and section.get("AxisCode") == "Z":
            count = int(section.get("MaxSize", 0) or 0)
            if count > 1:
                span = (_float(str(section.get("EndPosition"))) or 0.0) - (
                    _float(str(section.get("StartPosition"))) or 0.0
                )
                size = _micrometres(span / (count - 1), str(section.get("UnitName", "")))
                if size is not None:
                    pixel_sizes["Z"] = size
    system = main.get("Acquisition Parameters Common", {}).get("SystemName") or main.get(
        "File Info", {}
    ).get("SystemName")
    if system:
        metadata["microscope"]["model"] = str(system)
    return VendorImage(array=array, axes=axes, pixel_sizes=pixel_sizes, metadata=metadata)


_SERIES: dict[str, Callable[[Path], _Series]] = {
    "czi": _czi_series,
    "nd2": _nd2_series,
    "lif": _lif_series,
    "oib": _oif_series,
    "oif": _oif_series,
}
