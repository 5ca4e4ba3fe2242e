"""Conversion handles what the zoo ships: each pattern on a small model built here.

The packages come from ``tools/conversion_packages.py``, run with torch in a
subprocess (the test process never imports torch, as ZooDesk's own never does):
torchscript returning a tuple, a list (two inputs) or a dict; state dicts in 2D and
3D; an output at half the input's size; an architecture from a module that is not
installed.  A Keras model built with TensorFlow goes through the TensorFlow path.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zoodesk.conversion import launch
from zoodesk.conversion.pipeline import ConversionError, convert
from zoodesk.inference.predict import Predictor
from zoodesk.models import resolve_model
from zoodesk.models.cache import ModelCache
from zoodesk.models.compat import Installation, capability_here, compatibility_of_package
from zoodesk.models.package import load_model_package

REPO = Path(__file__).resolve().parents[1]
BUILDER = REPO / "tools" / "conversion_packages.py"
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_TENSORFLOW = (
    importlib.util.find_spec("tensorflow") is not None
    and importlib.util.find_spec("tf2onnx") is not None
)

pytestmark = [
    pytest.mark.torch,
    pytest.mark.slow,
    pytest.mark.skipif(not HAS_TORCH, reason="needs torch: pip install 'zoodesk[convert]'"),
]


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("conversion-packages")
    subprocess.run([sys.executable, str(BUILDER), str(out)], check=True, timeout=600)
    return out


#: kind -> (outputs, input shape to predict on, expected output spatial shape)
CASES: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "torchscript-tuple": (2, (96, 80), (96, 80)),
    "torchscript-list-2in": (2, (64, 64), (64, 64)),
    "torchscript-dict": (2, (96, 80), (96, 80)),
    "state-dict": (1, (96, 80), (96, 80)),
    "state-dict-3d": (1, (24, 20, 18), (24, 20, 18)),
    "state-dict-half": (1, (96, 80), (48, 40)),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_pattern_converts_passes_its_test_and_predicts(packages: Path, kind: str) -> None:
    outputs, in_shape, out_shape = CASES[kind]
    result = convert(packages / kind, trust_code=True)
    assert result.passed and result.installed
    assert len(result.test.outputs) == outputs
    assert all(o.passed and o.max_abs_diff < 1e-4 for o in result.test.outputs)
    assert result.export_max_abs_diff is not None and result.export_max_abs_diff < 1e-4
    # The graph keeps the spatial axes free: the description's sizes were measured.
    spatial = {"x", "y", "z"}
    assert all(spatial & set(axes) for axes in result.dynamic_axes.values())

    model = resolve_model(result.model)
    predictor = Predictor(model, device="cpu", weights_format="onnx")
    rng = np.random.default_rng(1)
    feeds: dict[str, Any] = {
        t.id: rng.standard_normal((1, 1, *in_shape)).astype(np.float32) for t in model.spec.inputs
    }
    predicted = predictor.predict(feeds).outputs
    assert len(predicted) == outputs
    for array in predicted.values():
        assert array.shape[-len(out_shape) :] == out_shape


def test_torchscript_outputs_come_out_in_the_declared_order(packages: Path) -> None:
    # The dict's values are named outputs: the sigmoid one lies in [0, 1].
    result = convert(packages / "torchscript-dict")
    model = resolve_model(result.model)
    predicted = (
        Predictor(model, device="cpu", weights_format="onnx")
        .predict(
            {
                "raw": np.random.default_rng(2).standard_normal((1, 1, 64, 64)).astype(np.float32)
                * 50
            }
        )
        .outputs
    )
    assert predicted["probability"].min() >= 0 and predicted["probability"].max() <= 1
    assert predicted["logits"].min() < 0 < predicted["logits"].max()


def test_a_missing_architecture_module_is_named_with_the_environment_file(
    packages: Path,
) -> None:
    package = load_model_package(packages / "state-dict-import-from")
    compat = compatibility_of_package(package)
    assert compat.action == "none"
    assert "zoodesk_absent_architectures" in compat.reason
    assert capability_here(compat, Installation(frozenset({"pytorch_state_dict"}))).label == (
        f"cannot run: {compat.reason}"
    )
    with pytest.raises(ConversionError) as info:
        convert(packages / "state-dict-import-from", trust_code=True)
    message = str(info.value)
    assert "'zoodesk_absent_architectures'" in message and "environment.yaml" in message
    assert "\n" not in message


def test_the_standalone_applications_hidden_command_runs_the_worker(
    packages: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A frozen application starts its own executable with the hidden command; here the
    # command line's main() stands for that executable.
    def command(job: Path) -> list[str]:
        code = "import sys; from zoodesk.cli import main; sys.exit(main(sys.argv[1:]))"
        return [sys.executable, "-c", code, launch.WORKER_COMMAND, str(job)]

    from zoodesk.conversion import pipeline

    monkeypatch.setattr(pipeline, "worker_command", command)
    result = convert(packages / "torchscript-tuple")
    assert result.passed and result.installed


def test_a_frozen_application_starts_its_console_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suffix = ".exe" if sys.platform == "win32" else ""
    gui = tmp_path / f"zoodesk{suffix}"
    cli = tmp_path / f"zoodesk-cli{suffix}"
    gui.write_bytes(b"")
    cli.write_bytes(b"")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(gui))
    job = tmp_path / "job.json"
    assert launch.worker_command(job) == [str(cli), launch.WORKER_COMMAND, str(job)]
    assert "full variant" in launch.missing_framework_hint("torchscript")
    monkeypatch.setattr(launch, "torch_available", lambda: False)
    assert launch.installation().frozen is True


# --------------------------------------------------------------------- TensorFlow

KERAS_BUILDER = """\
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

