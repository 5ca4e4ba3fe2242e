"""The built-in demo model and sample images (zoodesk/resources/demo).

The filter parameters below are the demo model's documented contract (its README);
they are restated here, not imported from tools/build_demo.py, so that the tests
check the committed files against an independent computation.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tifffile
from numpy.typing import NDArray
from ruyaml import YAML
from scipy import ndimage

from zoodesk.demo import demo_image_paths, demo_images_dir, demo_model_dir, demo_model_path
from zoodesk.models.package import ModelPackage, load_model_package
from zoodesk.models.spec import FileRef, TensorSpec

SIGMA_SMALL = 1.5
SIGMA_LARGE = 5.0
RADIUS = 16
THRESHOLD = 0.06
GAIN = 80.0
MIN_SIZE = 64
STEP = 16
PIXEL_SIZE_UM = 0.325

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build_demo.py"


@pytest.fixture(scope="module")
def package() -> ModelPackage:
    return load_model_package(demo_model_path())


@pytest.fixture(scope="module")
def session(package: ModelPackage) -> ort.InferenceSession:
    weights = package.verify(package.executable_weights().source)
    return ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])


def _file_refs(package: ModelPackage) -> list[FileRef]:
    refs = [w.source for w in package.spec.weights.values()]
    for tensor in (*package.spec.inputs, *package.spec.outputs):
        refs += [r for r in (tensor.test_tensor, tensor.sample_tensor) if r is not None]
    return refs


def _preprocess(raw: NDArray[Any], tensor: TensorSpec) -> NDArray[np.float32]:
    """The input's declared preprocessing, written out with numpy."""
    (scale,) = [op for op in tensor.preprocessing if op.id == "scale_range"]
    x = raw.astype(np.float32)
    lower = np.percentile(x, scale.kwargs["min_percentile"], axis=(-2, -1), keepdims=True)
    upper = np.percentile(x, scale.kwargs["max_percentile"], axis=(-2, -1), keepdims=True)
    return ((x - lower) / (upper - lower + 1e-6)).astype(np.float32)


def _mask(logit: NDArray[np.float32], tensor: TensorSpec) -> NDArray[np.bool_]:
    (binarize,) = [op for op in tensor.postprocessing if op.id == "binarize"]
    probability = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
    return np.asarray(probability > binarize.kwargs["threshold"])


