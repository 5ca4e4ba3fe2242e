"""Pre/postprocessing operations, checked against bioimageio.core 0.11 and numpy.

bioimageio.core is the reference implementation: each operation is built from the
same bioimageio.spec 0.5 description for both, run on the same random data, and the
results must agree to float32 rounding.  Where ZooDesk deliberately differs from core
(see the module documentation of ``zoodesk.inference.processing``) the expected
values come from numpy formulas written out here.
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bioimageio.core import Sample, Tensor
from bioimageio.core.common import MemberId
from bioimageio.core.proc_ops import (
    Binarize,
    Clip,
    EnsureDtype,
    FixedZeroMeanUnitVariance,
    ScaleLinear,
    ScaleMeanVariance,
    ScaleRange,
    Sigmoid,
    Softmax,
    ZeroMeanUnitVariance,
)
from bioimageio.core.stat_calculators import compute_measures
from bioimageio.spec.model import v0_5
from pydantic import TypeAdapter

from tests.conftest import SNAPSHOT
from zoodesk.errors import AxesMismatchError, ModelPackageError, ShapeError
from zoodesk.inference.processing import (
    Processing,
    StatRequest,
    StatsAccumulator,
    align_stat,
    compute_stats,
)
from zoodesk.models.spec import AxisSpec, OpSpec, TensorSpec

BCYX = ("batch", "channel", "y", "x")
BCZYX = ("batch", "channel", "z", "y", "x")
SHAPES = {BCYX: (1, 3, 40, 36), BCZYX: (2, 2, 6, 20, 18)}
DTYPES = ("float32", "float64", "uint8", "uint16", "int16")

CORE_OPS: dict[str, Any] = {
    "binarize": Binarize,
    "clip": Clip,
    "ensure_dtype": EnsureDtype,
    "fixed_zero_mean_unit_variance": FixedZeroMeanUnitVariance,
    "scale_linear": ScaleLinear,
    "scale_mean_variance": ScaleMeanVariance,
    "scale_range": ScaleRange,
    "sigmoid": Sigmoid,
    "softmax": Softmax,
    "zero_mean_unit_variance": ZeroMeanUnitVariance,
}
_DESCR = TypeAdapter(v0_5.PostprocessingDescr)


# --------------------------------------------------------------------------- helpers


def descr(op_id: str, **kwargs: Any) -> Any:
    """A validated bioimageio.spec 0.5 processing description."""
    data: dict[str, Any] = {"id": op_id}
    if op_id != "sigmoid":
        data["kwargs"] = kwargs
    return _DESCR.validate_python(data)


def op_spec(d: Any) -> OpSpec:
    """What ``model_spec_from_descr`` makes of a description: id and JSON kwargs."""
    return OpSpec(id=str(d.id), kwargs=d.kwargs.model_dump(mode="json"))


def tensor_spec(axes: Sequence[str], tensor_id: str = "raw") -> TensorSpec:
    kinds = {"batch": "batch", "channel": "channel"}
    return TensorSpec(
        id=tensor_id,
        axes=tuple(AxisSpec(id=a, kind=kinds.get(a, "space")) for a in axes),  # type: ignore[arg-type]
    )


def random_data(shape: Sequence[int], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype.startswith("float"):
        # Channels with different offsets and spreads, as in real images.
        scale = rng.uniform(5, 50, size=shape[1])[None, :, None]
        offset = rng.uniform(-20, 300, size=shape[1])[None, :, None]
        flat = rng.normal(size=(shape[0], shape[1], int(np.prod(shape[2:]))))
        return (flat * scale + offset).reshape(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)


def core_run(
    descrs: Sequence[Any],
    members: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    target: str = "raw",
    *,
    stats_before_each: bool = True,
) -> np.ndarray:
    """Run bioimageio.core's operations on a sample.

    ``stats_before_each`` recomputes the statistics on the current data before each
    operation (the order of the specification); otherwise all statistics are taken
    once on the unprocessed sample, as core's own pipeline does.
    """
    sample = Sample(
        members={MemberId(k): Tensor(a, dims=tuple(d)) for k, (a, d) in members.items()},
        stat={},
        id="sample",
    )
    ops = [CORE_OPS[str(d.id)].from_proc_descr(d, MemberId(target)) for d in descrs]
    with warnings.catch_warnings():
        # core warns that per-dataset percentiles of one sample are "naive": irrelevant.
        warnings.simplefilter("ignore")
        if not stats_before_each:
            required = {m for op in ops for m in op.required_measures}
            sample.stat.update(compute_measures(required, [sample]))
        for op in ops:
            if stats_before_each:
                sample.stat.update(compute_measures(op.required_measures, [sample]))
            op(sample)
    return np.asarray(sample.members[MemberId(target)].data.values)


def ours(
    descrs: Sequence[Any],
    data: np.ndarray,
    axes: Sequence[str],
    reference: Mapping[str, tuple[np.ndarray, Sequence[str]]] | None = None,
    **kwargs: Any,
) -> np.ndarray:
    proc = Processing([op_spec(d) for d in descrs], tensor_spec(axes), **kwargs)
    return proc.run(data, axes, reference)


def assert_matches_core(ours_out: np.ndarray, core_out: np.ndarray) -> None:
    """Equal to float32 rounding: relative to each value and to the data's magnitude."""
    assert ours_out.shape == core_out.shape
    expected = core_out.astype(np.float64)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(ours_out, expected, rtol=1e-5, atol=1e-6 * scale)


def as_list(axes: Sequence[str] | None) -> list[str] | None:
    return None if axes is None else list(axes)


