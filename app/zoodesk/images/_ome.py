"""Constants and small helpers shared by the OME-TIFF reader and writer."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

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


def add_acquisition(
    root: ET.Element, image: ET.Element, acquisition: Mapping[str, Any]
) -> float | None:
    """Write an image's microscope and objective into OME-XML being built.

    ``acquisition`` holds what the readers give: ``microscope`` (``manufacturer``,
    ``model``), ``objective`` (``model``, ``nominal_magnification``, ``lens_na``,
    ``immersion``) and ``time_increment`` (``(seconds, "s")``).  The Instrument goes
    before ``image`` in ``root`` (as the schema orders them) and the image refers to
    it; call this before the image's Pixels are added.  Returns the time increment in
    seconds, for the caller's Pixels, or None.
    """
    microscope = acquisition.get("microscope") or {}
    objective = acquisition.get("objective") or {}
    if isinstance(microscope, Mapping) and isinstance(objective, Mapping):
        scope = {
            k: xml_safe(str(microscope[key]))
            for k, key in (("Manufacturer", "manufacturer"), ("Model", "model"))
            if microscope.get(key)
        }
        lens: dict[str, str] = {}
        if objective.get("model"):
            lens["Model"] = xml_safe(str(objective["model"]))
        if objective.get("manufacturer"):
            lens["Manufacturer"] = xml_safe(str(objective["manufacturer"]))
        immersion = str(objective.get("immersion") or "").strip()
        if immersion:
            known = {i.lower(): i for i in ("Oil", "Water", "WaterDipping", "Air", "Multi")}
            known["glycerol"] = "Glycerol"
            lens["Immersion"] = known.get(immersion.lower(), "Other")
        for attr, key in (("LensNA", "lens_na"), ("NominalMagnification", "nominal_magnification")):
            value = objective.get(key)
            if isinstance(value, int | float) and valid_size(float(value)):
                lens[attr] = f"{float(value):g}"
        if scope or lens:
            instrument = ET.Element("Instrument", {"ID": "Instrument:0"})
            if scope:
                ET.SubElement(instrument, "Microscope", scope)
            if lens:
                ET.SubElement(instrument, "Objective", {"ID": "Objective:0", **lens})
            root.insert(list(root).index(image), instrument)
            ET.SubElement(image, "InstrumentRef", {"ID": "Instrument:0"})
            if lens:
                ET.SubElement(image, "ObjectiveSettings", {"ID": "Objective:0"})
    increment = acquisition.get("time_increment")
    if isinstance(increment, list | tuple) and len(increment) == 2 and increment[1] == "s":
        seconds = increment[0]
        if isinstance(seconds, int | float) and valid_size(float(seconds)):
            return float(seconds)
    return None
