"""Console front end of the batch runner: progress bar, summary table, JSON output."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType
from typing import Any

from zoodesk.batch.record import SUMMARY_NAME, RunRecord
from zoodesk.batch.runner import (
    DEFAULT_SETTLE_SECONDS,
    BlockProgress,
    Event,
    FileFinished,
    FileStarted,
    PredictionRequest,
    RunFinished,
    RunStarted,
    RunWarning,
    exit_code,
    run_prediction,
)
from zoodesk.errors import ZooDeskError
from zoodesk.inference.streaming import DEFAULT_MAX_MEGAPIXELS, StreamingPolicy
from zoodesk.units import duration


def one_line(text: str) -> str:
    """``text`` on one console line.

    Control characters (a newline in a file name, say) are shown escaped, as Python
    writes them, instead of breaking the line.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def input_name(path: Path, scene: str | None = None) -> str:
    """How an input is named to the user: ``file.czi``, or ``file.czi[scene]`` for one
    series of a multi-series file."""
    return f"{path.name}[{scene}]" if scene is not None else path.name


class _CancelOnInterrupt:
    """First Ctrl-C: stop after the current block.  Second: stop at once."""

    def __init__(self, console: Any) -> None:
        self.requested = False
        self._console = console
        self._previous: Any = None

    def __enter__(self) -> _CancelOnInterrupt:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: nothing to install
            self._previous = None
        return self

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._console.warn("stopping after the current block (Ctrl-C again to stop at once)")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def __call__(self) -> bool:
        return self.requested


def _parse_tile(values: list[int] | None, request_axes: list[str]) -> dict[str, int] | None:
    if not values:
        return None
    if len(values) == 1:
        return dict.fromkeys(request_axes, values[0])
    if len(values) != len(request_axes):
        raise ZooDeskError(
            f"--tile takes 1 or {len(request_axes)} numbers (axes {' '.join(request_axes)})"
        )
    return dict(zip(request_axes, values, strict=True))


