"""Pre- and postprocessing of model tensors: the bioimage.io processing operations.

A tensor's preprocessing (or postprocessing) is a list of operations, each given as an
:class:`~zoodesk.models.spec.OpSpec` whose keyword arguments are those of bioimage.io
format 0.5 (descriptions in format 0.4 reach us converted by bioimageio.spec).
:class:`Processing` compiles such a list once per model and applies it to numpy arrays.

Statistics
----------
Operations such as ``zero_mean_unit_variance`` or ``scale_range`` need statistics of
the data (mean, standard deviation, percentiles).  They are always taken over the
*whole sample*, never over a tile, so an operation list is applied in two steps:

1. the statistics it asks for (:meth:`Processing.stat_requests`, a set of hashable
   :class:`StatRequest`) are computed on whole tensors with :func:`compute_stats`, or
   streamed block by block with :class:`StatsAccumulator` for images that do not fit
   in memory (blocks may also be fed to several accumulators, in other processes,
   and the accumulators merged: :func:`merge_accumulators`);
2. :meth:`Processing.apply` applies the operations, which are elementwise once the
   statistics are known, to the whole sample or to any tile of it.

Each statistic is a float64 array with the ``keepdims`` shape over the axes of the
array it was computed from: size 1 along the reduced axes, full length along the
others (all ones when every axis is reduced).  A tile that spans the whole length of
every axis that is *not* reduced (the normal case: statistics reduce the spatial
axes, tiles split only those) is processed with the very same statistics, because
they broadcast against it: ``processing.apply(tile, axes, stats)``.  A tile that
covers only part of a kept axis needs the statistics sliced the same way along that
axis first.

Stages
------
Operations run one after another, so an operation's statistics describe the data as
left by the operations before it (``clip`` with percentiles followed by
``zero_mean_unit_variance`` normalizes the *clipped* data).  The list is therefore
split into stages: a new stage begins at an operation that needs statistics of its
own tensor when an earlier operation of the current stage changed the values (a cast
by ``ensure_dtype`` does not count: it changes values by rounding at most).  The
statistics of stage ``k`` (``StatRequest.stage == k``) are computed on the data
entering stage ``k``; stage 0 is the tensor as given.  Nearly every model has a single
stage.  :meth:`Processing.sample_stats` and :meth:`Processing.run` handle stages for a
whole sample in memory; a streaming pipeline applies stage ``k - 1`` before
accumulating the statistics of stage ``k``.  bioimageio.core 0.11 instead computes
every statistic on the unprocessed tensor; ``sequential_stats=False`` reproduces that.

A ``reference_tensor`` (``scale_range``, ``scale_mean_variance``) names the
*unprocessed* tensor whose statistics are used, as the specification says: its
statistics are always stage 0.  They are computed in the reference tensor's axis
layout; :func:`align_stat` re-lays them over the processed tensor's axes when the
two differ (:meth:`Processing.sample_stats` and :meth:`Processing.run` do this).

Agreement with bioimageio.core 0.11
-----------------------------------
The results match bioimageio.core's operations to float32 rounding, with these
deliberate differences:

- ``eps`` of ``zero_mean_unit_variance`` and ``scale_range`` is honoured (core always
  uses 1e-6); ``fixed_zero_mean_unit_variance`` divides by ``std + 1e-6`` as core does;
- ``ensure_dtype`` to an integer type rounds to the nearest integer (ties to even),
  clips to the type's range and maps NaN to 0, where core truncates and wraps around;
- ``binarize`` along an axis compares each entry with the threshold of its own
  position along that axis (core broadcasts the thresholds against the last axis);
- operations that compute return float32 (float64 for float64 input), and
  differences from a mean are taken with the float64 mean, not its float32 rounding.

Percentiles equal those of :func:`numpy.quantile` (with the quantiles given as a
list, as core does) using core's method: ``linear`` for ``scale_range``; for
``clip``, ``inverted_cdf`` when the reduced axes are given and exclude ``batch``, else
``linear``.  They are computed faster than by numpy's partial sort (exact integer
histograms for 8- and 16-bit data, histogram-guided selection otherwise); for 16-bit
signed data whose neighbouring order statistics lie more than 32767 apart they are
right where numpy's interpolation overflows.  Standard deviations are population
values (``ddof=0``).  NaN values are ignored by the statistics.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from zoodesk.errors import AxesMismatchError, ModelPackageError, ShapeError
from zoodesk.models.spec import SUPPORTED_OPS, OpSpec, TensorSpec

StatKind = Literal["mean", "std", "var", "quantile"]
QuantileMethod = Literal["linear", "inverted_cdf"]
Array = NDArray[Any]

#: ``fixed_zero_mean_unit_variance`` adds this to ``std`` (as bioimageio.core does).
FIXED_STD_EPS = 1e-6

_ENSURE_DTYPES = (
    "float32",
    "float64",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "bool",
)
# Integer histograms with one bin per value are used for these types: exact
# percentiles, faster than sorting, and mergeable across blocks.
_SMALL_INT_KINDS = ("uint8", "int8", "uint16", "int16")
# Quantiles of at least this many values use histogram-guided selection.
_SELECT_MIN_VALUES = 1 << 14
_SELECT_BINS = 4096
# Upper bound on the number of histogram cells (kept positions x bins) per statistic.
_MAX_HIST_CELLS = 1 << 23


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class StatRequest:
    """One statistic of one tensor, usable as a dictionary key.

    Parameters
    ----------
    tensor_id:
        The tensor the statistic is computed on.
    kind:
        ``mean``, ``std`` or ``var`` (population, ``ddof=0``), or ``quantile``.
    axes:
        The axis ids that are reduced; ``None`` reduces all axes.  Stored sorted, so
        the order given does not matter.
    q:
        The quantile in [0, 1] (``kind == "quantile"`` only).
    method:
        The :func:`numpy.quantile` method (``kind == "quantile"`` only).
    stage:
        The stage whose input data the statistic describes (see the module
        documentation); 0 is the tensor as given.
    """

    tensor_id: str
    kind: StatKind
    axes: tuple[str, ...] | None
    q: float | None = None
    method: QuantileMethod = "linear"
    stage: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("mean", "std", "var", "quantile"):
            raise ValueError(f"unknown statistic {self.kind!r}")
        if self.axes is not None:
            axes = tuple(sorted(str(a) for a in self.axes))
            if len(set(axes)) != len(axes):
                raise ValueError(f"repeated axis in {self.axes!r}")
            object.__setattr__(self, "axes", axes)
        if self.kind == "quantile":
            if self.q is None or not 0.0 <= self.q <= 1.0:
                raise ValueError(f"a quantile needs q in [0, 1], got {self.q!r}")
            object.__setattr__(self, "q", float(self.q))
            if self.method not in ("linear", "inverted_cdf"):
                raise ValueError(f"unsupported quantile method {self.method!r}")
        elif self.q is not None:
            raise ValueError(f"q is only meaningful for quantiles, not for {self.kind!r}")
        if self.stage < 0:
            raise ValueError(f"stage must be >= 0, got {self.stage}")


def _reduced_positions(
    request_axes: tuple[str, ...] | None, axes: Sequence[str], tensor_id: str
) -> tuple[int, ...]:
    if request_axes is None:
        return tuple(range(len(axes)))
    missing = [a for a in request_axes if a not in axes]
    if missing:
        raise AxesMismatchError(
            f"tensor {tensor_id!r}: statistics over axes {list(request_axes)} need axes "
            f"{missing}, which the data (axes {list(axes)}) does not have"
        )
    return tuple(sorted(axes.index(a) for a in request_axes))


def _check_axes(array: Array, axes: Sequence[str], tensor_id: str) -> tuple[str, ...]:
    axes = tuple(str(a) for a in axes)
    if len(axes) != array.ndim:
        raise AxesMismatchError(
            f"tensor {tensor_id!r}: {len(axes)} axes {list(axes)} given for an array "
            f"of shape {array.shape}"
        )
    if len(set(axes)) != len(axes):
        raise AxesMismatchError(f"tensor {tensor_id!r}: repeated axis in {list(axes)}")
    return axes


#: Statistics by request, as :func:`compute_stats` returns them.
Stats = Mapping[StatRequest, Array]


# ------------------------------------------------------------------- whole-tensor stats


def _moments(array: Array, red: tuple[int, ...], need_var: bool) -> tuple[Array, Array | None]:
    """Mean and population variance over ``red`` in float64, keepdims-shaped."""
    mean: Array = np.asarray(np.mean(array, axis=red, dtype=np.float64, keepdims=True))
    var: Array | None = None
    if need_var:
        var = np.asarray(np.var(array, axis=red, dtype=np.float64, keepdims=True))
    if array.dtype.kind in "fc" and np.isnan(mean).any():
        # NaNs are rare, so the NaN-aware (slower) reductions run only when needed.
        return _nan_moments(array, red, need_var)
    return mean, var


def _nan_moments(array: Array, red: tuple[int, ...], need_var: bool) -> tuple[Array, Array | None]:
    # Written out rather than np.nanmean/np.nanvar, which warn on all-NaN slices.
    valid = ~np.isnan(array)
    n = np.sum(valid, axis=red, keepdims=True)
    safe_n = np.maximum(n, 1)
    total = np.sum(np.where(valid, array, 0), axis=red, dtype=np.float64, keepdims=True)
    mean = np.where(n > 0, total / safe_n, np.nan)
    if not need_var:
        return mean, None
    dev = np.where(valid, array - mean, 0.0)
    var = np.sum(dev * dev, axis=red, keepdims=True) / safe_n
    return mean, np.where(n > 0, var, np.nan)


def _as_rows(array: Array, red: tuple[int, ...], copy: bool) -> tuple[Array, tuple[int, ...]]:
    """``array`` as (kept positions, reduced values) and the keepdims shape of a result."""
    kept = tuple(i for i in range(array.ndim) if i not in red)
    keep_shape = tuple(1 if i in red else array.shape[i] for i in range(array.ndim))
    n_kept = math.prod(array.shape[i] for i in kept)
    n_red = math.prod(array.shape[i] for i in red)
    moved = array.transpose(kept + red)
    if copy:
        rows = np.empty((n_kept, n_red), dtype=array.dtype)
        rows.reshape(moved.shape)[...] = moved
    else:
        rows = moved.reshape(n_kept, n_red)
    return rows, keep_shape


def _lerp(a: Array, b: Array, gamma: Array) -> Array:
    # numpy.quantile's interpolation, repeated so that the results agree bit for bit.
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def _quantiles_from_ranks(
    value_at: Callable[[Array], Array], n: Array, q: float, method: QuantileMethod
) -> Array:
    """Quantile ``q`` per row from a function giving the value of integer ranks."""
    n = n.astype(np.int64)
    if method == "linear":
        virtual = (n - 1) * np.float64(q)
        prev = np.floor(virtual)
        gamma = virtual - prev
        last = virtual >= n - 1
        lo = np.where(last, n - 1, prev).astype(np.int64)
        hi = np.where(last, n - 1, prev + 1).astype(np.int64)
        lo = np.maximum(lo, 0)
        hi = np.maximum(hi, 0)
        return _lerp(value_at(lo), value_at(hi), gamma)
    virtual = n * np.float64(q) - 1
    prev = np.floor(virtual)
    rank = np.where(virtual - prev == 0, prev, prev + 1).astype(np.int64)
    return value_at(np.clip(rank, 0, np.maximum(n - 1, 0)))


def _int_histogram(rows: Array, offset: int, span: int) -> Array:
    """Counts of each integer value per row: shape (rows, span)."""
    n_rows = rows.shape[0]
    if n_rows == 1:
        flat = rows.ravel()
        if offset:
            flat = flat.astype(np.intp) - offset
        return np.bincount(flat, minlength=span).reshape(1, span)
    flat = rows.astype(np.intp) + (np.arange(n_rows, dtype=np.intp) * span - offset)[:, None]
    return np.bincount(flat.ravel(), minlength=n_rows * span).reshape(n_rows, span)


def _value_at_rank_int(counts: Array, offset: int) -> Callable[[Array], Array]:
    cum = np.cumsum(counts, axis=1)

    def value_at(rank: Array) -> Array:
        # First bin whose cumulative count exceeds the rank, per row.
        pos = np.argmax(cum > rank[:, None], axis=1)
        return (pos + offset).astype(np.float64)

    return value_at


def _small_int_range(dtype: np.dtype[Any]) -> tuple[int, int] | None:
    if dtype.name not in _SMALL_INT_KINDS:
        return None
    info = np.iinfo(dtype)
    return int(info.min), int(info.max) - int(info.min) + 1


def _select_quantiles(
    row: Array, qs: Sequence[float], method: QuantileMethod
) -> list[float] | None:
    """Quantiles of a 1-D array by histogram-guided selection; ``None`` if not finite.

    Gives exactly numpy.quantile's results, several times faster than its partial
    sort: a coarse histogram (bin index monotonic in the value) finds the bin holding
    each needed order statistic, and only that bin's values are partially sorted.
    """
    low, high = row.min(), row.max()
    if not (np.isfinite(low) and np.isfinite(high)):
        return None  # NaN or inf: numpy's NaN-aware path decides
    n = row.size
    if low == high:
        return [float(low)] * len(qs)
    n_bins = int(min(_SELECT_BINS, max(16, n // 16)))
    if row.dtype.kind == "f":
        scale = row.dtype.type(n_bins / (float(high) - float(low)))
        if not np.isfinite(scale):
            return None
        position = row - low
        position *= scale
    else:
        # Integers: float64 keeps the arithmetic monotonic and free of overflow.
        position = row.astype(np.float64) - float(low)
        position *= n_bins / (float(high) - float(low))
    np.minimum(position, n_bins - 1, out=position)
    index = position.astype(np.intp)
    del position
    counts = np.bincount(index, minlength=n_bins)
    cum = np.cumsum(counts)
    cache: dict[int, Any] = {}

    def value_at(rank: Array) -> Array:
        r = int(rank[0])
        if r not in cache:
            b = int(np.searchsorted(cum, r, side="right"))
            within = r - int(cum[b] - counts[b])
            members = row[index == b]
            cache[r] = np.partition(members, within)[within]
        # In the data's type, so that interpolation rounds exactly as numpy's does.
        return np.array([cache[r]], dtype=row.dtype if row.dtype.kind == "f" else np.float64)

    n_arr = np.array([n], dtype=np.int64)
    return [float(_quantiles_from_ranks(value_at, n_arr, q, method)[0]) for q in qs]


def _row_quantiles(rows: Array, qs: Sequence[float], method: QuantileMethod) -> list[Array]:
    """Quantiles ``qs`` of each row of a 2-D array, as float64 vectors."""
    if rows.shape[1] == 0:
        return [np.full(rows.shape[0], np.nan) for _ in qs]
    if all(q in (0.0, 1.0) for q in qs):
        # Both methods give exactly the extreme values for q = 0 and q = 1.
        nan_aware = rows.dtype.kind in "fc" and bool(np.isnan(rows).any())
        low_f, high_f = (np.nanmin, np.nanmax) if nan_aware else (np.min, np.max)
        return [
            np.asarray((low_f if q == 0.0 else high_f)(rows, axis=1), dtype=np.float64) for q in qs
        ]
    small = _small_int_range(rows.dtype)
    if small is not None and rows.size >= small[1] and rows.shape[0] * small[1] <= _MAX_HIST_CELLS:
        offset, span = small
        counts = _int_histogram(rows, offset, span)
        value_at = _value_at_rank_int(counts, offset)
        n = np.full(rows.shape[0], rows.shape[1], dtype=np.int64)
        return [_quantiles_from_ranks(value_at, n, q, method) for q in qs]
    if rows.dtype == np.bool_:
        rows = rows.view(np.uint8)
    if rows.shape[1] >= _SELECT_MIN_VALUES and rows.dtype.kind in "fiu":
        selected = [_select_quantiles(row, qs, method) for row in rows]
        if all(r is not None for r in selected):
            return [np.array([r[i] for r in selected if r is not None]) for i in range(len(qs))]
    values = np.quantile(rows, list(qs), axis=1, method=method)
    if rows.dtype.kind in "fc" and np.isnan(values).any():
        values = np.nanquantile(rows, list(qs), axis=1, method=method)
    return [np.asarray(v, dtype=np.float64) for v in values]


def compute_stats(
    requests: Iterable[StatRequest],
    arrays: Mapping[str, tuple[Array, Sequence[str]]],
) -> dict[StatRequest, Array]:
    """Compute statistics on whole tensors.

    Parameters
    ----------
    requests:
        The statistics to compute.  Each is computed on ``arrays[request.tensor_id]``
        whatever its ``stage``: the caller passes the data of the right stage.
    arrays:
        Tensor id to ``(array, axis ids)``.

    Returns
    -------
    dict
        Each request's value, a float64 array with the keepdims shape of its tensor.

    Notes
    -----
    Mean and variance are accumulated in float64.  All quantiles of a tensor over the
    same axes are found together: for 8- and 16-bit integers from one exact
    histogram, for larger arrays by histogram-guided selection, else by
    :func:`numpy.quantile`; the results are numpy's in every case.
    """
    moment_groups: dict[tuple[str, tuple[str, ...] | None], list[StatRequest]] = {}
    quantile_groups: dict[
        tuple[str, tuple[str, ...] | None, QuantileMethod], list[StatRequest]
    ] = {}
    for req in set(requests):
        if req.kind == "quantile":
            quantile_groups.setdefault((req.tensor_id, req.axes, req.method), []).append(req)
        else:
            moment_groups.setdefault((req.tensor_id, req.axes), []).append(req)

    def data(tensor_id: str) -> tuple[Array, tuple[str, ...]]:
        if tensor_id not in arrays:
            raise ValueError(f"statistics of tensor {tensor_id!r} requested, but it is not given")
        array, axes = arrays[tensor_id]
        array = np.asarray(array)
        return array, _check_axes(array, axes, tensor_id)

    result: dict[StatRequest, Array] = {}
    for (tensor_id, req_axes), reqs in moment_groups.items():
        array, axes = data(tensor_id)
        red = _reduced_positions(req_axes, axes, tensor_id)
        mean, var = _moments(array, red, any(r.kind != "mean" for r in reqs))
        for req in reqs:
            if req.kind == "mean":
                result[req] = mean
            elif req.kind == "var":
                assert var is not None
                result[req] = var
            else:
                assert var is not None
                result[req] = np.sqrt(var)
    for (tensor_id, req_axes, method), reqs in quantile_groups.items():
        array, axes = data(tensor_id)
        red = _reduced_positions(req_axes, axes, tensor_id)
        rows, keep_shape = _as_rows(array, red, copy=False)
        qs = sorted({r.q for r in reqs if r.q is not None})
        values = dict(zip(qs, _row_quantiles(rows, qs, method), strict=True))
        for req in reqs:
            assert req.q is not None
            result[req] = values[req.q].reshape(keep_shape)
    return result


def align_stat(value: Array, from_axes: Sequence[str], to_axes: Sequence[str]) -> Array:
    """Re-lay a keepdims statistic from one tensor's axes onto another's.

    Used for statistics of a reference tensor whose axes differ from those of the
    tensor being processed: axes present in both keep their length, axes only in
    ``to_axes`` get length 1, and axes only in ``from_axes`` must have length 1.

    Parameters
    ----------
    value:
        A keepdims statistic laid out over ``from_axes`` (or a scalar).
    from_axes, to_axes:
        Axis ids of the source and target layouts.

    Returns
    -------
    numpy.ndarray
        The statistic laid out over ``to_axes``.
    """
    value = np.asarray(value, dtype=np.float64)
    from_axes = tuple(from_axes)
    to_axes = tuple(to_axes)
    if value.size == 1:
        return value.reshape((1,) * len(to_axes))
    if value.ndim != len(from_axes):
        raise ShapeError(f"statistic of shape {value.shape} does not match axes {list(from_axes)}")
    for axis, n in zip(from_axes, value.shape, strict=True):
        if n != 1 and axis not in to_axes:
            raise AxesMismatchError(
                f"a statistic varying along axis {axis!r} cannot be applied to data with "
                f"axes {list(to_axes)}"
            )
    common = [a for a in to_axes if a in from_axes]
    moved = np.transpose(
        value,
        [from_axes.index(a) for a in common]
        + [i for i, a in enumerate(from_axes) if a not in to_axes],
    )
    shape = [value.shape[from_axes.index(a)] if a in from_axes else 1 for a in to_axes]
    return moved.reshape(shape)


# ----------------------------------------------------------------- streaming statistics


class _MomentAccumulator:
    """Count, mean and sum of squared deviations per kept position (Chan et al. merge)."""

    def __init__(self) -> None:
        self.n: Array | None = None
        self.mean: Array | None = None
        self.m2: Array | None = None

    def update(self, block: Array, red: tuple[int, ...]) -> None:
        mean_b, var_b = _moments(block, red, need_var=True)
        assert var_b is not None
        if block.dtype.kind in "fc" and np.isnan(block).any():
            n_b = np.sum(~np.isnan(block), axis=red, keepdims=True).astype(np.float64)
            mean_b = np.where(n_b > 0, mean_b, 0.0)
            var_b = np.where(n_b > 0, var_b, 0.0)
        else:
            n_b = np.full(mean_b.shape, math.prod(block.shape[i] for i in red), np.float64)
        self._combine(n_b, mean_b, var_b * n_b)

    def check_mergeable(self, other: _MomentAccumulator) -> None:
        """Raise if ``other`` (already in this one's axis order) cannot be merged in."""
        mine, theirs = self.mean, other.mean
        if mine is not None and theirs is not None and theirs.shape != mine.shape:
            raise ShapeError(
                f"blocks must span the whole length of the axes that are not reduced: "
                f"got statistics of shape {theirs.shape}, expected {mine.shape}"
            )

    def merge(self, other: _MomentAccumulator) -> None:
        """Fold in another accumulator's moments (same axis order, see :meth:`permuted`)."""
        if other.n is not None and other.mean is not None and other.m2 is not None:
            self._combine(other.n, other.mean, other.m2)

    def permuted(self, perm: Sequence[int]) -> _MomentAccumulator:
        """A copy with its keepdims arrays transposed by ``perm``."""
        out = _MomentAccumulator()
        if self.n is not None and self.mean is not None and self.m2 is not None:
            out.n, out.mean, out.m2 = (a.transpose(perm) for a in (self.n, self.mean, self.m2))
        return out

    def _combine(self, n_b: Array, mean_b: Array, m2_b: Array) -> None:
        if self.n is None or self.mean is None or self.m2 is None:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        if mean_b.shape != self.mean.shape:
            raise ShapeError(
                f"blocks must span the whole length of the axes that are not reduced: "
                f"got statistics of shape {mean_b.shape}, expected {self.mean.shape}"
            )
        n = self.n + n_b
        safe_n = np.where(n > 0, n, 1.0)
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / safe_n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * n_b / safe_n)
        self.n = n

    def result(self, kind: StatKind) -> Array:
        assert self.n is not None and self.mean is not None and self.m2 is not None
        empty = self.n == 0
        if kind == "mean":
            return np.where(empty, np.nan, self.mean)
        var = np.where(empty, np.nan, self.m2 / np.where(empty, 1.0, self.n))
        return var if kind == "var" else np.sqrt(var)


