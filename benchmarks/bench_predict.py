"""Throughput of ``zoodesk predict`` against bare ONNX Runtime and bioimageio.core.

All three run in this one process, on the CPU, on the same images of the same
model, in this order: bare ONNX Runtime (``session.run`` on tensors already in
memory, with the same normalisation and sigmoid done in NumPy), ZooDesk's batch
runner (reading TIFF files and writing OME-TIFF outputs, exactly what ``zoodesk
predict`` does), and bioimageio.core's prediction pipeline (tensors in memory).
Steady-state throughput leaves out the first image of each (session warm-up).

Then the same three as whole processes, from the interpreter's start to its exit,
on one image (the start-up: what a microscopist predicting a few images, and
every worker of a cluster, pays) and on the whole folder: ``zoodesk predict``
with the model already in its cache (on a home folder of the benchmark's own),
``processes/bare_predict.py`` (import, one session, read, normalise, run,
sigmoid, write with the same compression) and ``processes/core_predict.py``
(bioimageio.core's pipeline with tifffile reading and writing).  Per image
"after start-up" is (folder - one image) / (images - 1).  ``zoodesk --version``
is timed in the same rounds (the command line's own start).

Each measurement runs ``--rounds`` times, interleaved, and the best round counts,
so that a passing load on the machine does not favour one of them.
``--import-profile`` adds the import-time profile of a one-image ``zoodesk
predict`` (``python -X importtime``): the total, and the self times of the
modules summed per package for the slowest packages.

Usage::

    .venv/bin/python benchmarks/bench_predict.py [--images 80] [--size 512]
        [--model ../shared/zoo-models/unet2d_nuclei_broad] [--skip-core]
        [--skip-processes] [--import-profile]

Prints a table and writes ``bench-results/predict.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
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
PROCESSES = Path(__file__).resolve().parent / "processes"


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


def zoodesk_command() -> list[str]:
    """The ``zoodesk`` command of this interpreter's environment."""
    script = Path(sys.executable).parent / "zoodesk"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from zoodesk.cli import main; sys.exit(main())"]


def wall(command: list[str], env: dict[str, str], out: Path) -> float:
    """Seconds from starting ``command`` to its exit; ``out`` is emptied first."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def process_environment(tmp: Path) -> dict[str, str]:
    """This environment on the benchmark's own ZooDesk home, without other settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOODESK_")}
    return {**env, "ZOODESK_HOME": str(tmp / "home"), "TQDM_DISABLE": "1"}


