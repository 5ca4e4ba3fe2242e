"""Batch prediction over files and folders, as a generator of events.

:func:`run_prediction` is the one engine behind ``zoodesk predict``, ``zoodesk
demo`` and the desktop application's batch page.  It yields plain event objects and
checks a ``cancelled`` callable between blocks, so any front end can drive it.

Pipeline
    The next file is read (decoded, checked for NaN/Inf, hashed) in a reader
    thread while the current one is computed, and the previous one's outputs are
    compressed and written in a writer thread.  Images above the streaming policy's
    threshold (:class:`~zoodesk.inference.streaming.StreamingPolicy`: by default
    more than 256 megapixels or a quarter of the available memory) are processed
    block by block from disk (:func:`~zoodesk.inference.streaming.predict_streaming`)
    and written tile by tile (:class:`~zoodesk.images.TiledOmeTiffWriter`).

Files still being written
    A file modified less than ``settle_seconds`` ago (default 2 s) is watched for
    that long before reading: if its size or modification time changes meanwhile,
    it fails as "still being written".  A file that changes while it is read fails
    the same way, and a truncated file fails with the reader's message.  Run the
    batch again once the acquisition is complete: finished files are skipped.

Crash safety and resume
    Outputs are written under temporary names (``.NAME.XXXXXXXX.part``) and renamed
    when complete; the run record is rewritten atomically as inputs finish (at
    most once a second, and at the end; a run killed in between redoes the inputs
    finished since the last save).  A
    re-run into the same output folder skips inputs whose record entry is ``ok``,
    whose size and modification time are unchanged, and whose outputs still have
    their recorded sha256; everything else is redone (outputs that exist but whose
    entry was still pending when the run was killed are rewritten).  The record's
    *signature* (model description and weights checksums, weights format, axes,
    channels, series, tile size, padding) must match: a folder holding results of
    another model or other parameters is refused unless ``overwrite`` is set, so
    results of two set-ups never mix.  Leftover temporary files of our own outputs
    and record (nothing else) are deleted at the start.  A lock file
    (``.zoodesk-run.lock``, an OS lock released when the process dies, even by
    SIGKILL) keeps two runs from writing into one folder at the same time.

Errors
    A problem with one input (unreadable, NaN/Inf, too small, axes that do not fit,
    disk full or a read-only sub-folder while writing its outputs) fails that input
    with a one-line message and the run goes on.  An output folder that cannot be
    created or written at all stops the run before it starts (the record could not
    be kept either).  If the record cannot be saved during the run (disk full), a
    :class:`RunWarning` says so and the run goes on; :attr:`RunFinished.record_saved`
    tells whether the final record reached the disk.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zoodesk.batch.events import (
    BlockProgress,
    Event,
    FileFinished,
    FileStarted,
    RunFinished,
    RunStarted,
    RunWarning,
)
from zoodesk.batch.inputs import collect_inputs, expand_series, unique_keys
from zoodesk.batch.messages import describe_error
from zoodesk.batch.outfolder import LOCK_NAME, FolderLock, clean_leftovers, prepare_output_folder
from zoodesk.batch.record import (
    RECORD_NAME,
    SUMMARY_NAME,
    FileEntry,
    OutputEntry,
    RunRecord,
    now_iso,
)
from zoodesk.batch.request import (
    DEFAULT_SETTLE_SECONDS,
    PredictionRequest,
    check_same_setup,
    run_signature,
)
from zoodesk.batch.steps import (
    OUTPUT_SUFFIXES,
    LoadedInput,
    StreamedFile,
    acquisition_of,
    compute_input,
    output_kind,
    output_pixel_sizes,
    read_input,
    settle_outputs,
    write_and_measure,
)
from zoodesk.errors import CancelledError, ZooDeskError
from zoodesk.fileutils import sha256_file, sha256_input
from zoodesk.images.discovery import SkippedFolder
from zoodesk.inference.predict import Predictor
from zoodesk.inference.streaming import StreamingPolicy, finalize_output_dtype
from zoodesk.instances.settings import check_against
from zoodesk.models.package import ModelPackage
from zoodesk.models.spec import TensorSpec

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SETTLE_SECONDS",
    "LOCK_NAME",
    "OUTPUT_SUFFIXES",
    "BlockProgress",
    "Event",
    "Executor",
    "FileFinished",
    "FileStarted",
    "PredictionRequest",
    "RunFinished",
    "RunPlan",
    "RunStarted",
    "RunWarning",
    "StreamingPolicy",
    "acquisition_of",
    "collect_inputs",
    "execute_locally",
    "exit_code",
    "finalize_output_dtype",
    "output_kind",
    "output_pixel_sizes",
    "run_prediction",
    "run_signature",
    "unique_keys",
]

#: Least seconds between two saves of the run record during a run: rewriting it
#: after every file of a long run would cost time quadratic in the number of files.
#: A run killed in between redoes the files finished since the last save.
RECORD_SAVE_INTERVAL = 1.0


# ------------------------------------------------------------------------- run set-up


def _previous_outputs_valid(previous: FileEntry, out_dir: Path, st: os.stat_result) -> bool:
    if previous.status not in ("ok", "skipped") or not previous.outputs:
        return False
    if previous.input_size != st.st_size or previous.input_mtime_ns != st.st_mtime_ns:
        return False
    for o in previous.outputs:
        p = out_dir / o.path
        if not p.exists() or sha256_input(p) != o.sha256:
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


def _carried_over(
    old: RunRecord, entries: list[FileEntry], signature: dict[str, Any], out_dir: Path
) -> list[FileEntry]:
    """The earlier run's finished inputs that this run does not process, kept as done
    earlier (only when both runs have one set-up, even when this one redoes its own)."""
    check_same_setup(old, signature, out_dir)
    covered = {(e.input, e.series or 0) for e in entries}
    carried = []
    for earlier in old.files:
        if (
            earlier.status in ("ok", "skipped")
            and (earlier.input, earlier.series or 0) not in covered
        ):
            earlier.status = "skipped"
            carried.append(earlier)
    return carried


def _refuse_to_orphan(old: RunRecord, this_run: set[str], out_dir: Path) -> None:
    """Refuse a run that would drop finished inputs of the folder's run from its record.

    Their outputs would stay in the folder with no record naming them: the folder's
    record would then describe this run's inputs only.  Adding to that run keeps them;
    redoing every input (``--overwrite``) is the user's explicit choice to replace it.
    """
    left_out = old.inputs_left_out(this_run)
    if not left_out:
        return
    model = old.model.get("name") or old.model.get("id") or "another model"
    example = Path(left_out[0]).name + (
        f" and {len(left_out) - 1} more" if len(left_out) > 1 else ""
    )
    raise ZooDeskError(
        f"{out_dir}: holds the results of an earlier run ({model}, started {old.started}) "
        f"over {len(left_out)} input(s) this run does not process ({example}); write into "
        "another --output folder, or add --add to add this run's inputs to that run"
    )


def _load_previous(record_path: Path) -> tuple[RunRecord | None, str | None]:
    if not record_path.is_file():
        return None, None
    try:
        return RunRecord.load(record_path), None
    except ZooDeskError as exc:
        return None, f"{exc}; every input is processed again"


class RecordKeeper:
    """Saves the record, at most every :data:`RECORD_SAVE_INTERVAL` seconds unless
    forced, turning write failures (disk full) into warnings."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.saved = True
        self._reported = False
        self._last = -math.inf

    def save(self, *, force: bool = False) -> RunWarning | None:
        now = time.monotonic()
        if not force and now - self._last < RECORD_SAVE_INTERVAL:
            return None
        self._last = now
        try:
            self.record.save()
        except OSError as exc:
            self.saved = False
            if self._reported:
                return None
            self._reported = True
            return RunWarning(
                f"{self.record.path}: cannot save the run record ({exc.strerror or exc}); "
                "the run goes on, but a re-run cannot skip what this one finishes"
            )
        self.saved = True
        return None


