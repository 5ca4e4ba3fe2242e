"""Read microscopy images into arrays with their axes and physical metadata.

:func:`read_image` reads TIFF (plain, multi-page, ImageJ hyperstacks, OME-TIFF with
several series or pyramid levels), NumPy ``.npy``, PNG, JPEG and BMP files.  The
format is recognised from the file's first bytes, not from its name, so a PNG saved
as ``.jpg`` still reads.  Zeiss CZI, Nikon ND2, Leica LIF and Olympus OIB/OIF files
are read with the readers in :mod:`zoodesk.images.vendor` (one series at a time: a
scene, a position, an image of a project; empty dimensions dropped; pixel sizes in
µm, channel names, wavelengths, time interval, objective and microscope).

Memory
    Uncompressed, contiguously stored TIFF data and every ``.npy`` file are returned
    as a read-only :class:`numpy.memmap`: opening a 16384 x 16384 uint16 image reads
    its header only, pixels are paged in when used.  Compressed or scattered TIFF
    data, PNG, JPEG and BMP are decoded into memory, after checking that the declared
    size is plausible (see :data:`MAX_DECODED_BYTES`).

Axes
    Axes come from the file's metadata when it has some (OME, ImageJ, tifffile's
    own).  tifffile's letters outside ``TCZYXS`` are mapped: ``S`` of a non-RGB
    image becomes ``C``; spectral, lifetime, phase and exposure axes (``E``, ``H``,
    ``P``, ``L``) become ``C``; angle, tile, mosaic and event axes (``A``, ``R``,
    ``M``, ``V``) become ``T``; generic ``I``/``Q`` axes are guessed as below.
    Without metadata the axes are guessed from the shape (:func:`guess_axes`):

    * the last two dimensions are ``YX``; if the array is uint8 with a last
      dimension of 3 or 4 (RGB, RGBA) that one is ``S`` and the two before it ``YX``;
    * the remaining dimensions are named from the one nearest to ``Y`` outwards: a
      dimension of at most :data:`MAX_GUESSED_CHANNELS` becomes ``C`` (if ``C`` is
      still free), any other the first free letter of ``Z``, ``T``, ``C``.

    So ``(3, 512, 512)`` is ``CYX``, ``(40, 512, 512)`` is ``ZYX``, ``(10, 2, 30,
    512, 512)`` is ``TCZYX`` and ``(512, 512, 3)`` uint8 is ``YXS``.  A caller who
    knows better passes ``axes=`` explicitly.

Pixel sizes
    From OME ``PhysicalSizeX/Y/Z`` with their units; else ImageJ's calibration
    (``XResolution``/``YResolution`` with the ``unit`` and ``spacing`` entries);
    else the TIFF resolution tags with a centimetre, millimetre, micrometre or inch
    ``ResolutionUnit`` (72 and 96 dpi are skipped: they are the defaults of image
    editors, never a microscope's calibration); else none.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import mmap
import os
import re
import struct
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile

from zoodesk.errors import ImageReadError
from zoodesk.images._ome import (
    AXES_LETTERS,
    MICROMETER,
    PROVENANCE_NAMESPACE,
    local_name,
    normalize_length_unit,
    valid_size,
)
from zoodesk.images.omezarr import is_ome_zarr, read_zarr, zarr_series
from zoodesk.images.vendor import read_vendor, vendor_format, vendor_series

#: Largest leading dimension that :func:`guess_axes` takes for channels.
MAX_GUESSED_CHANNELS = 4

#: Largest image (in bytes, once decoded) read into memory.  Larger declared sizes
#: come from a corrupt header or would exhaust the workstation's memory anyway.
MAX_DECODED_BYTES = 16 * 2**30

# Most that the codecs can shrink data: deflate's limit is about 1032:1, and an
# uncompressed BMP holds at least its pixel data (RLE-compressed BMP at most 1:128).
_PNG_MAX_RATIO = 1100
_BMP_RLE_MAX_RATIO = 130

_SCREEN_DPI = frozenset({72.0, 96.0})

# tifffile's letters outside TCZYXS, mapped to the letter they stand closest to.
_AXIS_PREFERENCES = {
    "E": "C",  # lambda (spectral)
    "H": "C",  # lifetime histogram
    "P": "C",  # phase
    "L": "C",  # exposure
    "A": "T",  # angle (views)
    "R": "T",  # tile
    "M": "T",  # mosaic
    "V": "T",  # event
}

# TIFF photometric interpretations whose samples are colour components (kept as S).
_COLOUR_PHOTOMETRIC = frozenset({2, 5, 6, 8, 9, 10})  # RGB, CMYK, YCbCr, CIELab...

_SUPPORTED_KINDS = frozenset("buif")


@dataclass
class ImageData:
    """An image as read from a file: pixels, axes and physical metadata.

    Attributes
    ----------
    array
        The pixels, in the order of :attr:`axes`.  A read-only :class:`numpy.memmap`
        for uncompressed TIFF and ``.npy`` files (nothing is read until used).
    axes
        One uppercase letter of ``TCZYXS`` per dimension of :attr:`array`, e.g.
        ``"CZYX"``; ``S`` holds the samples of RGB(A) pixels.
    path
        The file read.
    pixel_sizes
        ``{"X": (0.65, "µm"), ...}`` for the axes whose physical size is known (OME
        length unit spellings); empty when none is.
    channel_names
        One name per channel (per index along ``C``; a single name when there is no
        ``C`` axis), or None when the file names none.
    series
        Index of the series read in a multi-series file.
    metadata
        Anything else worth keeping, e.g. ``"format"``, OME acquisition details
        (``"objective"``, ``"microscope"``, ``"acquisition_date"``, ``"channels"``),
        ``"map_annotations"`` and ZooDesk's ``"provenance"``.
    """

    array: np.ndarray
    axes: str
    path: Path
    pixel_sizes: dict[str, tuple[float, str]] = field(default_factory=dict)
    channel_names: list[str] | None = None
    series: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = _axes_problem(self.axes, self.array.ndim)
        if problem:
            raise ValueError(f"axes {self.axes!r} do not fit shape {self.array.shape}: {problem}")

    @property
    def dtype(self) -> np.dtype:
        """The pixel type."""
        return self.array.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape, in the order of :attr:`axes`."""
        return tuple(self.array.shape)

    @property
    def sizes(self) -> dict[str, int]:
        """The length of each axis, e.g. ``{"C": 2, "Y": 512, "X": 512}``."""
        return dict(zip(self.axes, self.array.shape, strict=True))


