"""Each execution provider is set up as ONNX Runtime's documentation asks.

No GPU runs here: the setups are checked as data, and their call paths (IO binding,
kept device buffers, one run at a time, DirectML's session options) run on the CPU
provider standing in, against plain runs of the same graph.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import NUCLEI
from zoodesk.inference import providers
from zoodesk.inference.providers import (
    DEFAULT_BATCH_VOXELS,
    apply_session_options,
    batch_voxel_budget,
    provider_setup,
)
from zoodesk.inference.session import OnnxSession

WEIGHTS = NUCLEI / "weights.onnx"


def test_directml_gets_its_required_session_options_and_one_run_at_a_time() -> None:
    setup = provider_setup("DmlExecutionProvider", fixed_shapes=False)
    assert setup.session_options == {"enable_mem_pattern": False, "execution_mode": "sequential"}
    assert setup.one_run_at_a_time
    options = ort.SessionOptions()
    apply_session_options(options, setup)
    assert options.enable_mem_pattern is False
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


@pytest.mark.parametrize("fixed", [True, False])
def test_cuda_binds_io_and_searches_convolutions_by_shape(
    fixed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZOODESK_CUDA_GRAPHS", raising=False)
    setup = provider_setup("CUDAExecutionProvider", fixed_shapes=fixed)
    assert setup.io_binding
    options = setup.provider_options
    assert options["cudnn_conv_algo_search"] == ("EXHAUSTIVE" if fixed else "HEURISTIC")
    assert options["arena_extend_strategy"] == "kSameAsRequested"
    assert options["enable_cuda_graph"] == "0" and not setup.cuda_graph
    monkeypatch.setenv("ZOODESK_CUDA_GRAPHS", "1")
    asked = provider_setup("CUDAExecutionProvider", fixed_shapes=fixed)
    # A graph replays fixed buffers: only for fixed shapes, and only when asked for.
    assert asked.cuda_graph is fixed
    assert asked.provider_options["enable_cuda_graph"] == ("1" if fixed else "0")


def test_coreml_builds_an_ml_program_on_all_compute_units() -> None:
    setup = provider_setup("CoreMLExecutionProvider", fixed_shapes=True)
    assert setup.provider_options["ModelFormat"] == "MLProgram"
    assert setup.provider_options["MLComputeUnits"] == "ALL"
    assert setup.provider_options["RequireStaticInputShapes"] == "1"
    dynamic = provider_setup("CoreMLExecutionProvider", fixed_shapes=False)
    assert dynamic.provider_options["RequireStaticInputShapes"] == "0"


def _stand_in(provider: str, **changes: object) -> providers.ProviderSetup:
    setup = provider_setup(provider, fixed_shapes=True)
    return dataclasses.replace(
        setup, provider="CPUExecutionProvider", provider_options={}, **changes
    )


@pytest.mark.parametrize(
    "setup",
    [
        _stand_in("CUDAExecutionProvider"),
        _stand_in("CUDAExecutionProvider", cuda_graph=True),
        _stand_in("DmlExecutionProvider"),
    ],
    ids=["io-binding", "kept-buffers", "directml-options"],
)
def test_other_providers_call_paths_give_the_plain_results(
    setup: providers.ProviderSetup,
) -> None:
    plain = OnnxSession(WEIGHTS, "cpu")
    bound = OnnxSession(WEIGHTS, "cpu", stand_in=setup)
    assert bound.describe()["io_binding"] == setup.io_binding
    rng = np.random.default_rng(1)
    first = rng.random((1, 1, 512, 512), dtype=np.float32)
    second = rng.random((1, 1, 512, 512), dtype=np.float32)
    a1 = bound.run([first])[0]
    a2 = bound.run([second])[0]  # same shapes: kept buffers are refilled in place
    np.testing.assert_array_equal(a1, plain.run([first])[0])
    np.testing.assert_array_equal(a2, plain.run([second])[0])
    assert not np.array_equal(a1, a2)  # results of one call survive the next


def test_one_run_at_a_time_holds_under_concurrent_callers() -> None:
    session = OnnxSession(WEIGHTS, "cpu", stand_in=_stand_in("DmlExecutionProvider"))
    inside = 0
    most = 0
    guard = threading.Lock()
    real = session._run

    def counting(feeds: list[np.ndarray]) -> list[np.ndarray]:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        try:
            return real(feeds)
        finally:
            with guard:
                inside -= 1

    session._run = counting  # type: ignore[method-assign]
    x = np.zeros((1, 1, 512, 512), dtype=np.float32)
    threads = [threading.Thread(target=session.run, args=([x],)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1


def test_tiles_per_call_follow_the_free_device_memory(tmp_path: Path) -> None:
    from tests.batch_helpers import box_package
    from zoodesk.inference.tiling import plan_tiles

    assert batch_voxel_budget("CPUExecutionProvider") == DEFAULT_BATCH_VOXELS
    assert batch_voxel_budget("CUDAExecutionProvider", free_bytes=None) >= DEFAULT_BATCH_VOXELS
    big = batch_voxel_budget("CUDAExecutionProvider", free_bytes=40 * 2**30)
    assert big == int(40 * 2**30 * providers.DEVICE_MEMORY_SHARE) // providers.BYTES_PER_VOXEL
    spec = box_package(tmp_path).spec
    shapes = {"raw": (1, 1, 4096, 4096)}
    small = plan_tiles(spec, shapes, tile={"y": 1024, "x": 1024})
    large = plan_tiles(spec, shapes, tile={"y": 1024, "x": 1024}, batch_voxels=big)
    assert small.batch_size == DEFAULT_BATCH_VOXELS // (1024 * 1024)
    blocks = math.prod(len(b) for b in large.axis_blocks.values())
    assert large.batch_size == min(blocks, big // (1024 * 1024)) > small.batch_size


def test_the_gpu_benchmark_says_when_there_is_no_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    from zoodesk.inference.devices import available_devices

    if any(d.is_gpu for d in available_devices()):
        pytest.skip("this machine has a GPU provider: the benchmark measures it instead")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main([]) == 0
    assert "no GPU execution provider in this installation" in capsys.readouterr().out


def test_the_gpu_is_chosen_by_zoodesk_gpu_device(monkeypatch) -> None:
    from zoodesk.inference.providers import provider_setup

    monkeypatch.delenv("ZOODESK_GPU_DEVICE", raising=False)
    assert (
        provider_setup("CUDAExecutionProvider", fixed_shapes=False).provider_options["device_id"]
        == "0"
    )
    monkeypatch.setenv("ZOODESK_GPU_DEVICE", "3")
    for provider in ("CUDAExecutionProvider", "DmlExecutionProvider"):
        setup = provider_setup(provider, fixed_shapes=False)
        assert setup.provider_options["device_id"] == "3"
    monkeypatch.setenv("ZOODESK_GPU_DEVICE", "first")  # not an index: the default
    assert (
        provider_setup("CUDAExecutionProvider", fixed_shapes=False).provider_options["device_id"]
        == "0"
    )


def test_cluster_workers_on_one_computer_share_its_gpus_in_turn() -> None:
    pytest.importorskip("distributed")
    from zoodesk.cluster.worker import gpu_for_worker

    assert [gpu_for_worker(rank, 2) for rank in range(5)] == [0, 1, 0, 1, 0]
    assert gpu_for_worker(0, 0) is None
