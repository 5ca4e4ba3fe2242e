"""The part of weights conversion that needs torch, run in a process of its own.

``python -m zoodesk.models._convert_worker JOB.json`` loads PyTorch weights (a
torchscript file, or a state dict with the architecture code of the package), runs
them once on the example inputs and exports them to ONNX.  It is started by
:mod:`zoodesk.models.convert`, which never imports torch itself: a crash, a hang or
whatever the architecture code does stays in this process, and the caller can stop it.

The job file (JSON) holds::

    format            "torchscript" or "pytorch_state_dict"
    weights           path of the weights file
    architecture      {"path", "callable", "kwargs", "strict", "import_from"} (state dict)
    package_root      folder put first on sys.path for the architecture's own imports
    inputs, outputs   [{"id", "dynamic_axes": {index: name}}], in the model's order
    example_inputs    .npy files, one per input (already preprocessed)
    reference_outputs .npy files to write the torch outputs to, one per output
    onnx              where to write the ONNX model
    opset_version     ONNX opset
    result            where to write the result (JSON)

Progress goes to stdout as lines starting with ``@zoodesk `` followed by JSON (other
output, e.g. prints of the architecture code, is left alone).  The result file holds
``{"ok": true, "torch_version", "dynamic_axes", "notes"}`` or ``{"ok": false, "kind",
"error"}``; the exit status is 0, 1 (failed) or 3 (torch missing).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import traceback
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PROGRESS_PREFIX = "@zoodesk "
EXIT_FAILED = 1
EXIT_NO_TORCH = 3


class WorkerError(Exception):
    """A failure with a message meant for the user; ``kind`` names the step."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _progress(stage: str, message: str) -> None:
    print(PROGRESS_PREFIX + json.dumps({"stage": stage, "message": message}), flush=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _load_torchscript(torch: Any, path: Path) -> Any:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise WorkerError("load", f"{path}: not loadable torchscript ({_first_line(exc)})") from exc


def _architecture_callable(arch: Mapping[str, Any], package_root: Path) -> Any:
    name = str(arch["callable"])
    if arch.get("import_from"):
        module_name = str(arch["import_from"])
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise WorkerError(
                "architecture", f"cannot import {module_name} ({_first_line(exc)})"
            ) from exc
        origin = module_name
    else:
        path = Path(arch["path"])
        # Architecture files may import modules that sit beside them in the package.
        sys.path.insert(0, str(package_root))
        spec = importlib.util.spec_from_file_location(f"_zoodesk_architecture_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise WorkerError("architecture", f"{path}: not a Python module")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise WorkerError(
                "architecture", f"{path}: fails to import ({_first_line(exc)})"
            ) from exc
        origin = str(path)
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        raise WorkerError("architecture", f"{origin}: defines no callable {name!r}")
    return factory


def _load_state_dict_model(
    torch: Any, weights: Path, arch: Mapping[str, Any], package_root: Path
) -> Any:
    factory = _architecture_callable(arch, package_root)
    try:
        model = factory(**dict(arch.get("kwargs") or {}))
    except Exception as exc:
        raise WorkerError(
            "architecture", f"{arch['callable']}(...) failed: {_first_line(exc)}"
        ) from exc
    if not isinstance(model, torch.nn.Module):
        raise WorkerError("architecture", f"{arch['callable']} did not return a torch module")
    try:
        # weights_only: a state dict is tensors; unpickling arbitrary objects would run
        # code beyond the architecture the user agreed to.
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WorkerError(
            "load", f"{weights}: not a loadable state dict of tensors ({_first_line(exc)})"
        ) from exc
    try:
        model.load_state_dict(state, strict=bool(arch.get("strict", True)))
    except Exception as exc:
        raise WorkerError(
            "load", f"{weights}: does not fit {arch['callable']} ({_first_line(exc)})"
        ) from exc
    return model


def _as_outputs(result: Any, count: int) -> list[Any]:
    if isinstance(result, Mapping):
        result = list(result.values())
    outputs = list(result) if isinstance(result, list | tuple) else [result]
    if len(outputs) != count:
        raise WorkerError(
            "run", f"the model returns {len(outputs)} output(s), the description declares {count}"
        )
    return outputs


def _dynamic_axes(tensors: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, str]]:
    return {
        str(t["id"]): {int(i): str(n) for i, n in t["dynamic_axes"].items()}
        for t in tensors
        if t["dynamic_axes"]
    }


