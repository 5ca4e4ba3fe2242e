"""Peak resident memory of ``zoodesk predict`` on one very large image.

Writes a synthetic uint16 TIFF of SIZE x SIZE pixels (uncompressed, so it is memory
mapped; written band by band in a child process), then runs ``zoodesk predict`` on
it in another child process and reports that child's peak resident set size: its
``ru_maxrss`` (``os.wait4``) and, on Linux, its ``VmHWM`` from ``/proc``, with RSS
sampled every 0.1 s, the wall time and the output's layout (tiled OME-TIFF).  The
image is above the streaming threshold, so the run takes the block-by-block path:
statistics pass, then blocks read from the memory map and written tile by tile.

Usage::

    .venv/bin/python benchmarks/bench_memory.py [--size 16384]
        [--model ../shared/zoo-models/unet2d_nuclei_broad | demo] [--threads N]
        [--stream auto|always|never]

``--format ome-zarr`` runs the same image stored as an OME-Zarr (zstd-compressed
chunks, written band by band) into OME-Zarr outputs: the store's full-resolution
level is decompressed into an anonymous memory-mapped file, then streamed.

Prints a summary and writes ``bench-results/memory.json`` (``memory_zarr.json``).
Needs Linux or macOS (``os.wait4``) and psutil for the RSS samples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared" / "zoo-models" / "unet2d_nuclei_broad"
BAND = 512


def _bands(size: int, seed: int = 0) -> Any:
    """The rows of a SIZE x SIZE uint16 image of blobs on noise, BAND rows at a time."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:BAND, 0:size]
    for y in range(0, size, BAND):
        rows = min(BAND, size - y)
        band = rng.normal(200, 20, (rows, size))
        # Periodic bright blobs, about nucleus-sized.
        band += 3000 * np.exp(
            -(((yy[:rows] + y) % 48 - 24) ** 2 + (xx[:rows] % 52 - 26) ** 2) / 60.0
        )
        yield y, np.clip(band, 0, 65535).astype(np.uint16)


def write_big_tiff(path: Path, size: int, seed: int = 0) -> None:
    """The image as an uncompressed TIFF, written one band at a time."""
    image = tifffile.memmap(path, shape=(size, size), dtype=np.uint16, photometric="minisblack")
    for y, band in _bands(size, seed):
        image[y : y + band.shape[0]] = band
        image.flush()
    del image


def write_big_zarr(path: Path, size: int, seed: int = 0) -> None:
    """The image as an OME-Zarr store (with its pyramid), written one band at a time."""
    from zoodesk.images.zarr_writer import TiledOmeZarrWriter

    sizes = {"X": (0.5, "µm"), "Y": (0.5, "µm")}
    with TiledOmeZarrWriter(path, (size, size), np.uint16, "YX", pixel_sizes=sizes) as writer:
        for y, band in _bands(size, seed):
            writer.write_block((slice(y, y + band.shape[0]), slice(None)), band)


