"""Console front end of the batch runner: progress bar, summary table, JSON output."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from zoodesk.batch.record import RunRecord
from zoodesk.batch.runner import (
    BlockProgress,
    Event,
    FileFinished,
    FileStarted,
    PredictionRequest,
    RunFinished,
    RunStarted,
    exit_code,
    run_prediction,
)
from zoodesk.errors import ZooDeskError


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


def drive(events: Iterator[Event], console: Any, quiet: bool) -> RunRecord:
    """Consume the runner's events, drawing a progress bar; return the final record."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    show = not quiet
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}"),
        console=console.err,
        disable=not show,
        transient=True,
    )
    record: RunRecord | None = None
    task = None
    started = time.perf_counter()
    processed = 0
    with progress:
        for event in events:
            if isinstance(event, RunStarted):
                for w in event.warnings:
                    console.warn(w)
                console.info(
                    f"running on {event.device_description} ({event.device}), "
                    f"{event.weights_format} weights; {event.to_do} of {event.total} file(s) to do"
                )
                task = progress.add_task("files", total=event.total, rate="", current="")
            elif isinstance(event, FileStarted) and task is not None:
                progress.update(task, current=event.path.name)
            elif isinstance(event, BlockProgress):
                continue
            elif isinstance(event, FileFinished) and task is not None:
                entry = event.entry
                if entry.status in ("ok", "failed"):
                    processed += 1
                elapsed = time.perf_counter() - started
                rate = f"{processed / elapsed:.2f} files/s" if processed and elapsed > 0 else ""
                progress.update(task, advance=1, rate=rate)
                if entry.status == "failed":
                    progress.console.print(f"failed: {entry.error}", style="red", markup=False)
            elif isinstance(event, RunFinished):
                record = event.record
    assert record is not None
    return record


def summary_table(record: RunRecord) -> Any:
    """A rich table: one row per input with its status and outputs or error."""
    from rich.table import Table

    table = Table(title=f"run {record.run_id[:8]}: {record.status}", show_lines=False)
    table.add_column("input")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("outputs / error")
    styles = {"ok": "green", "skipped": "cyan", "failed": "red", "not done": "yellow"}
    for f in record.files:
        detail = ", ".join(o.path for o in f.outputs) if f.status in ("ok", "skipped") else (f.error or "")
        table.add_row(
            Path(f.input).name,
            f"[{styles.get(f.status, 'white')}]{f.status}[/]",
            f"{f.seconds:.2f}" if f.seconds is not None else "",
            detail,
        )
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
            }
            for f in record.files
        ],
    }


def execute(request: PredictionRequest, console: Any, *, json_mode: bool, quiet: bool) -> int:
    """Run a prediction request with console progress; return the exit code."""
    with _CancelOnInterrupt(console) as cancel:
        record = drive(run_prediction(request, cancelled=cancel), console, quiet or json_mode)
    if json_mode:
        console.document(record_document(record))
    elif not quiet:
        console.out.print(summary_table(record))
        counts = record.summary()
        console.info(
            f"{counts.get('ok', 0)} ok, {counts.get('skipped', 0)} already done, "
            f"{counts.get('failed', 0)} failed, {counts.get('not done', 0)} not done; "
            f"record: {record.path}"
        )
    return exit_code(record)


def run_prediction_cli(args: argparse.Namespace, console: Any) -> int:
    """``zoodesk predict``."""
    from zoodesk.models import resolve_model
    from zoodesk.settings import load_settings

    settings = load_settings()
    package = resolve_model(args.model)
    spatial = [a.id for a in package.spec.inputs[0].axes if a.is_spatial]
    request = PredictionRequest(
        model=package,
        inputs=args.input,
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
        extra={"model_argument": args.model},
    )
    return execute(request, console, json_mode=args.json, quiet=args.quiet)


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
