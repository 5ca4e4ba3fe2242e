"""PyInstaller hook for ONNX Runtime (replaces the contrib hook of the same name).

ONNX Runtime ships as three distributions that all provide the ``onnxruntime``
package: ``onnxruntime`` (CPU, CoreML on macOS), ``onnxruntime-gpu`` (CUDA) and
``onnxruntime-directml`` (Windows).  The execution providers are shared libraries
that ONNX Runtime loads by name at run time, so the import graph never shows them:
collect every library in the package except TensorRT's, which needs a TensorRT
installation that a workstation does not have.  The distribution's metadata is
copied so that run records can state which runtime produced a result.
"""

from __future__ import annotations

from importlib import metadata

from PyInstaller.utils.hooks import collect_dynamic_libs, copy_metadata

#: Distributions that provide the ``onnxruntime`` package, one per installer variant.
RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml")
#: Provider libraries that ZooDesk never asks for (see zoodesk.inference.devices).
UNUSED_PROVIDER_MARKERS = ("tensorrt", "openvino", "migraphx", "rocm", "vitisai", "qnn")


def _installed_runtimes() -> list[str]:
    found = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


binaries = [
    (src, dest)
    for src, dest in collect_dynamic_libs("onnxruntime")
    if not any(marker in src.lower() for marker in UNUSED_PROVIDER_MARKERS)
]

datas = []
for _name in _installed_runtimes():
    datas += copy_metadata(_name)

# The Python tools around the runtime (model conversion, quantisation, transformer
# optimisers) import onnx, torch and sympy; ZooDesk only runs sessions.
excludedimports = [
    "onnxruntime.tools",
    "onnxruntime.transformers",
    "onnxruntime.quantization",
    "onnxruntime.training",
    "onnx",
    "torch",
    "sympy",
    "coloredlogs",
]
