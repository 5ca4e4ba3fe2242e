"""One ONNX Runtime session per model and device, created once and reused."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoodesk.errors import ModelPackageError
from zoodesk.inference.devices import Device, choose_device, device_for_provider
from zoodesk.inference.providers import ProviderSetup, apply_session_options, provider_setup

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


def _linux_physical_cores() -> int | None:
    """Distinct (package, core) pairs of the CPUs in sysfs; None where unreadable."""
    cores = set()
    for topology in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            continue
        cores.add((package, core))
    return len(cores) or None


def default_threads() -> int:
    """Intra-op threads: every physical core (ONNX Runtime's default uses all).

    On Linux the cores are read from sysfs, which is what psutil does too, without
    the cost of importing it at every start.
    """
    cores = _linux_physical_cores() if sys.platform.startswith("linux") else None
    if cores is None:
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
    #: Every call has the same input shapes (the model accepts one block size).
    fixed_shapes: bool = False
    #: A setup used instead of the provider's own: lets the CPU provider run the
    #: session options and call paths of another provider (IO binding, one run at a
    #: time, kept buffers), as tests do where no GPU exists.
    stand_in: ProviderSetup | None = None
    device: Device = field(init=False)
    #: How the provider that runs was set up (see :mod:`zoodesk.inference.providers`).
    setup: ProviderSetup = field(init=False)
    warnings: list[str] = field(init=False, default_factory=list)
    inputs: tuple[GraphTensor, ...] = field(init=False)
    outputs: tuple[GraphTensor, ...] = field(init=False)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        wanted, self.warnings = choose_device(self.requested)
        self.setup = self.stand_in or provider_setup(
            wanted.provider, fixed_shapes=self.fixed_shapes
        )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads or 0
        # The worker threads keep ONNX Runtime's default and spin between operators:
        # measured on two cores, turning that off to leave the reader and writer
        # threads more room made inference 25-30% slower and whole runs slower too
        # (docs/benchmarks.md, bench_batch.py's spinning check).
        apply_session_options(options, self.setup)
        providers: list[Any] = [(wanted.provider, self.setup.provider_options)]
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
        if self.device.provider != self.setup.provider and self.stand_in is None:
            self.setup = provider_setup(self.device.provider, fixed_shapes=self.fixed_shapes)
        self.inputs = _graph_tensors(self._session.get_inputs())
        self.outputs = _graph_tensors(self._session.get_outputs())
        self._lock = threading.Lock() if self.setup.one_run_at_a_time else None
        self._bound: _BoundRunner | None = None
        if self.setup.io_binding:
            self._bound = _BoundRunner(
                self._session,
                self.inputs,
                self.outputs,
                device_type="cuda" if self.device.provider == "CUDAExecutionProvider" else "cpu",
                keep_buffers=self.setup.cuda_graph,
            )

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the graph on arrays given in graph-input order."""
        if self._lock is not None:
            with self._lock:
                return self._run(feeds)
        return self._run(feeds)

    def _run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._bound is not None:
            return self._bound.run(feeds)
        named = {g.name: a for g, a in zip(self.inputs, feeds, strict=True)}
        return list(self._session.run(None, named))

    def describe(self) -> dict[str, Any]:
        """The provider's setup and the options ONNX Runtime reports, for the record."""
        return {**self.setup.as_dict(), "options_in_effect": self.provider_options}

    @property
    def provider_options(self) -> dict[str, Any]:
        return dict(self._session.get_provider_options())


class _BoundRunner:
    """Runs a session through an IO binding, on the device of its provider.

    Inputs are copied to the device once per call and outputs fetched once.  With
    ``keep_buffers`` (CUDA graphs) the same device buffers serve every call of the
    same shapes, as a captured graph replays fixed addresses: inputs are updated in
    place and outputs, preallocated from the first call's shapes, are read back.
    """

    def __init__(
        self,
        session: Any,
        inputs: Sequence[GraphTensor],
        outputs: Sequence[GraphTensor],
        *,
        device_type: str,
        keep_buffers: bool,
    ) -> None:
        self._session = session
        self._inputs = inputs
        self._outputs = outputs
        self._device = device_type
        self._keep = keep_buffers
        self._buffers: dict[
            tuple[tuple[int, ...], ...], tuple[Any, list[Any], list[Any], list[np.ndarray]]
        ] = {}

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        import onnxruntime as ort

        feeds = [np.ascontiguousarray(a) for a in feeds]
        if not self._keep:
            binding = self._session.io_binding()
            for graph, array in zip(self._inputs, feeds, strict=True):
                binding.bind_cpu_input(graph.name, array)
            for graph in self._outputs:
                binding.bind_output(graph.name, self._device)
            self._session.run_with_iobinding(binding)
            return list(binding.copy_outputs_to_cpu())
        key = tuple(a.shape for a in feeds)
        if key not in self._buffers:
            binding = self._session.io_binding()
            # Own copies: on the CPU an OrtValue wraps the array's memory, and the
            # in-place updates of later calls must not write into the caller's arrays.
            owned = [a.copy() for a in feeds]
            values = [ort.OrtValue.ortvalue_from_numpy(a, self._device, 0) for a in owned]
            for graph, value in zip(self._inputs, values, strict=True):
                binding.bind_ortvalue_input(graph.name, value)
            for graph in self._outputs:
                binding.bind_output(graph.name, self._device)
            # The first call allocates the outputs (and captures the graph).
            self._session.run_with_iobinding(binding)
            outs = list(binding.get_outputs())
            for graph, value in zip(self._outputs, outs, strict=True):
                binding.bind_ortvalue_output(graph.name, value)
            self._buffers[key] = (binding, values, outs, owned)
            return [np.array(v.numpy(), copy=True) for v in outs]
        binding, values, outs, _owned = self._buffers[key]
        for value, array in zip(values, feeds, strict=True):
            value.update_inplace(array)
        self._session.run_with_iobinding(binding)
        return [np.array(v.numpy(), copy=True) for v in outs]


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
