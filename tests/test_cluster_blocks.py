"""One image spread over a real Dask cluster's workers block by block
(:mod:`zoodesk.cluster.blocks`): the same pixels as one process streaming it, with
the normalisation statistics reduced across workers.

The model is a box filter with percentile normalisation (``scale_range``), so the
expected output of any image is also computed here with NumPy and SciPy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.batch_helpers import box_filter, box_package, leftovers, output_array, request, run
from zoodesk.batch.events import BlockProgress, RunFinished
from zoodesk.images.zarr_writer import CHUNK, write_ome_zarr
from zoodesk.inference.streaming import StreamingPolicy

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

PERCENTILES = (1.0, 99.5)
STREAM = StreamingPolicy(mode="always")
TILE = {"y": 512, "x": 512}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    pre = [
        {
            "id": "scale_range",
            "kwargs": {
                "axes": ["y", "x"],
                "min_percentile": PERCENTILES[0],
                "max_percentile": PERCENTILES[1],
            },
        }
    ]
    folder = tmp_path_factory.mktemp("box-model")
    return box_package(folder, preprocessing=pre, min_size=64, step=64, halo=8)


def on_cluster(client: distributed.Client, req) -> tuple[list, RunFinished]:
    from zoodesk.cluster.execute import run_on_cluster

    events = list(run_on_cluster(req, client))
    assert isinstance(events[-1], RunFinished)
    return events, events[-1]


def expected(image: np.ndarray) -> np.ndarray:
    """scale_range with NumPy's percentiles (linear), then the box filter."""
    lo, hi = np.percentile(image.astype(np.float64), PERCENTILES)
    return box_filter((image - lo) / (hi - lo + 1e-6))


def test_an_8192_square_ome_zarr_by_blocks_equals_a_local_streamed_run(
    cluster: distributed.Client, model, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    side = 8192
    ramp = np.linspace(0, 30000, side, dtype=np.float64)
    image = (rng.random((side, side)) * 5000 + ramp[None, :]).astype(np.uint16)
    inputs = tmp_path / "in"
    write_ome_zarr(inputs / "slide.ome.zarr", image, "YX", pixel_sizes={"X": (0.5, "µm")})
    del image
    settings = {"streaming": STREAM, "output_format": "ome-zarr", "tile": TILE}
    _events, local = run(request(model, [inputs], tmp_path / "local", **settings))
    events, finished = on_cluster(
        cluster, request(model, [inputs], tmp_path / "cluster", **settings)
    )
    (ours,), (theirs,) = finished.record.files, local.record.files
    assert ours.status == "ok" and theirs.status == "ok", ours.error
    assert ours.streamed and ours.tiling["bands"] > 1
    assert ours.tiling["blocks"] == theirs.tiling["blocks"]
    assert ours.input_sha256 == theirs.input_sha256
    got = output_array(tmp_path / "cluster", ours.outputs[0].path)
    want = output_array(tmp_path / "local", theirs.outputs[0].path)
    assert got.shape == want.shape == (side, side)
    assert float(np.max(np.abs(got.astype(np.float64) - want))) <= 1e-5
    phases = {e.phase for e in events if isinstance(e, BlockProgress)}
    assert phases == {"statistics", "blocks"}
    assert leftovers(tmp_path / "cluster") == []


def test_float_statistics_reduced_over_workers_match_numpy(
    cluster: distributed.Client, model, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    image = (rng.normal(1000.0, 50.0, (3 * CHUNK + 37, 2 * CHUNK + 5))).astype(np.float32)
    inputs = tmp_path / "in"
    write_ome_zarr(inputs / "float.ome.zarr", image, "YX")
    settings = {"streaming": STREAM, "output_format": "ome-zarr", "tile": {"y": 256, "x": 256}}
    _events, finished = on_cluster(cluster, request(model, [inputs], tmp_path / "out", **settings))
    (entry,) = finished.record.files
    assert entry.status == "ok", entry.error
    got = output_array(tmp_path / "out", entry.outputs[0].path)
    np.testing.assert_allclose(got, expected(image), rtol=0, atol=1e-5)


def test_nan_in_a_large_float_image_fails_that_image_alone(
    cluster: distributed.Client, model, tmp_path: Path
) -> None:
    image = np.ones((1024, 1024), np.float32)
    image[700, 3] = np.nan
    inputs = tmp_path / "in"
    write_ome_zarr(inputs / "bad.ome.zarr", image, "YX")
    write_ome_zarr(
        inputs / "good.ome.zarr", np.arange(1024 * 1024, dtype=np.float32).reshape(1024, 1024), "YX"
    )
    settings = {"streaming": STREAM, "output_format": "ome-zarr", "tile": {"y": 256, "x": 256}}
    _events, finished = on_cluster(cluster, request(model, [inputs], tmp_path / "out", **settings))
    by_name = {Path(f.input).name: f for f in finished.record.files}
    bad = by_name["bad.ome.zarr"]
    assert bad.status == "failed"
    assert "bad.ome.zarr" in bad.error and "NaN" in bad.error and "\n" not in bad.error
    assert by_name["good.ome.zarr"].status == "ok"
    assert not (tmp_path / "out" / "bad_out.ome.zarr").exists()
    assert leftovers(tmp_path / "out") == []
