"""Weights conversion to ONNX: consent, the separate process, accepted sizes, the test gate.

Tests marked ``torch`` need the optional ``convert`` extra; torch is never imported
by the test process itself (packages are built with torch in a subprocess), just as
ZooDesk imports it only in its conversion worker.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from tests import onnx_factory, yaml_writer
from zoodesk.cli import main
from zoodesk.conversion import pipeline as convert_module
from zoodesk.conversion.pipeline import (
    ConsentRequiredError,
    ConversionError,
    ConversionTestError,
    TorchMissingError,
    convert,
    probe_input_sizes,
)
from zoodesk.errors import CancelledError
from zoodesk.inference.predict import Predictor
from zoodesk.models import ModelCache, resolve_model
from zoodesk.models.cache import MANIFEST_NAME
from zoodesk.models.package import load_model_package

# find_spec locates torch without importing it.
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(
    not HAS_TORCH, reason="needs torch: pip install 'zoodesk[convert]'"
)

MARKER_ENV = "ZOODESK_TEST_ARCH_MARKER"

#: Architecture code shipped in the test packages.  Importing it leaves a marker file
#: (when told where), so a test can tell whether package code was executed.
TINY_NET = '''\
import os
from pathlib import Path

import torch
from torch import nn

if os.environ.get("ZOODESK_TEST_ARCH_MARKER"):
    Path(os.environ["ZOODESK_TEST_ARCH_MARKER"]).write_text("imported")


class TinyNet(nn.Module):
    """conv, 2x2 max pooling, conv, 2x upsampling: even sizes in, same sizes out."""

    def __init__(self, channels=4):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(channels, 1, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        return self.up(self.conv2(torch.relu(self.pool(self.conv1(x)))))
'''

#: Run with torch in a subprocess: builds TinyNet's weights and its test tensors.
BUILDER = """\
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

out = Path(sys.argv[1])
# Imported from its file: torch.jit.script reads the source of the class.
spec = importlib.util.spec_from_file_location("tiny_net", out / "tiny_net.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
torch.manual_seed(0)
model = module.TinyNet(channels=4).eval()
x = np.random.default_rng(0).standard_normal((1, 1, 64, 64)).astype(np.float32)
with torch.no_grad():
    y = model(torch.from_numpy(x)).numpy()
np.save(out / "input.npy", x)
np.save(out / "output.npy", y)
torch.save(model.state_dict(), out / "state_dict.pt")
torch.jit.script(model).save(str(out / "scripted.pt"))
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _folder_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _sha(p) for p in folder.rglob("*") if p.is_file()}


