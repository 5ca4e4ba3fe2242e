"""The part of weights conversion that needs torch or TensorFlow, in a process of its own.

Started by :mod:`zoodesk.conversion.pipeline`, which never imports either framework
itself: a crash, a hang or whatever the architecture code does stays in this
process, and the caller can stop it.  From a Python installation it runs as
``python -m zoodesk.conversion._worker JOB.json``; in the standalone application the
executable runs it through the hidden command ``zoodesk-cli _conversion-worker
JOB.json`` (:mod:`zoodesk.conversion.launch`).

The job file (JSON) holds::

    format            "torchscript", "pytorch_state_dict", "keras_hdf5" or
                      "tensorflow_saved_model_bundle"
    weights           path of the weights file (a saved model: its folder or .zip)
    architecture      {"path", "callable", "kwargs", "strict", "import_from",
                       "environment"} (state dict)
    package_root      folder put first on sys.path for the architecture's own imports
    inputs, outputs   [{"id", "dynamic_axes": {index: name}}], in the model's order
    example_inputs    .npy files, one per input (already preprocessed)
    reference_outputs .npy files to write the framework's outputs to, one per output
    onnx              where to write the ONNX model
    opset_version     ONNX opset
    result            where to write the result (JSON)

Whatever a model returns (a tensor, a tuple, a list or a dict of tensors) is exported
as one ONNX output per tensor, in the description's order.

Progress goes to stdout as lines starting with ``@zoodesk `` followed by JSON (other
output, e.g. prints of the architecture code, is left alone).  The result file holds
``{"ok": true, "framework_version", "notes"}`` or ``{"ok": false, "kind", "error"}``;
the exit status is 0, 1 (failed) or 3 (the framework is not installed).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import traceback
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PROGRESS_PREFIX = "@zoodesk "
EXIT_FAILED = 1
EXIT_NO_FRAMEWORK = 3
TORCH_FORMATS = ("torchscript", "pytorch_state_dict")
TENSORFLOW_FORMATS = ("keras_hdf5", "tensorflow_saved_model_bundle")


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


def _import_failure(framework: str, exc: ImportError) -> WorkerError:
    """Not installed at all, or installed but broken: two different messages."""
    missing = getattr(exc, "name", None)
    if isinstance(exc, ModuleNotFoundError) and missing and "." not in missing:
        return WorkerError("no-framework", f"{framework} is not installed ({_first_line(exc)})")
    return WorkerError(
        "framework", f"{framework} is installed but fails to import: {_first_line(exc)}"
    )


# ------------------------------------------------------------------------ outputs


def _output_keys(result: Any, count: int) -> list[int | str] | None:
    """How to pick each declared output from what the model returned.

    None: the result is the only output itself.  Otherwise one index (tuple, list)
    or key (dict, in its order) per output.
    """
    if isinstance(result, Mapping):
        keys: list[int | str] = [str(k) for k in result]
    elif isinstance(result, list | tuple):
        keys = list(range(len(result)))
    else:
        keys = []
    found = len(keys) or 1
    if found != count:
        raise WorkerError(
            "run", f"the model returns {found} output(s), the description declares {count}"
        )
    return keys or None


def _pick(result: Any, keys: list[int | str] | None) -> list[Any]:
    return [result] if keys is None else [result[k] for k in keys]


# -------------------------------------------------------------------------- torch


def _load_torchscript(torch: Any, path: Path) -> Any:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise WorkerError("load", f"{path}: not loadable torchscript ({_first_line(exc)})") from exc


def _missing_module_message(exc: ModuleNotFoundError, arch: Mapping[str, Any]) -> str:
    environment = arch.get("environment")
    where = f"; the model declares its environment in {environment}" if environment else ""
    return (
        f"the architecture needs the Python module {exc.name!r}, which is not installed here{where}"
    )


def _architecture_callable(arch: Mapping[str, Any], package_root: Path) -> Any:
    name = str(arch["callable"])
    if arch.get("import_from"):
        module_name = str(arch["import_from"])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise WorkerError("architecture", _missing_module_message(exc, arch)) from exc
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
        except ModuleNotFoundError as exc:
            raise WorkerError(
                "architecture", f"{path}: {_missing_module_message(exc, arch)}"
            ) from exc
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


_SCRIPTED_WRAPPER = '''"""Written by ZooDesk: a torchscript module's outputs as a flat tuple."""
from typing import Tuple

import torch


class FlatOutputs(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, {args}) -> Tuple[{types}]:
        result = self.inner({args})
        return ({picks},)
