"""Feed mutated model packages, bundles and images to ZooDesk's command line.

Each case takes one of four real inputs, changes it at random, and runs the commands a
user would run on it:

* ``description``: the nuclei model's folder with its ``bioimageio.yaml`` mutated,
  then ``models import``, and where that succeeds ``models test`` and ``predict``;
* ``zip``: the nuclei model as a zip with bytes flipped, members renamed or the file
  cut short, then ``models import`` and ``predict --model X.zip``;
* ``bundle``: a real ``bundle export`` whose manifest has a value replaced, then
  ``bundle import``;
* ``tiff``: a TIFF with bytes of its header and first IFD changed, in a folder beside a
  good image, then ``predict``.

After every case it checks what a user must be able to rely on: no traceback and no
"unexpected error" on stderr; nothing written anywhere but ZOODESK_HOME and the
output folder (the rest of the work folder and the temporary folder are compared
before and after); the inputs unchanged.  The peak memory of the whole run is
reported.  The mutations come from a seeded generator, so a failing case is
reproduced by its seed and number.

Usage::

    python tools/fuzz_inputs.py --seconds 60 --seed 1 --work /tmp/fuzz

It prints one JSON document: the number of cases run per kind, the peak RSS and the
failures (each with its case, command and what went wrong).  Exit status 1 when
anything failed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NUCLEI = REPO.parent / "shared" / "zoo-models" / "unet2d_nuclei_broad"
PACKAGE_FILES = (
    "bioimageio.yaml",
    "README.md",
    "cover0.png",
    "environment.yaml",
    "test_input.npy",
    "test_output.npy",
    "weights.onnx",
    "weights.pt",
)

# Values that have broken parsers and path handling elsewhere.
HOSTILE_SCALARS: tuple[Any, ...] = (
    -1,
    0,
    10**12,
    1e308,
    float("nan"),
    "",
    "../../../../etc/hostname",
    "/etc/hostname",
    "C:\\Windows\\win.ini",
    "x" * 5000,
    "a\nb",
    None,
    True,
    [],
    {},
    [[[[[[[[[[]]]]]]]]]],
)
HOSTILE_YAML = (
    "-1",
    "0",
    "1000000000000",
    "1e308",
    ".nan",
    "''",
    "../../../../etc/hostname",
    "/etc/hostname",
    "null",
    "[]",
    "{}",
    "&a [*a]",
    "*undefined",
    "[" * 200 + "]" * 200,
    "!!python/object/apply:os.system ['echo pwned']",
    "'\x00'",
    "x" * 5000,
)
HOSTILE_MEMBER_NAMES = (
    "../escape.txt",
    "/absolute.txt",
    "a\\..\\..\\b.txt",
    "",
    ".",
    "x" * 300,
    "bioimageio.yaml/inner",
    "weights.onnx",
    "CON",
    "dir/",
)


@dataclass
class Failure:
    """What went wrong in one case."""

    case: int
    kind: str
    command: list[str]
    problem: str
    stderr: str = ""


@dataclass
class Fuzzer:
    """The work folder, the seeded generator and what the cases found."""

    work: Path
    rng: random.Random
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    commands: int = 0
    #: The input of the case being run (kept when the case fails).
    current_input: Path | None = None
    #: The cache key of the unchanged nuclei model (imported by :meth:`prepare`).
    base_key: str = ""

    @property
    def home(self) -> Path:
        return self.work / "home"

    @property
    def inputs(self) -> Path:
        return self.work / "inputs"

    @property
    def scratch(self) -> Path:
        return self.work / "tmp"

    # --- running the command line ----------------------------------------------------

    def run(
        self, case: int, kind: str, argv: list[str], output: Path | None = None
    ) -> tuple[int, str]:
        """Run one command in this process, check what it left behind; exit code, stdout."""
        from zoodesk.cli import main

        self.commands += 1
        skip = (self.home, self.work / "failed", output)
        before = _tree(self.work, skip)
        err = io.StringIO()
        out = io.StringIO()
        code: int | str | None
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
        except BaseException as exc:  # anything escaping main is a defect
            self.fail(case, kind, argv, f"{type(exc).__name__} escaped main: {exc}", "")
            return 1, ""
        stderr = err.getvalue()
        if "Traceback" in stderr:
            self.fail(case, kind, argv, "a traceback reached stderr", stderr)
        elif "unexpected error" in stderr:
            self.fail(case, kind, argv, "an unexpected error reached stderr", stderr)
        after = _tree(self.work, skip)
        if after != before:
            changed = sorted({name for name, _ in set(after.items()) ^ set(before.items())})
            self.fail(case, kind, argv, f"wrote outside home and output: {changed[:5]}", stderr)
            # Start the next case from a clean state.
            for name in set(after) - set(before):
                path = self.work / name
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        exit_code = code if isinstance(code, int) else (0 if code is None else 1)
        return exit_code, out.getvalue()

    def fail(self, case: int, kind: str, argv: list[str], problem: str, stderr: str) -> None:
        self.failures.append(Failure(case, kind, list(argv), problem, stderr[-2000:]))
        # Keep the input that did it, for the report and a rerun by hand.
        kept = self.work / "failed" / f"case-{case}"
        if self.current_input is not None and self.current_input.exists() and not kept.exists():
            if self.current_input.is_dir():
                shutil.copytree(self.current_input, kept)
            else:
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.current_input, kept)

    # --- the four kinds of input -----------------------------------------------------

    def description_case(self, case: int) -> None:
        folder = self.inputs / f"package-{case}"
        folder.mkdir()
        for name in PACKAGE_FILES:
            if name != "bioimageio.yaml":
                os.link(self.inputs / "base" / name, folder / name)
        text = (NUCLEI / "bioimageio.yaml").read_text(encoding="utf-8")
        (folder / "bioimageio.yaml").write_text(self.mutate_yaml(text), encoding="utf-8")
        self.current_input = folder
        try:
            key = self.import_key(case, "description", str(folder))
            if key:
                self.run(case, "description", ["models", "test", key])
                self.predict(case, "description", key)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def zip_case(self, case: int) -> None:
        archive = self.inputs / f"model-{case}.zip"
        archive.write_bytes(self.mutate_zip((self.inputs / "base.zip").read_bytes()))
        self.current_input = archive
        try:
            self.import_key(case, "zip", str(archive))
            self.predict(case, "zip", str(archive))
        finally:
            archive.unlink(missing_ok=True)

    def bundle_case(self, case: int) -> None:
        bundle = self.inputs / f"bundle-{case}.zdbundle"
        bundle.write_bytes(self.mutate_bundle((self.inputs / "base.zdbundle").read_bytes()))
        self.current_input = bundle
        try:
            self.run(case, "bundle", ["bundle", "import", str(bundle)])
        finally:
            bundle.unlink(missing_ok=True)

    def tiff_case(self, case: int) -> None:
        folder = self.inputs / f"images-{case}"
        folder.mkdir()
        good = (self.inputs / "base.tif").read_bytes()
        (folder / "good.tif").write_bytes(good)
        (folder / "mutated.tif").write_bytes(self.mutate_tiff(good))
        self.current_input = folder
        try:
            self.predict(case, "tiff", self.base_key, images=folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def import_key(self, case: int, kind: str, path: str) -> str | None:
        """Import ``path``; the cache key when it was imported."""
        code, stdout = self.run(case, kind, ["models", "import", "--json", path])
        if code != 0:
            return None
        try:
            document = json.loads(stdout)
        except ValueError:
            self.fail(case, kind, ["models", "import", "--json", path], "printed no JSON", "")
            return None
        key = document.get("key") or (document.get("model") or {}).get("key")
        return str(key) if key else None

    def predict(self, case: int, kind: str, model: str, images: Path | None = None) -> None:
        output = self.work / f"out-{case}"
        try:
            self.run(
                case,
                kind,
                [
                    "predict",
                    "--model",
                    model,
                    "--input",
                    str(images or self.inputs / "images"),
                    "--output",
                    str(output),
                ],
                output=output,
            )
        finally:
            shutil.rmtree(output, ignore_errors=True)

    # --- mutations --------------------------------------------------------------------

    def mutate_yaml(self, text: str) -> str:
        lines = text.splitlines()
        for _ in range(self.rng.randint(1, 3)):
            how = self.rng.randrange(5)
            index = self.rng.randrange(len(lines))
            if how == 0 and ":" in lines[index]:
                key, _, _value = lines[index].partition(":")
                lines[index] = f"{key}: {self.rng.choice(HOSTILE_YAML)}"
            elif how == 1:
                del lines[index]
            elif how == 2:
                lines.insert(index, lines[self.rng.randrange(len(lines))])
            elif how == 3:
                line = lines[index]
                if line:
                    at = self.rng.randrange(len(line))
                    lines[index] = line[:at] + chr(self.rng.randrange(32, 127)) + line[at + 1 :]
            else:
                lines = lines[:index]
                if not lines:
                    lines = ["x"]
        return "\n".join(lines) + "\n"

    def mutate_bytes(self, data: bytes, region: tuple[int, int]) -> bytes:
        buffer = bytearray(data)
        start, stop = region
        for _ in range(self.rng.randint(1, 8)):
            at = self.rng.randrange(start, min(stop, len(buffer)))
            buffer[at] = self.rng.randrange(256)
        return bytes(buffer)

    def mutate_zip(self, data: bytes) -> bytes:
        how = self.rng.randrange(4)
        if how == 0:  # the central directory and the end record
            return self.mutate_bytes(data, (max(0, len(data) - 1500), len(data)))
        if how == 1:  # anywhere, local headers included
            return self.mutate_bytes(data, (0, len(data)))
        if how == 2:
            return data[: self.rng.randrange(len(data))]
        members: list[tuple[str, bytes]] = []
        with zipfile.ZipFile(io.BytesIO(data)) as source:
            for info in source.infolist():
                members.append((info.filename, source.read(info)))
        index = self.rng.randrange(len(members))
        members.append((self.rng.choice(HOSTILE_MEMBER_NAMES), members[index][1][:64]))
        return _zip_of(members)

    def mutate_bundle(self, data: bytes) -> bytes:
        members: list[tuple[str, bytes]] = []
        with zipfile.ZipFile(io.BytesIO(data)) as source:
            for info in source.infolist():
                members.append((info.filename, source.read(info)))
        json_members = [i for i, (name, _) in enumerate(members) if name.endswith(".json")]
        index = self.rng.choice(json_members)
        name, raw = members[index]
        document = json.loads(raw)
        for _ in range(self.rng.randint(1, 3)):
            document = _replace_leaf(document, self.rng, self.rng.choice(HOSTILE_SCALARS))
        members[index] = (name, json.dumps(document).encode())
        return _zip_of(members)

    def mutate_tiff(self, data: bytes) -> bytes:
        how = self.rng.randrange(3)
        if how == 0:
            return self.mutate_bytes(data, (0, 16))
        if how == 1:
            first_ifd = int.from_bytes(data[4:8], "little")
            return self.mutate_bytes(data, (first_ifd, first_ifd + 2 + 12 * 20))
        return data[: self.rng.randrange(8, len(data))]

    # --- set-up ------------------------------------------------------------------------

    def prepare(self) -> None:
        import numpy as np
        import tifffile

        from zoodesk.cli import main

        base = self.inputs / "base"
        base.mkdir(parents=True)
        for name in PACKAGE_FILES:
            shutil.copyfile(NUCLEI / name, base / name)
        (self.inputs / "base.zip").write_bytes(
            _zip_of([(name, (base / name).read_bytes()) for name in PACKAGE_FILES])
        )
        pixels = np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)
        tifffile.imwrite(self.inputs / "base.tif", pixels)
        (self.inputs / "images").mkdir()
        tifffile.imwrite(self.inputs / "images" / "cells.tif", pixels)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            if main(["models", "import", "--json", str(base)]) != 0:
                raise SystemExit("fuzz: the unchanged nuclei model does not import")
            document = json.loads(out.getvalue())
            self.base_key = str(document.get("key") or document["model"]["key"])
            bundle = self.inputs / "base.zdbundle"
            if main(["bundle", "export", "--model", self.base_key, str(bundle)]) != 0:
                raise SystemExit("fuzz: the unchanged nuclei model does not export as a bundle")


def _zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


def _replace_leaf(document: Any, rng: random.Random, value: Any) -> Any:
    """``document`` with one of its values (chosen at random) replaced by ``value``."""
    if isinstance(document, dict) and document and rng.random() < 0.85:
        key = rng.choice(list(document))
        document[key] = _replace_leaf(document[key], rng, value)
        return document
    if isinstance(document, list) and document and rng.random() < 0.85:
        index = rng.randrange(len(document))
        document[index] = _replace_leaf(document[index], rng, value)
        return document
    return value


def _tree(root: Path, skip: tuple[Path | None, ...]) -> dict[str, str]:
    """Every entry under ``root`` (outside ``skip``) with its size and modification time."""
    skipped = {p for p in skip if p is not None}
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skipped]
        for name in files:
            with contextlib.suppress(OSError):
                stat = (here / name).lstat()
                found[str((here / name).relative_to(root))] = f"{stat.st_size}:{stat.st_mtime_ns}"
        for name in dirs:
            found[str((here / name).relative_to(root)) + "/"] = "dir"
    return found


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


@contextlib.contextmanager
def _environment(work: Path) -> Iterator[None]:
    """ZOODESK_HOME and the temporary folder inside ``work``; the working directory too."""
    saved = dict(os.environ)
    cwd = Path.cwd()
    os.environ["ZOODESK_HOME"] = str(work / "home")
    os.environ["TMPDIR"] = str(work / "tmp")
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = None  # picks up TMPDIR
    os.chdir(work)
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
        tempfile.tempdir = None


def fuzz(work: Path, seconds: float, seed: int) -> dict[str, Any]:
    """Run cases for about ``seconds``; what they found, as a JSON-ready document."""
    work.mkdir(parents=True, exist_ok=True)
    fuzzer = Fuzzer(work=work, rng=random.Random(seed))
    kinds: dict[str, Callable[[int], None]] = {
        "description": fuzzer.description_case,
        "zip": fuzzer.zip_case,
        "bundle": fuzzer.bundle_case,
        "tiff": fuzzer.tiff_case,
    }
    with _environment(work):
        fuzzer.prepare()
        shared_before = _digests(NUCLEI)
        deadline = time.monotonic() + seconds
        case = 0
        while time.monotonic() < deadline:
            kind = list(kinds)[case % len(kinds)]
            kinds[kind](case)
            fuzzer.counts[kind] = fuzzer.counts.get(kind, 0) + 1
            case += 1
        if _digests(NUCLEI) != shared_before:
            fuzzer.fail(-1, "inputs", [], "the shared nuclei package changed", "")
    peak = peak_rss_bytes()
    return {
        "seed": seed,
        "cases": sum(fuzzer.counts.values()),
        "commands": fuzzer.commands,
        "cases_by_kind": fuzzer.counts,
        "peak_rss_bytes": peak,
        "failures": [f.__dict__ for f in fuzzer.failures],
    }


def peak_rss_bytes() -> int:
    """This program's peak resident memory: ``VmHWM`` where ``/proc`` has it.

    ``ru_maxrss`` would do elsewhere, but on Linux it survives ``exec``: a process
    started from a large one (a test runner that held big images) reports its
    parent's peak as its own.  ``VmHWM`` is the peak of this program's memory only.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run cases")
    parser.add_argument("--seed", type=int, default=1, help="seed of the mutations")
    parser.add_argument("--work", type=Path, required=True, help="empty folder to work in")
    args = parser.parse_args(argv)
    if args.work.exists() and any(args.work.iterdir()):
        parser.error(f"{args.work} is not empty")
    report = fuzz(args.work.resolve(), args.seconds, args.seed)
    json.dump(report, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
