"""ZooDesk's weights conversion beside bioimageio.core's own converters, in one run.

For each model package (default: the torchscript weights of unet2d_multi_tensor and
unet2d_nuclei_broad in ../shared), converts the torchscript weights to ONNX

- with ZooDesk (``zoodesk.conversion.pipeline.convert``, in a fresh model cache), and
- with bioimageio.core 0.11 (``weight_converters.torchscript_to_onnx.convert``),

then runs both graphs in ONNX Runtime on the test inputs (preprocessed as the engine
does) and reports, per converter: success or the error, seconds, whether the batch
and spatial axes stay free (a second batch and a larger size are tried), whether
the weights went to an external data file, and the largest difference from the
torchscript model's own outputs.

Usage::

    .venv/bin/python benchmarks/compare_converters.py [PACKAGE ...]

Needs the ``convert`` extra; bioimageio.core's converter also needs ``onnxscript``
(``pip install onnxscript``), and says so when it is missing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO.parent / "shared" / "zoo-models"
DEFAULT_PACKAGES = [ZOO / "unet2d_multi_tensor", ZOO / "unet2d_nuclei_broad"]


def _inputs(package_dir: Path) -> tuple[Any, dict[str, np.ndarray]]:
    from zoodesk.conversion.pipeline import _example_inputs
    from zoodesk.models.package import load_model_package

    package = load_model_package(package_dir)
    return package, _example_inputs(package, str(package_dir))


def _torchscript_outputs(package: Any, examples: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    path = package.verify(package.spec.weights["torchscript"].source)
    model = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        result = model(*(torch.from_numpy(examples[t.id]) for t in package.spec.inputs))
    result = list(result.values()) if isinstance(result, dict) else result
    result = result if isinstance(result, list | tuple) else [result]
    return [r.numpy() for r in result]


def _check_graph(
    onnx_path: Path, package: Any, examples: dict[str, np.ndarray], reference: list[np.ndarray]
) -> dict[str, Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [n.name for n in session.get_inputs()]
    feeds = {n: examples[t.id] for n, t in zip(names, package.spec.inputs, strict=True)}
    outputs = session.run(None, feeds)
    diff = max(float(np.abs(o - r).max()) for o, r in zip(outputs, reference, strict=True))
    found: dict[str, Any] = {"max_abs_diff": diff}
    batch2 = {n: np.concatenate([a, a]) for n, a in feeds.items()}
    larger = {
        n: np.pad(a, [(0, 0), (0, 0), (0, 64), (0, 64)], mode="reflect") for n, a in feeds.items()
    }
    for label, trial in (("batch 2", batch2), ("+64 px", larger)):
        try:
            session.run(None, trial)
            found[label] = "ok"
        except Exception as exc:  # the runtime's own error types
            found[label] = "refused" if "invalid dim" in str(exc).lower() else f"error: {exc}"
    found["external data"] = any(p.suffix == ".data" for p in onnx_path.parent.iterdir())
    return found


def zoodesk_convert(package_dir: Path, work: Path) -> tuple[Path, float]:
    from zoodesk.conversion.pipeline import convert

    os.environ["ZOODESK_HOME"] = str(work / "home")
    start = time.perf_counter()
    result = convert(package_dir, weights_format="torchscript", replace=True)
    assert result.output_file is not None
    return result.output_file, time.perf_counter() - start


def core_convert(package_dir: Path, work: Path) -> tuple[Path, float]:
    from bioimageio.core.weight_converters.torchscript_to_onnx import convert
    from bioimageio.spec import load_model_description

    target = work / "core" / "weights.onnx"
    target.parent.mkdir(parents=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        descr = load_model_description(package_dir, perform_io_checks=False)
        convert(descr, target)
    return target, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", type=Path, default=DEFAULT_PACKAGES)
    args = parser.parse_args(argv)
    rows = []
    for package_dir in args.packages:
        package, examples = _inputs(package_dir)
        reference = _torchscript_outputs(package, examples)
        for name, converter in (("ZooDesk", zoodesk_convert), ("bioimageio.core", core_convert)):
            work = Path(tempfile.mkdtemp(prefix="zoodesk-compare-"))
            try:
                onnx_path, seconds = converter(package_dir, work)
                found = _check_graph(onnx_path, package, examples, reference)
                rows.append((package_dir.name, name, "ok", f"{seconds:.1f}", found))
            except Exception as exc:
                line = " ".join(str(exc).split())[:120] or type(exc).__name__
                rows.append((package_dir.name, name, f"failed: {line}", "-", {}))
    print("| package | converter | result | s | max abs diff | batch 2 | +64 px | external data |")
    print("|---|---|---|---|---|---|---|---|")
    for package_name, name, result, seconds, found in rows:
        diff = f"{found['max_abs_diff']:.2g}" if "max_abs_diff" in found else "-"
        print(
            f"| {package_name} | {name} | {result} | {seconds} | {diff} | "
            f"{found.get('batch 2', '-')} | {found.get('+64 px', '-')} | "
            f"{found.get('external data', '-')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