# ------------------------------------------------------------------------------ runner


def run_prediction(
    request: PredictionRequest,
    *,
    cancelled: Callable[[], bool] | None = None,
    predictor: Predictor | None = None,
    execute: Executor | None = None,
) -> Iterator[Event]:
    """Run a model over every input file; yield events; the last one is RunFinished.

    ``execute`` processes the inputs once the run is set up and recorded: by default
    :func:`execute_locally`, in this process; :mod:`zoodesk.cluster` hands them to a
    Dask cluster's workers.  ``predictor`` is the model loaded here (by default on
    the requested device).

    Raises :class:`ZooDeskError` only for problems that stop the whole run (model
    cannot be loaded, output folder not writable or in use by another run, results
    of another set-up in the output folder, nothing to process); a problem with one
    input is recorded for that input and the run goes on.  See the module
    documentation for resume, crash safety and files still being written.
    """
    from zoodesk.models import resolve_model

    is_cancelled = cancelled or (lambda: False)
    package = (
        request.model
        if isinstance(request.model, ModelPackage)
        else resolve_model(str(request.model))
    )
    spec = package.spec
    required_inputs = [t for t in spec.inputs if not t.optional]
    if len(required_inputs) != 1:
        raise ZooDeskError(
            f"model {spec.name!r} needs {len(required_inputs)} input tensors; "
            "running it on image files needs exactly one"
        )
    if request.series is not None and request.series < 0:
        raise ZooDeskError(f"--series must be 0 or more, not {request.series}")
    if request.instances is not None:
        request = replace(request, instances=check_against(spec, request.instances))
    out_dir = Path(request.output_dir).expanduser().resolve()
    prepare_output_folder(out_dir)
    skipped: list[SkippedFolder] = []
    files, missing = collect_inputs(
        request.inputs,
        request.patterns,
        request.recursive,
        lists=request.lists,
        exclude=out_dir,
        skipped=skipped,
    )
    if not files and not missing:
        names = ", ".join(str(p) for p in [*request.inputs, *request.lists])
        inside = [
            str(p) for p in request.inputs if Path(p).expanduser().resolve().is_relative_to(out_dir)
        ]
        if inside:
            # The output folder's contents are never inputs (they are the results).
            raise ZooDeskError(
                f"{', '.join(inside)}: inside the output folder {out_dir}, whose files are "
                "never read as inputs; choose an output folder outside the inputs"
            )
        if skipped:
            # Say why nothing was found where that is known.
            reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
            more = f" (and {len(skipped) - 3} more folders)" if len(skipped) > 3 else ""
            raise ZooDeskError(f"no readable images found in {names} ({reasons}{more})")
        raise ZooDeskError(f"no readable images found in {names}")

    predictor = predictor or Predictor(
        package,
        device=request.device,
        threads=request.threads,
        weights_format=request.weights_format,
        tile=request.tile,
        pad_mode=request.pad_mode,
    )
    lock = FolderLock(out_dir)
    try:
        yield from _run_locked(
            request,
            package,
            predictor,
            out_dir,
            files,
            missing,
            [s.message for s in skipped],
            required_inputs[0],
            is_cancelled,
            execute or execute_locally,
        )
    finally:
        lock.release()


