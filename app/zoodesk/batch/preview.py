"""Looking before running: the inputs of a batch, and a preview on one image.

Before committing to a whole folder a user wants to see which files will be read
(with their axes and sizes, and whether they fit the model), what the model expects,
and what it makes of one image.  :func:`scan_inputs` lists the inputs as the runner
will find them; :func:`run_preview` runs the model on one image, or on a region of
a large one, with exactly the reading, axis mapping, tiling and processing of a
batch run, and returns what went in and what came out.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from zoodesk.batch.inputs import collect_inputs, expand_series
from zoodesk.batch.runner import finalize_output_dtype, output_kind
from zoodesk.errors import ZooDeskError
from zoodesk.images.axes import assemble_output, map_image_to_tensor
from zoodesk.inference.predict import Predictor
from zoodesk.models.spec import AxisSpec, ModelSpec, TensorSpec

#: Largest height and width of the default preview region.
DEFAULT_PREVIEW_SIZE = 512


@dataclass(frozen=True)
class InputInfo:
    """One input file of a batch, as far as can be told without running the model.

    Attributes
    ----------
    path
        The file.
    size_bytes
        Its size on disk.
    axes, shape, dtype
        What the reader found (None when the file cannot be read).
    pixel_sizes
        Physical pixel sizes, e.g. ``{"X": (0.65, "µm")}``.
    mapping
        How the image feeds the model input (e.g. ``"YX -> bcyx"``), when a model
        input was given and the image fits it.
    mapping_words
        The same for people (e.g. ``"Y, X → model's y, x"``).
    problem
        Why the file cannot be used (unreadable, axes that do not fit the model).
    series, scene
        Which series of a multi-series file this is (scene None for other files).
    format
        The file's format as read (``tiff``, ``czi``, ``nd2``, ``ome-zarr``, ...).
    """

    path: Path
    size_bytes: int
    series: int = 0
    scene: str | None = None
    format: str | None = None
    axes: str | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    pixel_sizes: dict[str, tuple[float, str]] = field(default_factory=dict)
    mapping: str | None = None
    problem: str | None = None
    mapping_words: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def required_input(spec: ModelSpec) -> TensorSpec:
    """The one input tensor that image files feed.

    Raises
    ------
    ZooDeskError
        When the model needs more or fewer than one input.
    """
    required = [t for t in spec.inputs if not t.optional]
    if len(required) != 1:
        raise ZooDeskError(
            f"model {spec.name!r} needs {len(required)} input tensors; "
            "running it on image files needs exactly one"
        )
    return required[0]


def describe_axis(axis: AxisSpec) -> str:
    """What a model axis accepts, in words, e.g. ``"y (space): 64 + n×16"``."""
    if axis.kind == "batch":
        return "batch: one image at a time"
    if axis.kind == "channel":
        names = f" ({', '.join(axis.channel_names)})" if axis.channel_names else ""
        count = axis.size if axis.size is not None else len(axis.channel_names)
        return f"channel: {count} channel{'s' if count != 1 else ''}{names}"
    label = f"{axis.id} ({axis.kind})"
    if axis.size is not None:
        size = f"exactly {axis.size} (larger images are tiled)"
    elif axis.min is not None:
        size = f"{axis.min} + n×{axis.step}" if axis.step else f"exactly {axis.min}"
    elif axis.reference is not None:
        size = f"like {axis.reference.tensor_id}.{axis.reference.axis_id}"
    else:
        size = "any size"
    halo = f", halo {axis.halo}" if axis.halo else ""
    return f"{label}: {size}{halo}"


def scan_inputs(
    inputs: Sequence[Path],
    *,
    patterns: Sequence[str] = (),
    recursive: bool = False,
    tensor: TensorSpec | None = None,
    axes: str | None = None,
    channels: Sequence[int] | None = None,
    cancelled: Callable[[], bool] | None = None,
    series: int | None = None,
    scenes: Sequence[str] = (),
) -> Iterator[InputInfo]:
    """Yield one :class:`InputInfo` per input a batch over ``inputs`` would process:
    one per file, and one per series of a multi-series microscope file.

    Files are found exactly as :func:`zoodesk.batch.runner.run_prediction` finds
    them, and read with the same reader; a missing input or a file that cannot be
    used is reported in ``problem`` and the scan goes on.

    Parameters
    ----------
    inputs, patterns, recursive
        As in :class:`zoodesk.batch.runner.PredictionRequest`.
    tensor
        The model input; when given, each image's axis mapping is checked.
    axes, channels, series, scenes
        The axes override, channel and series choice of the run.
    cancelled
        Checked before each file; returning True ends the scan early.
    """
    from zoodesk.images import fold_colour_samples, read_image

    is_cancelled = cancelled or (lambda: False)
    found, missing = collect_inputs(inputs, patterns, recursive)
    for path in missing:
        yield InputInfo(path, 0, problem=f"{path}: no such file or folder")
    samples = expand_series(found, [""] * len(found), series=series, scenes=scenes)
    for sample in samples:
        path = sample.path
        if is_cancelled():
            return
        try:
            size = path.stat().st_size
        except OSError as exc:
            yield InputInfo(path, 0, problem=f"{path}: {exc.strerror or exc}")
            continue
        try:
            image = fold_colour_samples(read_image(path, series=sample.series, axes=axes))
        except ZooDeskError as exc:
            yield InputInfo(path, size, sample.series, sample.scene, problem=str(exc))
            continue
        info = InputInfo(
            path,
            size,
            sample.series,
            sample.scene,
            format=image.metadata.get("format"),
            axes=image.axes,
            shape=tuple(int(s) for s in image.shape),
            dtype=str(image.dtype),
            pixel_sizes=dict(image.pixel_sizes),
        )
        if tensor is not None:
            try:
                mapping = map_image_to_tensor(image.axes, image.shape, tensor, channels=channels)
                info = replace(info, mapping=mapping.describe(), mapping_words=mapping.in_words())
            except ZooDeskError as exc:
                info = replace(info, problem=f"{path}: {exc}")
        yield info


def default_region(
    axes: str, shape: Sequence[int], max_size: int = DEFAULT_PREVIEW_SIZE
) -> tuple[int, int, int, int]:
    """The centred ``(y, x, height, width)`` region of at most ``max_size`` pixels a side."""
    sizes = dict(zip(axes.upper(), shape, strict=True))
    height, width = sizes.get("Y", 1), sizes.get("X", 1)
    h, w = min(height, max_size), min(width, max_size)
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class OutputPreview:
    """One output of a preview: the array with OME axes and what it holds."""

    tensor_id: str
    array: np.ndarray
    axes: str
    kind: str


@dataclass(frozen=True)
class PreviewResult:
    """What a preview fed to the model and what came out.

    Attributes
    ----------
    image, image_axes
        The input region as read (before preprocessing), one frame, image axes.
    outputs
        Each output for that region and frame.
    region
        ``(y, x, height, width)`` of the region in the whole image.
    image_shape
        The shape of the whole image (axes ``image_axes``).
    frame
        The index along each axis that the model iterates over (e.g. ``{"Z": 7}``
        for a z-stack fed to a 2D model); empty when there is none.
    mapping
        How the image fed the model input, e.g. ``"YX -> bcyx"``.
    mapping_words
        The same for people (e.g. ``"Y, X → model's y, x"``).
    device
        The device that ran the model.
    seconds
        Time for the prediction of the region.
    """

    image: np.ndarray
    image_axes: str
    outputs: tuple[OutputPreview, ...]
    region: tuple[int, int, int, int]
    image_shape: tuple[int, ...]
    frame: dict[str, int]
    mapping: str
    device: str
    seconds: float
    mapping_words: str = ""


def run_preview(
    predictor: Predictor,
    path: Path,
    *,
    series: int = 0,
    axes: str | None = None,
    channels: Sequence[int] | None = None,
    region: tuple[int, int, int, int] | None = None,
    frame: dict[str, int] | None = None,
    max_size: int = DEFAULT_PREVIEW_SIZE,
    cancelled: Callable[[], bool] | None = None,
) -> Generator[tuple[int, int], None, PreviewResult]:
    """Run the model on one image (or a region of it), yielding block progress.

    Parameters
    ----------
    predictor
        The model on its device (reuse it between previews: loading is the slow part).
    path
        The image file.
    series
        Which series (scene) of a multi-series file.
    axes, channels
        As for the batch run.
    region
        ``(y, x, height, width)`` to predict; default: the centred region of at most
        ``max_size`` pixels a side.
    frame
        For images with more frames than the model takes (e.g. a time-lapse fed to a
        2D model), the index along each such axis; default: the middle one.
    max_size
        Side of the default region.
    cancelled
        Checked between blocks; returning True raises :class:`CancelledError`.

    Returns
    -------
    PreviewResult
        Via ``StopIteration.value`` (use ``yield from`` or drive it to the end).

    Raises
    ------
    ZooDeskError
        When the image cannot be read or does not fit the model.
    """
    from zoodesk.images import fold_colour_samples, read_image

    tensor = required_input(predictor.spec)
    image = fold_colour_samples(read_image(Path(path), series=series, axes=axes))
    full_axes = image.axes
    y, x, h, w = region or default_region(full_axes, image.shape, max_size)
    sizes = image.sizes
    y, x = max(0, min(y, sizes.get("Y", 1) - 1)), max(0, min(x, sizes.get("X", 1) - 1))
    h, w = max(1, min(h, sizes.get("Y", 1) - y)), max(1, min(w, sizes.get("X", 1) - x))
    whole = map_image_to_tensor(full_axes, image.shape, tensor, channels=channels)
    chosen = {a: (frame or {}).get(a, sizes[a] // 2) for a in whole.frame_axes}
    index: list[slice] = []
    for letter in full_axes:
        if letter == "Y":
            index.append(slice(y, y + h))
        elif letter == "X":
            index.append(slice(x, x + w))
        elif letter in chosen:
            i = max(0, min(chosen[letter], sizes[letter] - 1))
            chosen[letter] = i
            index.append(slice(i, i + 1))
        else:
            index.append(slice(None))
    crop = np.ascontiguousarray(image.array[tuple(index)])
    mapping = map_image_to_tensor(full_axes, crop.shape, tensor, channels=channels)
    ((_, model_input),) = list(mapping.frames(crop))
    steps = predictor.iter_predict({tensor.id: model_input}, cancelled=cancelled)
    while True:
        try:
            yield next(steps)
        except StopIteration as stop:
            result = stop.value
            break
    outputs = []
    for t in predictor.spec.outputs:
        array = finalize_output_dtype(result.outputs[t.id], t)
        assembled, out_axes = assemble_output(mapping, t, [array])
        outputs.append(OutputPreview(t.id, assembled, out_axes, output_kind(t, assembled.dtype)))
    return PreviewResult(
        image=crop,
        image_axes=full_axes,
        outputs=tuple(outputs),
        region=(y, x, h, w),
        image_shape=tuple(int(s) for s in image.shape),
        frame=chosen,
        mapping=whole.describe(),
        device=predictor.session.device.name,
        seconds=float(result.seconds),
        mapping_words=whole.in_words(),
    )
