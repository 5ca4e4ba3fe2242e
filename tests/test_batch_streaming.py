"""Images processed block by block from disk give what the in-memory path gives.

The streaming path is forced with ``StreamingPolicy(mode="always")`` on small images,
and its outputs are compared with those of the in-memory path and, for the box
filter, with SciPy.  Peak memory on a really large image is measured by
``benchmarks/bench_memory.py``, not here.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from tests.batch_helpers import box_filter, box_package, errors, request, run, statuses
from zoodesk.batch.runner import BlockProgress
from zoodesk.demo import demo_model_path
from zoodesk.images import read_image, release_mapped_pages
from zoodesk.images.axes import map_image_to_tensor
from zoodesk.inference import streaming
from zoodesk.inference.streaming import StreamingPolicy, estimate_in_memory_bytes
from zoodesk.models.package import ModelPackage, load_model_package

ALWAYS = StreamingPolicy(mode="always")
NEVER = StreamingPolicy(mode="never")


def _both(
    model: Any, inputs: list[Path], tmp_path: Path, **kwargs: Any
) -> tuple[Any, Any, Path, Path]:
    streamed_dir, memory_dir = tmp_path / "streamed", tmp_path / "memory"
    _events, streamed = run(request(model, inputs, streamed_dir, streaming=ALWAYS, **kwargs))
    _events, memory = run(request(model, inputs, memory_dir, streaming=NEVER, **kwargs))
    assert all(f.streamed for f in streamed.record.files if f.status == "ok")
    assert not any(f.streamed for f in memory.record.files)
    return streamed, memory, streamed_dir, memory_dir


def _same_outputs(streamed: Any, memory: Any, a: Path, b: Path, atol: float = 0.0) -> int:
    compared = 0
    for fs, fm in zip(streamed.record.files, memory.record.files, strict=True):
        assert fs.status == fm.status == "ok", (fs.error, fm.error)
        for os_, om in zip(fs.outputs, fm.outputs, strict=True):
            assert (os_.path, os_.axes, os_.shape, os_.dtype) == (
                om.path,
                om.axes,
                om.shape,
                om.dtype,
            )
            x, y = read_image(a / os_.path), read_image(b / om.path)
            assert x.axes == y.axes and x.pixel_sizes == y.pixel_sizes
            np.testing.assert_allclose(np.asarray(x.array), np.asarray(y.array), atol=atol)
            compared += 1
    return compared


def test_demo_model_streams_frames_and_both_outputs_like_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming, "STATS_BAND_VOXELS", 5000)
    rng = np.random.default_rng(0)
    movie = (rng.random((3, 150, 230)) * 4000).astype(np.uint16)
    tifffile.imwrite(
        tmp_path / "movie.tif",
        movie,
        imagej=True,
        resolution=(1 / 0.4, 1 / 0.4),
        metadata={"axes": "TYX", "unit": "um"},
    )
    plain = (rng.random((300, 420)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", plain)
    inputs = [tmp_path / "movie.tif", tmp_path / "plain.tif"]
    # Small blocks, so that the image is cut into many overlapping, batched blocks.
    streamed, memory, a, b = _both(
        load_model_package(demo_model_path()), inputs, tmp_path, tile={"y": 96, "x": 96}
    )
    assert _same_outputs(streamed, memory, a, b) == 4
    entry = streamed.record.files[0]
    assert entry.tiling is not None and entry.tiling["blocks"] > 4 and entry.tiling["frames"] == 3
    with tifffile.TiffFile(a / "movie_probability.ome.tif") as tif:
        assert tif.pages.first.is_tiled
    assert read_image(a / "movie_mask.ome.tif").pixel_sizes["X"] == (0.4, "µm")


def test_nuclei_model_streams_like_in_memory(tmp_path: Path, nuclei_dir: Path) -> None:
    image = (np.random.default_rng(1).random((600, 700)) * 3000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "nuclei.tif", image)
    streamed, memory, a, b = _both(nuclei_dir, [tmp_path / "nuclei.tif"], tmp_path)
    # Statistics accumulated band by band differ from the whole-array ones by
    # float64 rounding at most.
    assert _same_outputs(streamed, memory, a, b, atol=1e-5) == 1
    assert streamed.record.files[0].tiling == memory.record.files[0].tiling


def test_statistics_pass_and_staged_preprocessing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bands of 12 rows: the statistics are accumulated over many of them.
    monkeypatch.setattr(streaming, "STATS_BAND_VOXELS", 12 * 160)
    # clip at percentiles, then normalise the clipped data: two statistics passes.
    model = box_package(
        tmp_path / "m",
        preprocessing=[
            {
                "id": "clip",
                "kwargs": {"min_percentile": 5, "max_percentile": 95, "axes": ["y", "x"]},
            },
            {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}},
        ],
    )
    rng = np.random.default_rng(2)
    image = rng.gamma(2.0, 100.0, (200, 160)).astype(np.float32)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    events, finished = run(
        request(model, [tmp_path / "cells.tif"], tmp_path / "out", streaming=ALWAYS)
    )
    assert statuses(finished) == {"cells.tif": "ok"}, errors(finished)
    low, high = np.percentile(image, [5, 95], method="inverted_cdf")
    clipped = np.clip(image.astype(np.float64), low, high)
    normalised = (clipped - clipped.mean()) / (clipped.std() + 1e-6)
    result = read_image(tmp_path / "out" / "cells_out.ome.tif").array
    np.testing.assert_allclose(result, box_filter(normalised), atol=2e-5)
    statistics = [e for e in events if isinstance(e, BlockProgress) and e.phase == "statistics"]
    # 17 bands for each of the two stages.
    assert [(e.done, e.total) for e in statistics] == [(k, 34) for k in range(1, 35)]
    assert any(isinstance(e, BlockProgress) and e.phase == "blocks" for e in events)


def test_postprocessing_that_needs_output_statistics_is_refused_when_streaming(
    tmp_path: Path,
) -> None:
    model = box_package(
        tmp_path / "m",
        postprocessing=[{"id": "scale_range", "kwargs": {"axes": ["y", "x"]}}],
    )
    tifffile.imwrite(tmp_path / "a.tif", np.random.default_rng(3).random((32, 32)))
    _events, finished = run(request(model, [tmp_path / "a.tif"], tmp_path / "s", streaming=ALWAYS))
    message = errors(finished)["a.tif"]
    assert "postprocessing of output 'out' (scale_range)" in message
    assert "statistics of the whole output" in message
    _events, finished = run(request(model, [tmp_path / "a.tif"], tmp_path / "m2", streaming=NEVER))
    assert statuses(finished) == {"a.tif": "ok"}


def test_policy_decides_by_size_and_available_memory(tmp_path: Path) -> None:
    model: ModelPackage = load_model_package(demo_model_path())
    tensor = model.spec.inputs[0]
    mapping = map_image_to_tensor("YX", (16384, 16384), tensor)
    assert StreamingPolicy().should_stream(model.spec, mapping, available=10**15)
    small = map_image_to_tensor("YX", (2048, 2048), tensor)
    assert not StreamingPolicy().should_stream(model.spec, small, available=10**15)
    # Two outputs of one channel each: 4 bytes x (2 + 2) per pixel.
    assert estimate_in_memory_bytes(model.spec, small) == 2048 * 2048 * 16
    assert StreamingPolicy().should_stream(model.spec, small, available=2048 * 2048 * 16 * 3)
    assert not StreamingPolicy(memory_fraction=0.5).should_stream(
        model.spec, small, available=2048 * 2048 * 16 * 3
    )
    assert StreamingPolicy(max_megapixels=4).should_stream(model.spec, small, available=10**15)
    assert not StreamingPolicy(mode="never").should_stream(model.spec, mapping, available=1)
    assert StreamingPolicy(mode="always").should_stream(model.spec, small, available=10**15)
    with pytest.raises(ValueError, match="auto, always or never"):
        StreamingPolicy(mode="sometimes")  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED"), reason="needs madvise")
def test_released_pages_leave_the_process(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    path = tmp_path / "big.npy"
    np.save(path, np.ones((64, 1024, 1024), np.uint8))  # 64 MiB
    image = read_image(path)
    process = psutil.Process()
    before = process.memory_info().rss
    assert int(np.asarray(image.array).sum(dtype=np.int64)) == 64 * 2**20
    touched = process.memory_info().rss
    release_mapped_pages(image.array)
    released = process.memory_info().rss
    assert touched - before > 48 * 2**20
    assert touched - released > 48 * 2**20


def test_tiled_writer_memory_stays_far_below_the_image_size(tmp_path: Path) -> None:
    pytest.importorskip("resource")
    script = textwrap.dedent(
        f"""
        import resource, numpy as np
        from pathlib import Path
        from zoodesk.images import TiledOmeTiffWriter, read_image
        block = np.random.default_rng(0).random((512, 512), dtype=np.float32)
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with TiledOmeTiffWriter(Path({str(tmp_path / "big.ome.tif")!r}), (8192, 8192),
                                np.float32, "YX", compression=None) as writer:
            for y in range(0, 8192, 512):
                for x in range(0, 8192, 512):
                    writer.write_block((slice(y, y + 512), slice(x, x + 512)), block)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        image = read_image(Path({str(tmp_path / "big.ome.tif")!r}))
        assert np.array_equal(image.array[4096:4608, 512:1024], block)
        print((peak - start) // 1024)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    growth_mib = int(done.stdout.strip().splitlines()[-1])
    # The image is 256 MiB; the writer holds one band of tile rows (16 MiB) at most.
    assert growth_mib < 64, f"peak memory grew by {growth_mib} MiB"


def test_percentiles_of_float_images_beyond_the_exact_budget_are_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming, "STATS_BAND_VOXELS", 16 * 160)
    monkeypatch.setattr(streaming, "STATS_EXACT_SAMPLES", 5000)
    model = box_package(
        tmp_path / "m",
        preprocessing=[
            {
                "id": "scale_range",
                "kwargs": {"min_percentile": 1, "max_percentile": 99, "axes": ["y", "x"]},
            }
        ],
    )
    image = np.random.default_rng(4).gamma(2.0, 100.0, (320, 160)).astype(np.float32)
    tifffile.imwrite(tmp_path / "float.tif", image)
    streamed, memory, a, b = _both(model, [tmp_path / "float.tif"], tmp_path)
    # Exact in memory; from a 16384-bin histogram when streaming: the scaled values
    # agree to a small fraction of their range.
    assert _same_outputs(streamed, memory, a, b, atol=2e-3) == 1
    exact = read_image(b / "float_out.ome.tif").array
    low, high = np.percentile(image, [1, 99])
    np.testing.assert_allclose(exact, box_filter((image - low) / (high - low + 1e-6)), atol=1e-5)
