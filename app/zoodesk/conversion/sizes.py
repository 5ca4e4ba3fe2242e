"""Measuring which input sizes a converted ONNX graph accepts.

A description usually declares the one input size its PyTorch weights were tested
with, while the graph converted from them often takes any ``min + n * step``.
:func:`probe_input_sizes` finds that range by running the graph on zeros; the
conversion records it in the description (``config.zoodesk.onnx_input_sizes``, see
:func:`zoodesk.models.spec.apply_onnx_input_sizes`) so the engine tiles freely.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoodesk.errors import CancelledError
from zoodesk.inference.session import numpy_dtype
from zoodesk.models.spec import ModelSpec, TensorSpec

#: Largest step between accepted sizes that :func:`probe_input_sizes` looks for.
MAX_PROBED_STEP = 256

CancelCheck = Callable[[], bool]


def _never() -> bool:
    return False


def _check_cancel(cancel: CancelCheck) -> None:
    if cancel():
        raise CancelledError("weights conversion cancelled")


@dataclass(frozen=True)
class SizeProbe:
    """Which input sizes a graph accepts, as measured by :func:`probe_input_sizes`.

    Attributes
    ----------
    inputs
        Per input tensor id and axis id, ``{"min": m, "step": s}`` (a batch axis:
        ``{"min": 1, "step": 1}``, any batch); only axes whose accepted sizes go
        beyond the declared ones.  Empty: the declared sizes stay.
    probes
        Graph runs spent.
    notes
        Why some axes keep their declared size.
    """

    inputs: Mapping[str, Mapping[str, Mapping[str, int]]]
    probes: int
    notes: tuple[str, ...] = ()


def probe_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Probing tries sizes that fail on purpose: keep the runtime's error log quiet.
    options.log_severity_level = 4
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def graph_nodes_in_order(nodes: Sequence[Any], tensors: Sequence[TensorSpec]) -> list[Any]:
    """Graph nodes in the order of the description's tensors (by name, else order)."""
    names = {n.name: n for n in nodes}
    if all(t.id in names for t in tensors):
        return [names[t.id] for t in tensors]
    return list(nodes)[: len(tensors)]


def _expected_output_shape(
    spec: ModelSpec, tensor: TensorSpec, in_tensor: TensorSpec, in_shape: Sequence[int]
) -> list[int | None] | None:
    """The output shape the description implies for one input shape (None: any size).

    Returns None when a size reference gives no whole number of pixels: the tiler
    could not map such a block, so that input size is not usable.
    """
    batch = next((n for a, n in zip(in_tensor.axes, in_shape, strict=True) if a.kind == "batch"), 1)
    shape: list[int | None] = []
    for ax in tensor.axes:
        if ax.kind == "batch":
            shape.append(batch)
        elif ax.size is not None:
            shape.append(ax.size)
        elif ax.reference is not None and ax.reference.tensor_id == in_tensor.id:
            ref = in_tensor.axis(ax.reference.axis_id)
            value = in_shape[in_tensor.index_of(ref.id)] * ref.scale / ax.scale
            value += ax.reference.offset
            if abs(value - round(value)) > 1e-6:
                return None
            shape.append(round(value))
        else:
            shape.append(None)
    return shape


