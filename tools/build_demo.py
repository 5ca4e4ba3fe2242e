"""Build ZooDesk's built-in demo model and sample images.

Run by developers, never at install time; its output is committed under
``app/zoodesk/resources/demo``::

    .venv/bin/python tools/build_demo.py            # rebuild in place and validate
    .venv/bin/python tools/build_demo.py --out DIR  # build elsewhere (tests do this)

The demo model is a bioimage.io (format 0.5) package whose ONNX graph is written
here with ``onnx.helper``: a fixed difference-of-Gaussians band-pass filter that
responds to bright round spots (nuclei-like blobs).  Nothing is trained, so the
package is small, needs no network and is rebuilt identically from this file.

Everything in the package is computed here, independently of ``app/zoodesk``: the
test outputs come from ONNX Runtime plus a plain numpy implementation of the
described pre- and postprocessing, so that ZooDesk's own engine can be checked
against them.  The output is deterministic: the same numpy, onnx and tifffile
versions write byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import tifffile
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from ruyaml import YAML

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "app" / "zoodesk" / "resources" / "demo"

# ----------------------------------------------------------------------------- model

MODEL_ID = "zoodesk-demo-blobs"
MODEL_NAME = "ZooDesk demo blob detector"
MODEL_VERSION = "0.1.0"
# A fixed timestamp keeps the description reproducible byte for byte.
MODEL_TIMESTAMP = "2025-01-01T00:00:00Z"

#: Standard deviations (pixels) of the two Gaussians of the band-pass filter.
SIGMA_SMALL = 1.5
SIGMA_LARGE = 5.0
#: Both separable kernels have 2 * RADIUS + 1 taps; it is also the output halo, as
#: an output pixel depends on input pixels up to RADIUS away.
RADIUS = 16
#: Filter response (in units of the percentile-normalised input) that separates
#: blob from background: the logit is GAIN * (response - THRESHOLD).
THRESHOLD = 0.06
GAIN = 80.0
#: Percentile normalisation of the input, over the whole sample.
MIN_PERCENTILE = 1.0
MAX_PERCENTILE = 99.8
SCALE_RANGE_EPS = 1e-6
#: Parameterised spatial size: MIN_SIZE + n * STEP.
MIN_SIZE = 64
STEP = 16

OPSET = 17
# IR version 8 goes with opset 17 and loads in every ONNX Runtime ZooDesk ships with
# (the DirectML build on Windows lags behind the CPU/CUDA releases).
IR_VERSION = 8

TEST_SHAPE = (128, 128)
TEST_SEED = 20250101

# --------------------------------------------------------------------------- samples

#: Pixel size written into the OME-TIFF samples (micrometres).
PIXEL_SIZE_UM = 0.325


@dataclass(frozen=True)
class SampleImage:
    """One synthetic sample image written to ``samples/``."""

    file_name: str
    shape: tuple[int, int]
    n_blobs: int
    seed: int
    dtype: str
    ome: bool
    #: Camera offset, mean background photons and range of spot peak photons.
    offset: float
    background: float
    amplitude: tuple[float, float]


SAMPLES = (
    # Sizes that are not MIN_SIZE + n * STEP, so that padding and tiling are exercised.
    SampleImage("nuclei_small.ome.tif", (300, 400), 45, 101, "uint16", True, 100, 10, (60, 250)),
    SampleImage("nuclei_large.ome.tif", (700, 500), 130, 202, "uint16", True, 100, 10, (60, 250)),
    SampleImage("nuclei_plain.tif", (250, 330), 35, 303, "uint8", False, 10, 8, (40, 180)),
)

# --------------------------------------------------------------------------- filters


def gaussian_kernel(sigma: float, radius: int) -> NDArray[np.float64]:
    """A normalised 1-d Gaussian with ``2 * radius + 1`` taps (as scipy.ndimage builds it)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def build_onnx_model() -> onnx.ModelProto:
    """The blob detector as an ONNX graph: separable Gaussians, difference, affine.

    ``raw`` (batch, 1, y, x) -> two Gaussian blurs (one 2-channel Conv along y, one
    grouped Conv along x) -> a 1x1 Conv forming ``GAIN * (small - large - THRESHOLD)``.
    Zero padding keeps the output the size of the input; batch and spatial sizes are
    dynamic.  The same logit is returned twice, as ``probability`` and ``mask``,
    which differ only in the postprocessing the description declares.
    """
    kernels = np.stack(
        [gaussian_kernel(SIGMA_SMALL, RADIUS), gaussian_kernel(SIGMA_LARGE, RADIUS)]
    ).astype(np.float32)
    taps = 2 * RADIUS + 1
    w_y = kernels.reshape(2, 1, taps, 1)
    w_x = kernels.reshape(2, 1, 1, taps)
    w_dog = np.array([GAIN, -GAIN], dtype=np.float32).reshape(1, 2, 1, 1)
    b_dog = np.array([-GAIN * THRESHOLD], dtype=np.float32)
    initializers = [
        numpy_helper.from_array(w_y, "gauss_y"),
        numpy_helper.from_array(w_x, "gauss_x"),
        numpy_helper.from_array(w_dog, "dog_weight"),
        numpy_helper.from_array(b_dog, "dog_bias"),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["raw", "gauss_y"],
            ["blur_y"],
            name="blur_y",
            kernel_shape=[taps, 1],
            pads=[RADIUS, 0, RADIUS, 0],
        ),
        helper.make_node(
            "Conv",
            ["blur_y", "gauss_x"],
            ["blur_yx"],
            name="blur_x",
            kernel_shape=[1, taps],
            pads=[0, RADIUS, 0, RADIUS],
            group=2,
        ),
        helper.make_node(
            "Conv",
            ["blur_yx", "dog_weight", "dog_bias"],
            ["logit"],
            name="difference_of_gaussians",
            kernel_shape=[1, 1],
        ),
        helper.make_node("Identity", ["logit"], ["probability"], name="probability"),
        helper.make_node("Identity", ["logit"], ["mask"], name="mask"),
    ]
    dims: list[str | int] = ["batch", 1, "y", "x"]
    graph = helper.make_graph(
        nodes,
        "zoodesk_demo_blobs",
        inputs=[helper.make_tensor_value_info("raw", TensorProto.FLOAT, dims)],
        outputs=[
            helper.make_tensor_value_info("probability", TensorProto.FLOAT, dims),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, dims),
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="zoodesk tools/build_demo.py",
        producer_version=MODEL_VERSION,
        doc_string=(
            f"Difference of Gaussians (sigma {SIGMA_SMALL} and {SIGMA_LARGE} px, radius "
            f"{RADIUS}) scaled to a logit: {GAIN} * (response - {THRESHOLD})."
        ),
    )
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------- reference pre/postprocessing


