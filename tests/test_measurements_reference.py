"""The measurements equal scikit-image's regionprops, object for object.

ZooDesk measures all objects of a frame at once (vectorised); these tests compare
every figure with ``skimage.measure.regionprops`` run on each object alone, on shapes
drawn here: discs, ellipses, rings, concave shapes, lines, single pixels, 3D balls,
with anisotropic pixel sizes and two intensity channels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk, ellipse, polygon
from skimage.measure import regionprops

from zoodesk.instances.measure import measure_objects


def _objects_2d() -> np.ndarray:
    labels = np.zeros((200, 220), dtype=np.int32)
    rng = np.random.default_rng(3)
    k = 0
    for cy in range(20, 200, 45):
        for cx in range(20, 220, 50):
            k += 1
            kind = k % 6
            if kind == 0:
                rr, cc = disk((cy, cx), rng.uniform(3, 15), shape=labels.shape)
            elif kind == 1:
                rr, cc = ellipse(
                    cy, cx, 6, 17, rotation=rng.uniform(0, math.pi), shape=labels.shape
                )
            elif kind == 2:  # a concave L
                rr, cc = polygon(
                    [cy - 12, cy - 12, cy + 2, cy + 2, cy + 12, cy + 12],
                    [cx - 12, cx + 12, cx + 12, cx - 2, cx - 2, cx - 12],
                    shape=labels.shape,
                )
            elif kind == 3:  # a ring
                yy, xx = np.ogrid[: labels.shape[0], : labels.shape[1]]
                d = np.hypot(yy - cy, xx - cx)
                rr, cc = np.nonzero((d <= 12) & (d >= 7))
            elif kind == 4:  # a one-pixel-wide line
                rr = np.full(15, cy)
                cc = np.arange(cx - 7, cx + 8)
            else:  # a single pixel
                rr, cc = np.array([cy]), np.array([cx])
            labels[rr, cc] = k
    return labels


def _compare(labels: np.ndarray, spacing: tuple[float, ...], channels: list[np.ndarray]) -> None:
    spatial = "YX" if labels.ndim == 2 else "ZYX"
    boxes = ndi.find_objects(labels)
    objects = [(box, labels[box] == k + 1) for k, box in enumerate(boxes) if box is not None]
    names = [f"c{i}" for i in range(len(channels))]
    table = measure_objects(objects, 0, spatial, spacing, names, channels)
    letters = spatial.lower()
    for i, region in enumerate(regionprops(labels, spacing=spacing)):
        coords = region.coords
        pixels = len(coords)
        assert table["label"][i] == i + 1
        size = "area" if labels.ndim == 2 else "volume"
        assert table[f"{size}_px"][i] == pixels
        assert table[f"{size}_um{labels.ndim}"][i] == pytest.approx(region.area, rel=1e-12)
        for a, axis in enumerate(letters):
            centre = coords[:, a].mean()
            assert table[f"centroid_{axis}_px"][i] == pytest.approx(centre, abs=1e-9)
            assert table[f"centroid_{axis}_um"][i] == pytest.approx(centre * spacing[a], abs=1e-9)
            assert table[f"bbox_min_{axis}_px"][i] == region.bbox[a]
            assert table[f"bbox_max_{axis}_px"][i] == region.bbox[a + labels.ndim]
        assert table["equivalent_diameter_um"][i] == pytest.approx(
            region.equivalent_diameter_area, rel=1e-9
        )
        if labels.ndim == 2:
            assert table["eccentricity"][i] == pytest.approx(region.eccentricity, abs=1e-9)
        try:
            expected_solidity = region.solidity
        except Exception:  # flat objects have no hull of their dimension
            expected_solidity = math.nan
        if math.isnan(expected_solidity):
            assert math.isnan(table["solidity"][i])
        else:
            assert table["solidity"][i] == pytest.approx(expected_solidity, rel=1e-9)
        for name, channel in zip(names, channels, strict=True):
            inside = channel[tuple(coords.T)].astype(np.float64)
            assert table[f"mean_intensity_{name}"][i] == pytest.approx(inside.mean(), rel=1e-12)
            assert table[f"min_intensity_{name}"][i] == inside.min()
            assert table[f"max_intensity_{name}"][i] == inside.max()
            assert table[f"integrated_intensity_{name}"][i] == pytest.approx(
                inside.sum(), rel=1e-12
            )


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 0.5), (0.4, 0.7)])
def test_2d_measurements_equal_regionprops(spacing: tuple[float, float]) -> None:
    labels = _objects_2d()
    rng = np.random.default_rng(0)
    channels = [
        rng.integers(0, 4000, labels.shape).astype(np.uint16),
        rng.random(labels.shape, dtype=np.float32),
    ]
    _compare(labels, spacing, channels)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_3d_measurements_equal_regionprops() -> None:
    labels = np.zeros((24, 60, 70), dtype=np.int32)
    zz, yy, xx = np.ogrid[:24, :60, :70]
    labels[((zz - 10) / 2.0) ** 2 + ((yy - 20) / 8.0) ** 2 + ((xx - 20) / 8.0) ** 2 <= 1] = 1
    labels[((zz - 12) / 3.0) ** 2 + ((yy - 40) / 6.0) ** 2 + ((xx - 50) / 10.0) ** 2 <= 1] = 2
    labels[5:8, 50:52, 5:30] = 3  # a bar
    labels[20, 10, 60] = 4  # one voxel
    rng = np.random.default_rng(1)
    _compare(labels, (2.0, 0.5, 0.5), [rng.random(labels.shape, dtype=np.float32)])
