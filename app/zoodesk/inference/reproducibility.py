"""The reproducibility check: run a model's own test inputs, compare to its test outputs.

Tolerances come from the description (``config.bioimageio.reproducibility_tolerance``)
and default to bioimageio.core's: an element mismatches when
``|actual - expected| > atol + rtol * |expected|``, and the check passes when at most
``mismatched_elements_per_million`` elements mismatch.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from zoodesk.errors import ModelPackageError, NotEnoughMemoryError, not_enough_memory
from zoodesk.inference.predict import Predictor
from zoodesk.models.package import ModelPackage


@dataclass
class OutputComparison:
    """How one output compares with its declared test tensor."""

    output_id: str
    max_abs_diff: float
    mismatched_ppm: float
    relative_tolerance: float
    absolute_tolerance: float
    allowed_mismatched_ppm: float
    passed: bool
    shape_matches: bool = True
    message: str = ""


@dataclass
class TestReport:
    """Result of :func:`run_reproducibility_test`."""

    model: str
    passed: bool
    device: str
    weights_format: str
    outputs: list[OutputComparison] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_output(
    output_id: str, actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float, ppm: float
) -> OutputComparison:
    """Compare one output with its expected values using bioimageio.core's rule."""
    if actual.shape != expected.shape:
        return OutputComparison(
            output_id,
            float("inf"),
            1e6,
            rtol,
            atol,
            ppm,
            passed=False,
            shape_matches=False,
            message=f"shape {actual.shape} differs from the expected {expected.shape}",
        )
    a = actual.astype(np.float64, copy=False)
    e = expected.astype(np.float64, copy=False)
    diff = np.abs(a - e)
    nan_mismatch = np.isnan(a) != np.isnan(e)
    diff = np.where(np.isnan(a) & np.isnan(e), 0.0, diff)
    mismatched = (diff > atol + rtol * np.abs(e)) | nan_mismatch
    mismatched_ppm = float(mismatched.sum()) / max(e.size, 1) * 1e6
    max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    return OutputComparison(
        output_id, max_abs, mismatched_ppm, rtol, atol, ppm, passed=mismatched_ppm <= ppm
    )


def load_test_tensor(package: ModelPackage, tensor_id: str) -> np.ndarray:
    """Load a tensor's declared test tensor (``.npy``) after checking its sha256."""
    tensor = package.spec.tensor(tensor_id)
    if tensor.test_tensor is None:
        raise ModelPackageError(
            f"{package.description_path}: tensor {tensor_id!r} declares no test tensor"
        )
    path = package.verify(tensor.test_tensor)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelPackageError(f"{path}: not a readable .npy test tensor ({exc})") from exc


def run_reproducibility_test(
    package: ModelPackage,
    *,
    device: str = "auto",
    weights_format: str | None = None,
    predictor: Predictor | None = None,
) -> TestReport:
    """Run the description's test inputs through the whole pipeline and compare.

    Raises
    ------
    NotEnoughMemoryError
        When the test needs arrays larger than the memory (e.g. a description that
        declares an enormous minimum input shape), naming the description.
    """
    predictor = predictor or Predictor(package, device=device, weights_format=weights_format)
    try:
        return _run_test(package, predictor)
    except MemoryError as exc:
        message = not_enough_memory(exc, package.description_path, "to run the model's test")
        raise NotEnoughMemoryError(message) from exc


def _run_test(package: ModelPackage, predictor: Predictor) -> TestReport:
    spec = package.spec
    inputs = {t.id: load_test_tensor(package, t.id) for t in spec.inputs if t.test_tensor}
    expected = {t.id: load_test_tensor(package, t.id) for t in spec.outputs}
    batch = next(
        (
            inputs[spec.inputs[0].id].shape[i]
            for i, a in enumerate(spec.inputs[0].axes)
            if a.kind == "batch"
        ),
        1,
    )
    # Test tensors may hold several samples; each is predicted on its own.
    per_sample = []
    seconds = 0.0
    for b in range(batch):
        sample = {t.id: _take_batch(inputs[t.id], t, b) for t in spec.inputs if t.id in inputs}
        result = predictor.predict(sample)
        seconds += result.seconds
        per_sample.append(result.outputs)
    report = TestReport(
        model=spec.name,
        passed=True,
        device=predictor.session.device.name,
        weights_format=predictor.weights.format,
        warnings=list(predictor.warnings),
        seconds=seconds,
    )
    for t in spec.outputs:
        actual = _concat_batch([o[t.id] for o in per_sample], t)
        tol = spec.tolerance_for(t.id, predictor.weights.format)
        comparison = compare_output(
            t.id, actual, expected[t.id], tol.relative, tol.absolute, tol.mismatched_per_million
        )
        report.outputs.append(comparison)
        report.passed &= comparison.passed
    return report


def _batch_axis(tensor: Any) -> int | None:
    return next((i for i, a in enumerate(tensor.axes) if a.kind == "batch"), None)


def _take_batch(array: np.ndarray, tensor: Any, b: int) -> np.ndarray:
    i = _batch_axis(tensor)
    return array if i is None else np.take(array, [b], axis=i)


def _concat_batch(arrays: list[np.ndarray], tensor: Any) -> np.ndarray:
    i = _batch_axis(tensor)
    return arrays[0] if i is None or len(arrays) == 1 else np.concatenate(arrays, axis=i)


def run_test_cli(args: argparse.Namespace, console: Any) -> int:
    """``zoodesk models test MODEL``: print the comparison; exit 0 only on a pass."""
    from zoodesk.inference.checks import record_test_report
    from zoodesk.models import resolve_model
    from zoodesk.settings import load_settings

    settings = load_settings()
    package = resolve_model(args.model)
    device = args.device or settings.device
    predictor = Predictor(
        package, device=device, weights_format=args.weights, threads=settings.threads or None
    )
    for w in predictor.warnings:
        console.warn(w)
    report = run_reproducibility_test(package, predictor=predictor)
    # What ran on this machine is remembered per device (models report, the library).
    record_test_report(package, report, settings)
    if args.json:
        console.document(report.as_dict())
    else:
        console.info(
            f"{report.model}: {report.weights_format} weights on {report.device} "
            f"({report.seconds:.2f} s)"
        )
        for o in report.outputs:
            verdict = "ok" if o.passed else "FAILED"
            detail = o.message or (
                f"max abs diff {o.max_abs_diff:.3g}, mismatched {o.mismatched_ppm:.1f} ppm "
                f"(tolerance: atol {o.absolute_tolerance:g}, rtol {o.relative_tolerance:g}, "
                f"{o.allowed_mismatched_ppm:g} ppm)"
            )
            console.info(f"  {o.output_id}: {verdict}: {detail}")
        console.info("passed" if report.passed else "FAILED: outputs differ from the test outputs")
    return 0 if report.passed else 1