class _QuantileAccumulator:
    """Values of one tensor over some axes, kept exactly or as a histogram."""

    def __init__(self, max_exact_samples: int, histogram_bins: int) -> None:
        self.max_exact = max_exact_samples
        self.bins = histogram_bins
        self.dtype: np.dtype[Any] | None = None
        self.keep_shape: tuple[int, ...] | None = None
        self.mode: Literal["collect", "int", "float"] = "collect"
        self.chunks: list[Array] = []
        self.collected = 0
        self.counts: Array | None = None
        self.offset = 0
        self.lo = 0.0
        self.width = 1.0
        self.mins: Array | None = None
        self.maxs: Array | None = None

    def update(self, block: Array, red: tuple[int, ...]) -> None:
        if block.dtype == np.bool_:
            block = block.view(np.uint8)
        rows, keep_shape = _as_rows(block, red, copy=self.mode == "collect")
        if self.keep_shape is None:
            self.keep_shape = keep_shape
            self.dtype = block.dtype
            small = _small_int_range(block.dtype)
            if small is not None and rows.shape[0] * small[1] <= _MAX_HIST_CELLS:
                self.mode = "int"
                self.offset, span = small
                self.counts = np.zeros((rows.shape[0], span), dtype=np.int64)
        elif keep_shape != self.keep_shape:
            raise ShapeError(
                f"blocks must span the whole length of the axes that are not reduced: "
                f"got a block giving statistics of shape {keep_shape}, expected {self.keep_shape}"
            )
        elif block.dtype != self.dtype:
            raise ValueError(
                f"blocks of one tensor must share a dtype ({self.dtype}, {block.dtype})"
            )
        if self.mode == "int":
            assert self.counts is not None
            self.counts += _int_histogram(rows, self.offset, self.counts.shape[1])
        elif self.mode == "collect":
            self.chunks.append(rows)
            self.collected += rows.size
            self._check_collected()
        else:
            self._add_float(rows)

    def _check_collected(self) -> None:
        # Past max_exact_samples kept values, switch to the histogram for good.
        if self.collected > self.max_exact:
            data = np.concatenate(self.chunks, axis=1)
            self.chunks = []
            self._start_float_histogram(data)

    def check_mergeable(self, other: _QuantileAccumulator) -> None:
        """Raise if ``other`` (already in this one's axis order) cannot be merged in."""
        if self.keep_shape is None or other.keep_shape is None:
            return
        if other.keep_shape != self.keep_shape:
            raise ShapeError(
                f"blocks must span the whole length of the axes that are not reduced: "
                f"got statistics of shape {other.keep_shape}, expected {self.keep_shape}"
            )
        if other.dtype != self.dtype:
            raise ValueError(
                f"blocks of one tensor must share a dtype ({self.dtype}, {other.dtype})"
            )

    def permuted(self, perm: Sequence[int]) -> _QuantileAccumulator:
        """A shallow copy whose kept positions are re-laid by the axis permutation ``perm``."""
        out = copy.copy(self)
        out.chunks = list(self.chunks)
        keep_shape = self.keep_shape
        if keep_shape is None or list(perm) == sorted(perm):
            return out

        def relay(rows: Array) -> Array:
            # Kept positions run in C order over the keepdims shape (reduced axes
            # have length 1), so a reshape exposes them as a grid to transpose.
            grid = rows.reshape(keep_shape + rows.shape[1:])
            moved = grid.transpose(list(perm) + list(range(len(keep_shape), grid.ndim)))
            return moved.reshape(rows.shape)

        out.keep_shape = tuple(keep_shape[i] for i in perm)
        out.chunks = [relay(c) for c in self.chunks]
        out.counts, out.mins, out.maxs = (
            None if a is None else relay(a) for a in (self.counts, self.mins, self.maxs)
        )
        return out

    def merge(self, other: _QuantileAccumulator) -> None:
        """Fold in another accumulator's values (same axis order, see :meth:`permuted`).

        Integer histograms add exactly; kept values are appended (switching to a
        histogram past ``max_exact_samples``) or added to a float histogram; two float
        histograms combine by adding the other's counts at its bins' centres.
        """
        self.check_mergeable(other)
        if other.keep_shape is None:
            return
        if self.keep_shape is None:
            # Never fed: take the other's layout; its data is added below.
            self.keep_shape, self.dtype, self.offset = other.keep_shape, other.dtype, other.offset
            if other.mode == "int":
                assert other.counts is not None
                self.mode, self.counts = "int", np.zeros_like(other.counts)
        if other.mode == "int":
            assert self.mode == "int" and self.counts is not None and other.counts is not None
            self.counts += other.counts
        elif other.mode == "collect":
            if self.mode == "collect":
                self.chunks.extend(other.chunks)
                self.collected += other.collected
                self._check_collected()
            elif other.collected:
                self._add_float(np.concatenate(other.chunks, axis=1))
        elif self.mode == "collect":
            # Start from a copy of the other's histogram and add our exact values to it.
            assert other.counts is not None and other.mins is not None and other.maxs is not None
            kept, self.chunks, self.collected = self.chunks, [], 0
            self.mode, self.bins, self.lo, self.width = "float", other.bins, other.lo, other.width
            self.counts = other.counts.copy()
            self.mins, self.maxs = other.mins.copy(), other.maxs.copy()
            if kept:
                data = np.concatenate(kept, axis=1)
                if data.size:
                    self._add_float(data)
        else:
            self._add_histogram(other)

    def _add_histogram(self, other: _QuantileAccumulator) -> None:
        # Each of the other's counts moves to its bin's centre (clipped to its row's
        # exact range, which only brings it closer to the true values): at most half
        # of the other's bin width, after which it is binned like any value.
        assert self.counts is not None and self.mins is not None and self.maxs is not None
        assert other.counts is not None and other.mins is not None and other.maxs is not None
        present = other.counts > 0
        if present.any():
            centres = other.lo + other.width * (np.arange(other.counts.shape[1]) + 0.5)
            values = np.clip(centres[None, :], other.mins[:, None], other.maxs[:, None])
            # Empty rows (min inf, max -inf) have no counts; keep them in range.
            values = np.where(present, values, self.lo)
            self._grow(float(values[present].min()), float(values[present].max()))
            index = np.clip(np.floor((values - self.lo) / self.width), 0, self.bins - 1)
            flat = index.astype(np.intp) + (np.arange(values.shape[0]) * self.bins)[:, None]
            counts = np.bincount(
                flat.ravel(), weights=other.counts.ravel(), minlength=self.counts.size
            )
            self.counts += np.rint(counts).astype(np.int64).reshape(self.counts.shape)
        self.mins = np.fmin(self.mins, other.mins)
        self.maxs = np.fmax(self.maxs, other.maxs)

    def _start_float_histogram(self, rows: Array) -> None:
        self.mode = "float"
        n_rows = rows.shape[0]
        self.bins = max(64, min(self.bins, _MAX_HIST_CELLS // max(n_rows, 1)))
        self.bins += self.bins % 2
        self.counts = np.zeros((n_rows, self.bins), dtype=np.int64)
        finite = rows[np.isfinite(rows)] if rows.dtype.kind in "fc" else rows
        if finite.size:
            low, high = float(np.min(finite)), float(np.max(finite))
        else:
            low, high = 0.0, 1.0
        span = high - low
        self.lo = low
        self.width = span / (self.bins - 1) if span > 0 else max(abs(low), 1.0) * 2.0**-20
        self.mins = np.full(n_rows, np.inf)
        self.maxs = np.full(n_rows, -np.inf)
        self._add_float(rows)

    def _grow(self, low: float, high: float) -> None:
        # Double the bin width until [low, high] fits; pairs of bins merge exactly, so
        # the counts already taken stay valid.
        assert self.counts is not None
        half = self.bins // 2
        while low < self.lo or high >= self.lo + self.bins * self.width:
            merged = self.counts.reshape(self.counts.shape[0], half, 2).sum(axis=2)
            self.counts = np.zeros_like(self.counts)
            if low < self.lo:
                self.counts[:, half:] = merged
                self.lo -= self.bins * self.width
            else:
                self.counts[:, :half] = merged
            self.width *= 2

    def _add_float(self, rows: Array) -> None:
        assert self.counts is not None and self.mins is not None and self.maxs is not None
        values = rows.astype(np.float64)
        nan = np.isnan(values)
        finite = values[np.isfinite(values)]
        if finite.size:
            self._grow(float(finite.min()), float(finite.max()))
        with np.errstate(invalid="ignore"):
            self.mins = np.fmin(self.mins, np.min(np.where(nan, np.inf, values), axis=1))
            self.maxs = np.fmax(self.maxs, np.max(np.where(nan, -np.inf, values), axis=1))
            index = np.floor((values - self.lo) / self.width)
        np.clip(index, 0, self.bins - 1, out=index)
        index[nan] = 0
        flat = (
            index.astype(np.intp) + (np.arange(values.shape[0], dtype=np.intp) * self.bins)[:, None]
        )
        weights = None if not nan.any() else (~nan).astype(np.float64).ravel()
        counts = np.bincount(flat.ravel(), weights=weights, minlength=self.counts.size)
        self.counts += counts.astype(np.int64).reshape(self.counts.shape)

    def _value_at_rank_float(self) -> Callable[[Array], Array]:
        assert self.counts is not None and self.mins is not None and self.maxs is not None
        counts = self.counts
        cum = np.cumsum(counts, axis=1)
        n = cum[:, -1]
        rows = np.arange(counts.shape[0])
        mins, maxs = self.mins, self.maxs

        def value_at(rank: Array) -> Array:
            pos = np.argmax(cum > rank[:, None], axis=1)
            in_bin = counts[rows, pos]
            before = cum[rows, pos] - in_bin
            # Spread a bin's values evenly across it: error at most one bin width.
            frac = (rank - before + 0.5) / np.maximum(in_bin, 1)
            value = self.lo + self.width * (pos + frac)
            value = np.clip(value, mins, maxs)
            value = np.where(rank <= 0, mins, value)
            return np.where(rank >= n - 1, maxs, value)

        return value_at

    def result(self, q: float, method: QuantileMethod) -> Array:
        assert self.keep_shape is not None
        if self.mode == "collect":
            rows = np.concatenate(self.chunks, axis=1)
            (value,) = _row_quantiles(rows, [q], method)
        elif self.mode == "int":
            assert self.counts is not None
            n = self.counts.sum(axis=1)
            value = _quantiles_from_ranks(
                _value_at_rank_int(self.counts, self.offset), n, q, method
            )
        else:
            assert self.counts is not None
            n = self.counts.sum(axis=1)
            value = _quantiles_from_ranks(self._value_at_rank_float(), n, q, method)
            value = np.where(n > 0, value, np.nan)
        return np.asarray(value, dtype=np.float64).reshape(self.keep_shape)


class StatsAccumulator:
    """Statistics over a tensor fed block by block, for data that does not fit in memory.

    Every block must span the whole length of the axes that are not reduced (split
    the data only along reduced axes); blocks may come in any order.  The results
    equal those of :func:`compute_stats` on the whole tensor: exactly for quantiles of
    8- and 16-bit integer data (exact histograms) and while at most
    ``max_exact_samples`` values have been seen per tensor and reduction (they are
    kept); mean, variance and standard deviation are exact up to float64 rounding
    (pairwise merge of per-block moments).

    Beyond ``max_exact_samples`` values of other types, quantiles are estimated from a
    histogram of ``histogram_bins`` bins per kept position whose range grows by
    doubling the bin width: the error is at most about one bin width, i.e. a
    ``1 / histogram_bins``-th (at worst twice that after growth) of the data range;
    quantiles 0 and 1 stay exact.

    Accumulators fed with different blocks (in other processes, say: they pickle) can
    be combined with :meth:`merge` or :func:`merge_accumulators`.

    Parameters
    ----------
    requests:
        The statistics to compute (``stage`` is not looked at: feed one accumulator
        per stage with that stage's data).
    max_exact_samples:
        How many values per tensor and reduction are kept for exact quantiles.
    histogram_bins:
        Bins of the approximating histogram (reduced when there are many kept
        positions, to bound memory).
    """

    def __init__(
        self,
        requests: Iterable[StatRequest],
        *,
        max_exact_samples: int = 1 << 26,
        histogram_bins: int = 1 << 14,
    ) -> None:
        self.requests = frozenset(requests)
        self._moments: dict[tuple[str, tuple[str, ...] | None], _MomentAccumulator] = {}
        self._quantiles: dict[tuple[str, tuple[str, ...] | None], _QuantileAccumulator] = {}
        for req in self.requests:
            key = (req.tensor_id, req.axes)
            if req.kind == "quantile":
                self._quantiles.setdefault(
                    key, _QuantileAccumulator(max_exact_samples, histogram_bins)
                )
            else:
                self._moments.setdefault(key, _MomentAccumulator())
        self._axes: dict[str, tuple[str, ...]] = {}

    @property
    def tensor_ids(self) -> frozenset[str]:
        """The tensors that have to be fed."""
        return frozenset(r.tensor_id for r in self.requests)

    def update(self, tensor_id: str, block: Array, axes: Sequence[str]) -> None:
        """Add one block of a tensor.

        Parameters
        ----------
        tensor_id:
            Which tensor the block belongs to (blocks of tensors no request needs are
            ignored).
        block:
            The data; the caller may reuse the buffer afterwards.
        axes:
            Axis ids of ``block``; they may come in a different order than in
            earlier blocks.
        """
        if tensor_id not in self.tensor_ids:
            return
        block = np.asarray(block)
        axes = _check_axes(block, axes, tensor_id)
        first = self._axes.setdefault(tensor_id, axes)
        if axes != first:
            if set(axes) != set(first):
                raise AxesMismatchError(
                    f"tensor {tensor_id!r}: block axes {list(axes)} differ from {list(first)}"
                )
            block = block.transpose([axes.index(a) for a in first])
            axes = first
        for (tid, req_axes), moments in self._moments.items():
            if tid == tensor_id:
                moments.update(block, _reduced_positions(req_axes, axes, tensor_id))
        for (tid, req_axes), quantiles in self._quantiles.items():
            if tid == tensor_id:
                quantiles.update(block, _reduced_positions(req_axes, axes, tensor_id))

    def merge(self, other: StatsAccumulator) -> None:
        """Fold in an accumulator fed with other blocks of the same tensors.

        For statistics computed as a distributed reduction: accumulators fed with
        different blocks (possibly in other processes, then pickled) are merged in any
        order or tree, and :meth:`finalize` then gives what one accumulator fed with
        all the blocks would give.  ``other`` is left unchanged; either side may be
        empty; blocks given to ``other`` in another axis order are re-laid in this
        accumulator's order (that of the first block it was fed).

        Accuracy: mean, variance and standard deviation are exact up to float64
        rounding (the same pairwise merge that :meth:`update` uses).  Quantiles are
        exact for 8- and 16-bit integer data (histograms add) and for other data while
        both sides together have kept at most ``max_exact_samples`` values per tensor
        and reduction; quantiles 0 and 1 are always exact.  Beyond that they come from
        histograms: exact values are added to a histogram as they are, and when two
        histograms meet, this one's range grows (by doubling its bin width) to cover
        the other's and the other's counts are added at the centres of their bins.  The
        error then stays about one bin width of the coarser histogram, i.e. about
        ``1 / histogram_bins`` of the range of the tensor's values (all of them: the
        positions that are not reduced share one histogram range); at worst a few
        times that (growing can double the width, and each level of a merge tree can
        move values by half a bin more).

        Parameters
        ----------
        other:
            An accumulator of the same requests.

        Raises
        ------
        ValueError
            If the requests differ, or the two saw blocks of different dtypes.
        ShapeError, AxesMismatchError
            If the two saw data of different shapes along the kept axes, or axes
            that differ (not only in order).
        """
        if other.requests != self.requests:
            raise ValueError(
                "only accumulators of the same statistics can be merged: "
                f"{sorted(map(str, self.requests ^ other.requests))} are not in both"
            )
        # Check everything before changing anything, so that a refused merge leaves
        # this accumulator as it was.
        merges: list[Callable[[], None]] = []
        for tensor_id, theirs in other._axes.items():
            mine = self._axes.get(tensor_id, theirs)
            if set(mine) != set(theirs):
                raise AxesMismatchError(
                    f"tensor {tensor_id!r}: block axes {list(theirs)} differ from {list(mine)}"
                )
            perm = [theirs.index(a) for a in mine]
            for key, moments in self._moments.items():
                if key[0] == tensor_id:
                    other_moments = other._moments[key].permuted(perm)
                    moments.check_mergeable(other_moments)
                    merges.append(functools.partial(moments.merge, other_moments))
            for key, quantiles in self._quantiles.items():
                if key[0] == tensor_id:
                    other_quantiles = other._quantiles[key].permuted(perm)
                    quantiles.check_mergeable(other_quantiles)
                    merges.append(functools.partial(quantiles.merge, other_quantiles))
        for do_merge in merges:
            do_merge()
        for tensor_id, theirs in other._axes.items():
            self._axes.setdefault(tensor_id, theirs)

    def finalize(self) -> dict[StatRequest, Array]:
        """The statistics of everything fed so far, keyed and shaped as by :func:`compute_stats`."""
        missing = self.tensor_ids - set(self._axes)
        if missing:
            raise ValueError(f"no data was given for tensor(s) {sorted(missing)}")
        result: dict[StatRequest, Array] = {}
        for req in self.requests:
            key = (req.tensor_id, req.axes)
            if req.kind == "quantile":
                assert req.q is not None
                result[req] = self._quantiles[key].result(req.q, req.method)
            else:
                result[req] = self._moments[key].result(req.kind)
        return result


def merge_accumulators(parts: Iterable[StatsAccumulator]) -> StatsAccumulator:
    """Merge accumulators fed with different blocks of the same tensors.

    Parameters
    ----------
    parts:
        Accumulators of the same requests (see :meth:`StatsAccumulator.merge`).

    Returns
    -------
    StatsAccumulator
        The first part, with all the others merged into it (they are left unchanged).

    Raises
    ------
    ValueError
        If ``parts`` is empty, or as :meth:`StatsAccumulator.merge` does.
    """
    it = iter(parts)
    first = next(it, None)
    if first is None:
        raise ValueError("no accumulators to merge")
    for part in it:
        first.merge(part)
    return first


# ---------------------------------------------------------------------------- operations


def _float_work_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _stat(stats: Stats, req: StatRequest, x: Array, axes: tuple[str, ...]) -> Array:
    """A statistic as a float64 array that broadcasts against ``x``."""
    try:
        value = np.asarray(stats[req], dtype=np.float64)
    except KeyError:
        raise ValueError(f"statistic {req} is needed but was not given") from None
    if value.size == 1:
        return value.reshape(())
    if value.ndim != x.ndim or any(
        s not in (1, n) for s, n in zip(value.shape, x.shape, strict=True)
    ):
        raise ShapeError(
            f"tensor {req.tensor_id!r}: statistic of shape {value.shape} does not fit data "
            f"of shape {x.shape} (axes {list(axes)}); statistics must be laid out over the "
            f"data's axes and span every axis that is not reduced"
        )
    return value


def _subtract_divide(x: Array, offset: Array | float, scale: Array | float) -> Array:
    """``x = (x - offset) / scale`` in place, keeping the float64 accuracy of ``offset``.

    In float32, ``x - float32(offset)`` loses the rounding error of ``offset`` (large
    next to the result when the mean is much larger than the spread); it is added back
    as a correction after the division.
    """
    offset64 = np.asarray(offset, dtype=np.float64)
    scale64 = np.asarray(scale, dtype=np.float64)
    if x.dtype == np.float64:
        np.subtract(x, offset64, out=x)
        np.divide(x, scale64, out=x)
        return x
    offset32 = offset64.astype(x.dtype)
    np.subtract(x, offset32, out=x)
    np.divide(x, scale64.astype(x.dtype), out=x)
    residual = (offset64 - offset32.astype(np.float64)) / scale64
    if np.any(residual):
        np.subtract(x, residual.astype(x.dtype), out=x)
    return x


def _along_axis(
    values: Sequence[float],
    axis: str,
    axes: tuple[str, ...],
    x: Array,
    dtype: np.dtype[Any],
    what: str,
) -> Array:
    """Per-position parameters along ``axis``, shaped to broadcast against ``x``."""
    if axis not in axes:
        raise AxesMismatchError(
            f"{what} is given along axis {axis!r}, but the data has axes {list(axes)}"
        )
    pos = axes.index(axis)
    if len(values) not in (1, x.shape[pos]):
        raise ShapeError(
            f"{what} has {len(values)} values along axis {axis!r}, the data has {x.shape[pos]}"
        )
    shape = [1] * x.ndim
    shape[pos] = len(values)
    return np.asarray(values, dtype=dtype).reshape(shape)


class _Op:
    """One compiled operation.

    ``inplace`` operations are handed a float32/float64 array that they own and may
    overwrite; the others get the current array (which may be the caller's) and
    return a new one or the same.
    """

    inplace: ClassVar[bool] = True
    changes_values: bool = True

    def __init__(self, name: str, tensor_id: str) -> None:
        self.name = name
        self.tensor_id = tensor_id

    def requests(self) -> tuple[StatRequest, ...]:
        return ()

    def __call__(self, x: Array, axes: tuple[str, ...], stats: Stats) -> Array:
        raise NotImplementedError

    @property
    def what(self) -> str:
        return f"tensor {self.tensor_id!r}: {self.name}"


class _EnsureDtype(_Op):
    inplace = False

    def __init__(self, name: str, tensor_id: str, dtype: str) -> None:
        super().__init__(name, tensor_id)
        self.dtype = np.dtype(dtype)
        # A cast changes values by rounding at most, and descriptions converted from
        # format 0.4 start with a cast to the declared input type (a no-op on data of
        # that type): a cast does not start a stage of its own.
        self.changes_values = False

    def __call__(self, x: Array, axes: tuple[str, ...], stats: Stats) -> Array:
        target = self.dtype
        if x.dtype == target:
            return x
        if target.kind in "fb" or x.dtype == np.bool_:
            return x.astype(target)
        info = np.iinfo(target)
        if x.dtype.kind in "iu":
            src = np.iinfo(x.dtype)
            if src.min >= info.min and src.max <= info.max:
                return x.astype(target)
            low, high = max(info.min, src.min), min(info.max, src.max)
            return np.clip(x, x.dtype.type(low), x.dtype.type(high)).astype(target)
        # Floats: round to nearest, saturate, NaN to 0; a plain cast would truncate and
        # wrap around (or be undefined) outside the target's range.
        y = np.rint(x if x.dtype.itemsize >= 4 else x.astype(np.float32))
        np.clip(y, *_float_limits(y.dtype, target), out=y)
        nan = np.isnan(y)
        if nan.any():
            y[nan] = 0
        return y.astype(target)


def _float_limits(float_dtype: np.dtype[Any], int_dtype: np.dtype[Any]) -> tuple[Any, Any]:
    """The float values closest to an integer type's limits that lie inside them."""
    info = np.iinfo(int_dtype)
    ftype = float_dtype.type
    low, high = ftype(info.min), ftype(info.max)
    # int32/int64 maxima are not representable and round up past the limit.
    if int(high) > info.max:
        high = np.nextafter(high, ftype(0))
    if int(low) < info.min:
        low = np.nextafter(low, ftype(0))
    return low, high


class _Binarize(_Op):
    inplace = False

    def __init__(
        self, name: str, tensor_id: str, threshold: float | tuple[float, ...], axis: str | None
    ) -> None:
        super().__init__(name, tensor_id)
        self.threshold = threshold
        self.axis = axis

    def __call__(self, x: Array, axes: tuple[str, ...], stats: Stats) -> Array:
        if isinstance(self.threshold, tuple):
            assert self.axis is not None
            # Thresholds in the data's float type compare as a scalar threshold would.
            dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
            thr = _along_axis(self.threshold, self.axis, axes, x, dtype, self.what)
            return np.greater(x, thr)
        return np.greater(x, self.threshold)


class _Clip(_Op):
    def __init__(
        self,
        name: str,
        tensor_id: str,
        low: float | StatRequest | None,
        high: float | StatRequest | None,
    ) -> None:
        super().__init__(name, tensor_id)
        self.low = low
        self.high = high

    def requests(self) -> tuple[StatRequest, ...]:
        return tuple(b for b in (self.low, self.high) if isinstance(b, StatRequest))

    def _bound(
        self, b: float | StatRequest | None, x: Array, axes: tuple[str, ...], stats: Stats
    ) -> Any:
        if isinstance(b, StatRequest):
            return _stat(stats, b, x, axes).astype(x.dtype)
        return b

    def __call__(self, x: Array, axes: tuple[str, ...], stats: Stats) -> Array:
        low = self._bound(self.low, x, axes, stats)
        high = self._bound(self.high, x, axes, stats)
        return np.clip(x, low, high, out=x)


class _ScaleLinear(_Op):
    def __init__(
        self,
        name: str,
        tensor_id: str,
        gain: float | tuple[float, ...],
        offset: float | tuple[float, ...],
        axis: str | None,
    ) -> None:
        super().__init__(name, tensor_id)
        self.gain = gain
        self.offset = offset
        self.axis = axis

    def _param(self, v: float | tuple[float, ...], x: Array, axes: tuple[str, ...]) -> Any:
        if isinstance(v, tuple):
            assert self.axis is not None
            return _along_axis(v, self.axis, axes, x, x.dtype, self.what)
        return v

    def __call__(self, x: Array, axes: tuple[str, ...], stats: Stats) -> Array:
        gain = self._param(self.gain, x, axes)
        offset = self._param(self.offset, x, axes)
        if np.any(np.asarray(gain) != 1):
            np.multiply(x, gain, out=x)
        if np.any(np.asarray(offset) != 0):
            np.add(x, offset, out=x)
        return x


class _Sigmoid(_Op):
    def __call__(self, x: Array, axes: tuple[str, ...], stats: Stats) -> Array:
        np.negative(x, out=x)
        # exp overflows to inf for very negative inputs, and 1 / (1 + inf) = 0 is right.
        with np.errstate(over="ignore"):
            np.exp(x, out=x)
        np.add(x, 1, out=x)
        return np.reciprocal(x, out=x)


class _Softmax(_Op):
    """Softmax along one axis: needs that whole axis in every tile (as channels are)."""

    def __init__(self, name: str, tensor_id: str, axis: str) -> None:
        super().__init__(name, tensor_id)
        self.axis = axis

    def __call__(self, x: Array, axes: tuple[str, ...], stats: Stats) -> Array:
        if self.axis not in axes:
            raise AxesMismatchError(f"{self.what} along axis {self.axis!r}: data axes {list(axes)}")
        pos = axes.index(self.axis)
        np.subtract(x, np.max(x, axis=pos, keepdims=True), out=x)
        np.exp(x, out=x)
        return np.divide(x, np.sum(x, axis=pos, keepdims=True), out=x)


class _ZeroMeanUnitVariance(_Op):
    def __init__(
        self, name: str, tensor_id: str, mean: StatRequest, std: StatRequest, eps: float
    ) -> None:
        super().__init__(name, tensor_id)
        self.mean = mean
        self.std = std
        self.eps = eps

    def requests(self) -> tuple[StatRequest, ...]:
        return (self.mean, self.std)

    def __call__(self, x: Array, axes: tuple[str, ...], stats: Stats) -> Array:
        mean = _stat(stats, self.mean, x, axes)
        std = _stat(stats, self.std, x, axes)
        return _subtract_divide(x, mean, std + self.eps)


class _FixedZeroMeanUnitVariance(_Op):
    def __init__(
        self,
        name: str,
        tensor_id: str,
        mean: float | tuple[float, ...],
        std: float | tuple[float, ...],
        axis: str | None,
    ) -> None:
        super().__init__(name, tensor_id)
        self.mean = mean
        self.std = std
        self.axis = axis

    def __call__(self, x: Array, axes: tuple[str, ...], stats: Stats) -> Array:
        if isinstance(self.mean, tuple) and isinstance(self.std, tuple):
            assert self.axis is not None
            f64 = np.dtype(np.float64)
            mean: Array | float = _along_axis(self.mean, self.axis, axes, x, f64, self.what)
            std: Array | float = _along_axis(self.std, self.axis, axes, x, f64, self.what)
        else:
            assert isinstance(self.mean, float) and isinstance(self.std, float)
            mean, std = self.mean, self.std
        return _subtract_divide(x, mean, np.asarray(std) + FIXED_STD_EPS)


class _ScaleRange(_Op):
    def __init__(
        self, name: str, tensor_id: str, low: StatRequest, high: StatRequest, eps: float
    ) -> None:
        super().__init__(name, tensor_id)
        self.low = low
        self.high = high
        self.eps = eps

    def requests(self) -> tuple[StatRequest, ...]:
        return (self.low, self.high)

    def __call__(self, x: Array, axes: tuple[str, ...], stats: Stats) -> Array:
        low = _stat(stats, self.low, x, axes)
        high = _stat(stats, self.high, x, axes)
        return _subtract_divide(x, low, high - low + self.eps)


class _ScaleMeanVariance(_Op):
    def __init__(
        self,
        name: str,
        tensor_id: str,
        mean: StatRequest,
        std: StatRequest,
        ref_mean: StatRequest,
        ref_std: StatRequest,
        eps: float,
    ) -> None:
        super().__init__(name, tensor_id)
        self.mean, self.std = mean, std
        self.ref_mean, self.ref_std = ref_mean, ref_std
        self.eps = eps

    def requests(self) -> tuple[StatRequest, ...]:
        return (self.mean, self.std, self.ref_mean, self.ref_std)

    def __call__(self, x: Array, axes: tuple[str, ...], stats: Stats) -> Array:
        mean = _stat(stats, self.mean, x, axes)
        std = _stat(stats, self.std, x, axes)
        ref_mean = _stat(stats, self.ref_mean, x, axes)
        ref_std = _stat(stats, self.ref_std, x, axes)
        _subtract_divide(x, mean, std + self.eps)
        np.multiply(x, (ref_std + self.eps).astype(x.dtype), out=x)
        return np.add(x, ref_mean.astype(x.dtype), out=x)


# ----------------------------------------------------------------------------- compiling


class _Kwargs:
    """Typed access to an operation's keyword arguments with readable errors."""

    def __init__(self, op: OpSpec, tensor_id: str) -> None:
        self.kwargs: Mapping[str, Any] = op.kwargs or {}
        self.where = f"tensor {tensor_id!r}, {op.id}"

    def error(self, problem: str) -> ModelPackageError:
        return ModelPackageError(f"{self.where}: {problem}")

    def get(self, key: str) -> Any:
        return self.kwargs.get(key)

    def number(self, key: str, default: float | None = None) -> float:
        value = self.kwargs.get(key)
        if value is None:
            if default is None:
                raise self.error(f"missing argument {key!r}")
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"argument {key!r} must be a number, got {value!r}")
        return float(value)

    def optional_number(self, key: str) -> float | None:
        return None if self.kwargs.get(key) is None else self.number(key)

    def numbers(self, key: str, default: float | None = None) -> float | tuple[float, ...]:
        value = self.kwargs.get(key)
        if isinstance(value, list | tuple):
            if not value or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value
            ):
                raise self.error(f"argument {key!r} must be a non-empty list of numbers")
            return tuple(float(v) for v in value)
        return self.number(key, default)

    def axes(self) -> tuple[str, ...] | None:
        value = self.kwargs.get("axes")
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise self.error(f"argument 'axes' must be a list of axis ids, got {value!r}")
        return tuple(str(a) for a in value)

    def axis(self, default: str | None = None) -> str | None:
        value = self.kwargs.get("axis", default)
        return None if value is None else str(value)


