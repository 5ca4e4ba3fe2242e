"""A compact, framework-free view of a bioimage.io model description.

bioimageio.spec parses and validates descriptions (format 0.4 and 0.5, the former
converted to the latter).  The engine, however, needs only a small part of them and
reads it on the hot path, so :func:`model_spec_from_descr` flattens a validated
``ModelDescr`` into the frozen dataclasses below once per model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

AxisKind = Literal["batch", "channel", "space", "time", "index"]

#: Weights formats that ZooDesk executes directly.
EXECUTABLE_WEIGHTS_FORMATS = ("onnx",)
#: Weights formats converted to ONNX with torch, best first (torchscript runs no code
#: from the package; a state dict runs its architecture code).
PYTORCH_WEIGHTS_FORMATS = ("torchscript", "pytorch_state_dict")
#: Weights formats converted to ONNX with TensorFlow and tf2onnx, best first.
TENSORFLOW_WEIGHTS_FORMATS = ("keras_hdf5", "tensorflow_saved_model_bundle")
#: Weights formats that ZooDesk converts to ONNX, in the order they are preferred.
CONVERTIBLE_WEIGHTS_FORMATS = (*PYTORCH_WEIGHTS_FORMATS, *TENSORFLOW_WEIGHTS_FORMATS)
#: Pre- and postprocessing steps (bioimage.io ids) that zoodesk.inference.processing
#: implements: every step the specification defines, formats 0.4 and 0.5.
SUPPORTED_OPS = frozenset(
    {
        "binarize",
        "clip",
        "ensure_dtype",
        "fixed_zero_mean_unit_variance",
        "scale_linear",
        "scale_mean_variance",
        "scale_range",
        "sigmoid",
        "softmax",
        "zero_mean_unit_variance",
    }
)


@dataclass(frozen=True)
class SizeReference:
    """The size of an axis given by another tensor's axis: ``ref * ref_scale / scale + offset``."""

    tensor_id: str
    axis_id: str
    offset: int = 0


@dataclass(frozen=True)
class AxisSpec:
    """One axis of a model tensor.

    Exactly one of ``size`` (fixed), ``min``/``step`` (``min + n * step``, n >= 0) or
    ``reference`` describes the size; an output axis whose size depends on the data
    has none of them.
    """

    id: str
    kind: AxisKind
    size: int | None = None
    min: int | None = None
    step: int | None = None
    reference: SizeReference | None = None
    scale: float = 1.0
    halo: int = 0
    channel_names: tuple[str, ...] = ()
    unit: str | None = None

    @property
    def is_spatial(self) -> bool:
        """True for axes that are tiled (space, and time axes treated like space)."""
        return self.kind in ("space", "time")

    @property
    def letter(self) -> str:
        """The single letter of the axis in an axes string such as ``"bcyx"``."""
        if self.kind == "batch":
            return "b"
        if self.kind == "channel":
            return "c"
        if self.kind == "time":
            return "t"
        if self.kind == "index":
            return "i"
        return self.id[0]

    def allowed_sizes_at_least(self, n: int) -> int:
        """The smallest size this (input) axis accepts that is >= ``n``.

        For a fixed size that is the size itself (the caller pads or tiles).
        """
        if self.size is not None:
            return self.size
        if self.min is not None:
            step = self.step or 0
            if n <= self.min or step == 0:
                return self.min
            k = -(-(n - self.min) // step)
            return self.min + k * step
        return n


@dataclass(frozen=True)
class OpSpec:
    """A pre- or postprocessing step: its bioimage.io id and keyword arguments."""

    id: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileRef:
    """A file of the package: a path relative to the package root, or a URL."""

    source: str
    sha256: str | None = None

    @property
    def is_remote(self) -> bool:
        return self.source.startswith(("http://", "https://"))


@dataclass(frozen=True)
class TensorSpec:
    """An input or output tensor of the model."""

    id: str
    axes: tuple[AxisSpec, ...]
    description: str = ""
    preprocessing: tuple[OpSpec, ...] = ()
    postprocessing: tuple[OpSpec, ...] = ()
    test_tensor: FileRef | None = None
    sample_tensor: FileRef | None = None
    data_type: str = "float32"
    data_range: tuple[float | None, float | None] = (None, None)
    optional: bool = False

    @property
    def axis_ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.axes)

    @property
    def axes_letters(self) -> str:
        return "".join(a.letter for a in self.axes)

    def axis(self, axis_id: str) -> AxisSpec:
        for a in self.axes:
            if a.id == axis_id:
                return a
        raise KeyError(f"tensor {self.id!r} has no axis {axis_id!r}")

    def index_of(self, axis_id: str) -> int:
        return self.axis_ids.index(axis_id)

    @property
    def channel_count(self) -> int | None:
        for a in self.axes:
            if a.kind == "channel":
                return len(a.channel_names) or a.size
        return None

    @property
    def spatial_ndim(self) -> int:
        return sum(1 for a in self.axes if a.kind == "space")


