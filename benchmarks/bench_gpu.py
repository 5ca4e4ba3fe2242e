"""Throughput and agreement with the CPU on every execution provider this machine offers.

Two models: the zoo's 2D nuclei U-Net (``--model``) and a 3D convolutional network
built here (four 3x3x3 convolutions with ReLU, 16 channels, dynamic sizes, random
weights from a fixed seed). Each runs through ZooDesk's session (the provider set-up
of ``zoodesk.inference.providers``: IO binding on CUDA, DirectML's options, ...) on
every provider ONNX Runtime offers here, and through bare ONNX Runtime with default
options on the same provider, for comparison. Reported per provider and model:
calls per second after warm-up for both, the ratio, and the largest absolute
difference of the outputs from the CPU's on the same inputs.

Without a GPU provider it says so and exits 0 (the CPU figures are still printed
with ``--cpu-too``). With ``ZOODESK_CUDA_GRAPHS=1`` the CUDA set-up replays CUDA
graphs for the fixed-shape model.

Usage::

    .venv/bin/python benchmarks/bench_gpu.py [--rounds 20] [--size 512] [--size-3d 64]
        [--model ../shared/zoo-models/unet2d_nuclei_broad] [--cpu-too]

Writes ``bench-results/gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "app"))

from zoodesk.inference.devices import available_devices  # noqa: E402
from zoodesk.inference.session import OnnxSession  # noqa: E402

DEFAULT_MODEL = REPO.parent / "shared" / "zoo-models" / "unet2d_nuclei_broad"


def build_3d_model(path: Path, channels: int = 16, layers: int = 4, seed: int = 0) -> None:
    """A small 3D CNN with dynamic spatial sizes (needs the ``onnx`` package)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = []
    inits = []
    previous, width = "input", 1
    for k in range(layers):
        out_channels = 1 if k == layers - 1 else channels
        weight = rng.normal(0, 0.2, (out_channels, width, 3, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{k}"))
        conv = f"conv{k}"
        nodes.append(helper.make_node("Conv", [previous, f"w{k}"], [conv], pads=[1] * 6))
        if k < layers - 1:
            nodes.append(helper.make_node("Relu", [conv], [f"relu{k}"]))
            previous = f"relu{k}"
        else:
            previous = conv
        width = out_channels
    nodes.append(helper.make_node("Sigmoid", [previous], ["output"]))
    dims: list[int | str] = ["b", 1, "z", "y", "x"]
    graph = helper.make_graph(
        nodes,
        "cnn3d",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _bare(path: Path, provider: str) -> Any:
    import onnxruntime as ort

    providers = (
        [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    )
    return ort.InferenceSession(str(path), providers=providers)


def _rate(run: Any, feed: np.ndarray, rounds: int) -> tuple[float, np.ndarray]:
    out = run(feed)  # warm-up: allocation, convolution search, graph capture
    out = run(feed)
    start = time.perf_counter()
    for _ in range(rounds):
        out = run(feed)
    return rounds / (time.perf_counter() - start), out


def measure(
    path: Path, feed: np.ndarray, provider: str, device: str, rounds: int
) -> dict[str, Any]:
    session = OnnxSession(path, device)
    ours, ours_out = _rate(lambda x: session.run([x])[0], feed, rounds)
    bare_session = _bare(path, provider)
    name = bare_session.get_inputs()[0].name
    bare, _ = _rate(lambda x: bare_session.run(None, {name: x})[0], feed, rounds)
    return {
        "provider": session.device.provider,
        "setup": session.describe(),
        "zoodesk_calls_per_second": round(ours, 3),
        "bare_calls_per_second": round(bare, 3),
        "ratio_bare_over_zoodesk": round(bare / ours, 3),
        "output": ours_out,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--size", type=int, default=512, help="2D input edge (nuclei model)")
    parser.add_argument("--size-3d", type=int, default=64, help="3D input edge")
    parser.add_argument("--cpu-too", action="store_true", help="measure the CPU without a GPU")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "gpu.json")
    args = parser.parse_args(argv)

    devices = available_devices()
    gpus = [d for d in devices if d.is_gpu]
    offered = ", ".join(d.provider for d in devices)
    if not gpus:
        print(f"no GPU execution provider in this installation (ONNX Runtime offers: {offered})")
        if not args.cpu_too:
            return 0
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_3d = Path(tmp) / "cnn3d.onnx"
        build_3d_model(model_3d)
        cases = {
            "nuclei-2d": (
                args.model / "weights.onnx",
                rng.random((1, 1, args.size, args.size), dtype=np.float32),
            ),
            "cnn-3d": (model_3d, rng.random((1, 1) + (args.size_3d,) * 3, dtype=np.float32)),
        }
        rows: list[dict[str, Any]] = []
        for case, (path, feed) in cases.items():
            reference = OnnxSession(path, "cpu").run([feed])[0]
            targets = [(d.provider, "gpu") for d in gpus]
            if args.cpu_too or not gpus:
                targets.insert(0, ("CPUExecutionProvider", "cpu"))
            for provider, device in targets:
                row = measure(path, feed, provider, device, args.rounds)
                output = row.pop("output")
                row["model"] = case
                row["max_abs_diff_vs_cpu"] = float(np.abs(output - reference).max())
                rows.append(row)
    header = ("model", "provider", "zoodesk/s", "bare/s", "ratio", "max|diff|")
    print("{:10s} {:24s} {:>10s} {:>10s} {:>6s} {:>10s}".format(*header))
    for r in rows:
        print(
            f"{r['model']:10s} {r['provider']:24s} {r['zoodesk_calls_per_second']:10.2f} "
            f"{r['bare_calls_per_second']:10.2f} {r['ratio_bare_over_zoodesk']:6.2f} "
            f"{r['max_abs_diff_vs_cpu']:10.2e}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"providers_offered": offered, "rows": rows}, indent=2))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
