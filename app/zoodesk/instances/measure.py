"""Measurements of labelled objects, and the tables they are written to.

Per object (``objects.csv``, one per image): label, frame, centroid and bounding box
in pixels and in micrometres, area (2D) or volume (3D) in pixels and in µm² / µm³,
equivalent diameter, eccentricity (2D) and solidity, and the mean, minimum, maximum
and integrated intensity of every input channel.  Per image (``summary.csv``, one
per run): the count and the mean and median size.  Column names carry their units
(``_px``, ``_um``, ``_um2``, ``_um3``); a physical column is empty where the image
has no pixel size.  :func:`object_columns` and :func:`summary_columns` describe every
column, for the deposition package's table schema.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoodesk.errors import ZooDeskError
from zoodesk.fileutils import atomic_write_text

#: Unit conversion of the OME length units that images carry, to micrometres.
_TO_MICROMETRE = {
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "micrometer": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "pm": 1e-6,
    "Å": 1e-4,
}


def micrometres(
    pixel_sizes: Mapping[str, Sequence[Any]] | None, letters: str
) -> tuple[float, ...] | None:
    """The pixel size along each of ``letters`` in µm, or None unless all are known."""
    if not pixel_sizes:
        return None
    sizes: list[float] = []
    for letter in letters:
        entry = pixel_sizes.get(letter)
        if not entry:
            return None
        value, unit = float(entry[0]), str(entry[1]) if len(entry) > 1 else "µm"
        factor = _TO_MICROMETRE.get(unit.strip())
        if factor is None or not math.isfinite(value) or value <= 0:
            return None
        sizes.append(value * factor)
    return tuple(sizes)


def safe_name(name: str) -> str:
    """A channel name as a column-name part: letters, digits and underscores."""
    cleaned = re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")
    return cleaned or "channel"


def channel_labels(names: Sequence[str] | None, count: int) -> list[str]:
    """Distinct column-name parts for ``count`` channels (``c0``, ``c1``, ... unnamed)."""
    labels: list[str] = []
    for i in range(count):
        base = safe_name(names[i]) if names and i < len(names) and names[i] else f"c{i}"
        label = base
        n = 2
        while label in labels:
            label = f"{base}_{n}"
            n += 1
        labels.append(label)
    return labels


def object_columns(spatial: str, channels: Sequence[str]) -> list[dict[str, str]]:
    """The columns of ``objects.csv``: name, unit and description of each."""
    letters = spatial.lower()
    size_name, unit_power = ("area", "2") if len(spatial) == 2 else ("volume", "3")
    cols: list[dict[str, str]] = [
        {"name": "label", "unit": "", "description": "the object's value in the label image"},
        {"name": "frame", "unit": "", "description": "time point (0 when the image has none)"},
    ]
    for axis in letters:
        cols.append(
            {"name": f"centroid_{axis}_px", "unit": "pixel", "description": f"centroid, {axis}"}
        )
    for axis in letters:
        cols.append(
            {"name": f"centroid_{axis}_um", "unit": "µm", "description": f"centroid, {axis}"}
        )
    for edge in ("min", "max"):
        for axis in letters:
            what = "first pixel" if edge == "min" else "one past the last pixel"
            cols.append(
                {
                    "name": f"bbox_{edge}_{axis}_px",
                    "unit": "pixel",
                    "description": f"bounding box along {axis}: {what}",
                }
            )
    for edge in ("min", "max"):
        for axis in letters:
            cols.append(
                {
                    "name": f"bbox_{edge}_{axis}_um",
                    "unit": "µm",
                    "description": f"bounding box along {axis} ({edge}), physical",
                }
            )
    cols += [
        {"name": f"{size_name}_px", "unit": "pixel", "description": f"{size_name}, pixels"},
        {
            "name": f"{size_name}_um{unit_power}",
            "unit": f"µm{'²' if unit_power == '2' else '³'}",
            "description": f"{size_name}, physical",
        },
        {
            "name": "equivalent_diameter_px",
            "unit": "pixel",
            "description": f"diameter of the {'disc' if len(spatial) == 2 else 'ball'} "
            f"of the same {size_name}",
        },
        {
            "name": "equivalent_diameter_um",
            "unit": "µm",
            "description": "equivalent diameter, physical",
        },
    ]
    if len(spatial) == 2:
        cols.append(
            {
                "name": "eccentricity",
                "unit": "",
                "description": "eccentricity of the ellipse of the same second moments (0 = disc)",
            }
        )
    cols.append(
        {"name": "solidity", "unit": "", "description": "pixels over pixels of the convex hull"}
    )
    for channel in channels:
        for stat, text in (
            ("mean", "mean"),
            ("min", "minimum"),
            ("max", "maximum"),
            ("integrated", "sum"),
        ):
            cols.append(
                {
                    "name": f"{stat}_intensity_{channel}",
                    "unit": "",
                    "description": f"{text} of input channel {channel} over the object's pixels",
                }
            )
    return cols


def summary_columns(spatial: str, channels: Sequence[str]) -> list[dict[str, str]]:
    """The columns of ``summary.csv`` for images of these axes and channels."""
    size_name, power = ("area", "2") if len(spatial) == 2 else ("volume", "3")
    unit = f"µm{'²' if power == '2' else '³'}"
    cols = [
        {"name": "image", "unit": "", "description": "the input's name in the run"},
        {"name": "input", "unit": "", "description": "the input file"},
        {"name": "scene", "unit": "", "description": "scene, position or series of the file"},
        {"name": "frames", "unit": "", "description": "time points segmented"},
        {"name": "count", "unit": "", "description": "objects found (all frames)"},
    ]
    for stat in ("mean", "median"):
        cols.append(
            {
                "name": f"{stat}_{size_name}_px",
                "unit": "pixel",
                "description": f"{stat} {size_name}",
            }
        )
        cols.append(
            {
                "name": f"{stat}_{size_name}_um{power}",
                "unit": unit,
                "description": f"{stat} {size_name}, physical",
            }
        )
    cols.append(
        {
            "name": "mean_equivalent_diameter_um",
            "unit": "µm",
            "description": "mean equivalent diameter, physical",
        }
    )
    for channel in channels:
        cols.append(
            {
                "name": f"mean_intensity_{channel}",
                "unit": "",
                "description": f"mean over objects of their mean intensity in channel {channel}",
            }
        )
    return cols


def measure_object(
    mask: np.ndarray,
    bbox: Sequence[slice],
    label: int,
    frame: int,
    spatial: str,
    micrometre: Sequence[float] | None,
    intensities: Sequence[np.ndarray],
    channels: Sequence[str],
) -> dict[str, Any]:
    """One row of ``objects.csv`` for the object ``mask`` (its bounding box's pixels).

    ``intensities`` are the input channels over the same bounding box.
    """
    from skimage.measure import regionprops

    ndim = mask.ndim
    letters = spatial.lower()
    coords = np.nonzero(mask)
    pixels = int(coords[0].size)
    centroid = [float(c.mean()) + s.start for c, s in zip(coords, bbox, strict=True)]
    row: dict[str, Any] = {"label": label, "frame": frame}
    for axis, value in zip(letters, centroid, strict=True):
        row[f"centroid_{axis}_px"] = value
    for i, axis in enumerate(letters):
        row[f"centroid_{axis}_um"] = centroid[i] * micrometre[i] if micrometre else None
    for i, axis in enumerate(letters):
        row[f"bbox_min_{axis}_px"] = bbox[i].start
    for i, axis in enumerate(letters):
        row[f"bbox_max_{axis}_px"] = bbox[i].stop
    for edge in ("min", "max"):
        for i, axis in enumerate(letters):
            px = bbox[i].start if edge == "min" else bbox[i].stop
            row[f"bbox_{edge}_{axis}_um"] = px * micrometre[i] if micrometre else None
    size_name, power = ("area", 2) if ndim == 2 else ("volume", 3)
    voxel = math.prod(micrometre) if micrometre else None
    row[f"{size_name}_px"] = pixels
    row[f"{size_name}_um{power}"] = pixels * voxel if voxel else None
    if ndim == 2:
        diameter = 2 * math.sqrt(pixels / math.pi)
        diameter_um = 2 * math.sqrt(pixels * voxel / math.pi) if voxel else None
    else:
        diameter = (6 * pixels / math.pi) ** (1 / 3)
        diameter_um = (6 * pixels * voxel / math.pi) ** (1 / 3) if voxel else None
    row["equivalent_diameter_px"] = diameter
    row["equivalent_diameter_um"] = diameter_um
    region = regionprops(mask.astype(np.uint8), spacing=micrometre or (1.0,) * ndim)[0]
    if ndim == 2:
        row["eccentricity"] = float(region.eccentricity)
    try:
        row["solidity"] = float(region.solidity)
    except (ValueError, RuntimeError, IndexError, ZeroDivisionError):
        # A flat or one-pixel object has no convex hull of its dimension.
        row["solidity"] = None
    except Exception as exc:  # scipy's Qhull errors have no public base class
        if type(exc).__name__ != "QhullError":
            raise
        row["solidity"] = None
    for channel, values in zip(channels, intensities, strict=True):
        inside = np.asarray(values)[mask]
        row[f"mean_intensity_{channel}"] = float(inside.mean(dtype=np.float64))
        row[f"min_intensity_{channel}"] = float(inside.min())
        row[f"max_intensity_{channel}"] = float(inside.max())
        row[f"integrated_intensity_{channel}"] = float(inside.sum(dtype=np.float64))
    return row


def summarize(
    rows: Sequence[Mapping[str, Any]], spatial: str, channels: Sequence[str]
) -> dict[str, Any]:
    """Count, mean and median size (and mean intensity per channel) of one image's objects."""
    size_name, power = ("area", 2) if len(spatial) == 2 else ("volume", 3)
    out: dict[str, Any] = {"count": len(rows)}
    px = np.array([r[f"{size_name}_px"] for r in rows], dtype=float)
    phys = [r[f"{size_name}_um{power}"] for r in rows]
    out[f"mean_{size_name}_px"] = float(px.mean()) if len(px) else None
    out[f"median_{size_name}_px"] = float(np.median(px)) if len(px) else None
    known = len(rows) > 0 and all(v is not None for v in phys)
    values = np.array(phys, dtype=float) if known else None
    out[f"mean_{size_name}_um{power}"] = float(values.mean()) if values is not None else None
    out[f"median_{size_name}_um{power}"] = float(np.median(values)) if values is not None else None
    diameters = [r["equivalent_diameter_um"] for r in rows]
    out["mean_equivalent_diameter_um"] = (
        float(np.mean(diameters)) if rows and all(d is not None for d in diameters) else None
    )
    for channel in channels:
        key = f"mean_intensity_{channel}"
        means = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(means)) if means else None
    return out


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return value