def _hidden_entries(cache_root: Path) -> list[str]:
    return sorted(p.name for p in cache_root.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TinyNet's state dict, scripted module and test tensors, made with torch."""
    if not HAS_TORCH:
        pytest.skip("needs torch")
    out = tmp_path_factory.mktemp("tiny-weights")
    (out / "tiny_net.py").write_text(TINY_NET)
    env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
    subprocess.run([sys.executable, "-c", BUILDER, str(out)], check=True, env=env, timeout=300)
    return out


def _tiny_package(
    folder: Path,
    built: Path | None,
    kind: str,
    *,
    tamper: float = 0.0,
) -> Path:
    """A 0.5 package of TinyNet with ``kind`` weights (fixed 64x64 input declared).

    Without ``built`` the weights and tensors are stand-ins (enough for the checks
    that happen before anything is loaded).
    """
    folder.mkdir(parents=True)
    (folder / "tiny_net.py").write_text(TINY_NET)
    weights_name = "weights.pt" if kind == "pytorch_state_dict" else "scripted.pt"
    if built is not None:
        shutil.copyfile(
            built / ("state_dict.pt" if kind == "pytorch_state_dict" else "scripted.pt"),
            folder / weights_name,
        )
        x = np.load(built / "input.npy")
        y = np.load(built / "output.npy") + np.float32(tamper)
    else:
        (folder / weights_name).write_bytes(b"stand-in weights, never loaded")
        x = np.zeros((1, 1, 64, 64), np.float32)
        y = np.zeros((1, 1, 64, 64), np.float32)
    np.save(folder / "test_input.npy", x)
    np.save(folder / "test_output.npy", y)
    (folder / "README.md").write_text("# tiny net\n\nBuilt by the test-suite.\n")
    space = [
        {"type": "space", "id": "y", "size": 64},
        {"type": "space", "id": "x", "size": 64},
    ]
    weights: dict[str, Any] = {
        "source": weights_name,
        "sha256": _sha(folder / weights_name),
        "pytorch_version": "2.13",
    }
    if kind == "pytorch_state_dict":
        weights["architecture"] = {
            "source": "tiny_net.py",
            "sha256": _sha(folder / "tiny_net.py"),
            "callable": "TinyNet",
            "kwargs": {"channels": 4},
        }
    descr = {
        "format_version": "0.5.4",
        "type": "model",
        "name": f"tiny {kind} net",
        "description": "A small PyTorch model built by the test-suite.",
        "authors": [{"name": "Test Suite"}],
        "cite": [{"text": "test", "url": "https://example.com/"}],
        "license": "MIT",
        "documentation": "README.md",
        "timestamp": "2026-01-01T00:00:00",
        "inputs": [
            {
                "id": "raw",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["intensity"]},
                    *space,
                ],
                "test_tensor": {
                    "source": "test_input.npy",
                    "sha256": _sha(folder / "test_input.npy"),
                },
            }
        ],
        "outputs": [
            {
                "id": "out",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["prediction"]},
                    {"type": "space", "id": "y", "size": {"tensor_id": "raw", "axis_id": "y"}},
                    {"type": "space", "id": "x", "size": {"tensor_id": "raw", "axis_id": "x"}},
                ],
                "test_tensor": {
                    "source": "test_output.npy",
                    "sha256": _sha(folder / "test_output.npy"),
                },
            }
        ],
        "weights": {kind: weights},
    }
    yaml_writer.dump(descr, folder / "bioimageio.yaml")
    return folder


# ---------------------------------------------------------------- without torch