def cache_model(model: Path, env: dict[str, str]) -> str:
    """Import the package into the benchmark's cache; its key."""
    imported = subprocess.run(
        [*zoodesk_command(), "models", "import", str(model)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return imported.stdout.strip().splitlines()[-1]


def bench_processes(
    model: Path, folder: Path, one: Path, tmp: Path, rounds: int, skip_core: bool, count: int
) -> dict[str, Any]:
    """Whole-process wall times on one image and on the folder (best of ``rounds``)."""
    env = process_environment(tmp)
    key = cache_model(model, env)
    out = tmp / "process-out"
    commands = {
        "bare_onnxruntime": lambda inputs: [
            sys.executable,
            str(PROCESSES / "bare_predict.py"),
            str(model / "weights.onnx"),
            str(inputs),
            str(out),
        ],
        "zoodesk": lambda inputs: [
            *zoodesk_command(),
            "predict",
            "-m",
            key,
            "-i",
            str(inputs),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--quiet",
        ],
    }
    if not skip_core:
        commands["bioimageio_core"] = lambda inputs: [
            sys.executable,
            str(PROCESSES / "core_predict.py"),
            str(model),
            str(inputs),
            str(out),
        ]
    # One run of each first: files in the page cache, the model's description remembered.
    for command in commands.values():
        wall(command(one), env, out)
    times: dict[str, dict[str, list[float]]] = {
        name: {"one_image_s": [], "folder_s": []} for name in commands
    }
    version_s: list[float] = []
    for _ in range(rounds):
        version_s.append(wall([*zoodesk_command(), "--version"], env, out))
        for name, command in commands.items():
            times[name]["one_image_s"].append(wall(command(one), env, out))
            times[name]["folder_s"].append(wall(command(folder), env, out))
    results: dict[str, Any] = {
        "images": count,
        "zoodesk_version": {"seconds": min(version_s), "rounds": version_s},
    }
    for name, measured in times.items():
        one_s, folder_s = min(measured["one_image_s"]), min(measured["folder_s"])
        results[name] = {
            "one_image_s": one_s,
            "folder_s": folder_s,
            "per_image_after_start_s": (folder_s - one_s) / max(count - 1, 1),
            "rounds": measured,
        }
    bare = results["bare_onnxruntime"]
    for name in commands:
        if name != "bare_onnxruntime":
            results[name]["ratio_one_image_vs_bare"] = (
                results[name]["one_image_s"] / bare["one_image_s"]
            )
            results[name]["ratio_folder_vs_bare"] = results[name]["folder_s"] / bare["folder_s"]
            results[name]["ratio_after_start_vs_bare"] = (
                results[name]["per_image_after_start_s"] / bare["per_image_after_start_s"]
            )
    return results


def import_profile(model: Path, one: Path, tmp: Path) -> dict[str, Any]:
    """``python -X importtime`` of a one-image ``zoodesk predict``: total and slowest."""
    env = process_environment(tmp)
    key = cache_model(model, env)
    code = "import sys; from zoodesk.cli import main; sys.exit(main())"
    arguments = ["-m", key, "-i", str(one), "-o", str(tmp / "profile-out"), "--device", "cpu"]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, "predict", *arguments, "--quiet"],
        env=env,
        capture_output=True,
        text=True,
    )
    # Self times summed per top-level package: each module counts once, where it
    # was first imported, so the packages' sums add up to the total.
    total_us = 0
    per_package: dict[str, int] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_us, _cumulative_us, name = line.removeprefix("import time:").split("|")
        if not self_us.strip().isdigit():
            continue  # the header line
        total_us += int(self_us)
        package = name.strip().split(".")[0]
        per_package[package] = per_package.get(package, 0) + int(self_us)
    slowest = sorted(per_package.items(), key=lambda item: -item[1])[:12]
    return {"total_s": total_us / 1e6, "per_package_s": {k: v / 1e6 for k, v in slowest}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--skip-core", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--skip-processes", action="store_true", help="leave out the whole-process runs"
    )
    parser.add_argument(
        "--import-profile", action="store_true", help="report zoodesk's import time per package"
    )
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
        one = Path(tmp) / "one-image"
        one.mkdir()
        shutil.copy2(paths[0], one / paths[0].name)
        if not args.skip_processes:
            results["processes"] = bench_processes(
                args.model, folder, one, Path(tmp), args.rounds, args.skip_core, args.images
            )
        if args.import_profile:
            results["import_profile"] = import_profile(args.model, one, Path(tmp))

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
    if "processes" in results:
        print_processes(results["processes"])
    if "import_profile" in results:
        profile = results["import_profile"]
        print(f"imports of a one-image zoodesk predict: {profile['total_s']:.3f} s; slowest:")
        for package, seconds in profile["per_package_s"].items():
            print(f"  {package:<28} {seconds * 1000:7.1f} ms")
    print(f"results: {args.results}")


def print_processes(processes: dict[str, Any]) -> None:
    count = processes["images"]
    print("whole processes (start to exit), best of the rounds:")
    print(f"  {'':<20} {'1 image':>9} {f'{count} images':>11} {'per image after start-up':>26}")
    names = {
        "bare_onnxruntime": "bare ONNX Runtime",
        "zoodesk": "zoodesk predict",
        "bioimageio_core": "bioimageio.core",
    }
    for key, label in names.items():
        if key not in processes:
            continue
        row = processes[key]
        ratios = ""
        if "ratio_folder_vs_bare" in row:
            ratios = (
                f"  ({row['ratio_one_image_vs_bare']:.2f}x / {row['ratio_folder_vs_bare']:.2f}x"
                f" / {row['ratio_after_start_vs_bare']:.2f}x bare)"
            )
        print(
            f"  {label:<20} {row['one_image_s']:8.2f}s {row['folder_s']:10.2f}s "
            f"{row['per_image_after_start_s'] * 1000:22.1f} ms{ratios}"
        )
    print(f"  zoodesk --version    {processes['zoodesk_version']['seconds']:8.3f}s")


if __name__ == "__main__":
    main()
