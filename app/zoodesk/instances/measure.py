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
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from zoodesk.errors import CancelledError, ZooDeskError
from zoodesk.fileutils import atomic_path

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


#: Objects are measured in batches of about this many pixels, so that the per-pixel
#: arrays of a frame with very many objects stay small.
BATCH_PIXELS = 1 << 21

#: Convexity passes over all objects at once before the remaining ones are finished
#: one by one (a pass removes every point that is not a hull vertex locally).
_HULL_PASSES = 32

IntensitySource = Callable[[tuple[slice, ...]], Sequence[np.ndarray]] | Sequence[np.ndarray]


def measure_objects(
    objects: Sequence[tuple[Sequence[slice], np.ndarray]],
    frame: int,
    spatial: str,
    micrometre: Sequence[float] | None,
    channels: Sequence[str],
    intensities: IntensitySource | None = None,
    *,
    first_label: int = 1,
    cancelled: Callable[[], bool] = lambda: False,
    batch_pixels: int = BATCH_PIXELS,
) -> dict[str, np.ndarray]:
    """The ``objects.csv`` columns of one frame's objects (``first_label``, ``+1``, ...).

    ``objects`` are ``(bbox, mask)`` pairs, the mask over its bounding box.
    ``intensities`` gives the input channels: a function reading them over a region,
    or the channels over the whole frame.  Integer columns are int64, the others
    float64 with NaN where a value is unknown (an empty cell).  The figures are those
    of :func:`measure_object`, computed for all objects at once (in batches of
    about ``batch_pixels`` bounding-box pixels; the figures do not depend on it).
    """
    names = [c["name"] for c in object_columns(spatial, channels)]
    parts: list[dict[str, np.ndarray]] = []
    start = 0
    while start < len(objects):
        stop, pixels = start, 0
        while stop < len(objects) and (stop == start or pixels < batch_pixels):
            pixels += int(objects[stop][1].size)
            stop += 1
        if cancelled():
            raise CancelledError
        parts.append(
            _measure_batch(
                objects[start:stop], frame, spatial, micrometre, channels, intensities,
                first_label + start,
            )
        )  # fmt: skip
        start = stop
    if not parts:
        return {n: np.zeros(0, dtype=_dtype_of(n)) for n in names}
    return {n: np.concatenate([p[n] for p in parts]) for n in names}


def _dtype_of(name: str) -> type:
    integer = name in ("label", "frame", "area_px", "volume_px") or (
        name.startswith("bbox_") and name.endswith("_px")
    )
    return np.int64 if integer else np.float64


