"""How each execution provider is set up, following ONNX Runtime's guidance for it.

- **DirectML** (Windows): the memory pattern off and sequential execution, as its
  documentation requires, and one ``Run`` at a time per session (DirectML sessions
  are not safe to run concurrently).
- **CUDA**: outputs through IO binding (inputs copied once, outputs fetched once);
  cuDNN's exhaustive convolution search when every block has the same shape (the
  search is paid once per shape) and its heuristic otherwise; the memory arena grown
  by what is asked rather than by powers of two, so several tiles per call fit; CUDA
  graphs only when asked for (``ZOODESK_CUDA_GRAPHS=1``) and the graph's shapes are
  fixed, since a graph replays fixed buffers.
- **CoreML**: an ML Program on all compute units (Neural Engine, GPU, CPU), with
  static input shapes required when the blocks have a fixed shape.
- **CPU**: ONNX Runtime's defaults (its intra-op threads spin between operators).

What is used is recorded with every run (the run record's ``device``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass, field
from typing import Any

#: Tile budget (voxels per call) when the device's free memory is unknown.
DEFAULT_BATCH_VOXELS = 4 * 1024 * 1024
#: Share of the free device memory that one call's inputs, outputs and activations
#: may take; activations of a U-Net take tens of times the input's size.
DEVICE_MEMORY_SHARE = 0.25
#: Bytes of device memory one input voxel costs during a call: the nuclei U-Net's
#: activations take about 415 bytes per input voxel (measured with the CPU provider,
#: 512 x 512 blocks); the rest is margin for deeper models.
BYTES_PER_VOXEL = 600


@dataclass(frozen=True)
class ProviderSetup:
    """What a session on one provider is created with, and how it is run.

    ``provider_options`` go to ONNX Runtime as given; ``session_options`` name the
    ``SessionOptions`` attributes set (``enable_mem_pattern``, ``execution_mode``).
    ``io_binding`` runs through an IO binding, ``cuda_graph`` replays a captured
    graph, ``one_run_at_a_time`` serialises calls.
    """

    provider: str
    provider_options: dict[str, str] = field(default_factory=dict)
    session_options: dict[str, Any] = field(default_factory=dict)
    io_binding: bool = False
    cuda_graph: bool = False
    one_run_at_a_time: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The setup as recorded."""
        return {
            "provider": self.provider,
            "provider_options": dict(self.provider_options),
            "session_options": dict(self.session_options),
            "io_binding": self.io_binding,
            "cuda_graph": self.cuda_graph,
            "one_run_at_a_time": self.one_run_at_a_time,
        }


def cuda_graphs_wanted() -> bool:
    """True when the user asked for CUDA graphs (``ZOODESK_CUDA_GRAPHS=1``)."""
    return os.environ.get("ZOODESK_CUDA_GRAPHS", "").strip().lower() in ("1", "true", "yes")


#: Environment variable choosing the GPU (its index) where a computer has several.
GPU_DEVICE_VARIABLE = "ZOODESK_GPU_DEVICE"


def gpu_device_id() -> str:
    """The index of the GPU to run on: ``ZOODESK_GPU_DEVICE``, or 0."""
    value = os.environ.get(GPU_DEVICE_VARIABLE, "").strip()
    return value if value.isdigit() else "0"


def cuda_device_count() -> int:
    """How many CUDA devices this computer has (0 where CUDA is not there)."""
    runtime = _cuda_runtime()
    if runtime is None:
        return 0
    count = ctypes.c_int()
    try:
        status = runtime.cudaGetDeviceCount(ctypes.byref(count))
    except (AttributeError, OSError):
        return 0
    return int(count.value) if status == 0 else 0


def provider_setup(provider: str, *, fixed_shapes: bool) -> ProviderSetup:
    """The setup for ``provider``; ``fixed_shapes``: every call has the same shapes."""
    if provider == "DmlExecutionProvider":
        return ProviderSetup(
            provider,
            provider_options={"device_id": gpu_device_id()},
            session_options={"enable_mem_pattern": False, "execution_mode": "sequential"},
            one_run_at_a_time=True,
        )
    if provider == "CUDAExecutionProvider":
        graph = fixed_shapes and cuda_graphs_wanted()
        return ProviderSetup(
            provider,
            provider_options={
                "device_id": gpu_device_id(),
                "cudnn_conv_algo_search": "EXHAUSTIVE" if fixed_shapes else "HEURISTIC",
                "arena_extend_strategy": "kSameAsRequested",
                "do_copy_in_default_stream": "1",
                "enable_cuda_graph": "1" if graph else "0",
            },
            io_binding=True,
            cuda_graph=graph,
        )
    if provider == "CoreMLExecutionProvider":
        return ProviderSetup(
            provider,
            provider_options={
                "ModelFormat": "MLProgram",
                "MLComputeUnits": "ALL",
                "RequireStaticInputShapes": "1" if fixed_shapes else "0",
            },
        )
    return ProviderSetup(provider)


def apply_session_options(options: Any, setup: ProviderSetup) -> None:
    """Set ``setup.session_options`` on an ``onnxruntime.SessionOptions``."""
    import onnxruntime as ort

    if "enable_mem_pattern" in setup.session_options:
        options.enable_mem_pattern = bool(setup.session_options["enable_mem_pattern"])
    mode = setup.session_options.get("execution_mode")
    if mode == "sequential":
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    elif mode == "parallel":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL


def _cuda_runtime() -> Any | None:
    names = ["cudart64_12.dll", "cudart64_110.dll"] if sys.platform == "win32" else []
    names += ["libcudart.so.12", "libcudart.so.11.0", "libcudart.so"]
    found = ctypes.util.find_library("cudart")
    if found:
        names.append(found)
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def free_device_memory(provider: str) -> int | None:
    """Free memory of the current device in bytes, where it can be asked (CUDA); else
    None.  (The runtime's current device is the one the session runs on: ONNX Runtime
    sets it for the thread that creates the session.)"""
    if provider != "CUDAExecutionProvider":
        return None
    runtime = _cuda_runtime()
    if runtime is None:
        return None
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    try:
        status = runtime.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total))
    except (AttributeError, OSError):
        return None
    return int(free.value) if status == 0 and total.value else None


def batch_voxel_budget(provider: str, free_bytes: int | None = None) -> int:
    """Input voxels one call may carry: from the free device memory where it is known.

    On the CPU and where the free memory cannot be asked, the default budget.
    """
    if free_bytes is None:
        free_bytes = free_device_memory(provider)
    if not free_bytes:
        return DEFAULT_BATCH_VOXELS
    return max(DEFAULT_BATCH_VOXELS, int(free_bytes * DEVICE_MEMORY_SHARE) // BYTES_PER_VOXEL)