class _ProgressView:
    """Shows the runner's events: a live bar on a terminal, one line per file otherwise.

    The bar shows files done of the total, the current file and its blocks, the
    throughput (megapixels and files per second) and an ETA from the bytes of input
    still to process at the rate seen so far.  Without a terminal (output redirected
    to a log file, a scheduler, a test) each finished file gets one line instead.
    """

    def __init__(self, console: Any, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.live = not quiet and console.err_is_terminal()
        self.progress: Any = _live_progress(console.err) if self.live else _NoProgress()
        self.files_task: Any = None
        self.blocks_task: Any = None
        self.total = 0
        self.finished = 0
        self.processed = 0
        self.bytes_done = 0
        self.bytes_to_do = 0
        self.pixels_done = 0
        self.started = time.perf_counter()
        self.current = ""
        self.result: RunFinished | None = None

    # ---------------------------------------------------------------- measures

    def _rate(self) -> str:
        elapsed = time.perf_counter() - self.started
        if not self.processed or elapsed <= 0:
            return ""
        return (
            f"{self.pixels_done / elapsed / 1e6:.1f} MP/s, {self.processed / elapsed:.2f} files/s"
        )

    def _eta(self) -> str:
        elapsed = time.perf_counter() - self.started
        remaining = max(0, self.bytes_to_do - self.bytes_done)
        if not self.bytes_done or elapsed <= 0:
            return "ETA -"
        seconds = remaining / (self.bytes_done / elapsed)
        return f"ETA {duration(seconds)}"

    def _detail(self) -> str:
        parts = [p for p in (self._rate(), self._eta(), self.current) if p]
        return "  ".join(parts)

    # ------------------------------------------------------------------ events

    def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._started(event)
        elif isinstance(event, FileStarted):
            self.current = input_name(event.path, event.scene)
            if self.live:
                self.progress.update(self.files_task, detail=self._detail())
                self.progress.reset(self.blocks_task, total=None, visible=False)
        elif isinstance(event, BlockProgress):
            if self.live:
                label = "  statistics" if event.phase == "statistics" else "  blocks"
                self.progress.update(
                    self.blocks_task,
                    description=label,
                    completed=event.done,
                    total=event.total,
                    visible=event.total > 1,
                    detail="",
                )
        elif isinstance(event, FileFinished):
            self._finished(event)
        elif isinstance(event, RunWarning):
            self._print_warning(event.message)
        elif isinstance(event, RunFinished):
            self.result = event

    def _started(self, event: RunStarted) -> None:
        self.total = event.total
        self.bytes_to_do = event.to_do_bytes
        self.started = time.perf_counter()
        for w in event.warnings:
            self.console.warn(w)
        if event.cleaned and not self.quiet:
            self.console.warn(
                f"deleted {len(event.cleaned)} unfinished temporary file(s) left by an "
                "interrupted run"
            )
        if not self.quiet:
            done = f", {event.skipped} already done" if event.skipped else ""
            where = event.where or f"{event.device_description} ({event.device})"
            self.console.info(
                f"running on {where}, {event.weights_format} weights; {event.to_do} of "
                f"{event.total} file(s) to do{done}"
            )
        self.files_task = self.progress.add_task("files", total=event.total, detail="")
        self.blocks_task = self.progress.add_task("  blocks", total=None, visible=False, detail="")

    def _finished(self, event: FileFinished) -> None:
        entry = event.entry
        self.finished += 1
        if entry.status in ("ok", "failed") and entry.started is not None:
            # Inputs that were never started (missing files) are not work done.
            self.processed += 1
            self.bytes_done += entry.input_size or 0
        if entry.status == "ok" and entry.shape:
            self.pixels_done += math.prod(entry.shape)
        error = one_line(entry.error or "")
        if self.live:
            self.progress.update(self.files_task, advance=1, detail=self._detail())
            if entry.status == "failed":
                self.progress.console.print(f"failed: {error}", style="red", markup=False)
            return
        if self.quiet or entry.status == "skipped":
            return
        width = len(str(self.total))
        name = one_line(input_name(event.path, entry.scene))
        head = f"[{self.finished:>{width}}/{self.total}] {entry.status:8s} {name}"
        if entry.status == "failed":
            self.console.line(f"{head}: {error}", style="red")
        elif entry.status == "ok":
            seconds = f"  {entry.seconds:.2f} s" if entry.seconds is not None else ""
            streamed = "  (block by block from disk)" if entry.streamed else ""
            self.console.line(f"{head}{seconds}{streamed}")
        else:
            self.console.line(head)

    def _print_warning(self, message: str) -> None:
        message = one_line(message)
        if self.live:
            self.progress.console.print(f"warning: {message}", style="yellow", markup=False)
        else:
            self.console.warn(message)


def _live_progress(err_console: Any) -> Any:
    """rich's progress bars on the terminal's error stream."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        console=err_console,
        transient=True,
    )


class _NoProgress:
    """What the view calls on its progress bars, for runs without a terminal (logs,
    schedulers, scripts): nothing is drawn, and rich's progress module, a noticeable
    part of a short run's start-up, is never imported."""

    def __init__(self) -> None:
        self._tasks = 0

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def add_task(self, *_args: Any, **_kwargs: Any) -> int:
        self._tasks += 1
        return self._tasks

    def update(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def reset(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def drive_events(events: Iterator[Event], console: Any, quiet: bool) -> RunFinished:
    """Consume the runner's events, showing progress; return the final event."""
    view = _ProgressView(console, quiet)
    with view.progress:
        for event in events:
            view.handle(event)
    assert view.result is not None
    return view.result


def drive(events: Iterator[Event], console: Any, quiet: bool) -> RunRecord:
    """Consume the runner's events, showing progress; return the final record."""
    return drive_events(events, console, quiet).record


#: Runs with more inputs than this list only the inputs that are not ok in the table.
SUMMARY_ROWS = 40


def summary_table(record: RunRecord) -> Any:
    """A rich table: one row per input with its status and outputs or error.

    For long runs only the inputs that failed or were not done are listed; the
    caption gives the counts of every status.
    """
    from rich.markup import escape
    from rich.table import Table

    counts = record.summary()
    caption = ", ".join(f"{counts[k]} {k}" for k in sorted(counts) if k != "total")
    rows = record.files
    title = f"run {record.run_id[:8]}: {record.status}"
    if len(rows) > SUMMARY_ROWS:
        rows = [f for f in rows if f.status not in ("ok", "skipped")]
        title += f" ({len(record.files)} inputs; those not ok below)"
    table = Table(title=title, caption=caption, show_lines=False)
    table.add_column("input")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    with_objects = any(f.instances for f in record.files)
    if with_objects:
        table.add_column("objects", justify="right")
    table.add_column("outputs / error")
    styles = {"ok": "green", "skipped": "cyan", "failed": "red", "not done": "yellow"}
    for f in rows:
        detail = (
            ", ".join(o.path for o in f.outputs)
            if f.status in ("ok", "skipped")
            else (f.error or "")
        )
        cells = [
            escape(input_name(Path(f.input), f.scene)),
            f"[{styles.get(f.status, 'white')}]{f.status}[/]",
            f"{f.seconds:.2f}" if f.seconds is not None else "",
        ]
        if with_objects:
            cells.append(str((f.instances or {}).get("count", "")))
        table.add_row(*cells, escape(detail))
    return table


def record_document(record: RunRecord) -> dict[str, Any]:
    """The ``--json`` document of a prediction run."""
    out_dir = record.path.parent
    return {
        "run_id": record.run_id,
        "status": record.status,
        "device": record.device.get("used"),
        "device_provider": record.device.get("provider"),
        "device_warnings": record.device.get("warnings", []),
        "warnings": list(record.warnings),
        "weights_format": record.model.get("weights", {}).get("format"),
        "model": {k: record.model.get(k) for k in ("id", "name", "version", "source")},
        "record": str(record.path),
        "summary": record.summary(),
        "files": [
            {
                "input": f.input,
                "status": f.status,
                "error": f.error,
                "outputs": [str(out_dir / o.path) for o in f.outputs],
                **(
                    {"objects": f.instances.get("count"), "objects_error": f.instances.get("error")}
                    if f.instances
                    else {}
                ),
            }
            for f in record.files
        ],
        **(
            {"summary_csv": str(out_dir / SUMMARY_NAME)}
            if (out_dir / SUMMARY_NAME).is_file()
            else {}
        ),
    }


#: Runs a request elsewhere: ``run(request, cancelled)`` is a context giving the events.
RunElsewhere = Callable[
    [PredictionRequest, Callable[[], bool]], AbstractContextManager[Iterator[Event]]
]

#: Exit code of a run stopped with Ctrl-C (the shell's convention for SIGINT).
EXIT_CANCELLED = 130


def execute(
    request: PredictionRequest,
    console: Any,
    *,
    json_mode: bool,
    quiet: bool,
    run: RunElsewhere | None = None,
) -> int:
    """Run a prediction request with console progress; return the exit code.

    ``run`` replaces :func:`run_prediction` (e.g. by a run on a cluster,
    :mod:`zoodesk.cluster`): called with the request and the cancel check, it gives a
    context in which the run's events are iterated.

    0 when every input is done (now or by an earlier run), 1 when any failed or the
    record could not be saved, 130 when the run was cancelled with Ctrl-C.
    """
    with _CancelOnInterrupt(console) as cancel:
        if run is None:
            finished = drive_events(
                run_prediction(request, cancelled=cancel), console, quiet or json_mode
            )
        else:
            with run(request, cancel) as events:
                finished = drive_events(events, console, quiet or json_mode)
    record = finished.record
    if json_mode:
        console.document(record_document(record))
    elif not quiet:
        console.show(summary_table(record))
        counts = record.summary()
        console.info(
            f"{counts.get('ok', 0)} ok, {counts.get('skipped', 0)} already done, "
            f"{counts.get('failed', 0)} failed, {counts.get('not done', 0)} not done; "
            f"record: {record.path}"
        )
        line = _objects_line(record)
        if line:
            console.info(line)
    if not finished.record_saved:
        console.error(f"{record.path}: the run record could not be saved")
        return 1
    if record.status == "cancelled":
        return EXIT_CANCELLED
    return exit_code(record)


def run_prediction_cli(
    args: argparse.Namespace, console: Any, run: RunElsewhere | None = None
) -> int:
    """``zoodesk predict`` (``run``: as in :func:`execute`)."""
    from zoodesk.models import resolve_model
    from zoodesk.settings import load_settings

    inputs = list(args.input or [])
    lists = list(getattr(args, "list", None) or [])
    if not inputs and not lists:
        raise ZooDeskError("name the images to process with --input PATH... and/or --list FILE")
    settings = load_settings()
    package = resolve_model(args.model)
    spatial = [a.id for a in package.spec.inputs[0].axes if a.is_spatial]
    try:
        streaming = StreamingPolicy(
            mode=getattr(args, "stream", None) or "auto",
            max_megapixels=getattr(args, "stream_above", None) or DEFAULT_MAX_MEGAPIXELS,
        )
    except ValueError as exc:
        raise ZooDeskError(str(exc)) from None
    settle = getattr(args, "settle_seconds", None)
    request = PredictionRequest(
        model=package,
        inputs=inputs,
        output_dir=args.output,
        device=args.device or settings.device,
        weights_format=args.weights,
        patterns=args.glob,
        recursive=args.recursive,
        axes=args.axes,
        channels=args.channel,
        tile=_parse_tile(args.tile, spatial),
        threads=args.threads or settings.threads or None,
        overwrite=args.overwrite,
        add_to_earlier=getattr(args, "add_to_earlier", False),
        extra={"model_argument": args.model},
        lists=lists,
        series=getattr(args, "series", None),
        scenes=tuple(getattr(args, "scene", None) or ()),
        streaming=streaming,
        settle_seconds=DEFAULT_SETTLE_SECONDS if settle is None else settle,
        compression=args.compression,
        output_format=getattr(args, "output_format", "ome-tiff"),
        instances=_instance_settings(package.spec, args, console),
    )
    return execute(request, console, json_mode=args.json, quiet=args.quiet, run=run)


def instance_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The instance settings given on the command line (None where not given)."""
    return {
        "threshold": getattr(args, "threshold", None),
        "min_size": getattr(args, "min_size", None),
        "max_size": getattr(args, "max_size", None),
        "fill_holes": getattr(args, "fill_holes", None),
        "min_distance": getattr(args, "min_distance", None),
        "source": getattr(args, "instance_output", None),
        "channel": getattr(args, "instance_channel", None),
        "boundary_channel": getattr(args, "boundary_channel", None),
    }


def _instance_settings(spec: Any, args: argparse.Namespace, console: Any) -> Any:
    from zoodesk.instances import resolve

    overrides = {k: v for k, v in instance_overrides(args).items() if v is not None}
    choice = getattr(args, "instances", None)
    if choice is None:
        if overrides:
            names = ", ".join("--" + k.replace("_", "-") for k in overrides)
            raise ZooDeskError(f"{names}: objects are made only with --instances")
        return None
    settings, reason = resolve(spec, choice, overrides)
    if not getattr(args, "quiet", False) and not getattr(args, "json", False):
        console.info(f"objects: {settings.describe()} ({reason})")
    return settings


def _objects_line(record: RunRecord) -> str | None:
    found = [f.instances for f in record.files if f.instances and "count" in f.instances]
    if not found and not any(f.instances for f in record.files):
        return None
    total = sum(int(i["count"]) for i in found)
    summary = record.path.parent / SUMMARY_NAME
    where = f"; summary: {summary}" if summary.is_file() else ""
    return f"objects: {total} in {len(found)} image(s){where}"


def run_measure_cli(args: argparse.Namespace, console: Any) -> int:
    """``zoodesk measure RUN``: the objects of an earlier run, remade from its files."""
    from zoodesk.batch.objects import ImageMeasured, MeasureFinished, MeasureStarted, measure_run

    quiet = args.quiet or args.json
    finished: MeasureFinished | None = None
    with _CancelOnInterrupt(console) as cancel:
        for event in measure_run(
            args.run,
            args.instances,
            instance_overrides(args),
            cancelled=cancel,
            block=getattr(args, "blocks", False),
        ):
            if isinstance(event, MeasureStarted) and not quiet:
                console.info(
                    f"objects: {event.settings.describe()} ({event.reason}); {event.total} image(s)"
                )
            elif isinstance(event, ImageMeasured):
                name = input_name(Path(event.entry.input), event.entry.scene)
                if event.error:
                    console.error(event.error)
                elif not quiet and event.entry.instances:
                    found = event.entry.instances
                    console.info(f"{name}: {found['count']} objects")
                    for warning in found.get("warnings") or []:
                        console.warn(warning)
            elif isinstance(event, MeasureFinished):
                finished = event
    assert finished is not None
    record = finished.record
    if args.json:
        console.document(
            {
                **record_document(record),
                "instances": record.parameters.get("instances"),
                "summary_csv": str(finished.summary) if finished.summary else None,
            }
        )
    elif not args.quiet:
        line = _objects_line(record)
        if line:
            console.info(line)
    if finished.cancelled:
        return EXIT_CANCELLED
    return 1 if finished.failed else 0


def run_demo_cli(args: argparse.Namespace, console: Any) -> int:
    """``zoodesk demo``: the built-in model on the bundled sample images."""
    from zoodesk.demo import demo_images_dir, demo_model_path
    from zoodesk.models.package import load_model_package

    package = load_model_package(demo_model_path())
    output = args.output or Path.cwd() / "zoodesk-demo-output"
    console.info(f"demo: {package.spec.name} on the sample images in {demo_images_dir()}")
    request = PredictionRequest(
        model=package,
        inputs=[demo_images_dir()],
        output_dir=output,
        device=args.device or "auto",
        extra={"model_argument": "demo"},
    )
    code = execute(request, console, json_mode=args.json, quiet=args.quiet)
    if not args.json and not args.quiet:
        console.info(f"outputs are in {Path(output).resolve()}")
    sys.stdout.flush()
    return code
