"""The instance step of one image: objects from one output, their label image and table.

Used by a prediction run after an image's outputs are written (with the outputs still
in memory, or reading them back block by block when the image was streamed), and by
``zoodesk measure`` on an earlier run's files.  Both give the same objects: the
labelling does not depend on the block size (see :mod:`zoodesk.instances.segment`).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoodesk.errors import CancelledError
from zoodesk.images.readers import release_mapped_pages
from zoodesk.instances.measure import (
    BATCH_PIXELS,
    IntensitySource,
    ObjectTable,
    channel_labels,
    measure_objects,
    micrometres,
)
from zoodesk.instances.segment import (
    FrameObjects,
    MapReader,
    block_shape,
    label_dtype,
    otsu_threshold,
    paint,
    segment_frame,
)
from zoodesk.instances.settings import InstanceSettings, InstanceSettingsError, binarize_threshold
from zoodesk.models.spec import TensorSpec

#: Name of the NGFF label image that an OME-Zarr output gets.
ZARR_LABELS_NAME = "instances"

_SPATIAL = "ZYX"


@dataclass
class InstanceResult:
    """What the instance step made of one image.

    ``labels`` and ``objects`` are paths relative to the output folder (for an
    OME-Zarr output, ``labels`` names the label image inside the output's store).
    """

    labels: str
    objects: str
    count: int
    frames: int
    spatial: str
    channels: list[str]
    summary: dict[str, Any]
    threshold: float | None
    seconds: float
    label_dtype: str
    label_shape: list[int]
    label_axes: str
    warnings: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        """The entry kept in the run record for this image."""
        return {
            "labels": self.labels,
            "objects": self.objects,
            "count": self.count,
            "frames": self.frames,
            "spatial_axes": self.spatial,
            "intensity_channels": self.channels,
            "threshold": self.threshold,
            "summary": self.summary,
            "seconds": round(self.seconds, 4),
            "warnings": self.warnings,
        }


class _View:
    """Frames, channels and spatial regions of an array with named axes."""

    def __init__(self, array: Any, axes: str, what: str):
        self.array = array
        self.axes = axes.upper()
        shape = tuple(int(n) for n in array.shape)
        self.sizes = dict(zip(self.axes, shape, strict=True))
        extra = [a for a in self.axes if a not in "TC" + _SPATIAL and self.sizes[a] > 1]
        if extra:
            raise InstanceSettingsError(f"{what} has axes {axes!r}: cannot segment along {extra}")
        self.spatial = "".join(a for a in _SPATIAL if a in self.axes)
        if "Y" not in self.spatial or "X" not in self.spatial:
            raise InstanceSettingsError(f"{what} has no Y and X axes ({axes!r})")
        self.frames = self.sizes.get("T", 1)
        self.channels = self.sizes.get("C", 1)
        self.frame_shape = tuple(self.sizes[a] for a in self.spatial)

    def read(self, frame: int, channel: int, region: tuple[slice, ...]) -> np.ndarray:
        index: list[Any] = []
        for axis in self.axes:
            if axis == "T":
                index.append(frame)
            elif axis == "C":
                index.append(channel)
            elif axis in self.spatial:
                index.append(region[self.spatial.index(axis)])
            else:
                index.append(0)
        # Indexing yields the spatial axes in the array's order: put them in ZYX order.
        block = np.asarray(self.array[tuple(index)])
        order = [a for a in self.axes if a in self.spatial]
        return np.transpose(block, [order.index(a) for a in self.spatial])


class _Intensity:
    """The input's channels over the output's grid, when the two grids agree."""

    def __init__(self, view: _View, channel_axis: str | None, names: list[str]):
        self.view = view
        self.channel_axis = channel_axis
        self.names = names

    def read(self, frame: int, region: tuple[slice, ...]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for c in range(len(self.names)):
            index: list[Any] = []
            for axis in self.view.axes:
                if axis == "T":
                    index.append(frame if self.view.sizes["T"] > 1 else 0)
                elif axis == self.channel_axis:
                    index.append(c)
                elif axis in self.view.spatial:
                    index.append(region[self.view.spatial.index(axis)])
                else:
                    index.append(0)
            block = np.asarray(self.view.array[tuple(index)])
            order = [a for a in self.view.axes if a in self.view.spatial]
            out.append(np.transpose(block, [order.index(a) for a in self.view.spatial]))
        return out


def _intensity(
    image: Any | None, axes: str | None, names: Sequence[str] | None, output: _View
) -> tuple[_Intensity | None, str | None]:
    if image is None or axes is None:
        return None, "no input image to measure intensities in"
    axes = axes.upper()
    sizes = dict(zip(axes, (int(n) for n in image.shape), strict=True))
    for letter in output.spatial:
        if sizes.get(letter) != output.sizes[letter]:
            return None, (
                f"intensities not measured: the output's grid ({output.spatial} "
                f"{list(output.frame_shape)}) differs from the input's"
            )
    if any(
        letter in _SPATIAL and letter not in output.spatial and sizes[letter] > 1 for letter in axes
    ):
        return None, "intensities not measured: the input has spatial axes the output lacks"
    if "T" in axes and sizes["T"] > 1 and sizes["T"] != output.frames:
        return None, "intensities not measured: the input's time points differ from the output's"
    extra = [a for a in axes if a not in "TCS" + _SPATIAL and sizes[a] > 1]
    if extra or ("C" in axes and "S" in axes and sizes["C"] > 1 and sizes["S"] > 1):
        return None, f"intensities not measured: input axes {axes!r}"
    channel_axis = "C" if "C" in axes and sizes["C"] > 1 else ("S" if "S" in axes else None)
    if channel_axis is None and "C" in axes:
        channel_axis = "C"
    count = sizes[channel_axis] if channel_axis else 1
    view = _View.__new__(_View)
    view.array, view.axes, view.sizes = image, axes, sizes
    view.spatial = output.spatial
    view.frames, view.channels, view.frame_shape = output.frames, count, output.frame_shape
    return _Intensity(view, channel_axis, channel_labels(list(names or []), count)), None


#: Objects measured between two releases of memory-mapped pages (large images).
_MEASURE_BATCH = 4096

#: Pixels of the objects measured at once in a large image: its per-pixel arrays
#: (coordinates, moments, intensities) stay a few tens of megabytes.
STREAMED_BATCH_PIXELS = 1 << 18


def _batches(sizes: np.ndarray, count: int, pixels: int) -> Iterator[tuple[int, int]]:
    """Consecutive ranges of objects: at most ``count`` objects, and bounding boxes of
    about ``pixels`` pixels in all (a larger object alone)."""
    start = 0
    listed = sizes.tolist()
    while start < len(listed):
        stop, total = start, 0
        while stop < len(listed) and stop - start < count and (stop == start or total < pixels):
            total += listed[stop]
            stop += 1
        yield start, stop
        start = stop


def _released(view: _View, frame: int, channel: int, whole_frames: bool) -> MapReader:
    """A reader of one channel of a frame; for a large image, each block is copied and
    the pages of a memory-mapped output read for it are let go (they stay cached)."""
    if whole_frames:
        return functools.partial(view.read, frame, channel)

    def read(region: tuple[slice, ...]) -> np.ndarray:
        block = np.array(view.read(frame, channel, region))
        release_mapped_pages(view.array)
        return block

    return read


def effective_threshold(
    settings: InstanceSettings,
    tensor: TensorSpec | None,
    view: _View,
    cancelled: Callable[[], bool],
) -> float | None:
    """The number the foreground is compared with (None for the ``labels`` method)."""
    if settings.method == "labels":
        return None
    if settings.threshold == "model":
        # The output has been through the model's own binarize: it is 0 or 1.
        if tensor is not None and binarize_threshold(tensor) is None and tensor.data_type != "bool":
            raise InstanceSettingsError(f"output {tensor.id!r} has no binarize step of its own")
        return 0.5
    if settings.threshold == "otsu":
        block = block_shape(view.frame_shape, settings.block)

        def blocks() -> Any:
            from zoodesk.instances.segment import _blocks, _region

            for t in range(view.frames):
                for index in _blocks(view.frame_shape, block):
                    if cancelled():
                        raise CancelledError
                    yield view.read(t, settings.channel, _region(index, view.frame_shape, block))
                    release_mapped_pages(view.array)

        return otsu_threshold(blocks)
    return float(settings.threshold)


def find_instances(
    output: Any,
    output_axes: str,
    settings: InstanceSettings,
    *,
    out_dir: Path,
    key: str,
    pixel_sizes: Mapping[str, Sequence[Any]] | None,
    output_format: str = "ome-tiff",
    zarr_store: str | None = None,
    tensor: TensorSpec | None = None,
    image: Any | None = None,
    image_axes: str | None = None,
    image_channel_names: Sequence[str] | None = None,
    provenance: Mapping[str, str] | None = None,
    whole_frames: bool = True,
    compression: str = "zlib",
    cancelled: Callable[[], bool] = lambda: False,
) -> InstanceResult:
    """Label the objects of one image's output, measure them, and write both.

    ``output`` is the output array (numpy or any array that slices lazily) with
    ``output_axes``; ``image`` the input image, for intensities.  The label image is
    ``<key>_instances.ome.tif`` (an NGFF label image ``labels/instances`` inside the
    output's store ``zarr_store`` for OME-Zarr) and the table ``<key>_objects.csv``.
    ``whole_frames`` labels each frame in one block; otherwise in blocks of
    ``settings.block`` with a scratch store on disk (bounded memory).
    """
    from zoodesk.images import TiledOmeTiffWriter, write_ome_tiff
    from zoodesk.images.zarr_writer import TiledOmeZarrWriter, register_labels

    start = time.perf_counter()
    view = _View(output, output_axes, f"output {settings.source!r}")
    for channel in (settings.channel, settings.boundary_channel):
        if channel is not None and not 0 <= channel < view.channels:
            raise InstanceSettingsError(
                f"output {settings.source!r} has {view.channels} channel(s): no channel {channel}"
            )
    intensity, problem = _intensity(image, image_axes, image_channel_names, view)
    warnings = [problem] if problem and image is not None else []
    channels = intensity.names if intensity is not None else []
    spatial = view.spatial
    um = micrometres(pixel_sizes, spatial)
    sampling = um if um is not None else None
    threshold = effective_threshold(settings, tensor, view, cancelled)
    frame_block = (
        view.frame_shape if whole_frames else block_shape(view.frame_shape, settings.block)
    )
    per_frame: list[FrameObjects] = []
    for t in range(view.frames):
        boundary: MapReader | None = None
        if settings.method == "boundary" and settings.boundary_channel is not None:
            boundary = _released(view, t, settings.boundary_channel, whole_frames)
        per_frame.append(
            segment_frame(
                view.frame_shape,
                _released(view, t, settings.channel, whole_frames),
                settings,
                threshold=threshold if threshold is not None else 0.0,
                boundary=boundary,
                block=frame_block,
                sampling=sampling,
                scratch=out_dir if not whole_frames else None,
                cancelled=cancelled,
            )
        )
    table = ObjectTable(spatial, channels)
    whole = tuple(slice(0, n) for n in view.frame_shape)
    for t, objects in enumerate(per_frame):
        if cancelled():
            raise CancelledError
        source: IntensitySource | None = None
        if intensity is not None:
            # A frame in memory is read once; a large one object by object.
            source = (
                intensity.read(t, whole) if whole_frames else functools.partial(intensity.read, t)
            )
        # In batches, after each of which the pages of memory-mapped files read so far
        # are let go: they would otherwise all count as this process's memory.  A large
        # image's objects are unpacked batch by batch, each of a bounded size.
        batches = (
            [(0, len(objects))]
            if whole_frames
            else _batches(objects.box_pixels(), _MEASURE_BATCH, STREAMED_BATCH_PIXELS)
        )
        for first, stop in batches:
            table.add(
                measure_objects(
                    [(o.bbox, o.mask) for o in objects[first:stop]], t, spatial, um, channels,
                    source, first_label=first + 1, cancelled=cancelled,
                    batch_pixels=BATCH_PIXELS if whole_frames else STREAMED_BATCH_PIXELS,
                )
            )  # fmt: skip
            if not whole_frames:
                release_mapped_pages(output)
                if image is not None:
                    release_mapped_pages(image)
    count = len(table)
    dtype = label_dtype(max((len(o) for o in per_frame), default=0))
    label_axes = ("T" if "T" in view.axes else "") + spatial
    label_shape = ((view.frames,) if "T" in view.axes else ()) + view.frame_shape
    sizes = {a: tuple(pixel_sizes[a]) for a in spatial if pixel_sizes and a in pixel_sizes}
    meta: dict[str, str] = {
        **dict(provenance or {}),
        "instances.source": str(settings.source),
        "instances.method": settings.method,
        "instances.settings": json.dumps(settings.as_dict(), sort_keys=True),
    }
    if threshold is not None:
        meta["instances.threshold"] = repr(threshold)
    paint_block = frame_block if not whole_frames else view.frame_shape
    if output_format == "ome-zarr":
        if zarr_store is None:
            raise ValueError("an OME-Zarr label image needs the output's store")
        labels_rel = f"{zarr_store}/labels/{ZARR_LABELS_NAME}"
        writer: Any = TiledOmeZarrWriter(
            out_dir / labels_rel,
            label_shape,
            dtype,
            label_axes,
            pixel_sizes=sizes,
            provenance=meta,
            labels=True,
            image_label=True,
        )
    else:
        labels_rel = f"{key}_instances.ome.tif"
        writer = None
    try:
        if writer is None and whole_frames:
            full = np.zeros(label_shape, dtype=dtype)
            for t, objects in enumerate(per_frame):
                frame = full[t] if "T" in label_axes else full
                for region, block in paint(objects, view.frame_shape, paint_block, dtype):
                    frame[region] = block
            write_ome_tiff(
                out_dir / labels_rel,
                full,
                label_axes,
                pixel_sizes=sizes,
                provenance=meta,
                compression=compression,
            )
        else:
            if writer is None:
                writer = TiledOmeTiffWriter(
                    out_dir / labels_rel,
                    label_shape,
                    dtype,
                    label_axes,
                    pixel_sizes=sizes,
                    provenance=meta,
                    compression=compression,
                )
            for t, objects in enumerate(per_frame):
                lead: tuple[Any, ...] = (t,) if "T" in label_axes else ()
                for region, block in paint(objects, view.frame_shape, paint_block, dtype):
                    writer.write_block(lead + region, block)
            writer.close()
            if output_format == "ome-zarr":
                assert zarr_store is not None
                register_labels(out_dir / zarr_store, [ZARR_LABELS_NAME])
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    objects_rel = f"{key}_objects.csv"
    try:
        table.write(out_dir / objects_rel)
        summary = table.summary()
    finally:
        table.close()
    return InstanceResult(
        labels=labels_rel,
        objects=objects_rel,
        count=count,
        frames=view.frames,
        spatial=spatial,
        channels=channels,
        summary=summary,
        threshold=threshold,
        seconds=time.perf_counter() - start,
        label_dtype=dtype.name,
        label_shape=[int(n) for n in label_shape],
        label_axes=label_axes,
        warnings=warnings,
    )