LAYOUTS = pytest.mark.parametrize("axes", [BCYX, BCZYX], ids=["bcyx", "bczyx"])
ALL_DTYPES = pytest.mark.parametrize("dtype", DTYPES)


def spatial(axes: Sequence[str]) -> list[str]:
    return [a for a in axes if a not in ("batch", "channel")]


def reductions(axes: Sequence[str]) -> list[list[str] | None]:
    """Typical 'axes' arguments: all, per channel, per channel and sample, per batch."""
    return [None, spatial(axes), ["batch", *spatial(axes)], ["channel", *spatial(axes)]]


# ------------------------------------------------------------- each op against core


@LAYOUTS
@ALL_DTYPES
@pytest.mark.parametrize("target", ["float32", "float64"])
def test_ensure_dtype_float_matches_core(axes: tuple[str, ...], dtype: str, target: str) -> None:
    data = random_data(SHAPES[axes], dtype)
    d = descr("ensure_dtype", dtype=target)
    out = ours([d], data, axes)
    assert out.dtype == np.dtype(target)
    np.testing.assert_array_equal(out, core_run([d], {"raw": (data, axes)}))


@pytest.mark.parametrize("target", ["uint8", "int8", "uint16", "int16", "int32", "uint64", "bool"])
def test_ensure_dtype_integer_matches_core_on_representable_values(target: str) -> None:
    info = np.iinfo(target) if target != "bool" else np.iinfo("uint8")
    rng = np.random.default_rng(1)
    low, high = max(int(info.min), -1000), min(int(info.max), 1000)
    data = rng.integers(low, high + 1, size=SHAPES[BCYX]).astype("float32")
    d = descr("ensure_dtype", dtype=target)
    out = ours([d], data, BCYX)
    assert out.dtype == np.dtype(target)
    np.testing.assert_array_equal(out, core_run([d], {"raw": (data, BCYX)}))


def test_ensure_dtype_rounds_and_saturates_instead_of_wrapping() -> None:
    data = np.array([[-3.7, -0.5, 0.5, 1.5, 2.49, 254.6, 255.5, 300.0, np.nan, np.inf]], "float32")
    out = ours([descr("ensure_dtype", dtype="uint8")], data, ("y", "x"))
    assert out.dtype == np.uint8
    # ties to even; below 0 -> 0; above 255 -> 255; NaN -> 0
    np.testing.assert_array_equal(out, [[0, 0, 0, 2, 2, 255, 255, 255, 0, 255]])
    big = np.array([[-1e20, 3e9, -3e9, 2**31 - 1]], "float64")
    out32 = ours([descr("ensure_dtype", dtype="int32")], big, ("y", "x"))
    np.testing.assert_array_equal(out32, [[-(2**31), 2**31 - 1, -(2**31), 2**31 - 1]])
    f32 = ours(
        [descr("ensure_dtype", dtype="int64")], np.array([[1e30, -1e30]], "float32"), ("y", "x")
    )
    assert f32[0, 0] > 2**62 and f32[0, 1] == -(2**63)


def test_ensure_dtype_integer_to_narrower_integer_saturates() -> None:
    data = np.array([[-5, 0, 200, 300, 70000]], "int32")
    out = ours([descr("ensure_dtype", dtype="uint8")], data, ("y", "x"))
    np.testing.assert_array_equal(out, [[0, 0, 200, 255, 255]])
    out16 = ours([descr("ensure_dtype", dtype="int16")], data, ("y", "x"))
    np.testing.assert_array_equal(out16, [[-5, 0, 200, 300, 32767]])


@LAYOUTS
@ALL_DTYPES
def test_zero_mean_unit_variance_matches_core(axes: tuple[str, ...], dtype: str) -> None:
    data = random_data(SHAPES[axes], dtype, seed=2)
    for red in reductions(axes):
        d = descr("zero_mean_unit_variance", axes=red)
        out = ours([d], data, axes)
        assert out.dtype == (np.float64 if dtype == "float64" else np.float32)
        assert_matches_core(out, core_run([d], {"raw": (data, axes)}))