'''


def _flat_outputs(
    torch: Any, model: Any, keys: list[int | str] | None, n_inputs: int, work: Path
) -> Any:
    """The model with one output per tensor, as torch's ONNX exporter needs it.

    A torchscript module cannot be traced inside a Python wrapper, so its wrapper is
    itself torchscript, compiled from source written for this model's outputs.
    """
    if keys is None:
        return model
    if isinstance(model, torch.jit.ScriptModule):
        args = ", ".join(f"input_{i}" for i in range(n_inputs))
        source = _SCRIPTED_WRAPPER.format(
            args=args,
            types=", ".join(["torch.Tensor"] * len(keys)),
            picks=", ".join(f"result[{k!r}]" for k in keys),
        )
        path = work / "_zoodesk_flat_outputs.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location("_zoodesk_flat_outputs", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        try:
            return torch.jit.script(module.FlatOutputs(model))
        except Exception as exc:
            raise WorkerError(
                "export", f"cannot flatten the model's outputs ({_first_line(exc)})"
            ) from exc

    class FlatOutputs(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> tuple[Any, ...]:
            return tuple(_pick(self.inner(*args), keys))

    return FlatOutputs(model)


def _dynamic_axes(tensors: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, str]]:
    return {
        str(t["id"]): {int(i): str(n) for i, n in t["dynamic_axes"].items()}
        for t in tensors
        if t["dynamic_axes"]
    }


def _torch_export(
    torch: Any, model: Any, example: tuple[Any, ...], job: Mapping[str, Any]
) -> list[str]:
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


def _convert_torch(job: Mapping[str, Any], work: Path) -> dict[str, Any]:
    try:
        import torch
    except ImportError as exc:
        raise _import_failure("torch", exc) from exc
    weights = Path(job["weights"])
    fmt = str(job["format"])
    _progress("load", f"loading {fmt} weights {weights.name} (torch {torch.__version__})")
    if fmt == "torchscript":
        model = _load_torchscript(torch, weights)
    else:
        model = _load_state_dict_model(
            torch, weights, job["architecture"], Path(job["package_root"])
        )
    model = model.eval()
    example = tuple(torch.from_numpy(np.load(p, allow_pickle=False)) for p in job["example_inputs"])
    _progress("run", "running the weights on the test inputs")
    try:
        with torch.no_grad():
            result = model(*example)
    except Exception as exc:
        raise WorkerError("run", f"the model fails on its test inputs: {_first_line(exc)}") from exc
    keys = _output_keys(result, len(job["outputs"]))
    for out, path in zip(_pick(result, keys), job["reference_outputs"], strict=True):
        np.save(path, out.detach().cpu().numpy())
    _progress("export", f"exporting to ONNX (opset {job['opset_version']})")
    flat = _flat_outputs(torch, model, keys, len(example), work)
    notes = _torch_export(torch, flat, example, job)
    return {"ok": True, "framework_version": f"torch {torch.__version__}", "notes": notes}


# --------------------------------------------------------------------- tensorflow


def _saved_model_folder(weights: Path, work: Path) -> Path:
    """The folder of a saved model given as a folder or a zip of one."""
    if weights.is_dir():
        folder = weights
    else:
        folder = work / "saved_model"
        with zipfile.ZipFile(weights) as archive:
            for member in archive.namelist():
                target = (folder / member).resolve()
                if not target.is_relative_to(folder.resolve()):
                    raise WorkerError("load", f"{weights}: member {member!r} leaves the archive")
            archive.extractall(folder)
    found = sorted(p.parent for p in folder.rglob("saved_model.pb"))
    if not found:
        raise WorkerError("load", f"{weights}: no saved_model.pb inside")
    return found[0]


def _keras_to_onnx(
    tf: Any, tf2onnx: Any, job: Mapping[str, Any], examples: list[np.ndarray]
) -> list[Any]:
    """Convert a Keras HDF5 model; return its own outputs on the examples."""
    weights = Path(job["weights"])
    try:
        model = tf.keras.models.load_model(str(weights), compile=False)
    except Exception as exc:
        message = f"{weights}: not a loadable Keras model ({_first_line(exc)})"
        raise WorkerError("load", message) from exc
    _progress("run", "running the weights on the test inputs")
    result = model([tf.constant(x) for x in examples] if len(examples) > 1 else examples[0])
    outputs = _pick(result, _output_keys(result, len(job["outputs"])))
    # Batch and spatial axes stay free in the graph: None in the input signature.
    signature = tuple(
        tf.TensorSpec(
            [None if str(i) in map(str, t["dynamic_axes"]) else n for i, n in enumerate(x.shape)],
            tf.as_dtype(x.dtype),
            name=str(t["id"]),
        )
        for t, x in zip(job["inputs"], examples, strict=True)
    )
    _progress("export", f"exporting to ONNX (opset {job['opset_version']})")
    try:
        tf2onnx.convert.from_keras(
            model,
            input_signature=signature,
            opset=int(job["opset_version"]),
            output_path=str(job["onnx"]),
        )
    except Exception as exc:
        raise WorkerError("export", f"ONNX export failed: {_first_line(exc)}") from exc
    return outputs


def _saved_model_to_onnx(
    tf: Any, tf2onnx: Any, job: Mapping[str, Any], examples: list[np.ndarray], work: Path
) -> list[Any]:
    """Convert a TensorFlow saved model (its serving signature); return its outputs."""
    from tf2onnx import tf_loader

    weights = Path(job["weights"])
    folder = _saved_model_folder(weights, work)
    try:
        function = tf.saved_model.load(str(folder)).signatures["serving_default"]
    except Exception as exc:
        message = f"{weights}: not a loadable saved model ({_first_line(exc)})"
        raise WorkerError("load", message) from exc
    signature = function.structured_input_signature[1]
    if len(signature) != len(examples):
        raise WorkerError(
            "run",
            f"the saved model takes {len(signature)} input(s), the description declares "
            f"{len(examples)}",
        )
    _progress("run", "running the weights on the test inputs")
    # Inputs by name order; each takes the signature's data type (uint8 test inputs).
    feeds = {
        name: tf.constant(x, dtype=signature[name].dtype)
        for name, x in zip(sorted(signature), examples, strict=True)
    }
    result = function(**feeds)
    out_ids = [str(t["id"]) for t in job["outputs"]]
    ordered = [k for k in out_ids if k in result] or sorted(result)
    if len(ordered) != len(out_ids):
        raise WorkerError(
            "run",
            f"the model returns {len(ordered)} output(s), the description declares {len(out_ids)}",
        )
    _progress("export", f"exporting to ONNX (opset {job['opset_version']})")
    try:
        graph_def, ins, outs, _tables, renames = tf_loader.from_saved_model(
            str(folder), None, None, return_initialized_tables=True, return_tensors_to_rename=True
        )
        order = {name: i for i, name in enumerate(ordered)}
        tf2onnx.convert.from_graph_def(
            graph_def,
            input_names=sorted(ins, key=lambda i: renames.get(i, i)),
            output_names=sorted(outs, key=lambda o: order.get(renames.get(o, o), len(order))),
            opset=int(job["opset_version"]),
            tensors_to_rename=renames,
            output_path=str(job["onnx"]),
        )
    except Exception as exc:
        raise WorkerError("export", f"ONNX export failed: {_first_line(exc)}") from exc
    return [result[k] for k in ordered]


def _convert_tensorflow(job: Mapping[str, Any], work: Path) -> dict[str, Any]:
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as exc:
        raise _import_failure("TensorFlow", exc) from exc
    fmt = str(job["format"])
    name = Path(job["weights"]).name
    _progress("load", f"loading {fmt} weights {name} (TensorFlow {tf.__version__})")
    examples = [np.load(p, allow_pickle=False) for p in job["example_inputs"]]
    if fmt == "keras_hdf5":
        outputs = _keras_to_onnx(tf, tf2onnx, job, examples)
    else:
        outputs = _saved_model_to_onnx(tf, tf2onnx, job, examples, work)
    for out, path in zip(outputs, job["reference_outputs"], strict=True):
        np.save(path, np.asarray(out))
    return {"ok": True, "framework_version": f"TensorFlow {tf.__version__}", "notes": []}


# ---------------------------------------------------------------------------- job


def convert(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run one conversion job (see the module docstring); return the result."""
    fmt = str(job["format"])
    work = Path(job["result"]).parent
    if fmt in TORCH_FORMATS:
        return _convert_torch(job, work)
    if fmt in TENSORFLOW_FORMATS:
        return _convert_tensorflow(job, work)
    raise WorkerError("format", f"cannot convert {fmt} weights")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m zoodesk.conversion._worker JOB.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m zoodesk.conversion._worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    result_path = Path(job["result"])
    status = 0
    try:
        result = convert(job)
    except WorkerError as exc:
        result = {"ok": False, "kind": exc.kind, "error": str(exc)}
        status = EXIT_NO_FRAMEWORK if exc.kind == "no-framework" else EXIT_FAILED
    except Exception as exc:
        # Anything else is unexpected: keep the traceback in the worker's log.
        traceback.print_exc()
        result = {"ok": False, "kind": "crash", "error": _first_line(exc)}
        status = EXIT_FAILED
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main())
