"""How objects are made from a model's outputs: the settings, and the proposal from a model.

A model of the zoo usually ends in a map, not in objects: a foreground probability,
foreground plus boundaries, or StarDist's probability plus ray distances.  The
settings say which output and channels to use, and how to turn them into labelled
objects.  They are recorded with every run (``parameters.instances`` in the run
record), so that a reader of the record can redo exactly the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from zoodesk.errors import ZooDeskError
from zoodesk.models.spec import ModelSpec, TensorSpec

Method = Literal["threshold", "watershed", "boundary", "stardist", "labels"]
METHODS: tuple[str, ...] = ("threshold", "watershed", "boundary", "stardist", "labels")

#: What ``--instances`` accepts: a method, or ``auto`` for :func:`propose`.
CHOICES: tuple[str, ...] = ("auto", *METHODS)

DEFAULT_MIN_DISTANCE = 5
DEFAULT_BLOCK = 1024

_BOUNDARY_WORDS = re.compile(r"boundar|contour|border|edge", re.IGNORECASE)
_FOREGROUND_WORDS = re.compile(r"foreground|fg\b|prob|mask|nucle|cell|object", re.IGNORECASE)
_STARDIST_WORDS = re.compile(r"stardist|star-convex|star convex|ray", re.IGNORECASE)
_SPLIT_WORDS = re.compile(r"nucle|cell|instance|touching", re.IGNORECASE)


class InstanceSettingsError(ZooDeskError):
    """The instance settings do not fit the model or make no sense.

    ``setting`` names the :class:`InstanceSettings` field at fault (``threshold``,
    ``max_size``...), when one is, so that a form can point at its control.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


#: Methods this installation cannot run, and why (one line each).
_UNAVAILABLE = {
    "stardist": "StarDist outputs need the stardist package's polygon suppression, which is "
    "not installed (it does not build against this NumPy); choose another method",
}


def method_unavailable(method: str) -> str | None:
    """None when this installation can make objects with ``method``, else why not."""
    return _UNAVAILABLE.get(method)


@dataclass(frozen=True)
class InstanceSettings:
    """How to make labelled objects from one output of a model.

    Attributes
    ----------
    method
        ``threshold``: pixels above :attr:`threshold` on the foreground channel, then
        connected components (face connectivity).  ``watershed``: the same, then
        touching objects are split by a watershed on the distance transform, seeded
        at its maxima at least :attr:`min_distance` pixels apart.  ``boundary``: a
        watershed on the boundary channel inside the foreground, seeded from
        foreground minus boundary.  ``stardist``: polygon non-maximum suppression of
        StarDist outputs (needs the ``stardist`` package).  ``labels``: the output
        already holds labels (0 = background); they are measured as they are.
    source
        The output tensor's id; None takes the first output that fits the method.
    channel
        The foreground (or probability) channel of the output, when it has several.
    boundary_channel
        The boundary channel (``boundary`` method).
    threshold
        A number, ``"otsu"`` (over the whole image, from its histogram) or
        ``"model"`` (the threshold of the output's own ``binarize`` step).
    boundary_threshold
        Boundary pixels above this do not seed objects (``boundary`` method).
    min_size, max_size
        Objects with fewer (more) pixels are removed; 0 / None keeps all.
    fill_holes
        Holes inside each object become part of it.
    min_distance
        Smallest distance, in pixels, between two watershed seeds.
    block
        Edge of the blocks in which images too large for memory are labelled.
    """

    method: Method = "threshold"
    source: str | None = None
    channel: int = 0
    boundary_channel: int | None = None
    threshold: float | str = 0.5
    boundary_threshold: float = 0.5
    min_size: int = 0
    max_size: int | None = None
    fill_holes: bool = False
    min_distance: int = DEFAULT_MIN_DISTANCE
    block: int = DEFAULT_BLOCK

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InstanceSettingsError(
                f"unknown instance method {self.method!r} (choose from {', '.join(METHODS)})",
                setting="method",
            )
        if isinstance(self.threshold, str) and self.threshold not in ("otsu", "model"):
            raise InstanceSettingsError(
                f"threshold {self.threshold!r}: give a number, 'otsu' or 'model'",
                setting="threshold",
            )
        if self.min_size < 0:
            raise InstanceSettingsError(
                f"minimum size {self.min_size} must not be negative", setting="min_size"
            )
        if self.max_size is not None and self.max_size < max(self.min_size, 1):
            raise InstanceSettingsError(
                f"maximum size {self.max_size} is below the minimum size {self.min_size}",
                setting="max_size",
            )
        if self.min_distance < 1:
            raise InstanceSettingsError(
                f"seed distance {self.min_distance} must be at least 1", setting="min_distance"
            )
        if self.block < 16:
            raise InstanceSettingsError(
                f"block size {self.block} must be at least 16", setting="block"
            )

    def as_dict(self) -> dict[str, Any]:
        """The settings as recorded (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceSettings:
        """Settings from :meth:`as_dict`'s output (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise InstanceSettingsError(f"instance settings: {exc}") from exc

    def describe(self) -> str:
        """One line for people: the method and the parameters that matter to it."""
        parts: list[str] = [self.method]
        if self.method in ("threshold", "watershed", "boundary"):
            parts.append(f"threshold {self.threshold}")
        if self.method == "watershed":
            parts.append(f"seeds ≥ {self.min_distance} px apart")
        if self.method == "boundary":
            parts.append(
                f"boundary channel {self.boundary_channel} above {self.boundary_threshold}"
            )
        if self.min_size:
            parts.append(f"min {self.min_size} px")
        if self.max_size:
            parts.append(f"max {self.max_size} px")
        if self.fill_holes:
            parts.append("holes filled")
        source = f" on {self.source}" if self.source else ""
        channel = f" channel {self.channel}" if self.channel else ""
        return f"{', '.join(parts)}{source}{channel}"


