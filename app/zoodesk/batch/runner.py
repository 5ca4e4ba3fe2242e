"""Batch prediction over files and folders, as a generator of events.

:func:`run_prediction` is the one engine behind ``zoodesk predict``, ``zoodesk
demo`` and the desktop application's batch page.  It yields plain event objects and
checks a ``cancelled`` callable between blocks, so any front end can drive it.

The next file is read while the current one is computed and the previous one is
written.  Each input's outputs are written under temporary names and renamed when
complete, and the run record is rewritten atomically after every input, so a run
that is killed leaves only complete outputs behind and a re-run skips them.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoodesk.batch.record import FileEntry, OutputEntry, RunRecord, RECORD_NAME, now_iso
from zoodesk.errors import ImageReadError, ZooDeskError
from zoodesk.fileutils import sha256_file
from zoodesk.images.axes import AxisMapping, assemble_output, map_image_to_tensor
from zoodesk.inference.predict import Predictor
from zoodesk.models.package import ModelPackage
from zoodesk.models.spec import ModelSpec, TensorSpec

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class RunStarted:
    """The run is set up: files found, model loaded, device known."""

    run_id: str
    total: int
    to_do: int
    device: str
    device_description: str
    weights_format: str
    record_path: Path
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileStarted:
    index: int
    path: Path


@dataclass(frozen=True)
class BlockProgress:
    index: int
    done: int
    total: int


@dataclass(frozen=True)
class FileFinished:
    index: int
    path: Path
    entry: FileEntry


@dataclass(frozen=True)
class RunFinished:
    record: RunRecord

    @property
    def all_ok(self) -> bool:
        return all(f.status in ("ok", "skipped") for f in self.record.files)


Event = RunStarted | FileStarted | BlockProgress | FileFinished | RunFinished


# ----------------------------------------------------------------------------- request


@dataclass
class PredictionRequest:
    """Everything a prediction run needs.  Paths are resolved by the runner."""

    model: str | Path | ModelPackage
    inputs: Sequence[Path]
    output_dir: Path
    device: str = "auto"
    weights_format: str | None = None
    patterns: Sequence[str] = ()
    recursive: bool = False
    axes: str | None = None
    channels: Sequence[int] | None = None
    tile: Mapping[str, int] | None = None
    threads: int | None = None
    overwrite: bool = False
    pad_mode: str = "reflect"
    extra: dict[str, Any] = field(default_factory=dict)

    def parameters(self) -> dict[str, Any]:
        return {
            "inputs": [str(Path(p).resolve()) for p in self.inputs],
            "output_dir": str(Path(self.output_dir).resolve()),
            "device_requested": self.device,
            "weights_format": self.weights_format,
            "patterns": list(self.patterns),
            "recursive": self.recursive,
            "axes": self.axes,
            "channels": list(self.channels) if self.channels is not None else None,
            "tile": dict(self.tile) if self.tile else None,
            "threads": self.threads,
            "pad_mode": self.pad_mode,
            **self.extra,
        }


# ---------------------------------------------------------------------------- helpers


def output_kind(tensor: TensorSpec, dtype: np.dtype[Any]) -> str:
    """``labels`` for integer outputs, ``probabilities`` for [0, 1] floats, else ``image``."""
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        return "labels"
    lo, hi = tensor.data_range
    if lo is not None and hi is not None and lo >= 0 and hi <= 1:
        return "probabilities"
    if any(op.id == "sigmoid" for op in tensor.postprocessing):
        return "probabilities"
    return "image"


def finalize_output_dtype(array: np.ndarray, tensor: TensorSpec) -> np.ndarray:
    """Float outputs as float32, integer outputs as the declared integer type."""
    declared = np.dtype(tensor.data_type) if tensor.data_type != "bool" else np.dtype(np.uint8)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(declared, np.integer):
        if np.issubdtype(array.dtype, np.integer):
            return array if array.dtype == declared else array.astype(declared)
        info = np.iinfo(declared)
        return np.clip(np.rint(array), info.min, info.max).astype(declared)
    if array.dtype != np.float32 and np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    return array


def output_pixel_sizes(
    spec: ModelSpec, tensor: TensorSpec, source: Mapping[str, tuple[float, str]]
) -> dict[str, tuple[float, str]]:
    """Physical pixel sizes of an output: the source's, rescaled where the model resamples."""
    result: dict[str, tuple[float, str]] = {}
    for ax in tensor.axes:
        letter = ax.id.upper()
        if ax.kind != "space" or letter not in "XYZ":
            continue
        ratio = 1.0
        if ax.reference is not None:
            ref = spec.tensor(ax.reference.tensor_id).axis(ax.reference.axis_id)
            ratio = ref.scale / ax.scale
            letter_src = ref.id.upper()
        else:
            letter_src = letter
        if letter_src in source:
            size, unit = source[letter_src]
            result[letter] = (size / ratio, unit)
    return result


