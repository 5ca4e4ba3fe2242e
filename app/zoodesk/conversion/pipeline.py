"""Weights conversion: PyTorch, Keras and TensorFlow weights to ONNX, tested before use.

:func:`convert_model` (a generator of :class:`~zoodesk.models.http.Progress` events,
with a cancel check, for the GUI) and :func:`convert` (blocking, for the command
line) take a cached model and

1. pick the weights to convert: torchscript, else ``pytorch_state_dict``, else Keras
   (``keras_hdf5``), else a TensorFlow saved model.  A state dict needs the user's
   consent (``trust_code``), because loading it executes the architecture code
   shipped in the package (or the installed module it names); without consent
   nothing runs and the error names that code.
2. export them to ONNX in a separate process (:mod:`zoodesk.conversion._worker`,
   the only module that imports torch or TensorFlow; :mod:`zoodesk.conversion.launch`
   starts it, from Python or from the standalone application) with dynamic batch
   and spatial axes, and check the exported graph against the framework's own
   outputs on the test inputs.
3. measure which input sizes the graph accepts
   (:func:`zoodesk.conversion.sizes.probe_input_sizes`): a description usually
   declares the one size the weights were tested with, while the converted graph
   often takes any ``min + n * step``.  The sizes are recorded in the description's
   ``config.zoodesk.onnx_input_sizes`` and applied by
   :func:`zoodesk.models.spec.apply_onnx_input_sizes`, so the engine tiles freely.
4. run the model's own test tensors through the engine with the converted weights
   on a trial copy of the model; only if the test passes are the weights added to
   the cached description (``weights.onnx`` with ``parent``, ``sha256`` and
   ``opset_version``, see :meth:`ModelCache.add_weights`).  A failed conversion
   leaves the cache as it was and reports the differences.

A model named by a path outside the cache is first imported into the cache (the
converted weights have to live somewhere ZooDesk manages); its key is reported.
A model that already has ONNX weights is converted only when ``replace`` is given;
the former ONNX file stays in the model's folder, no longer referenced (unless it
came from an earlier conversion: that file is overwritten).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from zoodesk.conversion.launch import (
    can_convert,
    missing_framework_hint,
    torch_available,
    worker_command,
    worker_environment,
)
from zoodesk.conversion.sizes import (
    SizeProbe,
    graph_nodes_in_order,
    probe_input_sizes,
    probe_session,
)
from zoodesk.errors import CancelledError, ModelPackageError, ZooDeskError
from zoodesk.fileutils import sha256_file
from zoodesk.inference.session import numpy_dtype
from zoodesk.models.cache import CachedModel, ModelCache
from zoodesk.models.description import read_description_data
from zoodesk.models.http import Progress
from zoodesk.models.package import ModelPackage, load_model_package
from zoodesk.models.spec import (
    CONVERTIBLE_WEIGHTS_FORMATS,
    ONNX_INPUT_SIZES,
    PYTORCH_WEIGHTS_FORMATS,
    ModelSpec,
    WeightsSpec,
    model_spec_from_descr,
)
from zoodesk.settings import Settings, load_settings

if TYPE_CHECKING:
    # Imported lazily at run time: merely importing this module stays cheap.
    from zoodesk.inference.reproducibility import TestReport

__all__ = [
    "DEFAULT_OPSET",
    "ConsentRequiredError",
    "ConversionError",
    "ConversionResult",
    "ConversionTestError",
    "FrameworkMissingError",
    "SizeProbe",
    "TorchMissingError",
    "architecture_code",
    "convert",
    "convert_model",
    "convertible_formats",
    "probe_input_sizes",
    "torch_available",
]

#: ONNX opset of converted weights: supported by every ONNX Runtime build ZooDesk
#: ships (CPU, CUDA, DirectML) and by torch's TorchScript-based exporter.
DEFAULT_OPSET = 17

_PROGRESS_PREFIX = "@zoodesk "
_STAGES = ("prepare", "load", "run", "export", "check", "probe", "test", "install", "done")

CancelCheck = Callable[[], bool]


class ConversionError(ZooDeskError):
    """Weights could not be converted, or the conversion was refused."""


class FrameworkMissingError(ConversionError):
    """This installation lacks the framework (torch, TensorFlow) the weights need."""


class TorchMissingError(FrameworkMissingError):
    """torch is not installed: conversion needs the full variant or the ``convert`` extra."""


class ConsentRequiredError(ConversionError):
    """Converting these weights would execute code from the package: consent needed.

    Attributes
    ----------
    code
        The file (or module) whose code would be executed.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class ConversionTestError(ConversionError):
    """The converted weights failed the model's test; nothing was added to the cache.

    Attributes
    ----------
    result
        The conversion's result, with the test report (``installed`` is False).
    """

    def __init__(self, message: str, result: ConversionResult) -> None:
        super().__init__(message)
        self.result = result


