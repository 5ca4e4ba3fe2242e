"""Throughput of ``zoodesk predict`` against bare ONNX Runtime and bioimageio.core.

All three run in this one process, on the CPU, on the same images of the same
model, in this order: bare ONNX Runtime (``session.run`` on tensors already in
memory, with the same normalisation and sigmoid done in NumPy), ZooDesk's batch
runner (reading TIFF files and writing OME-TIFF outputs, exactly what ``zoodesk
predict`` does), and bioimageio.core's prediction pipeline (tensors in memory).
Steady-state throughput leaves out the first image of each (session warm-up).
Each of the three runs ``--rounds`` times, interleaved, and the best round counts,
so that a passing load on the machine does not favour one of them.

Usage::

    .venv/bin/python benchmarks/bench_predict.py [--images 40] [--size 512]
        [--model ../shared/zoo-models/unet2d_nuclei_broad] [--skip-core]

Prints a table and writes ``bench-results/predict.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

# bioimageio.core draws a progress bar per sample; it would drown the report.
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared" / "zoo-models" / "unet2d_nuclei_broad"


def synthetic_image(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Bright blobs on a noisy background, uint16, like a nuclei stain."""
    from scipy import ndimage

    seeds = (rng.random(shape) > 0.9985).astype(np.float32)
    blobs = ndimage.gaussian_filter(seeds, 6) * 4e4
    noise = rng.normal(100, 10, shape)
    return np.clip(blobs + noise, 0, 65535).astype(np.uint16)


def make_images(folder: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:03d}.tif"
        tifffile.imwrite(path, synthetic_image(rng, (size, size)))
        paths.append(path)
    return paths


def steady(times: list[float]) -> float:
    """Mean seconds per image, leaving out the first (warm-up)."""
    return statistics.fmean(times[1:]) if len(times) > 1 else times[0]