def _needs_own_stats(op: OpSpec) -> bool:
    kwargs = op.kwargs or {}
    if op.id in ("zero_mean_unit_variance", "scale_mean_variance"):
        return True
    if op.id == "scale_range":
        return kwargs.get("reference_tensor") is None
    if op.id == "clip":
        return kwargs.get("min_percentile") is not None or kwargs.get("max_percentile") is not None
    return False


class _Compiler:
    def __init__(self, tensor: TensorSpec, stage: int) -> None:
        self.tensor = tensor
        self.stage = stage

    def own_axes(self, kw: _Kwargs, axes: tuple[str, ...] | None) -> tuple[str, ...] | None:
        known = self.tensor.axis_ids
        if axes is None or not known:
            return axes
        unknown = [a for a in axes if a not in known]
        if unknown:
            raise kw.error(f"axes {unknown} are not axes of the tensor ({list(known)})")
        # Reducing every axis is the same statistic as reducing "all axes".
        return None if set(axes) == set(known) else axes

    def own(self, kind: StatKind, axes: tuple[str, ...] | None, **extra: Any) -> StatRequest:
        return StatRequest(self.tensor.id, kind, axes, stage=self.stage, **extra)

    def compile(self, op: OpSpec) -> _Op:
        tid = self.tensor.id
        kw = _Kwargs(op, tid)
        name = op.id
        if name == "ensure_dtype":
            dtype = kw.get("dtype")
            if dtype not in _ENSURE_DTYPES:
                raise kw.error(f"unsupported dtype {dtype!r}")
            return _EnsureDtype(name, tid, str(dtype))
        if name == "binarize":
            axis = kw.axis()
            threshold = kw.numbers("threshold")
            if isinstance(threshold, tuple) and axis is None:
                if len(threshold) != 1:
                    raise kw.error("a list of thresholds needs an 'axis'")
                threshold = threshold[0]
            return _Binarize(name, tid, threshold, axis if isinstance(threshold, tuple) else None)
        if name == "clip":
            return self._clip(kw)
        if name == "scale_linear":
            axis = kw.axis()
            gain = kw.numbers("gain", 1.0)
            offset = kw.numbers("offset", 0.0)
            if axis is None:
                gain = _single(kw, "gain", gain)
                offset = _single(kw, "offset", offset)
            else:
                gain = gain if isinstance(gain, tuple) else (gain,)
                offset = offset if isinstance(offset, tuple) else (offset,)
                if len(gain) != len(offset) and 1 not in (len(gain), len(offset)):
                    raise kw.error(f"{len(gain)} gains and {len(offset)} offsets")
            return _ScaleLinear(name, tid, gain, offset, axis)
        if name == "sigmoid":
            return _Sigmoid(name, tid)
        if name == "softmax":
            return _Softmax(name, tid, kw.axis("channel") or "channel")
        if name == "fixed_zero_mean_unit_variance":
            axis = kw.axis()
            mean = kw.numbers("mean")
            std = kw.numbers("std")
            if axis is None:
                mean, std = _single(kw, "mean", mean), _single(kw, "std", std)
            else:
                mean = mean if isinstance(mean, tuple) else (mean,)
                std = std if isinstance(std, tuple) else (std,)
                if len(mean) != len(std):
                    raise kw.error(f"{len(mean)} means and {len(std)} standard deviations")
            return _FixedZeroMeanUnitVariance(name, tid, mean, std, axis)
        if name == "zero_mean_unit_variance":
            axes = self.own_axes(kw, kw.axes())
            eps = kw.number("eps", 1e-6)
            return _ZeroMeanUnitVariance(
                name, tid, self.own("mean", axes), self.own("std", axes), eps
            )
        if name == "scale_range":
            return self._scale_range(kw)
        if name == "scale_mean_variance":
            ref = kw.get("reference_tensor")
            if ref is None:
                raise kw.error("missing argument 'reference_tensor'")
            raw_axes = kw.axes()
            axes = self.own_axes(kw, raw_axes)
            eps = kw.number("eps", 1e-6)
            return _ScaleMeanVariance(
                name,
                tid,
                self.own("mean", axes),
                self.own("std", axes),
                StatRequest(str(ref), "mean", raw_axes),
                StatRequest(str(ref), "std", raw_axes),
                eps,
            )
        raise ModelPackageError(
            f"tensor {tid!r}: unsupported processing operation {name!r} "
            f"(supported: {', '.join(sorted(SUPPORTED_OPS))})"
        )

    def _clip(self, kw: _Kwargs) -> _Op:
        raw_axes = kw.axes()
        axes = self.own_axes(kw, raw_axes)
        # bioimageio.core: per-sample percentiles (axes given, without batch) use the
        # inverted CDF; percentiles over all axes or across the batch interpolate.
        method: QuantileMethod = (
            "linear" if raw_axes is None or "batch" in raw_axes else "inverted_cdf"
        )
        bounds: list[float | StatRequest | None] = []
        for value_key, pct_key in (("min", "min_percentile"), ("max", "max_percentile")):
            value = kw.optional_number(value_key)
            pct = kw.optional_number(pct_key)
            if value is not None and pct is not None:
                raise kw.error(f"both {value_key!r} and {pct_key!r} are given")
            if pct is not None:
                if not 0.0 <= pct <= 100.0:
                    raise kw.error(f"{pct_key} {pct} is not in [0, 100]")
                bounds.append(self.own("quantile", axes, q=pct / 100.0, method=method))
            else:
                bounds.append(value)
        low, high = bounds
        if low is None and high is None:
            raise kw.error("none of 'min', 'max', 'min_percentile', 'max_percentile' is given")
        if isinstance(low, float) and isinstance(high, float) and low >= high:
            raise kw.error(f"min {low} is not smaller than max {high}")
        if (
            isinstance(low, StatRequest)
            and isinstance(high, StatRequest)
            and (low.q or 0.0) >= (high.q or 0.0)
        ):
            raise kw.error("min_percentile is not smaller than max_percentile")
        return _Clip("clip", self.tensor.id, low, high)

    def _scale_range(self, kw: _Kwargs) -> _Op:
        raw_axes = kw.axes()
        low_pct = kw.number("min_percentile", 0.0)
        high_pct = kw.number("max_percentile", 100.0)
        if not 0.0 <= low_pct < high_pct <= 100.0:
            raise kw.error(f"percentiles {low_pct}, {high_pct} are not 0 <= min < max <= 100")
        eps = kw.number("eps", 1e-6)
        ref = kw.get("reference_tensor")
        if ref is None:
            axes = self.own_axes(kw, raw_axes)
            low = self.own("quantile", axes, q=low_pct / 100.0)
            high = self.own("quantile", axes, q=high_pct / 100.0)
        else:
            # The reference is the *unprocessed* tensor (bioimage.io spec 0.5).
            low = StatRequest(str(ref), "quantile", raw_axes, q=low_pct / 100.0)
            high = StatRequest(str(ref), "quantile", raw_axes, q=high_pct / 100.0)
        return _ScaleRange("scale_range", self.tensor.id, low, high, eps)