def probe_input_sizes(
    onnx_path: Path,
    spec: ModelSpec,
    base_shape: Sequence[int],
    *,
    cancel: CancelCheck | None = None,
) -> SizeProbe:
    """Measure which sizes of the input's spatial axes an ONNX graph accepts.

    Only axes that the description declares with a fixed size and that the graph
    leaves variable are measured (a declared ``min + n * step`` is kept as is).  A
    size is accepted when the graph runs and every output has the shape the
    description implies.  The search assumes the usual constraint of convolutional
    networks, ``min + n * step`` with a power-of-two step, and stays cheap:

    1. halve all measured axes together while the graph accepts it, giving a small
       accepted shape (512 -> 256 -> ... -> 8 for a UNet with 3 poolings);
    2. per axis, the step is the smallest power of two ``s`` for which that small
       size plus ``s`` is accepted, and the minimum is found by bisection below it;
    3. the result is checked on the minimum, on unequal sizes across axes and on a
       size beyond the declared one; if any check fails the declared sizes stay.

    A batch axis is reported as free when a batch of 2 is accepted.

    Parameters
    ----------
    onnx_path
        The graph.
    spec
        The model description (its input axes as declared).
    base_shape
        A shape the graph accepts (the test input's).
    cancel
        Checked between graph runs.

    Returns
    -------
    SizeProbe
        The accepted sizes of the axes that go beyond the declared ones.
    """
    cancel = cancel or _never
    if len(spec.inputs) != 1:
        return SizeProbe({}, 0, ("models with several inputs keep their declared input sizes",))
    tensor = spec.inputs[0]
    if any(a.reference is not None for a in tensor.axes):
        return SizeProbe({}, 0, ("inputs sized by reference keep their declared sizes",))
    session = probe_session(onnx_path)
    graph_in = graph_nodes_in_order(session.get_inputs(), [tensor])[0]
    graph_outs = graph_nodes_in_order(session.get_outputs(), spec.outputs)
    out_names = [o.name for o in graph_outs]
    dtype = numpy_dtype(graph_in.type)
    dims = list(graph_in.shape)
    base = list(base_shape)
    batch_pos = next((i for i, a in enumerate(tensor.axes) if a.kind == "batch"), None)
    if batch_pos is not None:
        base[batch_pos] = 1
    probes = 0

    def accepted(sizes: Mapping[int, int], batch: int = 1) -> bool:
        nonlocal probes
        _check_cancel(cancel)
        shape = list(base)
        for i, n in sizes.items():
            shape[i] = n
        if batch_pos is not None:
            shape[batch_pos] = batch
        if min(shape) < 1:
            return False
        probes += 1
        try:
            outputs = session.run(out_names, {graph_in.name: np.zeros(shape, dtype)})
        except Exception:
            # The runtime raises its own error types for shapes the graph rejects.
            return False
        for out, t in zip(outputs, spec.outputs, strict=True):
            expected = _expected_output_shape(spec, t, tensor, shape)
            if expected is None or len(expected) != out.ndim:
                return False
            if any(e is not None and e != n for e, n in zip(expected, out.shape, strict=True)):
                return False
        return True

    notes: list[str] = []
    measured = [
        i
        for i, a in enumerate(tensor.axes)
        if a.is_spatial and a.size is not None and not isinstance(dims[i], int)
    ]
    fixed_in_graph = [
        a.id for i, a in enumerate(tensor.axes) if a.is_spatial and isinstance(dims[i], int)
    ]
    if fixed_in_graph:
        notes.append(f"the graph fixes the size of {', '.join(fixed_in_graph)}")
    if not accepted({}):
        return SizeProbe({}, probes, ("the graph rejects the test input's shape",))
    sizes: dict[str, dict[str, dict[str, int]]] = {}
    small = {i: base[i] for i in measured}
    while measured and all(small[i] % 2 == 0 for i in measured):
        half = {i: small[i] // 2 for i in measured}
        if not accepted(half):
            break
        small = half
    steps: dict[int, int] = {}
    minima: dict[int, int] = {}
    for i in measured:
        others = {j: small[j] for j in measured if j != i}
        step = next(
            (
                s
                for s in (2**k for k in range(int(math.log2(MAX_PROBED_STEP)) + 1))
                if accepted({**others, i: small[i] + s})
            ),
            None,
        )
        if step is None:
            notes.append(f"{tensor.axes[i].id}: no other size found; it keeps its declared size")
            continue
        low, high = 0, (small[i] - 1) // step
        while low < high:
            mid = (low + high + 1) // 2
            if accepted({**others, i: small[i] - mid * step}):
                low = mid
            else:
                high = mid - 1
        steps[i] = step
        minima[i] = small[i] - low * step
    free = list(steps)
    if free:
        checks = [
            {i: minima[i] for i in free},
            {i: minima[i] + (k + 1) * steps[i] for k, i in enumerate(free)},
            {i: base[i] + steps[i] for i in free},
        ]
        fixed_rest = {i: base[i] for i in measured if i not in steps}
        consistent = all((base[i] - minima[i]) % steps[i] == 0 for i in free)
        if consistent and all(accepted({**fixed_rest, **c}) for c in checks):
            for i in free:
                sizes.setdefault(tensor.id, {})[tensor.axes[i].id] = {
                    "min": minima[i],
                    "step": steps[i],
                }
        else:
            notes.append("the sizes found did not hold up when checked; declared sizes kept")
            free = []
    if batch_pos is not None and tensor.axes[batch_pos].size is not None:
        small_shape = {i: minima[i] for i in free} or {i: small[i] for i in measured}
        if not isinstance(dims[batch_pos], int) and accepted(small_shape, batch=2):
            sizes.setdefault(tensor.id, {})[tensor.axes[batch_pos].id] = {"min": 1, "step": 1}
    return SizeProbe(sizes, probes, tuple(notes))