def _run_locked(
    request: PredictionRequest,
    package: ModelPackage,
    predictor: Predictor,
    out_dir: Path,
    files: list[tuple[Path, Path | None]],
    missing: list[Path],
    skipped_folders: list[str],
    input_tensor: TensorSpec,
    is_cancelled: Callable[[], bool],
    execute: Executor,
) -> Iterator[Event]:
    spec = package.spec
    record_path = out_dir / RECORD_NAME
    signature = run_signature(package, predictor, request)
    old, load_problem = _load_previous(record_path)
    warnings = list(predictor.warnings)
    if load_problem:
        warnings.append(load_problem)
    warnings.extend(skipped_folders)
    previous: dict[tuple[str, int], FileEntry] = {}
    history: list[dict[str, Any]] = []
    if old is not None:
        if not request.overwrite:
            check_same_setup(old, signature, out_dir)
            previous = {(f.input, f.series or 0): f for f in old.files}
        history = [
            *old.history,
            {
                "run_id": old.run_id,
                "started": old.started,
                "finished": old.finished,
                "status": old.status,
                "summary": old.summary(),
            },
        ]
    this_run = {str(path) for path, _root in files}
    if old is not None and not request.add_to_earlier and not request.overwrite:
        _refuse_to_orphan(old, this_run, out_dir)
    base_keys = unique_keys(
        files,
        preferred={Path(f.input): f.key for f in previous.values() if f.key and f.scene is None},
        reserved=[f.key for f in (old.files if old else []) if f.key and f.input not in this_run],
    )
    samples = expand_series(
        files, base_keys, series=request.series, scenes=request.scenes, warnings=warnings
    )
    suffix = OUTPUT_SUFFIXES[request.output_format]
    planned = {f"{sample.key}_{t.id}{suffix}" for sample in samples for t in spec.outputs}
    planned |= {o.path for f in (old.files if old else []) for o in f.outputs}
    planned |= {
        f"{f.key}_{t.id}{suffix}" for f in (old.files if old else []) if f.key for t in spec.outputs
    }
    if request.instances is not None:
        # Imported here: a run without objects never loads the objects step.
        from zoodesk.batch.objects import instance_names

        keys = [s.key for s in samples] + [f.key for f in (old.files if old else []) if f.key]
        planned |= {name for k in keys for name in instance_names(k, request.output_format)}
        planned.add(SUMMARY_NAME)
    cleaned = clean_leftovers(out_dir, planned | {RECORD_NAME})

    record = RunRecord(path=record_path, history=history)
    record.model = _model_identity(package, predictor)
    record.signature = signature
    record.device = {
        "requested": request.device,
        "used": predictor.session.device.name,
        "provider": predictor.session.device.provider,
        "description": predictor.session.device.description,
        "warnings": list(predictor.warnings),
        "setup": predictor.session.describe(),
    }
    record.parameters = request.parameters()
    record.warnings = list(warnings)
    keeper = RecordKeeper(record)
    for path in missing:
        record.files.append(
            FileEntry(input=str(path), status="failed", error=f"{path}: no such file or folder")
        )
    entries: list[FileEntry] = []
    to_do: list[int] = []
    to_do_bytes = 0
    for sample in samples:
        path, key = sample.path, sample.key
        entry = FileEntry(input=str(path), key=key, series=sample.series, scene=sample.scene)
        prev = previous.get((str(path), sample.series))
        if prev is not None and not request.overwrite and prev.key == key:
            try:
                if _previous_outputs_valid(prev, out_dir, path.stat()):
                    entry = prev
                    entry.status = "skipped"
            except OSError:
                pass
        entries.append(entry)
        if entry.status != "skipped":
            to_do.append(len(entries) - 1)
            with contextlib.suppress(OSError):
                to_do_bytes += path.stat().st_size
    if old is not None and request.add_to_earlier:
        entries.extend(_carried_over(old, entries, signature, out_dir))
    record.files.extend(entries)
    try:
        record.save()
    except OSError as exc:
        # Not even the first record can be written: nothing of this run would be
        # recoverable, so stop now with the reason.
        raise ZooDeskError(
            f"{record_path}: cannot write the run record ({exc.strerror or exc})"
        ) from exc
    yield RunStarted(
        run_id=record.run_id,
        total=len(record.files),
        to_do=len(to_do),
        device=predictor.session.device.name,
        device_description=predictor.session.device.description,
        weights_format=predictor.weights.format,
        record_path=record_path,
        warnings=tuple(warnings),
        skipped=len(entries) - len(to_do),
        to_do_bytes=to_do_bytes,
        cleaned=tuple(cleaned),
        where=str(getattr(execute, "description", "")),
    )
    offset = len(missing)
    for k in range(len(missing)):
        yield FileFinished(k, Path(record.files[k].input), record.files[k])
    for i, entry in enumerate(entries):
        if entry.status == "skipped":
            yield FileFinished(offset + i, Path(entry.input), entry)

    cancelled_run = yield from execute(
        RunPlan(
            request=request,
            predictor=predictor,
            out_dir=out_dir,
            record=record,
            keeper=keeper,
            entries=entries,
            to_do=to_do,
            offset=offset,
            input_tensor=input_tensor,
            planned=frozenset(planned | {RECORD_NAME}),
        ),
        is_cancelled,
    )
    for entry in entries:
        if entry.status == "pending":
            entry.status = "not done"
    record.status = "cancelled" if cancelled_run else "finished"
    record.finished = now_iso()
    if request.instances is not None:
        from zoodesk.batch.objects import write_summary

        try:
            write_summary(record)
        except OSError as exc:
            yield RunWarning(f"{out_dir / SUMMARY_NAME}: not written ({exc.strerror or exc})")
    problem = keeper.save(force=True)
    if problem is not None:
        yield problem
    yield RunFinished(record, record_saved=keeper.saved)