# ------------------------------------------------------------------------ results


@dataclass
class ConversionResult:
    """What one conversion did.

    Attributes
    ----------
    model
        Cache key of the model.
    name
        The model's name.
    source_format, source_file
        The weights converted (format and file in the package).
    output_file
        The ONNX file in the cache; None when it was not added.
    opset_version
        ONNX opset of the converted weights.
    dynamic_axes
        Per graph tensor, its axes of variable size: axis id -> dimension name.
    sizes
        The accepted input sizes measured on the graph.
    declared_sizes
        The declared size of each measured axis, for comparison.
    export_max_abs_diff
        Largest difference between the original weights' and the graph's raw outputs on the test
        inputs.
    test
        The model's own test run with the converted weights.
    installed
        True when the weights were added to the cached description.
    imported
        True when the model was first imported into the cache from a path.
    replaced
        The former ONNX weights file, when an ONNX entry was replaced.
    framework_version
        The framework that loaded and exported the weights (e.g. ``torch 2.13.0``).
    notes
        Remarks (e.g. fixed shapes used because dynamic export failed).
    seconds
        Wall time of the whole conversion.
    """

    model: str
    name: str
    source_format: str
    source_file: str
    output_file: Path | None
    opset_version: int
    dynamic_axes: dict[str, dict[str, str]]
    sizes: SizeProbe
    declared_sizes: dict[str, dict[str, int | None]]
    export_max_abs_diff: float | None
    test: TestReport
    installed: bool = False
    imported: bool = False
    replaced: str | None = None
    framework_version: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True when the converted weights passed the model's test."""
        return bool(self.test.passed)

    @property
    def max_abs_diff(self) -> float:
        """The largest difference from the declared test outputs, over all outputs."""
        return max((o.max_abs_diff for o in self.test.outputs), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (the ``--json`` document of the command line)."""
        return {
            "model": self.model,
            "name": self.name,
            "source_format": self.source_format,
            "source_file": self.source_file,
            "output_file": str(self.output_file) if self.output_file else None,
            "opset_version": self.opset_version,
            "framework_version": self.framework_version,
            "dynamic_axes": self.dynamic_axes,
            "accepted_sizes": {
                "inputs": {t: dict(axes) for t, axes in self.sizes.inputs.items()},
                "declared": self.declared_sizes,
                "probes": self.sizes.probes,
                "notes": list(self.sizes.notes),
            },
            "export_max_abs_diff": self.export_max_abs_diff,
            "test": self.test.as_dict(),
            "passed": self.passed,
            "installed": self.installed,
            "imported": self.imported,
            "replaced": self.replaced,
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }

    def describe(self) -> list[str]:
        """Readable lines: what was converted, the axes, the sizes and the test."""
        verdict = "passed" if self.passed else "FAILED"
        lines = [
            f"{self.name} [{self.model}]: {self.source_format} weights ({self.source_file}) "
            f"to ONNX (opset {self.opset_version}, {self.framework_version or '?'})",
            f"  output: {self.output_file or '(not added to the cache)'}",
            "  dynamic axes: "
            + (
                "; ".join(f"{t}: {', '.join(axes)}" for t, axes in self.dynamic_axes.items())
                or "none (fixed shapes)"
            ),
            f"  accepted input sizes: {_describe_sizes(self.sizes, self.declared_sizes)}",
        ]
        lines += [f"  note: {n}" for n in (*self.sizes.notes, *self.notes)]
        if self.export_max_abs_diff is not None:
            lines.append(
                f"  export: max abs diff to the original weights {self.export_max_abs_diff:.3g}"
            )
        for o in self.test.outputs:
            detail = o.message or (
                f"max abs diff {o.max_abs_diff:.3g}, mismatched {o.mismatched_ppm:.1f} ppm "
                f"(tolerance: atol {o.absolute_tolerance:g}, rtol {o.relative_tolerance:g})"
            )
            lines.append(f"  test {o.output_id}: {'ok' if o.passed else 'FAILED'}: {detail}")
        lines.append(f"  test {verdict} on {self.test.device} ({self.seconds:.1f} s in all)")
        return lines


def _describe_sizes(sizes: SizeProbe, declared: Mapping[str, Mapping[str, int | None]]) -> str:
    if not sizes.inputs:
        return "as declared"
    parts = []
    for tensor_id, axes in sizes.inputs.items():
        items = []
        for axis_id, s in axes.items():
            was = (declared.get(tensor_id) or {}).get(axis_id)
            if axis_id == "batch":
                items.append("any batch size")
            else:
                items.append(f"{axis_id} = {s['min']} + n*{s['step']} (declared: {was})")
        parts.append(f"{tensor_id}: {', '.join(items)}")
    return "; ".join(parts)


# ---------------------------------------------------------------------- utilities


def _never() -> bool:
    return False


def _event(
    stage: str, message: str, result: ConversionResult | None = None
) -> Progress[ConversionResult]:
    return Progress(
        stage=stage,
        message=message,
        done=_STAGES.index(stage),
        total=len(_STAGES) - 1,
        unit="items",
        result=result,
    )


def _check_cancel(cancel: CancelCheck) -> None:
    if cancel():
        raise CancelledError("weights conversion cancelled")


# ------------------------------------------------------------------ preparation


def _local_file(package: ModelPackage, weights: WeightsSpec, key: str) -> Path:
    if weights.source.is_remote:
        raise ConversionError(
            f"{key}: the {weights.format} weights are not in the cache ({weights.source.source}); "
            f"download the model with 'zoodesk models download ID --weights {weights.format}'"
        )
    return package.verify(weights.source)


def _choose_format(spec: ModelSpec, requested: str | None, key: str) -> str:
    if requested is not None:
        if requested not in CONVERTIBLE_WEIGHTS_FORMATS:
            raise ConversionError(
                f"cannot convert {requested} weights: only "
                f"{' and '.join(CONVERTIBLE_WEIGHTS_FORMATS)} weights are converted to ONNX"
            )
        if requested not in spec.weights:
            raise ConversionError(
                f"{key}: no {requested} weights (the model has: {', '.join(spec.weights)})"
            )
        return requested
    # torchscript first: it runs no code from the package.
    for fmt in CONVERTIBLE_WEIGHTS_FORMATS:
        weights = spec.weights.get(fmt)
        if weights is not None and not weights.source.is_remote:
            return fmt
    for fmt in CONVERTIBLE_WEIGHTS_FORMATS:
        if fmt in spec.weights:
            return fmt
    raise ConversionError(
        f"{key}: no weights that can be converted to ONNX "
        f"(the model has: {', '.join(spec.weights) or 'none'}; ZooDesk converts "
        f"{', '.join(CONVERTIBLE_WEIGHTS_FORMATS)})"
    )


def _architecture(package: ModelPackage, key: str) -> dict[str, Any]:
    """What the worker needs to build the network: file or module, callable, kwargs."""
    entry = getattr(getattr(package.descr, "weights", None), "pytorch_state_dict", None)
    arch = getattr(entry, "architecture", None)
    if entry is None or arch is None:
        raise ConversionError(f"{key}: the pytorch_state_dict weights name no architecture")
    kwargs = dict(getattr(arch, "kwargs", None) or {})
    environment = getattr(entry, "dependencies", None)
    environment_source = getattr(environment, "source", None)
    result: dict[str, Any] = {
        "callable": str(arch.callable),
        "kwargs": json.loads(json.dumps(kwargs, default=str)),
        "strict": bool(getattr(entry, "strict", True)),
        "import_from": None,
        "path": None,
        "environment": str(environment_source) if environment_source else None,
    }
    if getattr(arch, "import_from", None):
        result["import_from"] = str(arch.import_from)
        return result
    ref = package.spec.weights["pytorch_state_dict"].architecture
    if ref is None:
        raise ConversionError(f"{key}: the pytorch_state_dict weights name no architecture file")
    if ref.is_remote:
        raise ConversionError(
            f"{key}: the architecture code {ref.source} is not in the package (remote file)"
        )
    if not package.path_of(ref).is_file():
        raise ConversionError(
            f"{key}: the architecture code {ref.source} (callable {arch.callable}) that the "
            "pytorch_state_dict weights need is missing from the package"
        )
    result["path"] = str(package.verify(ref))
    return result


def architecture_code(package: ModelPackage) -> str | None:
    """The code that converting the package's weights would execute, in words.

    None when the weights to convert run no code of the package (torchscript, ONNX,
    TensorFlow).
    """
    try:
        fmt = _choose_format(package.spec, None, package.name)
    except ConversionError:
        return None
    if fmt != "pytorch_state_dict":
        return None
    try:
        return _code_description(_architecture(package, package.name))
    except ZooDeskError as exc:
        return str(exc)


def _code_description(arch: Mapping[str, Any]) -> str:
    if arch["import_from"]:
        return f"{arch['import_from']}.{arch['callable']} (an installed Python module)"
    return f"{arch['path']} (callable {arch['callable']})"


def _example_inputs(package: ModelPackage, key: str) -> dict[str, np.ndarray]:
    """The test inputs, preprocessed as the engine does, in the declared data types."""
    from zoodesk.inference.processing import Processing
    from zoodesk.inference.reproducibility import load_test_tensor

    spec = package.spec
    raw: dict[str, tuple[np.ndarray, tuple[str, ...]]] = {}
    for t in spec.inputs:
        if t.test_tensor is None:
            raise ConversionError(f"{key}: input {t.id!r} has no test tensor to convert with")
        raw[t.id] = (load_test_tensor(package, t.id), t.axis_ids)
    result = {}
    for t in spec.inputs:
        array = np.asarray(Processing(t.preprocessing, t).run(raw[t.id][0], t.axis_ids, raw))
        with contextlib.suppress(TypeError):
            array = array.astype(np.dtype(t.data_type), copy=False)
        result[t.id] = np.ascontiguousarray(array)
    return result


def _dynamic_axes_request(spec: ModelSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Axes to export as dynamic: batch and spatial axes (outputs: those not fixed)."""
    names: dict[tuple[str, str], str] = {}
    inputs = []
    for t in spec.inputs:
        axes: dict[int, str] = {}
        for i, a in enumerate(t.axes):
            if a.kind == "batch":
                axes[i] = "batch"
            elif a.is_spatial:
                axes[i] = names[(t.id, a.id)] = f"{t.id}_{a.id}"
        inputs.append({"id": t.id, "dynamic_axes": axes})
    outputs = []
    for t in spec.outputs:
        axes = {}
        for i, a in enumerate(t.axes):
            if a.kind == "batch":
                axes[i] = "batch"
            elif a.is_spatial and a.size is None:
                ref = a.reference
                same = ref is not None and ref.offset == 0
                key = (ref.tensor_id, ref.axis_id) if ref is not None else None
                axes[i] = names[key] if same and key in names else f"{t.id}_{a.id}"
        outputs.append({"id": t.id, "dynamic_axes": axes})
    return inputs, outputs


def _onnx_name(model: CachedModel, source: str, current_onnx: str | None) -> str:
    stem = Path(source).stem or "weights"
    present = {f.path for f in model.files}
    for n in range(1, 100):
        name = f"{stem}_converted.onnx" if n == 1 else f"{stem}_converted_{n}.onnx"
        # A file from an earlier conversion that is being replaced may be overwritten.
        if name not in present or name == current_onnx:
            return name
    raise ConversionError(f"{model.root}: no free file name for the converted weights")


# ----------------------------------------------------------------------- worker


def _pump(stream: IO[str], events: queue.Queue[Any], other: list[str]) -> None:
    for line in stream:
        if line.startswith(_PROGRESS_PREFIX):
            with contextlib.suppress(ValueError):
                events.put(json.loads(line[len(_PROGRESS_PREFIX) :]))
                continue
        if len(other) < 200:
            other.append(line.rstrip("\n"))
    events.put(None)


def _run_worker(
    job: dict[str, Any], work: Path, cancel: CancelCheck
) -> Generator[Progress[ConversionResult], None, dict[str, Any]]:
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    log_path = work / "worker.log"
    other: list[str] = []
    events: queue.Queue[Any] = queue.Queue()
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            worker_command(job_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=work,
            env=worker_environment(),
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        assert proc.stdout is not None
        reader = threading.Thread(target=_pump, args=(proc.stdout, events, other), daemon=True)
        reader.start()
        try:
            while True:
                _check_cancel(cancel)
                try:
                    item = events.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    break
                stage = str(item.get("stage", "export"))
                yield _event(stage if stage in _STAGES else "export", str(item.get("message", "")))
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            reader.join(timeout=5)
    result_path = Path(job["result"])
    if not result_path.is_file():
        logged = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        last = ([ln for ln in (*logged, *other) if ln.strip()] or ["no output"])[-1]
        raise ConversionError(
            f"the conversion process ended without a result (exit status {proc.returncode}): {last}"
        )
    result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    if not result.get("ok"):
        message = str(result.get("error", "unknown error"))
        if result.get("kind") == "no-framework":
            fmt = str(job["format"])
            error = TorchMissingError if fmt in PYTORCH_WEIGHTS_FORMATS else FrameworkMissingError
            raise error(f"{message}: {missing_framework_hint(fmt)}")
        raise ConversionError(f"conversion failed: {message}")
    return result


# --------------------------------------------------------------------- checking


def _graph_dynamic_axes(session: Any, spec: ModelSpec) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    pairs = [
        *zip(spec.inputs, graph_nodes_in_order(session.get_inputs(), spec.inputs), strict=False),
        *zip(spec.outputs, graph_nodes_in_order(session.get_outputs(), spec.outputs), strict=False),
    ]
    for tensor, node in pairs:
        axes = {
            a.id: str(d if d is not None else "?")
            for a, d in zip(tensor.axes, node.shape, strict=False)
            if not isinstance(d, int)
        }
        if axes:
            found[tensor.id] = axes
    return found


def _export_difference(
    session: Any, spec: ModelSpec, examples: Mapping[str, np.ndarray], references: Sequence[Path]
) -> float:
    """Largest difference between the graph's and the original weights' raw outputs."""
    ins = graph_nodes_in_order(session.get_inputs(), spec.inputs)
    outs = graph_nodes_in_order(session.get_outputs(), spec.outputs)
    # As the engine does: inputs take the graph's data type (a uint8 test input may
    # feed a float graph).
    feeds = {
        n.name: examples[t.id].astype(numpy_dtype(n.type), copy=False)
        for n, t in zip(ins, spec.inputs, strict=True)
    }
    try:
        actual = session.run([o.name for o in outs], feeds)
    except Exception as exc:
        raise ConversionError(f"the exported graph fails on the test inputs: {exc}") from exc
    worst = 0.0
    for t, a, ref in zip(spec.outputs, actual, references, strict=True):
        expected = np.load(ref, allow_pickle=False)
        if a.shape != expected.shape:
            raise ConversionError(
                f"the exported graph's output {t.id!r} has shape {a.shape}, "
                f"the original weights give {expected.shape}"
            )
        if a.size:
            diff = np.abs(a.astype(np.float64) - expected.astype(np.float64))
            worst = max(worst, float(np.nanmax(diff)) if not np.isnan(diff).all() else 0.0)
    return worst


# ------------------------------------------------------------------- conversion


def _locate(
    model: str | Path | CachedModel, cache: ModelCache, settings: Settings
) -> CachedModel | Path:
    """The cached model to convert, or the path of a package to import first.

    Names resolve as in :func:`zoodesk.models.resolve_model`: an existing path first,
    then a cache key or zoo id.
    """
    if isinstance(model, CachedModel):
        return model
    text = str(model).strip()
    path = Path(text).expanduser()
    if text and path.exists():
        root = cache.root.resolve()
        resolved = path.resolve()
        if resolved.is_relative_to(root) and resolved != root:
            return cache.get(resolved.relative_to(root).parts[0])
        return path
    found = cache.lookup(text) if text else None
    if found is not None:
        return found
    from zoodesk.models import resolve_model

    # Raises the usual "not found" message, listing what was tried.
    resolve_model(text, settings)
    raise ModelPackageError(f"model {text!r} is not in the cache")


@dataclass
class _Exported:
    """The worker's ONNX file, checked against the original weights."""

    file: Path
    framework_version: str
    notes: list[str]
    dynamic_axes: dict[str, dict[str, str]]
    max_abs_diff: float


def _export(
    package: ModelPackage,
    fmt: str,
    arch: dict[str, Any] | None,
    work: Path,
    onnx_name: str,
    opset_version: int,
    cancel: CancelCheck,
) -> Generator[Progress[ConversionResult], None, _Exported]:
    """Export in the worker process, then compare the graph with the original outputs."""
    spec = package.spec
    examples = _example_inputs(package, str(package.description_path))
    example_paths = []
    for i, t in enumerate(spec.inputs):
        example_paths.append(str(work / f"input_{i}.npy"))
        np.save(example_paths[-1], examples[t.id])
    references = [work / f"reference_output_{i}.npy" for i in range(len(spec.outputs))]
    ins, outs = _dynamic_axes_request(spec)
    job = {
        "format": fmt,
        "weights": str(package.verify(spec.weights[fmt].source)),
        "architecture": arch,
        "package_root": str(package.root),
        "inputs": ins,
        "outputs": outs,
        "example_inputs": example_paths,
        "reference_outputs": [str(p) for p in references],
        "onnx": str(work / onnx_name),
        "opset_version": opset_version,
        "result": str(work / "result.json"),
    }
    worker = yield from _run_worker(job, work, cancel)
    onnx_file = work / onnx_name
    if not onnx_file.is_file():
        raise ConversionError("conversion failed: the export wrote no ONNX file")
    extra = sorted(p.name for p in work.iterdir() if p.name.startswith(f"{onnx_name}."))
    if extra:
        raise ConversionError(
            f"the export wrote external data files ({', '.join(extra)}); "
            "weights this large are not supported"
        )
    yield _event("check", "comparing the ONNX graph with the original weights on the test inputs")
    session = probe_session(onnx_file)
    return _Exported(
        file=onnx_file,
        framework_version=str(worker.get("framework_version", "")),
        notes=[str(n) for n in worker.get("notes", ())],
        dynamic_axes=_graph_dynamic_axes(session, spec),
        max_abs_diff=_export_difference(session, spec, examples, references),
    )


def _sizes_config(sizes: SizeProbe, onnx_file: Path, cached: CachedModel) -> dict[str, Any] | None:
    """The ``config.zoodesk`` entries that record the accepted sizes (None: nothing)."""
    if sizes.inputs:
        record = {
            "weights_sha256": sha256_file(onnx_file),
            "inputs": {
                t: {a: dict(s) for a, s in axes.items()} for t, axes in sizes.inputs.items()
            },
        }
        return {ONNX_INPUT_SIZES: record}
    config = read_description_data(cached.description_path).get("config")
    section = config.get("zoodesk") if isinstance(config, dict) else None
    if isinstance(section, dict) and ONNX_INPUT_SIZES in section:
        # The record of the replaced weights would not apply (other sha256): drop it.
        return {ONNX_INPUT_SIZES: None}
    return None


def convert_model(
    model: str | Path | CachedModel,
    *,
    weights_format: str | None = None,
    trust_code: bool = False,
    replace: bool = False,
    opset_version: int = DEFAULT_OPSET,
    device: str = "cpu",
    settings: Settings | None = None,
    cancel: CancelCheck | None = None,
) -> Generator[Progress[ConversionResult], None, ConversionResult]:
    """Convert a model's PyTorch weights to ONNX, test them, add them to the cache.

    See the module docstring for the steps.  The last event carries the result in
    ``result``; it is also the generator's return value.

    Parameters
    ----------
    model
        A cached model, its key or zoo id, or a package path (imported first).
    weights_format
        One of :data:`CONVERTIBLE_WEIGHTS_FORMATS` (default: the first of them that the
        package has locally).
    trust_code
        Consent to execute the architecture code a pytorch_state_dict needs.
    replace
        Replace existing ONNX weights (otherwise a model with ONNX weights is refused).
    opset_version
        ONNX opset of the export.
    device
        Where the model's test runs (``cpu`` is the reference).
    settings
        Where the cache is (default: :func:`load_settings`).
    cancel
        Checked between steps and while the export runs; True stops the
        conversion (:class:`CancelledError`), leaving the cache as it was.

    Raises
    ------
    ConsentRequiredError
        pytorch_state_dict weights without ``trust_code``; names the code.
    TorchMissingError
        torch is not installed (:class:`FrameworkMissingError` for TensorFlow).
    ConversionTestError
        The converted weights failed the model's test (nothing was added).
    ConversionError
        Any other reason the weights cannot be converted.
    """
    from zoodesk.inference.checks import record_test_report
    from zoodesk.inference.reproducibility import run_reproducibility_test

    start = time.perf_counter()
    cancel = cancel or _never
    settings = settings or load_settings()
    cache = ModelCache.from_settings(settings)
    yield _event("prepare", f"preparing {model}")
    located = _locate(model, cache, settings)
    package = located.load() if isinstance(located, CachedModel) else load_model_package(located)
    spec = package.spec
    key = located.key if isinstance(located, CachedModel) else str(located)
    fmt = _choose_format(spec, weights_format, key)
    source = spec.weights[fmt].source.source
    current = spec.weights.get("onnx")
    if current is not None and not replace:
        raise ConversionError(
            f"{key} already has ONNX weights ({current.source.source}); converting "
            f"its {fmt} weights would replace them: ask for it with --replace"
        )
    # What would stop the conversion anyway comes before asking for consent.
    arch = _architecture(package, key) if fmt == "pytorch_state_dict" else None
    if not can_convert(fmt):
        error = TorchMissingError if fmt in PYTORCH_WEIGHTS_FORMATS else FrameworkMissingError
        raise error(f"{key}: {missing_framework_hint(fmt)}")
    if arch is not None and not trust_code:
        raise ConsentRequiredError(
            f"{key}: converting pytorch_state_dict weights executes the Python code "
            f"{_code_description(arch)} shipped with the model; read it, and convert "
            "with --trust-code only if you trust where the model comes from",
            code=str(arch["path"] or arch["import_from"]),
        )
    _local_file(package, spec.weights[fmt], key)
    imported = not isinstance(located, CachedModel)
    if isinstance(located, CachedModel):
        cached = located
    else:
        # Converted weights live in the cache only: a package from elsewhere goes
        # there first, once the checks above have passed.
        yield _event("prepare", f"importing {located} into the model cache")
        cached = cache.import_package(located)
        package = cached.load()
        spec, key = package.spec, cached.key
        if arch is not None:
            arch = _architecture(package, key)
    # Sizes are measured against the declared input axes, not against a record
    # left by an earlier conversion (which belongs to the weights being replaced).
    declared_inputs = model_spec_from_descr(package.descr, onnx_sizes=False).inputs
    probe_spec = dataclasses.replace(spec, inputs=declared_inputs)
    onnx_name = _onnx_name(cached, source, current.source.source if current else None)
    with cache.staging(f"{key}-convert") as stage:
        work = stage / "work"
        work.mkdir()
        exported = yield from _export(package, fmt, arch, work, onnx_name, opset_version, cancel)

        yield _event("probe", "measuring which input sizes the ONNX graph accepts")
        primary = probe_spec.inputs[0]
        base_shape = np.load(work / "input_0.npy", mmap_mode="r").shape
        sizes = probe_input_sizes(exported.file, probe_spec, base_shape, cancel=cancel)
        declared = {
            t: {a: primary.axis(a).size for a in axes if a != "batch"}
            for t, axes in sizes.inputs.items()
        }
        config = _sizes_config(sizes, exported.file, cached)
        note = (
            f"onnx weights converted from {fmt} ({source}) with "
            f"{exported.framework_version or '?'}, opset {opset_version}"
        )

        def add_to(target_cache: ModelCache, target: CachedModel) -> CachedModel:
            return target_cache.add_weights(
                target,
                "onnx",
                exported.file,
                parent=fmt,
                fields={"opset_version": opset_version},
                note=note,
                zoodesk_config=config,
            )

        _check_cancel(cancel)
        yield _event("test", "running the model's test with the converted weights")
        # The test runs on a trial copy made the very way the cache will be changed.
        trial_cache = ModelCache(stage / "trial")
        shutil.copytree(cached.root, trial_cache.root / key)
        trial = add_to(trial_cache, trial_cache.get(key))
        report = run_reproducibility_test(trial.load(), device=device, weights_format="onnx")
        result = ConversionResult(
            model=key,
            name=spec.name,
            source_format=fmt,
            source_file=source,
            output_file=None,
            opset_version=opset_version,
            dynamic_axes=exported.dynamic_axes,
            sizes=sizes,
            declared_sizes=declared,
            export_max_abs_diff=exported.max_abs_diff,
            test=report,
            imported=imported,
            replaced=current.source.source if current else None,
            framework_version=exported.framework_version,
            notes=exported.notes,
        )
        if not report.passed:
            result.seconds = time.perf_counter() - start
            failing = ", ".join(
                f"{o.output_id} (max abs diff {o.max_abs_diff:.3g}"
                + (f"; {o.message}" if o.message else "")
                + ")"
                for o in report.outputs
                if not o.passed
            )
            raise ConversionTestError(
                f"{key}: the weights converted from {fmt} fail the model's test on "
                f"{report.device}: {failing}; nothing was added to the cache",
                result,
            )
        _check_cancel(cancel)
        yield _event("install", f"adding the ONNX weights to {key}")
        installed = add_to(cache, cached)
        if sha256_file(installed.description_path) == sha256_file(trial.description_path):
            # The very description that was tested: remember the passed test.
            record_test_report(installed.load(), report, settings)
        result.output_file = installed.root / onnx_name
        result.installed = True
    result.seconds = time.perf_counter() - start
    yield _event("done", f"converted {fmt} weights of {key} to ONNX", result)
    return result


def convert(
    model: str | Path | CachedModel,
    *,
    on_event: Callable[[Progress[ConversionResult]], None] | None = None,
    **options: Any,
) -> ConversionResult:
    """Run :func:`convert_model` to the end and return its result.

    ``on_event`` sees every progress event; ``options`` are those of
    :func:`convert_model`.
    """
    events = convert_model(model, **options)
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            result: ConversionResult = stop.value
            return result
        if on_event is not None:
            on_event(event)


def convertible_formats(spec: ModelSpec) -> list[str]:
    """The weights formats of a description that could be converted to ONNX."""
    return [f for f in CONVERTIBLE_WEIGHTS_FORMATS if f in spec.weights]