@pytest.mark.parametrize("eps", [1e-10, 1e-3, 0.1])
def test_zero_mean_unit_variance_uses_the_descriptions_eps(eps: float) -> None:
    data = random_data(SHAPES[BCYX], "float32", seed=3) / 40  # std near 1: eps matters
    out = ours([descr("zero_mean_unit_variance", axes=["y", "x"], eps=eps)], data, BCYX)
    x = data.astype(np.float64)
    mean = x.mean(axis=(2, 3), keepdims=True)
    std = x.std(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(out, (x - mean) / (std + eps), rtol=1e-5, atol=1e-6)


def test_zero_mean_unit_variance_keeps_precision_for_large_offsets() -> None:
    # mean 1e5, std 1: float32(mean) is off by up to 0.004, i.e. 0.004 in the output.
    rng = np.random.default_rng(4)
    data = (rng.normal(size=(1, 1, 64, 64)) + 1e5).astype("float32")
    out = ours([descr("zero_mean_unit_variance")], data, BCYX)
    x = data.astype(np.float64)
    np.testing.assert_allclose(out, (x - x.mean()) / (x.std() + 1e-6), rtol=0, atol=2e-6)


@LAYOUTS
@ALL_DTYPES
def test_fixed_zero_mean_unit_variance_matches_core(axes: tuple[str, ...], dtype: str) -> None:
    data = random_data(SHAPES[axes], dtype, seed=5)
    n_channels = SHAPES[axes][1]
    z_or_y = spatial(axes)[0]
    for kwargs in (
        {"mean": 103.5, "std": 13.7},
        {
            "axis": "channel",
            "mean": [10.0 * (c + 1) for c in range(n_channels)],
            "std": [3.0 + c for c in range(n_channels)],
        },
        {
            "axis": z_or_y,
            "mean": [float(i) for i in range(data.shape[axes.index(z_or_y)])],
            "std": [2.5] * data.shape[axes.index(z_or_y)],
        },
    ):
        d = descr("fixed_zero_mean_unit_variance", **kwargs)
        assert_matches_core(ours([d], data, axes), core_run([d], {"raw": (data, axes)}))


@LAYOUTS
@ALL_DTYPES
def test_scale_range_matches_core(axes: tuple[str, ...], dtype: str) -> None:
    data = random_data(SHAPES[axes], dtype, seed=6)
    for red, (low, high) in itertools.product(
        reductions(axes), [(0.0, 100.0), (1.0, 99.8), (5.0, 50.0)]
    ):
        d = descr("scale_range", axes=red, min_percentile=low, max_percentile=high)
        assert_matches_core(ours([d], data, axes), core_run([d], {"raw": (data, axes)}))


def test_scale_range_uses_the_descriptions_eps() -> None:
    data = random_data(SHAPES[BCYX], "float32", seed=7) / 1000  # small range: eps matters
    d = descr("scale_range", axes=["y", "x"], min_percentile=2.0, max_percentile=98.0, eps=0.01)
    x = data.astype(np.float64)
    low = np.quantile(x, 0.02, axis=(2, 3), keepdims=True)
    high = np.quantile(x, 0.98, axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(
        ours([d], data, BCYX), (x - low) / (high - low + 0.01), rtol=1e-5, atol=1e-6
    )


def test_scale_range_with_reference_tensor_matches_core() -> None:
    rng = np.random.default_rng(8)
    target = random_data(SHAPES[BCYX], "float32", seed=8)
    # The reference has another axis order: its statistics are re-laid per axis id.
    ref_axes = ("batch", "y", "x", "channel")
    ref = (rng.normal(size=(1, 30, 20, 3)) * 7 + 50).astype("float32")
    for red in (None, ["y", "x"]):
        d = descr(
            "scale_range", axes=red, min_percentile=1.0, max_percentile=99.0, reference_tensor="ref"
        )
        proc = Processing([op_spec(d)], tensor_spec(BCYX))
        assert proc.reference_tensors == {"ref"}
        out = proc.run(target, BCYX, {"ref": (ref, ref_axes)})
        expected = core_run([d], {"raw": (target, BCYX), "ref": (ref, ref_axes)})
        assert_matches_core(out, expected)


@LAYOUTS
@ALL_DTYPES
def test_scale_linear_matches_core(axes: tuple[str, ...], dtype: str) -> None:
    data = random_data(SHAPES[axes], dtype, seed=9)
    n_channels = SHAPES[axes][1]
    last = axes[-1]
    for kwargs in (
        {"gain": 2.0, "offset": 3.0},
        {"gain": 0.5},
        {"offset": -7.25},
        {
            "axis": "channel",
            "gain": [1.0 + c for c in range(n_channels)],
            "offset": [-float(c) for c in range(n_channels)],
        },
        {"axis": "channel", "gain": [0.5 * (c + 1) for c in range(n_channels)]},
        {"axis": last, "offset": [float(i) for i in range(data.shape[-1])]},
    ):
        d = descr("scale_linear", **kwargs)
        assert_matches_core(ours([d], data, axes), core_run([d], {"raw": (data, axes)}))


@LAYOUTS
@ALL_DTYPES
def test_clip_matches_core(axes: tuple[str, ...], dtype: str) -> None:
    data = random_data(SHAPES[axes], dtype, seed=10)
    kwargs_list: list[dict[str, Any]] = [{"min": 0.0, "max": 100.0}, {"min": 20.5}, {"max": 40.0}]
    for red in reductions(axes):
        kwargs_list += [
            {"axes": red, "min_percentile": 0.1, "max_percentile": 99.8},
            {"axes": red, "min_percentile": 25.0},
            {"axes": red, "max_percentile": 90.0},
            {"axes": red, "min_percentile": 3.0, "max": 150.0},
        ]
    for kwargs in kwargs_list:
        d = descr("clip", **kwargs)
        assert_matches_core(ours([d], data, axes), core_run([d], {"raw": (data, axes)}))


def test_clip_percentile_method_follows_core() -> None:
    # Few values, so that interpolated and inverted-CDF percentiles differ clearly.
    data = np.arange(10, dtype="float32").reshape(1, 1, 2, 5)
    per_sample = ours([descr("clip", axes=["y", "x"], min_percentile=15.0)], data, BCYX)
    assert per_sample.min() == 1.0  # inverted CDF: the 2nd smallest of 10 values
    over_all = ours([descr("clip", min_percentile=15.0)], data, BCYX)
    assert over_all.min() == pytest.approx(1.35)  # linear: 0.15 * 9


@LAYOUTS
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_matches_core(axes: tuple[str, ...], dtype: str) -> None:
    data = random_data(SHAPES[axes], dtype, seed=11) / 10
    data.flat[:4] = [-1000.0, 1000.0, 0.0, -90.0]  # exp(1000) overflows
    d = descr("sigmoid")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # core's overflow in exp
        expected = core_run([d], {"raw": (data, axes)})
    out = ours([d], data, axes)
    assert out.dtype == np.dtype(dtype)
    assert_matches_core(out, expected)
    assert out.flat[0] == 0.0 and out.flat[1] == 1.0 and out.flat[2] == 0.5


@LAYOUTS
@ALL_DTYPES
def test_binarize_matches_core(axes: tuple[str, ...], dtype: str) -> None:
    data = random_data(SHAPES[axes], dtype, seed=12)
    threshold = float(np.median(data))
    d = descr("binarize", threshold=threshold)
    out = ours([d], data, axes)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, core_run([d], {"raw": (data, axes)}))
    # Along the last axis, core's broadcasting lines thresholds up correctly too.
    n = data.shape[-1]
    thresholds = [float(np.quantile(data, i / n)) for i in range(n)]
    d_last = descr("binarize", axis=axes[-1], threshold=thresholds)
    np.testing.assert_array_equal(
        ours([d_last], data, axes), core_run([d_last], {"raw": (data, axes)})
    )


def test_binarize_along_channel_compares_each_channel_with_its_threshold() -> None:
    data = random_data(SHAPES[BCYX], "float32", seed=13)
    thresholds = [float(np.median(data[:, c])) for c in range(3)]
    out = ours([descr("binarize", axis="channel", threshold=thresholds)], data, BCYX)
    expected = data > np.array(thresholds, "float32").reshape(1, 3, 1, 1)
    np.testing.assert_array_equal(out, expected)
    assert abs(out.mean() - 0.5) < 0.01  # each channel split at its median
    # A value equal to its threshold is not above it, as with a scalar threshold.
    data[0, 1, 0, 0] = np.float32(thresholds[1])
    assert not ours([descr("binarize", axis="channel", threshold=thresholds)], data, BCYX)[
        0, 1, 0, 0
    ]


@LAYOUTS
@pytest.mark.parametrize("dtype", ["float32", "float64", "uint16"])
def test_scale_mean_variance_matches_core(axes: tuple[str, ...], dtype: str) -> None:
    data = random_data(SHAPES[axes], dtype, seed=14)
    ref = random_data(SHAPES[axes], "float32", seed=15) * 3 + 11
    for red in reductions(axes):
        d = descr("scale_mean_variance", axes=red, reference_tensor="input")
        out = ours([d], data, axes, {"input": (ref, axes)})
        expected = core_run([d], {"raw": (data, axes), "input": (ref, axes)})
        assert_matches_core(out, expected)


def test_scale_mean_variance_matches_reference_moments() -> None:
    data = random_data(SHAPES[BCYX], "float32", seed=16)
    ref = random_data(SHAPES[BCYX], "float32", seed=17)
    d = descr("scale_mean_variance", axes=["y", "x"], reference_tensor="input", eps=1e-6)
    out = ours([d], data, BCYX, {"input": (ref, BCYX)}).astype(np.float64)
    np.testing.assert_allclose(
        out.mean(axis=(2, 3)), ref.mean(axis=(2, 3), dtype=np.float64), atol=1e-3
    )
    np.testing.assert_allclose(
        out.std(axis=(2, 3)), ref.std(axis=(2, 3), dtype=np.float64), rtol=1e-5
    )


@LAYOUTS
def test_softmax_matches_core(axes: tuple[str, ...]) -> None:
    data = random_data(SHAPES[axes], "float32", seed=18) / 20
    d = descr("softmax", axis="channel")
    out = ours([d], data, axes)
    assert_matches_core(out, core_run([d], {"raw": (data, axes)}))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)