def unique_keys(files: Sequence[tuple[Path, Path | None]]) -> list[str]:
    """Output name stems: the path below the input folder, made unique."""
    from zoodesk.images import output_stem

    keys: list[str] = []
    seen: set[str] = set()
    for path, root in files:
        rel = path.relative_to(root) if root is not None else Path(path.name)
        key = "/".join([*rel.parent.parts, output_stem(rel)]) if rel.parent.parts else output_stem(rel)
        key = "".join(ch if ch.isalnum() or ch in "._-/" else "_" for ch in key)
        candidate, n = key, 2
        while candidate.lower() in seen:
            candidate, n = f"{key}-{n}", n + 1
        seen.add(candidate.lower())
        keys.append(candidate)
    return keys


def collect_inputs(
    inputs: Sequence[Path], patterns: Sequence[str], recursive: bool
) -> tuple[list[tuple[Path, Path | None]], list[Path]]:
    """Files to process (with the folder they were found in) and inputs that do not exist."""
    from zoodesk.images import find_images, read_list_file

    found: list[tuple[Path, Path | None]] = []
    missing: list[Path] = []
    seen: set[Path] = set()
    for raw in inputs:
        path = Path(raw).expanduser()
        if not path.exists():
            missing.append(path)
            continue
        if path.is_file() and path.suffix.lower() in (".txt", ".lst", ".list"):
            listed = read_list_file(path)
            items = [(p.resolve(), None) for p in listed]
        elif path.is_dir():
            root = path.resolve()
            items = [(p.resolve(), root) for p in find_images([path], patterns=patterns,
                                                                recursive=recursive)]
        else:
            items = [(path.resolve(), None)]
        for p, root in items:
            if p not in seen:
                seen.add(p)
                found.append((p, root))
    return found, missing


def _describe_error(path: Path, exc: BaseException) -> str:
    if isinstance(exc, ZooDeskError):
        text = str(exc)
        return text if str(path) in text or path.name in text else f"{path}: {text}"
    if isinstance(exc, MemoryError):
        return f"{path}: not enough memory to process this image"
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return f"{path}: the disk is full (writing {exc.filename or 'the output'})"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{path}: permission denied writing {exc.filename or 'the output'}"
        return f"{path}: {exc.strerror or exc}"
    return f"{path}: unexpected error ({type(exc).__name__}: {exc})"


# ------------------------------------------------------------------------------ runner


@dataclass
class _Loaded:
    image: Any
    sha256: str
    size: int
    mtime_ns: int


def _read(path: Path, axes: str | None) -> _Loaded:
    from zoodesk.images import read_image

    st = path.stat()
    image = read_image(path, axes=axes)
    data = image.array
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise ImageReadError(f"{path}: the image contains NaN or infinite values")
    return _Loaded(image, sha256_file(path), st.st_size, st.st_mtime_ns)


