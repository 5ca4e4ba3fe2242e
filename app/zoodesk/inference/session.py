"""One ONNX Runtime session per model and device, created once and reused."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoodesk.errors import ModelPackageError
from zoodesk.inference.devices import Device, choose_device, device_for_provider

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(uint16)": np.uint16,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def numpy_dtype(onnx_type: str) -> np.dtype[Any]:
    """The numpy dtype of an ONNX Runtime type name such as ``tensor(float)``."""
    return np.dtype(_ORT_TYPES.get(onnx_type, np.float32))


@dataclass(frozen=True)
class GraphTensor:
    """A graph input or output: name, numpy dtype and shape (None for dynamic dims)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...]


def default_threads() -> int:
    """Intra-op threads: every physical core (ONNX Runtime's default uses all)."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:
        cores = None
    return max(1, cores or os.cpu_count() or 1)


def _graph_tensors(nodes: Sequence[Any]) -> tuple[GraphTensor, ...]:
    result = []
    for n in nodes:
        dims = tuple(d if isinstance(d, int) and d > 0 else None for d in n.shape)
        result.append(GraphTensor(n.name, numpy_dtype(n.type), dims))
    return tuple(result)


@dataclass
class OnnxSession:
    """An ``onnxruntime.InferenceSession`` on a chosen device.

    ``device`` is the device that actually runs the graph, read back from the
    session; ``warnings`` lists every fallback that happened on the way.
    """

    weights_path: Path
    requested: str = "auto"
    threads: int | None = None
    device: Device = field(init=False)
    warnings: list[str] = field(init=False, default_factory=list)
    inputs: tuple[GraphTensor, ...] = field(init=False)
    outputs: tuple[GraphTensor, ...] = field(init=False)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        wanted, self.warnings = choose_device(self.requested)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads or 0
        # Our own pipeline overlaps I/O with inference; ORT's spinning worker
        # threads would otherwise burn the cores the reader and writer need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [wanted.provider]
        if wanted.provider != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")
        try:
            self._session = ort.InferenceSession(
                str(self.weights_path), sess_options=options, providers=providers
            )
        except Exception as exc:
            if wanted.is_gpu:
                self.warnings.append(
                    f"could not start {wanted.description} ({str(exc).splitlines()[0]}); "
                    "running on the CPU"
                )
                try:
                    self._session = ort.InferenceSession(
                        str(self.weights_path),
                        sess_options=options,
                        providers=["CPUExecutionProvider"],
                    )
                except Exception as exc2:
                    raise ModelPackageError(
                        f"{self.weights_path}: ONNX Runtime cannot load these weights "
                        f"({str(exc2).splitlines()[0]})"
                    ) from exc2
            else:
                raise ModelPackageError(
                    f"{self.weights_path}: ONNX Runtime cannot load these weights "
                    f"({str(exc).splitlines()[0]})"
                ) from exc
        active = self._session.get_providers()
        self.device = device_for_provider(active[0]) if active else wanted
        if wanted.provider not in active:
            # ORT drops a provider it cannot initialise (e.g. missing CUDA libraries)
            # without raising: make that visible.
            self.warnings.append(
                f"{wanted.description} is not usable here; running on {self.device.description}"
            )
        self.inputs = _graph_tensors(self._session.get_inputs())
        self.outputs = _graph_tensors(self._session.get_outputs())

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the graph on arrays given in graph-input order."""
        named = {g.name: a for g, a in zip(self.inputs, feeds, strict=True)}
        return list(self._session.run(None, named))

    @property
    def provider_options(self) -> dict[str, Any]:
        return dict(self._session.get_provider_options())


def map_tensors_to_graph(
    tensor_ids: Sequence[str], graph: Sequence[GraphTensor], what: str, source: Path
) -> list[int]:
    """Index of the graph tensor for each model tensor: by name, else by order.

    Zoo descriptions often call a tensor ``raw`` where the exported graph calls it
    ``input.1``; when the names do not all match, the order decides.
    """
    names = [g.name for g in graph]
    if set(tensor_ids) <= set(names):
        return [names.index(t) for t in tensor_ids]
    if len(tensor_ids) != len(graph):
        raise ModelPackageError(
            f"{source}: the description has {len(tensor_ids)} {what} "
            f"({', '.join(tensor_ids)}) but the ONNX graph has {len(graph)} ({', '.join(names)})"
        )
    return list(range(len(tensor_ids)))