def preprocess(raw: NDArray[Any]) -> NDArray[np.float32]:
    """ensure_dtype float32, scale_range over (y, x) of each sample, ensure_dtype float32."""
    x = raw.astype(np.float32)
    lower = np.percentile(x, MIN_PERCENTILE, axis=(-2, -1), keepdims=True)
    upper = np.percentile(x, MAX_PERCENTILE, axis=(-2, -1), keepdims=True)
    return ((x - lower) / (upper - lower + SCALE_RANGE_EPS)).astype(np.float32)


def sigmoid(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """The logistic function, computed in float32 like the model's postprocessing."""
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def run_model(model: onnx.ModelProto, raw: NDArray[Any]) -> dict[str, NDArray[Any]]:
    """Preprocess, run the graph with ONNX Runtime (CPU), postprocess both outputs."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    probability_logit, mask_logit = session.run(None, {"raw": preprocess(raw)})
    return {
        "probability": sigmoid(probability_logit),
        "mask": (sigmoid(mask_logit) > 0.5).astype(np.uint8),
    }


# ------------------------------------------------------------------- synthetic data


def synthetic_image(
    shape: tuple[int, int],
    n_blobs: int,
    seed: int,
    *,
    offset: float,
    background: float,
    amplitude: tuple[float, float],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Camera counts of bright, slightly elongated Gaussian spots on an uneven background.

    Returns ``offset`` plus Poisson draws of the expected photons, and the (n, 3) array
    of the planted spots' centres (y, x) and sigmas.  Spots do not overlap much:
    centres are drawn at least 3 sigmas apart.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # Uneven illumination: brighter towards one corner, as under a real lamp.
    distance2 = (yy - 0.3 * h) ** 2 + (xx - 0.7 * w) ** 2
    photons = background * (0.7 + 0.6 * np.exp(-distance2 / (2 * (0.7 * max(h, w)) ** 2)))
    centres: list[tuple[float, float, float]] = []
    attempts = 0
    while len(centres) < n_blobs and attempts < 50 * n_blobs:
        attempts += 1
        sigma = rng.uniform(2.5, 4.0)
        cy, cx = rng.uniform(2 * sigma, h - 2 * sigma), rng.uniform(2 * sigma, w - 2 * sigma)
        if any((cy - y) ** 2 + (cx - x) ** 2 < (3 * max(sigma, s)) ** 2 for y, x, s in centres):
            continue
        elongation = rng.uniform(1.0, 1.3)
        angle = rng.uniform(0, np.pi)
        peak = rng.uniform(*amplitude)
        r = int(np.ceil(5 * sigma * elongation))
        y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 1)
        x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 1)
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        u = dy * np.cos(angle) + dx * np.sin(angle)
        v = -dy * np.sin(angle) + dx * np.cos(angle)
        photons[y0:y1, x0:x1] += peak * np.exp(
            -0.5 * ((u / (sigma * elongation)) ** 2 + (v / (sigma / elongation)) ** 2)
        )
        centres.append((cy, cx, sigma))
    # np.exp may differ in the last bit between CPUs (SIMD code paths); rounding the
    # expected counts first makes the Poisson draws, and so the files, the same everywhere.
    counts = offset + rng.poisson(np.round(photons, 6))
    return counts.astype(np.float64), np.array(centres, dtype=np.float64)


def make_test_input() -> NDArray[np.float32]:
    """The 1x1xYxX float32 test input (camera-like counts)."""
    counts, _ = synthetic_image(
        TEST_SHAPE, 10, TEST_SEED, offset=100.0, background=10.0, amplitude=(60.0, 250.0)
    )
    return counts.astype(np.float32)[np.newaxis, np.newaxis]


# -------------------------------------------------------------------------- writing


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def to_uint8(image: NDArray[Any]) -> NDArray[np.uint8]:
    """Contrast-stretch an image (1st to 99.8th percentile) to 8 bits for display."""
    lo, hi = np.percentile(image, [MIN_PERCENTILE, MAX_PERCENTILE])
    scaled = np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def write_png(path: Path, image: NDArray[Any]) -> None:
    """Write a 2-d (gray) or 3-d (RGB) array as PNG; Pillow adds no timestamp."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    path.write_bytes(buffer.getvalue())


def write_cover(path: Path, raw: NDArray[Any], probability: NDArray[Any]) -> None:
    """Input | input with the probability overlaid in magenta, 2:1, doubled in size."""
    gray = to_uint8(raw).astype(np.float32)
    alpha = 0.7 * probability.astype(np.float32)
    magenta = np.array([255.0, 0.0, 200.0], dtype=np.float32)
    left = np.repeat(gray[..., np.newaxis], 3, axis=-1)
    right = (1.0 - alpha[..., np.newaxis]) * left + alpha[..., np.newaxis] * magenta
    cover = np.concatenate([left, right], axis=1)
    width = gray.shape[1]
    # A white line between the panels, drawn over them to keep the cover exactly 2:1.
    cover[:, width - 1 : width + 1] = 255.0
    cover = np.clip(np.round(cover), 0, 255).astype(np.uint8)
    write_png(path, np.kron(cover, np.ones((2, 2, 1), dtype=np.uint8)))


def readme_text() -> str:
    """The model's documentation (README.md)."""
    return f"""# {MODEL_NAME}

A tiny model that ships with ZooDesk so that the whole prediction flow (load a
model, read images, preprocess, tile, run ONNX Runtime, postprocess, write
OME-TIFF) can be tried on a fresh installation without network access.

**It is not trained and not meant for research use.** It is a fixed band-pass
filter that marks bright round spots, such as small nuclei or nucleoli in a
fluorescence image, of roughly 5 to 12 pixels in diameter.

## What it computes

1. Preprocessing: the input is converted to float32 and scaled so that its
   {MIN_PERCENTILE:g}st percentile maps to 0 and its {MAX_PERCENTILE:g}th percentile to 1
   (statistics over the whole image, `scale_range` over axes x and y).
2. The ONNX graph computes a difference of Gaussians (standard deviations
   {SIGMA_SMALL:g} and {SIGMA_LARGE:g} pixels, separable kernels of {2 * RADIUS + 1} taps, zero
   padding) and turns it into a logit: `{GAIN:g} * (response - {THRESHOLD:g})`.
3. Postprocessing:
   - `probability`: the sigmoid of the logit, in [0, 1];
   - `mask`: the sigmoid thresholded at 0.5, as uint8 (1 inside a spot, 0 outside).

Every output pixel depends on input pixels up to {RADIUS} pixels away, hence the
declared halo of {RADIUS} pixels. Input height and width may be any
{MIN_SIZE} + n * {STEP} pixels; the output has the size of the input.

## Validation

The filter has no trained parameters to validate. `tools/build_demo.py` checks that
the ONNX graph agrees with the same difference of Gaussians computed with
scipy.ndimage, that the mask covers the centres of the spots planted in synthetic
images and little of their background, and that bioimage.io's own model test
(bioimageio.core `test_model`) passes on this package. To judge it on your data,
compare the mask with a manual annotation of a few images.

## Limitations

Objects much larger than about 25 pixels across are only found at their rim, and
touching objects merge. Textured or very dim objects are missed.

## Files

The graph, the test tensors (a synthetic image of Gaussian spots with Poisson
noise, and the outputs computed with ONNX Runtime), the sample images and the
cover are all generated by `tools/build_demo.py` in the ZooDesk repository.

## License

MIT, like ZooDesk.
"""


def yaml_dump(data: dict[str, Any], path: Path) -> None:
    """Write YAML keeping the insertion order of keys."""
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.indent(mapping=2, sequence=4, offset=2)
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="\n")


