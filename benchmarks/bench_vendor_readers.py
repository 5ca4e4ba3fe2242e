"""Read each sample microscope file through ZooDesk and through its format's own reader.

For every series of every CZI, ND2, LIF and OIB file in ``../shared/sample-images``
(or the folder given), it reads the pixels twice, in one process, interleaved over
several rounds:

* ZooDesk: :func:`zoodesk.images.read_image` (``series=N``);
* the reference: the format's own library called directly, as its documentation
  shows (``czifile.CziFile.asarray``, cropped to the scene's tiles; ``nd2.imread``;
  ``liffile``'s image ``asarray``; ``oiffile.imread``).

It reports the best time of each, the peak of memory allocated during the read
(``tracemalloc``, which counts NumPy's buffers), their ratios, and whether the pixels
are identical once ZooDesk's dropped length-1 axes are put back.  Results go to the
console and to ``bench-results/vendor_readers.json``.

Usage::

    .venv/bin/python benchmarks/bench_vendor_readers.py [FOLDER] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = REPO.parent / "shared" / "sample-images"


def _czi_reference(path: Path, scene: int) -> np.ndarray:
    import czifile

    with czifile.CziFile(str(path)) as czi:
        entries = [
            e
            for e in czi.filtered_subblock_directory
            if next((d.start for d in e.dimension_entries if d.dimension == "S"), 0) == scene
        ]
        # Zeros where no tile lies (czifile's own canvas is uninitialised there).
        whole = czi.asarray(out=np.zeros(czi.shape, czi.dtype), max_workers=1)
        start = np.min([e.start for e in entries], axis=0) - np.asarray(czi.start)
        stop = np.max([np.add(e.start, e.shape) for e in entries], axis=0) - np.asarray(czi.start)
        return whole[tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))]


def _nd2_reference(path: Path, position: int) -> np.ndarray:
    import nd2

    with nd2.ND2File(str(path)) as f:
        data = f.asarray()
        if "P" in f.sizes:
            data = np.take(data, position, axis=list(f.sizes).index("P"))
        return data


def _lif_reference(path: Path, series: int) -> np.ndarray:
    import liffile

    with liffile.LifFile(str(path)) as lif:
        # ZooDesk's series are the images, each tile of a tile scan on its own.
        flat: list[tuple[Any, int | None]] = []
        for image in lif.images:
            tiles = int(image.sizes.get("M", 1))
            flat.extend((image, t if tiles > 1 else None) for t in range(tiles))
        image, tile = flat[series]
        data = image.asarray()
        if tile is not None:
            data = np.take(data, tile, axis=list(image.dims).index("M"))
        return data


def _oib_reference(path: Path, _series: int) -> np.ndarray:
    import oiffile

    return oiffile.imread(str(path))


REFERENCES: dict[str, tuple[str, Callable[[Path, int], np.ndarray]]] = {
    "czi": ("czifile", _czi_reference),
    "nd2": ("nd2", _nd2_reference),
    "lif": ("liffile", _lif_reference),
    "oib": ("oiffile", _oib_reference),
}


def _zoodesk_pixels(read_image: Callable[..., Any], path: Path, series: int) -> np.ndarray:
    return np.asarray(read_image(path, series=series).array)


def _measure(read: Callable[[], np.ndarray]) -> tuple[float, int, np.ndarray]:
    tracemalloc.start()
    start = time.perf_counter()
    pixels = np.asarray(read())
    seconds = time.perf_counter() - start
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak, pixels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--rounds", type=int, default=5, help="reads of each, best kept")
    parser.add_argument("--json", type=Path, default=REPO / "bench-results" / "vendor_readers.json")
    args = parser.parse_args(argv)

    from zoodesk.images import read_image
    from zoodesk.images.vendor import vendor_format, vendor_series

    rows: list[dict[str, Any]] = []
    for path in sorted(args.folder.rglob("*")):
        if not path.is_file():
            continue
        fmt = vendor_format(path, path.open("rb").read(16))
        if fmt not in REFERENCES:
            continue
        library, reference = REFERENCES[fmt]
        for series, scene in enumerate(vendor_series(path, fmt)):
            best: dict[str, tuple[float, int]] = {}
            pixels: dict[str, np.ndarray] = {}
            for _ in range(args.rounds):
                readers: tuple[tuple[str, Callable[[], np.ndarray]], ...] = (
                    ("zoodesk", partial(_zoodesk_pixels, read_image, path, series)),
                    ("reference", partial(reference, path, series)),
                )
                for name, read in readers:
                    seconds, peak, data = _measure(read)
                    old = best.get(name, (float("inf"), 0))
                    best[name] = (min(old[0], seconds), max(old[1], peak))
                    pixels[name] = data
            ours, theirs = pixels["zoodesk"], pixels["reference"]
            same = ours.size == theirs.size and np.array_equal(
                ours.ravel(), _rgb_order(fmt, path, theirs).ravel()
            )
            rows.append(
                {
                    "file": str(path.relative_to(args.folder)),
                    "series": series,
                    "scene": scene,
                    "reference": library,
                    "shape": list(ours.shape),
                    "zoodesk_seconds": best["zoodesk"][0],
                    "reference_seconds": best["reference"][0],
                    "time_ratio": best["zoodesk"][0] / best["reference"][0],
                    "zoodesk_peak_bytes": best["zoodesk"][1],
                    "reference_peak_bytes": best["reference"][1],
                    "memory_ratio": best["zoodesk"][1] / max(1, best["reference"][1]),
                    "identical": bool(same),
                }
            )
            r = rows[-1]
            print(
                f"{r['file']}[{scene}] {r['shape']}: {r['zoodesk_seconds'] * 1e3:.1f} ms vs "
                f"{r['reference_seconds'] * 1e3:.1f} ms ({library}), x{r['time_ratio']:.2f}; "
                f"peak {r['zoodesk_peak_bytes'] / 2**20:.1f} vs "
                f"{r['reference_peak_bytes'] / 2**20:.1f} MiB, x{r['memory_ratio']:.2f}; "
                f"pixels {'identical' if same else 'DIFFER'}"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(f"{sum(r['identical'] for r in rows)} of {len(rows)} series identical; {args.json}")
    return 0 if all(r["identical"] for r in rows) else 1


def _rgb_order(fmt: str, path: Path, pixels: np.ndarray) -> np.ndarray:
    """The reference's pixels in ZooDesk's colour order: Zeiss stores BGR, ZooDesk RGB."""
    if fmt == "czi" and pixels.shape[-1] in (3, 4) and pixels.ndim > 2:
        import czifile

        with czifile.CziFile(str(path)) as czi:
            if any("bgr" in str(e.pixel_type).lower() for e in czi.filtered_subblock_directory):
                order = [2, 1, 0, 3][: pixels.shape[-1]]
                return pixels[..., order]
    return pixels


if __name__ == "__main__":
    sys.exit(main())
