"""Smoke-test a frozen ZooDesk bundle as a fresh workstation would run it.

Runs the bundle's executables with nothing around them: an empty ``ZOODESK_HOME``
and home folder, ``PATH`` holding only the bundle folder, no Python variables, no
proxy, and no network (``unshare -rn`` where the system allows it; elsewhere only
the proxies are removed, and the report says so).  The checks:

1. ``zoodesk-cli --version`` (timed: the command line's cold start);
2. ``zoodesk-cli devices --json`` offers the CPU;
3. ``zoodesk-cli demo`` writes its outputs and a finished run record;
4. ``zoodesk-cli models test MODEL`` passes, for each model given (default: the
   bundle's demo model, and the nuclei model of ``../shared`` when present);
5. ``zoodesk-cli predict`` on a folder of images (copies of the bundle's samples)
   writes OME-TIFF outputs and a run record that says the run was frozen; and on a
   multi-scene CZI, an ND2 and a LIF tile scan from ``../shared/sample-images``,
   each scene, position and tile an input with its pixel sizes recorded; and on an
   OME-Zarr store, writing ``--format ome-zarr`` outputs.  The
   layout check also holds the CPU variant's bundle to 300 MB unpacked;
   objects: ``predict --instances watershed`` with the nuclei model on an image made
   from its test input writes the label image, the objects table and the run's
   summary table, with a plausible number of nuclei, and ``measure --instances
   threshold`` labels the same run again;
6. ``zoodesk-cli export`` packages that run for deposition (with study metadata
   that fills every field the archive requires), and ``export --check`` accepts
   the package;
7. weights conversion: with packages built by ``tools/conversion_packages.py``
   (torchscript returning two outputs, and a state dict with its architecture
   code), a bundle of the full variant imports, converts (the state dict with
   ``--trust-code``), tests and predicts a folder with each converted model, its
   own executable running the conversion worker; a runtime-only bundle must refuse
   the conversion with the one line that names the full variant.  Building the
   packages needs torch in the Python that runs this script (``--packages-python``
   names another); without it the step is skipped;
8. the desktop entry ``zoodesk`` starts with ``QT_QPA_PLATFORM=offscreen``, shows
   its main window, reports it and quits with exit code 0 (timed: launch to window
   shown).  A bundle without the desktop application reports this step as skipped;
9. Linux: the desktop entry shows its main window on the xcb platform too, on a
   virtual X server (Xvfb), with the system's copies of the X11 libraries that a
   bare desktop lacks hidden in a private mount namespace
   (``tools/desktop_sandbox.py``): the bundle's own copies must load.  Skipped where
   Xvfb or a mount namespace is not available.  The layout check (1) also expects
   those libraries in the bundle.

The desktop step uses the application's own hook: with
``ZOODESK_EXIT_AFTER_SHOWN=1`` it prints ``zoodesk-gui-shown <seconds since the
process started>`` on standard output once the main window is shown and painted,
then quits with exit code 0 (``zoodesk.gui.app``).  Where the desktop entry has no
standard output (Windows builds without a console), the line lands in
``ZOODESK_HOME/logs/zoodesk-gui.log`` (``installers/entry_gui.py``).  The cold start
is measured here, from launch to the line's arrival, and the application's own
figure is reported beside it.  See ``docs/installers.md``.

Usage::

    python tools/smoke_bundle.py [dist/zoodesk] [--model PATH] [--json report.json]
        [--packages-python PYTHON]

Needs only the Python standard library (and torch, for the conversion packages).
Exit code 0 when no check failed.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

try:
    from tools.desktop_sandbox import BARE_DESKTOP_LACKS, XvfbDisplay, hiding_prefix
except ImportError:
    # Run as a script (python tools/smoke_bundle.py): this folder is on the path.
    from desktop_sandbox import BARE_DESKTOP_LACKS, XvfbDisplay, hiding_prefix

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = ROOT / "dist" / "zoodesk"
NUCLEI_MODEL = ROOT.parent / "shared" / "zoo-models" / "unet2d_nuclei_broad"
SAMPLE_IMAGES = ROOT.parent / "shared" / "sample-images"
#: Microscope files the bundle must read, with the inputs each gives (its series).
VENDOR_SAMPLES = {
    "czi/S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi": 3,
    "nd2/cluster.nd2": 1,
    "lif/PR2729_frameOrderCombinedScanTypes.lif": 4,
}
#: Study metadata for the exported package: every field the archive requires.
SMOKE_STUDY = """\
title: Bundle smoke test
description: The bundle's sample images, segmented by the frozen application.
authors:
  - name: ZooDesk smoke test
    affiliation: ZooDesk
biosample:
  organism:
    scientific_name: Homo sapiens
    common_name: human
acquisition:
  imaging_method: widefield fluorescence microscopy
  instrument: widefield microscope
