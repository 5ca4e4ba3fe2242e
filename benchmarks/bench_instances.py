"""Objects from model outputs: the instance step's time against inference, and its memory.

``zoodesk predict`` runs in a child process per case, once without objects and once
per ``--instances`` method, on the same inputs with the same model (CPU):

* **folder**: the 200 mixed-size images of ``bench_batch.py`` (same sizes, same
  seed), or with ``--content nuclei`` crops of the model's own test input (a real
  nuclei image, mirrored into a larger canvas).
* **large**: the 16384 x 16384 uint16 TIFF of ``bench_memory.py`` (streamed block by
  block), or with ``--content nuclei`` the test input mirrored to that size.

From each run's record: the runtime's time (the files' ``inference_seconds``), the
prediction's time (``seconds``: normalising, the runtime, stitching) and the instance
step's time (each file's ``instances.seconds``: labelling, measuring, writing the
label image and the table), with the objects found; the instance step over
inference is the figure that counts (target: under 0.25).  The instance step runs
in the writer thread, overlapped with the next image's inference, so the run's wall
time is reported too.  Memory: the child's peak resident set size, ``ru_maxrss``
(``os.wait4``) and ``VmHWM`` (Linux), with and without objects.

Usage::

    .venv/bin/python benchmarks/bench_instances.py [--case folder|large|both]
        [--methods watershed,threshold] [--content blobs|nuclei] [--images 200]
        [--min-size 200] [--max-size 1300] [--size 16384] [--threads N]
        [--json bench-results/instances.json]

Prints a table and writes the JSON results.  Needs Linux or macOS (``os.wait4``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import make_images
from bench_memory import RssSampler, write_big_tiff

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared" / "zoo-models" / "unet2d_nuclei_broad"
TARGET = 0.25


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "app"), str(REPO)])}


def nuclei_canvas(model: Path, size: tuple[int, int]) -> np.ndarray:
    """The model's test input (a nuclei image) mirrored to fill ``size``, seamlessly."""
    tile = np.load(model / "test_input.npy")
    tile = np.clip(np.rint(tile.reshape(tile.shape[-2:])), 0, 65535).astype(np.uint16)
    ny, nx = -(-size[0] // tile.shape[0]), -(-size[1] // tile.shape[1])
    rows = [
        np.concatenate([tile[:: 1 - 2 * (i % 2), :: 1 - 2 * (j % 2)] for j in range(nx)], axis=1)
        for i in range(ny)
    ]
    return np.concatenate(rows, axis=0)[: size[0], : size[1]]


def make_nuclei_images(
    folder: Path, model: Path, count: int, low: int, high: int, seed: int = 0
) -> list[Path]:
    """``count`` crops of random size (``low``..``high`` a side) at random places."""
    rng = np.random.default_rng(seed)
    canvas = nuclei_canvas(model, (2 * high, 2 * high))
    paths = []
    for i in range(count):
        h, w = int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))
        y, x = int(rng.integers(0, 2 * high - h + 1)), int(rng.integers(0, 2 * high - w + 1))
        path = folder / f"img_{i:03d}.tif"
        tifffile.imwrite(path, canvas[y : y + h, x : x + w])
        paths.append(path)
    return paths


def write_nuclei_tiff(path: Path, model: Path, size: int) -> None:
    """The mirrored test input as an uncompressed SIZE x SIZE TIFF, one band at a time."""
    band = nuclei_canvas(model, (1024, size))  # 1024: two tiles, so the mirroring repeats
    image = tifffile.memmap(path, shape=(size, size), dtype=np.uint16, photometric="minisblack")
    for y in range(0, size, band.shape[0]):
        rows = min(band.shape[0], size - y)
        image[y : y + rows] = band[:rows]
        image.flush()
    del image


def run_child(command: list[str], what: str) -> tuple[float, Any, int | None]:
    """Run a command in a child process: its wall time, resource usage and VmHWM."""
    t0 = time.perf_counter()
    child = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sampler = RssSampler(child.pid)
    sampler.start()
    assert child.stdout is not None
    output = child.stdout.read()
    # wait4: the resource usage of this child alone.
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    sampler.stop()
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        print(output.decode(errors="replace")[-4000:])
        raise SystemExit(f"{what} failed")
    return wall, usage, sampler.high_water