class RssSampler(threading.Thread):
    """Samples a process's resident set size every ``interval`` seconds, and on Linux
    its high-water mark (``VmHWM``: the peak since the process started its program,
    which no sampling interval can miss)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.high_water: int | None = None
        self._done = threading.Event()

    def _read_high_water(self) -> None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.high_water = int(line.split()[1]) * 1024

    def run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        start = time.perf_counter()
        try:
            process = psutil.Process(self.pid)
            while not self._done.is_set():
                self.samples.append((time.perf_counter() - start, process.memory_info().rss))
                self._read_high_water()
                time.sleep(self.interval)
        except psutil.Error:
            return

    def stop(self) -> None:
        self._done.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="model folder, or 'demo'")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--stream",
        choices=("auto", "always", "never"),
        default="auto",
        help="passed to zoodesk predict (auto streams images above 256 megapixels)",
    )
    parser.add_argument(
        "--format",
        choices=("ome-tiff", "ome-zarr"),
        default="ome-tiff",
        help="ome-tiff: an uncompressed TIFF in, OME-TIFF out; ome-zarr: an OME-Zarr "
        "store in, OME-Zarr out",
    )
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="temporary files go here")
    parser.add_argument("--write-image", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    zarr_case = args.format == "ome-zarr"
    if args.results is None:
        name = "memory_zarr.json" if zarr_case else "memory.json"
        args.results = REPO / "bench-results" / name
    if args.write_image is not None:
        (write_big_zarr if zarr_case else write_big_tiff)(args.write_image, args.size)
        return
    model = args.model
    if model == "demo":
        from zoodesk.demo import demo_model_path

        model = str(demo_model_path())

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        image = folder / (f"big_{args.size}.ome.zarr" if zarr_case else f"big_{args.size}.tif")
        t0 = time.perf_counter()
        # In a child process: pages of the image written here would otherwise be part
        # of this process when it forks the run below, and the kernel counts a forked
        # child's memory before it starts its program in its peak (ru_maxrss).
        subprocess.run(
            [sys.executable, __file__, "--write-image", str(image), "--size", str(args.size),
             "--format", args.format],
            check=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "app"), str(REPO)])},
        )  # fmt: skip
        gib = _bytes(image) / 2**30
        print(f"wrote {image} ({gib:.2f} GiB) in {time.perf_counter() - t0:.0f} s")
        out = folder / "out"
        command = [
            sys.executable, "-m", "zoodesk.cli", "predict", "-m", model, "-i", str(image),
            "-o", str(out), "--device", "cpu", "--settle-seconds", "0",
        ]  # fmt: skip
        command += ["--stream", args.stream, "--format", args.format]
        if args.threads:
            command += ["--threads", str(args.threads)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "app"), str(REPO)])}
        t0 = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sampler = RssSampler(child.pid)
        sampler.start()
        assert child.stdout is not None
        output = child.stdout.read()
        # wait4: the resource usage of this child alone, not of every child so far.
        _pid, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        sampler.join()
        wall = time.perf_counter() - t0
        sampler.stop()
        # ru_maxrss is in KiB on Linux, in bytes on macOS.
        peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        text = output.decode(errors="replace")
        if child.returncode != 0:
            print(text)
            raise SystemExit(f"zoodesk predict failed with exit code {child.returncode}")
        record = json.loads((out / "zoodesk-run.json").read_text())
        entry = record["files"][0]
        layout: dict[str, Any] = {}
        for o in entry["outputs"]:
            if zarr_case:
                import zarr

                group = zarr.open_group(str(out / o["path"]), mode="r")
                levels = sorted(group.array_keys(), key=int)
                layout[o["path"]] = {
                    "shape": o["shape"],
                    "dtype": o["dtype"],
                    "levels": [list(group[k].shape) for k in levels],
                    "chunks": list(group["0"].chunks),
                    "bytes": _bytes(out / o["path"]),
                }
                continue
            with tifffile.TiffFile(out / o["path"]) as tif:
                page = tif.pages.first
                layout[o["path"]] = {
                    "shape": o["shape"],
                    "dtype": o["dtype"],
                    "tiled": page.is_tiled,
                    "tile": [page.tilelength, page.tilewidth],
                    "bigtiff": tif.is_bigtiff,
                    "bytes": (out / o["path"]).stat().st_size,
                }
        results = {
            "size": args.size,
            "format": args.format,
            "image_bytes": _bytes(image),
            "model": model,
            "peak_rss_bytes": peak,
            "peak_rss_gib": peak / 2**30,
            "high_water_bytes": sampler.high_water,
            "wall_s": wall,
            "streamed": entry["streamed"],
            "tiling": entry["tiling"],
            "seconds": entry["seconds"],
            "read_seconds": entry["read_seconds"],
            "write_seconds": entry["write_seconds"],
            "outputs": layout,
            "rss_samples": [(round(t, 1), rss) for t, rss in sampler.samples],
            "device": record["device"],
        }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2))
    sampled = max((rss for _t, rss in sampler.samples), default=0)
    size = f"{args.size} x {args.size} uint16 ({results['image_bytes'] / 2**30:.2f} GiB)"
    print(f"{size}, model {Path(model).name}, streamed: {results['streamed']}")
    print(f"  peak RSS (ru_maxrss)   {peak / 2**30:6.3f} GiB   (sampled {sampled / 2**30:.3f} GiB)")
    if sampler.high_water is not None:
        print(f"  peak RSS (VmHWM)       {sampler.high_water / 2**30:6.3f} GiB")
    parts = (
        f"prediction {entry['seconds']:.0f} s, read+hash {entry['read_seconds']:.0f} s, "
        f"write {entry['write_seconds']:.0f} s"
    )
    print(f"  wall time              {wall:6.0f} s  ({parts})")
    for name, info in layout.items():
        if zarr_case:
            where = f"levels {info['levels']}, chunks {info['chunks']}"
        else:
            where = f"tiled {info['tiled']} {info['tile']}, BigTIFF {info['bigtiff']}"
        print(f"  {name}: {info['shape']} {info['dtype']}, {where}")
    print(f"results: {args.results}")


def _bytes(path: Path) -> int:
    """A file's size, or the total of a folder's (an OME-Zarr store)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


if __name__ == "__main__":
    main()
