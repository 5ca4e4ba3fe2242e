"""Small ONNX models and bioimage.io packages that tests build for themselves.

Each model is a known filter whose result the tests can compute independently
with SciPy, so that tiling, padding and stitching are checked against an answer
that does not come from the code under test.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests import yaml_writer

OPSET = 17


def box_kernel(radius: int, ndim: int) -> np.ndarray:
    """A normalised box kernel of side 2*radius+1 (shape 1x1xKxK[xK])."""
    k = 2 * radius + 1
    return np.full((1, 1) + (k,) * ndim, 1.0 / k**ndim, dtype=np.float32)


def conv_model(
    path: Path,
    *,
    radius: int = 1,
    ndim: int = 2,
    fixed: Sequence[int] | None = None,
    batch: int | None = None,
    channels: int = 1,
    input_name: str = "input.1",
    output_name: str = "output.7",
) -> np.ndarray:
    """Write a same-size box-filter conv (zero padding) per channel; return its kernel."""
    kernel = box_kernel(radius, ndim)
    weight = np.repeat(kernel, channels, axis=0)  # depthwise: one filter per channel
    spatial: list[int | str] = list(fixed) if fixed else [f"s{i}" for i in range(ndim)]
    shape: list[int | str] = [batch if batch else "b", channels, *spatial]
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, shape)
    node = helper.make_node(
        "Conv",
        [input_name, "w"],
        [output_name],
        pads=[radius] * (2 * ndim),
        group=channels,
    )
    graph = helper.make_graph([node], "box", [x], [y], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return kernel


def two_input_model(path: Path) -> None:
    """Outputs (a + b) and (a - b), both same-size as the inputs, dynamic shapes."""
    shape: list[int | str] = ["b", 1, "y", "x"]
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, shape)
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, shape)
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, shape)
    d = helper.make_tensor_value_info("diff", TensorProto.FLOAT, shape)
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Sub", ["a", "b"], ["diff"]),
    ]
    graph = helper.make_graph(nodes, "two", [a, b], [s, d])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.save(model, str(path))


def pool_model(path: Path) -> None:
    """2x2 average pooling: the output has half the input's size along y and x."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 1, "y", "x"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 1, "oy", "ox"])
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph([node], "pool", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.save(model, str(path))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_package(
    folder: Path,
    weights: Path,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    test_arrays: dict[str, np.ndarray],
    *,
    name: str = "test model",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a bioimage.io 0.5 description for ``weights`` with its test tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    if weights.parent != folder:
        weights = Path(shutil.copy2(weights, folder / weights.name))
    for tensor in (*inputs, *outputs):
        npy = folder / f"test_{tensor['id']}.npy"
        np.save(npy, test_arrays[tensor["id"]])
        tensor["test_tensor"] = {"source": npy.name, "sha256": sha256(npy)}
    (folder / "README.md").write_text(f"# {name}\n\nA model built by the test-suite.\n")
    descr: dict[str, Any] = {
        "format_version": "0.5.4",
        "type": "model",
        "name": name,
        "description": "A small model built by the test-suite.",
        "authors": [{"name": "Test Suite"}],
        "cite": [{"text": "test", "url": "https://example.com/"}],
        "license": "MIT",
        "documentation": "README.md",
        "timestamp": "2026-01-01T00:00:00",
        "inputs": inputs,
        "outputs": outputs,
        "weights": {
            "onnx": {"source": weights.name, "sha256": sha256(weights), "opset_version": OPSET}
        },
    }
    if extra:
        descr.update(extra)
    path = folder / "bioimageio.yaml"
    yaml_writer.dump(descr, path)
    return path