def _figures(out: Path, what: str, with_objects: bool) -> dict[str, Any]:
    """The sums of a run record's per-file figures."""
    record = json.loads((out / "zoodesk-run.json").read_text())
    files = record["files"]
    bad = [f.get("error") for f in files if f["status"] != "ok"]
    if bad:
        raise SystemExit(f"{what}: {bad[:3]}")
    found = [f.get("instances") or {} for f in files]
    errors = [i["error"] for i in found if "error" in i]
    if errors:
        raise SystemExit(f"{what}: objects not made: {errors[:3]}")
    result: dict[str, Any] = {
        "settings": record["parameters"].get("instances"),
        "files": len(files),
        "inference_s": sum(f["inference_seconds"] or 0 for f in files),
        "seconds": sum(f["seconds"] or 0 for f in files),
        "read_s": sum(f.get("read_seconds") or 0 for f in files),
        "write_s": sum(f.get("write_seconds") or 0 for f in files),
        "streamed": any(f.get("streamed") for f in files),
        "per_file": [
            {
                "key": f["key"],
                "shape": f["shape"],
                "inference_s": f["inference_seconds"],
                "seconds": f["seconds"],
                "instances_s": i.get("seconds"),
                "objects": i.get("count"),
            }
            for f, i in zip(files, found, strict=True)
        ],
    }
    if with_objects:
        result["instances_s"] = sum(i["seconds"] for i in found)
        result["objects"] = sum(i["count"] for i in found)
    return result


def _memory(usage: Any, high_water: int | None) -> dict[str, Any]:
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        # ru_maxrss is in KiB on Linux, in bytes on macOS.
        "peak_rss_bytes": usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024),
        "high_water_bytes": high_water,
    }


def run_predict(
    model: Path, inputs: Path, out: Path, method: str | None, threads: int | None
) -> dict[str, Any]:
    """One ``zoodesk predict`` in a child process: its record's figures and peak memory."""
    command = [
        sys.executable, "-m", "zoodesk.cli", "predict", "-m", str(model), "-i", str(inputs),
        "-o", str(out), "--device", "cpu", "--settle-seconds", "0",
    ]  # fmt: skip
    if method is not None:
        command += ["--instances", method]
    if threads:
        command += ["--threads", str(threads)]
    what = f"zoodesk predict ({method or 'no objects'})"
    wall, usage, high_water = run_child(command, what)
    result = {"method": method, "wall_s": wall, **_figures(out, what, method is not None)}
    result.update(_memory(usage, high_water))
    if method is not None:
        result["ratio_vs_inference"] = result["instances_s"] / result["inference_s"]
        result["ratio_vs_seconds"] = result["instances_s"] / result["seconds"]
        result["slowest_ratio"] = max(
            (f["instances_s"] / f["inference_s"] for f in result["per_file"] if f["inference_s"]),
            default=None,
        )
    return result


def run_measure(run: Path, method: str, inference_s: float) -> dict[str, Any]:
    """``zoodesk measure`` on a finished run without objects: the instance step alone,
    with nothing else on the processor, against that run's inference time."""
    command = [sys.executable, "-m", "zoodesk.cli", "measure", str(run), "--instances", method]
    what = f"zoodesk measure ({method})"
    wall, usage, high_water = run_child(command, what)
    figures = _figures(run, what, True)
    result = {
        "method": method,
        "wall_s": wall,
        "instances_s": figures["instances_s"],
        "objects": figures["objects"],
        "ratio_vs_inference": figures["instances_s"] / inference_s,
        "slowest_ratio": max(
            (f["instances_s"] / f["inference_s"] for f in figures["per_file"] if f["inference_s"]),
            default=None,
        ),
        "per_file": figures["per_file"],
    }
    result.update(_memory(usage, high_water))
    return result


def bench_case(
    name: str, model: Path, inputs: Path, work: Path, methods: list[str], threads: int | None
) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for method in [None, *methods]:
        label = method or "none"
        print(f"  {name}: zoodesk predict, objects: {label} ...", flush=True)
        runs[label] = run_predict(model, inputs, work / f"out-{name}-{label}", method, threads)
    base = runs["none"]
    for method in methods:
        run = runs[method]
        run["wall_vs_none"] = run["wall_s"] / base["wall_s"]
        # CPU time is what the instance step adds to the run; unlike wall time it
        # does not depend on how busy the machine is with other work.
        run["cpu_added_vs_none"] = run["cpu_s"] / base["cpu_s"] - 1
        run["peak_vs_none"] = run["peak_rss_bytes"] / base["peak_rss_bytes"]
        if run["high_water_bytes"] and base["high_water_bytes"]:
            run["high_water_vs_none"] = run["high_water_bytes"] / base["high_water_bytes"]
    alone: dict[str, Any] = {}
    for method in methods:
        print(f"  {name}: zoodesk measure, objects: {method} ...", flush=True)
        alone[method] = run_measure(work / f"out-{name}-none", method, base["inference_s"])
    return {"predict": runs, "measure": alone}


def _gib(n: int | None) -> str:
    return f"{n / 2**30:.3f}" if n else "-"