def test_state_dict_needs_consent_and_names_the_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "architecture-imported"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    package = _tiny_package(tmp_path / "pkg", None, "pytorch_state_dict")
    cache = ModelCache.from_settings()
    model = cache.import_package(package)
    before = _folder_digest(model.root)

    with pytest.raises(ConsentRequiredError) as info:
        convert(model.key)
    assert info.value.code == str(model.root / "tiny_net.py")
    assert "tiny_net.py" in str(info.value) and "--trust-code" in str(info.value)

    assert main(["models", "convert", model.key]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and str(model.root / "tiny_net.py") in err.replace("\n", "")
    assert not marker.exists()
    assert _folder_digest(model.root) == before
    assert _hidden_entries(cache.root) == []


def test_a_path_is_checked_before_it_is_imported(tmp_path: Path) -> None:
    package = _tiny_package(tmp_path / "pkg", None, "pytorch_state_dict")
    with pytest.raises(ConsentRequiredError):
        convert(package)
    assert ModelCache.from_settings().list() == []


def test_missing_torch_is_reported_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ModelCache.from_settings().import_package(
        _tiny_package(tmp_path / "pkg", None, "torchscript")
    )
    monkeypatch.setattr(convert_module, "can_convert", lambda _fmt: False)
    with pytest.raises(TorchMissingError, match="install the convert extra"):
        convert(model.key)


def test_worker_without_torch_says_install_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in torch that fails to import shadows any real one in the worker only.
    fake = tmp_path / "fake-site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError('torch stand-in: not installed', name='torch')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    monkeypatch.setattr(convert_module, "can_convert", lambda _fmt: True)
    cache = ModelCache.from_settings()
    model = cache.import_package(_tiny_package(tmp_path / "pkg", None, "torchscript"))
    before = _folder_digest(model.root)
    with pytest.raises(TorchMissingError) as info:
        convert(model.key)
    assert "install the convert extra" in str(info.value)
    assert "torch stand-in" in str(info.value)
    assert _folder_digest(model.root) == before
    assert _hidden_entries(cache.root) == []


def test_a_torch_that_fails_to_import_is_not_called_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake-site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import torch._no_such_part\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    monkeypatch.setattr(convert_module, "can_convert", lambda _fmt: True)
    model = ModelCache.from_settings().import_package(
        _tiny_package(tmp_path / "pkg", None, "torchscript")
    )
    with pytest.raises(ConversionError) as info:
        convert(model.key)
    assert not isinstance(info.value, TorchMissingError)
    assert "torch is installed but fails to import" in str(info.value)
    assert "torch._no_such_part" in str(info.value)


def test_existing_onnx_weights_are_kept_unless_replace(nuclei_dir: Path) -> None:
    model = ModelCache.from_settings().import_package(nuclei_dir)
    with pytest.raises(ConversionError, match="--replace"):
        convert(model.key)


def test_cancel_stops_the_worker_and_leaves_the_cache_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(convert_module, "can_convert", lambda _fmt: True)
    cache = ModelCache.from_settings()
    model = cache.import_package(_tiny_package(tmp_path / "pkg", None, "torchscript"))
    before = _folder_digest(model.root)
    stages = []
    with pytest.raises(CancelledError, match="cancelled"):
        for event in convert_module.convert_model(model.key, cancel=lambda: True):
            stages.append(event.stage)
    assert stages == ["prepare"]
    assert _folder_digest(model.root) == before
    assert _hidden_entries(cache.root) == []


# ------------------------------------------------- accepted sizes, without torch


def _conv_package(folder: Path, graph: str, *, declared: int = 64) -> Path:
    """A package whose description fixes the input at ``declared`` pixels."""
    folder.mkdir(parents=True)
    weights = folder / "model.onnx"
    if graph == "pool":
        onnx_factory.pool_model(weights)
        out_scale = 2.0
        out_size = declared // 2
    else:
        onnx_factory.conv_model(weights, fixed=(declared, declared) if graph == "fixed" else None)
        out_scale = 1.0
        out_size = declared
    rng = np.random.default_rng(1)
    x = rng.random((1, 1, declared, declared), dtype=np.float32)
    import onnxruntime as ort

    session = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
    y = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert y.shape[-1] == out_size
    space_in = [{"type": "space", "id": a, "size": declared} for a in ("y", "x")]
    space_out = [
        {"type": "space", "id": a, "scale": out_scale, "size": {"tensor_id": "raw", "axis_id": a}}
        for a in ("y", "x")
    ]
    onnx_factory.write_package(
        folder,
        weights,
        [
            {
                "id": "raw",
                "axes": [
                    {"type": "batch", "size": 1},
                    {"type": "channel", "channel_names": ["c"]},
                    *space_in,
                ],
            }
        ],
        [
            {
                "id": "out",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["c"]},
                    *space_out,
                ],
            }
        ],
        {"raw": x, "out": y},
    )
    return folder


def test_probe_finds_any_size_for_a_same_size_convolution(tmp_path: Path) -> None:
    package = load_model_package(_conv_package(tmp_path / "conv", "conv"))
    probe = probe_input_sizes(package.root / "model.onnx", package.spec, (1, 1, 64, 64))
    # A 3x3 convolution with zero padding takes any size, and any batch.
    assert probe.inputs == {
        "raw": {
            "y": {"min": 1, "step": 1},
            "x": {"min": 1, "step": 1},
            "batch": {"min": 1, "step": 1},
        }
    }
    assert probe.probes < 30


def test_probe_needs_whole_output_pixels(tmp_path: Path) -> None:
    package = load_model_package(_conv_package(tmp_path / "pool", "pool"))
    probe = probe_input_sizes(package.root / "model.onnx", package.spec, (1, 1, 64, 64))
    # 2x2 pooling with an output at half resolution: odd sizes give half pixels.
    assert probe.inputs["raw"]["y"] == {"min": 2, "step": 2}
    assert probe.inputs["raw"]["x"] == {"min": 2, "step": 2}


