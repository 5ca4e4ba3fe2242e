"""The ``zoodesk`` command line: the same services as the desktop application.

Every command prints one clear line and exits non-zero on a user error, never a
traceback (``--debug`` shows it).  ``--json`` makes a command print exactly one JSON
document on stdout; human-readable progress then goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoodesk import __version__
from zoodesk.conversion.launch import WORKER_COMMAND
from zoodesk.errors import ZooDeskError, not_enough_memory
from zoodesk.logs import command_logging
from zoodesk.paths import LOGS_FOLDER, zoodesk_home
from zoodesk.units import human_size

log = logging.getLogger("zoodesk")

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: ``zoodesk gui`` where the desktop window cannot open (no display, missing libraries).
EXIT_NO_DESKTOP = 3


class _Console:
    """Human output (stderr when --json is on, so stdout carries only the document).

    rich draws on terminals only: lines to a file, a pipe or a scheduler's log are
    written as they are, and rich (a noticeable part of a short command's start-up)
    is imported only when a command draws a table or a bar, or a stream is a terminal.
    """

    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self._out: Any = None
        self._err: Any = None

    @property
    def out(self) -> Any:
        """rich's console on the stream of human output."""
        if self._out is None:
            self._out = _rich_console(stderr=self.json_mode)
        return self._out

    @property
    def err(self) -> Any:
        """rich's console on the error stream."""
        if self._err is None:
            self._err = _rich_console(stderr=True)
        return self._err

    def err_is_terminal(self) -> bool:
        """Whether the error stream is drawn on (a terminal, or colour forced)."""
        return _draws(sys.stderr)

    def info(self, message: str) -> None:
        if not self.quiet:
            self._print(message, None, to_err=self.json_mode)

    def line(self, text: str, style: str | None = None) -> None:
        """One line on the error stream (``style`` only where it is drawn)."""
        self._print(text, style, to_err=True)

    def warn(self, message: str) -> None:
        self.line(f"warning: {message}", style="yellow")

    def error(self, message: str) -> None:
        self.line(f"error: {message}", style="bold red")

    def document(self, data: Any) -> None:
        try:
            sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            _reader_gone(sys.stdout)

    def show(self, renderable: Any) -> None:
        """A rich table (or other renderable) on the stream of human output."""
        try:
            self.out.print(renderable)
        except BrokenPipeError:
            _reader_gone(sys.stderr if self.json_mode else sys.stdout)

    def _print(self, text: str, style: str | None, *, to_err: bool) -> None:
        stream = sys.stderr if to_err else sys.stdout
        try:
            if _draws(stream):
                (self.err if to_err else self.out).print(text, style=style, markup=False)
                return
            try:
                stream.write(text + "\n")
            except UnicodeEncodeError:  # a name the stream's encoding cannot carry
                encoding = getattr(stream, "encoding", None) or "ascii"
                stream.write(text.encode(encoding, "backslashreplace").decode(encoding) + "\n")
            stream.flush()
        except BrokenPipeError:
            _reader_gone(stream)


def _rich_console(*, stderr: bool) -> Any:
    """A rich console that prints text as given: no highlighting, no wrapping, and no
    emoji codes (``:smile:`` in a file name stays as it is)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)


def _reader_gone(stream: Any) -> None:
    """The reader of ``stream`` stopped (``zoodesk models list | head``): the command
    goes on, and what it still writes there, or left in the buffer, goes nowhere."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def _draws(stream: Any) -> bool:
    """Whether rich would draw on ``stream``: a terminal, or colour forced as rich
    reads it from the environment."""
    if os.environ.get("FORCE_COLOR") or os.environ.get("TTY_COMPATIBLE") == "1":
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _failure_document(arguments: Sequence[str], error: str, kind: str = "UsageError") -> None:
    """The one JSON document of a ``--json`` command that failed."""
    words = [a for a in arguments if not a.startswith("-")]
    command = " ".join(
        words[:2] if words[:1] in (["models"], ["catalogue"], ["bundle"]) else words[:1]
    )
    _Console(json_mode=True).document(
        {"ok": False, "error": error, "kind": kind, "command": command}
    )


def _help_handler(parser: argparse.ArgumentParser) -> Handler:
    """A handler for a command group given without its action: show its help."""

    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return EXIT_USAGE

    return show_help


def _console(args: argparse.Namespace) -> _Console:
    return _Console(json_mode=getattr(args, "json", False), quiet=getattr(args, "quiet", False))


# ------------------------------------------------------------------ inference commands


def _cmd_predict(args: argparse.Namespace) -> int:
    from zoodesk.batch.console import run_prediction_cli
    from zoodesk.cluster.address import cluster_choice
    from zoodesk.settings import load_settings

    cluster = cluster_choice(args.cluster, load_settings().cluster)
    if cluster is None:
        return run_prediction_cli(args, _console(args))
    from zoodesk.cluster import run_elsewhere

    return run_prediction_cli(args, _console(args), run=run_elsewhere(cluster))


def _cmd_models_test(args: argparse.Namespace) -> int:
    from zoodesk.inference.reproducibility import run_test_cli

    return run_test_cli(args, _console(args))


def _cmd_demo(args: argparse.Namespace) -> int:
    from zoodesk.batch.console import run_demo_cli

    return run_demo_cli(args, _console(args))


def _cmd_devices(args: argparse.Namespace) -> int:
    from zoodesk.inference.devices import available_devices

    console = _console(args)
    devices = available_devices()
    if args.json:
        console.document([d.as_dict() for d in devices])
    else:
        for d in devices:
            console.info(f"{d.name:10s} {d.provider:28s} {d.description}")
    return EXIT_OK


def _add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default=None,
        help="execution device (default: the setting, normally auto: GPU if available)",
    )


