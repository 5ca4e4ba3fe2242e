"""Read OME-Zarr (NGFF 0.4 and 0.5) images with the ``zarr`` library.

An OME-Zarr is a folder.  ZooDesk reads the full-resolution level of a multiscale
image with its axes, physical scale (with units) and channel names (the ``omero``
block), and knows three layouts:

* a multiscale image (``multiscales`` in the group's attributes, under ``ome`` for
  NGFF 0.5): one series;
* the output of bioformats2raw (``bioformats2raw.layout``): one series per image
  group ``0``, ``1``, ...;
* a high-content screening plate (``plate``): one series per field of view of each
  well, named ``row/column/field``.

The metadata is read as JSON from the attributes that ``zarr`` gives (the NGFF
specification's own field names); the pixels of the chosen level through
``zarr.open_array``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoodesk.errors import ImageReadError
from zoodesk.images import _scratch
from zoodesk.images._ome import normalize_length_unit
from zoodesk.images._scratch import mapped_from_planes

#: Folder name endings that mark an OME-Zarr in a folder of inputs.
ZARR_SUFFIXES = (".ome.zarr", ".zarr")

_ATTRIBUTE_FILES = (".zattrs", "zarr.json")


@dataclass
class ZarrImage:
    """One series of an OME-Zarr, as stored: axes are NGFF's, mapped to letters."""

    array: np.ndarray
    axes: str
    pixel_sizes: dict[str, tuple[float, str]] = field(default_factory=dict)
    channel_names: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _attributes(folder: Path) -> dict[str, Any] | None:
    """The group attributes of a Zarr folder (v2 ``.zattrs`` or v3 ``zarr.json``)."""
    v2 = folder / ".zattrs"
    if v2.is_file():
        data = json.loads(v2.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    v3 = folder / "zarr.json"
    if v3.is_file():
        data = json.loads(v3.read_text(encoding="utf-8"))
        attributes = data.get("attributes") if isinstance(data, dict) else None
        return attributes if isinstance(attributes, dict) else {}
    return None


def group_attributes(folder: Path) -> dict[str, Any]:
    """A Zarr group's attributes (empty when it has none or is not a group)."""
    try:
        return _attributes(Path(folder)) or {}
    except (OSError, ValueError):
        return {}


def _ome(attributes: dict[str, Any]) -> dict[str, Any]:
    # NGFF 0.5 keeps its metadata under "ome"; 0.4 at the top level.
    ome = attributes.get("ome")
    return ome if isinstance(ome, dict) else attributes


def is_ome_zarr(folder: Path) -> bool:
    """True for a folder holding an OME-Zarr image, bioformats2raw output or plate."""
    try:
        attributes = _attributes(Path(folder))
    except (OSError, ValueError):
        return False
    if attributes is None:
        return False
    ome = _ome(attributes)
    return any(key in ome for key in ("multiscales", "bioformats2raw.layout", "plate"))


def zarr_series(folder: Path) -> list[tuple[str, Path]]:
    """The images of an OME-Zarr: ``(name, image group folder)`` per series."""
    folder = Path(folder)
    with _reading(folder):
        ome = _ome(_attributes(folder) or {})
        if "multiscales" in ome:
            return [(ome.get("multiscales", [{}])[0].get("name") or folder.name, folder)]
        found: list[tuple[str, Path]] = []
        if "plate" in ome:  # bioformats2raw writes plates with its layout key too
            for well in ome["plate"].get("wells", []):
                well_folder = _inside(folder, str(well["path"]))
                images = _ome(_attributes(well_folder) or {}).get("well", {}).get("images", [])
                for image in images:
                    found.append(
                        (
                            f"{well['path']}/{image['path']}",
                            _inside(well_folder, str(image["path"])),
                        )
                    )
            return found
        index = 0
        while (folder / str(index)).is_dir():
            found.append((_bf2raw_name(folder, index), folder / str(index)))
            index += 1
        return found


def _inside(folder: Path, relative: str) -> Path:
    """``folder / relative`` for a path named by the store's metadata, kept inside it."""
    from zoodesk.fileutils import UnsafePathError, path_inside

    try:
        return path_inside(folder, relative)
    except UnsafePathError as exc:
        raise ImageReadError(f"{folder}: refused: the metadata names {exc}") from exc


def _bf2raw_name(folder: Path, index: int) -> str:
    """The image's name in bioformats2raw's ``OME/METADATA.ome.xml``, else its index."""
    import xml.etree.ElementTree as ET

    with contextlib.suppress(OSError, ET.ParseError):
        root = ET.parse(folder / "OME" / "METADATA.ome.xml").getroot()
        images = [e for e in root if e.tag.rsplit("}", 1)[-1] == "Image"]
        if index < len(images) and images[index].get("Name"):
            return str(images[index].get("Name"))
    return str(index)


def read_zarr(folder: Path, series: int, *, lazy: bool = False) -> ZarrImage:
    """Read the full-resolution level of series ``series`` of an OME-Zarr.

    ``lazy`` gives a Dask array over the stored chunks instead of the decoded pixels:
    only the regions used are ever read (a cluster's worker reading one band).
    """
    listed = zarr_series(folder)
    if not 0 <= series < len(listed):
        raise ImageReadError(
            f"{folder}: series {series} does not exist (the OME-Zarr has {len(listed)} series)"
        )
    name, group = listed[series]
    with _reading(folder):
        import zarr

        ome = _ome(_attributes(group) or {})
        multiscale = ome["multiscales"][0]
        dataset = multiscale["datasets"][0]
        axes_meta = multiscale.get("axes") or [{"name": n} for n in "tczyx"[-2:]]
        axes_meta = [{"name": a} if isinstance(a, str) else a for a in axes_meta]
        level = zarr.open_array(str(_inside(group, str(dataset["path"]))), mode="r")
        mapped = not lazy and level.nbytes > _scratch.MAP_ABOVE_BYTES
        array: Any
        if lazy:
            import dask.array

            array = dask.array.from_zarr(level)
        else:
            array = _decompressed_map(level) if mapped else np.asarray(level[...])
        if array.ndim != len(axes_meta):
            raise ImageReadError(
                f"{folder}: {len(axes_meta)} axes for an array of {array.ndim} dimensions"
            )
        scale = _scale(dataset, len(axes_meta))
        global_scale = _scale(multiscale, len(axes_meta))
        letters = []
        pixel_sizes: dict[str, tuple[float, str]] = {}
        time_increment = None
        for i, axis in enumerate(axes_meta):
            letter = _letter(axis)
            letters.append(letter)
            size = scale[i] * global_scale[i]
            unit = str(axis.get("unit") or "")
            if letter in ("X", "Y", "Z") and unit:
                spelled = normalize_length_unit(unit)
                if spelled is not None and size > 0:
                    pixel_sizes[letter] = (float(f"{size:.12g}"), spelled)
            if letter == "T" and unit in ("second", "s") and size > 0:
                time_increment = (size, "s")
        metadata: dict[str, Any] = {
            "format": "ome-zarr",
            "reader": "zarr",
            "scene": name,
            "series_count": len(listed),
            "ngff_version": str(ome.get("version") or multiscale.get("version") or ""),
            "levels": len(multiscale["datasets"]),
            "memory_mapped": mapped,
        }
        if time_increment is not None:
            metadata["time_increment"] = time_increment
        names = [
            str(c.get("label") or "")
            for c in (ome.get("omero") or {}).get("channels", [])
            if isinstance(c, dict)
        ]
        return ZarrImage(
            array=array,
            axes="".join(letters),
            pixel_sizes=pixel_sizes,
            channel_names=names or None,
            metadata=metadata,
        )


def _decompressed_map(level: Any) -> np.ndarray:
    """The level decompressed band by band into a mapped file (:mod:`._scratch`)."""
    shape = tuple(int(n) for n in level.shape)
    band_axis = max(0, len(shape) - 2)  # bands of rows of each plane
    chunk_rows = int(level.chunks[band_axis]) if shape else 1
    row_bytes = np.dtype(level.dtype).itemsize * int(np.prod(shape[band_axis + 1 :]))
    rows = max(chunk_rows, (64 * 2**20) // max(1, row_bytes))
    rows -= rows % chunk_rows

    def bands() -> Any:
        for index in np.ndindex(*shape[:band_axis]):
            for start in range(0, shape[band_axis], rows):
                yield level[(*index, slice(start, min(start + rows, shape[band_axis])))]

    return mapped_from_planes(shape, level.dtype, bands())


def _scale(holder: dict[str, Any], ndim: int) -> list[float]:
    for transform in holder.get("coordinateTransformations") or []:
        if transform.get("type") == "scale" and len(transform.get("scale", [])) == ndim:
            return [float(v) for v in transform["scale"]]
    return [1.0] * ndim


def _letter(axis: dict[str, Any]) -> str:
    kind = str(axis.get("type") or "").lower()
    name = str(axis.get("name") or "").lower()
    if kind == "channel" or name == "c":
        return "C"
    if kind == "time" or name == "t":
        return "T"
    if name in ("x", "y", "z"):
        return name.upper()
    return "Q"  # another axis: named by the reader's rules


@contextlib.contextmanager
def _reading(folder: Path) -> Iterator[None]:
    try:
        yield
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{folder}: not enough memory to read the image") from None
    except ImportError as exc:
        raise ImageReadError(f"{folder}: OME-Zarr needs the zarr package ({exc})") from None
    except Exception as exc:
        text = str(exc).strip().splitlines()
        reason = text[0] if text else type(exc).__name__
        raise ImageReadError(f"{folder}: cannot read the OME-Zarr: {reason}") from exc