# ------------------------------------------------------------------ sequences, stages


def test_zoo_preprocessing_sequence_matches_core() -> None:
    # The most common zoo input pipeline (converted from format 0.4).
    data = random_data((1, 1, 64, 48), "uint16", seed=19)
    descrs = [
        descr("ensure_dtype", dtype="float32"),
        descr("zero_mean_unit_variance", axes=["x", "y"]),
        descr("ensure_dtype", dtype="float32"),
    ]
    proc = Processing([op_spec(d) for d in descrs], tensor_spec(BCYX))
    assert proc.n_stages == 1
    out = proc.run(data, BCYX)
    assert out.dtype == np.float32
    assert_matches_core(out, core_run(descrs, {"raw": (data, BCYX)}, stats_before_each=False))


@pytest.mark.parametrize(
    "descrs",
    [
        [
            descr("ensure_dtype", dtype="float32"),
            descr("clip", axes=["z", "y", "x"], min_percentile=0.1, max_percentile=99.8),
            descr("zero_mean_unit_variance", axes=["z", "y", "x"]),
            descr("ensure_dtype", dtype="float32"),
        ],
        [
            descr("scale_linear", gain=3.0, offset=-40.0),
            descr("sigmoid"),
            descr(
                "scale_range",
                axes=["channel", "z", "y", "x"],
                min_percentile=5.0,
                max_percentile=95.0,
            ),
            descr("clip", min=0.0, max=1.0),
            descr("zero_mean_unit_variance"),
        ],
    ],
    ids=["clip-then-normalize", "five-ops"],
)
def test_later_ops_see_statistics_of_the_processed_data(descrs: list[Any]) -> None:
    data = random_data(SHAPES[BCZYX], "float32", seed=20)
    data[0, 0, 0, 0, :3] = 5000.0  # outliers that clipping removes
    proc = Processing([op_spec(d) for d in descrs], tensor_spec(BCZYX))
    assert proc.n_stages > 1
    out = proc.run(data, BCZYX)
    assert_matches_core(out, core_run(descrs, {"raw": (data, BCZYX)}, stats_before_each=True))
    # bioimageio.core's own pipeline takes every statistic on the unprocessed data,
    # which here gives a clearly different result ...
    core_pipeline = core_run(descrs, {"raw": (data, BCZYX)}, stats_before_each=False)
    assert np.abs(out - core_pipeline).max() > 1e-2
    # ... and which sequential_stats=False reproduces.
    compat = ours(descrs, data, BCZYX, sequential_stats=False)
    assert_matches_core(compat, core_pipeline)