def _channel_names(tensor: TensorSpec) -> list[str]:
    for axis in tensor.axes:
        if axis.kind == "channel":
            return [str(n) for n in axis.channel_names]
    return []


def _is_integer(tensor: TensorSpec) -> bool:
    return tensor.data_type.startswith(("int", "uint", "bool"))


def binarize_threshold(tensor: TensorSpec) -> float | None:
    """The threshold of the tensor's own ``binarize`` postprocessing, if it has one."""
    for op in tensor.postprocessing:
        if op.id == "binarize":
            value = op.kwargs.get("threshold", op.kwargs.get("val"))
            if isinstance(value, int | float):
                return float(value)
            if isinstance(value, list | tuple) and value:
                return float(value[0])
    return None


def propose(spec: ModelSpec) -> tuple[InstanceSettings | None, str]:
    """The instance method that suits the model's outputs, and why.

    Looks at the outputs' data types, channel names and counts, descriptions, and
    the model's tags and description.  Returns ``(None, reason)`` when no output is a
    map that objects can be made from.
    """
    words = " ".join([spec.name, spec.description, *spec.tags])
    for tensor in spec.outputs:
        if binarize_threshold(tensor) is not None or tensor.data_type == "bool":
            split = bool(_SPLIT_WORDS.search(words + " " + tensor.description))
            return (
                InstanceSettings(
                    method="watershed" if split else "threshold",
                    source=tensor.id,
                    threshold="model",
                ),
                f"output {tensor.id!r} is the model's own binary mask",
            )
    for tensor in spec.outputs:
        if _is_integer(tensor):
            return (
                InstanceSettings(method="labels", source=tensor.id),
                f"output {tensor.id!r} holds integers: taken as labels and measured",
            )
    for tensor in spec.outputs:
        names = _channel_names(tensor)
        text = " ".join([tensor.id, tensor.description, *names])
        count = tensor.channel_count or 1
        if count >= 3 and (_STARDIST_WORDS.search(text) or _STARDIST_WORDS.search(words)):
            return (
                InstanceSettings(method="stardist", source=tensor.id),
                f"output {tensor.id!r} looks like StarDist's probability and ray distances",
            )
        boundary = [i for i, n in enumerate(names) if _BOUNDARY_WORDS.search(n)]
        if count >= 2 and boundary:
            foreground = next(
                (i for i, n in enumerate(names) if i not in boundary),
                0,
            )
            return (
                InstanceSettings(
                    method="boundary",
                    source=tensor.id,
                    channel=foreground,
                    boundary_channel=boundary[0],
                    threshold=binarize_threshold(tensor) or 0.5,
                ),
                f"output {tensor.id!r} has foreground ({names[foreground]!r}) and "
                f"boundary ({names[boundary[0]]!r}) channels",
            )
        if count == 2 and _BOUNDARY_WORDS.search(tensor.description + " " + words):
            return (
                InstanceSettings(
                    method="boundary", source=tensor.id, channel=0, boundary_channel=1
                ),
                f"output {tensor.id!r} has two channels and the model speaks of boundaries "
                "(foreground taken as channel 0, boundaries as channel 1)",
            )
    for tensor in spec.outputs:
        if tensor.data_range[0] is not None and tensor.data_range[1] is not None:
            probability = tensor.data_range[0] >= 0 and tensor.data_range[1] <= 1
        else:
            probability = any(op.id in ("sigmoid", "softmax") for op in tensor.postprocessing)
        if not probability:
            continue
        split = bool(_SPLIT_WORDS.search(words + " " + tensor.description))
        method: Method = "watershed" if split else "threshold"
        reason = f"output {tensor.id!r} is a probability map"
        if split:
            reason += "; the model segments nuclei or cells, so touching ones are split"
        return InstanceSettings(method=method, source=tensor.id), reason
    first = spec.outputs[0]
    if _FOREGROUND_WORDS.search(first.id + " " + first.description):
        return (
            InstanceSettings(method="threshold", source=first.id, threshold="otsu"),
            f"output {first.id!r} is not a probability: thresholded by Otsu's method",
        )
    return None, "no output of this model is a probability map or labels"