def _threshold(text: str) -> float | str:
    if text in ("otsu", "model"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number, 'otsu' or 'model'") from None


def _add_instance_options(p: argparse.ArgumentParser, *, measure: bool) -> None:
    from zoodesk.instances.settings import CHOICES

    g = p.add_argument_group("objects (instance segmentation and measurements)")
    g.add_argument(
        "--instances",
        choices=CHOICES,
        default=None,
        help=(
            "method (default: the run's own settings, else auto)"
            if measure
            else "make objects from an output after each image: a label image, "
            "<image>_objects.csv and the run's summary.csv; auto proposes a method from "
            "the model's outputs (default: none)"
        ),
    )
    g.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="foreground above this: a number (default 0.5), otsu, or model (the "
        "output's own binarize)",
    )
    g.add_argument("--min-size", type=int, default=None, metavar="PX", help="drop smaller objects")
    g.add_argument("--max-size", type=int, default=None, metavar="PX", help="drop larger objects")
    g.add_argument(
        "--fill-holes", action="store_const", const=True, default=None, help="fill holes"
    )
    g.add_argument(
        "--min-distance",
        type=int,
        default=None,
        metavar="PX",
        help="watershed: smallest distance between two seeds (default 5); raise it when "
        "objects are split too often",
    )
    g.add_argument("--instance-output", default=None, metavar="ID", help="the output to segment")
    g.add_argument(
        "--instance-channel",
        type=int,
        default=None,
        metavar="N",
        help="foreground channel of that output (default 0)",
    )
    g.add_argument(
        "--boundary-channel", type=int, default=None, metavar="N", help="boundary channel"
    )


def _cmd_measure(args: argparse.Namespace) -> int:
    from zoodesk.batch.console import run_measure_cli

    return run_measure_cli(args, _console(args))