def test_stages_and_their_requests() -> None:
    ops = [
        descr("ensure_dtype", dtype="float32"),
        descr("clip", axes=["y", "x"], min_percentile=1.0, max_percentile=99.0),
        descr("zero_mean_unit_variance", axes=["y", "x"]),
    ]
    proc = Processing([op_spec(d) for d in ops], tensor_spec(BCYX))
    assert proc.n_stages == 2
    assert proc.stat_requests(0) == {
        StatRequest("raw", "quantile", ("y", "x"), q=0.01, method="inverted_cdf"),
        StatRequest("raw", "quantile", ("x", "y"), q=0.99, method="inverted_cdf"),
    }
    assert proc.stat_requests(1) == {
        StatRequest("raw", "mean", ("y", "x"), stage=1),
        StatRequest("raw", "std", ("y", "x"), stage=1),
    }
    assert proc.stat_requests() == proc.stat_requests(0) | proc.stat_requests(1)
    # Reducing every axis of the tensor is the request for "all axes".
    full = Processing(
        [op_spec(descr("zero_mean_unit_variance", axes=list(BCYX)))], tensor_spec(BCYX)
    )
    assert full.stat_requests() == {
        StatRequest("raw", "mean", None),
        StatRequest("raw", "std", None),
    }
    assert Processing([], tensor_spec(BCYX)).is_identity


def test_apply_with_staged_stats_equals_run() -> None:
    data = random_data(SHAPES[BCYX], "uint16", seed=21)
    ops = [
        descr("scale_range", axes=["y", "x"], min_percentile=1.0, max_percentile=99.0),
        descr("clip", min=0.0, max=1.0),
        descr("zero_mean_unit_variance", axes=["y", "x"]),
    ]
    proc = Processing([op_spec(d) for d in ops], tensor_spec(BCYX))
    stats = proc.sample_stats(data, BCYX)
    assert set(stats) == proc.stat_requests()
    np.testing.assert_array_equal(proc.apply(data, BCYX, stats), proc.run(data, BCYX))
    # Stage by stage, with statistics of each stage's input computed by the caller.
    first = proc.apply(data, BCYX, stats, stage=0)
    stage1 = compute_stats(proc.stat_requests(1), {"raw": (first, BCYX)})
    np.testing.assert_array_equal(proc.apply(first, BCYX, stage1, stage=1), proc.run(data, BCYX))


# --------------------------------------------------------------------- tile invariance


def _tiles(
    shape: Sequence[int], axes: Sequence[str], cuts: Mapping[str, Sequence[int]]
) -> list[tuple[slice, ...]]:
    per_axis = []
    for axis, n in zip(axes, shape, strict=True):
        edges = [0, *cuts.get(axis, ()), n]
        per_axis.append([slice(a, b) for a, b in itertools.pairwise(edges)])
    return list(itertools.product(*per_axis))


@pytest.mark.parametrize(
    ("axes", "descrs"),
    [
        (
            BCYX,
            [
                descr("ensure_dtype", dtype="float32"),
                descr("scale_range", axes=["y", "x"], min_percentile=1.0, max_percentile=99.8),
                descr("clip", min=0.0, max=1.0),
            ],
        ),
        (
            BCYX,
            [descr("zero_mean_unit_variance"), descr("sigmoid"), descr("binarize", threshold=0.5)],
        ),
        (
            BCZYX,
            [
                descr("clip", axes=["z", "y", "x"], min_percentile=0.5, max_percentile=99.5),
                descr("zero_mean_unit_variance", axes=["batch", "z", "y", "x"]),
                descr("scale_linear", axis="channel", gain=[2.0, 3.0], offset=[1.0, -1.0]),
                descr("ensure_dtype", dtype="uint8"),
            ],
        ),
    ],
    ids=["scale-range", "normalize-binarize", "3d-two-stages"],
)
def test_tiles_processed_with_whole_sample_stats_equal_the_whole(
    axes: tuple[str, ...], descrs: list[Any]
) -> None:
    data = random_data(SHAPES[axes], "uint16", seed=22)
    proc = Processing([op_spec(d) for d in descrs], tensor_spec(axes))
    stats = proc.sample_stats(data, axes)
    whole = proc.apply(data, axes, stats)
    np.testing.assert_array_equal(whole, proc.run(data, axes))
    cuts = {"z": [2, 5], "y": [7, 19], "x": [10]}
    stitched = np.empty_like(whole)
    for tile in _tiles(data.shape, axes, cuts):
        stitched[tile] = proc.apply(data[tile], axes, stats)
    np.testing.assert_array_equal(stitched, whole)
    # Statistics of a tile alone would give something else.
    tile = _tiles(data.shape, axes, cuts)[0]
    assert not np.array_equal(proc.run(data[tile], axes), whole[tile])


def test_stats_that_do_not_fit_the_tile_are_refused() -> None:
    data = random_data(SHAPES[BCYX], "float32", seed=23)
    proc = Processing(
        [op_spec(descr("zero_mean_unit_variance", axes=["y", "x"]))], tensor_spec(BCYX)
    )
    stats = proc.sample_stats(data, BCYX)
    with pytest.raises(ShapeError, match="does not fit"):
        proc.apply(data[:, :2], BCYX, stats)  # a tile splitting the kept channel axis
    with pytest.raises(ValueError, match="not given"):
        proc.apply(data, BCYX, {})