def test_probe_keeps_sizes_fixed_by_the_graph(tmp_path: Path) -> None:
    package = load_model_package(_conv_package(tmp_path / "fixed", "fixed"))
    probe = probe_input_sizes(package.root / "model.onnx", package.spec, (1, 1, 64, 64))
    assert "y" not in probe.inputs.get("raw", {})
    assert any("fixes the size of y, x" in n for n in probe.notes)


def _with_sizes_record(folder: Path, sha256: str) -> None:
    from ruyaml import YAML

    path = folder / "bioimageio.yaml"
    data = YAML(typ="safe").load(path.read_text())
    data["config"] = {
        "zoodesk": {
            "onnx_input_sizes": {
                "weights_sha256": sha256,
                "inputs": {"raw": {"y": {"min": 8, "step": 8}, "x": {"min": 8, "step": 8}}},
            }
        }
    }
    yaml_writer.dump(data, path)


def test_recorded_sizes_let_the_engine_tile_freely(tmp_path: Path) -> None:
    folder = _conv_package(tmp_path / "conv", "conv")
    declared = Predictor(load_model_package(folder), device="cpu").plan({"raw": (1, 1, 100, 70)})
    # As declared: 64x64 blocks only.
    assert declared.block_shape == {"y": 64, "x": 64} and declared.block_count > 1

    _with_sizes_record(folder, _sha(folder / "model.onnx"))
    package = load_model_package(folder)
    y_axis = package.spec.inputs[0].axis("y")
    assert (y_axis.size, y_axis.min, y_axis.step) == (None, 8, 8)
    assert package.spec.weights["onnx"].extra["input_sizes"]["raw"]["x"] == {"min": 8, "step": 8}
    predictor = Predictor(package, device="cpu")
    plan = predictor.plan({"raw": (1, 1, 100, 70)})
    assert plan.block_count == 1 and plan.block_shape == {"y": 104, "x": 72}
    image = np.random.default_rng(2).random((1, 1, 100, 70), dtype=np.float32)
    assert predictor.predict({"raw": image}).outputs["out"].shape == (1, 1, 100, 70)


def test_recorded_sizes_of_other_weights_are_ignored(tmp_path: Path) -> None:
    folder = _conv_package(tmp_path / "conv", "conv")
    _with_sizes_record(folder, "0" * 64)
    y_axis = load_model_package(folder).spec.inputs[0].axis("y")
    assert (y_axis.size, y_axis.min, y_axis.step) == (64, None, None)


# -------------------------------------------------------------------- with torch