"""
#: Fewest nuclei the nuclei model's test image may give: it shows about 90, so fewer
#: than this means the objects were not separated (or not found).
MIN_NUCLEI = 10
#: Largest unpacked size of a bundle without torch or CUDA (the CPU variant).
MAX_RUNTIME_BUNDLE_BYTES = 300 * 10**6
IS_WINDOWS = sys.platform == "win32"
EXE_SUFFIX = ".exe" if IS_WINDOWS else ""
#: Where PyInstaller puts libraries and data inside the bundle folder.
CONTENTS_DIR = "_internal"
#: Environment variable that makes the application quit once its window is shown.
EXIT_AFTER_SHOWN_VARIABLE = "ZOODESK_EXIT_AFTER_SHOWN"
#: First word of the line the application prints then (``zoodesk.gui.app``).
SHOWN_MARKER = "zoodesk-gui-shown"
#: What the command line says when the bundle has no desktop application.
NO_GUI_MESSAGE = "the desktop application is not available"
#: Seconds a single command may take.
COMMAND_TIMEOUT = 600
#: Seconds the desktop application may take to show its window and quit.
GUI_TIMEOUT = 120
# Variables of Windows that a process needs to start at all; nothing else passes.
_WINDOWS_KEEP = (
    "SYSTEMROOT",
    "SYSTEMDRIVE",
    "WINDIR",
    "COMSPEC",
    "PATHEXT",
    "NUMBER_OF_PROCESSORS",
)


@dataclass
class Check:
    """The outcome of one smoke check."""

    name: str
    status: str  # "ok", "failed" or "skipped"
    seconds: float
    detail: str = ""
    command: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Completed:
    """A finished command: exit code, outputs and wall-clock seconds."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def tail(self, lines: int = 15) -> str:
        text = (self.stdout + "\n" + self.stderr).strip().splitlines()
        return "\n".join(text[-lines:])


