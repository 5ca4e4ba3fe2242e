"""What a prediction run is asked to do, and what makes two runs' outputs comparable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoodesk.batch.record import RunRecord
from zoodesk.errors import ZooDeskError
from zoodesk.fileutils import sha256_file
from zoodesk.inference.predict import Predictor
from zoodesk.inference.streaming import StreamingPolicy
from zoodesk.instances import InstanceSettings
from zoodesk.models.package import ModelPackage
from zoodesk.models.spec import WeightsSpec

#: Default seconds a recently modified input is watched for changes before reading.
DEFAULT_SETTLE_SECONDS = 2.0


@dataclass
class PredictionRequest:
    """Everything a prediction run needs.  Paths are resolved by the runner.

    Attributes
    ----------
    model
        A model package, or a path / cached id for :func:`zoodesk.models.resolve_model`.
    inputs
        Image files and folders (a ``.txt``/``.lst``/``.list`` file is read as a list).
    output_dir
        Where outputs and the run record go.
    lists
        Files listing inputs (files or folders), one per line.
    series
        Which series of every file to read.  None (the default) reads each series of
        a multi-series microscope file (the scenes of a CZI, the positions of an ND2,
        the images of a LIF) as an input of its own, named ``file[scene]``, and the
        first series of other files.
    scenes
        Glob patterns (case-insensitive) on scene names: only the series of
        multi-series files whose name matches one are read; empty means all.
    streaming
        When images are processed block by block from disk.
    settle_seconds
        How long a recently modified input is watched for changes before reading.
    """

    model: str | Path | ModelPackage
    inputs: Sequence[Path]
    output_dir: Path
    device: str = "auto"
    weights_format: str | None = None
    patterns: Sequence[str] = ()
    recursive: bool = False
    axes: str | None = None
    #: Channels to feed the model, by index or by the name the file gives them.
    channels: Sequence[int | str] | None = None
    tile: Mapping[str, int] | None = None
    threads: int | None = None
    overwrite: bool = False
    pad_mode: str = "reflect"
    extra: dict[str, Any] = field(default_factory=dict)
    lists: Sequence[Path] = ()
    series: int | None = None
    scenes: Sequence[str] = ()
    streaming: StreamingPolicy = field(default_factory=StreamingPolicy)
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    #: Lossless compression of the OME-TIFF outputs: ``zlib`` (deflate, readable
    #: everywhere, the default), ``zstd`` (several times faster to write; needs a
    #: recent Bio-Formats or tifffile to read) or ``none``.
    compression: str = "zlib"
    #: ``ome-tiff`` (the default) or ``ome-zarr`` (NGFF 0.5 stores with a pyramid for
    #: large images; ``compression`` does not apply, they are zstd-compressed).
    output_format: str = "ome-tiff"
    #: Objects to make from an output after each image (label image, ``objects.csv``,
    #: and the run's ``summary.csv``); None makes none.
    instances: InstanceSettings | None = None
    #: Add to the run already in ``output_dir``: its inputs that this run does not
    #: process stay in the record, as done earlier.  Without it the record lists this
    #: run's inputs only (the earlier run is summarised in its history).
    add_to_earlier: bool = False

    def parameters(self) -> dict[str, Any]:
        """The request as recorded in the run record."""
        return {
            "inputs": [str(Path(p).resolve()) for p in self.inputs],
            "lists": [str(Path(p).resolve()) for p in self.lists],
            "output_dir": str(Path(self.output_dir).resolve()),
            "device_requested": self.device,
            "weights_format": self.weights_format,
            "patterns": list(self.patterns),
            "recursive": self.recursive,
            "axes": self.axes,
            "channels": list(self.channels) if self.channels is not None else None,
            "series": self.series,
            "scenes": list(self.scenes),
            "tile": dict(self.tile) if self.tile else None,
            "threads": self.threads,
            "pad_mode": self.pad_mode,
            "streaming": self.streaming.as_dict(),
            "settle_seconds": self.settle_seconds,
            "compression": self.compression,
            "output_format": self.output_format,
            "instances": self.instances.as_dict() if self.instances else None,
            **self.extra,
        }


def run_signature(
    package: ModelPackage, predictor: Predictor, request: PredictionRequest
) -> dict[str, Any]:
    """What makes outputs comparable between runs into one folder.

    Model description and weights (by checksum and format) and the parameters
    that change the pixels of the outputs: axes, channels, series, tile size and
    padding.  The device, threads and input list are not part of it.
    """
    return _signature(package, predictor.weights, request)


def planned_signature(package: ModelPackage, request: PredictionRequest) -> dict[str, Any]:
    """The :func:`run_signature` a run of ``request`` will have, known before the model
    is loaded (the weights are those the run will choose)."""
    return _signature(package, package.executable_weights(request.weights_format), request)


def _signature(
    package: ModelPackage, weights: WeightsSpec, request: PredictionRequest
) -> dict[str, Any]:
    return {
        "description_sha256": sha256_file(package.description_path),
        "weights_format": weights.format,
        "weights_sha256": weights.source.sha256 or sha256_file(package.path_of(weights.source)),
        "axes": request.axes.upper() if request.axes else None,
        "channels": list(request.channels) if request.channels is not None else None,
        "series": request.series,
        "tile": dict(sorted(request.tile.items())) if request.tile else None,
        "pad_mode": request.pad_mode,
        "instances": request.instances.as_dict() if request.instances else None,
    }


_SIGNATURE_NAMES = {
    "description_sha256": "model description",
    "weights_format": "weights format",
    "weights_sha256": "model weights",
    "axes": "--axes",
    "channels": "--channel",
    "series": "--series",
    "tile": "--tile",
    "pad_mode": "padding mode",
    "instances": "--instances",
}


def setup_differences(old: RunRecord, signature: Mapping[str, Any]) -> list[str]:
    """The keys of ``signature`` whose value differs from the earlier run's (none when
    that run finished no input, so that nothing of it could be mixed up)."""
    if not any(f.status in ("ok", "skipped") for f in old.files):
        return []
    previous = old.signature
    if not previous:
        # Records written before signatures existed: compare the weights only.
        old_sha = old.model.get("weights", {}).get("sha256")
        previous = {**signature, "weights_sha256": old_sha}
    return [k for k in signature if previous.get(k) != signature.get(k)]


def check_same_setup(old: RunRecord, signature: Mapping[str, Any], out_dir: Path) -> None:
    """Refuse to mix results of another model or other parameters into a folder."""
    differences = [_SIGNATURE_NAMES.get(k, k) for k in setup_differences(old, signature)]
    if differences:
        model = old.model.get("name") or old.model.get("id") or "another model"
        hint = ""
        if differences == ["--instances"]:
            hint = " (zoodesk measure remakes the objects of a run without the model)"
        raise ZooDeskError(
            f"{out_dir}: holds results of an earlier run ({model}) with a different "
            f"{', '.join(differences)}; choose another output folder, or use --overwrite "
            f"to redo every input with the new set-up{hint}"
        )