out = Path(sys.argv[1])
tf.keras.utils.set_random_seed(0)
inputs = tf.keras.Input((None, None, 1))
hidden = tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
outputs = tf.keras.layers.Conv2D(1, 1, activation="sigmoid")(hidden)
model = tf.keras.Model(inputs, outputs)
model.save(out / "keras_weights.h5")
x = np.random.default_rng(0).standard_normal((1, 64, 64, 1)).astype(np.float32)
np.save(out / "test_input.npy", x)
np.save(out / "test_output.npy", model.predict(x, verbose=0))
print(tf.__version__)
"""


@pytest.mark.skipif(not HAS_TENSORFLOW, reason="needs pip install 'zoodesk[tensorflow]'")
def test_a_keras_model_converts_through_tensorflow(tmp_path: Path) -> None:
    from tests import yaml_writer

    folder = tmp_path / "keras-model"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", KERAS_BUILDER, str(folder)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tf_version = done.stdout.strip().splitlines()[-1]
    yaml_writer.dump(
        {
            "format_version": "0.4.10",
            "type": "model",
            "name": "tiny keras",
            "description": "A Keras model built by the test.",
            "authors": [{"name": "ZooDesk tests"}],
            "cite": [{"text": "test", "url": "https://example.com/"}],
            "license": "MIT",
            "documentation": "README.md",
            "timestamp": "2026-01-01T00:00:00",
            "inputs": [
                {
                    "name": "input",
                    "axes": "byxc",
                    "data_type": "float32",
                    "data_range": [float("-inf"), float("inf")],
                    "shape": [1, 64, 64, 1],
                }
            ],
            "outputs": [
                {
                    "name": "output",
                    "axes": "byxc",
                    "data_type": "float32",
                    "data_range": [0.0, 1.0],
                    "shape": {
                        "reference_tensor": "input",
                        "scale": [1, 1, 1, 1],
                        "offset": [0] * 4,
                    },
                }
            ],
            "test_inputs": ["test_input.npy"],
            "test_outputs": ["test_output.npy"],
            "weights": {
                "keras_hdf5": {"source": "keras_weights.h5", "tensorflow_version": tf_version}
            },
        },
        folder / "rdf.yaml",
    )
    (folder / "README.md").write_text("# tiny keras\n")
    model = ModelCache.from_settings().import_package(folder)
    compat = compatibility_of_package(model.load(), model.weights_formats)
    assert compat.action == "convert-tensorflow"
    assert capability_here(compat, launch.installation()).verdict == "converts here"
    result = convert(model.key)
    assert result.passed and result.installed
    assert result.framework_version.startswith("TensorFlow")
    assert result.max_abs_diff < 1e-5


@pytest.mark.skipif(not HAS_TENSORFLOW, reason="needs pip install 'zoodesk[tensorflow]'")
def test_the_zoos_tensorflow_saved_model_converts_and_passes_its_test() -> None:
    # A real zoo package: a TF1-era saved-model bundle whose test input is uint8.
    from tests.conftest import SHARED

    result = convert(SHARED / "zoo-models" / "tiktorch_dummy_tensorflow")
    assert result.passed and result.installed
    assert result.source_format == "tensorflow_saved_model_bundle"
    assert result.framework_version.startswith("TensorFlow")
    assert result.max_abs_diff == 0.0