@dataclass
class RunPlan:
    """A run set up and recorded, for an executor to process ``to_do``.

    ``entries[i]`` is reported as index ``offset + i`` in the events; the executor
    fills in the entries it processes (status, outputs, timings) and saves the
    record through ``keeper``.
    """

    request: PredictionRequest
    predictor: Predictor
    out_dir: Path
    record: RunRecord
    keeper: RecordKeeper
    entries: list[FileEntry]
    to_do: list[int]
    offset: int
    input_tensor: TensorSpec
    #: Every output (and record) name this run may write, relative to ``out_dir``:
    #: the temporary files of these are the run's own leftovers.
    planned: frozenset[str] = frozenset()


#: Processes a plan's inputs, yields their events, returns whether it was cancelled.
#: An executor may have a ``description`` (where it runs), shown when the run starts.
Executor = Callable[[RunPlan, Callable[[], bool]], Generator[Event, None, bool]]


def execute_locally(
    plan: RunPlan, is_cancelled: Callable[[], bool]
) -> Generator[Event, None, bool]:
    """This process's pipeline: the next input is read while one is computed and the
    previous one written, in threads."""
    request, predictor, out_dir, record = plan.request, plan.predictor, plan.out_dir, plan.record
    entries, to_do, offset = plan.entries, plan.to_do, plan.offset
    reader = ThreadPoolExecutor(1, thread_name_prefix="zoodesk-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="zoodesk-write")
    pending_write: tuple[int, FileEntry, Future[tuple[list[OutputEntry], float]]] | None = None
    cancelled_run = False

    def saved(force: bool = False) -> Iterator[Event]:
        problem = plan.keeper.save(force=force)
        if problem is not None:
            yield problem

    def finish_write() -> Iterator[Event]:
        nonlocal pending_write, cancelled_run
        if pending_write is None:
            return
        index, wentry, future = pending_write
        pending_write = None
        if settle_outputs(wentry, future.result, out_dir, request.output_format, record.run_id):
            cancelled_run = True
        yield from saved()
        yield FileFinished(offset + index, Path(wentry.input), wentry)

    def submit_read(n: int) -> Future[LoadedInput] | None:
        if n >= len(to_do):
            return None
        entry = entries[to_do[n]]
        return reader.submit(
            read_input, Path(entry.input), request.axes, entry.series or 0, request.settle_seconds
        )

    try:
        next_read = submit_read(0)
        for n, index in enumerate(to_do):
            entry = entries[index]
            path = Path(entry.input)
            if is_cancelled():
                cancelled_run = True
                break
            yield FileStarted(offset + index, path, entry.scene)
            entry.started = now_iso()
            assert next_read is not None
            current = next_read
            next_read = submit_read(n + 1)
            streamed = StreamedFile()
            try:
                job, objects = yield from compute_input(
                    request, predictor, plan.input_tensor, current.result(), entry, record,
                    out_dir, streamed, offset + index, is_cancelled,
                )  # fmt: skip
            except GeneratorExit:
                # The consumer stopped iterating: drop this input's partial outputs.
                streamed.abort()
                raise
            except (CancelledError, KeyboardInterrupt):
                streamed.abort()
                cancelled_run = True
                entry.status = "not done"
                entry.error = "cancelled"
                entry.finished = now_iso()
                yield from finish_write()
                yield from saved(force=True)
                yield FileFinished(offset + index, path, entry)
                break
            except Exception as exc:  # one bad file never stops the run
                streamed.abort()
                log.debug("processing %s failed", path, exc_info=True)
                entry.status = "failed"
                entry.error = describe_error(path, exc, out_dir)
                entry.finished = now_iso()
                yield from finish_write()
                yield from saved()
                yield FileFinished(offset + index, path, entry)
                continue
            yield from finish_write()
            pending_write = (index, entry, writer.submit(write_and_measure, job, objects))
        yield from finish_write()
    except KeyboardInterrupt:
        # A second Ctrl-C: stop at once, but leave a consistent record behind.
        cancelled_run = True
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
    if pending_write is not None:
        yield from finish_write()
    return cancelled_run


def exit_code(record: RunRecord) -> int:
    """0 when every input succeeded (or was already done), 1 otherwise."""
    return 0 if all(f.status in ("ok", "skipped") for f in record.files) else 1