def network_isolation() -> tuple[list[str], str]:
    """The command prefix that cuts the network off, and a note saying what it does.

    Returns
    -------
    tuple
        ``(["/usr/bin/unshare", "-rn", ...], "...")`` where an unprivileged network
        namespace can be made (Linux; its loopback brought up where ``ip`` can), else
        ``([], "...")``.
    """
    unshare = shutil.which("unshare")
    if unshare and sys.platform.startswith("linux"):
        # Loopback stays: offline computers have it, and cluster runs on this
        # computer (--cluster local:N) talk to their workers over it.
        shell, ip = shutil.which("sh"), shutil.which("ip")
        loopback = [unshare, "-rn", str(shell), "-c", f'"{ip}" link set lo up && exec "$@"', "sh"]
        probe = subprocess.run([*loopback, "true"], capture_output=True, timeout=30, check=False)
        if shell and ip and probe.returncode == 0:
            return (
                loopback,
                "no network but loopback: each command runs in a network namespace of its own",
            )
        probe = subprocess.run(
            [unshare, "-rn", "true"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [unshare, "-rn"], "no network: each command runs in an empty network namespace"
    return [], "network not isolated on this system: proxies removed from the environment only"


class BundleSmoke:
    """Runs the smoke checks against one bundle folder.

    Parameters
    ----------
    bundle
        The onedir folder holding ``zoodesk-cli`` and ``zoodesk``.
    workdir
        An empty folder for the fresh home, inputs and outputs.
    isolate
        Cut the network off where the system allows it.
    """

    def __init__(self, bundle: Path, workdir: Path, isolate: bool = True) -> None:
        self.bundle = bundle.resolve()
        self.workdir = workdir
        self.cli = self.bundle / f"zoodesk-cli{EXE_SUFFIX}"
        self.gui_exe = self.bundle / f"zoodesk{EXE_SUFFIX}"
        self.home = workdir / "zoodesk-home"
        self.user_home = workdir / "user-home"
        self.tmp = workdir / "tmp"
        for folder in (self.home, self.user_home, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        if isolate:
            self.prefix, self.network_note = network_isolation()
        else:
            self.prefix, self.network_note = [], "network not isolated (asked not to)"

    # ------------------------------------------------------------------ environment

    def environment(self, **extra: str) -> dict[str, str]:
        """The whole environment of a bundle command: nothing from this process's."""
        env = {
            "PATH": str(self.bundle),
            "ZOODESK_HOME": str(self.home),
            "HOME": str(self.user_home),
            "USERPROFILE": str(self.user_home),
            "TMPDIR": str(self.tmp),
            "TEMP": str(self.tmp),
            "TMP": str(self.tmp),
            "LANG": "C.UTF-8",
            # rich draws for a terminal this wide, so tables stay readable in logs.
            "COLUMNS": "120",
        }
        if IS_WINDOWS:
            env.update({k: os.environ[k] for k in _WINDOWS_KEEP if k in os.environ})
            env["APPDATA"] = str(self.user_home / "AppData" / "Roaming")
            env["LOCALAPPDATA"] = str(self.user_home / "AppData" / "Local")
        env.update(extra)
        return env

    def run(
        self,
        args: Sequence[str],
        exe: Path | None = None,
        timeout: float = COMMAND_TIMEOUT,
        **env: str,
    ) -> Completed:
        """Run a bundle executable (the CLI by default) in the bare environment."""
        command = [*self.prefix, str(exe or self.cli), *args]
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                command,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=self.environment(**env),
                cwd=self.workdir,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout if isinstance(exc.stdout, str) else ""
            err = exc.stderr if isinstance(exc.stderr, str) else ""
            return Completed(-1, out, err + f"\ntimed out after {timeout:.0f} s", timeout)
        return Completed(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)

    def _check(
        self,
        name: str,
        completed: Completed,
        args: Sequence[str],
        problem: str | None,
        **data: Any,
    ) -> Check:
        if completed.returncode != 0:
            problem = f"exit code {completed.returncode}: {completed.tail()}"
        return Check(
            name=name,
            status="failed" if problem else "ok",
            seconds=round(completed.seconds, 3),
            detail=problem or "",
            command=list(args),
            data=data,
        )

    # ----------------------------------------------------------------------- checks

    def check_layout(self) -> Check:
        """Both executables, the demo resources and the Qt platform plugins are there."""
        start = time.perf_counter()
        missing = [p.name for p in (self.cli, self.gui_exe) if not p.is_file()]
        internal = self.bundle / CONTENTS_DIR
        if not (internal / "zoodesk" / "resources" / "demo" / "model").is_dir():
            missing.append(f"{CONTENTS_DIR}/zoodesk/resources/demo/model")
        if not (internal / "bioimageio" / "spec" / "static").is_dir():
            missing.append(f"{CONTENTS_DIR}/bioimageio/spec/static")
        qt_plugins = internal / "PySide6" / "Qt" / "plugins"
        data: dict[str, Any] = {"bundle_bytes": folder_size(self.bundle)}
        if (internal / "PySide6").is_dir():
            platforms = qt_plugins / "platforms"
            found = sorted(p.name for p in platforms.iterdir()) if platforms.is_dir() else []
            data["qt_platform_plugins"] = found
            if not any("offscreen" in name for name in found):
                missing.append("Qt offscreen platform plugin")
            if "libqxcb.so" in found:
                # The xcb plugin's libraries that a bare desktop lacks travel with it.
                present = {p.name for p in internal.rglob("*.so*")}
                missing += [name for name in BARE_DESKTOP_LACKS if name not in present]
        cpu_only = not self.carries_torch() and not any(internal.rglob("*providers_cuda*"))
        if data["bundle_bytes"] > MAX_RUNTIME_BUNDLE_BYTES and cpu_only:
            missing.append(
                f"a size under {MAX_RUNTIME_BUNDLE_BYTES / 1e6:.0f} MB "
                f"(it is {data['bundle_bytes'] / 1e6:.0f} MB)"
            )
        return Check(
            name="layout",
            status="failed" if missing else "ok",
            seconds=round(time.perf_counter() - start, 3),
            detail=f"missing: {', '.join(missing)}" if missing else "",
            data=data,
        )

    def check_version(self, expected: str | None = None, repeats: int = 3) -> Check:
        """``--version`` prints ``zoodesk VERSION``; the first run's time is the cold start."""
        args = ["--version"]
        runs = [self.run(args) for _ in range(repeats)]
        first = runs[0]
        text = first.stdout.strip()
        problem = None
        if not text.startswith("zoodesk "):
            problem = f"unexpected output {text!r}"
        elif expected is not None and text != f"zoodesk {expected}":
            problem = f"printed {text!r}, expected 'zoodesk {expected}'"
        return self._check(
            "version",
            first,
            args,
            problem,
            version=text.removeprefix("zoodesk "),
            cold_start_seconds=round(first.seconds, 3),
            warm_start_seconds=round(statistics.median(r.seconds for r in runs[1:]), 3)
            if repeats > 1
            else None,
        )

    def check_devices(self) -> Check:
        """The bundle's ONNX Runtime offers at least the CPU."""
        args = ["devices", "--json"]
        done = self.run(args)
        problem = None
        devices: list[Any] = []
        if done.returncode == 0:
            try:
                devices = json.loads(done.stdout)
            except json.JSONDecodeError as exc:
                problem = f"--json output is not JSON: {exc}"
            if not problem and not any(d.get("name") == "cpu" for d in devices):
                problem = f"no CPU device in {devices}"
        names = [d.get("name") for d in devices]
        return self._check("devices", done, args, problem, devices=names)

    def check_demo(self) -> Check:
        """``demo`` writes outputs and a finished run record."""
        out = self.workdir / "demo-output"
        args = ["demo", "--output", str(out), "--device", "cpu", "--json"]
        done = self.run(args)
        problem = None
        data: dict[str, Any] = {}
        if done.returncode == 0:
            problem, data = _run_record_problem(out)
        return self._check("demo", done, args, problem, **data)

    def check_models_test(self, model: Path | str) -> Check:
        """``models test MODEL --device cpu`` passes."""
        args = ["models", "test", str(model), "--device", "cpu", "--json"]
        done = self.run(args)
        problem = None
        passed = None
        if done.returncode == 0:
            try:
                report = json.loads(done.stdout)
            except json.JSONDecodeError as exc:
                report, problem = {}, f"--json output is not JSON: {exc}"
            passed = report.get("passed")
            if not problem and passed is not True:
                problem = f"the test did not pass: {done.stdout.strip()[-500:]}"
        return self._check(f"models test {Path(model).name}", done, args, problem, passed=passed)

    def check_predict(
        self, model: Path | str, images: Sequence[Path], label: str = "predict"
    ) -> Check:
        """``predict`` on a folder of copied images writes outputs and a frozen run record."""
        inputs = self.workdir / f"{label}-input"
        inputs.mkdir(exist_ok=True)
        for image in images:
            shutil.copy2(image, inputs / image.name)
        out = self.workdir / f"{label}-output"
        args = ["predict", "--model", str(model), "--input", str(inputs), "--output", str(out),
                "--device", "cpu", "--json"]  # fmt: skip
        done = self.run(args)
        problem = None
        data: dict[str, Any] = {}
        if done.returncode == 0:
            problem, data = _run_record_problem(out, expected_files=len(images))
        return self._check(f"predict {Path(model).name}", done, args, problem, **data)

    def check_vendor_formats(self, model: Path | str) -> Check:
        """``predict`` reads a multi-scene CZI, an ND2 and a LIF tile scan: every scene,
        position and tile an input of its own, with the files' pixel sizes recorded."""
        found = {rel: SAMPLE_IMAGES / rel for rel in VENDOR_SAMPLES}
        if not all(p.is_file() for p in found.values()):
            return Check("vendor formats", "skipped", 0.0, f"no sample files in {SAMPLE_IMAGES}")
        inputs = self.workdir / "vendor-input"
        inputs.mkdir(exist_ok=True)
        for path in found.values():
            shutil.copy2(path, inputs / path.name)
        out = self.workdir / "vendor-output"
        args = ["predict", "--model", str(model), "--input", str(inputs), "--output", str(out),
                "--channel", "0", "--device", "cpu", "--json"]  # fmt: skip
        done = self.run(args)
        problem = None
        data: dict[str, Any] = {}
        if done.returncode == 0:
            problem, data = _run_record_problem(out, expected_files=sum(VENDOR_SAMPLES.values()))
        if problem is None and done.returncode == 0:
            record = json.loads((out / "zoodesk-run.json").read_text(encoding="utf-8"))
            uncalibrated = [f["key"] for f in record["files"] if not f.get("pixel_sizes")]
            if uncalibrated:
                problem = f"no pixel sizes recorded for {uncalibrated}"
        return self._check("vendor formats (CZI, ND2, LIF)", done, args, problem, **data)

    def check_ome_zarr(self, model: Path | str) -> Check:
        """``predict`` reads an OME-Zarr store and writes ``--format ome-zarr`` outputs."""
        store = SAMPLE_IMAGES / "ome-zarr" / "cat.ome.zarr"
        if not store.is_dir():
            return Check("ome-zarr", "skipped", 0.0, f"no {store}")
        out = self.workdir / "zarr-output"
        args = ["predict", "--model", str(model), "--input", str(store), "--output", str(out),
                "--format", "ome-zarr", "--device", "cpu", "--json"]  # fmt: skip
        done = self.run(args)
        problem = None
        data: dict[str, Any] = {}
        if done.returncode == 0:
            problem, data = _run_record_problem(out, expected_files=1, outputs_are_folders=True)
        return self._check("ome-zarr in and out", done, args, problem, **data)

    def check_instances(self, model: Path | str = NUCLEI_MODEL) -> Check:
        """``predict --instances watershed`` labels the nuclei of the model's test image.

        The image is the model's ``test_input.npy`` as one plane.  The run writes the
        label image, the objects table (more than :data:`MIN_NUCLEI` rows, as many as
        the run record counts) and the run's summary table.
        """
        source = Path(model) / "test_input.npy"
        if not source.is_file():
            return Check("instances", "skipped", 0.0, f"no {source}")
        inputs = self.workdir / "instances-input"
        inputs.mkdir(exist_ok=True)
        plane_from_npy(source, inputs / "nuclei.npy")
        out = self.workdir / "instances-output"
        args = ["predict", "--model", str(model), "--input", str(inputs), "--output", str(out),
                "--instances", "watershed", "--device", "cpu", "--json"]  # fmt: skip
        done = self.run(args)
        problem = None
        data: dict[str, Any] = {}
        if done.returncode == 0:
            problem, data = _run_record_problem(out, expected_files=1)
        if problem is None and done.returncode == 0:
            problem, data["objects"] = _objects_problem(out, "watershed")
        return self._check("predict --instances watershed", done, args, problem, **data)

    def check_measure(self, run_dir: Path | None = None) -> Check:
        """``measure --instances threshold`` labels a finished run again.

        The run is the one :meth:`check_instances` wrote, unless another is given.
        """
        run_dir = run_dir or self.workdir / "instances-output"
        args = ["measure", str(run_dir), "--instances", "threshold", "--json"]
        done = self.run(args)
        problem = None
        data: dict[str, Any] = {}
        if done.returncode == 0:
            problem, data["objects"] = _objects_problem(run_dir, "threshold")
        return self._check("measure --instances threshold", done, args, problem, **data)

    def check_cluster(self, model: Path | str = NUCLEI_MODEL) -> Check:
        """``predict --cluster local:2``: two worker processes of the frozen application
        (started through multiprocessing's spawn) each run inputs and are recorded."""
        source = Path(model) / "test_input.npy"
        if not source.is_file():
            return Check("cluster", "skipped", 0.0, f"no {source}")
        inputs = self.workdir / "cluster-input"
        inputs.mkdir(exist_ok=True)
        for i in range(4):
            plane_from_npy(source, inputs / f"nuclei{i}.npy")
        out = self.workdir / "cluster-output"
        args = ["predict", "--model", str(model), "--input", str(inputs), "--output", str(out),
                "--cluster", "local:2", "--device", "cpu", "--json"]  # fmt: skip
        done = self.run(args)
        problem = None
        data: dict[str, Any] = {}
        if done.returncode == 0:
            problem, data = _run_record_problem(out, expected_files=4)
        if problem is None and done.returncode == 0:
            record = json.loads((out / "zoodesk-run.json").read_text(encoding="utf-8"))
            workers = {str((f.get("worker") or {}).get("address")) for f in record["files"]}
            data["workers"] = len(workers)
            if None in workers or "None" in workers:
                problem = "an input has no worker in the run record"
        return self._check("predict --cluster local:2", done, args, problem, **data)

    def carries_torch(self) -> bool:
        """True for a bundle of the full variant (torch inside)."""
        return (self.bundle / CONTENTS_DIR / "torch").is_dir()

    def check_conversion(self, package: Path, trust_code: bool, images: Sequence[Path]) -> Check:
        """import, convert, test and predict with a package that needs conversion.

        A runtime-only bundle must refuse the conversion with the one line that names
        the full variant instead.
        """
        name = f"convert {package.name}"
        imported = self.run(["models", "import", str(package), "--json"])
        if imported.returncode != 0:
            return self._check(name, imported, ["models", "import", str(package)], None)
        key = json.loads(imported.stdout)["key"]
        args = ["models", "convert", key, "--json", *(["--trust-code"] if trust_code else [])]
        done = self.run(args)
        if not self.carries_torch():
            document = _json_or_empty(done.stdout)
            error = str(document.get("error", ""))
            refused = done.returncode == 1 and "full variant" in error and "\n" not in error
            return Check(
                name=name,
                status="ok" if refused else "failed",
                seconds=round(done.seconds, 3),
                detail="" if refused else f"expected a one-line refusal, got: {done.tail()}",
                command=args,
                data={"message": error},
            )
        result = _json_or_empty(done.stdout)
        problem = None
        if done.returncode == 0 and not (result.get("passed") and result.get("installed")):
            problem = f"the conversion did not pass: {done.stdout.strip()[-500:]}"
        check = self._check(name, done, args, problem, seconds_converting=round(done.seconds, 1))
        if not check.ok:
            return check
        tested = self.check_models_test(key)
        if not tested.ok:
            return tested
        predicted = self.check_predict(key, images, label=f"predict-{package.name}")
        predicted.name = f"{name}, test, predict"
        predicted.seconds = round(check.seconds + tested.seconds + predicted.seconds, 3)
        predicted.data["convert_seconds"] = check.seconds
        return predicted

    def check_export(self, run_dir: Path | None = None) -> Check:
        """``export`` turns a finished run into a package that ``export --check`` accepts.

        The run is the one :meth:`check_predict` wrote, unless another is given.
        """
        run_dir = run_dir or self.workdir / "predict-output"
        package = self.workdir / "export-package"
        # What the archive requires of a study, so that the package is not a draft.
        study = self.workdir / "study.yaml"
        study.write_text(SMOKE_STUDY, encoding="utf-8")
        args = ["export", str(run_dir), "--to", str(package), "--metadata", str(study), "--json"]
        done = self.run(args)
        problem = None
        data: dict[str, Any] = {}
        if done.returncode == 0:
            try:
                result = json.loads(done.stdout)
            except json.JSONDecodeError as exc:
                result, problem = {}, f"--json output is not JSON: {exc}"
            data = {"files": result.get("files"), "failures": result.get("failures")}
            if not problem and (result.get("failures") or not result.get("files")):
                problem = f"export incomplete: {done.stdout.strip()[-500:]}"
            if not problem:
                checked = self.run(["export", "--check", str(package)])
                if checked.returncode != 0:
                    problem = f"export --check found problems: {checked.tail()}"
        return self._check("export", done, args, problem, **data)

    def check_gui(self, timeout: float = GUI_TIMEOUT) -> Check:
        """The desktop entry shows its main window offscreen and quits with exit code 0."""
        return self._gui_check("gui", {"QT_QPA_PLATFORM": "offscreen"}, [], timeout)

    def check_gui_xcb(self, timeout: float = GUI_TIMEOUT) -> Check:
        """The desktop entry shows its main window on the xcb platform (Xvfb) where
        the system lacks the X11 libraries that Qt's xcb plugin needs: the bundle's
        own copies load."""
        name = "gui on xcb, system xcb libraries hidden"
        if not sys.platform.startswith("linux"):
            return Check(name, "skipped", 0.0, "the xcb platform is Linux's")
        hide, note = hiding_prefix(list(BARE_DESKTOP_LACKS))
        if hide is None:
            return Check(name, "skipped", 0.0, note)
        try:
            with XvfbDisplay() as display:
                env = {"QT_QPA_PLATFORM": "xcb", "DISPLAY": display.name}
                check = self._gui_check(name, env, hide, timeout)
        except RuntimeError as exc:
            return Check(name, "skipped", 0.0, str(exc))
        check.data["hidden"] = note
        return check

    def _gui_check(
        self, name: str, env_extra: dict[str, str], outer: list[str], timeout: float
    ) -> Check:
        """Start the desktop entry (inside the ``outer`` command prefix) until it
        reports its main window shown; the check of that run."""
        command = [*outer, *self.prefix, str(self.gui_exe)]
        env = self.environment(**env_extra, **{EXIT_AFTER_SHOWN_VARIABLE: "1"})
        start = time.perf_counter()
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
            cwd=self.workdir,
        )
        # Each line with the time it arrived: the shown line's arrival is the cold start.
        stdout: list[tuple[float, str]] = []
        stderr: list[tuple[float, str]] = []
        readers = [
            threading.Thread(target=_collect, args=(proc.stdout, stdout, start), daemon=True),
            threading.Thread(target=_collect, args=(proc.stderr, stderr, start), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            returncode = -1
        for reader in readers:
            reader.join(timeout=10)
        seconds = time.perf_counter() - start
        text = "".join(line for _, line in stdout + stderr)
        done = Completed(returncode, "".join(line for _, line in stdout),
                         "".join(line for _, line in stderr), seconds)  # fmt: skip
        if returncode != 0 and NO_GUI_MESSAGE in text + _gui_log(self.home):
            return Check(name, "skipped", round(seconds, 3),
                         "this bundle has no desktop application")  # fmt: skip
        arrived, reported = _shown_line(stdout)
        if reported is None:
            # No standard output (a windowed build): the entry script logged it.
            _, reported = _shown_line([(0.0, line) for line in _gui_log(self.home).splitlines()])
        problem = None
        data: dict[str, Any] = {"seconds_to_exit": round(seconds, 3)}
        if returncode == -1:
            problem = (
                f"still running after {timeout:.0f} s: with {EXIT_AFTER_SHOWN_VARIABLE}=1 the "
                f"application must quit once its window is shown; {done.tail()}"
            )
        elif returncode == 0 and reported is None:
            problem = f"exited 0 without printing '{SHOWN_MARKER} <seconds>'"
        if reported is not None:
            data["cold_start_seconds"] = round(arrived if arrived is not None else reported, 3)
            data["reported_seconds"] = reported
        return self._check(name, done, ["(no arguments)"], problem, **data)


def _collect(stream: IO[str] | None, lines: list[tuple[float, str]], start: float) -> None:
    if stream is None:
        return
    for line in stream:
        lines.append((time.perf_counter() - start, line))


def _shown_line(lines: Sequence[tuple[float, str]]) -> tuple[float | None, float | None]:
    """When the shown line arrived, and the seconds it reports (None, None if absent)."""
    for arrived, line in lines:
        words = line.split()
        if len(words) == 2 and words[0] == SHOWN_MARKER:
            try:
                return arrived, float(words[1])
            except ValueError:
                continue
    return None, None


def _gui_log(home: Path) -> str:
    log = home / "logs" / "zoodesk-gui.log"
    try:
        return log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _run_record_problem(
    out: Path, expected_files: int | None = None, outputs_are_folders: bool = False
) -> tuple[str | None, dict]:
    record_path = out / "zoodesk-run.json"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return f"{record_path}: no readable run record ({exc})", {}
    files = record.get("files", [])
    data = {
        "files": len(files),
        "device": record.get("device", {}).get("used"),
        "frozen": record.get("software", {}).get("frozen") == "yes",
        "onnxruntime": record.get("software", {}).get("onnxruntime")
        or record.get("software", {}).get("onnxruntime-gpu")
        or record.get("software", {}).get("onnxruntime-directml"),
    }
    if record.get("status") != "finished":
        return f"{record_path}: status {record.get('status')!r}", data
    if expected_files is not None and len(files) != expected_files:
        return f"{record_path}: {len(files)} files, expected {expected_files}", data
    bad = [f.get("input") for f in files if f.get("status") != "ok"]
    if bad or not files:
        return f"{record_path}: files not ok: {bad or 'none at all'}", data
    present = Path.is_dir if outputs_are_folders else Path.is_file
    missing = [
        o["path"] for f in files for o in f.get("outputs", []) if not present(out / o["path"])
    ]
    if missing:
        return f"{record_path}: outputs missing: {missing}", data
    if not data["frozen"]:
        return f"{record_path}: the record does not say the run was frozen", data
    return None, data


def _objects_problem(out: Path, method: str) -> tuple[str | None, int | None]:
    """What is wrong with the objects of the one input of a run, and their number.

    The run record must say the objects were made with ``method``; the label image,
    the objects table (one row per object, more than :data:`MIN_NUCLEI`) and the
    summary table (one row, with the same count) must be there.
    """
    record_path = out / "zoodesk-run.json"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return f"{record_path}: no readable run record ({exc})", None
    files = record.get("files") or [{}]
    entry = files[0].get("instances") or {}
    if "error" in entry or not entry:
        return f"{record_path}: no objects: {entry.get('error', 'no instances entry')}", None
    used = (entry.get("settings") or {}).get("method")
    if used != method:
        return f"{record_path}: objects made with {used!r}, expected {method!r}", None
    labels, objects = out / str(entry.get("labels")), out / str(entry.get("objects"))
    summary = out / "summary.csv"
    missing = [p.name for p in (labels, objects, summary) if not p.is_file()]
    if missing:
        return f"{out}: missing {', '.join(missing)}", None
    with objects.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    with summary.open(encoding="utf-8", newline="") as f:
        summary_rows = list(csv.DictReader(f))
    count = len(rows)
    if count <= MIN_NUCLEI:
        return f"{objects.name}: {count} objects, expected more than {MIN_NUCLEI}", count
    if entry.get("count") != count:
        return f"{objects.name}: {count} rows, the run record counts {entry.get('count')}", count
    if len(summary_rows) != 1 or summary_rows[0].get("count") != str(count):
        return f"{summary.name}: expected one row counting {count} objects: {summary_rows}", count
    return None, count


def plane_from_npy(source: Path, target: Path) -> None:
    """Write the last two axes of a ``.npy`` array, whose other axes have length 1, as
    a 2D ``.npy`` file (a YX image).

    Standard library only: a ``.npy`` file is a magic string, a header holding a
    Python literal (dtype, order, shape) and the data in C order.
    """
    data = source.read_bytes()
    if data[:6] != b"\x93NUMPY":
        raise ValueError(f"{source}: not a .npy file")
    size_format, start = ("<H", 10) if data[6] == 1 else ("<I", 12)
    (length,) = struct.unpack_from(size_format, data, 8)
    header = ast.literal_eval(data[start : start + length].decode("latin1"))
    shape = tuple(header["shape"])
    if header["fortran_order"] or len(shape) < 2 or math.prod(shape[:-2]) != 1:
        raise ValueError(f"{source}: expected one C-ordered plane, not shape {shape}")
    text = repr({"descr": header["descr"], "fortran_order": False, "shape": shape[-2:]})
    # Format 1.0: the data start at a multiple of 64 bytes; the header ends with "\n".
    padding = -(10 + len(text) + 1) % 64
    new_header = (text + " " * padding + "\n").encode("latin1")
    target.write_bytes(
        b"\x93NUMPY\x01\x00" + struct.pack("<H", len(new_header)) + new_header
        + data[start + length :]
    )  # fmt: skip


def _json_or_empty(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def conversion_packages(workdir: Path, python: str) -> tuple[list[Path], str | None]:
    """Build the conversion packages with ``python`` (which needs torch).

    Returns the packages, or none and the reason they could not be built.
    """
    out = workdir / "conversion-packages"
    kinds = ["torchscript-tuple", "state-dict"]
    command = [python, str(ROOT / "tools" / "conversion_packages.py"), str(out)]
    for kind in kinds:
        command += ["--kind", kind]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"cannot build the conversion packages: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [], f"cannot build the conversion packages with {python}: {last}"
    return [out / kind for kind in kinds], None


def folder_size(folder: Path) -> int:
    """Bytes of all regular files under ``folder`` (links not followed)."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def demo_resources(bundle: Path) -> tuple[Path, list[Path]]:
    """The bundle's own demo model folder and sample images."""
    demo = bundle / CONTENTS_DIR / "zoodesk" / "resources" / "demo"
    images = sorted(
        p for p in (demo / "samples").glob("*") if p.suffix.lower() in {".tif", ".tiff"}
    )
    return demo / "model", images


def run_all(
    bundle: Path,
    workdir: Path,
    models: Sequence[Path | str] = (),
    expected_version: str | None = None,
    gui: bool = True,
    isolate: bool = True,
    packages_python: str | None = None,
) -> tuple[list[Check], str]:
    """Run every check; return them and the note on network isolation."""
    smoke = BundleSmoke(bundle, workdir, isolate=isolate)
    demo_model, samples = demo_resources(smoke.bundle)
    if not models:
        models = [demo_model] + ([NUCLEI_MODEL] if NUCLEI_MODEL.is_dir() else [])
    checks = [smoke.check_layout(), smoke.check_version(expected_version), smoke.check_devices()]
    checks.append(smoke.check_demo())
    checks += [smoke.check_models_test(m) for m in models]
    checks.append(smoke.check_predict(models[-1], samples))
    checks.append(smoke.check_vendor_formats(models[-1]))
    checks.append(smoke.check_ome_zarr(models[-1]))
    checks.append(smoke.check_export())
    if NUCLEI_MODEL.is_dir():
        checks.append(smoke.check_instances(NUCLEI_MODEL))
        checks.append(smoke.check_measure())
        checks.append(smoke.check_cluster(NUCLEI_MODEL))
    else:
        checks.append(Check("instances", "skipped", 0.0, f"no {NUCLEI_MODEL}"))
    packages, why_not = conversion_packages(workdir, packages_python or sys.executable)
    if why_not:
        checks.append(Check("conversion", "skipped", 0.0, why_not))
    for package in packages:
        trust = package.name.startswith("state-dict")
        checks.append(smoke.check_conversion(package, trust, samples))
    if gui:
        checks.append(smoke.check_gui())
        checks.append(smoke.check_gui_xcb())
    return checks, smoke.network_note


def _print_checks(checks: Sequence[Check], note: str) -> None:
    print(note)
    for c in checks:
        extra = ", ".join(
            f"{k}={v}" for k, v in c.data.items() if k.endswith("seconds") or k == "bundle_bytes"
        )
        print(f"{c.status.upper():7s} {c.name:40s} {c.seconds:7.2f} s  {extra}")
        if c.detail:
            print("        " + c.detail.replace("\n", "\n        "))
    failed = sum(1 for c in checks if c.status == "failed")
    skipped = sum(1 for c in checks if c.status == "skipped")
    passed = sum(1 for c in checks if c.ok)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the smoke test; exit code 0 when no check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", type=Path, default=DEFAULT_BUNDLE,
                        help="the bundle folder (default: dist/zoodesk)")  # fmt: skip
    parser.add_argument("--model", action="append", default=[], metavar="PATH",
                        help="model to test and predict with (repeatable; default: the demo "
                        "model and ../shared's nuclei model when present)")  # fmt: skip
    parser.add_argument("--expect-version", default=None, help="version --version must print")
    parser.add_argument("--no-gui", action="store_true", help="leave out the desktop check")
    parser.add_argument("--packages-python", default=None, metavar="PYTHON",
                        help="Python with torch that builds the conversion packages "
                        "(default: the one running this script)")  # fmt: skip
    parser.add_argument("--no-isolate", action="store_true", help="keep the network")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the results as JSON")  # fmt: skip
    args = parser.parse_args(argv)
    if not (args.bundle / f"zoodesk-cli{EXE_SUFFIX}").is_file():
        print(f"{args.bundle}: no zoodesk-cli{EXE_SUFFIX} here; build the bundle first")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="zoodesk-smoke-"))
    try:
        checks, note = run_all(
            args.bundle,
            workdir,
            models=[Path(m).resolve() for m in args.model],
            expected_version=args.expect_version,
            gui=not args.no_gui,
            isolate=not args.no_isolate,
            packages_python=args.packages_python,
        )
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    _print_checks(checks, note)
    if args.json:
        args.json.write_text(
            json.dumps({"network": note, "checks": [asdict(c) for c in checks]}, indent=2) + "\n",
            encoding="utf-8",
        )
    return 1 if any(c.status == "failed" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