def read_image(
    path: Path,
    *,
    series: int = 0,
    axes: str | None = None,
    lazy: bool = False,
    tiles: bool = False,
) -> ImageData:
    """Read an image file with its axes, pixel sizes and channel names.

    Parameters
    ----------
    path
        A TIFF (incl. OME-TIFF and ImageJ), ``.npy``, PNG, JPEG or BMP file.
    series
        Which series of a multi-series file (OME-TIFF with several images); the
        full-resolution level of a pyramid is always the one read.
    axes
        The axes of the array, overriding those from the metadata or the guess:
        as many letters of ``TCZYXS`` as the array has dimensions.

    Returns
    -------
    ImageData
        The pixels (memory-mapped where the storage allows it) and their metadata.

    Raises
    ------
    ImageReadError
        For every file that cannot be used: missing, empty, not an image, truncated,
        corrupt, implausibly large, unsupported pixel type, unknown series, or
        ``axes`` that do not fit.  The message is one line: ``"<path>: <problem>"``.
    lazy
        For OME-Zarr stores: the pixels as a Dask array over the stored chunks, read
        only where used, rather than decoded (other formats are memory-mapped or
        read as usual).
    tiles
        For TIFF data that cannot be memory-mapped (compressed tiles or strips): the
        pixels as a :class:`~zoodesk.images.tiles.TiffTiles`, which decodes only the
        tiles that an index touches, for reading an image block by block in bounded
        memory (other data as usual).
    """
    path = Path(path)
    reader = _choose_reader(path)
    if lazy and reader is _read_ome_zarr:
        reader = functools.partial(_read_ome_zarr, lazy=True)
    if tiles and reader is _read_tiff:
        reader = functools.partial(_read_tiff, tiles=True)
    if series < 0:
        raise ImageReadError(f"{path}: series {series} does not exist")
    try:
        image = reader(path, series)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to read the image") from None
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read the image: {_reason(exc)}") from exc
    if axes is not None:
        image = _with_axes(image, axes)
    return image


def channel_indices(image: ImageData, channels: Sequence[int | str] | None) -> list[int] | None:
    """Channels given by index or by name (as the file names them), as indices.

    Names match case-insensitively; a number written as text (``"1"``) is an index.

    Raises
    ------
    ImageReadError
        For a name the image does not have, naming the ones it has.
    """
    if channels is None:
        return None
    found: list[int] = []
    names = [n.casefold() for n in image.channel_names or []]
    for channel in channels:
        if isinstance(channel, int) or str(channel).strip().lstrip("-").isdigit():
            found.append(int(channel))
        elif str(channel).casefold() in names:
            found.append(names.index(str(channel).casefold()))
        else:
            has = ", ".join(image.channel_names) if image.channel_names else "none named"
            raise ImageReadError(
                f"{image.path}: no channel named {channel!r} (the image's channels: {has})"
            )
    return found


def fold_colour_samples(image: ImageData) -> ImageData:
    """``image`` with each colour sample of each channel as a channel of its own.

    An image with both channels and RGB samples (a brightfield and six polarisation
    channels, each in colour) gives ``C x S`` channels, channel-major, named
    ``"<channel> R"``, ``"<channel> G"``, ... so that ``--channel`` can pick any of
    them.  Other images are returned as they are.
    """
    sizes = image.sizes
    if sizes.get("C", 1) <= 1 or sizes.get("S", 1) <= 1:
        return image
    c, s = image.axes.index("C"), image.axes.index("S")
    order = [i for i in range(image.array.ndim) if i != s]
    order.insert(order.index(c) + 1, s)
    moved = np.transpose(image.array, order)
    shape = list(moved.shape)
    at = order.index(c)
    shape[at : at + 2] = [shape[at] * shape[at + 1]]
    axes = "".join(image.axes[i] for i in order if i != s)
    samples = "RGBA"[: sizes["S"]] if sizes["S"] <= 4 else [str(i) for i in range(sizes["S"])]
    names = (
        [f"{name} {sample}" for name in image.channel_names for sample in samples]
        if image.channel_names is not None
        else None
    )
    return ImageData(
        array=moved.reshape(shape),
        axes=axes,
        path=image.path,
        pixel_sizes=dict(image.pixel_sizes),
        channel_names=names,
        series=image.series,
        metadata={**image.metadata, "colour_samples_as_channels": True},
    )


