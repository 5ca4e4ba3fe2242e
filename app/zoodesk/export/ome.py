"""OME-XML in the package: reading it from OME-TIFF files, validating it, companions.

Validation uses the OME 2016-06 schema shipped with ``ome-types`` (no network).  A
companion is a metadata-only OME-XML document (``<MetadataOnly/>`` instead of pixel
data) that stands for an input image left out of the package.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from zoodesk.images import PROVENANCE_NAMESPACE, build_ome_xml

log = logging.getLogger(__name__)

_OME_TYPES = {
    "uint8": "uint8",
    "int8": "int8",
    "uint16": "uint16",
    "int16": "int16",
    "uint32": "uint32",
    "int32": "int32",
    "float32": "float",
    "float64": "double",
    "bool": "bit",
}
_STORED_ORDER = "TCZYXS"


def ome_xml_of(path: Path) -> str | None:
    """The OME-XML of an OME-TIFF file (header only is read), or None."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tif.ome_metadata if tif.is_ome else None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _first(root: ET.Element, name: str) -> ET.Element | None:
    return next((e for e in root.iter() if _local(e.tag) == name), None)


def pixel_sizes_of(xml: str) -> dict[str, tuple[float, str]]:
    """``PhysicalSizeX/Y/Z`` of the first image, with units (default µm)."""
    pixels = _first(ET.fromstring(xml), "Pixels")
    sizes: dict[str, tuple[float, str]] = {}
    if pixels is None:
        return sizes
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        if value is not None:
            sizes[axis] = (float(value), pixels.get(f"PhysicalSize{axis}Unit", "µm"))
    return sizes


def provenance_of(xml: str) -> dict[str, str]:
    """ZooDesk's provenance key/value pairs (its MapAnnotation), or an empty dict."""
    for element in ET.fromstring(xml).iter():
        if (
            _local(element.tag) == "MapAnnotation"
            and element.get("Namespace") == PROVENANCE_NAMESPACE
        ):
            return {m.get("K", ""): m.text or "" for m in element.iter() if _local(m.tag) == "M"}
    return {}


def schema_problems(xml: str) -> list[str]:
    """Why ``xml`` is not valid against the OME 2016-06 schema (empty when it is)."""
    from ome_types import validate_xml

    try:
        validate_xml(xml, warn_on_schema_update=False)
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return [" ".join(lines[:3]) or type(exc).__name__]
    return []


def companion_xml(
    *,
    name: str,
    axes: str,
    shape: Sequence[int],
    dtype: str,
    pixel_sizes: Mapping[str, tuple[float, str]] | None,
    channel_names: Sequence[str] | None,
    reference: Mapping[str, str],
) -> str:
    """A metadata-only OME-XML document describing an image that is not included.

    Parameters
    ----------
    name
        The image's file name.
    axes, shape, dtype
        As read from the image (``TCZYXS`` letters).
    pixel_sizes, channel_names
        The image's physical pixel sizes and channel names.
    reference
        Key/value pairs stored in a MapAnnotation (original path, size, sha256).
    """
    order = sorted(range(len(axes)), key=lambda i: _STORED_ORDER.index(axes[i]))
    stored_axes = "".join(axes[i] for i in order)
    stored_shape = [int(shape[i]) for i in order]
    pixel_type = _OME_TYPES.get(str(np.dtype(dtype)), "uint8")
    channels = dict(zip(stored_axes, stored_shape, strict=True)).get("C", 1)
    names = list(channel_names) if channel_names and len(channel_names) == channels else None
    xml = build_ome_xml(
        name=name,
        axes=stored_axes,
        shape=stored_shape,
        pixel_type=pixel_type,
        pixel_sizes=pixel_sizes,
        channel_names=names,
        provenance=reference,
        description="Metadata only: the image itself is referenced, not included.",
    )
    # build_ome_xml describes pixels stored in a TIFF; here there are none.
    companion, count = re.subn(r"<TiffData\b[^>]*/>", "<MetadataOnly />", xml)
    if count != 1:
        raise ValueError("unexpected OME-XML layout: no single TiffData element")
    return companion
