"""Turning image arrays into RGB pictures for the screen (numpy only, no Qt).

Display choices live here: which plane of an N-dimensional image is shown,
contrast limits, a colour per label, and how an output is laid over its input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Colour of probability maps and binary masks laid over an image (magenta reads
#: well over grey on both light and dark backgrounds).
OVERLAY_RGB = (255, 0, 200)
#: Outline of the object picked on a picture.
HIGHLIGHT_RGB = (255, 255, 255)
#: Output kinds drawn as labels: the model's own integer outputs and the objects made
#: from an output.
LABEL_KINDS = ("labels", "instance-labels")


def plane(array: Any, axes: str, index: Mapping[str, int] | None = None) -> np.ndarray:
    """The Y-X plane to show: ``(H, W)``, or ``(H, W, 3)`` for RGB samples.

    Other axes are taken at ``index[letter]`` (default: the middle); a channel axis
    (``C``) defaults to the first channel.  ``array`` may be anything indexed like a
    NumPy array (a memory map, tiles decoded on demand, a Dask array): only the plane
    is read.
    """
    axes = axes.upper()
    index = dict(index or {})
    shape = tuple(int(n) for n in array.shape)
    keep = [a for a in axes if a in "YX"]
    rgb = "S" in axes and shape[axes.index("S")] in (3, 4)
    if rgb:
        keep.append("S")
    selection: list[int | slice] = []
    for letter, n in zip(axes, shape, strict=True):
        if letter in keep:
            selection.append(slice(None))
        else:
            default = 0 if letter in "CS" else n // 2
            selection.append(int(min(max(index.get(letter, default), 0), n - 1)))
    # Index before converting: a memory-mapped, tiled or chunked array then reads
    # only the plane shown, not the whole stack.
    picked = np.asarray(array[tuple(selection)])
    remaining = [a for a in axes if a in keep]
    order = [remaining.index(a) for a in ("Y", "X", "S") if a in remaining]
    picked = np.transpose(picked, order)
    if picked.ndim == 1:
        picked = picked[np.newaxis, :]
    if rgb:
        picked = picked[..., :3]
    return np.asarray(picked)


def shown_index(axes: str, shape: tuple[int, ...], letter: str) -> int:
    """The index along ``letter`` of the plane :func:`plane` shows by default (0 if absent)."""
    axes = axes.upper()
    if letter not in axes:
        return 0
    return 0 if letter in "CS" else int(shape[axes.index(letter)]) // 2


def follow(
    position: Mapping[str, int], sizes: Mapping[str, int], axes: str, shape: tuple[int, ...]
) -> dict[str, int]:
    """Where an image of ``axes`` and ``shape`` (an output) is at the Z and T of
    ``position`` in an image of ``sizes`` (its input).

    The same index when both have the axis at the same length; the index scaled to
    the other length when the model changed it; axes it lacks are left out.
    """
    own = dict(zip(axes.upper(), (int(n) for n in shape), strict=True))
    found: dict[str, int] = {}
    for letter in "ZT":
        if letter not in position or letter not in own:
            continue
        index, length = int(position[letter]), own[letter]
        source = int(sizes.get(letter, length)) or 1
        if source != length:
            index = index * length // source
        found[letter] = min(max(index, 0), length - 1)
    return found


#: Metres per length unit, for the units a scale bar can use (OME spellings).
_METRES = {"pm": 1e-12, "Å": 1e-10, "nm": 1e-9, "µm": 1e-6, "mm": 1e-3, "cm": 1e-2, "m": 1.0}
#: The units a scale bar's label uses, largest first.
_LABEL_UNITS = ("m", "mm", "µm", "nm", "pm")


def length_text(metres: float) -> str:
    """A length in the largest unit that keeps it at 1 or more: ``"20 µm"``, ``"1.5 mm"``."""
    for unit in _LABEL_UNITS:
        factor = _METRES[unit]
        if metres >= factor * (1 - 1e-9) or unit == _LABEL_UNITS[-1]:
            return f"{round(metres / factor, 6):g} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def physical_text(pixels: float, pixel_size: tuple[float, str] | None) -> str:
    """``pixels`` times a pixel size, with its unit (``"12.3 µm"``); "" when unknown."""
    if pixel_size is None:
        return ""
    size, unit = pixel_size
    return f"{pixels * size:.4g} {unit}"


def nice_length(value: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is at most ``value``."""
    base = 10.0 ** math.floor(math.log10(value))
    return max(m * base for m in (1, 2, 5) if m * base <= value * (1 + 1e-9))


