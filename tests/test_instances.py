"""Objects from maps: synthetic images whose objects the tests draw themselves.

Every map here is drawn with known discs, balls, rings or labels, so that the
expected count, areas and centroids come from the drawing (or from SciPy's own
connected components), never from the code under test.  The maps are
probabilities: 0.9 inside, 0.05 outside, plus noise of at most ±0.04, so that a
threshold of 0.5 recovers exactly the drawn pixels.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.draw import disk

from zoodesk.instances import InstanceSettings, InstanceSettingsError, find_instances
from zoodesk.instances import segment as segment_module
from zoodesk.instances.segment import segment_frame

INSIDE, OUTSIDE, NOISE = 0.9, 0.05, 0.04
FACE_2D = ndi.generate_binary_structure(2, 1)
FACE_3D = ndi.generate_binary_structure(3, 1)
UM = "µm"


# --------------------------------------------------------------------------- drawing


def draw_discs(
    shape: tuple[int, int], discs: Sequence[tuple[float, float, float]], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A probability map of discs and the truth: each pixel's nearest disc (1-based).

    Where two discs overlap, a pixel belongs to the disc whose centre is nearer (the
    ideal split of a touching pair).
    """
    union = np.zeros(shape, dtype=bool)
    truth = np.zeros(shape, dtype=np.int32)
    best = np.full(shape, np.inf)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k, (cy, cx, r) in enumerate(discs, start=1):
        rr, cc = disk((cy, cx), r, shape=shape)
        inside = np.zeros(shape, dtype=bool)
        inside[rr, cc] = True
        union |= inside
        dist = np.hypot(yy - cy, xx - cx)
        nearer = inside & (dist < best)
        truth[nearer] = k
        best[nearer] = dist[nearer]
    return noisy(union, seed), truth