def write_table(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write a CSV table (UTF-8, header row, empty cells for unknown values), atomically."""
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    atomic_write_text(path, buffer.getvalue())


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Read back a table written by :func:`write_table`: its columns and its rows.

    Cells stay text (empty where a value is unknown).  Raises :class:`ZooDeskError`
    naming the file when it cannot be read or has no header row.
    """
    try:
        with Path(path).open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ZooDeskError(f"{path}: cannot read the table ({exc})") from exc
    if not columns:
        raise ZooDeskError(f"{path}: empty file, not a table with a header row")
    return columns, rows


def numbers(rows: Iterable[Mapping[str, Any]], column: str) -> np.ndarray:
    """One column of text rows as float64; NaN where a cell is empty or not a number."""
    values: list[float] = []
    for row in rows:
        try:
            values.append(float(row.get(column) or "nan"))
        except (TypeError, ValueError):
            values.append(math.nan)
    return np.array(values, dtype=np.float64)


def histogram(values: np.ndarray, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges of ``bins`` equal bins spanning the finite values.

    As :func:`numpy.histogram` (the last bin includes its right edge); NaN and
    infinite values are left out.  With no finite value: ``bins`` empty bins over
    [0, 1].
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(bins, dtype=np.int64), np.linspace(0.0, 1.0, bins + 1)
    counts, edges = np.histogram(finite, bins=bins)
    return counts, edges