def test_apply_never_modifies_its_input_and_copies_only_when_needed() -> None:
    data = random_data(SHAPES[BCYX], "float32", seed=24)
    before = data.copy()
    ops = [descr("zero_mean_unit_variance"), descr("sigmoid"), descr("scale_linear", gain=2.0)]
    proc = Processing([op_spec(d) for d in ops], tensor_spec(BCYX))
    out = proc.run(data, BCYX)
    np.testing.assert_array_equal(data, before)
    assert not np.shares_memory(out, data)
    cast = Processing([op_spec(descr("ensure_dtype", dtype="float32"))], tensor_spec(BCYX))
    assert cast.run(data, BCYX) is data


# ------------------------------------------------------------------------ statistics


def _requests(tensor_id: str, axes_options: Sequence[tuple[str, ...] | None]) -> set[StatRequest]:
    reqs: set[StatRequest] = set()
    for red in axes_options:
        for kind in ("mean", "std", "var"):
            reqs.add(StatRequest(tensor_id, kind, red))  # type: ignore[arg-type]
        for q, method in itertools.product(
            (0.0, 0.01, 0.25, 0.5, 0.998, 1.0), ("linear", "inverted_cdf")
        ):
            reqs.add(StatRequest(tensor_id, "quantile", red, q=q, method=method))  # type: ignore[arg-type]
    return reqs


def _numpy_stat(req: StatRequest, data: np.ndarray, axes: Sequence[str]) -> np.ndarray:
    red = tuple(range(data.ndim)) if req.axes is None else tuple(axes.index(a) for a in req.axes)
    if req.kind == "mean":
        return np.nanmean(data, axis=red, dtype=np.float64, keepdims=True)
    if req.kind == "var":
        return np.nanvar(data, axis=red, dtype=np.float64, keepdims=True)
    if req.kind == "std":
        return np.nanstd(data, axis=red, dtype=np.float64, keepdims=True)
    return np.nanquantile(data, req.q, axis=red, method=req.method, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "uint16", "int16", "int8"])
def test_compute_stats_equals_numpy(dtype: str) -> None:
    # 3 x 180 x 400 values: enough for the exact-histogram path of 16-bit integers.
    axes = ("channel", "y", "x")
    data = random_data((1, 3, 180 * 400), dtype, seed=25).reshape(3, 180, 400)
    if dtype.startswith("float"):
        data[1, 5, 7] = np.nan
    reqs = _requests("t", [None, ("y", "x"), ("x",)])
    stats = compute_stats(reqs, {"t": (data, axes)})
    assert set(stats) == reqs
    for req in reqs:
        expected = _numpy_stat(req, data, axes)
        assert stats[req].shape == expected.shape, req
        assert stats[req].dtype == np.float64
        if req.kind == "quantile" and not dtype.startswith("float"):
            np.testing.assert_array_equal(stats[req], expected, err_msg=str(req))
        else:
            # numpy's NaN-aware quantiles may round the last bit differently.
            np.testing.assert_allclose(stats[req], expected, rtol=1e-7, err_msg=str(req))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint32", "int16"])
@pytest.mark.parametrize("content", ["normal", "mostly-background", "few-levels", "constant"])
def test_quantiles_of_large_arrays_equal_numpy_exactly(dtype: str, content: str) -> None:
    rng = np.random.default_rng(33)
    shape = (2, 150, 140)  # 21000 values per row: large enough for the selection path
    if content == "normal":
        data = rng.normal(500, 120, size=shape)
    elif content == "mostly-background":
        data = np.where(rng.random(shape) < 0.97, 3.0, rng.exponential(2000, size=shape))
    elif content == "few-levels":
        data = rng.integers(0, 5, size=shape) * 1000.0 - 2000.0
    else:
        data = np.full(shape, 42.0)
    if dtype.startswith("u"):
        data = np.abs(data)
    data = data.astype(dtype)
    qs = (0.0, 1e-4, 0.001, 0.01, 0.2, 0.5, 0.97, 0.98, 0.998, 0.9999, 1.0)
    for method in ("linear", "inverted_cdf"):
        reqs = {StatRequest("t", "quantile", ("y", "x"), q=q, method=method) for q in qs}
        stats = compute_stats(reqs, {"t": (data, ("channel", "y", "x"))})
        for req in reqs:
            # q as a list, as bioimageio.core passes it (numpy computes a scalar q of
            # float32 data in float32, a list in float64).
            [expected] = np.quantile(data, [req.q], axis=(1, 2), method=method, keepdims=True)
            np.testing.assert_array_equal(stats[req], expected, err_msg=str(req))


@pytest.mark.parametrize("dtype", ["float32", "uint16"])
def test_percentile_ops_on_large_images_match_core(dtype: str) -> None:
    data = random_data((1, 2, 160, 128), dtype, seed=34)
    for d in (
        descr("scale_range", axes=["y", "x"], min_percentile=1.0, max_percentile=99.8),
        descr("scale_range", min_percentile=0.5, max_percentile=99.5),
        descr("clip", axes=["y", "x"], min_percentile=0.1, max_percentile=99.9),
        descr("clip", min_percentile=2.0, max_percentile=98.0),
    ):
        assert_matches_core(ours([d], data, BCYX), core_run([d], {"raw": (data, BCYX)}))


def _blocks(
    data: np.ndarray, axes: Sequence[str], cuts: Mapping[str, Sequence[int]]
) -> list[np.ndarray]:
    tiles = _tiles(data.shape, axes, cuts)
    order = np.random.default_rng(26).permutation(len(tiles))
    return [data[tiles[i]] for i in order]