def _file(folder: Path, name: str) -> dict[str, str]:
    return {"source": name, "sha256": sha256_of(folder / name)}


def _space_axes_output() -> list[dict[str, Any]]:
    return [
        {"type": "space", "id": axis, "size": {"tensor_id": "raw", "axis_id": axis}, "halo": RADIUS}
        for axis in ("y", "x")
    ]


def description(folder: Path) -> dict[str, Any]:
    """The bioimage.io description, with checksums of the files already in ``folder``."""
    return {
        "type": "model",
        "format_version": "0.5.4",
        "id": MODEL_ID,
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "description": (
            "Marks bright round spots (nuclei-like blobs) with a fixed difference-of-Gaussians "
            "filter. Built into ZooDesk to try the prediction flow offline; not trained, "
            "not for research use."
        ),
        "authors": [{"name": "ZooDesk developers"}],
        "cite": [
            {
                "text": "Marr, D. and Hildreth, E. Theory of edge detection. "
                "Proc. R. Soc. Lond. B 207, 187-217 (1980).",
                "doi": "10.1098/rspb.1980.0020",
            }
        ],
        "license": "MIT",
        "documentation": "README.md",
        "covers": ["cover.png"],
        "tags": [
            "zoodesk",
            "demo",
            "2d",
            "fluorescence-light-microscopy",
            "nuclei",
            "blob-detection",
            "difference-of-gaussians",
            "onnx",
        ],
        "timestamp": MODEL_TIMESTAMP,
        "inputs": [
            {
                "id": "raw",
                "description": "fluorescence image, one channel (any intensity range)",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["raw_intensity"]},
                    *(
                        {"type": "space", "id": axis, "size": {"min": MIN_SIZE, "step": STEP}}
                        for axis in ("y", "x")
                    ),
                ],
                "test_tensor": _file(folder, "test_input.npy"),
                "sample_tensor": _file(folder, "sample_input.png"),
                "data": {"type": "float32"},
                "preprocessing": [
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                    {
                        "id": "scale_range",
                        "kwargs": {
                            "axes": ["x", "y"],
                            "min_percentile": MIN_PERCENTILE,
                            "max_percentile": MAX_PERCENTILE,
                        },
                    },
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                ],
            }
        ],
        "outputs": [
            {
                "id": "probability",
                "description": "probability of being inside a bright spot",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["probability"]},
                    *_space_axes_output(),
                ],
                "test_tensor": _file(folder, "test_output_probability.npy"),
                "sample_tensor": _file(folder, "sample_output_probability.png"),
                "data": {"type": "float32", "range": [0.0, 1.0]},
                "postprocessing": [
                    {"id": "sigmoid"},
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                ],
            },
            {
                "id": "mask",
                "description": "1 inside a bright spot, 0 elsewhere",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["mask"]},
                    *_space_axes_output(),
                ],
                "test_tensor": _file(folder, "test_output_mask.npy"),
                "sample_tensor": _file(folder, "sample_output_mask.png"),
                "data": {"type": "uint8", "values": [0, 1]},
                "postprocessing": [
                    {"id": "sigmoid"},
                    {"id": "binarize", "kwargs": {"threshold": 0.5}},
                    {"id": "ensure_dtype", "kwargs": {"dtype": "uint8"}},
                ],
            },
        ],
        "weights": {
            "onnx": {
                **_file(folder, "weights.onnx"),
                "opset_version": OPSET,
                "comment": "Written with onnx.helper by tools/build_demo.py (no training).",
            }
        },
    }