@pytest.mark.torch
@pytest.mark.slow
@needs_torch
def test_nuclei_torchscript_to_dynamic_onnx(
    nuclei_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "import", str(nuclei_dir)]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    # The command runs in a process of its own, which must never import torch.
    script = (
        "import sys\nfrom zoodesk.cli import main\nrc = main(sys.argv[1:])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(rc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "models", "convert", key, "--replace", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["source_format"] == "torchscript" and report["installed"]
    assert report["passed"] and report["test"]["outputs"][0]["max_abs_diff"] <= 1e-4
    # Three 2x2 poolings: the UNet takes multiples of 8 (the description says 512 only).
    assert report["accepted_sizes"]["inputs"]["raw"]["y"] == {"min": 8, "step": 8}
    assert report["accepted_sizes"]["inputs"]["raw"]["x"] == {"min": 8, "step": 8}

    onnx_file = Path(report["output_file"])
    graph = onnx.load(str(onnx_file)).graph
    dims = [(d.dim_param, d.dim_value) for d in graph.input[0].type.tensor_type.shape.dim]
    assert [bool(p) for p, _ in dims] == [True, False, True, True]
    assert dims[1][1] == 1

    # The model's test, recomputed here: zero-mean unit-variance, graph, sigmoid.
    import onnxruntime as ort

    x = np.load(nuclei_dir / "test_input.npy").astype(np.float64)
    x = ((x - x.mean()) / (x.std() + 1e-6)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    expected = np.load(nuclei_dir / "test_output.npy")
    assert np.abs(1 / (1 + np.exp(-logits.astype(np.float64))) - expected).max() <= 1e-4

    package = resolve_model(key)
    assert package.spec.weights["onnx"].parent == "torchscript"
    assert package.spec.weights["onnx"].source.source == onnx_file.name
    predictor = Predictor(package, device="cpu")
    plan = predictor.plan({"raw": (1, 1, 700, 900)})
    assert plan.block_count == 1
    y, x_size = plan.block_shape["y"], plan.block_shape["x"]
    assert 700 <= y < 732 and 900 <= x_size < 932 and y % 8 == 0 and x_size % 8 == 0
    image = np.pad(np.load(nuclei_dir / "test_input.npy"), ((0, 0), (0, 0), (94, 94), (194, 194)))
    assert image.shape == (1, 1, 700, 900)
    result = predictor.predict({"raw": image})
    out = result.outputs["probability"]
    assert out.shape == (1, 1, 700, 900)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.torch
@pytest.mark.slow
@needs_torch
def test_state_dict_converts_with_consent(
    tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "architecture-imported"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    package = _tiny_package(tmp_path / "pkg", tiny_weights, "pytorch_state_dict")
    cache = ModelCache.from_settings()
    model = cache.import_package(package)

    assert main(["models", "convert", model.key]) == 1
    assert not marker.exists()

    stages: list[str] = []
    result = convert(model.key, trust_code=True, on_event=lambda e: stages.append(e.stage))
    assert marker.exists()
    assert stages[0] == "prepare" and stages[-1] == "done"
    assert {"export", "probe", "test", "install"} <= set(stages)
    assert result.installed and result.passed and result.source_format == "pytorch_state_dict"
    assert result.max_abs_diff < 1e-4
    # One 2x2 pooling followed by 2x upsampling: even sizes, from 2 up.
    assert result.sizes.inputs["raw"]["y"] == {"min": 2, "step": 2}
    assert result.sizes.inputs["raw"]["x"] == {"min": 2, "step": 2}

    converted = resolve_model(model.key)
    assert converted.spec.weights["onnx"].parent == "pytorch_state_dict"
    assert converted.spec.weights["onnx"].opset_version == result.opset_version
    assert cache.verify(model.key).ok
    predictor = Predictor(converted, device="cpu")
    image = np.random.default_rng(3).standard_normal((1, 1, 70, 90)).astype(np.float32)
    prediction = predictor.predict({"raw": image})
    assert prediction.plan.block_count == 1
    assert prediction.plan.block_shape == {"y": 70, "x": 90}
    assert prediction.outputs["out"].shape == (1, 1, 70, 90)


@pytest.mark.torch
@pytest.mark.slow
@needs_torch
def test_conversion_failing_its_test_is_kept_out(
    tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = _tiny_package(tmp_path / "pkg", tiny_weights, "torchscript", tamper=0.5)
    cache = ModelCache.from_settings()
    model = cache.import_package(package)
    before = _folder_digest(model.root)

    with pytest.raises(ConversionTestError) as info:
        convert(model.key)
    result = info.value.result
    assert not result.installed and not result.passed
    assert result.max_abs_diff == pytest.approx(0.5, abs=1e-3)
    assert "max abs diff 0.5" in str(info.value)
    # The export itself matched torch: the model's declared test output is what differs.
    assert result.export_max_abs_diff is not None and result.export_max_abs_diff < 1e-4

    assert main(["models", "convert", model.key, "--json"]) == 1
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["installed"] is False and document["output_file"] is None
    assert document["test"]["outputs"][0]["max_abs_diff"] == pytest.approx(0.5, abs=1e-3)
    assert "nothing was added" in captured.err

    assert _folder_digest(model.root) == before
    assert "onnx" not in cache.get(model.key).weights_formats
    assert _hidden_entries(cache.root) == []
    assert sorted(p.name for p in cache.root.iterdir()) == [model.key]
    assert (model.root / MANIFEST_NAME).is_file()