def release_mapped_pages(array: np.ndarray) -> None:
    """Let the operating system drop the pages of a memory-mapped image read so far.

    Pages of a file mapped into memory count as the process's resident memory for as
    long as they stay mapped, so reading a 40000 x 40000 image block by block would
    end with the whole file counted.  Streaming readers call this after each band of
    blocks: the pages leave the process (they stay in the file cache, so reading
    them again is cheap).  Only read-only maps are released (a copy-on-write map
    would lose its changes); on systems without ``madvise`` (Windows, whose working
    set is trimmed by the system itself) this does nothing.

    Parameters
    ----------
    array
        A :class:`numpy.memmap` or a view of one; any other array is left alone.
    """
    mapped = getattr(array, "_mmap", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if mapped is None or advice is None or getattr(array, "mode", None) != "r":
        return
    with contextlib.suppress(OSError, ValueError):
        mapped.madvise(advice)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations without swapping, if known.

    ``MemAvailable`` of ``/proc/meminfo`` on Linux (read directly: importing psutil
    costs more than a one-image prediction's start-up can spare), else psutil when
    installed, else the free physical pages (other POSIX systems); None when none works.
    """
    with contextlib.suppress(OSError, ValueError), Path("/proc/meminfo").open() as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    with contextlib.suppress(AttributeError, OSError, ValueError):
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    return None


def guess_axes(shape: Sequence[int], dtype: np.dtype | type | str) -> str:
    """Guess the axes of an array that comes without metadata.

    Parameters
    ----------
    shape
        The array's shape (at least two dimensions).
    dtype
        The array's pixel type (only uint8 arrays can be RGB).

    Returns
    -------
    str
        One letter of ``TCZYXS`` per dimension; see the module documentation for
        the rules.

    Raises
    ------
    ValueError
        When the array has fewer than two or too many dimensions to name.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise ValueError(f"an image needs at least 2 dimensions, not shape {shape}")
    rgb = len(shape) >= 3 and shape[-1] in (3, 4) and np.dtype(dtype) == np.uint8
    tail = "YXS" if rgb else "YX"
    letters: list[str | None] = [None] * (len(shape) - len(tail))
    return _name_unknown_axes(letters, shape, set(tail)) + tail


# --- dispatch -----------------------------------------------------------------------

_Reader = Callable[[Path, int], ImageData]


def _choose_reader(path: Path) -> _Reader:
    if path.is_dir():
        if is_ome_zarr(path):
            return _read_ome_zarr
        raise ImageReadError(f"{path}: is a folder, not an image file (nor an OME-Zarr)")
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot open the file: {_reason(exc)}") from None
    if not head:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _read_tiff
    if head.startswith(b"\x93NUMPY"):
        return _read_npy
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _read_png
    if head.startswith(b"\xff\xd8\xff"):
        return _read_jpeg
    if head.startswith(b"BM"):
        return _read_bmp
    fmt = vendor_format(path, head)
    if fmt is not None:
        return lambda p, s: _read_vendor(p, s, fmt)
    raise ImageReadError(
        f"{path}: not a recognised image file (expected TIFF, NumPy .npy, PNG, JPEG, BMP, "
        "CZI, ND2, LIF or OIB content)"
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    reason = text[0].strip() if text else ""
    if not reason:
        return type(exc).__name__
    return reason if len(reason) <= 200 else reason[:197] + "..."


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _check_dtype(path: Path, dtype: np.dtype | None) -> np.dtype:
    if dtype is None or dtype.kind not in _SUPPORTED_KINDS or dtype.fields is not None:
        raise ImageReadError(f"{path}: unsupported pixel type {dtype}")
    return dtype


def _check_shape(path: Path, shape: Sequence[int]) -> None:
    if len(shape) < 2:
        raise ImageReadError(f"{path}: not an image (shape {tuple(shape)})")
    if math.prod(shape) == 0:
        raise ImageReadError(f"{path}: image has no pixels (shape {tuple(shape)})")


def _check_decoded_size(path: Path, nbytes: int, what: str = "the image") -> None:
    if nbytes > MAX_DECODED_BYTES:
        raise ImageReadError(
            f"{path}: {what} would take {_human_bytes(nbytes)} once decoded, more than the "
            f"{_human_bytes(MAX_DECODED_BYTES)} limit (corrupt header or too large to read)"
        )


# --- axes ---------------------------------------------------------------------------


def _axes_problem(axes: str, ndim: int) -> str | None:
    if len(axes) != ndim:
        return f"{len(axes)} letters for {ndim} dimensions"
    bad = sorted(set(axes) - set(AXES_LETTERS))
    if bad:
        return f"letters {''.join(bad)!r} are not among {AXES_LETTERS!r}"
    if len(set(axes)) != len(axes):
        return "a letter is repeated"
    return None


def _with_axes(image: ImageData, axes: str) -> ImageData:
    axes = axes.strip().upper()
    problem = _axes_problem(axes, image.array.ndim)
    if problem:
        raise ImageReadError(
            f"{image.path}: axes {axes!r} do not fit the image of shape {image.shape} "
            f"(read as {image.axes!r}): {problem}"
        )
    names = image.channel_names
    if names is not None and len(names) != dict(zip(axes, image.shape, strict=True)).get("C", 1):
        names = None
    return ImageData(
        array=image.array,
        axes=axes,
        path=image.path,
        pixel_sizes=dict(image.pixel_sizes),
        channel_names=names,
        series=image.series,
        metadata={**image.metadata, "axes_from": "caller"},
    )


def _name_unknown_axes(letters: list[str | None], shape: Sequence[int], taken: set[str]) -> str:
    """Fill the ``None`` entries of ``letters`` with free letters (see module doc)."""
    taken = set(taken) | {ch for ch in letters if ch}
    result = list(letters)
    # Name from the dimension nearest to the image plane outwards, so that the
    # usual orders TZYX and TCZYX come out of unnamed arrays.
    for i in reversed(range(len(result))):
        if result[i] is not None:
            continue
        if shape[i] <= MAX_GUESSED_CHANNELS and "C" not in taken:
            choice = "C"
        else:
            free = [ch for ch in "ZTC" if ch not in taken]
            if not free:
                raise ValueError(f"too many dimensions to name in shape {tuple(shape)}")
            choice = free[0]
        result[i] = choice
        taken.add(choice)
    return "".join(ch for ch in result if ch)


def _normalize_tiff_axes(raw: str, shape: Sequence[int], *, colour: bool) -> str:
    letters: list[str | None] = []
    taken: set[str] = set()
    for ch in raw.upper():
        keep = ch in "TCZYX" or (ch == "S" and colour)
        if keep and ch not in taken:
            letters.append(ch)
            taken.add(ch)
        else:
            letters.append(None)
    # Preferred letters first, so that a spectral axis gets C before a generic axis.
    for i, ch in enumerate(raw.upper()):
        if letters[i] is None:
            preferred = "C" if ch == "S" else _AXIS_PREFERENCES.get(ch)
            if preferred and preferred not in taken:
                letters[i] = preferred
                taken.add(preferred)
    return _name_unknown_axes(letters, shape, taken)


# --- TIFF ---------------------------------------------------------------------------

# tifffile reports damaged files through its logger and goes on with what it could
# parse (for example only the first pages of a truncated stack).  These messages
# mean that the pixels returned would not be the file's.
_TIFF_DAMAGE = re.compile(
    r"invalid (page )?offset|invalid offset to|circular reference|failed to reshape|"
    r"failed to read|corrupted|missing (data|bytecounts|required|\d+ pages)|"
    r"incorrect \w+ count|incompletely written|does not match page shape|"
    r"metadata does not match",
    re.IGNORECASE,
)


class _TifffileLog(logging.Filter):
    """Collects tifffile's warnings per thread while a reader asks for them.

    As a filter on the ``tifffile`` logger it sees each record before any handler:
    it keeps the message for the reader, and names the file being read in the
    record, which goes on to the application's log file (tifffile's messages name
    a page or a tag, rarely the file).
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    @contextlib.contextmanager
    def collect(self, path: Path) -> Iterator[list[str]]:
        previous = getattr(self._local, "reading", None)
        bucket: list[str] = []
        self._local.reading = (path, bucket)
        try:
            yield bucket
        finally:
            self._local.reading = previous

    def filter(self, record: logging.LogRecord) -> bool:
        reading = getattr(self._local, "reading", None)
        if reading is not None:
            path, bucket = reading
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                bucket.append(message)
            record.msg, record.args = f"{path}: {message}", ()
        return True


_TIFFFILE_LOG = _TifffileLog()
_TIFFFILE_LOGGER = logging.getLogger("tifffile")
_TIFFFILE_LOGGER.addFilter(_TIFFFILE_LOG)
# A handler of its own keeps tifffile's records off stderr when the application has
# configured no logging (Python's last-resort handler would print them); they still
# reach the application's handlers (its log file) when it has.
_TIFFFILE_LOGGER.addHandler(logging.NullHandler())


def _tiff_problem(message: str) -> str:
    # Drop tifffile's "<tifffile.TiffPage 3 @8> " prefix: the path is named already.
    return re.sub(r"^(<[^>]*>\s*)+", "", message).strip()


def _read_tiff(path: Path, series: int, *, tiles: bool = False) -> ImageData:
    with _TIFFFILE_LOG.collect(path) as warnings:
        try:
            image = _read_tiff_series(path, series, tiles=tiles)
        except (struct.error, EOFError, tifffile.TiffFileError) as exc:
            # Raised while parsing headers and directories that end too early.
            raise ImageReadError(f"{path}: truncated or corrupt TIFF: {_reason(exc)}") from exc
    damage = [w for w in warnings if _TIFF_DAMAGE.search(w)]
    if damage:
        raise ImageReadError(f"{path}: truncated or corrupt TIFF: {_tiff_problem(damage[0])}")
    if warnings:
        image.metadata["warnings"] = [_tiff_problem(w) for w in warnings]
    return image


def _read_tiff_series(path: Path, series: int, *, tiles: bool = False) -> ImageData:
    with tifffile.TiffFile(path) as tif:
        count = len(tif.series)
        if count == 0:
            raise ImageReadError(f"{path}: the TIFF file holds no image data")
        if series >= count:
            raise ImageReadError(
                f"{path}: series {series} does not exist (the file has {count} series)"
            )
        tseries = tif.series[series]  # level 0 of a pyramid: full resolution
        shape = tuple(int(n) for n in tseries.shape)
        dtype = _check_dtype(path, tseries.dtype)
        _check_shape(path, shape)
        array = _tiff_pixels(
            path, tif, tseries, shape, dtype, tiles=tiles and dtype != np.bool_, series=series
        )
        keyframe = tseries.keyframe
        colour = int(keyframe.photometric) in _COLOUR_PHOTOMETRIC
        axes = _normalize_tiff_axes(tseries.axes, shape, colour=colour)
        named = set(tseries.axes) <= set(AXES_LETTERS)
        metadata: dict[str, Any] = {
            "format": "tiff",
            "axes_from": "metadata" if named else "guess",
            "tiff_kind": tseries.kind,
            "series_count": count,
            "pyramid_levels": len(tseries.levels),
        }
        pixel_sizes: dict[str, tuple[float, str]] = {}
        channel_names: list[str] | None = None
        # When tifffile fell back to plain pages, the OME-XML did not describe them.
        ome_xml = tif.ome_metadata if tif.is_ome and tseries.kind == "ome" else None
        if ome_xml:
            with contextlib.suppress(ET.ParseError):
                pixel_sizes, channel_names, ome_info = _ome_info(
                    ome_xml, series, tseries.name, count
                )
                metadata.update(ome_info)
                metadata["format"] = "ome-tiff"
        imagej = tif.imagej_metadata if tif.is_imagej else None
        if imagej is not None:
            metadata["format"] = "imagej-tiff"
            interval = _positive_float(imagej.get("finterval"))
            if interval is not None:
                metadata["time_increment"] = (interval, str(imagej.get("tunit", "s")) or "s")
        if not pixel_sizes:
            pixel_sizes = _tiff_pixel_sizes(keyframe, imagej)
    if channel_names is not None:
        n_channels = dict(zip(axes, shape, strict=True)).get("C", 1)
        if len(channel_names) != n_channels:
            channel_names = None
    if dtype == np.bool_:
        array = array.astype(np.uint8)
    metadata["memory_mapped"] = isinstance(array, np.memmap)
    return ImageData(
        array=array,
        axes=axes,
        path=path,
        pixel_sizes=pixel_sizes,
        channel_names=channel_names,
        series=series,
        metadata=metadata,
    )


def _tiff_pixels(
    path: Path,
    tif: tifffile.TiffFile,
    tseries: tifffile.TiffPageSeries,
    shape: tuple[int, ...],
    dtype: np.dtype,
    *,
    tiles: bool = False,
    series: int = 0,
) -> Any:
    nbytes = math.prod(shape) * dtype.itemsize
    file_size = path.stat().st_size
    offset = tseries.dataoffset
    if offset is not None:
        if offset + nbytes > file_size:
            raise ImageReadError(
                f"{path}: truncated or corrupt: the header declares {_human_bytes(nbytes)} of "
                f"pixel data but the file is only {_human_bytes(file_size)}"
            )
        # Memory-map in the file's byte order; numpy converts on use.
        return np.memmap(
            path,
            dtype=np.dtype(tif.byteorder + dtype.char),
            mode="r",
            offset=offset,
            shape=shape,
            order="C",
        )
    keyframe = tseries.keyframe
    uncompressed = int(keyframe.compression) == 1
    if uncompressed and not tseries.is_multifile and nbytes > file_size:
        raise ImageReadError(
            f"{path}: truncated or corrupt: the header declares {_human_bytes(nbytes)} of "
            f"uncompressed pixel data but the file is only {_human_bytes(file_size)}"
        )
    _check_segments(path, tseries)
    if tiles:
        from zoodesk.images.tiles import TiffTiles

        found = TiffTiles(path, series)
        if found.shape == shape:
            return found
        found.close()
    _check_decoded_size(path, nbytes)
    try:
        return np.asarray(tseries.asarray())
    except MemoryError:
        raise
    except Exception as exc:
        # Codec errors (zlib, LZW, JPEG...) on damaged strips or tiles.
        raise ImageReadError(f"{path}: corrupt TIFF pixel data: {_reason(exc)}") from exc


def _check_segments(path: Path, tseries: tifffile.TiffPageSeries) -> None:
    """Refuse pages whose strips or tiles lie beyond the end of their file."""
    sizes: dict[int, int] = {}
    for page in tseries.pages:
        if page is None:
            continue
        fh = page.parent.filehandle
        size = sizes.setdefault(id(fh), fh.size)
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
            if count and offset + count > size:
                raise ImageReadError(
                    f"{path}: truncated or corrupt: image data at byte {offset} runs past the "
                    f"end of the file ({_human_bytes(size)})"
                )


def _positive_float(value: object) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if valid_size(number) else None


def _tidy(value: float) -> float:
    # Unit conversions leave noise such as 0.6500000000000001.
    return float(f"{value:.12g}")


def _rational(tags: tifffile.TiffTags, name: str) -> float | None:
    tag = tags.get(name)
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, tuple) and len(value) == 2:
        num, den = value
        if not den:
            return None
        return _positive_float(num / den)
    return _positive_float(value)


def _tiff_pixel_sizes(
    page: tifffile.TiffPage, imagej: dict[str, Any] | None
) -> dict[str, tuple[float, str]]:
    tags = page.tags
    xres = _rational(tags, "XResolution")
    yres = _rational(tags, "YResolution")
    sizes: dict[str, tuple[float, str]] = {}
    if imagej is not None:
        unit = normalize_length_unit(str(imagej.get("unit", "")))
        if unit is None:
            return sizes
        if xres is not None:
            sizes["X"] = (_tidy(1.0 / xres), unit)
        if yres is not None:
            sizes["Y"] = (_tidy(1.0 / yres), unit)
        spacing = _positive_float(imagej.get("spacing"))
        if spacing is not None:
            sizes["Z"] = (spacing, unit)
        return sizes
    unit_tag = tags.get("ResolutionUnit")
    # TIFF 6.0: a missing ResolutionUnit means inches.
    res_unit = int(unit_tag.value) if unit_tag is not None else 2
    micrometres_per_unit = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}.get(res_unit)
    if micrometres_per_unit is None:
        return sizes
    for axis, res in (("X", xres), ("Y", yres)):
        if res is None or (res_unit == 2 and res in _SCREEN_DPI):
            continue
        sizes[axis] = (_tidy(micrometres_per_unit / res), MICROMETER)
    return sizes


# --- OME-XML ------------------------------------------------------------------------


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if local_name(child.tag) == name]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    found = _children(element, name)
    return found[0] if found else None


def _find_ome_image(root: ET.Element, index: int, name: str, n_series: int) -> ET.Element | None:
    images = [im for im in _children(root, "Image") if _child(im, "Pixels") is not None]
    # tifffile skips OME images it cannot map to pages; then match by name.
    if len(images) != n_series and name:
        named = [im for im in images if im.get("Name") == name]
        if len(named) == 1:
            return named[0]
    return images[index] if index < len(images) else None


def _quantity(element: ET.Element, attr: str, default_unit: str) -> tuple[float, str] | None:
    value = _positive_float(element.get(attr))
    if value is None:
        return None
    return value, element.get(attr + "Unit", default_unit)


def _pick(element: ET.Element, attrs: dict[str, str]) -> dict[str, Any]:
    picked: dict[str, Any] = {}
    for attr, key in attrs.items():
        value = element.get(attr)
        if value is not None and value.strip():
            picked[key] = value.strip()
    return picked


def _ome_info(
    xml: str, index: int, name: str, n_series: int
) -> tuple[dict[str, tuple[float, str]], list[str] | None, dict[str, Any]]:
    root = ET.fromstring(xml)
    image = _find_ome_image(root, index, name, n_series)
    info: dict[str, Any] = {}
    if image is None:
        return {}, None, info
    pixels = _child(image, "Pixels")
    assert pixels is not None  # _find_ome_image only returns images with Pixels
    sizes: dict[str, tuple[float, str]] = {}
    for axis in "XYZ":
        quantity = _quantity(pixels, f"PhysicalSize{axis}", MICROMETER)
        if quantity is not None:
            unit = normalize_length_unit(quantity[1])
            if unit is not None:
                sizes[axis] = (quantity[0], unit)
    time_increment = _quantity(pixels, "TimeIncrement", "s")
    if time_increment is not None:
        info["time_increment"] = time_increment

    channels = _children(pixels, "Channel")
    names = [(ch.get("Name") or "").strip() for ch in channels]
    channel_names = names if channels and all(names) else None
    info["channels"] = [_channel_info(ch) for ch in channels]

    if image.get("Name"):
        info["image_name"] = image.get("Name")
    for tag, key in (("AcquisitionDate", "acquisition_date"), ("Description", "description")):
        element = _child(image, tag)
        if element is not None and element.text and element.text.strip():
            info[key] = element.text.strip()
    info.update(_instrument_info(root, image))
    annotations = _map_annotations(root, image)
    if annotations:
        info["map_annotations"] = annotations
        if PROVENANCE_NAMESPACE in annotations:
            info["provenance"] = annotations[PROVENANCE_NAMESPACE]
    return sizes, channel_names, info


def _channel_info(channel: ET.Element) -> dict[str, Any]:
    info = _pick(
        channel,
        {
            "Name": "name",
            "Fluor": "fluor",
            "ContrastMethod": "contrast_method",
            "IlluminationType": "illumination_type",
            "AcquisitionMode": "acquisition_mode",
        },
    )
    for attr, key in (
        ("ExcitationWavelength", "excitation_wavelength"),
        ("EmissionWavelength", "emission_wavelength"),
    ):
        quantity = _quantity(channel, attr, "nm")
        if quantity is not None:
            info[key] = quantity
    return info


def _instrument_info(root: ET.Element, image: ET.Element) -> dict[str, Any]:
    info: dict[str, Any] = {}
    ref = _child(image, "InstrumentRef")
    instruments = _children(root, "Instrument")
    instrument = None
    if ref is not None:
        instrument = next((i for i in instruments if i.get("ID") == ref.get("ID")), None)
    elif len(instruments) == 1:
        instrument = instruments[0]
    if instrument is None:
        return info
    microscope = _child(instrument, "Microscope")
    if microscope is not None:
        info["microscope"] = _pick(
            microscope,
            {
                "Manufacturer": "manufacturer",
                "Model": "model",
                "SerialNumber": "serial_number",
                "Type": "type",
            },
        )
    objectives = _children(instrument, "Objective")
    settings = _child(image, "ObjectiveSettings")
    objective = None
    if settings is not None:
        objective = next((o for o in objectives if o.get("ID") == settings.get("ID")), None)
    elif len(objectives) == 1:
        objective = objectives[0]
    if objective is not None:
        described = _pick(
            objective,
            {
                "Manufacturer": "manufacturer",
                "Model": "model",
                "Immersion": "immersion",
                "Correction": "correction",
            },
        )
        for attr, key in (
            ("NominalMagnification", "nominal_magnification"),
            ("LensNA", "lens_na"),
        ):
            value = _positive_float(objective.get(attr))
            if value is not None:
                described[key] = value
        distance = _quantity(objective, "WorkingDistance", MICROMETER)
        if distance is not None:
            described["working_distance"] = distance
        info["objective"] = described
    return info


def _map_annotations(root: ET.Element, image: ET.Element) -> dict[str, dict[str, str]]:
    refs = {ref.get("ID") for ref in _children(image, "AnnotationRef")}
    found: dict[str, dict[str, str]] = {}
    block = _child(root, "StructuredAnnotations")
    if block is None or not refs:
        return found
    for annotation in _children(block, "MapAnnotation"):
        if annotation.get("ID") not in refs:
            continue
        value = _child(annotation, "Value")
        if value is None:
            continue
        pairs = found.setdefault(annotation.get("Namespace", ""), {})
        for entry in _children(value, "M"):
            pairs[entry.get("K", "")] = entry.text or ""
    return found


# --- vendor formats (CZI, ND2, LIF, OIB) --------------------------------------------


def _read_vendor(path: Path, series: int, fmt: str) -> ImageData:
    found = read_vendor(path, series, fmt)
    _check_dtype(path, found.array.dtype)
    shape = found.array.shape
    _check_shape(path, shape)
    mapped = isinstance(found.array, np.memmap)
    if not mapped:
        _check_decoded_size(path, found.array.nbytes)
    # Dimensions of one element are dropped, as the TIFF reader does, so that axes mean
    # the same whatever the format.
    keep = [i for i, (a, n) in enumerate(zip(found.axes, shape, strict=True)) if n > 1 or a in "YX"]
    array = found.array.reshape([shape[i] for i in keep])
    raw_axes = "".join(found.axes[i] for i in keep)
    colour = "S" in raw_axes
    axes = _normalize_tiff_axes(raw_axes, array.shape, colour=colour)
    n_channels = dict(zip(axes, array.shape, strict=True)).get("C", 1)
    names = found.channel_names
    metadata = {**found.metadata, "axes_from": "metadata", "memory_mapped": mapped}
    channels = metadata.get("channels")
    if isinstance(channels, list) and len(channels) != n_channels:
        metadata.pop("channels")
    return ImageData(
        array=array,
        axes=axes,
        path=path,
        pixel_sizes={k: v for k, v in found.pixel_sizes.items() if k in axes or k in "XY"},
        channel_names=names if names is not None and len(names) == n_channels else None,
        series=series,
        metadata=metadata,
    )


# --- OME-Zarr ----------------------------------------------------------------------


def _read_ome_zarr(path: Path, series: int, *, lazy: bool = False) -> ImageData:
    found = read_zarr(path, series, lazy=lazy)
    _check_dtype(path, found.array.dtype)
    _check_shape(path, found.array.shape)
    if not lazy and not found.metadata.get("memory_mapped"):
        _check_decoded_size(path, found.array.nbytes)
    keep = [
        i
        for i, (a, n) in enumerate(zip(found.axes, found.array.shape, strict=True))
        if n > 1 or a in "YX"
    ]
    array = found.array.reshape([found.array.shape[i] for i in keep])
    axes = _normalize_tiff_axes("".join(found.axes[i] for i in keep), array.shape, colour=False)
    n_channels = dict(zip(axes, array.shape, strict=True)).get("C", 1)
    names = found.channel_names
    return ImageData(
        array=array,
        axes=axes,
        path=path,
        pixel_sizes={k: v for k, v in found.pixel_sizes.items() if k in axes},
        channel_names=names if names is not None and len(names) == n_channels else None,
        series=series,
        metadata={**found.metadata, "axes_from": "metadata"},
    )


# --- NumPy --------------------------------------------------------------------------


def _read_npy(path: Path, series: int) -> ImageData:
    _only_series_zero(path, series)
    with path.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        offset = fh.tell()
    if dtype.hasobject:
        raise ImageReadError(f"{path}: the .npy file holds Python objects, not pixel data")
    _check_dtype(path, dtype)
    _check_shape(path, shape)
    nbytes = math.prod(shape) * dtype.itemsize
    file_size = path.stat().st_size
    if offset + nbytes > file_size:
        raise ImageReadError(
            f"{path}: truncated or corrupt: the header declares {_human_bytes(nbytes)} of "
            f"pixel data but the file is only {_human_bytes(file_size)}"
        )
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    try:
        axes = guess_axes(array.shape, array.dtype)
    except ValueError as exc:
        raise ImageReadError(f"{path}: {exc}; give the axes explicitly") from None
    return ImageData(
        array=array,
        axes=axes,
        path=path,
        metadata={"format": "npy", "memory_mapped": True, "axes_from": "guess"},
    )


# --- PNG, JPEG, BMP -----------------------------------------------------------------


def _only_series_zero(path: Path, series: int) -> None:
    if series != 0:
        raise ImageReadError(f"{path}: series {series} does not exist (the file has 1 series)")


def _decoded(path: Path, data: bytes, decode: Callable[[bytes], np.ndarray], fmt: str) -> ImageData:
    try:
        array = np.asarray(decode(data))
    except MemoryError:
        raise
    except Exception as exc:
        raise ImageReadError(f"{path}: truncated or corrupt {fmt.upper()}: {_reason(exc)}") from exc
    _check_dtype(path, array.dtype)
    _check_shape(path, array.shape)
    # These formats have no axes metadata, but their layout is known: a third
    # dimension is always colour (or grey + alpha) samples.
    axes = "YX" if array.ndim == 2 else "YXS"
    if array.ndim > 3:
        raise ImageReadError(f"{path}: unexpected {fmt} pixel layout {array.shape}")
    return ImageData(
        array=array, axes=axes, path=path, metadata={"format": fmt, "memory_mapped": False}
    )


def _read_png(path: Path, series: int) -> ImageData:
    _only_series_zero(path, series)
    data = path.read_bytes()
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageReadError(f"{path}: truncated or corrupt PNG (no image header)")
    width, height, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    samples = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour_type, 4)
    nbytes = width * height * samples * (2 if depth == 16 else 1)
    if width == 0 or height == 0:
        raise ImageReadError(f"{path}: image has no pixels ({width} x {height})")
    _check_decoded_size(path, nbytes)
    if nbytes > len(data) * _PNG_MAX_RATIO:
        raise ImageReadError(
            f"{path}: truncated or corrupt PNG: the header declares {width} x {height} pixels, "
            f"far more than a {_human_bytes(len(data))} file can hold"
        )
    return _decoded(path, data, imagecodecs.png_decode, "png")


def _jpeg_size(data: bytes) -> tuple[int, int, int] | None:
    """Height, width and components from a JPEG's frame header, if one is found."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 10 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return height, width, data[pos + 9]
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _read_jpeg(path: Path, series: int) -> ImageData:
    _only_series_zero(path, series)
    data = path.read_bytes()
    size = _jpeg_size(data)
    if size is None:
        raise ImageReadError(f"{path}: truncated or corrupt JPEG (no frame header)")
    height, width, components = size
    if width == 0 or height == 0:
        raise ImageReadError(f"{path}: image has no pixels ({width} x {height})")
    _check_decoded_size(path, height * width * max(components, 1) * 2)
    # libjpeg fills a truncated image with grey and only warns: require the end of
    # image marker after the last start of scan (neither can occur inside scan data).
    last_scan = data.rfind(b"\xff\xda")
    if last_scan < 0 or data.find(b"\xff\xd9", last_scan) < 0:
        raise ImageReadError(f"{path}: truncated or corrupt JPEG (image data end missing)")
    return _decoded(path, data, imagecodecs.jpeg8_decode, "jpeg")


def _read_bmp(path: Path, series: int) -> ImageData:
    _only_series_zero(path, series)
    data = path.read_bytes()
    if len(data) < 34:
        raise ImageReadError(f"{path}: truncated or corrupt BMP (no image header)")
    width, height = struct.unpack("<ii", data[18:26])
    bits, compression = struct.unpack("<HI", data[28:34])
    width, height = abs(width), abs(height)  # negative height: rows stored top-down
    if width == 0 or height == 0:
        raise ImageReadError(f"{path}: image has no pixels ({width} x {height})")
    nbytes = width * height * 4
    _check_decoded_size(path, nbytes)
    stored = width * height * max(bits, 1) // 8
    # Compression 4 and 5 embed JPEG or PNG data, whose size says little.
    limit = len(data) * (_BMP_RLE_MAX_RATIO if compression in (1, 2) else 1)
    if compression not in (4, 5) and stored > limit:
        raise ImageReadError(
            f"{path}: truncated or corrupt BMP: the header declares {width} x {height} pixels, "
            f"more than a {_human_bytes(len(data))} file can hold"
        )
    return _decoded(path, data, imagecodecs.bmp_decode, "bmp")


def series_names(path: Path) -> list[str]:
    """The names of the series a multi-series microscope file holds (CZI scenes, ND2
    positions, LIF images, the images of an OME-Zarr from bioformats2raw, the fields
    of a plate); one empty name for every other file, and for a file that cannot be
    read (reading it reports the problem)."""
    try:
        if Path(path).is_dir():
            if not is_ome_zarr(Path(path)):
                return [""]
            return [name for name, _group in zarr_series(Path(path))]
        with Path(path).open("rb") as fh:
            head = fh.read(16)
        fmt = vendor_format(Path(path), head)
        if fmt is None:
            return [""]
        return vendor_series(Path(path), fmt)
    except (OSError, ImageReadError):
        return [""]