@pytest.mark.parametrize("dtype", ["float32", "uint16", "uint8", "int16", "float64"])
def test_accumulator_equals_compute_stats(dtype: str) -> None:
    axes = BCYX
    data = random_data((2, 3, 90, 70), dtype, seed=27)
    reqs = _requests("raw", [None, ("batch", "y", "x"), ("y", "x")])
    expected = compute_stats(reqs, {"raw": (data, axes)})
    acc = StatsAccumulator(reqs)
    buffer = np.empty((1, 3, 90, 70), dtype)
    for b in range(2):
        # Split along reduced axes only (batch only for requests reducing it).
        for block in _blocks(data[b : b + 1], axes, {"y": [13, 50], "x": [31]}):
            # The accumulator must not keep a reference to a reused buffer.
            view = buffer[tuple(slice(0, n) for n in block.shape)]
            view[...] = block
            acc.update("raw", view, axes)
            buffer.fill(0)
    result = acc.finalize()
    per_sample = {r for r in reqs if r.axes == ("x", "y")}
    for req in reqs - per_sample:
        if req.kind == "quantile":
            np.testing.assert_array_equal(result[req], expected[req], err_msg=str(req))
        else:
            np.testing.assert_allclose(result[req], expected[req], rtol=1e-10, err_msg=str(req))
    # Blocks must span the axes that are kept (here channel): a split one is refused.
    acc2 = StatsAccumulator(per_sample)
    acc2.update("raw", data[:1, :2], axes)
    with pytest.raises(ShapeError, match="whole length"):
        acc2.update("raw", data[:1, 2:], axes)


def test_accumulator_accepts_blocks_in_any_axis_order_and_ignores_other_tensors() -> None:
    data = random_data((1, 2, 50, 40), "float32", seed=28)
    reqs = {
        StatRequest("raw", "std", ("y", "x")),
        StatRequest("raw", "quantile", ("y", "x"), q=0.3),
    }
    acc = StatsAccumulator(reqs)
    acc.update("raw", data[:, :, :20], BCYX)
    acc.update("raw", data[:, :, 20:].transpose(3, 2, 1, 0), ("x", "y", "channel", "batch"))
    acc.update("other", np.zeros((3, 3)), ("y", "x"))
    result = acc.finalize()
    expected = compute_stats(reqs, {"raw": (data, BCYX)})
    for req in reqs:
        np.testing.assert_allclose(result[req], expected[req], rtol=1e-12)


def test_accumulator_with_nans_equals_compute_stats() -> None:
    data = random_data((1, 2, 40, 40), "float32", seed=29)
    data[0, 0, 3, :7] = np.nan
    data[0, 1, 30:, :] = np.nan
    reqs = _requests("raw", [None, ("y", "x")])
    expected = compute_stats(reqs, {"raw": (data, BCYX)})
    acc = StatsAccumulator(reqs)
    for block in _blocks(data, BCYX, {"y": [10, 31]}):
        acc.update("raw", block, BCYX)
    result = acc.finalize()
    for req in reqs:
        assert not np.isnan(result[req]).any()
        np.testing.assert_allclose(result[req], expected[req], rtol=1e-10, err_msg=str(req))


def test_accumulator_histogram_estimate_beyond_max_exact_samples() -> None:
    rng = np.random.default_rng(30)
    # A narrow first block, then wider ones on both sides: the histogram has to grow.
    blocks = [
        rng.normal(100, 1, size=(1, 1, 50, 64)).astype("float32"),
        rng.normal(100, 30, size=(1, 1, 50, 64)).astype("float32"),
        rng.normal(-200, 50, size=(1, 1, 50, 64)).astype("float32"),
        rng.exponential(300, size=(1, 1, 50, 64)).astype("float32") + 100,
    ]
    data = np.concatenate(blocks, axis=2)
    qs = (0.0, 0.001, 0.1, 0.5, 0.9, 0.998, 1.0)
    reqs = {
        StatRequest("raw", "quantile", None, q=q, method=m)
        for q in qs
        for m in ("linear", "inverted_cdf")
    }
    reqs |= {StatRequest("raw", "mean", None), StatRequest("raw", "std", None)}
    bins = 4096
    acc = StatsAccumulator(reqs, max_exact_samples=5000, histogram_bins=bins)
    for block in blocks:
        acc.update("raw", block, BCYX)
    result = acc.finalize()
    expected = compute_stats(reqs, {"raw": (data, BCYX)})
    value_range = float(data.max() - data.min())
    for req in reqs:
        if req.kind != "quantile" or req.q in (0.0, 1.0):
            np.testing.assert_allclose(result[req], expected[req], rtol=1e-10, err_msg=str(req))
        else:
            # Within a few bin widths (the width at most doubles past the data range).
            assert abs((result[req] - expected[req]).item()) <= 4 * value_range / bins, req


def test_accumulator_is_exact_for_16_bit_data_of_any_size() -> None:
    data = random_data((1, 2, 120, 100), "uint16", seed=31)
    reqs = _requests("raw", [("y", "x")])
    acc = StatsAccumulator(reqs, max_exact_samples=100)
    for block in _blocks(data, BCYX, {"y": [40, 80]}):
        acc.update("raw", block, BCYX)
    result = acc.finalize()
    expected = compute_stats(reqs, {"raw": (data, BCYX)})
    for req in reqs:
        if req.kind == "quantile":
            np.testing.assert_array_equal(result[req], expected[req], err_msg=str(req))