def _measure_batch(
    objects: Sequence[tuple[Sequence[slice], np.ndarray]],
    frame: int,
    spatial: str,
    micrometre: Sequence[float] | None,
    channels: Sequence[str],
    intensities: IntensitySource | None,
    first_label: int,
) -> dict[str, np.ndarray]:
    n = len(objects)
    ndim = len(spatial)
    letters = spatial.lower()
    starts = np.array([[s.start for s in bbox] for bbox, _ in objects], dtype=np.int64)
    stops = np.array([[s.stop for s in bbox] for bbox, _ in objects], dtype=np.int64)
    found = [np.nonzero(mask) for _, mask in objects]
    counts = np.array([f[0].size for f in found], dtype=np.int64)
    if not counts.all():
        raise ValueError("an object without pixels cannot be measured")
    offsets = np.zeros(n, dtype=np.int64)
    np.cumsum(counts[:-1], out=offsets[1:])
    # Pixel coordinates within each object's bounding box, object after object, each
    # object's in raster order (as np.nonzero gives them).
    local = [np.concatenate([f[a] for f in found]) for a in range(ndim)]
    ids = np.repeat(np.arange(n), counts)
    out: dict[str, np.ndarray] = {
        "label": np.arange(first_label, first_label + n, dtype=np.int64),
        "frame": np.full(n, frame, dtype=np.int64),
    }
    unknown = np.full(n, np.nan)
    # The mean of whole numbers is exact in float64, whatever the order of summing.
    centroid = [
        np.add.reduceat(local[a], offsets).astype(np.float64) / counts + starts[:, a]
        for a in range(ndim)
    ]
    for a, axis in enumerate(letters):
        out[f"centroid_{axis}_px"] = centroid[a]
    for a, axis in enumerate(letters):
        out[f"centroid_{axis}_um"] = centroid[a] * micrometre[a] if micrometre else unknown
    for a, axis in enumerate(letters):
        out[f"bbox_min_{axis}_px"] = starts[:, a]
    for a, axis in enumerate(letters):
        out[f"bbox_max_{axis}_px"] = stops[:, a]
    for edge, edges in (("min", starts), ("max", stops)):
        for a, axis in enumerate(letters):
            out[f"bbox_{edge}_{axis}_um"] = edges[:, a] * micrometre[a] if micrometre else unknown
    size_name, power = ("area", 2) if ndim == 2 else ("volume", 3)
    voxel = math.prod(micrometre) if micrometre else None
    out[f"{size_name}_px"] = counts
    out[f"{size_name}_um{power}"] = counts * voxel if voxel else unknown
    if ndim == 2:
        out["equivalent_diameter_px"] = 2 * np.sqrt(counts / math.pi)
        out["equivalent_diameter_um"] = 2 * np.sqrt(counts * voxel / math.pi) if voxel else unknown
    else:
        # Python's power, as for one object (NumPy's may differ in the last bit).
        pixels = counts.tolist()
        out["equivalent_diameter_px"] = np.array([(6 * p / math.pi) ** (1 / 3) for p in pixels])
        out["equivalent_diameter_um"] = (
            np.array([(6 * p * voxel / math.pi) ** (1 / 3) for p in pixels]) if voxel else unknown
        )
    spacing = tuple(float(s) for s in micrometre) if micrometre else (1.0,) * ndim
    if ndim == 2:
        out["eccentricity"] = _eccentricity(local, ids, offsets, counts, spacing)
        out["solidity"] = _solidity_2d(local, ids, counts, spacing)
    else:
        out["solidity"] = np.array(
            [_solidity_regionprops(mask, spacing) for _, mask in objects], dtype=np.float64
        )
    if channels:
        values = _gather(objects, found, local, starts, counts, intensities, len(channels))
        for channel, v in zip(channels, values, strict=True):
            if v.dtype == np.bool_ or (v.dtype.kind in "iu" and v.dtype.itemsize <= 2):
                # Sums of whole numbers below 2**53 are exact in any order (16-bit
                # values over 2**27 pixels stay below).
                total = np.add.reduceat(v.astype(np.float64), offsets)
            else:
                ends = offsets + counts
                total = np.array(
                    [
                        v[a:b].sum(dtype=np.float64)
                        for a, b in zip(offsets.tolist(), ends.tolist(), strict=True)
                    ],
                    dtype=np.float64,
                )
            out[f"mean_intensity_{channel}"] = total / counts
            out[f"min_intensity_{channel}"] = np.minimum.reduceat(v, offsets).astype(np.float64)
            out[f"max_intensity_{channel}"] = np.maximum.reduceat(v, offsets).astype(np.float64)
            out[f"integrated_intensity_{channel}"] = total
    return out


def _gather(
    objects: Sequence[tuple[Sequence[slice], np.ndarray]],
    found: Sequence[tuple[np.ndarray, ...]],
    local: Sequence[np.ndarray],
    starts: np.ndarray,
    counts: np.ndarray,
    intensities: IntensitySource | None,
    channels: int,
) -> list[np.ndarray]:
    """Each channel's values at the objects' pixels, in the order of ``local``."""
    if intensities is None:
        raise ValueError("channels to measure, but no intensities")
    if callable(intensities):
        per_channel: list[list[np.ndarray]] = [[] for _ in range(channels)]
        for bbox, mask in objects:
            read = intensities(tuple(bbox))
            for c in range(channels):
                per_channel[c].append(np.asarray(read[c])[mask])
        return [np.concatenate(p) for p in per_channel]
    where = tuple(
        local[a] + np.repeat(starts[:, a], counts) for a in range(len(local))
    )  # global coordinates
    return [np.asarray(intensities[c])[where] for c in range(channels)]