def _register_inference_commands(
    sub: argparse._SubParsersAction, models_sub: argparse._SubParsersAction
) -> None:
    p = sub.add_parser("predict", help="run a model on images and write OME-TIFF outputs")
    p.add_argument(
        "--model", "-m", required=True, help="model folder, description, zip or cached id"
    )
    p.add_argument(
        "--input",
        "-i",
        nargs="+",
        default=[],
        type=Path,
        metavar="PATH",
        help="image files or folders (every readable image in a folder); several allowed",
    )
    p.add_argument(
        "--list",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="text file listing images or folders, one per line (repeatable)",
    )
    p.add_argument("--output", "-o", required=True, type=Path, metavar="DIR")
    _add_device_option(p)
    p.add_argument("--weights", default=None, help="weights format to use (default: onnx)")
    p.add_argument(
        "--glob",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only files matching this pattern in input folders (repeatable)",
    )
    p.add_argument(
        "--recursive",
        "-r",
        action="store_true",
        help="descend into sub-folders (links to folders are reported, not followed)",
    )
    p.add_argument("--axes", default=None, help="axes of the input images, e.g. CYX or TZYX")
    p.add_argument(
        "--channel",
        type=_channel,
        action="append",
        default=None,
        help="image channel(s) to feed the model: an index (0-based) or the channel's "
        "name in the file, e.g. DAPI (repeatable)",
    )
    p.add_argument(
        "--tile",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="block size per spatial axis (default: chosen automatically)",
    )
    p.add_argument(
        "--series",
        type=int,
        default=None,
        metavar="N",
        help="read series N of every file (default: each scene of a CZI, position of an "
        "ND2 or image of a LIF as an input of its own; the first series of other files)",
    )
    p.add_argument(
        "--scene",
        action="append",
        default=None,
        metavar="PATTERN",
        help="only the scenes (series) whose name matches this glob pattern, or whose "
        "index is this number (repeatable, case-insensitive)",
    )
    p.add_argument(
        "--stream",
        choices=("auto", "always", "never"),
        default="auto",
        help="process images block by block from disk: auto (default) for images above "
        "--stream-above megapixels or a quarter of the available memory",
    )
    p.add_argument(
        "--stream-above",
        type=float,
        default=None,
        metavar="MP",
        help="size in megapixels above which --stream auto streams (default: 256)",
    )
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=None,
        metavar="S",
        help="watch files modified less than S seconds ago for that long before reading, "
        "to skip files still being written (default: 2)",
    )
    p.add_argument(
        "--compression",
        choices=("zlib", "zstd", "none"),
        default="zlib",
        help="lossless compression of the outputs: zlib (deflate, readable everywhere; "
        "the default), zstd (faster to write, needs a recent reader) or none",
    )
    p.add_argument(
        "--format",
        dest="output_format",
        choices=("ome-tiff", "ome-zarr"),
        default="ome-tiff",
        help="output format: ome-tiff (the default) or ome-zarr (NGFF 0.5 stores, with a "
        "multiscale pyramid for large images)",
    )
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument(
        "--cluster",
        default=None,
        metavar="WHERE",
        help="run the inputs on a Dask cluster: local:N (N worker processes on this "
        "computer) or a scheduler's address (tcp://host:8786); none for this process "
        "(the default, or the 'cluster' setting); see docs/cluster.md",
    )
    _add_instance_options(p, measure=False)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="redo inputs already done, also when the output folder holds results of "
        "another model or other parameters",
    )
    p.add_argument(
        "--add",
        action="store_true",
        dest="add_to_earlier",
        help="add to the run already in the output folder: its inputs that this run "
        "does not process stay in the run record (without it, such a folder is refused)",
    )
    p.add_argument("--quiet", "-q", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(handler=_cmd_predict)

    m = sub.add_parser(
        "measure",
        help="(re)make the objects and measurements of an earlier run, without the model",
    )
    m.add_argument("run", type=Path, help="the run's output folder (holding zoodesk-run.json)")
    _add_instance_options(m, measure=True)
    m.add_argument(
        "--blocks",
        action="store_true",
        help="label every image in blocks from disk (bounded memory), not only the "
        "images the run streamed",
    )
    m.add_argument("--quiet", "-q", action="store_true")
    m.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    m.set_defaults(handler=_cmd_measure)

    t = models_sub.add_parser("test", help="run the model's own test tensors and compare")
    t.add_argument("model", help="model folder, description, zip or cached id")
    _add_device_option(t)
    t.add_argument("--weights", default=None, help="weights format to test (default: onnx)")
    t.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    t.set_defaults(handler=_cmd_models_test)

    d = sub.add_parser("demo", help="run the built-in demo model on the bundled sample images")
    d.add_argument(
        "--output",
        "-o",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write the results (default: ./zoodesk-demo-output)",
    )
    _add_device_option(d)
    d.add_argument("--json", action="store_true")
    d.add_argument("--quiet", "-q", action="store_true")
    d.set_defaults(handler=_cmd_demo)

    v = sub.add_parser("devices", help="list the execution devices this installation offers")
    v.add_argument("--json", action="store_true")
    v.set_defaults(handler=_cmd_devices)


# ------------------------------------------------------- models cache and catalogue commands
# (download, list, show, verify, remove, import, convert, report, catalogue, bundle)


def _cached_model_dict(model: Any) -> dict[str, Any]:
    data = model.as_dict()
    data["path"] = str(model.root)
    return data


def _cmd_models_download(args: argparse.Namespace) -> int:
    from zoodesk.models.download import download

    console = _console(args)
    model = download(
        args.model,
        index_url=args.index_url,
        weights=args.weights,
        console=console.err,
        show_progress=not args.json,
    )
    if args.json:
        console.document(_cached_model_dict(model))
    else:
        console.info(f"installed {model.name} ({model.id} {model.version}) in {model.root}")
        console.info(model.key)
    return EXIT_OK


def _cmd_models_list(args: argparse.Namespace) -> int:
    from zoodesk.models.cache import ModelCache

    console = _console(args)
    cache = ModelCache.from_settings()
    models = cache.list()
    if args.json:
        console.document([_cached_model_dict(m) for m in models])
        return EXIT_OK
    if not models:
        console.info(f"no models in the cache ({cache.root})")
        return EXIT_OK
    for m in models:
        ident = f"{m.id} {m.version or ''}".strip() if m.id else "(no id)"
        weights = ",".join(m.weights_formats) or "no weights"
        console.info(
            f"{m.key:36s} {m.name[:36]:36s} {ident:40s} {weights:24s} {human_size(m.size):>9s}"
        )
    return EXIT_OK


def _cmd_models_show(args: argparse.Namespace) -> int:
    from zoodesk.models.cache import ModelCache
    from zoodesk.models.catalogue import CatalogueError, load_catalogue
    from zoodesk.models.compat import compatibility_of_spec

    console = _console(args)
    cached = ModelCache.from_settings().lookup(args.model)
    if cached is None:
        try:
            catalogue = load_catalogue()
        except CatalogueError:
            catalogue = None
        found = catalogue.lookup(args.model) if catalogue is not None else None
        if catalogue is None or found is None:
            raise ZooDeskError(
                f"no model {args.model!r} in the cache"
                + ("" if catalogue is None else " nor in the saved catalogue")
            )
        entry = found[0]
        if args.json:
            console.document({"cached": False, "catalogue": entry.as_dict()})
            return EXIT_OK
        compat = entry.compatibility
        console.info(f"{entry.name} ({entry.id}), not downloaded; {catalogue.describe_age()}")
        console.info(f"  versions: {', '.join(v.version for v in entry.versions)}")
        console.info(f"  licence: {entry.license or '?'}   tags: {', '.join(entry.tags)}")
        console.info(f"  weights: {', '.join(entry.weights_formats) or 'none'}")
        console.info(f"  {compat.dims_label}: {compat.reason}")
        for problem in entry.problems[1:]:
            console.info(f"  problem: {problem}")
        if entry.description:
            console.info(f"  {entry.description}")
        return EXIT_OK
    package = cached.load()
    compat = compatibility_of_spec(package.spec, cached.weights_formats)
    if args.json:
        data = _cached_model_dict(cached)
        data["cached"] = True
        data["compatibility"] = compat.as_dict()
        console.document(data)
        return EXIT_OK
    spec = package.spec
    console.info(f"{spec.name} [{cached.key}]")
    console.info(f"  id: {cached.id or '(none)'}   version: {cached.version or '(none)'}")
    console.info(f"  from: {cached.source} ({cached.origin}, {cached.installed_at:%Y-%m-%d %H:%M})")
    console.info(f"  folder: {cached.root}")
    console.info(f"  licence: {spec.license or '?'}   tags: {', '.join(spec.tags)}")
    console.info(f"  weights in the cache: {', '.join(cached.weights_formats) or 'none'}")
    console.info(f"  {compat.dims_label}: {compat.reason}")
    for t in spec.inputs:
        console.info(f"  input  {t.id}: axes {t.axes_letters}")
    for t in spec.outputs:
        console.info(f"  output {t.id}: axes {t.axes_letters}")
    for note in cached.notes:
        console.info(f"  note: {note}")
    console.info(f"  {len(cached.files)} files, {human_size(cached.size)}")
    return EXIT_OK


def _cmd_models_verify(args: argparse.Namespace) -> int:
    from zoodesk.models.cache import ModelCache
    from zoodesk.models.integrity import damaged_summary

    console = _console(args)
    cache = ModelCache.from_settings()
    if args.all:
        models = cache.list()
    elif args.model:
        models = [cache.find(args.model)]
    else:
        raise ZooDeskError("name a MODEL to verify, or use --all")
    reports = [cache.verify(m) for m in models]
    if args.json:
        console.document([r.as_dict() for r in reports])
    for r in reports:
        if r.ok:
            console.info(f"{r.model.key}: ok ({r.checked} files match their sha256)")
            continue
        for d in r.damage:
            console.error(f"{r.model.root / d.path}: {d.problem}")
        console.error(damaged_summary(r.model.key, len(r.damage), r.checked))
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED


def _cmd_models_remove(args: argparse.Namespace) -> int:
    from zoodesk.models.cache import ModelCache

    console = _console(args)
    removed = ModelCache.from_settings().remove(args.model)
    if args.json:
        console.document({"removed": removed.key, "path": str(removed.root)})
    else:
        console.info(f"removed {removed.key} ({removed.root})")
    return EXIT_OK


def _cmd_models_import(args: argparse.Namespace) -> int:
    from zoodesk.models.cache import ModelCache

    console = _console(args)
    model = ModelCache.from_settings().import_package(args.path)
    if args.json:
        console.document(_cached_model_dict(model))
        return EXIT_OK
    console.info(f"imported {model.name} into {model.root}")
    for note in model.notes:
        console.warn(note)
    # The last line is the key alone, for scripts: later commands accept it as MODEL.
    console.info(model.key)
    return EXIT_OK


def _cmd_models_report(args: argparse.Namespace) -> int:
    from zoodesk.conversion.launch import installation
    from zoodesk.inference.checks import test_statuses
    from zoodesk.models.cache import ModelCache
    from zoodesk.models.catalogue import catalogue_from_snapshot, load_catalogue
    from zoodesk.models.compat import (
        ACTIONS,
        Compatibility,
        capability_here,
        compatibility_of_package,
    )

    console = _console(args)
    here = installation()
    cache = ModelCache.from_settings()
    # What ran its own test on this machine, per device: known for cached models only.
    tested: dict[str, dict[str, Any]] = {}
    loaded: dict[str, Compatibility] = {}
    for m in cache.list():
        try:
            package = m.load()
            loaded[m.key] = compatibility_of_package(package, m.weights_formats)
            statuses = test_statuses(package)
        except ZooDeskError as exc:
            loaded[m.key] = Compatibility("none", None, f"does not load: {exc}")
            statuses = {}
        for ref in filter(None, (m.key, m.id)):
            tested[ref] = {
                device: {"passed": st.passed, "summary": st.summary, "tested_at": st.tested_at}
                for device, st in statuses.items()
            }
    rows: list[tuple[str, str, Compatibility, dict[str, Any]]] = []
    if args.snapshot or args.catalogue:
        catalogue = catalogue_from_snapshot(args.snapshot) if args.snapshot else load_catalogue()
        source = catalogue.describe_age()
        for e in catalogue.entries:
            rows.append((e.nickname, e.name, e.compatibility, tested.get(e.id, {})))
    else:
        source = f"the cache {cache.root}"
        for m in cache.list():
            rows.append((m.key, m.name, loaded[m.key], tested.get(m.key, {})))
    order = {action: i for i, action in enumerate(ACTIONS)}
    rows.sort(key=lambda r: (order[r[2].action], r[0]))
    capabilities = [capability_here(compat, here) for _, _, compat, _ in rows]
    totals: dict[str, int] = {"models": len(rows)}
    for action in ACTIONS:
        totals[action] = sum(1 for r in rows if r[2].action == action)
    for dims in (2, 3):
        totals[f"{dims}D"] = sum(1 for r in rows if r[2].spatial_dims == dims)
    here_totals: dict[str, int] = {}
    for cap in capabilities:
        here_totals[cap.verdict] = here_totals.get(cap.verdict, 0) + 1
    passed_here = sum(1 for r in rows if any(t["passed"] for t in r[3].values()))
    if args.json:
        console.document(
            {
                "source": source,
                "installation": {
                    "converts": sorted(here.convertible),
                    "standalone": here.frozen,
                },
                "models": [
                    {
                        "model": key,
                        "name": name,
                        **compat.as_dict(),
                        "here": cap.as_dict(),
                        "tested_here": tests,
                    }
                    for (key, name, compat, tests), cap in zip(rows, capabilities, strict=True)
                ],
                "totals": {**totals, "here": here_totals, "passed_test_here": passed_here},
            }
        )
        return EXIT_OK
    console.info(f"compatibility report over {source}")
    console.info(f"{'model':34s} {'dims':4s} {'ZooDesk can':24s} {'tested here':24s} reason")
    for (key, _name, compat, tests), cap in zip(rows, capabilities, strict=True):
        ran = ", ".join(
            f"{device} {'passed' if t['passed'] else 'FAILED'}" for device, t in tests.items()
        )
        console.info(
            f"{key:34s} {compat.dims_label:4s} {cap.verdict:24s} {ran or '-':24s} {cap.reason}"
        )
    console.info(
        f"expected: {totals['models']} models, {totals['run']} run ONNX directly, "
        f"{totals['convert']} after torchscript conversion, {totals['convert-with-consent']} "
        f"after pytorch_state_dict conversion (needs consent), "
        f"{totals['convert-tensorflow']} after Keras/TensorFlow conversion, "
        f"{totals['none']} cannot run; {totals['2D']} 2D, {totals['3D']} 3D"
    )
    console.info(
        "this installation: "
        + ", ".join(f"{n} {verdict}" for verdict, n in sorted(here_totals.items()))
        + f"; {passed_here} passed their own test on this machine"
    )
    return EXIT_OK


def _cmd_catalogue_refresh(args: argparse.Namespace) -> int:
    from zoodesk.models.catalogue import refresh_catalogue_events
    from zoodesk.models.http import run_with_progress

    console = _console(args)
    catalogue = run_with_progress(
        refresh_catalogue_events(index_url=args.index_url), console=console.err, show=not args.json
    )
    for warning in catalogue.warnings:
        console.warn(warning)
    totals = catalogue.totals()
    if args.json:
        console.document(
            {
                "folder": str(catalogue.folder),
                "index_url": catalogue.index_url,
                "totals": totals,
                "warnings": catalogue.warnings,
            }
        )
        return EXIT_OK
    unavailable = sum(1 for e in catalogue.entries if e.problems and not e.valid)
    console.info(
        f"saved {totals['models']} models from {catalogue.index_url} to {catalogue.folder}: "
        f"{totals['run'] + totals['convert'] + totals['convert-with-consent']} can run "
        f"({totals['run']} directly), {totals['none']} cannot; "
        f"{unavailable} descriptions unusable"
    )
    return EXIT_OK


def _cmd_catalogue_search(args: argparse.Namespace) -> int:
    from zoodesk.models.catalogue import load_catalogue

    console = _console(args)
    catalogue = load_catalogue()
    for warning in catalogue.warnings:
        console.warn(warning)
    found = catalogue.search(
        " ".join(args.query) if args.query else None,
        tags=args.tag,
        license=args.license,
        weights_format=args.format,
        dims=args.dims,
        runnable=True if args.runnable else None,
    )
    if args.json:
        console.document(
            {
                "fetched_at": catalogue.fetched_at.isoformat(),
                "age_seconds": int(catalogue.age.total_seconds()),
                "index_url": catalogue.index_url,
                "total": len(catalogue.entries),
                "matches": [e.as_dict() for e in found],
            }
        )
        return EXIT_OK
    console.info(catalogue.describe_age())
    for e in found:
        compat = e.compatibility
        console.info(f"{e.nickname:32s} {compat.dims_label:3s} {compat.action:21s} {e.name[:50]}")
    console.info(f"{len(found)} of {len(catalogue.entries)} models match")
    return EXIT_OK


def _cmd_bundle_export(args: argparse.Namespace) -> int:
    from zoodesk.models.bundle import export_bundle

    console = _console(args)
    result = export_bundle(args.file, args.model, include_catalogue=not args.no_catalogue)
    if args.json:
        console.document(
            {
                "path": str(result.path),
                "size": result.size,
                "models": [m.key for m in result.models],
                "catalogue": result.catalogue is not None,
            }
        )
        return EXIT_OK
    what = ", ".join(m.key for m in result.models)
    cat = "the catalogue and " if result.catalogue is not None else ""
    console.info(f"wrote {cat}{what} to {result.path} ({human_size(result.size)})")
    return EXIT_OK


def _cmd_bundle_import(args: argparse.Namespace) -> int:
    from zoodesk.models.bundle import import_bundle

    console = _console(args)
    result = import_bundle(args.file)
    if args.json:
        console.document(
            {
                "models": [_cached_model_dict(m) for m in result.models],
                "catalogue": result.catalogue is not None,
                "catalogue_note": result.catalogue_note,
            }
        )
        if result.catalogue_refused:
            console.warn(result.catalogue_note)
        return EXIT_OK
    if result.catalogue_refused:
        console.warn(result.catalogue_note)
    else:
        console.info(result.catalogue_note)
    for m in result.models:
        console.info(f"installed {m.name} as {m.key}")
    return EXIT_OK


def _cmd_models_convert(args: argparse.Namespace) -> int:
    from zoodesk.conversion.pipeline import ConversionTestError, convert_model
    from zoodesk.models.http import run_with_progress

    console = _console(args)
    events = convert_model(
        args.model, weights_format=args.weights, trust_code=args.trust_code, replace=args.replace
    )
    try:
        result = run_with_progress(events, console=console.err, show=not args.json)
    except ConversionTestError as exc:
        if args.json:
            console.document({"ok": False, **exc.result.as_dict(), "error": str(exc)})
        else:
            for line in exc.result.describe():
                console.info(line)
        console.error(str(exc))
        return EXIT_FAILED
    if args.json:
        console.document(result.as_dict())
        return EXIT_OK
    if result.imported:
        console.info(f"imported {args.model} into the cache as {result.model}")
    for line in result.describe():
        console.info(line)
    console.info(f"added the ONNX weights to {result.model}")
    return EXIT_OK


def _register_cache_commands(
    sub: argparse._SubParsersAction, models_sub: argparse._SubParsersAction
) -> None:
    """Commands over the local model cache and the zoo catalogue."""
    json_help = "print one JSON document on stdout"
    model_help = "cache key, or zoo id with optional /VERSION (bioimage-io/ prefix optional)"

    p = models_sub.add_parser("download", help="download a zoo model into the local cache")
    p.add_argument(
        "model",
        metavar="ID[/VERSION]",
        help="zoo id, e.g. affable-shark or "
        "bioimage-io/affable-shark/v0 (default version: the latest)",
    )
    p.add_argument(
        "--weights",
        default=None,
        metavar="FORMAT",
        help="weights to fetch (default: onnx, else torchscript, else pytorch_state_dict)",
    )
    p.add_argument(
        "--index-url",
        default=None,
        metavar="URL",
        help="collection index to look the model up in (default: the setting)",
    )
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(handler=_cmd_models_download)

    p = models_sub.add_parser("list", help="list the cached models")
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(handler=_cmd_models_list)

    p = models_sub.add_parser("show", help="details of a cached model or catalogue entry")
    p.add_argument("model", help=model_help)
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(handler=_cmd_models_show)

    p = models_sub.add_parser("verify", help="re-check every file of a cached model (sha256)")
    p.add_argument("model", nargs="?", default=None, help=model_help)
    p.add_argument("--all", action="store_true", help="verify every cached model")
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(handler=_cmd_models_verify)

    p = models_sub.add_parser("remove", help="remove a model from the cache")
    p.add_argument("model", help=model_help)
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(handler=_cmd_models_remove)

    p = models_sub.add_parser(
        "import", help="copy a model package (zip or folder) into the cache; prints its key"
    )
    p.add_argument("path", type=Path, help="model .zip, folder, or description .yaml")
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(handler=_cmd_models_import)

    p = models_sub.add_parser(
        "convert",
        help="convert a cached model's PyTorch weights to ONNX and test them "
        "(needs the convert extra: torch)",
    )
    p.add_argument("model", help=f"{model_help}; a package path is imported first")
    p.add_argument(
        "--weights",
        choices=("torchscript", "pytorch_state_dict"),
        default=None,
        help="weights to convert (default: torchscript if present)",
    )
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="allow executing the architecture code that pytorch_state_dict weights need "
        "(only for models from a source you trust)",
    )
    p.add_argument(
        "--replace", action="store_true", help="replace the model's existing ONNX weights"
    )
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(handler=_cmd_models_convert)

    p = models_sub.add_parser(
        "report", help="what ZooDesk can do with each cached (or catalogue) model"
    )
    p.add_argument(
        "--catalogue",
        action="store_true",
        help="report over the saved catalogue instead of the cache",
    )
    p.add_argument(
        "--snapshot",
        type=Path,
        default=None,
        metavar="DIR",
        help="report over a catalogue snapshot folder (index.json + rdfs/)",
    )
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(handler=_cmd_models_report)

    cat = sub.add_parser("catalogue", help="the zoo catalogue: refresh, search offline")
    cat_sub = cat.add_subparsers(dest="catalogue_command", metavar="ACTION")
    cat.set_defaults(handler=_help_handler(cat))
    p = cat_sub.add_parser("refresh", help="fetch the collection index and descriptions")
    p.add_argument(
        "--index-url",
        default=None,
        metavar="URL",
        help="collection index (default: the setting, or ZOODESK_INDEX_URL)",
    )
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(handler=_cmd_catalogue_refresh)
    p = cat_sub.add_parser("search", help="search the saved catalogue (no network)")
    p.add_argument("query", nargs="*", help="words to find in name, id, description, tags")
    p.add_argument("--tag", action="append", default=[], help="required tag (repeatable)")
    p.add_argument("--license", default=None, help="licence, e.g. MIT or CC-BY-4.0")
    p.add_argument(
        "--format",
        default=None,
        metavar="WEIGHTS",
        help="weights format offered, e.g. onnx, torchscript",
    )
    dims = p.add_mutually_exclusive_group()
    dims.add_argument("--2d", dest="dims", action="store_const", const=2, help="2D models only")
    dims.add_argument("--3d", dest="dims", action="store_const", const=3, help="3D models only")
    p.add_argument(
        "--runnable",
        action="store_true",
        help="only models ZooDesk can run (possibly after conversion)",
    )
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(handler=_cmd_catalogue_search, dims=None)

    bun = sub.add_parser("bundle", help="offline bundles: catalogue and models in one file")
    bun_sub = bun.add_subparsers(dest="bundle_command", metavar="ACTION")
    bun.set_defaults(handler=_help_handler(bun))
    p = bun_sub.add_parser("export", help="write the catalogue and cached models to a file")
    p.add_argument("file", type=Path, help="bundle to write (.zdbundle)")
    p.add_argument(
        "--model",
        "-m",
        action="append",
        required=True,
        metavar="MODEL",
        help=f"{model_help} (repeatable)",
    )
    p.add_argument("--no-catalogue", action="store_true", help="leave the catalogue out")
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(handler=_cmd_bundle_export)
    p = bun_sub.add_parser("import", help="install the models and catalogue of a bundle")
    p.add_argument("file", type=Path, help="a .zdbundle file")
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(handler=_cmd_bundle_import)