def _provenance(
    record: RunRecord, predictor: Predictor, tensor: TensorSpec, entry: FileEntry
) -> dict[str, str]:
    spec = predictor.spec
    threshold = next(
        (str(op.kwargs.get("threshold")) for op in tensor.postprocessing if op.id == "binarize"),
        "",
    )
    prov = {
        "description": "model-generated, not manually curated",
        "source_image": Path(entry.input).name,
        "source_image_sha256": entry.input_sha256 or "",
        "model_id": spec.id or spec.name,
        "model_name": spec.name,
        "model_version": spec.version or "",
        "weights_format": predictor.weights.format,
        "weights_sha256": predictor.weights.source.sha256 or "",
        "output_tensor": tensor.id,
        "postprocessing": ", ".join(op.id for op in tensor.postprocessing) or "none",
        "run_id": record.run_id,
        "device": predictor.session.device.name,
        "created": now_iso(),
        "software": f"zoodesk {record.software.get('zoodesk', '')}",
    }
    if threshold:
        prov["threshold"] = threshold
    return prov


def _write_outputs(
    out_dir: Path,
    entry: FileEntry,
    outputs: Mapping[str, tuple[np.ndarray, str]],
    predictor: Predictor,
    record: RunRecord,
    pixel_sizes: Mapping[str, tuple[float, str]],
) -> list[OutputEntry]:
    from zoodesk.images import write_ome_tiff

    spec = predictor.spec
    written: list[OutputEntry] = []
    for tensor in spec.outputs:
        if tensor.id not in outputs:
            continue
        array, axes = outputs[tensor.id]
        rel = f"{entry.key}_{tensor.id}.ome.tif"
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        channel_axis = next((a for a in tensor.axes if a.kind == "channel"), None)
        write_ome_tiff(
            path,
            array,
            axes,
            pixel_sizes=output_pixel_sizes(spec, tensor, pixel_sizes),
            channel_names=list(channel_axis.channel_names) if channel_axis else None,
            provenance=_provenance(record, predictor, tensor, entry),
        )
        written.append(
            OutputEntry(
                tensor=tensor.id,
                path=rel,
                sha256=sha256_file(path),
                axes=axes,
                shape=list(array.shape),
                dtype=str(array.dtype),
                kind=output_kind(tensor, array.dtype),
            )
        )
    return written


def _previous_outputs_valid(previous: FileEntry, out_dir: Path, st: os.stat_result) -> bool:
    if previous.status != "ok" or not previous.outputs:
        return False
    if previous.input_size != st.st_size or previous.input_mtime_ns != st.st_mtime_ns:
        return False
    for o in previous.outputs:
        p = out_dir / o.path
        if not p.is_file() or sha256_file(p) != o.sha256:
            return False
    return True


def _model_identity(package: ModelPackage, predictor: Predictor) -> dict[str, Any]:
    spec = package.spec
    w = predictor.weights
    return {
        "source": str(package.description_path),
        "root": str(package.root),
        "description_sha256": sha256_file(package.description_path),
        "id": spec.id,
        "name": spec.name,
        "version": spec.version,
        "format_version": spec.format_version,
        "license": spec.license,
        "weights": {
            "format": w.format,
            "source": w.source.source,
            "sha256": w.source.sha256 or sha256_file(package.path_of(w.source)),
            "parent": w.parent,
            "opset_version": w.opset_version,
        },
        "inputs": [{"id": t.id, "axes": t.axes_letters} for t in spec.inputs],
        "outputs": [{"id": t.id, "axes": t.axes_letters} for t in spec.outputs],
    }


