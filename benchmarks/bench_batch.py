"""A folder of mixed-size images end to end: ``zoodesk predict`` against bare ONNX Runtime.

Both sides process the same TIFF files of random sizes with the same model on the
CPU and the same blocks: the model's fixed 512 x 512 blocks overlapping by twice
the halo (an independent, minimal tiler here), images smaller than a block padded
by reflection.

* **bare ONNX Runtime** (one session with the runtime's default options): read the
  file (tifffile), normalise in NumPy (zero mean, unit variance over the image),
  ``session.run`` per block, stitch the owned regions, sigmoid, write the result
  (tifffile, zlib, as ZooDesk does), one file after the other.  Reported as
  *compute* (normalising, running, stitching, sigmoid) and *end to end* (with
  reading and writing).
* **ZooDesk**: :func:`zoodesk.batch.runner.run_prediction` on the folder (what
  ``zoodesk predict`` runs): reading, checks and checksums in a reader thread,
  outputs written as OME-TIFF with provenance in a writer thread, run record saved
  after every file.  Timed from its ``RunStarted`` event (model loaded) to the end.

Both run ``--rounds`` times, interleaved, and the best round of each counts.
The ratio ZooDesk / bare compute is the overhead of everything ZooDesk adds beyond
the model itself, reading and writing included (target: at most 1.2).  A second
bare pass over a subset measures ONNX Runtime with its worker threads' spinning
turned off against its default (on, as ZooDesk keeps it), to show what that
setting is worth.

Usage::

    .venv/bin/python benchmarks/bench_batch.py [--images 200] [--min-size 200]
        [--max-size 1300] [--model ../shared/zoo-models/unet2d_nuclei_broad]
        [--threads N] [--spin-check 40] [--rounds 2]

Prints a summary and writes ``bench-results/batch.json``.
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
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import synthetic_image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared" / "zoo-models" / "unet2d_nuclei_broad"
BLOCK = 512
HALO = 32


def make_images(folder: Path, count: int, low: int, high: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        shape = (int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1)))
        path = folder / f"img_{i:03d}.tif"
        tifffile.imwrite(path, synthetic_image(rng, shape))
        paths.append(path)
    return paths


def axis_blocks(length: int) -> list[tuple[int, int, int]]:
    """(start, own_start, own_stop) of each block along one axis."""
    if length <= BLOCK:
        return [(-((BLOCK - length) // 2), 0, length)]
    starts, s = [], 0
    while True:
        starts.append(min(s, length - BLOCK))
        if s + BLOCK >= length:
            break
        s += BLOCK - 2 * HALO
    blocks, previous = [], 0
    for start in starts:
        own_start = max(previous, 0 if start <= 0 else start + HALO)
        own_stop = length if start + BLOCK >= length else start + BLOCK - HALO
        blocks.append((start, own_start, own_stop))
        previous = own_stop
    return blocks


def bare_predict(session: Any, name: str, image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float32)
    x = ((x - x.mean(dtype=np.float64)) / (x.std(dtype=np.float64) + 1e-6)).astype(np.float32)
    height, width = x.shape
    pad_y = max(0, BLOCK - height)
    pad_x = max(0, BLOCK - width)
    if pad_y or pad_x:
        x = np.pad(
            x, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2)), mode="reflect"
        )
    out = np.empty((height, width), np.float32)
    for y0, oy0, oy1 in axis_blocks(height):
        for x0, ox0, ox1 in axis_blocks(width):
            # In the padded array, a block starts at its image coordinate + the padding.
            ys, xs = y0 + pad_y // 2, x0 + pad_x // 2
            tile = x[ys : ys + BLOCK, xs : xs + BLOCK]
            logits = session.run(None, {name: tile[None, None]})[0][0, 0]
            ly, lx = oy0 - y0, ox0 - x0
            out[oy0:oy1, ox0:ox1] = logits[ly : ly + oy1 - oy0, lx : lx + ox1 - ox0]
    return 1 / (1 + np.exp(-out))


def bench_bare(
    model: Path, paths: list[Path], out: Path, threads: int | None, spinning: bool, io: bool
) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(model / "weights.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    out.mkdir(parents=True, exist_ok=True)
    images = None if io else [tifffile.imread(p) for p in paths]
    read = compute = write = 0.0
    start = time.perf_counter()
    for i, path in enumerate(paths):
        t0 = time.perf_counter()
        image = tifffile.imread(path) if images is None else images[i]
        t1 = time.perf_counter()
        result = bare_predict(session, name, image)
        t2 = time.perf_counter()
        if io:
            tifffile.imwrite(out / f"{path.stem}.tif", result, compression="zlib")
        t3 = time.perf_counter()
        read, compute, write = read + t1 - t0, compute + t2 - t1, write + t3 - t2
    return {
        "total_s": time.perf_counter() - start,
        "read_s": read,
        "compute_s": compute,
        "write_s": write,
        "spinning": spinning,
    }


def bench_zoodesk(model: Path, folder: Path, out: Path, threads: int | None) -> dict[str, Any]:
    from zoodesk.batch.runner import PredictionRequest, RunFinished, RunStarted, run_prediction

    request = PredictionRequest(
        model=model, inputs=[folder], output_dir=out, device="cpu", threads=threads,
        settle_seconds=0.0,
    )  # fmt: skip
    start = time.perf_counter()
    record = None
    for event in run_prediction(request):
        if isinstance(event, RunStarted):
            start = time.perf_counter()
        elif isinstance(event, RunFinished):
            record = event.record
    total = time.perf_counter() - start
    assert record is not None
    bad = [f.error for f in record.files if f.status != "ok"]
    assert not bad, bad[:3]
    files = record.files
    return {
        "total_s": total,
        "read_s": sum(f.read_seconds or 0 for f in files),
        "predict_s": sum(f.seconds or 0 for f in files),
        "inference_s": sum(f.inference_seconds or 0 for f in files),
        "write_s": sum(f.write_seconds or 0 for f in files),
        "blocks": sum((f.tiling or {}).get("blocks", 0) for f in files),
        "device": record.device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--min-size", type=int, default=200)
    parser.add_argument("--max-size", type=int, default=1300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--spin-check", type=int, default=40, help="images for the spin check")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds, best counts")
    parser.add_argument("--results", type=Path, default=REPO / "bench-results" / "batch.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        paths = make_images(folder, args.images, args.min_size, args.max_size)
        megapixels = sum(np.prod(tifffile.TiffFile(p).pages.first.shape) for p in paths) / 1e6
        results: dict[str, Any] = {
            "images": args.images,
            "sizes": [args.min_size, args.max_size],
            "megapixels": megapixels,
            "model": str(args.model),
            "threads": args.threads,
        }
        # Warm the file cache and the runtime so neither side pays for the first touch.
        bench_bare(args.model, paths[:2], Path(tmp) / "warm", args.threads, True, True)
        # Interleaved rounds, best of each: a passing load on a shared machine then
        # does not decide the comparison.
        bare_rounds, zoodesk_rounds = [], []
        for r in range(args.rounds):
            bare_rounds.append(
                bench_bare(
                    args.model, paths, Path(tmp) / "bare", args.threads, spinning=True, io=True
                )
            )
            zoodesk_rounds.append(
                bench_zoodesk(args.model, folder, Path(tmp) / f"zd{r}", args.threads)
            )
        results["bare_rounds"] = bare_rounds
        results["zoodesk_rounds"] = zoodesk_rounds
        results["bare_onnxruntime"] = min(bare_rounds, key=lambda b: b["compute_s"])
        results["zoodesk"] = min(zoodesk_rounds, key=lambda z: z["total_s"])
        # Same blocks, same normalisation: the outputs must agree.
        diffs = []
        for path in paths[:5]:
            bare_out = tifffile.imread(Path(tmp) / "bare" / f"{path.stem}.tif")
            ours_out = tifffile.imread(Path(tmp) / "zd0" / f"{path.stem}_probability.ome.tif")
            diffs.append(float(np.abs(bare_out - ours_out.reshape(bare_out.shape)).max()))
        results["max_abs_diff"] = max(diffs)
        subset = paths[: args.spin_check]
        if subset:
            on, off = [], []
            for _round in range(args.rounds):
                on.append(
                    bench_bare(args.model, subset, Path(tmp) / "s", args.threads, True, False)
                )
                off.append(
                    bench_bare(args.model, subset, Path(tmp) / "s", args.threads, False, False)
                )
            results["spin_check"] = {
                "images": len(subset),
                "spinning_on": min(on, key=lambda b: b["compute_s"]),
                "spinning_off": min(off, key=lambda b: b["compute_s"]),
            }

    bare = results["bare_onnxruntime"]
    ours = results["zoodesk"]
    results["ratio_vs_bare_compute"] = ours["total_s"] / bare["compute_s"]
    results["ratio_vs_bare_end_to_end"] = ours["total_s"] / bare["total_s"]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2, default=str))

    blocks = f"{ours['blocks']} blocks of {BLOCK}x{BLOCK}"
    print(f"{args.images} images of {args.min_size}..{args.max_size} px a side", end=" ")
    print(f"({megapixels:.0f} MP, {blocks}), CPU:")
    io = f"read {bare['read_s']:.1f} s, write {bare['write_s']:.1f} s, one after the other"
    print(f"  bare ONNX Runtime, compute only   {bare['compute_s']:8.1f} s")
    print(f"  bare ONNX Runtime, end to end     {bare['total_s']:8.1f} s  ({io})")
    ratios = (
        f"{results['ratio_vs_bare_compute']:.3f}x bare compute, "
        f"{results['ratio_vs_bare_end_to_end']:.3f}x bare end to end"
    )
    print(f"  zoodesk predict, end to end       {ours['total_s']:8.1f} s  ({ratios})")
    print(
        f"    overlapped: reading+checks {ours['read_s']:.1f} s, writing {ours['write_s']:.1f} s;"
        f" prediction {ours['predict_s']:.1f} s (runtime {ours['inference_s']:.1f} s)"
    )
    print(f"  max abs difference bare vs zoodesk outputs: {results['max_abs_diff']:.2e}")
    if "spin_check" in results:
        spin = results["spin_check"]
        on, off = spin["spinning_on"]["compute_s"], spin["spinning_off"]["compute_s"]
        print(
            f"  ORT spinning check on {spin['images']} images (compute only): "
            f"on {on:.1f} s, off {off:.1f} s ({off / on:.3f}x)"
        )
    print(f"results: {args.results}")


if __name__ == "__main__":
    main()