def _planted_blobs(
    shape: tuple[int, int], n: int, seed: int
) -> tuple[NDArray[np.float64], list[tuple[float, float, float]]]:
    """Camera counts of round Gaussian spots on an uneven background, and their centres."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    photons = 8.0 + 6.0 * xx / w
    blobs: list[tuple[float, float, float]] = []
    while len(blobs) < n:
        cy, cx, sigma = rng.uniform(10, h - 10), rng.uniform(10, w - 10), rng.uniform(2.5, 4.0)
        if all((cy - y) ** 2 + (cx - x) ** 2 > (4 * max(s, sigma)) ** 2 for y, x, s in blobs):
            photons += rng.uniform(70, 300) * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)
            )
            blobs.append((cy, cx, sigma))
    return 100.0 + rng.poisson(photons), blobs


# ------------------------------------------------------------------- installation


def test_demo_resources_are_found() -> None:
    assert demo_model_path().name == "bioimageio.yaml"
    assert demo_model_path().is_file()
    assert demo_model_path().parent == demo_model_dir()
    names = [p.name for p in demo_image_paths()]
    assert names == ["nuclei_large.ome.tif", "nuclei_plain.tif", "nuclei_small.ome.tif"]
    assert all(p.parent == demo_images_dir() for p in demo_image_paths())


def test_demo_resources_stay_small() -> None:
    root = demo_model_dir().parent
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 1_000_000


# ---------------------------------------------------------------------- description


def test_description_loads_with_expected_axes(package: ModelPackage) -> None:
    spec = package.spec
    assert spec.name == "ZooDesk demo blob detector"
    assert spec.id == "zoodesk-demo-blobs"
    assert spec.license == "MIT"
    assert spec.authors == ("ZooDesk developers",)
    assert spec.documentation == "README.md"
    assert spec.covers == ("cover.png",)
    assert not spec.is_3d

    (raw,) = spec.inputs
    assert raw.id == "raw"
    assert raw.axes_letters == "bcyx"
    assert raw.channel_count == 1
    for axis_id in ("y", "x"):
        axis = raw.axis(axis_id)
        assert (axis.min, axis.step) == (MIN_SIZE, STEP)
        assert axis.allowed_sizes_at_least(300) == 304
    assert [op.id for op in raw.preprocessing] == ["ensure_dtype", "scale_range", "ensure_dtype"]
    (scale,) = [op for op in raw.preprocessing if op.id == "scale_range"]
    assert dict(scale.kwargs)["axes"] == ["x", "y"]

    assert [t.id for t in spec.outputs] == ["probability", "mask"]
    for output in spec.outputs:
        assert output.axes_letters == "bcyx"
        for axis_id in ("y", "x"):
            axis = output.axis(axis_id)
            assert axis.reference is not None
            assert (axis.reference.tensor_id, axis.reference.axis_id) == ("raw", axis_id)
            assert axis.halo == RADIUS
    probability, mask = spec.outputs
    assert [op.id for op in probability.postprocessing] == ["sigmoid", "ensure_dtype"]
    assert probability.data_type == "float32"
    assert probability.data_range == (0.0, 1.0)
    assert [op.id for op in mask.postprocessing] == ["sigmoid", "binarize", "ensure_dtype"]
    assert mask.data_type == "uint8"

    weights = package.executable_weights()
    assert weights.format == "onnx"
    assert weights.opset_version == 17


def test_checksums_match_the_files(package: ModelPackage) -> None:
    refs = _file_refs(package)
    assert len(refs) == 7
    for ref in refs:
        assert ref.sha256 is not None
        path = package.root / ref.source
        assert hashlib.sha256(path.read_bytes()).hexdigest() == ref.sha256, ref.source
        assert package.verify(ref) == path.resolve()
    for name in ("README.md", "cover.png"):
        assert (package.root / name).is_file()


def _test_tensor(package: ModelPackage, tensor: TensorSpec) -> NDArray[Any]:
    assert tensor.test_tensor is not None
    return np.load(package.root / tensor.test_tensor.source)


def test_test_tensors_have_the_declared_shapes(package: ModelPackage) -> None:
    raw = _test_tensor(package, package.spec.inputs[0])
    assert raw.dtype == np.float32
    assert raw.shape[:2] == (1, 1)
    assert all((s - MIN_SIZE) % STEP == 0 for s in raw.shape[2:])
    probability, mask = (_test_tensor(package, t) for t in package.spec.outputs)
    assert probability.shape == mask.shape == raw.shape
    assert probability.dtype == np.float32
    assert probability.min() >= 0.0
    assert probability.max() <= 1.0
    assert mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    np.testing.assert_array_equal(mask, (probability > 0.5).astype(np.uint8))


def test_bioimageio_spec_validates_the_description() -> None:
    from bioimageio.spec import load_model_description

    descr = load_model_description(demo_model_path(), perform_io_checks=True)
    summary = descr.validation_summary
    assert summary.status in ("valid-format", "passed"), summary.format()
    assert not [e for d in summary.details for e in d.errors]


def test_bioimageio_core_test_model_passes() -> None:
    from bioimageio.core import test_model

    summary = test_model(demo_model_path())
    assert summary.status == "passed", summary.format()


# ----------------------------------------------------------------------- the graph


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 80, 112), (3, 1, 304, 400)])
def test_graph_accepts_dynamic_batch_and_sizes(
    session: ort.InferenceSession, shape: tuple[int, ...]
) -> None:
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    outputs = session.run(None, {session.get_inputs()[0].name: x})
    assert len(outputs) == 2
    for out in outputs:
        assert out.shape == shape
        assert out.dtype == np.float32


def test_graph_computes_the_difference_of_gaussians(session: ort.InferenceSession) -> None:
    counts, _ = _planted_blobs((144, 176), 12, seed=7)
    x = counts.astype(np.float32) / np.float32(400.0)
    probability_logit, mask_logit = session.run(None, {"raw": x[np.newaxis, np.newaxis]})

    # The graph pads with zeros, i.e. scipy's constant mode: borders agree as well.
    def blur(sigma: float) -> NDArray[np.float64]:
        return ndimage.gaussian_filter(x.astype(np.float64), sigma, radius=RADIUS, mode="constant")

    expected = GAIN * (blur(SIGMA_SMALL) - blur(SIGMA_LARGE) - THRESHOLD)
    np.testing.assert_allclose(probability_logit[0, 0], expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(mask_logit, probability_logit)

    # Within the interior the border handling does not matter (the halo is enough).
    def blur_reflect(sigma: float) -> NDArray[np.float64]:
        return ndimage.gaussian_filter(x.astype(np.float64), sigma, radius=RADIUS, mode="reflect")

    interior = (slice(RADIUS, -RADIUS), slice(RADIUS, -RADIUS))
    reflected = GAIN * (blur_reflect(SIGMA_SMALL) - blur_reflect(SIGMA_LARGE) - THRESHOLD)
    np.testing.assert_allclose(
        probability_logit[0, 0][interior], reflected[interior], rtol=1e-4, atol=1e-3
    )


def test_mask_finds_planted_blobs(package: ModelPackage, session: ort.InferenceSession) -> None:
    shape = (256, 320)
    counts, blobs = _planted_blobs(shape, 30, seed=11)
    x = _preprocess(counts[np.newaxis, np.newaxis], package.spec.inputs[0])
    _, logit = session.run(None, {"raw": x})
    mask = _mask(logit[0, 0], package.spec.outputs[1])

    found = [mask[round(cy), round(cx)] for cy, cx, _ in blobs]
    assert np.mean(found) >= 0.9

    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    background = np.ones(shape, dtype=bool)
    for cy, cx, sigma in blobs:
        background &= (yy - cy) ** 2 + (xx - cx) ** 2 > (3 * sigma) ** 2
    assert mask[background].mean() < 0.01
    # Each blob is one object, not a ring or a scatter of pixels.
    _, n_objects = ndimage.label(mask)
    assert len(blobs) * 0.9 <= n_objects <= len(blobs)


def test_mask_marks_spots_in_the_sample_images(
    package: ModelPackage, session: ort.InferenceSession
) -> None:
    for path in demo_image_paths():
        image = tifffile.imread(path)
        x = _preprocess(image[np.newaxis, np.newaxis], package.spec.inputs[0])
        _, logit = session.run(None, {"raw": x})
        mask = _mask(logit[0, 0], package.spec.outputs[1])
        _, n_objects = ndimage.label(mask)
        assert 0.01 < mask.mean() < 0.2, path.name
        assert n_objects >= 20, path.name


# ------------------------------------------------------------------------- samples


def test_sample_images() -> None:
    found = {}
    for path in demo_image_paths():
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            found[path.name] = (data.shape, data.dtype, tif.is_ome)
            assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
            if tif.is_ome:
                pixels = tif.ome_metadata
                assert pixels is not None
                assert f'PhysicalSizeX="{PIXEL_SIZE_UM}"' in pixels
                assert f'PhysicalSizeY="{PIXEL_SIZE_UM}"' in pixels
                assert 'PhysicalSizeXUnit="µm"' in pixels
        # Sizes that the model does not accept as they are: tiling must pad.
        assert any((s - MIN_SIZE) % STEP for s in data.shape)
    assert found == {
        "nuclei_small.ome.tif": ((300, 400), np.dtype("uint16"), True),
        "nuclei_large.ome.tif": ((700, 500), np.dtype("uint16"), True),
        "nuclei_plain.tif": ((250, 330), np.dtype("uint8"), False),
    }


# ------------------------------------------------------------------ reproducibility


def _without_checksums(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_checksums(v) for k, v in node.items() if k != "sha256"}
    if isinstance(node, list):
        return [_without_checksums(v) for v in node]
    return node


def test_build_script_reproduces_the_committed_files(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--out", str(out), "--no-validate"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    committed = demo_model_dir().parent
    rebuilt_files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    committed_files = sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    assert rebuilt_files == committed_files

    hint = "the committed demo differs from tools/build_demo.py's output: rebuild it"
    # Files that do not depend on ONNX Runtime's arithmetic are identical byte for byte.
    for name in ("weights.onnx", "test_input.npy", "sample_input.png", "README.md"):
        assert (out / "model" / name).read_bytes() == (committed / "model" / name).read_bytes(), (
            f"{name}: {hint}"
        )
    # Outputs may differ in the last bits between CPUs.
    for name in ("test_output_probability.npy", "test_output_mask.npy"):
        np.testing.assert_allclose(
            np.load(out / "model" / name), np.load(committed / "model" / name), atol=1e-6
        )
    yaml = YAML(typ="safe", pure=True)
    rebuilt_yaml = yaml.load((out / "model" / "bioimageio.yaml").read_text(encoding="utf-8"))
    committed_yaml = yaml.load(demo_model_path().read_text(encoding="utf-8"))
    assert _without_checksums(rebuilt_yaml) == _without_checksums(committed_yaml), hint
    for name in ("nuclei_small.ome.tif", "nuclei_large.ome.tif", "nuclei_plain.tif"):
        with (
            tifffile.TiffFile(out / "samples" / name) as new,
            tifffile.TiffFile(committed / "samples" / name) as old,
        ):
            np.testing.assert_array_equal(new.asarray(), old.asarray())
            assert new.ome_metadata == old.ome_metadata