def run_prediction(
    request: PredictionRequest,
    *,
    cancelled: Callable[[], bool] | None = None,
    predictor: Predictor | None = None,
) -> Iterator[Event]:
    """Run a model over every input file; yield events; the last one is RunFinished.

    Raises :class:`ZooDeskError` only for problems that stop the whole run (model
    cannot be loaded, output folder not writable, nothing to process); a problem
    with one input is recorded for that input and the run goes on.
    """
    from zoodesk.models import resolve_model

    is_cancelled = cancelled or (lambda: False)
    package = (
        request.model if isinstance(request.model, ModelPackage) else resolve_model(str(request.model))
    )
    spec = package.spec
    required_inputs = [t for t in spec.inputs if not t.optional]
    if len(required_inputs) != 1:
        raise ZooDeskError(
            f"model {spec.name!r} needs {len(required_inputs)} input tensors; "
            "running it on image files needs exactly one"
        )
    out_dir = Path(request.output_dir).expanduser().resolve()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".zoodesk-write-test-{os.getpid()}.part"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ZooDeskError(f"{out_dir}: output folder is not writable ({exc.strerror})") from exc

    files, missing = collect_inputs(request.inputs, request.patterns, request.recursive)
    if not files and not missing:
        names = ", ".join(str(p) for p in request.inputs)
        raise ZooDeskError(f"no readable images found in {names}")
    keys = unique_keys(files)

    predictor = predictor or Predictor(
        package,
        device=request.device,
        threads=request.threads,
        weights_format=request.weights_format,
        tile=request.tile,
        pad_mode=request.pad_mode,
    )
    record_path = out_dir / RECORD_NAME
    previous: dict[str, FileEntry] = {}
    model_info = _model_identity(package, predictor)
    if record_path.is_file() and not request.overwrite:
        try:
            old = RunRecord.load(record_path)
            same_model = old.model.get("weights", {}).get("sha256") == model_info["weights"]["sha256"]
            if same_model:
                previous = {f.input: f for f in old.files}
                history = [*old.history, {"run_id": old.run_id, "started": old.started,
                                          "finished": old.finished, "status": old.status}]
            else:
                history = []
        except ZooDeskError:
            history = []
    else:
        history = []

    record = RunRecord(path=record_path, history=history)
    record.model = model_info
    record.device = {
        "requested": request.device,
        "used": predictor.session.device.name,
        "provider": predictor.session.device.provider,
        "description": predictor.session.device.description,
        "warnings": list(predictor.warnings),
    }
    record.parameters = request.parameters()
    for path in missing:
        record.files.append(
            FileEntry(input=str(path), status="failed", error=f"{path}: no such file or folder")
        )
    entries: list[FileEntry] = []
    to_do: list[int] = []
    for (path, _root), key in zip(files, keys, strict=True):
        entry = FileEntry(input=str(path), key=key)
        prev = previous.get(str(path))
        if prev is not None and not request.overwrite:
            try:
                st = path.stat()
                if _previous_outputs_valid(prev, out_dir, st):
                    entry = prev
                    entry.status = "skipped"
            except OSError:
                pass
        entries.append(entry)
        if entry.status != "skipped":
            to_do.append(len(entries) - 1)
    record.files.extend(entries)
    record.save()
    yield RunStarted(
        run_id=record.run_id,
        total=len(record.files),
        to_do=len(to_do),
        device=predictor.session.device.name,
        device_description=predictor.session.device.description,
        weights_format=predictor.weights.format,
        record_path=record_path,
        warnings=tuple(predictor.warnings),
    )
    offset = len(missing)
    for k in range(len(missing)):
        yield FileFinished(k, Path(record.files[k].input), record.files[k])
    for i, entry in enumerate(entries):
        if entry.status == "skipped":
            yield FileFinished(offset + i, Path(entry.input), entry)

    reader = ThreadPoolExecutor(1, thread_name_prefix="zoodesk-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="zoodesk-write")
    pending_write: tuple[int, FileEntry, Future[list[OutputEntry]]] | None = None
    cancelled_run = False

    def finish_write() -> Iterator[Event]:
        nonlocal pending_write
        if pending_write is None:
            return
        index, wentry, future = pending_write
        pending_write = None
        try:
            wentry.outputs = future.result()
            wentry.status = "ok"
        except BaseException as exc:  # noqa: BLE001 - recorded per file, the run goes on
            log.debug("writing outputs for %s failed", wentry.input, exc_info=True)
            wentry.status = "failed"
            wentry.error = _describe_error(Path(wentry.input), exc)
        wentry.finished = now_iso()
        record.save()
        yield FileFinished(offset + index, Path(wentry.input), wentry)

    try:
        next_read: Future[_Loaded] | None = (
            reader.submit(_read, Path(entries[to_do[0]].input), request.axes) if to_do else None
        )
        for n, index in enumerate(to_do):
            entry = entries[index]
            path = Path(entry.input)
            if is_cancelled():
                cancelled_run = True
                break
            yield FileStarted(offset + index, path)
            entry.started = now_iso()
            assert next_read is not None
            current = next_read
            next_read = (
                reader.submit(_read, Path(entries[to_do[n + 1]].input), request.axes)
                if n + 1 < len(to_do)
                else None
            )
            try:
                loaded = current.result()
                image = loaded.image
                entry.input_sha256 = loaded.sha256
                entry.input_size = loaded.size
                entry.input_mtime_ns = loaded.mtime_ns
                entry.axes = image.axes
                entry.shape = [int(s) for s in image.shape]
                entry.pixel_sizes = {k: [v[0], v[1]] for k, v in image.pixel_sizes.items()}
                mapping = map_image_to_tensor(
                    image.axes, image.shape, required_inputs[0], channels=request.channels
                )
                entry.axes_mapping = mapping.describe()
                outputs, plan_info, seconds = yield from _predict_frames(
                    predictor, mapping, image.array, offset + index, is_cancelled
                )
                entry.tiling = plan_info
                entry.seconds = seconds
            except BaseException as exc:  # noqa: BLE001 - one bad file never stops the run
                from zoodesk.errors import CancelledError

                if isinstance(exc, CancelledError | KeyboardInterrupt):
                    cancelled_run = True
                    entry.status = "not done"
                    entry.error = "cancelled"
                    yield from finish_write()
                    break
                log.debug("processing %s failed", path, exc_info=True)
                entry.status = "failed"
                entry.error = _describe_error(path, exc)
                entry.finished = now_iso()
                yield from finish_write()
                record.save()
                yield FileFinished(offset + index, path, entry)
                continue
            yield from finish_write()
            pending_write = (
                index,
                entry,
                writer.submit(
                    _write_outputs, out_dir, entry, outputs, predictor, record,
                    image.pixel_sizes,
                ),
            )
        yield from finish_write()
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
    for entry in entries:
        if entry.status == "pending":
            entry.status = "not done"
    record.status = "cancelled" if cancelled_run else "finished"
    record.finished = now_iso()
    record.save()
    yield RunFinished(record)


def _predict_frames(
    predictor: Predictor,
    mapping: AxisMapping,
    array: np.ndarray,
    index: int,
    cancelled: Callable[[], bool],
) -> Generator[Event, None, tuple[dict[str, tuple[np.ndarray, str]], dict[str, Any], float]]:
    """Predict every frame of one image; yield block progress; return the outputs."""
    spec = predictor.spec
    input_id = mapping.tensor.id
    per_output: dict[str, list[np.ndarray]] = {t.id: [] for t in spec.outputs}
    plan_info: dict[str, Any] = {}
    seconds = 0.0
    frame_total = mapping.frame_count
    for f, (_frame_index, frame) in enumerate(mapping.frames(array)):
        steps = predictor.iter_predict({input_id: np.asarray(frame)}, cancelled=cancelled)
        while True:
            try:
                done, total = next(steps)
            except StopIteration as stop:
                result = stop.value
                break
            yield BlockProgress(index, f * total + done, frame_total * total)
        seconds += result.seconds
        plan_info = plan_info or result.plan.describe()
        for t in spec.outputs:
            per_output[t.id].append(finalize_output_dtype(result.outputs[t.id], t))
    outputs = {t.id: assemble_output(mapping, t, per_output[t.id]) for t in spec.outputs}
    return outputs, {**plan_info, "frames": frame_total}, seconds


def exit_code(record: RunRecord) -> int:
    """0 when every input succeeded (or was already done), 1 otherwise."""
    return 0 if all(f.status in ("ok", "skipped") for f in record.files) else 1


def throughput(seconds: float, pixels: int) -> str:
    """A readable throughput figure in megapixels per second."""
    if seconds <= 0 or not math.isfinite(seconds):
        return "-"
    return f"{pixels / seconds / 1e6:.1f} MP/s"