def print_table(title: str, case: dict[str, Any]) -> None:
    print(title)
    head = (
        f"  {'run':<26} {'objects':>8} {'inference':>10} {'instances':>10} {'inst/inf':>9} "
        f"{'worst':>6} {'CPU+':>6} {'wall':>8} {'ru_maxrss':>10} {'VmHWM':>8}"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    rows = [(f"predict {k}" if k != "none" else "predict", r) for k, r in case["predict"].items()]
    rows += [(f"measure {k} (alone)", r) for k, r in case["measure"].items()]
    inference = case["predict"]["none"]["inference_s"]
    for label, run in rows:
        objects = f"{run['objects']:>8}" if "objects" in run else f"{'-':>8}"
        own = run.get("inference_s")
        inf = f"{own:>9.1f}s" if own is not None else f"({inference:.1f}s)".rjust(10)
        inst = f"{run['instances_s']:>9.1f}s" if "instances_s" in run else f"{'-':>10}"
        ratio = f"{run['ratio_vs_inference']:>9.3f}" if "ratio_vs_inference" in run else f"{'-':>9}"
        worst = f"{run['slowest_ratio']:>6.2f}" if run.get("slowest_ratio") else f"{'-':>6}"
        cpu = f"{run['cpu_added_vs_none']:>+6.0%}" if "cpu_added_vs_none" in run else f"{'-':>6}"
        print(
            f"  {label:<26} {objects} {inf} {inst} {ratio} {worst} {cpu} {run['wall_s']:>7.1f}s "
            f"{_gib(run['peak_rss_bytes']):>9}G {_gib(run['high_water_bytes']):>7}G"
        )
    print(
        "  inference: the runtime's time (files' inference_seconds); instances: the instance\n"
        "  step's (labelling, measuring, writing; files' instances.seconds), within predict on\n"
        "  the writer thread, beside the next image's inference; 'alone': zoodesk measure on the\n"
        f"  run without objects.  inst/inf: instances over inference (target < {TARGET}), over\n"
        "  the no-objects run's for 'alone'; worst: the highest of one image; CPU+: processor\n"
        "  time added to the run by the objects."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("folder", "large", "both"), default="both")
    parser.add_argument("--methods", default="watershed,threshold", help="comma-separated")
    parser.add_argument(
        "--content",
        choices=("blobs", "nuclei"),
        default="blobs",
        help="blobs: the images of bench_batch.py / bench_memory.py; nuclei: the model's "
        "test input, cropped or mirrored",
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--min-size", type=int, default=200)
    parser.add_argument("--max-size", type=int, default=1300)
    parser.add_argument("--size", type=int, default=16384, help="side of the large image")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="temporary files go here")
    parser.add_argument("--json", type=Path, default=REPO / "bench-results" / "instances.json")
    parser.add_argument("--write-inputs", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    if args.write_inputs is not None:
        # In a child process, so that none of these pages is in this process when it
        # starts the runs (a forked child's memory before its program starts counts
        # in its ru_maxrss).
        if args.case == "folder":
            args.write_inputs.mkdir(parents=True, exist_ok=True)
            if args.content == "nuclei":
                make_nuclei_images(
                    args.write_inputs, args.model, args.images, args.min_size, args.max_size
                )
            else:
                make_images(args.write_inputs, args.images, args.min_size, args.max_size)
        elif args.content == "nuclei":
            write_nuclei_tiff(args.write_inputs, args.model, args.size)
        else:
            write_big_tiff(args.write_inputs, args.size)
        return

    results: dict[str, Any] = {
        "model": str(args.model),
        "content": args.content,
        "methods": methods,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "target_ratio": TARGET,
    }
    cases = ["folder", "large"] if args.case == "both" else [args.case]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        for case in cases:
            inputs = work / ("images" if case == "folder" else f"big_{args.size}.tif")
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, __file__, "--write-inputs", str(inputs), "--case", case,
                 "--content", args.content, "--model", str(args.model),
                 "--images", str(args.images), "--min-size", str(args.min_size),
                 "--max-size", str(args.max_size), "--size", str(args.size)],
                check=True, env=_env(),
            )  # fmt: skip
            print(f"{case}: inputs written in {time.perf_counter() - t0:.0f} s", flush=True)
            runs = bench_case(case, args.model, inputs, work, methods, args.threads)
            if case == "folder":
                megapixels = sum(
                    np.prod(tifffile.TiffFile(p).pages.first.shape) for p in inputs.glob("*.tif")
                )
                results["folder"] = {
                    "images": args.images,
                    "sizes": [args.min_size, args.max_size],
                    "megapixels": float(megapixels) / 1e6,
                    **runs,
                }
            else:
                results["large"] = {"size": args.size, **runs}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))

    print()
    if "folder" in results:
        f = results["folder"]
        print_table(
            f"{f['images']} images of {args.min_size}..{args.max_size} px a side "
            f"({f['megapixels']:.0f} MP, {args.content}), CPU:",
            f,
        )
    if "large" in results:
        large = results["large"]
        streamed = "streamed" if large["predict"]["none"]["streamed"] else "in memory"
        print_table(f"{args.size} x {args.size} uint16 ({args.content}, {streamed}), CPU:", large)
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
