"""StatsAccumulator.merge: statistics as a distributed reduction, checked against numpy.

Each test splits an image into bands along a reduced axis, feeds every band to its own
accumulator (as separate processes would), sends each through pickle, merges them in
several orders and compares the result with numpy on the whole array.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from zoodesk.errors import AxesMismatchError, ShapeError
from zoodesk.inference.processing import (
    StatRequest,
    StatsAccumulator,
    merge_accumulators,
)

QS = (0.01, 0.5, 0.998)
METHODS = ("linear", "inverted_cdf")  # linear is StatRequest's default method
YX = ("y", "x")
CYX = ("c", "y", "x")


def _requests(tensor_id: str, reductions: Sequence[tuple[str, ...] | None]) -> set[StatRequest]:
    reqs: set[StatRequest] = set()
    for red in reductions:
        reqs |= {StatRequest(tensor_id, kind, red) for kind in ("mean", "std", "var")}
        reqs |= {
            StatRequest(tensor_id, "quantile", red, q=q, method=method)
            for q in (0.0, *QS, 1.0)
            for method in METHODS
        }
    return reqs


def _data(kind: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind in ("uint8", "uint16"):
        return rng.integers(0, np.iinfo(kind).max, size=shape, endpoint=True, dtype=kind)
    # Each channel (first axis of a CYX image) gets its own offset and spread, so that
    # a statistic landing on the wrong channel shows.
    lead = (shape[0],) + (1,) * (len(shape) - 1) if len(shape) == 3 else (1,) * len(shape)
    if kind == "float32":
        offset, spread = rng.uniform(-100, 300, lead), rng.uniform(5, 50, lead)
    else:  # "offset": mean 1e4, small spread (float32 resolution there is ~1e-3)
        offset, spread = 1e4 + rng.uniform(-5, 5, lead), rng.uniform(0.2, 1.0, lead)
    return (rng.normal(size=shape) * spread + offset).astype(np.float32)


def _bands(data: np.ndarray, axis: int, cuts: Sequence[int]) -> list[np.ndarray]:
    return np.split(data, list(cuts), axis=axis)


def _pickled_parts(
    reqs: set[StatRequest],
    bands: Sequence[np.ndarray],
    axes: tuple[str, ...],
    *,
    transpose_odd: bool = False,
    **settings: int,
) -> list[bytes]:
    """One accumulator per band, pickled as a worker process would send it back."""
    parts = []
    for i, band in enumerate(bands):
        acc = StatsAccumulator(reqs, **settings)
        if transpose_odd and i % 2:
            # Some workers see the data in another axis order.
            acc.update("t", band.transpose(*reversed(range(band.ndim))), axes[::-1])
        else:
            acc.update("t", band, axes)
        parts.append(pickle.dumps(acc))
    return parts


def _sequential(parts: list[StatsAccumulator]) -> StatsAccumulator:
    return merge_accumulators(parts)


def _reversed(parts: list[StatsAccumulator]) -> StatsAccumulator:
    # The first part stays first: the merged result is laid out in its axis order.
    return merge_accumulators([parts[0], *reversed(parts[1:])])


def _tree(parts: list[StatsAccumulator]) -> StatsAccumulator:
    while len(parts) > 1:
        parts = [merge_accumulators(parts[i : i + 2]) for i in range(0, len(parts), 2)]
    return parts[0]


ORDERS: dict[str, Callable[[list[StatsAccumulator]], StatsAccumulator]] = {
    "sequential": _sequential,
    "reversed": _reversed,
    "tree": _tree,
}


def _merged(parts: Sequence[bytes], order: str) -> dict[StatRequest, np.ndarray]:
    # Unpickled afresh for every order: merging changes the accumulator merged into.
    return ORDERS[order]([pickle.loads(p) for p in parts]).finalize()


def _numpy_stats(
    data: np.ndarray, axes: tuple[str, ...], reqs: set[StatRequest]
) -> dict[StatRequest, np.ndarray]:
    out = {}
    for req in reqs:
        red = tuple(range(data.ndim)) if req.axes is None else tuple(map(axes.index, req.axes))
        if req.kind == "quantile":
            [out[req]] = np.quantile(data, [req.q], axis=red, method=req.method, keepdims=True)
        else:
            f = {"mean": np.mean, "std": np.std, "var": np.var}[req.kind]
            out[req] = f(data.astype(np.float64), axis=red, keepdims=True)
    return out


def _assert_moments(
    got: dict[StatRequest, np.ndarray], expected: dict[StatRequest, np.ndarray], what: str
) -> None:
    for req in got:
        if req.kind != "quantile":
            assert got[req].shape == expected[req].shape, (what, req)
            np.testing.assert_allclose(got[req], expected[req], rtol=1e-9, err_msg=f"{what} {req}")


CASES = [
    # (data kind, shape, axes, reductions, band axis, cuts)
    ("uint8", (160, 128), YX, [YX, None], 0, [17, 60, 61, 120]),
    ("uint16", (160, 128), YX, [YX], 0, [40, 80, 120]),
    ("float32", (160, 128), YX, [YX], 0, [33, 90, 100]),  # >= 2**14 values: selection path
    ("offset", (160, 128), YX, [None], 0, [50, 51, 130]),
    ("uint8", (3, 64, 48), CYX, [YX, ("y",)], 1, [10, 30, 50]),
    ("uint16", (3, 64, 48), CYX, [YX], 1, [20, 40]),
    ("float32", (3, 64, 48), CYX, [YX, ("y",)], 1, [5, 31, 32, 60]),
    ("offset", (3, 64, 48), CYX, [YX, None], 1, [16, 32, 48]),
]


@pytest.mark.parametrize(("kind", "shape", "axes", "reductions", "band_axis", "cuts"), CASES)
@pytest.mark.parametrize("transpose_odd", [False, True])
def test_merged_equals_numpy_and_one_accumulator(
    kind: str,
    shape: tuple[int, ...],
    axes: tuple[str, ...],
    reductions: list[tuple[str, ...] | None],
    band_axis: int,
    cuts: list[int],
    transpose_odd: bool,
) -> None:
    data = _data(kind, shape, seed=len(cuts) + shape[0])
    reqs = _requests("t", reductions)
    bands = _bands(data, band_axis, cuts)
    parts = _pickled_parts(reqs, bands, axes, transpose_odd=transpose_odd)
    expected = _numpy_stats(data, axes, reqs)
    single = StatsAccumulator(reqs)
    for band in bands:
        single.update("t", band, axes)
    whole = single.finalize()
    for order in ORDERS:
        got = _merged(parts, order)
        assert got.keys() == reqs
        _assert_moments(got, expected, order)
        for req in reqs:
            if req.kind == "quantile":
                # Exact: integer histograms, or every value kept (default max_exact_samples).
                np.testing.assert_array_equal(got[req], expected[req], err_msg=f"{order} {req}")
                np.testing.assert_array_equal(got[req], whole[req], err_msg=f"{order} {req}")
            else:
                np.testing.assert_allclose(got[req], whole[req], rtol=1e-12, err_msg=str(req))


@pytest.mark.parametrize(
    ("kind", "shape", "axes", "reductions", "cuts"),
    [
        # Bands of fewer and of more than max_exact_samples values, so that merges meet
        # kept values and histograms on either side, and histograms of other ranges.
        ("float32", (160, 128), YX, [YX], [2, 40, 45, 100, 107]),
        ("offset", (160, 128), YX, [None], [3, 70, 150]),
        ("float32", (3, 64, 48), CYX, [YX, ("y",)], [2, 30, 33, 60]),
        ("offset", (3, 64, 48), CYX, [YX], [1, 2, 40]),
    ],
)
@pytest.mark.parametrize("transpose_odd", [False, True])
def test_merged_histograms_stay_within_the_documented_bound(
    kind: str,
    shape: tuple[int, ...],
    axes: tuple[str, ...],
    reductions: list[tuple[str, ...] | None],
    cuts: list[int],
    transpose_odd: bool,
) -> None:
    bins = 1024
    data = _data(kind, shape, seed=40 + len(cuts))
    if kind == "float32":
        # Bands of different ranges: the histograms' ranges and bin widths differ.
        data[(slice(None),) * (len(shape) - 2) + (slice(0, cuts[1]),)] *= 0.05
    reqs = _requests("t", reductions)
    band_axis = len(shape) - 2
    parts = _pickled_parts(
        reqs,
        _bands(data, band_axis, cuts),
        axes,
        transpose_odd=transpose_odd,
        max_exact_samples=1000,
        histogram_bins=bins,
    )
    expected = _numpy_stats(data, axes, reqs)
    for order in ORDERS:
        got = _merged(parts, order)
        _assert_moments(got, expected, order)
        for req in reqs:
            if req.kind != "quantile":
                continue
            if req.q in (0.0, 1.0):
                np.testing.assert_array_equal(got[req], expected[req], err_msg=f"{order} {req}")
                continue
            # All kept positions share one histogram range: the bound is relative to
            # the range of the whole tensor.
            error = np.abs(got[req] - expected[req])
            assert got[req].shape == expected[req].shape
            bound = 4 * float(np.ptp(data)) / bins
            assert error.max() <= bound, (order, req, error.max() / bound)


def test_histogram_merge_keeps_exact_integer_results_of_any_size() -> None:
    data = _data("uint16", (3, 64, 48), seed=7)
    reqs = _requests("t", [YX])
    parts = _pickled_parts(reqs, _bands(data, 1, [20, 21, 50]), CYX, max_exact_samples=100)
    expected = _numpy_stats(data, CYX, reqs)
    got = _merged(parts, "tree")
    for req in reqs:
        if req.kind == "quantile":
            np.testing.assert_array_equal(got[req], expected[req], err_msg=str(req))


def test_empty_accumulators_merge_on_either_side() -> None:
    data = _data("float32", (3, 20, 16), seed=8)
    reqs = _requests("t", [YX, None])
    expected = _numpy_stats(data, CYX, reqs)
    full = StatsAccumulator(reqs)
    full.update("t", data, CYX)

    into_empty = StatsAccumulator(reqs)
    into_empty.merge(pickle.loads(pickle.dumps(StatsAccumulator(reqs))))
    into_empty.merge(full)
    full.merge(StatsAccumulator(reqs))
    for acc in (into_empty, full, merge_accumulators([StatsAccumulator(reqs), full])):
        got = acc.finalize()
        _assert_moments(got, expected, "empty")
        for req in reqs:
            if req.kind == "quantile":
                np.testing.assert_array_equal(got[req], expected[req], err_msg=str(req))

    # An empty accumulator adopts the axis order of the first data merged into it.
    flipped = StatsAccumulator(reqs)
    flipped.update("t", data.transpose(2, 0, 1), ("x", "c", "y"))
    empty = StatsAccumulator(reqs)
    empty.merge(flipped)
    req = StatRequest("t", "mean", YX)
    assert empty.finalize()[req].shape == (1, 3, 1)

    with pytest.raises(ValueError, match="no data"):
        merge_accumulators([StatsAccumulator(reqs), StatsAccumulator(reqs)]).finalize()


def test_merge_leaves_the_other_accumulator_unchanged() -> None:
    data = _data("float32", (3, 40, 16), seed=9)
    reqs = _requests("t", [YX])
    for settings in ({}, {"max_exact_samples": 500, "histogram_bins": 256}):
        a, b = StatsAccumulator(reqs, **settings), StatsAccumulator(reqs, **settings)
        a.update("t", data[:, :20], CYX)
        b.update("t", data[:, 20:], CYX)
        before = b.finalize()
        a.merge(b)
        a.merge(b)  # merging the same part twice counts its data twice
        after = b.finalize()
        for req in reqs:
            np.testing.assert_array_equal(before[req], after[req])


def test_refused_merges() -> None:
    data = _data("uint8", (3, 20, 16), seed=10)
    reqs = _requests("t", [YX])
    acc = StatsAccumulator(reqs)
    acc.update("t", data, CYX)
    before = acc.finalize()

    with pytest.raises(ValueError, match="same statistics"):
        acc.merge(StatsAccumulator(_requests("t", [None])))
    other_dtype = StatsAccumulator(reqs)
    other_dtype.update("t", data.astype(np.uint16), CYX)
    with pytest.raises(ValueError, match="share a dtype"):
        acc.merge(other_dtype)
    other_channels = StatsAccumulator(reqs)
    other_channels.update("t", data[:2], CYX)
    with pytest.raises(ShapeError, match="whole length"):
        acc.merge(other_channels)
    other_axes = StatsAccumulator(reqs)
    other_axes.update("t", data, ("z", "y", "x"))
    with pytest.raises(AxesMismatchError):
        acc.merge(other_axes)
    with pytest.raises(ValueError, match="no accumulators"):
        merge_accumulators([])

    # A refused merge changes nothing.
    after = acc.finalize()
    for req in reqs:
        np.testing.assert_array_equal(before[req], after[req])