def noisy(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """0.9 inside, 0.05 outside, plus uniform noise of at most ±0.04 (float32)."""
    rng = np.random.default_rng(seed)
    values = np.where(mask, INSIDE, OUTSIDE) + rng.uniform(-NOISE, NOISE, mask.shape)
    return values.astype(np.float32)


def truth_of(truth: np.ndarray, k: int) -> tuple[int, np.ndarray]:
    """Pixel count and centroid of the drawn object ``k``."""
    coords = np.argwhere(truth == k)
    return len(coords), coords.mean(axis=0)


def run_instances(
    tmp_path: Path,
    array: np.ndarray,
    axes: str,
    settings: InstanceSettings,
    *,
    pixel_sizes: dict[str, tuple[float, str]] | None = None,
    key: str = "img",
    **kwargs: object,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Run the instance step; return its table and its label image, read back from disk."""
    result = find_instances(
        array,
        axes,
        settings,
        out_dir=tmp_path,
        key=key,
        pixel_sizes=pixel_sizes,
        **kwargs,  # type: ignore[arg-type]
    )
    table = pd.read_csv(tmp_path / result.objects)
    labels = tifffile.imread(tmp_path / result.labels)
    assert result.count == len(table)
    return table, labels


def nearest_row(table: pd.DataFrame, centre: Sequence[float], letters: str = "yx") -> pd.Series:
    cols = [f"centroid_{a}_px" for a in letters]
    d = np.linalg.norm(table[cols].to_numpy() - np.asarray(centre), axis=1)
    return table.iloc[int(np.argmin(d))]


# --------------------------------------------------------------------------- 2D discs

SHAPE_2D = (200, 240)
ISOLATED = [(120, 60, 12), (100, 180, 8), (160, 120, 10)]
PAIR = [(40, 40, 10), (40, 58, 10)]  # centres 18 px apart: they overlap in a neck
BORDER = [(4, 150, 10), (190, 234, 9)]  # cut by the top and by the right/bottom edges
DISCS_2D = ISOLATED + PAIR + BORDER


@pytest.fixture(scope="module")
def discs_2d() -> tuple[np.ndarray, np.ndarray]:
    return draw_discs(SHAPE_2D, DISCS_2D)


def test_threshold_finds_the_drawn_discs_and_keeps_a_touching_pair_whole(
    tmp_path: Path, discs_2d: tuple[np.ndarray, np.ndarray]
) -> None:
    probability, truth = discs_2d
    table, labels = run_instances(
        tmp_path,
        probability,
        "YX",
        InstanceSettings(method="threshold", source="p", threshold=0.5),
        pixel_sizes={"Y": (0.5, UM), "X": (0.5, UM)},
    )
    # The documented method: pixels above the threshold, connected components with
    # face connectivity, numbered in the raster order of their first pixel; SciPy's
    # own labelling numbers components the same way.
    expected, n = ndi.label(probability > 0.5, structure=FACE_2D)
    assert n == len(DISCS_2D) - 1  # the pair is one object
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, expected)
    assert list(table["label"]) == list(range(1, n + 1))
    assert set(table["frame"]) == {0}
    # Isolated and border discs: exactly the drawn pixels (the noise never crosses 0.5).
    for k, (cy, cx, r) in enumerate(DISCS_2D, start=1):
        if (cy, cx, r) in PAIR:
            continue
        area, centroid = truth_of(truth, k)
        row = nearest_row(table, centroid)
        assert row["area_px"] == area
        np.testing.assert_allclose(
            [row["centroid_y_px"], row["centroid_x_px"]], centroid, atol=1e-9
        )
        assert row["area_um2"] == pytest.approx(area * 0.25)
        assert row["centroid_x_um"] == pytest.approx(row["centroid_x_px"] * 0.5)
        if (cy, cx, r) in ISOLATED:
            # A drawn disc of radius >= 8 px is within 6 % of pi r^2 (skimage draws r < R).
            assert area == pytest.approx(math.pi * r * r, rel=0.06)
            assert row["equivalent_diameter_px"] == pytest.approx(2 * r, rel=0.03)
            assert row["equivalent_diameter_um"] == pytest.approx(r, rel=0.03)
            assert row["eccentricity"] < 0.2
            assert row["solidity"] > 0.9
        # The bounding box ends one past the last pixel.
        ys, xs = np.nonzero(truth == k)
        assert (row["bbox_min_y_px"], row["bbox_max_y_px"]) == (ys.min(), ys.max() + 1)
        assert (row["bbox_min_x_px"], row["bbox_max_x_px"]) == (xs.min(), xs.max() + 1)
        assert row["bbox_max_x_um"] == pytest.approx((xs.max() + 1) * 0.5)
        # The table's label is the object's value in the label image.
        assert set(np.unique(labels[truth == k])) == {row["label"]}
    pair = nearest_row(table, (40, 49))
    assert pair["area_px"] == np.count_nonzero((truth == 4) | (truth == 5))
    assert pair["eccentricity"] > 0.5  # two discs side by side are elongated


def test_watershed_splits_each_touching_pair_at_the_neck(
    tmp_path: Path, discs_2d: tuple[np.ndarray, np.ndarray]
) -> None:
    probability, truth = discs_2d
    table, labels = run_instances(
        tmp_path, probability, "YX", InstanceSettings(method="watershed", source="p")
    )
    assert len(table) == len(DISCS_2D)
    for k, (cy, cx, r) in enumerate(DISCS_2D, start=1):
        area, centroid = truth_of(truth, k)
        row = nearest_row(table, centroid)
        if (cy, cx, r) in PAIR:
            # The watershed line may put the neck's middle column (9 px) on either
            # side: areas within 10 px, centroids within 0.5 px of the ideal halves.
            assert abs(row["area_px"] - area) <= 10
            np.testing.assert_allclose(
                [row["centroid_y_px"], row["centroid_x_px"]], centroid, atol=0.5
            )
        else:
            assert row["area_px"] == area
            np.testing.assert_allclose(
                [row["centroid_y_px"], row["centroid_x_px"]], centroid, atol=1e-9
            )
    left, right = nearest_row(table, PAIR[0][:2]), nearest_row(table, PAIR[1][:2])
    assert left["label"] != right["label"]
    # No physical columns without pixel sizes.
    assert table["area_um2"].isna().all()
    assert table["centroid_y_um"].isna().all()
    # The two halves fill the pair exactly, and nothing else was labelled.
    pair_mask = (truth == 4) | (truth == 5)
    assert set(np.unique(labels[pair_mask])) == {left["label"], right["label"]}
    np.testing.assert_array_equal(labels > 0, probability > 0.5)


def test_watershed_splits_a_large_clump_of_touching_discs(tmp_path: Path) -> None:
    # 15 x 15 discs of radius 8, 12 px apart in a column, columns 14 px apart and
    # shifted by half a step: one component.
    discs = [
        (12 + 12 * i + (6 if j % 2 else 0), 12 + 14 * j, 8) for i in range(15) for j in range(15)
    ]
    probability, truth = draw_discs((200, 230), discs)
    assert ndi.label(probability > 0.5, structure=FACE_2D)[1] == 1
    table, labels = run_instances(
        tmp_path, probability, "YX", InstanceSettings(method="watershed", source="p")
    )
    assert len(table) == len(discs)
    assert len({labels[cy, cx] for cy, cx, _ in discs} - {0}) == len(discs)
    errors = []
    for k in range(1, len(discs) + 1):
        area, centroid = truth_of(truth, k)
        row = nearest_row(table, centroid)
        # Each object is its disc's share of the clump, centred on it.
        assert np.hypot(*(np.array([row["centroid_y_px"], row["centroid_x_px"]]) - centroid)) < 1
        errors.append(abs(row["area_px"] - area) / area)
    # A distance watershed does not cut exactly where the discs' ideal (nearest-centre)
    # split does: each area within 15 %, and 5 % on average.
    assert max(errors) < 0.15 and np.mean(errors) < 0.05
    np.testing.assert_array_equal(labels > 0, truth > 0)


def test_size_filters_keep_objects_within_the_bounds_inclusive(
    tmp_path: Path,
) -> None:
    discs = [(30, 30, 4), (30, 80, 8), (30, 140, 12), (90, 40, 6), (90, 110, 10)]
    probability, truth = draw_discs((130, 180), discs)
    areas = [truth_of(truth, k)[0] for k in range(1, len(discs) + 1)]
    small, medium, large = areas[0], areas[1], areas[2]
    assert small < medium < large

    def kept(method: str, **bounds: int | None) -> list[int]:
        out = tmp_path / f"{method}-{bounds.get('min_size')}-{bounds.get('max_size')}"
        out.mkdir()
        settings = InstanceSettings(method=method, source="p", **bounds)  # type: ignore[arg-type]
        table, _ = run_instances(out, probability, "YX", settings)
        return sorted(table["area_px"])

    for method in ("threshold", "watershed"):
        assert kept(method) == sorted(areas)
        # "Objects with fewer (more) pixels are removed": the bounds themselves stay.
        assert kept(method, min_size=medium) == sorted(a for a in areas if a >= medium)
        assert kept(method, min_size=medium + 1) == sorted(a for a in areas if a > medium)
        assert kept(method, max_size=medium) == sorted(a for a in areas if a <= medium)
        assert kept(method, max_size=medium - 1) == sorted(a for a in areas if a < medium)
        assert kept(method, min_size=medium, max_size=medium) == [medium]


def test_size_filters_apply_to_each_half_of_a_split_pair(tmp_path: Path) -> None:
    # A big disc touching a small one: the watershed splits them, and min_size then
    # drops the small half only (sizes are the objects', not the component's).
    probability, truth = draw_discs((80, 100), [(40, 35, 14), (40, 56, 8)])
    small = truth_of(truth, 2)[0]
    table, _ = run_instances(
        tmp_path,
        probability,
        "YX",
        InstanceSettings(method="watershed", source="p", min_size=small + 40),
    )
    assert len(table) == 1
    assert table["centroid_x_px"][0] == pytest.approx(35, abs=1.0)


def test_fill_holes_fills_background_but_keeps_an_object_inside_the_hole(
    tmp_path: Path,
) -> None:
    shape = (120, 160)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    # A plain ring, and a ring with a disc inside its hole (a gap of background between).
    ring = (np.hypot(yy - 40, xx - 40) < 20) & (np.hypot(yy - 40, xx - 40) >= 12)
    ring2 = (np.hypot(yy - 60, xx - 110) < 24) & (np.hypot(yy - 60, xx - 110) >= 14)
    inner = np.hypot(yy - 60, xx - 110) < 7
    probability = noisy(ring | ring2 | inner)
    full = np.hypot(yy - 40, xx - 40) < 20
    full2 = np.hypot(yy - 60, xx - 110) < 24

    plain, _ = run_instances(
        tmp_path, probability, "YX", InstanceSettings(method="threshold", source="p"), key="plain"
    )
    assert sorted(plain["area_px"]) == sorted([int(ring.sum()), int(ring2.sum()), int(inner.sum())])
    filled, labels = run_instances(
        tmp_path,
        probability,
        "YX",
        InstanceSettings(method="threshold", source="p", fill_holes=True),
    )
    assert len(filled) == 3
    by_label = filled.set_index("label")
    assert by_label.loc[labels[40, 40], "area_px"] == int(full.sum())
    # The second ring fills its hole up to the disc inside it, which stays itself.
    assert set(np.unique(labels[inner])) == {labels[60, 110]}
    assert by_label.loc[labels[60, 110], "area_px"] == int(inner.sum())
    outer = labels[60, 110 + 15]
    assert outer not in (0, labels[60, 110], labels[40, 40])
    assert by_label.loc[outer, "area_px"] == int(full2.sum() - inner.sum())
    np.testing.assert_array_equal(labels == outer, full2 & ~inner)
    # The watershed fills before it splits: the filled plain ring is one disc (unfilled,
    # a ring's distance transform has a ridge all round, and it falls into pieces).
    ws, ws_labels = run_instances(
        tmp_path,
        probability,
        "YX",
        InstanceSettings(method="watershed", source="p", fill_holes=True),
        key="ws",
    )
    np.testing.assert_array_equal(ws_labels == ws_labels[40, 40], full)
    assert ws.set_index("label").loc[ws_labels[40, 40], "area_px"] == int(full.sum())
    assert set(np.unique(ws_labels[inner])) == {ws_labels[60, 110]}


# --------------------------------------------------------------------------- 3D balls


def test_balls_with_anisotropic_pixels_have_their_volume_and_a_pair_is_split(
    tmp_path: Path,
) -> None:
    shape = (28, 100, 150)
    sizes = (2.0, 0.5, 0.5)  # µm along Z, Y, X
    radius = 8.0  # µm: 4 planes in Z, 16 px in Y and X
    centres_um = [(28.0, 25.0, 20.0), (28.0, 25.0, 34.5), (26.0, 25.0, 58.0)]  # pair, one
    zz, yy, xx = np.meshgrid(
        *(np.arange(n) * s for n, s in zip(shape, sizes, strict=True)), indexing="ij"
    )
    dists = [np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) for c in centres_um]
    union = np.zeros(shape, dtype=bool)
    for d in dists:
        union |= d < radius
    truth = np.where(union, np.argmin(np.stack(dists), axis=0) + 1, 0)
    probability = noisy(union)
    sizes_meta = {a: (s, UM) for a, s in zip("ZYX", sizes, strict=True)}
    voxel = math.prod(sizes)
    ball = 4 / 3 * math.pi * radius**3

    table, labels = run_instances(
        tmp_path,
        probability,
        "ZYX",
        InstanceSettings(method="watershed", source="p"),
        pixel_sizes=sizes_meta,
    )
    assert labels.shape == shape
    assert len(table) == 3
    assert "volume_um3" in table and "area_px" not in table and "eccentricity" not in table
    for k, centre in enumerate(centres_um, start=1):
        count, centroid = truth_of(truth, k)
        row = nearest_row(table, np.asarray(centre) / np.asarray(sizes), "zyx")
        assert row["volume_um3"] == pytest.approx(row["volume_px"] * voxel)
        if k == 3:
            assert row["volume_px"] == count
            # The drawn ball is within 5 % of 4/3 pi r^3 (coarse along Z).
            assert row["volume_um3"] == pytest.approx(ball, rel=0.05)
            assert row["equivalent_diameter_um"] == pytest.approx(2 * radius, rel=0.02)
        else:
            # The halves of the pair: within 3 % of the ideal split.
            assert row["volume_px"] == pytest.approx(count, rel=0.03)
            np.testing.assert_allclose(
                [row["centroid_z_px"], row["centroid_y_px"], row["centroid_x_px"]],
                centroid,
                atol=0.5,
            )
        assert row["centroid_z_um"] == pytest.approx(row["centroid_z_px"] * 2.0)
    # The threshold method keeps the touching pair as one object.
    (tmp_path / "t").mkdir()
    table_t, labels_t = run_instances(
        tmp_path / "t",
        probability,
        "ZYX",
        InstanceSettings(method="threshold", source="p"),
        pixel_sizes=sizes_meta,
    )
    assert len(table_t) == 2
    np.testing.assert_array_equal(labels_t, ndi.label(probability > 0.5, structure=FACE_3D)[0])


# --------------------------------------------------------------------------- time series


def test_time_series_counts_each_frame_and_numbers_objects_per_frame(tmp_path: Path) -> None:
    shape = (90, 110)
    frames_discs = [
        [(20, 20, 8), (60, 70, 10), (20, 90, 6)],
        [],
        [(45, 55, 12)],
        [(15, 15, 5), (15, 50, 5), (15, 85, 5), (70, 20, 7), (70, 80, 7)],
    ]
    drawn = [draw_discs(shape, d, seed=i) for i, d in enumerate(frames_discs)]
    maps, truths = [m for m, _ in drawn], [t for _, t in drawn]
    stack = np.stack(maps)
    table, labels = run_instances(
        tmp_path, stack, "TYX", InstanceSettings(method="watershed", source="p")
    )
    assert labels.shape == stack.shape
    counts = table.groupby("frame").size().reindex(range(len(frames_discs)), fill_value=0)
    assert list(counts) == [len(d) for d in frames_discs]
    for t, (discs, truth) in enumerate(zip(frames_discs, truths, strict=True)):
        rows = table[table["frame"] == t]
        # Labels restart at 1 in each frame, as the label image's planes do.
        assert sorted(rows["label"]) == list(range(1, len(discs) + 1))
        assert set(np.unique(labels[t])) - {0} == set(rows["label"])
        for k in range(1, len(discs) + 1):
            area, centroid = truth_of(truth, k)
            row = nearest_row(rows, centroid)
            assert row["area_px"] == area
            assert set(np.unique(labels[t][truth == k])) == {row["label"]}


# ------------------------------------------------------------- boundary, labels, Otsu


def test_boundary_method_splits_touching_cells_at_their_boundary(tmp_path: Path) -> None:
    shape = (80, 120)
    cells = [(40, 40, 18), (40, 72, 18), (40, 102, 8)]  # two touching, one apart
    _, cell_of = draw_discs(shape, cells)
    # A cell's boundary: its pixels with a face neighbour outside the cell.
    boundary = np.zeros(shape, dtype=bool)
    padded = np.pad(cell_of, 1)
    for axis in (0, 1):
        for shift in (-1, 1):
            neighbour = np.roll(padded, shift, axis=axis)[1:-1, 1:-1]
            boundary |= (cell_of > 0) & (neighbour != cell_of)
    output = np.stack([noisy(cell_of > 0, seed=1), noisy(boundary, seed=2)])
    settings = InstanceSettings(method="boundary", source="p", channel=0, boundary_channel=1)
    table, labels = run_instances(tmp_path, output, "CYX", settings)
    assert len(table) == 3
    for k in range(1, 4):
        cell = cell_of == k
        row = nearest_row(table, truth_of(cell_of, k)[1])
        mine = labels == row["label"]
        # Each object is its cell; only the shared boundary may go either way.
        iou = (mine & cell).sum() / (mine | cell).sum()
        assert iou > 0.9, (k, iou)
    np.testing.assert_array_equal(labels > 0, cell_of > 0)
    # On the foreground channel alone (threshold) the touching cells are one object.
    (tmp_path / "t").mkdir()
    table_t, _ = run_instances(
        tmp_path / "t", output, "CYX", InstanceSettings(method="threshold", source="p", channel=0)
    )
    assert len(table_t) == 2


def test_labels_method_measures_integer_labels_as_given(tmp_path: Path) -> None:
    given = np.zeros((60, 90), dtype=np.uint16)
    given[5:15, 5:25] = 3
    given[40:50, 60:80] = 7  # label 7 in two separate pieces: one object
    given[5:12, 70:85] = 7
    given[30:45, 10:20] = 12
    given[15:25, 25:35] = 4  # touches label 3 at a corner: stays itself
    table, labels = run_instances(tmp_path, given, "YX", InstanceSettings(method="labels"))
    assert len(table) == 4
    # Each given label is one object with exactly its pixels (numbers may change).
    for value in (3, 4, 7, 12):
        found = np.unique(labels[given == value])
        assert len(found) == 1 and found[0] > 0
        row = table[table["label"] == found[0]].iloc[0]
        assert row["area_px"] == np.count_nonzero(given == value)
        np.testing.assert_allclose(
            [row["centroid_y_px"], row["centroid_x_px"]],
            np.argwhere(given == value).mean(axis=0),
        )
    np.testing.assert_array_equal(labels > 0, given > 0)
    seven = table[table["label"] == labels[45, 70]].iloc[0]
    assert (seven["bbox_min_y_px"], seven["bbox_max_y_px"]) == (5, 50)
    assert (seven["bbox_min_x_px"], seven["bbox_max_x_px"]) == (60, 85)


def test_otsu_threshold_falls_between_the_modes(tmp_path: Path) -> None:
    shape = (150, 200)
    discs = [(30, 30, 10), (30, 48, 10), (100, 60, 14), (75, 150, 20), (140, 190, 9)]
    _, truth = draw_discs(shape, discs)
    rng = np.random.default_rng(3)
    # Background near 0.2, objects near 0.7: any threshold in (0.3, 0.6) finds them.
    values = np.where(truth > 0, 0.7, 0.2) + rng.uniform(-0.1, 0.1, shape)
    probability = values.astype(np.float32)
    result = find_instances(
        probability,
        "YX",
        InstanceSettings(method="threshold", source="p", threshold="otsu"),
        out_dir=tmp_path,
        key="otsu",
        pixel_sizes=None,
    )
    assert result.threshold is not None and 0.3 < result.threshold < 0.6
    labels = tifffile.imread(tmp_path / result.labels)
    np.testing.assert_array_equal(labels, ndi.label(probability > 0.45, structure=FACE_2D)[0])
    assert result.count == len(discs) - 1


def test_nan_in_the_map_is_background(tmp_path: Path) -> None:
    probability, truth = draw_discs((80, 100), [(30, 30, 10), (50, 70, 12)])
    probability[30, 30] = np.nan  # inside a disc: a hole in it
    probability[0:5, :] = np.nan  # a band of background
    probability[50, 70:74] = np.nan  # four pixels inside the second disc
    for threshold in (0.5, "otsu"):
        out = tmp_path / str(threshold)
        out.mkdir()
        table, _ = run_instances(
            out,
            probability,
            "YX",
            InstanceSettings(method="threshold", source="p", threshold=threshold),
        )
        assert sorted(table["area_px"]) == sorted(
            [truth_of(truth, 1)[0] - 1, truth_of(truth, 2)[0] - 4]
        )
    (tmp_path / "filled").mkdir()
    table, _ = run_instances(
        tmp_path / "filled",
        probability,
        "YX",
        InstanceSettings(method="watershed", source="p", fill_holes=True),
    )
    assert sorted(table["area_px"]) == sorted([truth_of(truth, 1)[0], truth_of(truth, 2)[0]])


def test_an_empty_map_gives_no_objects_and_an_empty_table(tmp_path: Path) -> None:
    empty = np.full((64, 64), 0.05, dtype=np.float32)
    for method in ("threshold", "watershed"):
        out = tmp_path / method
        out.mkdir()
        result = find_instances(
            empty,
            "YX",
            InstanceSettings(method=method, source="p"),  # type: ignore[arg-type]
            out_dir=out,
            key="empty",
            pixel_sizes=None,
        )
        assert result.count == 0
        assert result.summary["count"] == 0
        assert not tifffile.imread(out / result.labels).any()
        with (out / result.objects).open(encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert len(rows) == 1 and "area_px" in rows[0]
    # Otsu on a constant map: no threshold splits it, and nothing is found.
    result = find_instances(
        empty,
        "YX",
        InstanceSettings(method="threshold", source="p", threshold="otsu"),
        out_dir=tmp_path,
        key="otsu",
        pixel_sizes=None,
    )
    assert result.count == 0


def test_a_channel_the_output_lacks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InstanceSettingsError, match="channel 5"):
        find_instances(
            np.zeros((1, 32, 32), dtype=np.float32),
            "CYX",
            InstanceSettings(method="threshold", source="p", channel=5),
            out_dir=tmp_path,
            key="x",
            pixel_sizes=None,
        )


# ------------------------------------------------------------ tiled equals untiled


def _large_frame(snake: bool, seed: int = 7) -> np.ndarray:
    """3000 x 2500 with a few hundred discs and touching pairs, many across block seams.

    ``snake`` adds a long loop through many blocks (joined far from where it starts);
    it is left out for the watershed, which cuts a thin ridge into many pieces.
    """
    shape = (3000, 2500)
    rng = np.random.default_rng(seed)
    discs: list[tuple[float, float, float]] = []
    # Discs centred on the seams of 256- and 300-pixel blocks, and on their corners.
    for seam in (256, 300, 512, 600, 768, 900, 1024, 1200, 1500, 1800, 2048, 2100, 2400):
        r = float(rng.integers(6, 14))
        discs.append((float(rng.integers(20, 2980)), seam, r))
        discs.append((seam, float(rng.integers(20, 2480)), r))
        discs.append((seam, seam, r))
        # A touching pair straddling the seam.
        discs.append((seam + 3, seam - r + 1, r))
        discs.append((seam + 3, seam + r - 1, r))
    # Random discs and touching pairs elsewhere.
    for _ in range(400):
        r = float(rng.integers(5, 15))
        cy, cx = float(rng.integers(0, 3000)), float(rng.integers(0, 2500))
        discs.append((cy, cx, r))
        if rng.random() < 0.3:
            angle = rng.uniform(0, math.pi)
            d = 2 * r - 2
            discs.append((cy + d * math.sin(angle), cx + d * math.cos(angle), r))
    union = np.zeros(shape, dtype=bool)
    for cy, cx, r in discs:
        rr, cc = disk((cy, cx), r, shape=shape)
        union[rr, cc] = True
    if snake:
        union[1000:1004, 100:2400] = True
        union[1000:1400, 2396:2400] = True
        union[1396:1400, 100:2400] = True
    return noisy(union, seed)


@pytest.fixture(scope="module")
def large_frames() -> dict[str, np.ndarray]:
    return {"threshold": _large_frame(snake=True), "watershed": _large_frame(snake=False)}


def _paint(objects: list[segment_module.FoundObject], shape: tuple[int, ...]) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int32)
    for k, obj in enumerate(objects, start=1):
        labels[obj.bbox][obj.mask] = k
    return labels


@pytest.mark.parametrize("method", ["threshold", "watershed"])
def test_block_size_does_not_change_the_objects(
    method: str, large_frames: dict[str, np.ndarray]
) -> None:
    frame = large_frames[method]
    shape = frame.shape
    settings = InstanceSettings(method=method, source="p", min_size=20)  # type: ignore[arg-type]

    def objects(block: tuple[int, int] | None) -> np.ndarray:
        found = segment_frame(
            shape, lambda region: frame[region], settings, threshold=0.5, block=block
        )
        return _paint(found, shape)

    whole = objects(None)
    if method == "threshold":
        # Whole-frame threshold labelling is SciPy's components, sizes filtered.
        expected, _ = ndi.label(frame > 0.5, structure=FACE_2D)
        sizes = np.bincount(expected.ravel())
        keep = sizes >= 20
        keep[0] = False
        renumber = np.zeros(len(sizes), dtype=np.int32)
        renumber[keep] = np.arange(1, keep.sum() + 1)
        np.testing.assert_array_equal(whole, renumber[expected])
    assert whole.max() > 300
    for block in ((256, 256), (300, 300)):
        np.testing.assert_array_equal(objects(block), whole, err_msg=str(block))


@pytest.mark.parametrize(("method", "scratch"), [("threshold", "disk"), ("watershed", "memory")])
def test_find_instances_in_blocks_writes_the_same_labels_and_table(
    method: str,
    scratch: str,
    tmp_path: Path,
    large_frames: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = large_frames[method]
    sizes = {"Y": (0.3, UM), "X": (0.3, UM)}
    image = (frame * 1000).astype(np.uint16)  # an input to measure intensities in
    settings = InstanceSettings(method=method, source="p", block=256)  # type: ignore[arg-type]
    results = {}
    for name, whole in (("whole", True), ("blocks", False)):
        if name == "blocks" and scratch == "disk":
            # Frames too large for memory keep their components in a store on disk.
            monkeypatch.setattr(segment_module, "IN_MEMORY_PIXELS", 1 << 16)
        out = tmp_path / name
        out.mkdir()
        results[name] = find_instances(
            frame,
            "YX",
            settings,
            out_dir=out,
            key="big",
            pixel_sizes=sizes,
            image=image,
            image_axes="YX",
            whole_frames=whole,
        )
        # Nothing but the label image and the table is left (no scratch store).
        assert sorted(p.name for p in out.iterdir()) == ["big_instances.ome.tif", "big_objects.csv"]
    whole_labels = tifffile.imread(tmp_path / "whole" / results["whole"].labels)
    blocks_labels = tifffile.imread(tmp_path / "blocks" / results["blocks"].labels)
    assert whole_labels.max() == results["whole"].count > 300
    np.testing.assert_array_equal(blocks_labels, whole_labels)
    whole_table = (tmp_path / "whole" / results["whole"].objects).read_text()
    assert (tmp_path / "blocks" / results["blocks"].objects).read_text() == whole_table
    assert results["blocks"].summary == results["whole"].summary
    # The table agrees with the label image and the input, computed here with SciPy.
    table = pd.read_csv(tmp_path / "whole" / results["whole"].objects)
    assert list(table["label"]) == list(range(1, len(table) + 1))
    np.testing.assert_array_equal(table["area_px"], np.bincount(whole_labels.ravel())[1:])
    sums = ndi.sum(image.astype(np.float64), whole_labels, index=table["label"])
    np.testing.assert_allclose(table["integrated_intensity_c0"], sums)
    centroids = np.array(ndi.center_of_mass(whole_labels > 0, whole_labels, table["label"]))
    np.testing.assert_allclose(table[["centroid_y_px", "centroid_x_px"]], centroids, atol=1e-9)
    np.testing.assert_allclose(table["area_um2"], table["area_px"] * 0.09)


def test_labels_in_blocks_join_a_value_split_across_blocks(tmp_path: Path) -> None:
    given = np.zeros((700, 650), dtype=np.int32)
    given[10:30, 10:30] = 5
    given[600:620, 600:640] = 5  # the same value far away, in another block
    given[250:350, 250:350] = 9  # across the seams of 256- and 300-pixel blocks
    given[255:260, 100:600] = 2
    settings = InstanceSettings(method="labels", source="p", block=256)
    for block in (None, (256, 256), (300, 300)):
        found = segment_frame(given.shape, lambda r: given[r], settings, threshold=0, block=block)
        labels = _paint(found, given.shape)
        assert len(found) == 3
        for value in (2, 5, 9):
            assert len(np.unique(labels[given == value])) == 1
        np.testing.assert_array_equal(labels > 0, given > 0)


def test_labels_method_refuses_a_map_that_holds_no_labels(tmp_path: Path) -> None:
    probability, _ = draw_discs((60, 60), [(30, 30, 10)])
    with pytest.raises(InstanceSettingsError, match="not a label"):
        find_instances(
            probability,
            "YX",
            InstanceSettings(method="labels", source="p"),
            out_dir=tmp_path,
            key="map",
            pixel_sizes=None,
        )
    negative = np.zeros((40, 40), dtype=np.int16)
    negative[5:10, 5:10] = -1
    with pytest.raises(InstanceSettingsError, match="not a label"):
        find_instances(
            negative,
            "YX",
            InstanceSettings(method="labels", source="p"),
            out_dir=tmp_path,
            key="negative",
            pixel_sizes=None,
        )
    # Whole numbers stored as floats are labels.
    given = np.zeros((40, 40), dtype=np.float32)
    given[5:10, 5:10] = 3.0
    given[20:30, 20:25] = 8.0
    table, labels = run_instances(tmp_path, given, "YX", InstanceSettings(method="labels"))
    assert sorted(table["area_px"]) == [25, 50]
    np.testing.assert_array_equal(labels > 0, given > 0)