# ------------------------------------------------------------------------ export commands


def _cmd_export_template(args: argparse.Namespace, console: _Console) -> int:
    from zoodesk.export import write_template

    path = write_template(args.template, overwrite=args.overwrite)
    if args.json:
        console.document({"template": str(path)})
    else:
        console.info(
            f"wrote the study metadata template {path}; fill it in and pass it with --metadata"
        )
    return EXIT_OK


def _cmd_export_check(args: argparse.Namespace, console: _Console) -> int:
    from zoodesk.export import check_package
    from zoodesk.export.checks import (
        ARCHIVE_VALIDATOR_HINT,
        archive_validation,
        archive_validator,
    )

    problems = check_package(args.check)
    validator = archive_validator()
    if validator is not None:
        problems += archive_validation(args.check, validator)
    if args.json:
        console.document(
            {
                "package": str(args.check),
                "ok": not problems,
                "problems": [{"path": p.path, "message": p.message} for p in problems],
                "archive_validator": str(validator) if validator else None,
            }
        )
    else:
        for problem in problems:
            console.info(str(problem))
        if validator is None:
            console.warn(ARCHIVE_VALIDATOR_HINT)
        if not problems:
            checked = " (and the BioImage Archive's validator accepts it)" if validator else ""
            console.info(f"{args.check}: the package is sound{checked}")
    return EXIT_FAILED if problems else EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from zoodesk.export import (
        ExportFinished,
        ExportRequest,
        ExportStarted,
        ExportWarning,
        export_run,
        load_study_metadata,
        save_last_study_metadata,
    )

    console = _console(args)
    if args.template is not None:
        return _cmd_export_template(args, console)
    if args.check is not None:
        return _cmd_export_check(args, console)
    if args.run_dir is None or args.to is None:
        console.error("give a run folder and --to EXPORT_DIR (or --template FILE, or --check DIR)")
        return EXIT_USAGE
    study = load_study_metadata(args.metadata) if args.metadata is not None else None
    if study is not None:
        save_last_study_metadata(study)
    request = ExportRequest(
        run_dir=args.run_dir,
        destination=args.to,
        inputs="reference" if args.reference_inputs else "include",
        study=study,
        overwrite=args.overwrite,
    )
    for event in export_run(request):
        if isinstance(event, ExportStarted):
            console.info(
                f"exporting run {event.run_id} ({event.inputs_done} of {event.inputs} inputs "
                f"with results, {event.outputs} outputs, {human_size(event.total_bytes)}) "
                f"to {event.destination}"
            )
        elif isinstance(event, ExportWarning):
            console.warn(event.message)
        elif isinstance(event, ExportFinished):
            result = event.result
            if args.json:
                console.document(result.as_dict())
                continue
            for image, error in result.failures:
                reason = error if error.startswith(image) else f"{image}: {error}"
                console.warn(f"no results for {reason} (listed in the provenance)")
            console.info(
                f"wrote {result.files} files ({human_size(result.size)}) to {result.destination}"
            )
            if result.draft:
                console.warn(
                    "a draft: the BioImage Archive requires the study's "
                    f"{', '.join(result.missing_for_archive)}, not given"
                )
            if study is None:
                console.info(
                    "no study metadata given: write a template with "
                    "'zoodesk export --template study.yaml', fill it in and export "
                    "again with --metadata"
                )
    return EXIT_OK


