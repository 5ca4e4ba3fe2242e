"""Constants and small helpers shared by the OME-TIFF reader and writer."""

from __future__ import annotations

import math
import re

OME_NAMESPACE = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"
OME_SCHEMA_LOCATION = f"{OME_NAMESPACE} {OME_NAMESPACE}/ome.xsd"

#: Namespace of the MapAnnotation that carries ZooDesk's provenance key/value pairs.
PROVENANCE_NAMESPACE = "urn:zoodesk:provenance:1"

#: Letters allowed in :attr:`ImageData.axes`, in the canonical (OME) array order.
AXES_LETTERS = "TCZYXS"

MICROMETER = "µm"  # U+00B5 MICRO SIGN, the spelling the OME schema uses

#: The length units of the OME 2016-06 schema (``UnitsLength``).
OME_LENGTH_UNITS = frozenset(
    {
        "Ym", "Zm", "Em", "Pm", "Tm", "Gm", "Mm", "km", "hm", "dam", "m", "dm", "cm",
        "mm", MICROMETER, "nm", "pm", "fm", "am", "zm", "ym", "Å", "thou", "li", "in",
        "ft", "yd", "mi", "ua", "ly", "pc", "pt",
    }
)  # fmt: skip

# Spellings met in ImageJ metadata and other writers.  ImageJ stores the micro sign
# as the literal escape "\u00B5m"; some writers use the Greek mu (U+03BC).
_UNIT_ALIASES = {
    "um": MICROMETER,
    "μm": MICROMETER,
    "\\u00b5m": MICROMETER,
    "micron": MICROMETER,
    "microns": MICROMETER,
    "micrometer": MICROMETER,
    "micrometre": MICROMETER,
    "micrometers": MICROMETER,
    "micrometres": MICROMETER,
    "nanometer": "nm",
    "nanometre": "nm",
    "nanometers": "nm",
    "millimeter": "mm",
    "millimetre": "mm",
    "millimeters": "mm",
    "centimeter": "cm",
    "centimetre": "cm",
    "meter": "m",
    "metre": "m",
    "angstrom": "Å",
    "inch": "in",
}

# Characters that XML 1.0 does not allow, even escaped.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def normalize_length_unit(unit: str) -> str | None:
    """The OME spelling of a length unit, or None when it is not a length unit.

    Parameters
    ----------
    unit
        A unit as written by some software: ``"um"``, ``"micron"``, ``"µm"``, ...

    Returns
    -------
    str or None
        One of :data:`OME_LENGTH_UNITS`, or None for ``"pixel"``, ``""`` and
        anything unknown.
    """
    text = unit.strip()
    if text in OME_LENGTH_UNITS:
        return text
    return _UNIT_ALIASES.get(text.lower())


def valid_size(value: float) -> bool:
    """Whether a physical size is usable: finite and strictly positive."""
    return math.isfinite(value) and value > 0


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry."""
    return _XML_INVALID.sub("", text)


def local_name(tag: str) -> str:
    """An element's tag without its ``{namespace}`` prefix."""
    return tag.rsplit("}", 1)[-1]