def scale_bar(
    pixel_size: tuple[float, str] | None, zoom: float, target: float = 100.0
) -> tuple[float, str] | None:
    """A scale bar of a round length close to ``target`` screen pixels long.

    Parameters
    ----------
    pixel_size
        The image's X pixel size and its unit (``(0.65, "µm")``), or None.
    zoom
        Screen pixels per image pixel.
    target
        The longest the bar may be on screen.

    Returns
    -------
    tuple or None
        The bar's length in image pixels and its label (``"50 µm"``); None when the
        pixel size is unknown or not a length.
    """
    if pixel_size is None or zoom <= 0:
        return None
    size, unit = pixel_size
    metres = _METRES.get(unit)
    if metres is None or not (math.isfinite(size) and size > 0):
        return None
    length = nice_length(target / zoom * size * metres)
    return length / (size * metres), length_text(length)


def plane_histogram(data: np.ndarray, bins: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Counts of a plane's finite values over ``bins`` bins from its minimum to its
    maximum (a sample of big planes), and the bins' edges."""
    flat = np.asarray(data).ravel()
    if flat.size > 4_000_000:
        flat = flat[:: flat.size // 4_000_000]
    if np.issubdtype(flat.dtype, np.floating):
        flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:
        hi = lo + 1.0
    counts, edges = np.histogram(flat, bins=bins, range=(lo, hi))
    return counts.astype(np.int64), edges


def value_at(data: np.ndarray, picture_shape: tuple[int, ...], y: int, x: int) -> Any:
    """The value of ``data`` under pixel (y, x) of a picture of ``picture_shape`` that
    it is drawn over (resized as :func:`overlay` does): a number, or an array of the
    samples of an RGB plane; None outside the picture."""
    height, width = int(picture_shape[0]), int(picture_shape[1])
    if not (0 <= y < height and 0 <= x < width):
        return None
    values = np.asarray(data)
    row = min(y * values.shape[0] // max(height, 1), values.shape[0] - 1)
    col = min(x * values.shape[1] // max(width, 1), values.shape[1] - 1)
    found = values[row, col]
    return found if np.ndim(found) else found.item()


def number_text(value: Any) -> str:
    """A pixel value for the readout: whole numbers as they are, others to 4 digits."""
    if value is None:
        return ""
    if np.ndim(value):
        return "(" + ", ".join(number_text(v) for v in np.asarray(value).tolist()) + ")"
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)) or float(value).is_integer():
        return str(int(value))
    return f"{float(value):.4g}"


def auto_limits(data: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Contrast limits from percentiles of the finite values (a sample of big images)."""
    flat = np.asarray(data).ravel()
    if flat.size > 1_000_000:
        flat = flat[:: flat.size // 1_000_000]
    flat = flat[np.isfinite(flat)] if np.issubdtype(flat.dtype, np.floating) else flat
    if flat.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(flat, (low, high)))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def to_gray8(data: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """Scale to 0..255 between the contrast limits."""
    lo, hi = limits
    scaled = (np.asarray(data, dtype=np.float32) - lo) / max(hi - lo, 1e-12)
    return (np.clip(np.nan_to_num(scaled), 0.0, 1.0) * 255).astype(np.uint8)


def to_rgb(data: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 picture of a plane from :func:`plane`."""
    gray = to_gray8(data, limits)
    if gray.ndim == 3:
        return np.ascontiguousarray(gray)
    return np.ascontiguousarray(np.repeat(gray[..., np.newaxis], 3, axis=2))


def label_colours(labels: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 colour per label value; label 0 (background) is black.

    Colours come from a fixed hash of the label, so a label keeps its colour from
    image to image, and neighbouring labels get clearly different hues.
    """
    values = np.asarray(labels).astype(np.int64, copy=False)
    golden = 0.618033988749895
    hue = (values * golden) % 1.0
    rgb = _hsv_to_rgb(hue, np.full(hue.shape, 0.75), np.full(hue.shape, 1.0))
    rgb[values == 0] = 0
    return (rgb * 255).astype(np.uint8)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6).astype(np.int64) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [
        np.stack(c, axis=-1)
        for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    ]
    out = np.zeros((*h.shape, 3), dtype=np.float64)
    for k, c in enumerate(choices):
        out[i == k] = c[i == k]
    return out


@dataclass(frozen=True)
class OverlayStyle:
    """How an output is drawn over its input.

    Attributes
    ----------
    opacity
        0 shows only the input, 1 only the output where it is drawn.
    colour_labels
        Labels: one colour per label (True) or one colour for all (False).
    outlines
        Labels: only the pixels on each object's edge are drawn.
    limits
        Contrast limits of the output (probabilities and images).
    """

    opacity: float = 0.5
    colour_labels: bool = True
    limits: tuple[float, float] | None = None
    outlines: bool = False


def overlay(base_rgb: np.ndarray, output: np.ndarray, kind: str, style: OverlayStyle) -> np.ndarray:
    """Lay an output plane over an ``(H, W, 3)`` picture of its input.

    ``kind`` is the run record's output kind: ``labels`` (integer masks),
    ``instance-labels`` (objects), ``probabilities`` or ``image``.  The output is
    resized (nearest neighbour) to the input's picture if the model changed the
    resolution.
    """
    out = _fit(np.asarray(output), base_rgb.shape[:2])
    base = base_rgb.astype(np.float32)
    opacity = float(np.clip(style.opacity, 0.0, 1.0))
    if kind in LABEL_KINDS:
        mask = outline_mask(out) if style.outlines else out != 0
        if style.colour_labels and np.max(out, initial=0) > 1:
            colour = label_colours(out).astype(np.float32)
        else:
            colour = np.broadcast_to(np.array(OVERLAY_RGB, np.float32), base.shape)
        alpha = mask[..., np.newaxis] * opacity
        blended = base * (1 - alpha) + colour * alpha
    elif kind == "probabilities":
        limits = style.limits or (0.0, 1.0)
        weight = to_gray8(out, limits).astype(np.float32)[..., np.newaxis] / 255.0
        alpha = weight * opacity
        blended = base * (1 - alpha) + np.array(OVERLAY_RGB, np.float32) * alpha
    else:
        limits = style.limits or auto_limits(out)
        picture = to_rgb(out, limits).astype(np.float32)
        blended = base * (1 - opacity) + picture * opacity
    return np.ascontiguousarray(np.clip(blended, 0, 255).astype(np.uint8))


def outline_mask(labels: np.ndarray) -> np.ndarray:
    """True on the pixels of each object that touch another value (4-neighbours).

    Where two objects touch, both edges are marked, each in its own colour; the
    border of the picture does not count as an edge.
    """
    values = np.asarray(labels)
    edge = np.zeros(values.shape, dtype=bool)
    rows = values[1:, :] != values[:-1, :]
    edge[1:, :] |= rows
    edge[:-1, :] |= rows
    cols = values[:, 1:] != values[:, :-1]
    edge[:, 1:] |= cols
    edge[:, :-1] |= cols
    return edge & (values != 0)


def highlight(picture: np.ndarray, labels: np.ndarray, label: int) -> np.ndarray:
    """The picture with the outline of object ``label`` drawn in :data:`HIGHLIGHT_RGB`."""
    out = _fit(np.asarray(labels), picture.shape[:2])
    edge = outline_mask(out == label)
    marked = np.array(picture, copy=True)
    marked[edge] = HIGHLIGHT_RGB
    return marked


def label_at(labels: np.ndarray, picture_shape: tuple[int, ...], y: int, x: int) -> int:
    """The label under pixel (y, x) of a picture of ``picture_shape`` that ``labels`` is
    drawn over (resized as :func:`overlay` does); 0 outside the picture."""
    data = np.asarray(labels)
    if data.ndim == 3:
        data = data[..., 0]
    found = value_at(data, picture_shape, y, x)
    return 0 if found is None else int(found)


def _fit(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if data.ndim == 3:
        data = data[..., 0]
    if data.shape == tuple(shape):
        return data
    rows = (np.arange(shape[0]) * data.shape[0] // max(shape[0], 1)).clip(0, data.shape[0] - 1)
    cols = (np.arange(shape[1]) * data.shape[1] // max(shape[1], 1)).clip(0, data.shape[1] - 1)
    return data[np.ix_(rows, cols)]
