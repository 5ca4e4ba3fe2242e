"""What ZooDesk can do with a model description.

ZooDesk executes ONNX weights only.  A model is therefore either run directly
(it ships ONNX weights), run after converting its weights to ONNX (torchscript
needs only torch; ``pytorch_state_dict`` also executes the architecture code shipped in
the package, so it needs the user's explicit consent; Keras and TensorFlow weights
need TensorFlow), or not run at all, with the reason.  The decision is made here
once, for the catalogue, the cache and the compatibility report alike.

What a model needs (:class:`Compatibility`) is a property of its description; what
this installation makes of it (:func:`capability_here`: "runs", "converts here",
"needs the full variant", "needs TensorFlow", "cannot run") also depends on the
frameworks at hand, described by an :class:`Installation`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from zoodesk.models.spec import SUPPORTED_OPS, TENSORFLOW_WEIGHTS_FORMATS, ModelSpec

if TYPE_CHECKING:
    from zoodesk.models.package import ModelPackage

Action = Literal["run", "convert", "convert-with-consent", "convert-tensorflow", "none"]
ACTIONS: tuple[Action, ...] = (
    "run",
    "convert",
    "convert-with-consent",
    "convert-tensorflow",
    "none",
)


_ACTION_TEXT: dict[Action, str] = {
    "run": "runs the ONNX weights directly",
    "convert": "runs after converting its torchscript weights to ONNX (needs torch)",
    "convert-with-consent": (
        "runs after converting its pytorch_state_dict weights to ONNX (needs torch and "
        "your consent: conversion executes the architecture code shipped in the package)"
    ),
    "convert-tensorflow": (
        "runs after converting its Keras/TensorFlow weights to ONNX (needs TensorFlow)"
    ),
    "none": "cannot be run",
}


@dataclass(frozen=True)
class Compatibility:
    """What ZooDesk would do with one model.

    Attributes
    ----------
    action
        ``"run"`` (ONNX weights), ``"convert"`` (torchscript to ONNX),
        ``"convert-with-consent"`` (pytorch_state_dict to ONNX, runs package code) or
        ``"none"``.
    weights_format
        The weights format that would be run or converted; None when nothing can be.
    reason
        One readable line explaining the decision.
    spatial_dims
        Number of spatial axes of the (largest) input: 2 or 3; None when unknown.
    notes
        Further remarks that do not change the decision.
    """

    action: Action
    weights_format: str | None
    reason: str
    spatial_dims: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def runnable(self) -> bool:
        """True when ZooDesk can run the model, possibly after conversion."""
        return self.action != "none"

    @property
    def needs_consent(self) -> bool:
        """True when preparing the model executes code shipped in the package."""
        return self.action == "convert-with-consent"

    @property
    def dims_label(self) -> str:
        """``"2D"``, ``"3D"`` or ``"?"``."""
        return f"{self.spatial_dims}D" if self.spatial_dims else "?"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (inverse of :meth:`from_dict`)."""
        return {
            "action": self.action,
            "weights_format": self.weights_format,
            "reason": self.reason,
            "spatial_dims": self.spatial_dims,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Compatibility:
        """Rebuild a :class:`Compatibility` saved with :meth:`as_dict`."""
        action = data.get("action")
        if action not in ACTIONS:
            raise ValueError(f"unknown compatibility action {action!r}")
        dims = data.get("spatial_dims")
        return cls(
            action=action,
            weights_format=data.get("weights_format"),
            reason=str(data.get("reason", "")),
            spatial_dims=int(dims) if dims is not None else None,
            notes=tuple(str(n) for n in data.get("notes") or ()),
        )


def assess(
    weights_formats: Iterable[str],
    *,
    problems: Sequence[str] = (),
    ops: Iterable[str] = (),
    spatial_dims: int | None = None,
) -> Compatibility:
    """Decide what ZooDesk can do with a model.

    Parameters
    ----------
    weights_formats
        The weights formats the description offers.
    problems
        Reasons the description cannot be loaded (validation errors); any problem
        makes the model unusable, the first one is quoted.
    ops
        Ids of all pre- and postprocessing steps.
    spatial_dims
        Number of spatial axes of the input, reported as is.

    Returns
    -------
    Compatibility
        The action, the weights format concerned and the reason.
    """
    formats = list(dict.fromkeys(weights_formats))
    notes: list[str] = []
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return Compatibility(
            "none", None, f"invalid description: {problems[0]}{more}", spatial_dims
        )
    unknown = sorted({op for op in ops if op not in SUPPORTED_OPS})
    if unknown:
        return Compatibility(
            "none",
            None,
            f"uses processing steps ZooDesk does not implement: {', '.join(unknown)}",
            spatial_dims,
        )
    if not formats:
        return Compatibility("none", None, "the description lists no weights", spatial_dims)
    if spatial_dims is None:
        notes.append("number of spatial axes unknown")
    if "onnx" in formats:
        return Compatibility("run", "onnx", _ACTION_TEXT["run"], spatial_dims, tuple(notes))
    if "torchscript" in formats:
        return Compatibility(
            "convert", "torchscript", _ACTION_TEXT["convert"], spatial_dims, tuple(notes)
        )
    if "pytorch_state_dict" in formats:
        return Compatibility(
            "convert-with-consent",
            "pytorch_state_dict",
            _ACTION_TEXT["convert-with-consent"],
            spatial_dims,
            tuple(notes),
        )
    for fmt in TENSORFLOW_WEIGHTS_FORMATS:
        if fmt in formats:
            return Compatibility(
                "convert-tensorflow",
                fmt,
                _ACTION_TEXT["convert-tensorflow"],
                spatial_dims,
                tuple(notes),
            )
    return Compatibility(
        "none",
        None,
        f"only {', '.join(formats)} weights: ZooDesk runs ONNX and converts PyTorch, "
        "Keras and TensorFlow saved-model weights",
        spatial_dims,
    )


def compatibility_of_spec(spec: ModelSpec, available: Iterable[str] | None = None) -> Compatibility:
    """What ZooDesk can do with a loaded (hence valid) model description.

    ``available`` restricts the weights formats considered to those actually at hand
    (e.g. the files present in the cache).
    """
    formats = [f for f in spec.weights if available is None or f in set(available)]
    ops = [
        op.id
        for tensor in (*spec.inputs, *spec.outputs)
        for op in (*tensor.preprocessing, *tensor.postprocessing)
    ]
    dims = max((t.spatial_ndim for t in spec.inputs), default=0) or None
    return assess(formats, ops=ops, spatial_dims=dims)


def module_installed(module: str) -> bool:
    """True when the top-level package of ``module`` can be found; nothing is imported."""
    import importlib.util

    try:
        # find_spec on the top-level name does not import it.
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def compatibility_of_package(
    package: ModelPackage, available: Iterable[str] | None = None
) -> Compatibility:
    """Like :func:`compatibility_of_spec`, also checking what a conversion would need.

    State-dict weights need their architecture: a file of the package (which must be
    there) or an installed module (which must be importable here).
    """
    compat = compatibility_of_spec(package.spec, available)
    if compat.weights_format != "pytorch_state_dict":
        return compat
    weights = package.spec.weights["pytorch_state_dict"]
    entry = getattr(getattr(package.descr, "weights", None), "pytorch_state_dict", None)
    module = getattr(getattr(entry, "architecture", None), "import_from", None)
    if module:
        if module_installed(str(module)):
            return compat
        return Compatibility(
            "none",
            None,
            f"the pytorch_state_dict weights need the Python module {module}, "
            "which is not installed here",
            compat.spatial_dims,
        )
    arch = weights.architecture
    if arch is not None and not arch.is_remote and package.path_of(arch).is_file():
        return compat
    return architecture_missing(compat, arch.source if arch is not None else "(none named)")


def architecture_missing(compat: Compatibility, code: str) -> Compatibility:
    """``compat`` of state-dict weights whose architecture file ``code`` is not there."""
    return Compatibility(
        "none",
        None,
        f"the pytorch_state_dict weights need their architecture code {code}, "
        "which is not in the package",
        compat.spatial_dims,
    )


def action_text(action: Action) -> str:
    """A short readable description of an action."""
    return _ACTION_TEXT[action]


# ------------------------------------------------------------ this installation

Verdict = Literal[
    "runs",
    "converts here",
    "needs the full variant",
    "needs the convert extra",
    "needs TensorFlow",
    "cannot run",
]


@dataclass(frozen=True)
class Installation:
    """What this installation of ZooDesk can convert.

    Attributes
    ----------
    convertible
        Weights formats it converts to ONNX (torch, TensorFlow at hand).
    frozen
        True for the standalone application (its variants decide what converts).
    """

    convertible: frozenset[str] = frozenset()
    frozen: bool = False


@dataclass(frozen=True)
class Capability:
    """What this installation makes of one model: a short verdict and its reason."""

    verdict: Verdict
    reason: str

    @property
    def label(self) -> str:
        """The verdict, with the reason for "cannot run": ``"cannot run: why"``."""
        return f"cannot run: {self.reason}" if self.verdict == "cannot run" else self.verdict

    def as_dict(self) -> dict[str, str]:
        """A JSON-ready dictionary."""
        return {"verdict": self.verdict, "label": self.label, "reason": self.reason}


def capability_here(compat: Compatibility, installation: Installation) -> Capability:
    """What ``installation`` can do with a model that needs ``compat``."""
    fmt = compat.weights_format
    if compat.action == "run":
        return Capability("runs", compat.reason)
    if compat.action == "none" or fmt is None:
        return Capability("cannot run", compat.reason)
    if fmt in installation.convertible:
        return Capability("converts here", compat.reason)
    if compat.action == "convert-tensorflow":
        return Capability("needs TensorFlow", compat.reason)
    if installation.frozen:
        return Capability("needs the full variant", compat.reason)
    return Capability("needs the convert extra", compat.reason)
