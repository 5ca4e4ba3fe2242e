"""Mapping an image's axes to a model's input axes, and outputs back to image axes.

Image axes are uppercase OME letters (``TCZYX`` plus ``S`` for RGB samples); model
axes are bioimage.io axis descriptions.  Image axes the model does not take are
either dropped (size 1) or iterated over as *frames* (a time-lapse or a z-stack fed
to a 2D model), so that the model is loaded once and run frame by frame.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from zoodesk.errors import AxesMismatchError
from zoodesk.models.spec import AxisSpec, TensorSpec

CANONICAL_ORDER = "TCZYX"


def image_letter(axis: AxisSpec) -> str | None:
    """The image axis letter a model axis reads from (``None`` for batch)."""
    if axis.kind == "batch":
        return None
    if axis.kind == "channel":
        return "C"
    if axis.kind == "time":
        return "T"
    if axis.kind == "space":
        return axis.id.upper() if axis.id.lower() in ("x", "y", "z") else axis.id[0].upper()
    return "I"


def normalize_axes(axes: str, shape: Sequence[int]) -> str:
    """Uppercase ``axes``, treat RGB samples (``S``) as channels, and check the length."""
    axes = axes.upper()
    if len(axes) != len(shape):
        raise AxesMismatchError(
            f"axes {axes!r} have {len(axes)} letters but the image has {len(shape)} dimensions"
        )
    if "S" in axes:
        if "C" in axes and shape[axes.index("C")] > 1 and shape[axes.index("S")] > 1:
            raise AxesMismatchError(
                f"image axes {axes}: both channels and RGB samples; pick one with --channel"
            )
        if "C" in axes:
            # A single channel with RGB samples: the samples are the channels.
            c = axes.index("C")
            axes = axes[:c] + "Q" + axes[c + 1 :]
        axes = axes.replace("S", "C")
    if len(set(axes)) != len(axes):
        raise AxesMismatchError(f"image axes {axes!r} repeat a letter")
    return axes


@dataclass(frozen=True)
class AxisMapping:
    """How one image feeds one model input, frame by frame."""

    image_axes: str
    image_shape: tuple[int, ...]
    tensor: TensorSpec
    frame_axes: str
    squeezed_axes: str
    channels: tuple[int, ...] | None

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.image_shape[self.image_axes.index(a)] for a in self.frame_axes)

    @property
    def frame_count(self) -> int:
        n = 1
        for s in self.frame_shape:
            n *= s
        return n

    def describe(self) -> str:
        """A short human description, e.g. ``TCYX -> bcyx, 12 frames over T``."""
        text = f"{self.image_axes} -> {self.tensor.axes_letters}"
        if self.frame_axes:
            text += f", {self.frame_count} frame(s) over {self.frame_axes}"
        if self.channels is not None:
            text += f", channel(s) {','.join(map(str, self.channels))}"
        return text

    def in_words(self) -> str:
        """The mapping for people, e.g. ``Y, X → model's y, x`` or ``C, Y, X → model's
        c, y, x; 12 frames over T, one at a time``."""
        fed = [
            (letter, a.id)
            for a in self.tensor.axes
            if (letter := image_letter(a)) is not None and letter in self.image_axes
        ]
        text = (
            f"{', '.join(letter for letter, _ in fed)} → model's "
            f"{', '.join(axis_id for _, axis_id in fed)}"
        )
        if self.channels is not None:
            chosen = ", ".join(map(str, self.channels))
            text += f" (channel{'s' if len(self.channels) > 1 else ''} {chosen})"
        if self.frame_axes:
            count = self.frame_count
            text += (
                f"; {count} {'frame' if count == 1 else 'frames'} over "
                f"{', '.join(self.frame_axes)}, one at a time"
            )
        return text

    def frames(self, array: np.ndarray) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """Yield ``(frame index, model-ordered array with batch 1)`` for every frame.

        The arrays are views of ``array`` (basic indexing, transposition and
        reshaping only), so a memory-mapped image is read only where a frame is
        used; choosing channels that are not a contiguous ascending run is the one
        case that copies (every frame's channels, once).
        """
        axes = self.image_axes
        data = array
        # Drop squeezed axes (size 1, or the placeholder for RGB's lone channel).
        for letter in self.squeezed_axes:
            i = axes.index(letter)
            data = data[(slice(None),) * i + (0,)]
            axes = axes[:i] + axes[i + 1 :]
        if self.channels is not None:
            c = axes.index("C")
            first, count = self.channels[0], len(self.channels)
            if list(self.channels) == list(range(first, first + count)):
                data = data[(slice(None),) * c + (slice(first, first + count),)]
            else:
                data = np.take(data, list(self.channels), axis=c)
        model_letters = [image_letter(a) for a in self.tensor.axes]
        present = [m for m in model_letters if m is not None and m in axes]
        order = [axes.index(f) for f in self.frame_axes] + [axes.index(m) for m in present]
        data = np.transpose(data, order)
        nframe = len(self.frame_axes)
        for index in itertools.product(*(range(n) for n in data.shape[:nframe])):
            frame = data[index] if nframe else data
            # Insert the model axes the image lacks (batch, single channel) as size 1.
            shape: list[int] = []
            k = 0
            for m in model_letters:
                if m is not None and m in present:
                    shape.append(frame.shape[k])
                    k += 1
                else:
                    shape.append(1)
            yield index, frame.reshape(shape)


def map_image_to_tensor(
    image_axes: str,
    image_shape: Sequence[int],
    tensor: TensorSpec,
    *,
    channels: Sequence[int] | None = None,
) -> AxisMapping:
    """Work out how an image with ``image_axes`` feeds ``tensor``.

    Raises :class:`AxesMismatchError` naming both layouts when it cannot be done.
    """
    shape = tuple(int(s) for s in image_shape)
    axes = normalize_axes(image_axes, shape)
    model_letters = [image_letter(a) for a in tensor.axes]
    wanted = {m for m in model_letters if m is not None}
    both = f"image axes {axes} {shape}, model input {tensor.id!r} axes {tensor.axes_letters}"
    squeezed = ""
    frames = ""
    for letter, n in zip(axes, shape, strict=True):
        if letter in wanted:
            continue
        if letter == "Q" or n == 1:
            squeezed += letter
        elif letter == "C":
            if channels is not None and len(channels) == 1:
                continue
            raise AxesMismatchError(
                f"{both}: the model takes no channel axis but the image has {n} channels; "
                "choose one with --channel"
            )
        else:
            frames += letter
    for m in wanted - set(axes):
        axis = tensor.axes[model_letters.index(m)]
        if m == "C" and (axis.size in (None, 1)):
            continue
        if axis.size == 1 or (axis.min == 1 and not axis.step):
            continue
        if m == "C":
            raise AxesMismatchError(
                f"{both}: the model needs {axis.size} channels, the image has none"
            )
        raise AxesMismatchError(f"{both}: the image has no {m} axis, which the model needs")
    chosen: tuple[int, ...] | None = None
    if channels is not None:
        if "C" not in axes:
            if list(channels) != [0]:
                raise AxesMismatchError(f"{both}: --channel given but the image has one channel")
        else:
            n = shape[axes.index("C")]
            bad = [c for c in channels if not 0 <= c < n]
            if bad:
                raise AxesMismatchError(
                    f"{both}: channel {bad[0]} does not exist (the image has {n}: 0..{n - 1})"
                )
            chosen = tuple(channels)
    if "C" in wanted:
        axis = tensor.axes[model_letters.index("C")]
        have = len(chosen) if chosen is not None else (shape[axes.index("C")] if "C" in axes else 1)
        if axis.size is not None and have != axis.size:
            hint = "; choose with --channel" if have > axis.size else ""
            raise AxesMismatchError(
                f"{both}: the model needs {axis.size} channel(s), the image gives {have}{hint}"
            )
    frames = "".join(sorted(frames, key=lambda a: CANONICAL_ORDER.find(a)))
    return AxisMapping(axes, shape, tensor, frames, squeezed, chosen)


def output_image_axes(tensor: TensorSpec) -> tuple[str, list[int]]:
    """OME axes of an output frame and the permutation from the tensor's order.

    The batch axis (size 1) is dropped; an index axis is written as channels when
    the tensor has none.
    """
    letters: list[tuple[str, int]] = []
    for i, a in enumerate(tensor.axes):
        letter = image_letter(a)
        if letter is None:
            continue
        if letter == "I":
            letter = "C" if not any(x.kind == "channel" for x in tensor.axes) else "Q"
        letters.append((letter, i))
    letters.sort(key=lambda li: CANONICAL_ORDER.find(li[0]) if li[0] in CANONICAL_ORDER else -1)
    return "".join(li[0] for li in letters), [li[1] for li in letters]


def assemble_output(
    mapping: AxisMapping, tensor: TensorSpec, frames: Sequence[np.ndarray]
) -> tuple[np.ndarray, str]:
    """Stack per-frame outputs (model axis order) into one image with OME axes."""
    frame_axes, perm = output_image_axes(tensor)
    batch = [i for i, a in enumerate(tensor.axes) if a.kind == "batch"]
    pieces = []
    for f in frames:
        arr = np.transpose(f, [*batch, *perm])
        pieces.append(arr.reshape(arr.shape[len(batch) :]) if batch else arr)
    if not mapping.frame_axes:
        return pieces[0], frame_axes
    stacked = np.stack(pieces).reshape(*mapping.frame_shape, *pieces[0].shape)
    axes = mapping.frame_axes + frame_axes
    if len(set(axes)) != len(axes):
        raise AxesMismatchError(
            f"output {tensor.id!r}: frame axes {mapping.frame_axes} clash with output axes "
            f"{frame_axes}"
        )
    order = sorted(range(len(axes)), key=lambda i: CANONICAL_ORDER.find(axes[i]))
    return np.transpose(stacked, order), "".join(axes[i] for i in order)


@dataclass(frozen=True)
class OutputPlacement:
    """Where the blocks of one output tensor go in the assembled output image.

    The image is the one :func:`assemble_output` would build from every frame's
    output: frame axes and the output's own axes, in OME order.  :meth:`place` maps
    a block of one frame's output (tensor axis order, batch 1) to its region in that
    image, so that big outputs can be written block by block.
    """

    axes: str
    shape: tuple[int, ...]
    frame_axes: str
    tensor_order: tuple[int, ...]
    batch_axes: tuple[int, ...]
    final_order: tuple[int, ...]

    def place(
        self,
        frame_index: Sequence[int],
        region: Sequence[slice],
        block: np.ndarray,
    ) -> tuple[tuple[slice, ...], np.ndarray]:
        """The region of the image and the block's pixels laid out over it.

        Parameters
        ----------
        frame_index
            The frame's index along :attr:`frame_axes` (empty for a single frame).
        region
            The block's slices in the frame's output, in tensor axis order (those of
            the batch axis are ignored).
        block
            The block's pixels in tensor axis order, batch of one.
        """
        data = np.transpose(block, [*self.batch_axes, *self.tensor_order])
        data = data.reshape(data.shape[len(self.batch_axes) :])
        slices = [slice(i, i + 1) for i in frame_index]
        slices += [region[i] for i in self.tensor_order]
        data = data.reshape((1,) * len(frame_index) + data.shape)
        return (
            tuple(slices[i] for i in self.final_order),
            np.transpose(data, self.final_order),
        )


def output_placement(
    mapping: AxisMapping, tensor: TensorSpec, frame_shape: Sequence[int]
) -> OutputPlacement:
    """How blocks of ``tensor`` are laid into the image :func:`assemble_output` builds.

    Parameters
    ----------
    mapping
        The mapping of the input image.
    tensor
        The output tensor.
    frame_shape
        The shape of one frame's whole output, in tensor axis order.
    """
    out_axes, perm = output_image_axes(tensor)
    batch = tuple(i for i, a in enumerate(tensor.axes) if a.kind == "batch")
    axes = mapping.frame_axes + out_axes
    if len(set(axes)) != len(axes):
        raise AxesMismatchError(
            f"output {tensor.id!r}: frame axes {mapping.frame_axes} clash with output axes "
            f"{out_axes}"
        )
    shape = (*mapping.frame_shape, *(int(frame_shape[i]) for i in perm))
    order = tuple(sorted(range(len(axes)), key=lambda i: CANONICAL_ORDER.find(axes[i])))
    return OutputPlacement(
        axes="".join(axes[i] for i in order),
        shape=tuple(shape[i] for i in order),
        frame_axes=mapping.frame_axes,
        tensor_order=tuple(perm),
        batch_axes=batch,
        final_order=order,
    )