@dataclass(frozen=True)
class WeightsSpec:
    """One weights entry of the description."""

    format: str
    source: FileRef
    parent: str | None = None
    opset_version: int | None = None
    framework_version: str | None = None
    architecture: FileRef | None = None
    architecture_callable: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Tolerance:
    """Allowed numerical difference between reproduced and declared test outputs."""

    relative: float = 1e-3
    absolute: float = 1e-3
    mismatched_per_million: float = 100.0
    output_ids: tuple[str, ...] = ()
    weights_formats: tuple[str, ...] = ()

    def applies_to(self, output_id: str, weights_format: str) -> bool:
        return (not self.output_ids or output_id in self.output_ids) and (
            not self.weights_formats or weights_format in self.weights_formats
        )


@dataclass(frozen=True)
class ModelSpec:
    """The parts of a model description that ZooDesk needs to run and cite it."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    weights: Mapping[str, WeightsSpec]
    id: str | None = None
    version: str | None = None
    description: str = ""
    format_version: str = "0.5"
    license: str | None = None
    authors: tuple[str, ...] = ()
    cite: tuple[Mapping[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    documentation: str | None = None
    covers: tuple[str, ...] = ()
    tolerances: tuple[Tolerance, ...] = ()

    def tensor(self, tensor_id: str) -> TensorSpec:
        for t in (*self.inputs, *self.outputs):
            if t.id == tensor_id:
                return t
        raise KeyError(f"model {self.name!r} has no tensor {tensor_id!r}")

    @property
    def is_3d(self) -> bool:
        return any(t.spatial_ndim >= 3 for t in self.inputs)

    def tolerance_for(self, output_id: str, weights_format: str) -> Tolerance:
        """The description's tolerance for this output, else bioimageio.core's default."""
        for tol in self.tolerances:
            if tol.applies_to(output_id, weights_format):
                return tol
        return Tolerance()


# --------------------------------------------------------------------------- parsing


def _file_ref(source: Any, sha256: Any = None) -> FileRef:
    # bioimageio.spec wraps sources in RelativeFilePath / HttpUrl / FileDescr objects.
    if source is None:
        raise ValueError("missing file source")
    if hasattr(source, "source") and not isinstance(source, str | Path):
        sha256 = sha256 or getattr(source, "sha256", None)
        source = source.source
    text = str(source)
    if hasattr(source, "path") and not text.startswith(("http://", "https://")):
        text = str(source.path)
    return FileRef(source=text.replace("\\", "/"), sha256=str(sha256) if sha256 else None)


def _axis_spec(axis: Any) -> AxisSpec:
    kind: AxisKind = axis.type
    size = getattr(axis, "size", None)
    kwargs: dict[str, Any] = {
        "id": str(axis.id),
        "kind": kind,
        "scale": float(getattr(axis, "scale", 1.0) or 1.0),
        "halo": int(getattr(axis, "halo", 0) or 0),
        "unit": str(axis.unit) if getattr(axis, "unit", None) else None,
    }
    if kind == "channel":
        names = tuple(str(n) for n in axis.channel_names)
        kwargs["channel_names"] = names
        kwargs["size"] = len(names)
    elif isinstance(size, int):
        kwargs["size"] = size
    elif size is None:
        pass
    elif hasattr(size, "tensor_id"):
        kwargs["reference"] = SizeReference(
            tensor_id=str(size.tensor_id), axis_id=str(size.axis_id), offset=int(size.offset)
        )
    elif hasattr(size, "step"):
        kwargs["min"] = int(size.min)
        kwargs["step"] = int(size.step)
    # DataDependentSize (outputs only) leaves every size field empty.
    return AxisSpec(**kwargs)


def _op_spec(op: Any) -> OpSpec:
    kwargs = op.kwargs.model_dump(mode="json") if getattr(op, "kwargs", None) is not None else {}
    return OpSpec(id=str(op.id), kwargs=kwargs)


def _data_info(data: Any) -> tuple[str, tuple[float | None, float | None]]:
    if isinstance(data, Sequence) and data:
        data = data[0]
    dtype = str(getattr(data, "type", "float32"))
    rng = getattr(data, "range", (None, None)) or (None, None)
    return dtype, (rng[0], rng[1])


def _tensor_spec(descr: Any) -> TensorSpec:
    dtype, drange = _data_info(getattr(descr, "data", None))
    test = getattr(descr, "test_tensor", None)
    sample = getattr(descr, "sample_tensor", None)
    return TensorSpec(
        id=str(descr.id),
        axes=tuple(_axis_spec(a) for a in descr.axes),
        description=str(getattr(descr, "description", "") or ""),
        preprocessing=tuple(_op_spec(p) for p in getattr(descr, "preprocessing", ()) or ()),
        postprocessing=tuple(_op_spec(p) for p in getattr(descr, "postprocessing", ()) or ()),
        test_tensor=_file_ref(test) if test is not None else None,
        sample_tensor=_file_ref(sample) if sample is not None else None,
        data_type=dtype,
        data_range=drange,
        optional=bool(getattr(descr, "optional", False)),
    )


def _weights_specs(weights: Any, original_sha256: Mapping[str, str]) -> dict[str, WeightsSpec]:
    result: dict[str, WeightsSpec] = {}
    for fmt in (
        "onnx",
        "torchscript",
        "pytorch_state_dict",
        "tensorflow_saved_model_bundle",
        "keras_hdf5",
        "tensorflow_js",
    ):
        entry = getattr(weights, fmt, None)
        if entry is None:
            continue
        sha = getattr(entry, "sha256", None) or original_sha256.get(fmt)
        arch = getattr(entry, "architecture", None)
        arch_ref = None
        arch_callable = None
        if arch is not None and getattr(arch, "source", None) is not None:
            arch_ref = _file_ref(arch.source, getattr(arch, "sha256", None))
            arch_callable = str(getattr(arch, "callable", "") or "") or None
        framework_version = None
        for attr in ("pytorch_version", "tensorflow_version"):
            if getattr(entry, attr, None) is not None:
                framework_version = str(getattr(entry, attr))
        result[fmt] = WeightsSpec(
            format=fmt,
            source=_file_ref(entry.source, sha),
            parent=str(entry.parent) if getattr(entry, "parent", None) else None,
            opset_version=getattr(entry, "opset_version", None),
            framework_version=framework_version,
            architecture=arch_ref,
            architecture_callable=arch_callable,
        )
    return result


def _tolerances(config: Any) -> tuple[Tolerance, ...]:
    bio = getattr(config, "bioimageio", None)
    if bio is None:
        return ()
    tolerances = [
        Tolerance(
            relative=float(t.relative_tolerance),
            absolute=float(t.absolute_tolerance),
            mismatched_per_million=float(t.mismatched_elements_per_million),
            output_ids=tuple(str(o) for o in t.output_ids),
            weights_formats=tuple(str(w) for w in t.weights_formats),
        )
        for t in bio.reproducibility_tolerance
    ]
    # Older descriptions keep per-format tolerances in config.bioimageio.test_kwargs.
    extra = getattr(bio, "model_extra", None) or {}
    for fmt, kw in (extra.get("test_kwargs") or {}).items():
        if isinstance(kw, Mapping):
            tolerances.append(
                Tolerance(
                    relative=float(kw.get("relative_tolerance", 1e-3)),
                    absolute=float(kw.get("absolute_tolerance", 1e-3)),
                    mismatched_per_million=100.0,
                    weights_formats=(str(fmt),),
                )
            )
    return tuple(tolerances)


# ------------------------------------------------------------ converted ONNX weights

#: Entry of a description's ``config.zoodesk`` that records the input sizes accepted by
#: ONNX weights converted by ZooDesk (written by :mod:`zoodesk.models.convert`).
ONNX_INPUT_SIZES = "onnx_input_sizes"


def _zoodesk_config(config: Any) -> Mapping[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        section = config.get("zoodesk")
    else:
        # bioimageio.spec keeps unknown config entries as pydantic extras.
        section = (getattr(config, "model_extra", None) or {}).get("zoodesk")
    return section if isinstance(section, Mapping) else {}


def _resized_axis(axis: AxisSpec, size: Any, where: str) -> AxisSpec:
    if not isinstance(size, Mapping):
        raise ValueError(f"{where}: expected {{min, step}}, got {size!r}")
    low, step = size.get("min"), size.get("step")
    if not isinstance(low, int) or not isinstance(step, int) or low < 1 or step < 0:
        raise ValueError(f"{where}: min must be an integer >= 1 and step one >= 0")
    if axis.kind == "batch":
        return replace(axis, size=None if (low, step) == (1, 1) else low)
    if not axis.is_spatial:
        raise ValueError(f"{where}: only batch, space and time axes can be resized")
    if step == 0:
        return replace(axis, size=low, min=None, step=None)
    return replace(axis, size=None, min=low, step=step)


def apply_onnx_input_sizes(spec: ModelSpec, config: Any) -> ModelSpec:
    """Give the inputs the sizes that the description's converted ONNX weights accept.

    A description often declares one fixed input size (the one its PyTorch weights
    were tested with) although the ONNX graph converted from those weights accepts a
    whole range.  ZooDesk's conversion measures that range and records it in the
    description's ``config.zoodesk``::

        onnx_input_sizes:
          weights_sha256: <sha256 of the ONNX file the sizes were measured on>
          inputs:
            raw:                      # input tensor id
              batch: {min: 1, step: 1}   # any batch size
              y: {min: 8, step: 8}       # 8, 16, 24, ...
              x: {min: 8, step: 8}

    ZooDesk runs ONNX weights only, so the spec's input axes simply take these sizes
    (``min + n * step``; ``step: 0`` fixes the size at ``min``); axes not listed keep
    the declared size.  The record applies only while ``weights.onnx`` is the very
    file it was measured on (same sha256), and is ignored otherwise.  The ONNX
    weights entry carries the record in ``extra["input_sizes"]``.

    Raises
    ------
    ValueError
        When the record names unknown tensors or axes or holds invalid sizes.
    """
    record = _zoodesk_config(config).get(ONNX_INPUT_SIZES)
    onnx = spec.weights.get("onnx")
    if not isinstance(record, Mapping) or onnx is None or onnx.source.sha256 is None:
        return spec
    if str(record.get("weights_sha256", "")).lower() != onnx.source.sha256.lower():
        return spec
    where = f"config.zoodesk.{ONNX_INPUT_SIZES}.inputs"
    sizes = record.get("inputs")
    if not isinstance(sizes, Mapping):
        raise ValueError(f"{where} must map input tensor ids to axis sizes")
    unknown = sorted(str(k) for k in sizes if str(k) not in {t.id for t in spec.inputs})
    if unknown:
        raise ValueError(f"{where}: no input tensor {', '.join(unknown)}")
    inputs = []
    for tensor in spec.inputs:
        axes_sizes = sizes.get(tensor.id) or {}
        if not isinstance(axes_sizes, Mapping):
            raise ValueError(f"{where}.{tensor.id} must map axis ids to sizes")
        missing = sorted(str(k) for k in axes_sizes if str(k) not in tensor.axis_ids)
        if missing:
            raise ValueError(f"{where}.{tensor.id}: no axis {', '.join(missing)}")
        axes = tuple(
            _resized_axis(a, axes_sizes[a.id], f"{where}.{tensor.id}.{a.id}")
            if a.id in axes_sizes
            else a
            for a in tensor.axes
        )
        inputs.append(replace(tensor, axes=axes))
    weights = dict(spec.weights)
    weights["onnx"] = replace(onnx, extra={**onnx.extra, "input_sizes": sizes})
    return replace(spec, inputs=tuple(inputs), weights=weights)


def model_spec_from_descr(
    descr: Any, original_sha256: Mapping[str, str] | None = None, *, onnx_sizes: bool = True
) -> ModelSpec:
    """Flatten a bioimageio.spec 0.5 ``ModelDescr`` into a :class:`ModelSpec`.

    ``original_sha256`` supplies weights checksums of a 0.4 description that the
    conversion to 0.5 does not carry over.  Input sizes recorded for converted ONNX
    weights are applied (:func:`apply_onnx_input_sizes`) unless ``onnx_sizes`` is
    False, which gives the input axes as declared.
    """
    authors = tuple(str(a.name) for a in (getattr(descr, "authors", None) or ()))
    cite = tuple(
        {k: str(v) for k, v in (("text", c.text), ("doi", c.doi), ("url", c.url)) if v is not None}
        for c in (getattr(descr, "cite", None) or ())
    )
    documentation = getattr(descr, "documentation", None)
    spec = ModelSpec(
        id=str(descr.id) if getattr(descr, "id", None) else None,
        name=str(descr.name),
        version=str(descr.version) if getattr(descr, "version", None) else None,
        description=str(descr.description or ""),
        format_version=str(descr.format_version),
        license=str(descr.license) if getattr(descr, "license", None) else None,
        authors=authors,
        cite=cite,
        tags=tuple(str(t) for t in (getattr(descr, "tags", None) or ())),
        documentation=_file_ref(documentation).source if documentation else None,
        covers=tuple(_file_ref(c).source for c in (getattr(descr, "covers", None) or ())),
        inputs=tuple(_tensor_spec(t) for t in descr.inputs),
        outputs=tuple(_tensor_spec(t) for t in descr.outputs),
        weights=_weights_specs(descr.weights, original_sha256 or {}),
        tolerances=_tolerances(getattr(descr, "config", None)),
    )
    return apply_onnx_input_sizes(spec, getattr(descr, "config", None)) if onnx_sizes else spec
