"""Models, images and run helpers shared by the batch tests.

The box-filter packages compute a same-size mean filter (zero padding) per channel,
so the expected output of any image is computed here with SciPy, independently of
the code under test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from tests.onnx_factory import conv_model, write_package
from zoodesk.batch.runner import (
    Event,
    FileFinished,
    PredictionRequest,
    RunFinished,
    run_prediction,
)
from zoodesk.images import read_image
from zoodesk.models.package import ModelPackage, load_model_package


def box_package(
    folder: Path,
    *,
    ndim: int = 2,
    channels: int = 1,
    radius: int = 1,
    halo: int = 2,
    min_size: int = 16,
    step: int = 8,
    preprocessing: list[dict[str, Any]] | None = None,
    postprocessing: list[dict[str, Any]] | None = None,
) -> ModelPackage:
    """A bioimage.io package of a depthwise box filter with dynamic sizes."""
    weights = folder / "weights.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    conv_model(weights, radius=radius, ndim=ndim, channels=channels)
    names = [f"c{i}" for i in range(channels)]
    spatial = ["z", "y", "x"][-ndim:]
    in_axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": names},
        *({"type": "space", "id": a, "size": {"min": min_size, "step": step}} for a in spatial),
    ]
    out_axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": [f"o{i}" for i in range(channels)]},
        *(
            {"type": "space", "id": a, "size": {"tensor_id": "raw", "axis_id": a}, "halo": halo}
            for a in spatial
        ),
    ]
    shape = (1, channels, *([min_size] * ndim))
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    y = np.stack([box_filter(x[0, c], radius) for c in range(channels)])[None]
    raw: dict[str, Any] = {"id": "raw", "axes": in_axes}
    out: dict[str, Any] = {"id": "out", "axes": out_axes}
    if preprocessing:
        raw["preprocessing"] = preprocessing
    if postprocessing:
        out["postprocessing"] = postprocessing
    description = write_package(
        folder / "pkg",
        weights,
        inputs=[raw],
        outputs=[out],
        test_arrays={"raw": x, "out": y.astype(np.float32)},
        name=f"box {ndim}d x{channels}",
    )
    return load_model_package(description)


def box_filter(image: np.ndarray, radius: int = 1) -> np.ndarray:
    """What the box-filter graph computes on a whole image (float64, zero padding)."""
    k = 2 * radius + 1
    kernel = np.full((k,) * image.ndim, 1.0 / k**image.ndim)
    return ndimage.correlate(image.astype(np.float64), kernel, mode="constant", cval=0.0)


def run(request: PredictionRequest, **kwargs: Any) -> tuple[list[Event], RunFinished]:
    """All events of a run, and its last one."""
    events = list(run_prediction(request, **kwargs))
    last = events[-1]
    assert isinstance(last, RunFinished)
    return events, last


def request(model: Any, inputs: Sequence[Path], out: Path, **kwargs: Any) -> PredictionRequest:
    """A CPU request that reads files at once (the tests' files are brand new)."""
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("settle_seconds", 0.0)
    return PredictionRequest(model=model, inputs=list(inputs), output_dir=out, **kwargs)


def statuses(finished: RunFinished) -> dict[str, str]:
    """Input file name to status."""
    return {Path(f.input).name: f.status for f in finished.record.files}


def errors(finished: RunFinished) -> dict[str, str]:
    """Input file name to error message, for the inputs that have one."""
    return {Path(f.input).name: f.error for f in finished.record.files if f.error}


def finished_entries(events: Iterable[Event]) -> list[FileFinished]:
    return [e for e in events if isinstance(e, FileFinished)]


def output_array(out_dir: Path, rel: str) -> np.ndarray:
    return np.asarray(read_image(out_dir / rel).array)


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(folder: Path) -> list[str]:
    """Temporary files (``.part``) anywhere below ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.part"))