def bench_bare_ort(model: Path, arrays: list[np.ndarray]) -> dict[str, Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model / "weights.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    times = []
    for a in arrays:
        t0 = time.perf_counter()
        x = a.astype(np.float32)
        x = (x - x.mean()) / (x.std() + 1e-6)
        logits = session.run(None, {name: x[None, None]})[0]
        _ = 1 / (1 + np.exp(-logits))
        times.append(time.perf_counter() - t0)
    return {"per_image_s": steady(times), "total_s": sum(times)}


def bench_zoodesk(
    model: Path, folder: Path, out: Path, compression: str = "zlib"
) -> dict[str, Any]:
    from zoodesk.batch.runner import FileFinished, PredictionRequest, RunStarted, run_prediction

    request = PredictionRequest(
        model=model, inputs=[folder], output_dir=out, device="cpu", compression=compression
    )
    stamps: list[float] = []
    t_start = time.perf_counter()
    device = ""
    for event in run_prediction(request):
        if isinstance(event, RunStarted):
            device = event.device
            t_start = time.perf_counter()
        elif isinstance(event, FileFinished):
            assert event.entry.status == "ok", event.entry.error
            stamps.append(time.perf_counter())
    intervals = [stamps[0] - t_start] + [b - a for a, b in itertools.pairwise(stamps)]
    return {"per_image_s": steady(intervals), "total_s": stamps[-1] - t_start, "device": device}


def bench_core(model: Path, arrays: list[np.ndarray]) -> dict[str, Any]:
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline, load_description

    descr = load_description(model / "bioimageio.yaml", perform_io_checks=False)
    pipeline = create_prediction_pipeline(descr, weight_format="onnx", devices=["cpu"])
    times = []
    with pipeline:
        input_id = descr.inputs[0].id
        for i, a in enumerate(arrays):
            t0 = time.perf_counter()
            tensor = Tensor.from_numpy(
                a.astype(np.float32)[None, None], dims=("batch", "channel", "y", "x")
            )
            sample = Sample(members={input_id: tensor}, stat={}, id=i)
            pipeline.predict_sample_with_blocking(sample)
            times.append(time.perf_counter() - t0)
    return {"per_image_s": steady(times), "total_s": sum(times)}


def accuracy(model: Path) -> dict[str, float]:
    """Max abs difference from the model's own test output, for ZooDesk and core."""
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline, load_description

    from zoodesk.inference.predict import Predictor
    from zoodesk.models.package import load_model_package

    x = np.load(model / "test_input.npy")
    expected = np.load(model / "test_output.npy")
    ours = Predictor(load_model_package(model), device="cpu").predict({"raw": x}).outputs
    result = {"zoodesk": float(np.abs(next(iter(ours.values())) - expected).max())}
    try:
        descr = load_description(model / "bioimageio.yaml", perform_io_checks=False)
        with create_prediction_pipeline(descr, weight_format="onnx", devices=["cpu"]) as pp:
            sample = Sample(
                members={
                    descr.inputs[0].id: Tensor.from_numpy(x, dims=("batch", "channel", "y", "x"))
                },
                stat={},
                id=0,
            )
            out = pp.predict_sample_with_blocking(sample)
            core = next(iter(out.members.values())).data.to_numpy()
        result["bioimageio.core"] = float(np.abs(core - expected).max())
    except Exception as exc:
        result["bioimageio.core error"] = str(exc)  # type: ignore[assignment]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--skip-core", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--compression",
        default="zlib",
        choices=("zlib", "zstd", "none"),
        help="compression of ZooDesk's outputs (zoodesk predict --compression)",
    )
    parser.add_argument("--results", type=Path, default=REPO / "bench-results" / "predict.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        paths = make_images(folder, args.images, args.size)
        arrays = [tifffile.imread(p) for p in paths]
        results: dict[str, Any] = {
            "images": args.images,
            "size": args.size,
            "model": str(args.model),
            "compression": args.compression,
        }
        rounds: dict[str, list[dict[str, Any]]] = {"bare_onnxruntime": [], "zoodesk": []}
        if not args.skip_core:
            rounds["bioimageio_core"] = []
        for r in range(args.rounds):
            rounds["bare_onnxruntime"].append(bench_bare_ort(args.model, arrays))
            rounds["zoodesk"].append(
                bench_zoodesk(args.model, folder, Path(tmp) / f"out{r}", args.compression)
            )
            if not args.skip_core:
                rounds["bioimageio_core"].append(bench_core(args.model, arrays))
        for name, runs in rounds.items():
            best = min(runs, key=lambda run: run["per_image_s"])
            results[name] = {**best, "rounds_per_image_s": [run["per_image_s"] for run in runs]}
        results["accuracy_max_abs_diff"] = accuracy(args.model)

    bare = results["bare_onnxruntime"]["per_image_s"]
    ours = results["zoodesk"]["per_image_s"]
    results["ratio_zoodesk_vs_bare"] = ours / bare
    if "bioimageio_core" in results:
        results["speedup_vs_core"] = results["bioimageio_core"]["per_image_s"] / ours
        results["ratio_core_vs_bare"] = results["bioimageio_core"]["per_image_s"] / bare
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2))

    print(
        f"{args.images} images of {args.size}x{args.size}, CPU, steady state per image "
        f"(ZooDesk outputs compressed with {args.compression}):"
    )
    print(f"  bare ONNX Runtime   {bare * 1000:8.1f} ms")
    ratio = results["ratio_zoodesk_vs_bare"]
    print(f"  zoodesk predict     {ours * 1000:8.1f} ms  ({ratio:.3f}x bare)")
    if "bioimageio_core" in results:
        core = results["bioimageio_core"]["per_image_s"]
        print(
            f"  bioimageio.core     {core * 1000:8.1f} ms  "
            f"({results['ratio_core_vs_bare']:.2f}x bare; "
            f"zoodesk is {results['speedup_vs_core']:.2f}x faster)"
        )
    print(f"  max abs diff from the model's test output: {results['accuracy_max_abs_diff']}")
    print(f"results: {args.results}")


if __name__ == "__main__":
    main()
