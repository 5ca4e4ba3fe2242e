"""Write OME-Zarr (NGFF 0.5, zarr format 3) images, whole or block by block.

The metadata is built and validated by ``ome-zarr-models`` (its NGFF 0.5 ``Image``),
the arrays are written by ``zarr``.  An image is written into a hidden ``.part``
folder beside its destination and renamed into place when complete, so that no
half-written store ever carries the final name; an aborted write leaves nothing.

Large images get a multiscale pyramid: each level halves Y and X (2 x 2 means for
intensities, every other pixel for labels and masks, whose values must stay
values of the image) until the longer side fits in :data:`PYRAMID_STOP` pixels.
Chunks are one plane high in T, C and Z and up to :data:`CHUNK` pixels in Y and X,
compressed with zstd.  Physical pixel sizes become the levels' scales (with NGFF
unit names), channel names the ``omero`` channel labels, and ZooDesk's provenance
goes into the group's ``zoodesk`` attributes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

#: Chunk side in Y and X.
CHUNK = 512
#: The pyramid stops at the first level whose longer side is at most this.
PYRAMID_STOP = 1024
#: Rows of a level read at once while building the next (a multiple of 2).
_BAND_ROWS = 2 * CHUNK

_NGFF_ORDER = "TCZYX"
_NGFF_UNITS = {
    "µm": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "Å": "angstrom",
    "pm": "picometer",
}
_CODECS = (
    {"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "zstd", "configuration": {"level": 3, "checksum": False}},
)


def level_shapes(shape: Sequence[int], axes: str) -> list[tuple[int, ...]]:
    """The shape of every pyramid level of an image (level 0 first)."""
    shapes = [tuple(int(n) for n in shape)]
    y, x = axes.index("Y"), axes.index("X")
    while max(shapes[-1][y], shapes[-1][x]) > PYRAMID_STOP:
        last = list(shapes[-1])
        last[y], last[x] = max(1, last[y] // 2), max(1, last[x] // 2)
        shapes.append(tuple(last))
    return shapes


class TiledOmeZarrWriter:
    """An OME-Zarr image written block by block, in bounded memory.

    The counterpart of :class:`~zoodesk.images.TiledOmeTiffWriter` for OME-Zarr, with
    the same use: :meth:`write_block` for each region (any order, the last write
    wins), then :meth:`close` builds the pyramid one band of rows at a time and
    renames the store into place; :meth:`abort` (or an exception in a ``with``
    block) removes everything written.

    Parameters
    ----------
    path
        The store to create (a folder, conventionally ``*.ome.zarr``).
    shape, dtype, axes
        The image: axes are letters of ``TCZYX`` (in any order; stored in NGFF's).
    pixel_sizes
        ``{"X": (0.65, "µm"), ...}``: the scale of level 0.
    channel_names
        One per channel, kept as the ``omero`` channel labels.
    provenance
        Stored in the group's ``zoodesk`` attributes.
    labels
        The image holds labels or a mask: the pyramid keeps values (every other
        pixel) instead of averaging them.
    image_label
        The store is an NGFF label image (``labels/<name>`` inside an image's store,
        see :func:`register_labels`): it says so, and names its image.
    acquisition
        The source's microscope, objective and time step, kept in the ``zoodesk``
        attributes (NGFF has no place for them).
    """

    def __init__(
        self,
        path: Path,
        shape: Sequence[int],
        dtype: npt.DTypeLike,
        axes: str,
        *,
        pixel_sizes: Mapping[str, tuple[float, str]] | None = None,
        channel_names: Sequence[str] | None = None,
        provenance: Mapping[str, str] | None = None,
        labels: bool = False,
        acquisition: Mapping[str, Any] | None = None,
        image_label: bool = False,
    ) -> None:
        import zarr
        from ome_zarr_models.v05.axes import Axis
        from ome_zarr_models.v05.image import Image
        from pydantic_zarr.v3 import ArraySpec

        axes = axes.upper()
        if sorted(axes) != sorted(set(axes)) or set(axes) - set(_NGFF_ORDER):
            raise ValueError(f"axes {axes!r} must be distinct letters of {_NGFF_ORDER}")
        if "Y" not in axes or "X" not in axes or len(axes) != len(shape):
            raise ValueError(f"axes {axes!r} do not fit shape {tuple(shape)} (Y and X needed)")
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.labels = labels
        self._axes_in = axes
        self.axes = "".join(a for a in _NGFF_ORDER if a in axes)
        self._order = [axes.index(a) for a in self.axes]
        self.shape = tuple(int(shape[i]) for i in self._order)
        self._shapes = level_shapes(self.shape, self.axes)
        sizes = dict(pixel_sizes or {})
        names = [a.lower() for a in self.axes]
        specs: list[Any] = []
        scales: list[list[float]] = []
        for level_shape in self._shapes:
            chunks = tuple(
                min(n, CHUNK) if a in "YX" else 1
                for a, n in zip(self.axes, level_shape, strict=True)
            )
            specs.append(
                ArraySpec.model_validate(
                    {
                        "shape": level_shape,
                        "data_type": self.dtype.name,
                        "chunk_grid": {
                            "name": "regular",
                            "configuration": {"chunk_shape": chunks},
                        },
                        "chunk_key_encoding": {
                            "name": "default",
                            "configuration": {"separator": "/"},
                        },
                        "fill_value": False if self.dtype.kind == "b" else 0,
                        "codecs": _CODECS,
                        "attributes": {},
                        "dimension_names": names,
                    }
                )
            )
            scales.append(
                [
                    (sizes[a][0] if a in sizes else 1.0)
                    * (self.shape[i] / level_shape[i] if a in "YX" else 1.0)
                    for i, a in enumerate(self.axes)
                ]
            )
        image = Image.new(
            array_specs=specs,
            paths=[str(level) for level in range(len(self._shapes))],
            axes=[_axis(Axis, a, sizes) for a in self.axes],
            scales=scales,
            translations=[None] * len(self._shapes),
            name=self.path.name.removesuffix(".zarr").removesuffix(".ome"),
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._scratch: Path | None = self.path.with_name(
            f".{self.path.name}.{secrets.token_hex(4)}.part"
        )
        try:
            group = image.to_zarr(zarr.storage.LocalStore(str(self._scratch)), path="")
            extra: dict[str, Any] = {}
            if channel_names:
                extra["omero"] = {
                    "version": "0.5",
                    "channels": [{"label": str(n)} for n in channel_names],
                }
            attributes: dict[str, Any] = dict(group.attrs)
            if image_label:
                # No colours of our own (viewers choose theirs), but the list is there:
                # ome-zarr-models' validation of label images wants it.
                extra["image-label"] = {
                    "version": "0.5",
                    "colors": [],
                    "source": {"image": "../../"},
                }
            if extra:
                attributes["ome"] = {**dict(attributes["ome"]), **extra}
            ours: dict[str, Any] = {}
            if provenance:
                ours["provenance"] = dict(provenance)
            if acquisition:
                ours["acquisition"] = dict(acquisition)
            if ours:
                attributes["zoodesk"] = ours
            group.attrs.put(_without_nulls(attributes))
            # One zarr array per level (typed loosely: zarr's own types are unions).
            self._arrays: list[Any] = [group[str(n)] for n in range(len(self._shapes))]
        except BaseException:
            self.abort()
            raise

    @property
    def levels(self) -> int:
        """How many resolution levels the store has."""
        return len(self._shapes)

    def write_block(self, region: Sequence[slice | int] | slice | int, data: npt.ArrayLike) -> None:
        """Store ``data`` at ``region`` of level 0 (both in the axes given at creation)."""
        if self._scratch is None:
            raise ValueError(f"{self.path}: the writer is closed")
        _store_block(self._arrays[0], self._order, self.dtype, region, data)

    def level_zero(self) -> LevelZeroWriter:
        """A picklable writer of level 0, for other processes (a cluster's workers) to
        write blocks into this store before :meth:`close`.  Two writers must never
        write into the same chunk (``CHUNK`` pixels in Y and X, one along other axes)."""
        if self._scratch is None:
            raise ValueError(f"{self.path}: the writer is closed")
        return LevelZeroWriter(str(self._scratch / "0"), tuple(self._order), self.dtype.str)

    def close(self) -> None:
        """Build the pyramid and put the store in place (replacing an older one)."""
        if self._scratch is None:
            return
        try:
            self._build_pyramid()
            self._replace()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard everything written; the destination is left as it was."""
        scratch, self._scratch = self._scratch, None
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    def __enter__(self) -> TiledOmeZarrWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def _build_pyramid(self) -> None:
        y = self.axes.index("Y")
        for level in range(1, len(self._shapes)):
            source, target = self._arrays[level - 1], self._arrays[level]
            rows = self._shapes[level - 1][y]
            for start in range(0, rows - rows % 2, _BAND_ROWS):
                stop = min(start + _BAND_ROWS, rows - rows % 2)
                band = source[(slice(None),) * y + (slice(start, stop),)]
                target[(slice(None),) * y + (slice(start // 2, stop // 2),)] = self._halve(band)

    def _halve(self, band: np.ndarray) -> np.ndarray:
        y, x = self.axes.index("Y"), self.axes.index("X")
        even = band[
            tuple(
                slice(0, (n // 2) * 2) if i in (y, x) else slice(None)
                for i, n in enumerate(band.shape)
            )
        ]
        if self.labels or self.dtype.kind == "b":
            every_other = tuple(
                slice(None, None, 2) if i in (y, x) else slice(None) for i in range(even.ndim)
            )
            return even[every_other]
        shape: list[int] = []
        for i, n in enumerate(even.shape):
            shape.extend([n // 2, 2] if i in (y, x) else [n])
        # Mean over each 2 x 2 block: the axes after Y and X shift by one each.
        mean = even.reshape(shape).mean(axis=(y + 1, x + 2), dtype=np.float64)
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            mean = np.clip(np.rint(mean), info.min, info.max)
        return mean.astype(self.dtype)

    def _replace(self) -> None:
        scratch = self._scratch
        assert scratch is not None
        old: Path | None = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.old.part")
            self.path.rename(old)
        try:
            scratch.rename(self.path)
        except BaseException:
            if old is not None:
                with contextlib.suppress(OSError):
                    old.rename(self.path)
            raise
        self._scratch = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _store_block(
    array: Any,
    order: Sequence[int],
    dtype: np.dtype[Any],
    region: Sequence[slice | int] | slice | int,
    data: npt.ArrayLike,
) -> None:
    if not isinstance(region, Sequence):
        region = (region,)
    full = list(region) + [slice(None)] * (len(order) - len(region))
    block = np.asarray(data, dtype=dtype)
    # Integer indices drop their axis from the block: reorder what remains.
    kept = [i for i in order if not isinstance(full[i], int)]
    present = [i for i in range(len(full)) if not isinstance(full[i], int)]
    block = np.transpose(block, [present.index(i) for i in kept])
    array[tuple(full[i] for i in order)] = block


@dataclass(frozen=True)
class LevelZeroWriter:
    """Writes blocks into level 0 of a store that a :class:`TiledOmeZarrWriter` in
    another process is making (see :meth:`TiledOmeZarrWriter.level_zero`)."""

    array_path: str
    order: tuple[int, ...]
    dtype: str

    def write_block(self, region: Sequence[slice | int] | slice | int, data: npt.ArrayLike) -> None:
        """Store ``data`` at ``region`` (in the axes the store was created with)."""
        _store_block(_opened(self.array_path), self.order, np.dtype(self.dtype), region, data)


@functools.lru_cache(maxsize=16)
def _opened(array_path: str) -> Any:
    import zarr

    return zarr.open_array(zarr.storage.LocalStore(array_path), mode="r+")


def register_labels(store: Path, names: Sequence[str]) -> None:
    """List label images under ``store/labels`` in NGFF's ``labels`` group (atomically).

    The label images themselves are written with :class:`TiledOmeZarrWriter`
    (``image_label=True``) at ``store/labels/<name>``.
    """
    from zoodesk.fileutils import atomic_write_text

    group = Path(store) / "labels"
    group.mkdir(parents=True, exist_ok=True)
    document = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"ome": {"version": "0.5", "labels": list(names)}},
    }
    atomic_write_text(group / "zarr.json", json.dumps(document, indent=2))


def _without_nulls(value: Any) -> Any:
    """``value`` without the ``null`` entries of its mappings (NGFF's schema wants a
    field left out, not set to null)."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(v) for v in value]
    return value


def _axis(axis_type: Any, letter: str, sizes: Mapping[str, tuple[float, str]]) -> Any:
    if letter == "C":
        return axis_type(name="c", type="channel")
    if letter == "T":
        return axis_type(name="t", type="time")
    unit = _NGFF_UNITS.get(sizes[letter][1]) if letter in sizes else None
    return axis_type(name=letter.lower(), type="space", unit=unit)


def write_ome_zarr(
    path: Path,
    array: npt.ArrayLike,
    axes: str,
    *,
    pixel_sizes: Mapping[str, tuple[float, str]] | None = None,
    channel_names: Sequence[str] | None = None,
    provenance: Mapping[str, str] | None = None,
    labels: bool = False,
    acquisition: Mapping[str, Any] | None = None,
) -> Path:
    """Write a whole image as an OME-Zarr store (see :class:`TiledOmeZarrWriter`)."""
    data = np.asarray(array)
    with TiledOmeZarrWriter(
        path,
        data.shape,
        data.dtype,
        axes,
        pixel_sizes=pixel_sizes,
        channel_names=channel_names,
        provenance=provenance,
        labels=labels,
        acquisition=acquisition,
    ) as writer:
        writer.write_block(tuple(slice(None) for _ in data.shape), data)
    return Path(path)
