"""The real zoo model (UNet 2D nuclei broad) through the whole engine and CLI."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from zoodesk.cli import main
from zoodesk.inference.predict import Predictor
from zoodesk.inference.reproducibility import run_reproducibility_test
from zoodesk.models.package import load_model_package


def _run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_models_test_passes_on_cpu_within_1e4(
    nuclei_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = _run_json(capsys, ["models", "test", str(nuclei_dir), "--device", "cpu", "--json"])
    assert code == 0
    assert doc["passed"] is True
    assert doc["device"] == "cpu"
    assert doc["weights_format"] == "onnx"
    [output] = doc["outputs"]
    assert output["output_id"] == "probability"
    assert output["max_abs_diff"] <= 1e-4


def test_models_test_human_output_names_each_output(
    nuclei_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "test", str(nuclei_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "probability: ok: max abs diff" in out
    assert "passed" in out


def test_format_04_description_runs_the_same(nuclei_dir: Path) -> None:
    package = load_model_package(nuclei_dir / "v0_4_9.bioimageio.yaml")
    report = run_reproducibility_test(package, device="cpu")
    assert report.passed
    assert report.outputs[0].max_abs_diff <= 1e-4


def test_package_from_zip(nuclei_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "nuclei.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in nuclei_dir.iterdir():
            zf.write(f, f.name)
    package = load_model_package(archive)
    assert package.spec.name == "UNet 2D Nuclei Broad"
    assert run_reproducibility_test(package, device="cpu").passed


def test_a_damaged_weights_file_is_refused(nuclei_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "nuclei"
    shutil.copytree(nuclei_dir, copy)
    weights = copy / "weights.onnx"
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    from zoodesk.errors import ChecksumError

    with pytest.raises(ChecksumError, match=r"weights\.onnx: sha256 mismatch"):
        Predictor(load_model_package(copy), device="cpu")


def test_predict_reproduces_the_test_output_from_npy_and_tiff(
    nuclei_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_input = np.load(nuclei_dir / "test_input.npy")
    expected = np.load(nuclei_dir / "test_output.npy")[0, 0]
    inputs = tmp_path / "in"
    inputs.mkdir()
    np.save(inputs / "sample_npy.npy", test_input[0, 0])
    tifffile.imwrite(inputs / "sample_tif.tif", test_input[0, 0].astype(np.float32))
    code, doc = _run_json(
        capsys,
        [
            "predict",
            "--model",
            str(nuclei_dir),
            "--input",
            str(inputs),
            "--output",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert code == 0
    assert doc["device"] == "cpu"
    assert doc["weights_format"] == "onnx"
    assert [Path(f["input"]).name for f in doc["files"]] == ["sample_npy.npy", "sample_tif.tif"]
    for f in doc["files"]:
        assert f["status"] == "ok"
        assert f["error"] is None
        [out_path] = f["outputs"]
        with tifffile.TiffFile(out_path) as tif:
            assert tif.is_ome
            result = tif.asarray()
            ome = tif.ome_metadata
        # One channel, named after the model's output channel; OME readers squeeze it.
        assert 'SizeC="1"' in ome and 'Name="probability"' in ome
        assert result.dtype == np.float32
        np.testing.assert_allclose(result, expected, atol=1e-4)


@pytest.mark.parametrize("shape", [(700, 900), (1500, 1300)])
def test_images_larger_than_the_fixed_shape_keep_their_size(
    nuclei_dir: Path, tmp_path: Path, shape: tuple[int, int]
) -> None:
    rng = np.random.default_rng(0)
    image = (rng.random(shape) * 1000).astype(np.uint16)
    src = tmp_path / f"big_{shape[0]}x{shape[1]}.tif"
    tifffile.imwrite(
        src, image, resolution=(1 / 0.5, 1 / 0.5), metadata={"unit": "um"}, imagej=True
    )
    out = tmp_path / "out"
    code = main(
        ["predict", "-m", str(nuclei_dir), "-i", str(src), "-o", str(out), "--device", "cpu", "-q"]
    )
    assert code == 0
    [result_path] = sorted(out.glob("*.ome.tif"))
    with tifffile.TiffFile(result_path) as tif:
        result = tif.asarray()
        ome = tif.ome_metadata
    assert result.shape == shape
    assert result.min() >= 0.0 and result.max() <= 1.0
    assert 'PhysicalSizeX="0.5"' in ome and 'PhysicalSizeY="0.5"' in ome


def test_tiles_use_whole_image_statistics(nuclei_dir: Path) -> None:
    # The first 512x512 block of a tiled 700x900 run, normalised with the mean/std of
    # the WHOLE image and run through ONNX Runtime directly, must give exactly the
    # stitched output in the part that block owns (everything but its inner halo).
    import onnxruntime as ort
    from scipy import ndimage

    rng = np.random.default_rng(3)
    image = ndimage.gaussian_filter(rng.random((700, 900)), 4).astype(np.float32) * 1000
    predictor = Predictor(load_model_package(nuclei_dir), device="cpu")
    tiled = predictor.predict({"raw": image[None, None]}).outputs["probability"][0, 0]
    assert tiled.shape == (700, 900)

    normalised = (image - image.mean()) / (image.std() + 1e-6)
    session = ort.InferenceSession(
        str(nuclei_dir / "weights.onnx"), providers=["CPUExecutionProvider"]
    )
    logits = session.run(None, {session.get_inputs()[0].name: normalised[None, None, :512, :512]})[
        0
    ]
    block = 1 / (1 + np.exp(-logits[0, 0]))
    np.testing.assert_allclose(tiled[:480, :480], block[:480, :480], atol=1e-4)
    # Per-tile statistics would have given something else.
    crop = image[:512, :512]
    per_tile = (crop - crop.mean()) / (crop.std() + 1e-6)
    other = session.run(None, {session.get_inputs()[0].name: per_tile[None, None]})[0]
    assert np.abs(1 / (1 + np.exp(-other[0, 0]))[:480, :480] - tiled[:480, :480]).max() > 1e-3