def _single(kw: _Kwargs, key: str, value: float | tuple[float, ...]) -> float:
    if isinstance(value, tuple):
        if len(value) != 1:
            raise kw.error(f"{len(value)} values of {key!r} need an 'axis'")
        return value[0]
    return value


def _run_ops(
    ops: Sequence[_Op], x: Array, axes: tuple[str, ...], stats: Stats, owned: bool
) -> tuple[Array, bool]:
    """Apply ``ops``; ``owned`` says whether ``x`` may be overwritten."""
    for op in ops:
        if op.inplace:
            if not owned or x.dtype.kind != "f" or x.dtype.itemsize < 4:
                # Copy on first write, converting to the float type computed in.
                x = x.astype(_float_work_dtype(x.dtype), copy=True)
                owned = True
            x = op(x, axes, stats)
        else:
            y = op(x, axes, stats)
            owned = owned or y is not x
            x = y
    return x, owned


class Processing:
    """A tensor's compiled pre- or postprocessing.

    Parameters
    ----------
    ops:
        The operations, in order (bioimage.io 0.5 ids and keyword arguments).
    tensor:
        The tensor they belong to (its id names the statistics of its own data; its
        axes validate the operations' ``axes`` arguments).
    sequential_stats:
        Compute each operation's statistics on the data as left by the operations
        before it (default, as the specification describes).  ``False`` computes all
        of them on the tensor as given, like bioimageio.core 0.11.

    Raises
    ------
    ModelPackageError
        For an unknown operation or invalid arguments.
    """

    def __init__(
        self, ops: Sequence[OpSpec], tensor: TensorSpec, *, sequential_stats: bool = True
    ) -> None:
        self.tensor = tensor
        self.ops = tuple(ops)
        stages: list[list[_Op]] = [[]]
        changed = False
        for spec in self.ops:
            if sequential_stats and changed and _needs_own_stats(spec):
                stages.append([])
                changed = False
            op = _Compiler(tensor, len(stages) - 1).compile(spec)
            stages[-1].append(op)
            changed = changed or op.changes_values
        self._stages = tuple(tuple(s) for s in stages)
        self._requests = frozenset(r for s in self._stages for op in s for r in op.requests())

    @property
    def tensor_id(self) -> str:
        return self.tensor.id

    @property
    def n_stages(self) -> int:
        """How many stages the operations form (1 unless a later operation needs
        statistics of data changed by an earlier one)."""
        return len(self._stages)

    @property
    def is_identity(self) -> bool:
        """True when there is nothing to do."""
        return not self.ops

    @property
    def reference_tensors(self) -> frozenset[str]:
        """Ids of other tensors whose (unprocessed) statistics are needed."""
        return frozenset(r.tensor_id for r in self._requests if r.tensor_id != self.tensor.id)

    def stat_requests(self, stage: int | None = None) -> frozenset[StatRequest]:
        """The statistics the operations need.

        Parameters
        ----------
        stage:
            Only those computed on the data entering this stage (stage 0 includes the
            reference tensors'); ``None``: all.
        """
        if stage is None:
            return self._requests
        return frozenset(r for r in self._requests if r.stage == stage)

    def apply(
        self,
        array: Array,
        axes: Sequence[str],
        stats: Stats,
        *,
        stage: int | None = None,
    ) -> Array:
        """Apply the operations to a whole sample or to a tile of it.

        Parameters
        ----------
        array:
            The data (never modified; returned as is when no operation changes it).
        axes:
            Axis ids of ``array``, e.g. ``("batch", "channel", "y", "x")``.
        stats:
            Values of :meth:`stat_requests` (more are ignored), keepdims-shaped over
            ``axes`` (see the module documentation for tiles).
        stage:
            Apply only this stage; ``None``: all.

        Returns
        -------
        numpy.ndarray
            The processed data: float32 (float64 for float64 data) after computing
            operations, the requested type after ``ensure_dtype``, bool after
            ``binarize``.
        """
        axes = _check_axes(array, axes, self.tensor.id)
        stages = self._stages if stage is None else (self._stages[stage],)
        x, owned = array, False
        for ops in stages:
            x, owned = _run_ops(ops, x, axes, stats, owned)
        return x

    def sample_stats(
        self,
        array: Array,
        axes: Sequence[str],
        reference: Mapping[str, tuple[Array, Sequence[str]]] | None = None,
    ) -> dict[StatRequest, Array]:
        """All statistics for one whole sample, ready for :meth:`apply` on it or its tiles.

        Parameters
        ----------
        array, axes:
            The whole tensor and its axis ids.
        reference:
            The *unprocessed* reference tensors with their axis ids; their statistics
            are laid out over ``axes``.
        """
        stats, _ = self._stats_and_result(array, axes, reference, keep_result=False)
        return stats

    def run(
        self,
        array: Array,
        axes: Sequence[str],
        reference: Mapping[str, tuple[Array, Sequence[str]]] | None = None,
    ) -> Array:
        """Compute the statistics on the whole ``array`` (and references) and apply.

        Parameters are those of :meth:`sample_stats`; the result is that of :meth:`apply`.
        """
        _, result = self._stats_and_result(array, axes, reference, keep_result=True)
        return result

    def _stats_and_result(
        self,
        array: Array,
        axes: Sequence[str],
        reference: Mapping[str, tuple[Array, Sequence[str]]] | None,
        keep_result: bool,
    ) -> tuple[dict[StatRequest, Array], Array]:
        axes = _check_axes(array, axes, self.tensor.id)
        reference = reference or {}
        own = self.tensor.id
        stats: dict[StatRequest, Array] = {}
        first = self.stat_requests(0)
        mine = {r for r in first if r.tensor_id == own}
        if mine:
            stats.update(compute_stats(mine, {own: (array, axes)}))
        for ref_id in {r.tensor_id for r in first} - {own}:
            if ref_id not in reference:
                raise ValueError(f"tensor {own!r} needs statistics of tensor {ref_id!r}, not given")
            ref_array, ref_axes = reference[ref_id]
            ref_axes = _check_axes(np.asarray(ref_array), ref_axes, ref_id)
            ref_stats = compute_stats(
                {r for r in first if r.tensor_id == ref_id}, {ref_id: (ref_array, ref_axes)}
            )
            stats.update({r: align_stat(v, ref_axes, axes) for r, v in ref_stats.items()})
        x, owned = array, False
        last = len(self._stages) - 1
        for k, ops in enumerate(self._stages):
            if k > 0:
                stats.update(compute_stats(self.stat_requests(k), {own: (x, axes)}))
            if k < last or keep_result:
                x, owned = _run_ops(ops, x, axes, stats, owned)
        return stats, x