def resolve(
    spec: ModelSpec, choice: str, overrides: Mapping[str, Any] | None = None
) -> tuple[InstanceSettings, str]:
    """Settings for ``choice`` (a method or ``auto``) with the user's overrides applied.

    Raises :class:`InstanceSettingsError` when ``auto`` finds nothing or the settings
    do not fit the model's outputs.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if choice == "auto":
        proposed, reason = propose(spec)
        if proposed is None:
            raise InstanceSettingsError(
                f"cannot propose an instance method: {reason}", setting="method"
            )
        settings = replace(proposed, **overrides) if overrides else proposed
    elif choice in METHODS:
        settings = InstanceSettings(method=choice, **overrides)  # type: ignore[arg-type]
        reason = "chosen"
    else:
        raise InstanceSettingsError(
            f"unknown instance method {choice!r} (choose from {', '.join(CHOICES)})",
            setting="method",
        )
    return check_against(spec, settings), reason


def check_against(spec: ModelSpec, settings: InstanceSettings) -> InstanceSettings:
    """The settings with their source filled in, or a clear error if they do not fit."""
    ids = [t.id for t in spec.outputs]
    if settings.source is None:
        settings = replace(settings, source=ids[0])
    if settings.source not in ids:
        raise InstanceSettingsError(
            f"the model has no output {settings.source!r} (it has {', '.join(ids)})",
            setting="source",
        )
    tensor = spec.tensor(settings.source)
    count = tensor.channel_count or 1
    wanted = [settings.channel]
    if settings.method == "boundary":
        if settings.boundary_channel is None:
            raise InstanceSettingsError(
                "the boundary method needs a boundary channel", setting="boundary_channel"
            )
        wanted.append(settings.boundary_channel)
    for setting, channel in zip(("channel", "boundary_channel"), wanted, strict=False):
        if not 0 <= channel < count:
            raise InstanceSettingsError(
                f"output {tensor.id!r} has {count} channel(s); there is no channel {channel}",
                setting=setting,
            )
    if settings.method == "boundary" and settings.boundary_channel == settings.channel:
        if count < 2:
            raise InstanceSettingsError(
                f"output {tensor.id!r} has one channel: the boundary method needs a "
                "foreground and a boundary channel",
                setting="method",
            )
        raise InstanceSettingsError(
            f"the boundary channel is the foreground channel ({settings.channel}): choose another",
            setting="boundary_channel",
        )
    if (
        settings.threshold == "model"
        and binarize_threshold(tensor) is None
        and tensor.data_type != "bool"
    ):
        raise InstanceSettingsError(
            f"output {tensor.id!r} has no binarize step of its own: give a threshold or "
            "choose Otsu",
            setting="threshold",
        )
    return settings