def write_model(folder: Path) -> None:
    """Write the model package (weights, test/sample tensors, cover, README, description)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = build_onnx_model()
    (folder / "weights.onnx").write_bytes(model.SerializeToString())

    raw = make_test_input()
    outputs = run_model(model, raw)
    np.save(folder / "test_input.npy", raw)
    np.save(folder / "test_output_probability.npy", outputs["probability"])
    np.save(folder / "test_output_mask.npy", outputs["mask"])

    # Counts are whole numbers below 2**16: the 16-bit PNG holds them exactly.
    write_png(folder / "sample_input.png", raw[0, 0].astype(np.uint16))
    write_png(
        folder / "sample_output_probability.png",
        np.round(outputs["probability"][0, 0] * 255).astype(np.uint8),
    )
    write_png(folder / "sample_output_mask.png", outputs["mask"][0, 0] * np.uint8(255))
    write_cover(folder / "cover.png", raw[0, 0], outputs["probability"][0, 0])
    (folder / "README.md").write_text(readme_text(), encoding="utf-8", newline="\n")
    yaml_dump(description(folder), folder / "bioimageio.yaml")


def write_samples(folder: Path) -> None:
    """Write the sample images: two OME-TIFFs with pixel sizes and one plain TIFF."""
    folder.mkdir(parents=True, exist_ok=True)
    for sample in SAMPLES:
        counts, _ = synthetic_image(
            sample.shape,
            sample.n_blobs,
            sample.seed,
            offset=sample.offset,
            background=sample.background,
            amplitude=sample.amplitude,
        )
        info = np.iinfo(sample.dtype)
        data = np.clip(counts, info.min, info.max).astype(sample.dtype)
        path = folder / sample.file_name
        if sample.ome:
            # A fixed UUID and creator: tifffile otherwise writes a random UUID and
            # its own version, and the files would differ on every build.
            metadata = {
                "axes": "YX",
                "Name": Path(sample.file_name).stem.removesuffix(".ome"),
                "UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"zoodesk-demo/{sample.file_name}")),
                "Creator": "ZooDesk tools/build_demo.py",
                "PhysicalSizeX": PIXEL_SIZE_UM,
                "PhysicalSizeXUnit": "µm",
                "PhysicalSizeY": PIXEL_SIZE_UM,
                "PhysicalSizeYUnit": "µm",
            }
            tifffile.imwrite(
                path,
                data,
                ome=True,
                metadata=metadata,
                photometric="minisblack",
                compression="zlib",
                predictor=True,
                software="ZooDesk tools/build_demo.py",
            )
        else:
            tifffile.imwrite(
                path,
                data,
                photometric="minisblack",
                compression="zlib",
                predictor=True,
                metadata=None,
                software="ZooDesk tools/build_demo.py",
            )


def validate(model_folder: Path) -> None:
    """Validate the description with bioimageio.spec and run bioimageio.core's test."""
    from bioimageio.core import test_model
    from bioimageio.spec import load_model_description

    description_path = model_folder / "bioimageio.yaml"
    descr = load_model_description(description_path, perform_io_checks=True)
    if descr.validation_summary.status not in ("valid-format", "passed"):
        descr.validation_summary.display()
        raise SystemExit(f"{description_path}: invalid bioimage.io description")
    summary = test_model(description_path)
    if summary.status != "passed":
        summary.display()
        raise SystemExit(f"{description_path}: bioimageio.core test_model: {summary.status}")
    print(f"{description_path}: {type(descr).__name__} valid, test_model {summary.status}")


def main(argv: list[str] | None = None) -> int:
    """Build the demo model and samples into ``--out`` (default: the package resources)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument(
        "--no-validate", action="store_true", help="skip bioimageio.spec/core validation"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    model_folder, samples_folder = out / "model", out / "samples"
    # Start from empty folders so that no stale file survives a rebuild.
    for folder in (model_folder, samples_folder):
        if folder.exists():
            shutil.rmtree(folder)
    write_model(model_folder)
    write_samples(samples_folder)
    if not args.no_validate:
        validate(model_folder)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