def _register_export_commands(sub: argparse._SubParsersAction) -> None:
    """Commands that turn a finished run into a deposition package."""
    p = sub.add_parser(
        "export",
        help="write a deposition package (BioImage Archive, Zenodo, RO-Crate) of a run",
        description="Write a run's results as a deposition package; or write a study "
        "metadata template; or check a package.",
    )
    p.add_argument(
        "run_dir",
        nargs="?",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="output folder of 'zoodesk predict' (holds zoodesk-run.json)",
    )
    p.add_argument(
        "--to", type=Path, default=None, metavar="EXPORT_DIR", help="package folder to create"
    )
    inputs = p.add_mutually_exclusive_group()
    inputs.add_argument(
        "--include-inputs",
        action="store_true",
        help="copy the input images into the package (the default)",
    )
    inputs.add_argument(
        "--reference-inputs",
        action="store_true",
        help="leave the inputs out; record their paths and checksums",
    )
    p.add_argument(
        "--metadata",
        type=Path,
        default=None,
        metavar="STUDY_YAML",
        help="study metadata (title, authors, licence, REMBI fields); see --template",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export (or template) of the same name",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--template",
        type=Path,
        default=None,
        metavar="FILE",
        help="write a commented study metadata template and exit",
    )
    mode.add_argument(
        "--check",
        type=Path,
        default=None,
        metavar="EXPORT_DIR",
        help="re-verify a package: one line per problem, exit 1 if any",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(handler=_cmd_export)


# ---------------------------------------------------------------------------------- main


def _cmd_gui(args: argparse.Namespace) -> int:
    # Asked before Qt starts: Qt would print several lines and abort the process.
    from zoodesk.desktop_check import desktop_problem

    problem = desktop_problem()
    if problem is not None:
        _Console().error(problem)
        return EXIT_NO_DESKTOP
    try:
        from zoodesk.gui.app import run_gui
    except ImportError as exc:
        raise ZooDeskError(f"the desktop application is not available ({exc})") from exc
    return run_gui()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``zoodesk`` command."""
    parser = argparse.ArgumentParser(
        prog="zoodesk",
        description="Run BioImage Model Zoo models on folders of images, offline.",
    )
    parser.add_argument("--version", action="version", version=f"zoodesk {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    models = sub.add_parser("models", help="manage, test and convert models")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    models.set_defaults(handler=_help_handler(models))
    _register_inference_commands(sub, models_sub)
    _register_cache_commands(sub, models_sub)
    _register_export_commands(sub)
    g = sub.add_parser("gui", help="open the desktop application (the default)")
    g.set_defaults(handler=_cmd_gui)
    return parser


def _channel(text: str) -> int | str:
    """A --channel value: an index when it is a number, else a channel name."""
    return int(text) if text.strip().lstrip("-").isdigit() else text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zoodesk`` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == [WORKER_COMMAND]:
        # The standalone application runs its conversion worker as its own executable
        # (zoodesk.conversion.launch); not a command for users, so not in the help.
        from zoodesk.conversion._worker import main as worker_main

        return worker_main(arguments[1:])
    if arguments == ["--version"]:
        # Answered before the parser is built: installers and scripts call it often.
        print(f"zoodesk {__version__}")
        return EXIT_OK
    parser = build_parser()
    json_mode = "--json" in arguments
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exit_:
        # argparse has printed its usage line; a --json caller still gets its document.
        if json_mode and exit_.code not in (0, None):
            _failure_document(arguments, "invalid command line (see the usage above)")
        raise
    handler: Handler = getattr(args, "handler", _cmd_gui)
    json_mode = bool(getattr(args, "json", False))
    # Libraries' log records go to the log file, not between ZooDesk's own lines.
    with command_logging(zoodesk_home() / LOGS_FOLDER, debug=args.debug):
        return _handle(handler, args, arguments, json_mode)


def _handle(
    handler: Handler, args: argparse.Namespace, arguments: Sequence[str], json_mode: bool
) -> int:
    """Run a command's handler; turn the errors it raises into one line each."""
    try:
        return handler(args)
    except ZooDeskError as exc:
        if args.debug:
            raise
        _Console(json_mode=json_mode).error(str(exc))
        if json_mode:
            _failure_document(arguments, str(exc), kind=type(exc).__name__)
        return EXIT_FAILED
    except MemoryError as exc:
        # An array larger than the machine can hold (a huge image or model shape).
        if args.debug:
            raise
        message = not_enough_memory(exc)
        _Console(json_mode=json_mode).error(message)
        if json_mode:
            _failure_document(arguments, message, kind="NotEnoughMemoryError")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _Console().error("interrupted")
        if json_mode:
            _failure_document(arguments, "interrupted", kind="KeyboardInterrupt")
        return 130
    except Exception as exc:
        # A defect of ZooDesk's, not the user's: say so in one line, keep the traceback
        # for --debug and the log.
        if args.debug:
            raise
        log.debug("unexpected error", exc_info=True)
        message = f"unexpected error ({type(exc).__name__}: {exc}); run with --debug for details"
        _Console(json_mode=json_mode).error(message)
        if json_mode:
            _failure_document(arguments, message, kind="InternalError")
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