def _export(torch: Any, model: Any, example: tuple[Any, ...], job: Mapping[str, Any]) -> list[str]:
    """Export to ONNX with dynamic axes, or with fixed shapes if that fails."""
    notes: list[str] = []
    dynamic = {**_dynamic_axes(job["inputs"]), **_dynamic_axes(job["outputs"])}
    kwargs = {
        "input_names": [str(t["id"]) for t in job["inputs"]],
        "output_names": [str(t["id"]) for t in job["outputs"]],
        "opset_version": int(job["opset_version"]),
        "do_constant_folding": True,
        # The TorchScript-based exporter: the torch.export-based one (dynamo=True)
        # cannot take torchscript modules and needs onnxscript.
        "dynamo": False,
    }
    target = str(job["onnx"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, example, target, dynamic_axes=dynamic, **kwargs)
            return notes
        except Exception as exc:
            if not dynamic:
                raise WorkerError("export", f"ONNX export failed: {_first_line(exc)}") from exc
            notes.append(f"export with dynamic axes failed ({_first_line(exc)}); fixed shapes used")
        _progress("export", "exporting to ONNX with fixed shapes")
        try:
            torch.onnx.export(model, example, target, **kwargs)
        except Exception as exc:
            raise WorkerError("export", f"ONNX export failed: {_first_line(exc)}") from exc
    return notes


def convert(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run one conversion job (see the module docstring); return the result."""
    try:
        import torch
    except ImportError as exc:
        raise WorkerError(
            "no-torch",
            f"torch is not installed ({_first_line(exc)}): install the convert extra "
            "(pip install 'zoodesk[convert]')",
        ) from exc
    weights = Path(job["weights"])
    fmt = str(job["format"])
    _progress("load", f"loading {fmt} weights {weights.name} (torch {torch.__version__})")
    if fmt == "torchscript":
        model = _load_torchscript(torch, weights)
    elif fmt == "pytorch_state_dict":
        model = _load_state_dict_model(
            torch, weights, job["architecture"], Path(job["package_root"])
        )
    else:
        raise WorkerError("format", f"cannot convert {fmt} weights")
    model = model.eval()
    example = tuple(torch.from_numpy(np.load(p, allow_pickle=False)) for p in job["example_inputs"])
    _progress("run", "running the weights on the test inputs")
    try:
        with torch.no_grad():
            outputs = _as_outputs(model(*example), len(job["outputs"]))
    except WorkerError:
        raise
    except Exception as exc:
        raise WorkerError("run", f"the model fails on its test inputs: {_first_line(exc)}") from exc
    for out, path in zip(outputs, job["reference_outputs"], strict=True):
        np.save(path, out.detach().cpu().numpy())
    _progress("export", f"exporting to ONNX (opset {job['opset_version']})")
    notes = _export(torch, model, example, job)
    return {"ok": True, "torch_version": str(torch.__version__), "notes": notes}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m zoodesk.models._convert_worker JOB.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m zoodesk.models._convert_worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    result_path = Path(job["result"])
    status = 0
    try:
        result = convert(job)
    except WorkerError as exc:
        result = {"ok": False, "kind": exc.kind, "error": str(exc)}
        status = EXIT_NO_TORCH if exc.kind == "no-torch" else EXIT_FAILED
    except Exception as exc:
        # Anything else is unexpected: keep the traceback in the worker's log.
        traceback.print_exc()
        result = {"ok": False, "kind": "crash", "error": _first_line(exc)}
        status = EXIT_FAILED
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main())
