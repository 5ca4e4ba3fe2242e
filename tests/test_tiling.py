"""Tiling, padding and stitching, checked against SciPy on models the tests build.

A box filter of radius r with zero padding is what the ONNX graphs compute; run on
a whole image it equals ``scipy.ndimage.correlate(..., mode="constant")``.  Tiled
with a declared halo >= r, the stitched output must equal the same thing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from tests.onnx_factory import conv_model, pool_model, two_input_model, write_package
from zoodesk.errors import ShapeError
from zoodesk.inference.predict import Predictor
from zoodesk.inference.tiling import AxisBlock, plan_axis
from zoodesk.models.package import load_model_package
from zoodesk.models.spec import AxisSpec


def _axes_2d(size: object, batch: object = None) -> list[dict[str, object]]:
    b: dict[str, object] = {"type": "batch"}
    if batch is not None:
        b["size"] = batch
    return [
        b,
        {"type": "channel", "channel_names": ["c0"]},
        {"type": "space", "id": "y", "size": size},
        {"type": "space", "id": "x", "size": size},
    ]


def _out_axes(ref: str, halo: int, ndim: int = 2) -> list[dict[str, object]]:
    ids = ["z", "y", "x"][-ndim:]
    axes: list[dict[str, object]] = [{"type": "batch"}, {"type": "channel", "channel_names": ["o"]}]
    for a in ids:
        ax: dict[str, object] = {"type": "space", "id": a, "size": {"tensor_id": ref, "axis_id": a}}
        if halo:
            ax["halo"] = halo
        axes.append(ax)
    return axes


def box_reference(image: np.ndarray, radius: int) -> np.ndarray:
    """What a zero-padded box filter gives on the whole image (float64)."""
    k = 2 * radius + 1
    kernel = np.full((k,) * image.ndim, 1.0 / k**image.ndim)
    return ndimage.correlate(image.astype(np.float64), kernel, mode="constant", cval=0.0)


def build_box_package(
    tmp: Path,
    *,
    radius: int,
    halo: int,
    size: object,
    fixed: list[int] | None = None,
    batch: int | None = None,
    ndim: int = 2,
) -> Path:
    weights = tmp / "weights.onnx"
    conv_model(weights, radius=radius, ndim=ndim, fixed=fixed, batch=batch)
    shape = (1, 1, *(fixed or [32] * ndim))
    rng = np.random.default_rng(0)
    x = rng.random(shape, dtype=np.float32)
    y = box_reference(x[0, 0], radius)[None, None].astype(np.float32)
    if ndim == 2:
        in_axes = _axes_2d(size, batch)
    else:
        in_axes = [
            {"type": "batch"},
            {"type": "channel", "channel_names": ["c0"]},
            *({"type": "space", "id": a, "size": size} for a in ("z", "y", "x")),
        ]
    return write_package(
        tmp / "pkg",
        weights,
        inputs=[{"id": "raw", "axes": in_axes}],
        outputs=[{"id": "out", "axes": _out_axes("raw", halo, ndim)}],
        test_arrays={"raw": x, "out": y},
    )


def _predict(package_path: Path, image: np.ndarray, **kwargs: object) -> tuple[np.ndarray, object]:
    predictor = Predictor(load_model_package(package_path), device="cpu", **kwargs)  # type: ignore[arg-type]
    result = predictor.predict({"raw": image[None, None]})
    return result.outputs["out"][0, 0], result.plan


def test_plan_axis_covers_every_pixel_once_and_crops_halo() -> None:
    axis = AxisSpec(id="x", kind="space", size=64)
    blocks = plan_axis(axis, 200, 8, None)
    owned = np.zeros(200, int)
    for b in blocks:
        owned[b.own_start : b.own_stop] += 1
        assert b.size == 64
        assert b.start >= 0 and b.start + b.size <= 200
        # An owned pixel is never within the halo of its block, except at the image border.
        if b.own_start > 0:
            assert b.own_start - b.start >= 8
        if b.own_stop < 200:
            assert b.start + b.size - b.own_stop >= 8
    assert (owned == 1).all()


def test_plan_axis_pads_a_short_axis_to_the_fixed_size() -> None:
    blocks = plan_axis(AxisSpec(id="y", kind="space", size=64), 40, 4, None)
    assert blocks == [AxisBlock(start=-12, size=64, own_start=0, own_stop=40)]


def test_plan_axis_rejects_a_halo_that_eats_the_block() -> None:
    with pytest.raises(ShapeError, match="halo"):
        plan_axis(AxisSpec(id="y", kind="space", size=16), 100, 8, None)


def test_fixed_shape_tiles_with_halo_match_whole_image_filter(tmp_path: Path) -> None:
    pkg = build_box_package(tmp_path, radius=3, halo=4, size=64, fixed=[64, 64], batch=1)
    image = np.random.default_rng(1).random((150, 217), dtype=np.float32)
    out, plan = _predict(pkg, image)
    assert out.shape == image.shape
    assert plan.block_count > 4  # type: ignore[attr-defined]
    np.testing.assert_allclose(out, box_reference(image, 3), atol=1e-5)


def test_halo_smaller_than_receptive_field_shows_seams(tmp_path: Path) -> None:
    # Guards the test above: with too small a halo the stitched result must differ.
    pkg = build_box_package(tmp_path, radius=3, halo=1, size=64, fixed=[64, 64], batch=1)
    image = np.random.default_rng(1).random((150, 217), dtype=np.float32)
    out, _ = _predict(pkg, image)
    assert np.abs(out - box_reference(image, 3)).max() > 1e-3


def test_image_smaller_than_fixed_shape_is_padded_and_cropped_back(tmp_path: Path) -> None:
    pkg = build_box_package(tmp_path, radius=2, halo=2, size=64, fixed=[64, 64], batch=1)
    image = np.random.default_rng(2).random((40, 50), dtype=np.float32)
    out, plan = _predict(pkg, image)
    assert out.shape == (40, 50)
    assert plan.block_count == 1  # type: ignore[attr-defined]
    # Away from the border the padding cannot matter.
    np.testing.assert_allclose(out[2:-2, 2:-2], box_reference(image, 2)[2:-2, 2:-2], atol=1e-5)
    # At the border the model saw reflected pixels, as padded by numpy.
    padded = np.pad(image, ((12, 12), (7, 7)), mode="reflect")
    expected = box_reference(padded, 2)[12:52, 7:57]
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["symmetric", "edge", "constant"])
def test_padding_modes(tmp_path: Path, mode: str) -> None:
    pkg = build_box_package(tmp_path, radius=1, halo=1, size=32, fixed=[32, 32], batch=1)
    image = np.random.default_rng(3).random((20, 25), dtype=np.float32)
    out, _ = _predict(pkg, image, pad_mode=mode)
    padded = np.pad(image, ((6, 6), (3, 4)), mode=mode)
    np.testing.assert_allclose(out, box_reference(padded, 1)[6:26, 3:28], atol=1e-5)


def test_parametrized_size_runs_whole_image_when_it_fits(tmp_path: Path) -> None:
    pkg = build_box_package(tmp_path, radius=2, halo=2, size={"min": 16, "step": 8})
    image = np.random.default_rng(4).random((100, 77), dtype=np.float32)
    out, plan = _predict(pkg, image)
    assert plan.block_count == 1  # type: ignore[attr-defined]
    # 100 -> 104 and 77 -> 80 are the smallest sizes of the form 16 + 8n.
    assert plan.block_shape == {"y": 104, "x": 80}  # type: ignore[attr-defined]
    np.testing.assert_allclose(out[2:-2, 2:-2], box_reference(image, 2)[2:-2, 2:-2], atol=1e-5)


def test_parametrized_size_with_forced_tile_and_batched_blocks(tmp_path: Path) -> None:
    pkg = build_box_package(tmp_path, radius=2, halo=3, size={"min": 16, "step": 8})
    image = np.random.default_rng(5).random((130, 190), dtype=np.float32)
    out, plan = _predict(pkg, image, tile={"y": 40, "x": 40})
    assert plan.block_shape == {"y": 40, "x": 40}  # type: ignore[attr-defined]
    assert plan.batch_size > 1  # type: ignore[attr-defined]
    np.testing.assert_allclose(out, box_reference(image, 2), atol=1e-5)


def test_3d_model_tiles_in_z_y_x(tmp_path: Path) -> None:
    pkg = build_box_package(tmp_path, radius=1, halo=2, size={"min": 8, "step": 4}, ndim=3)
    volume = np.random.default_rng(6).random((30, 41, 37), dtype=np.float32)
    out, plan = _predict(pkg, volume, tile={"z": 16, "y": 16, "x": 16})
    assert plan.block_count > 8  # type: ignore[attr-defined]
    np.testing.assert_allclose(out, box_reference(volume, 1), atol=1e-5)


def test_several_inputs_and_outputs_are_tiled_together(tmp_path: Path) -> None:
    weights = tmp_path / "two.onnx"
    two_input_model(weights)
    rng = np.random.default_rng(7)
    a = rng.random((1, 1, 32, 32), dtype=np.float32)
    b = rng.random((1, 1, 32, 32), dtype=np.float32)
    size = {"min": 16, "step": 16}
    pkg = write_package(
        tmp_path / "pkg",
        weights,
        inputs=[{"id": "a", "axes": _axes_2d(size)}, {"id": "b", "axes": _axes_2d(size)}],
        outputs=[
            {"id": "sum", "axes": _out_axes("a", 0)},
            {"id": "diff", "axes": _out_axes("a", 0)},
        ],
        test_arrays={"a": a, "b": b, "sum": a + b, "diff": a - b},
    )
    predictor = Predictor(load_model_package(pkg), device="cpu", tile={"y": 32, "x": 32})
    x = rng.random((1, 1, 90, 70), dtype=np.float32)
    y = rng.random((1, 1, 90, 70), dtype=np.float32)
    result = predictor.predict({"a": x, "b": y})
    assert result.plan.block_count > 1
    np.testing.assert_allclose(result.outputs["sum"], x + y, atol=1e-6)
    np.testing.assert_allclose(result.outputs["diff"], x - y, atol=1e-6)


def test_output_at_half_resolution_is_stitched_on_its_own_grid(tmp_path: Path) -> None:
    weights = tmp_path / "pool.onnx"
    pool_model(weights)
    rng = np.random.default_rng(8)
    x = rng.random((1, 1, 32, 32), dtype=np.float32)
    y = x.reshape(1, 1, 16, 2, 16, 2).mean(axis=(3, 5))
    out_axes = [
        {"type": "batch"},
        {"type": "channel", "channel_names": ["o"]},
        {"type": "space", "id": "y", "size": {"tensor_id": "raw", "axis_id": "y"}, "scale": 2.0},
        {"type": "space", "id": "x", "size": {"tensor_id": "raw", "axis_id": "x"}, "scale": 2.0},
    ]
    pkg = write_package(
        tmp_path / "pkg",
        weights,
        inputs=[{"id": "raw", "axes": _axes_2d({"min": 16, "step": 16})}],
        outputs=[{"id": "out", "axes": out_axes}],
        test_arrays={"raw": x, "out": y},
    )
    predictor = Predictor(load_model_package(pkg), device="cpu", tile={"y": 32, "x": 32})
    image = rng.random((1, 1, 96, 64), dtype=np.float32)
    result = predictor.predict({"raw": image})
    expected = image.reshape(1, 1, 48, 2, 32, 2).mean(axis=(3, 5))
    assert result.plan.block_count == 6
    np.testing.assert_allclose(result.outputs["out"], expected, atol=1e-6)


def test_tiny_image_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    pkg = build_box_package(tmp_path, radius=1, halo=1, size=32, fixed=[32, 32], batch=1)
    with pytest.raises(ShapeError, match="too small"):
        _predict(pkg, np.ones((1, 1), np.float32))