def _eccentricity(
    local: Sequence[np.ndarray],
    ids: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    spacing: Sequence[float],
) -> np.ndarray:
    """Eccentricity of the ellipse with the objects' second moments (0 for a disc)."""
    n = len(counts)
    d = []
    for a in range(2):
        mean = np.add.reduceat(local[a], offsets).astype(np.float64) / counts
        d.append((local[a] - mean[ids]) * spacing[a])
    a_ = np.bincount(ids, d[0] * d[0], minlength=n)
    c_ = np.bincount(ids, d[1] * d[1], minlength=n)
    b_ = np.bincount(ids, d[0] * d[1], minlength=n)
    # Eigenvalues of the inertia tensor: l1, l2 = m +- r.  1 - l2 / l1 is written as
    # 2 r / l1, which keeps a disc at exactly 0 instead of a rounding error.
    m = (a_ + c_) / 2
    r = np.hypot((a_ - c_) / 2, b_)
    l1 = m + r
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.minimum(1.0, 2 * r / l1)
    return np.where(l1 > 0, np.sqrt(np.where(l1 > 0, ratio, 0.0)), 0.0)


def _solidity_2d(
    local: Sequence[np.ndarray], ids: np.ndarray, counts: np.ndarray, spacing: Sequence[float]
) -> np.ndarray:
    """Pixels over the pixels of the convex hull, for 2D objects, all at once.

    The hull is that of the pixels' edge midpoints (each pixel as a diamond of half a
    pixel), and its pixels are the pixel centres inside it or on its boundary: what
    scikit-image's ``convex_hull_image`` gives, counted exactly in integers.  The
    hull's left (right) side is the lower (upper) convex envelope of each row's
    leftmost (rightmost) pixel; coordinates are doubled so that every point is whole.
    """
    y, x = local
    n = len(counts)
    total = len(y)
    new_row = np.ones(total, dtype=bool)
    new_row[1:] = (ids[1:] != ids[:-1]) | (y[1:] != y[:-1])
    first = np.flatnonzero(new_row)
    last = np.append(first[1:], total) - 1
    row_obj, row_y = ids[first], y[first].astype(np.int64)
    left, right = x[first].astype(np.int64), x[last].astype(np.int64)
    # Rows of pixel centres to count: each object's rows from its first to its last.
    obj_start = np.flatnonzero(np.r_[True, row_obj[1:] != row_obj[:-1]])
    obj_end = np.r_[obj_start[1:], len(row_obj)] - 1
    top, span = row_y[obj_start], row_y[obj_end] - row_y[obj_start] + 1
    q_obj = np.repeat(np.arange(n), span)
    q_row = np.repeat(top, span) + np.arange(len(q_obj)) - np.repeat(np.cumsum(span) - span, span)
    q_y = 2 * q_row + 1  # doubled, and shifted by one: a row's top edge is at 2 row
    scale = 2 * int(row_y.max()) + 4
    bounds = []
    for side, xs in ((-1, left), (1, right)):
        # Per row: the left (right) pixel's outer midpoint, and its top and bottom.
        py = np.stack([2 * row_y, 2 * row_y + 1, 2 * row_y + 2], axis=1).ravel()
        px = np.stack([2 * xs, 2 * xs + side, 2 * xs], axis=1).ravel()
        pobj = np.repeat(row_obj, 3)
        # One point per height: a bottom edge and the next row's top edge meet.
        keep = np.ones(len(py), dtype=bool)
        keep[1:] = (pobj[1:] != pobj[:-1]) | (py[1:] != py[:-1])
        starts = np.flatnonzero(keep)
        reduce = np.minimum if side < 0 else np.maximum
        py, pobj, px = py[starts], pobj[starts], reduce.reduceat(px, starts)
        vy, vx, vobj = _envelope(py, px, pobj, side)
        key = vobj * scale + vy
        q_key = q_obj * scale + q_y
        j = np.searchsorted(key, q_key, side="right") - 1
        y0, x0, y1, x1 = vy[j], vx[j], vy[j + 1], vx[j + 1]
        # The side's x at q_y is x0 + (q_y - y0) (x1 - x0) / (y1 - y0); pixel centres
        # are at even x: columns from ceil(x / 2) (left) to floor(x / 2) (right).
        num = x0 * (y1 - y0) + (q_y - y0) * (x1 - x0)
        den = 2 * (y1 - y0)
        bounds.append(-((-num) // den) if side < 0 else num // den)
    hull = np.bincount(q_obj, bounds[1] - bounds[0] + 1, minlength=n).astype(np.int64)
    area = float(np.prod(np.asarray(spacing, dtype=np.float64)))
    return (counts * area) / (hull * area)


def _envelope(
    py: np.ndarray, px: np.ndarray, pobj: np.ndarray, side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The vertices of each object's lower (side -1) or upper (side 1) convex envelope
    of the points ``(py, px)`` (y strictly increasing within an object)."""
    for _ in range(_HULL_PASSES):
        inner = np.zeros(len(py), dtype=bool)
        inner[1:-1] = (pobj[:-2] == pobj[1:-1]) & (pobj[1:-1] == pobj[2:])
        i = np.flatnonzero(inner)
        if not len(i):
            return py, px, pobj
        # A point on or beyond the chord of its neighbours is no vertex of the hull.
        chord = px[i - 1] * (py[i + 1] - py[i]) + px[i + 1] * (py[i] - py[i - 1])
        mine = px[i] * (py[i + 1] - py[i - 1])
        drop = mine >= chord if side < 0 else mine <= chord
        if not drop.any():
            return py, px, pobj
        keep = np.ones(len(py), dtype=bool)
        keep[i[drop]] = False
        py, px, pobj = py[keep], px[keep], pobj[keep]
    # What is left after the passes: a monotone chain per object.
    vy: list[int] = []
    vx: list[int] = []
    vo: list[int] = []
    for y, x, o in zip(py.tolist(), px.tolist(), pobj.tolist(), strict=True):
        while len(vo) >= 2 and vo[-1] == o and vo[-2] == o:
            cross = (vx[-1] - vx[-2]) * (y - vy[-2]) - (x - vx[-2]) * (vy[-1] - vy[-2])
            if not ((cross >= 0) if side < 0 else (cross <= 0)):
                break
            del vy[-1], vx[-1], vo[-1]
        vy.append(y)
        vx.append(x)
        vo.append(o)
    return np.array(vy, dtype=np.int64), np.array(vx, dtype=np.int64), np.array(vo)


def _solidity_regionprops(mask: np.ndarray, spacing: Sequence[float]) -> float:
    from skimage.measure import regionprops

    region = regionprops(mask.astype(np.uint8), spacing=spacing)[0]
    try:
        return float(region.solidity)
    except (ValueError, RuntimeError, IndexError, ZeroDivisionError):
        # A flat or one-pixel object has no convex hull of its dimension.
        return math.nan
    except Exception as exc:  # scipy's Qhull errors have no public base class
        if type(exc).__name__ != "QhullError":
            raise
        return math.nan


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
    columns = measure_objects(
        [(bbox, mask)],
        frame,
        spatial,
        micrometre,
        channels,
        lambda _region: intensities,
        first_label=label,
    )
    return {k: _python(v[0]) for k, v in columns.items()}


def _python(value: Any) -> Any:
    """A table value as Python: None for unknown (NaN)."""
    item = value.item()
    return None if isinstance(item, float) and math.isnan(item) else item


#: Rows an :class:`ObjectTable` keeps as numbers; beyond, older rows wait as CSV text
#: in a temporary file, so that a frame with very many objects keeps only the columns
#: of its summary in memory.
SPILL_ROWS = 1 << 14


class ObjectTable:
    """The rows of one image's ``objects.csv``, kept as columns (one array each).

    Past ``spill_rows`` rows, the rows added so far are written out as CSV text to a
    temporary file (deleted on :meth:`close` or with the table); the summary's
    columns stay in memory, the others can then no longer be read back by
    :meth:`column`.
    """

    def __init__(self, spatial: str, channels: Sequence[str], spill_rows: int | None = None):
        self.spatial = spatial
        self.channels = list(channels)
        self.names = [c["name"] for c in object_columns(spatial, channels)]
        self._kept: dict[str, list[np.ndarray]] = {
            n: [] for n in _summary_inputs(spatial, self.channels)
        }
        self._parts: list[Mapping[str, np.ndarray]] = []
        self._pending = 0
        self._count = 0
        self._spill_rows = SPILL_ROWS if spill_rows is None else spill_rows
        self._spill: IO[str] | None = None

    def add(self, columns: Mapping[str, np.ndarray]) -> None:
        """Append rows given as columns (from :func:`measure_objects`)."""
        rows = len(columns["label"])
        self._parts.append(columns)
        for name, kept in self._kept.items():
            kept.append(columns[name])
        self._pending += rows
        self._count += rows
        if self._pending >= self._spill_rows:
            if self._spill is None:
                self._spill = tempfile.TemporaryFile(  # noqa: SIM115 (closed by close())
                    "w+", encoding="utf-8", newline="", prefix="zoodesk-objects-"
                )
            csv.writer(self._spill, lineterminator="\n").writerows(self._lines())
            self._parts, self._pending = [], 0
            for kept in self._kept.values():
                kept[:] = [np.concatenate(kept)]

    def _lines(self) -> Iterator[Sequence[str]]:
        for part in self._parts:
            cells = [_cells(part[name]) for name in self.names]
            yield from zip(*cells, strict=True)

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        """Delete the temporary file of the rows written out, if any."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def column(self, name: str) -> np.ndarray:
        """All values of one column (those of the summary, once rows are written out)."""
        if name in self._kept:
            parts = self._kept[name]
        elif self._spill is not None:
            raise KeyError(f"column {name!r}: its rows are written out")
        else:
            parts = [p[name] for p in self._parts]
        if not parts:
            return np.zeros(0, dtype=_dtype_of(name))
        return np.concatenate(parts)

    def write(self, path: Path) -> None:
        """Write the table as CSV, as :func:`write_table` writes the same rows."""
        spilled = self._spill
        with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(self.names)
            if spilled is not None:
                spilled.flush()
                spilled.seek(0)
                shutil.copyfileobj(spilled, fh, 1 << 20)
                spilled.seek(0, os.SEEK_END)
            writer.writerows(self._lines())
            fh.flush()
            os.fsync(fh.fileno())

    def summary(self) -> dict[str, Any]:
        """:func:`summarize` of the table's rows."""
        return _summary({n: self.column(n) for n in _summary_inputs(self.spatial, self.channels)},
                        len(self), self.spatial, self.channels)  # fmt: skip


def _cells(values: np.ndarray) -> list[str]:
    """A column's CSV cells: whole numbers as they are, floats as repr, NaN and ± inf empty."""
    items = values.tolist()
    if values.dtype.kind in "iu":
        return [str(v) for v in items]
    return [repr(v) if math.isfinite(v) else "" for v in items]


def _summary_inputs(spatial: str, channels: Sequence[str]) -> list[str]:
    size_name, power = ("area", 2) if len(spatial) == 2 else ("volume", 3)
    return [
        f"{size_name}_px",
        f"{size_name}_um{power}",
        "equivalent_diameter_um",
        *(f"mean_intensity_{c}" for c in channels),
    ]


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


def _summary(
    columns: Mapping[str, np.ndarray], count: int, spatial: str, channels: Sequence[str]
) -> dict[str, Any]:
    """:func:`summarize` from columns, where NaN stands for an unknown (None) value."""
    size_name, power = ("area", 2) if len(spatial) == 2 else ("volume", 3)
    out: dict[str, Any] = {"count": count}
    px = columns[f"{size_name}_px"].astype(np.float64)
    out[f"mean_{size_name}_px"] = float(px.mean()) if count else None
    out[f"median_{size_name}_px"] = float(np.median(px)) if count else None
    phys = columns[f"{size_name}_um{power}"].astype(np.float64)
    known = count > 0 and not np.isnan(phys).any()
    out[f"mean_{size_name}_um{power}"] = float(phys.mean()) if known else None
    out[f"median_{size_name}_um{power}"] = float(np.median(phys)) if known else None
    diameters = columns["equivalent_diameter_um"].astype(np.float64)
    out["mean_equivalent_diameter_um"] = (
        float(np.mean(diameters)) if count and not np.isnan(diameters).any() else None
    )
    for channel in channels:
        key = f"mean_intensity_{channel}"
        means = columns[key].astype(np.float64)
        out[key] = float(np.mean(means)) if count else None
    return out


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return value


def write_table(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write a CSV table (UTF-8, header row, empty cells for unknown values), atomically."""
    names = list(columns)
    _write_csv(path, names, ([_cell(row.get(k)) for k in names] for row in rows))


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


def _write_csv(path: Path, names: Sequence[str], lines: Iterable[Sequence[Any]]) -> None:
    """Header and lines, streamed to a temporary file that then replaces ``path``."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(lines)
        fh.flush()
        os.fsync(fh.fileno())
