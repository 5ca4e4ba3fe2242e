"""Looking before running: the input scan and the one-image preview (zoodesk.batch.preview)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from zoodesk.batch.preview import (
    default_region,
    describe_axis,
    required_input,
    run_preview,
    scan_inputs,
)
from zoodesk.demo import demo_images_dir, demo_model_path
from zoodesk.errors import CancelledError
from zoodesk.images import write_ome_tiff
from zoodesk.inference.predict import Predictor
from zoodesk.models.package import load_model_package
from zoodesk.models.spec import AxisSpec


@pytest.fixture(scope="module")
def demo_predictor() -> Predictor:
    return Predictor(load_model_package(demo_model_path()), device="cpu")


@pytest.fixture(scope="module")
def nuclei_predictor(nuclei_dir: Path) -> Predictor:
    return Predictor(load_model_package(nuclei_dir), device="cpu")


def _drain(gen):  # type: ignore[no-untyped-def]
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            return steps, stop.value


def test_scan_lists_files_with_axes_sizes_and_fit(
    tmp_path: Path, demo_predictor: Predictor
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_ome_tiff(folder / "a.ome.tif", np.zeros((40, 50), np.uint16), "YX")
    write_ome_tiff(folder / "b.ome.tif", np.zeros((3, 40, 50), np.uint16), "CYX")
    (folder / "c.tif").write_bytes(b"not a tiff")
    tensor = required_input(demo_predictor.spec)
    infos = list(scan_inputs([folder, tmp_path / "missing"], tensor=tensor))
    by_name = {i.path.name: i for i in infos}
    assert set(by_name) == {"missing", "a.ome.tif", "b.ome.tif", "c.tif"}
    a = by_name["a.ome.tif"]
    assert (a.axes, a.shape, a.dtype, a.ok) == ("YX", (40, 50), "uint16", True)
    assert a.mapping == "YX -> bcyx"
    assert a.size_bytes == (folder / "a.ome.tif").stat().st_size
    b = by_name["b.ome.tif"]
    assert b.axes == "CYX" and not b.ok
    assert "the model needs 1 channel(s), the image gives 3" in (b.problem or "")
    assert str(folder / "c.tif") in (by_name["c.tif"].problem or "")
    assert "no such file or folder" in (by_name["missing"].problem or "")
    # Choosing a channel makes the three-channel image fit.
    again = {i.path.name: i for i in scan_inputs([folder], tensor=tensor, channels=[2])}
    assert again["b.ome.tif"].ok
    assert again["b.ome.tif"].mapping == "CYX -> bcyx, channel(s) 2"


def test_scan_honours_patterns_and_stops_when_cancelled(tmp_path: Path) -> None:
    for name in ("x1.tif", "x2.tif", "y1.tif"):
        write_ome_tiff(tmp_path / name, np.zeros((8, 8), np.uint8), "YX")
    assert [i.path.name for i in scan_inputs([tmp_path], patterns=["x*"])] == ["x1.tif", "x2.tif"]
    assert list(scan_inputs([tmp_path], cancelled=lambda: True)) == []


def test_describe_axis_in_words() -> None:
    assert describe_axis(AxisSpec("batch", "batch")) == "batch: one image at a time"
    assert describe_axis(AxisSpec("channel", "channel", size=2, channel_names=("a", "b"))) == (
        "channel: 2 channels (a, b)"
    )
    assert describe_axis(AxisSpec("y", "space", min=64, step=16)) == "y (space): 64 + n×16"
    assert describe_axis(AxisSpec("x", "space", size=512, halo=8)) == (
        "x (space): exactly 512 (larger images are tiled), halo 8"
    )


def test_default_region_is_centred_and_bounded() -> None:
    assert default_region("YX", (700, 500), 512) == (94, 0, 512, 500)
    assert default_region("CYX", (2, 100, 80), 512) == (0, 0, 100, 80)
    assert default_region("ZYX", (5, 2000, 1000), 256) == (872, 372, 256, 256)


def test_preview_of_a_region_matches_the_models_own_output(
    nuclei_predictor: Predictor, nuclei_dir: Path, tmp_path: Path
) -> None:
    # The model's test input, placed inside a larger image: previewing exactly that
    # region reproduces the model's test output.
    test_input = np.load(nuclei_dir / "test_input.npy")[0, 0]
    expected = np.load(nuclei_dir / "test_output.npy")[0, 0]
    big = np.zeros((700, 900), np.float32)
    big[100:612, 300:812] = test_input
    write_ome_tiff(tmp_path / "big.ome.tif", big, "YX")
    steps, result = _drain(
        run_preview(nuclei_predictor, tmp_path / "big.ome.tif", region=(100, 300, 512, 512))
    )
    assert steps and steps[-1][0] == steps[-1][1]
    assert result.region == (100, 300, 512, 512)
    assert result.image.shape == (512, 512)
    np.testing.assert_array_equal(result.image, test_input)
    assert result.image_shape == (700, 900)
    assert result.device == "cpu"
    (out,) = result.outputs
    assert (out.tensor_id, out.axes, out.kind) == ("probability", "CYX", "probabilities")
    np.testing.assert_allclose(out.array[0], expected, atol=2e-3)


def test_preview_takes_the_middle_frame_of_a_stack(
    demo_predictor: Predictor, tmp_path: Path
) -> None:
    stack = np.stack([np.full((96, 80), z * 10, np.uint16) for z in range(5)])
    stack[2, 40:50, 30:40] = 1000  # a bright spot only in the middle plane
    write_ome_tiff(tmp_path / "stack.ome.tif", stack, "ZYX")
    _steps, result = _drain(run_preview(demo_predictor, tmp_path / "stack.ome.tif"))
    assert result.frame == {"Z": 2}
    assert "frame(s) over Z" in result.mapping
    assert result.image.shape == (1, 96, 80)
    assert result.image.max() == 1000
    outputs = {o.tensor_id: o for o in result.outputs}
    mask = outputs["mask"]
    assert mask.kind == "labels" and mask.array.dtype == np.uint8
    assert mask.array.reshape(96, 80)[45, 35] == 1
    assert mask.array.reshape(96, 80)[5, 5] == 0
    _steps, first = _drain(run_preview(demo_predictor, tmp_path / "stack.ome.tif", frame={"Z": 0}))
    assert first.frame == {"Z": 0}
    assert first.image.max() == 0


def test_preview_can_be_cancelled(demo_predictor: Predictor) -> None:
    sample = sorted(demo_images_dir().glob("*.tif"))[0]
    with pytest.raises(CancelledError):
        _drain(run_preview(demo_predictor, sample, cancelled=lambda: True))


def test_packages_load_from_several_threads_at_once(nuclei_dir: Path) -> None:
    # The desktop application loads models in worker threads; bioimageio.spec's
    # parser is shared, so loading must be safe when it happens concurrently.
    paths = [demo_model_path(), nuclei_dir] * 4
    with ThreadPoolExecutor(4) as pool:
        names = list(pool.map(lambda p: load_model_package(p).spec.name, paths))
    assert names == ["ZooDesk demo blob detector", "UNet 2D Nuclei Broad"] * 4