def test_stat_requests_are_hashable_keys_with_normalized_axes() -> None:
    assert StatRequest("t", "mean", ("y", "x")) == StatRequest("t", "mean", ("x", "y"))
    assert (
        len({StatRequest("t", "quantile", None, q=0.5), StatRequest("t", "quantile", None, q=0.5)})
        == 1
    )
    assert StatRequest("t", "quantile", None, q=0.5) != StatRequest(
        "t", "quantile", None, q=0.5, method="inverted_cdf"
    )
    with pytest.raises(ValueError):
        StatRequest("t", "quantile", None)
    with pytest.raises(ValueError):
        StatRequest("t", "quantile", None, q=1.5)
    with pytest.raises(ValueError):
        StatRequest("t", "mean", None, q=0.5)


def test_align_stat_relays_by_axis_id() -> None:
    value = np.arange(6, dtype=np.float64).reshape(1, 2, 1, 3)  # (batch, y, x, channel)
    aligned = align_stat(value, ("batch", "y", "x", "channel"), ("batch", "channel", "z", "y", "x"))
    assert aligned.shape == (1, 3, 1, 2, 1)
    assert aligned[0, 2, 0, 1, 0] == value[0, 1, 0, 2]
    with pytest.raises(AxesMismatchError):
        align_stat(value, ("batch", "y", "x", "channel"), ("batch", "channel", "x"))


def test_missing_axes_are_reported() -> None:
    with pytest.raises(AxesMismatchError, match="'z'"):
        compute_stats({StatRequest("t", "mean", ("z",))}, {"t": (np.zeros((2, 2)), ("y", "x"))})
    proc = Processing(
        [op_spec(descr("binarize", axis="channel", threshold=[0.1, 0.2]))], tensor_spec(BCYX)
    )
    with pytest.raises(ShapeError, match="2 values"):
        proc.run(np.zeros((1, 3, 4, 4), "float32"), BCYX)


# ------------------------------------------------------------------------ errors, zoo


@pytest.mark.parametrize("op_id", ["stardist_postprocessing", "no_such_op"])
def test_unknown_op_raises_model_package_error_naming_it(op_id: str) -> None:
    with pytest.raises(ModelPackageError, match=op_id) as info:
        Processing([OpSpec("sigmoid"), OpSpec(op_id, {"x": 1})], tensor_spec(BCYX, "probability"))
    assert "'probability'" in str(info.value)


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (OpSpec("binarize", {}), "threshold"),
        (OpSpec("ensure_dtype", {"dtype": "complex64"}), "complex64"),
        (OpSpec("zero_mean_unit_variance", {"axes": ["t"]}), "'t'"),
        (OpSpec("clip", {"min": 3.0, "max": 1.0}), "not smaller"),
        (OpSpec("scale_range", {"min_percentile": 90.0, "max_percentile": 10.0}), "percentiles"),
        (OpSpec("scale_linear", {"gain": [1.0, 2.0]}), "axis"),
    ],
)
def test_invalid_arguments_raise_model_package_error(op: OpSpec, message: str) -> None:
    with pytest.raises(ModelPackageError, match=message):
        Processing([op], tensor_spec(BCYX))


def _zoo_model_specs() -> list[tuple[str, Any]]:
    from bioimageio.spec import ValidationContext, build_description

    from zoodesk.models.spec import model_spec_from_descr

    specs = []
    for path in sorted((SNAPSHOT / "rdfs").glob("*.json")):
        with warnings.catch_warnings(), ValidationContext(perform_io_checks=False):
            warnings.simplefilter("ignore")
            described = build_description(json.loads(path.read_text()), format_version="latest")
        if isinstance(described, v0_5.ModelDescr):
            specs.append((path.stem, model_spec_from_descr(described)))
    return specs


def test_every_zoo_processing_compiles() -> None:
    specs = _zoo_model_specs()
    assert len(specs) > 80
    multi_stage = set()
    seen_ops = set()
    for name, spec in specs:
        for tensor in spec.inputs:
            proc = Processing(tensor.preprocessing, tensor)
            seen_ops |= {op.id for op in tensor.preprocessing}
            if proc.n_stages > 1:
                multi_stage.add(name)
        for tensor in spec.outputs:
            Processing(tensor.postprocessing, tensor)
            seen_ops |= {op.id for op in tensor.postprocessing}
    assert {"zero_mean_unit_variance", "scale_range", "clip", "binarize", "sigmoid"} <= seen_ops
    # Only the model that clips with percentiles before normalizing needs two stages.
    assert multi_stage == {"plucky-leopard"}


def test_real_model_processing_matches_core_pipeline(nuclei_dir: Path) -> None:
    from bioimageio.core.proc_setup import setup_pre_and_postprocessing

    from zoodesk.models.package import load_model_package

    package = load_model_package(nuclei_dir)
    [inp] = package.spec.inputs
    [outp] = package.spec.outputs
    data = np.load(nuclei_dir / "test_input.npy")
    setup = setup_pre_and_postprocessing(package.descr, dataset_for_initial_statistics=[])
    sample = Sample(members={MemberId(inp.id): Tensor(data, dims=inp.axis_ids)}, stat={}, id="s")
    for op in setup.pre:
        op(sample)
    expected = sample.members[MemberId(inp.id)].data.values
    out = Processing(inp.preprocessing, inp).run(data, inp.axis_ids)
    assert out.dtype == np.float32
    assert_matches_core(out, expected)
    logits = np.random.default_rng(32).normal(size=data.shape).astype("float32") * 5
    post_sample = Sample(
        members={MemberId(outp.id): Tensor(logits, dims=outp.axis_ids)}, stat={}, id="s"
    )
    for op in setup.post:
        op(post_sample)
    post = Processing(outp.postprocessing, outp).run(logits, outp.axis_ids)
    assert_matches_core(post, post_sample.members[MemberId(outp.id)].data.values)
