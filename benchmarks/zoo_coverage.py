"""Zoo coverage: which model packages ZooDesk runs, measured on this machine.

Takes a folder of model packages (default: ``../shared/zoo-models``, real zoo
packages) and runs each, as a user would, through

1. import into a fresh model cache (``zoodesk models import``);
2. conversion to ONNX where the package has no ONNX weights (``zoodesk models
   convert``; state dicts only with ``--trust-code``, which gives the consent to run
   their architecture code);
3. the model's own test on the CPU (``zoodesk models test``).

and prints one row per package: model, format version, weights, what was done,
pass or fail, the largest difference from the declared test outputs, seconds, and
for every failure the one-line reason ZooDesk gave.

Usage::

    .venv/bin/python benchmarks/zoo_coverage.py [FOLDER] [--trust-code]
        [--device cpu] [--home DIR] [--json bench-results/zoo_coverage.json]

The cache lives in a temporary ZOODESK_HOME unless ``--home`` names one.  Nothing in
FOLDER is changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = REPO.parent / "shared" / "zoo-models"


@dataclass
class Row:
    """One package's outcome."""

    model: str
    format_version: str = "?"
    weights: str = ""
    done: str = ""
    passed: bool = False
    max_abs_diff: float | None = None
    seconds: float = 0.0
    reason: str = ""


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines) or type(exc).__name__


def _format_version(description: Path) -> str:
    from zoodesk.models.description import read_description_data

    try:
        return str(read_description_data(description).get("format_version", "?"))
    except Exception:
        return "?"


def cover(folder: Path, trust_code: bool, device: str) -> Row:
    """Import, convert where needed, and test one package; never raises."""
    from zoodesk.conversion.pipeline import ConversionTestError, convert
    from zoodesk.errors import ZooDeskError
    from zoodesk.inference.reproducibility import run_reproducibility_test
    from zoodesk.models.cache import ModelCache
    from zoodesk.models.compat import compatibility_of_package
    from zoodesk.models.package import find_description

    row = Row(model=folder.name)
    start = time.perf_counter()
    try:
        row.format_version = _format_version(find_description(folder))
        row.done = "import"
        cached = ModelCache.from_settings().import_package(folder)
        package = cached.load()
        declared = list(package.spec.weights)
        present = set(cached.weights_formats)
        row.weights = ", ".join(f if f in present else f"{f} (missing)" for f in declared)
        if "onnx" in present:
            row.done = "import, test"
            report = run_reproducibility_test(package, device=device, weights_format="onnx")
        else:
            compat = compatibility_of_package(package, present)
            if compat.weights_format is None:
                missing = [n for n in cached.notes if "weights" in n] or [compat.reason]
                raise ZooDeskError("; ".join(missing))
            row.done = f"import, convert {compat.weights_format}, test"
            try:
                result = convert(cached.key, trust_code=trust_code, device=device)
            except ConversionTestError as exc:
                result = exc.result
            report = result.test
        row.passed = bool(report.passed)
        row.max_abs_diff = max((o.max_abs_diff for o in report.outputs), default=None)
        if not row.passed:
            row.reason = "; ".join(
                f"{o.output_id}: {o.message or f'max abs diff {o.max_abs_diff:.3g}'}"
                for o in report.outputs
                if not o.passed
            )
    except ZooDeskError as exc:
        row.reason = _one_line(exc)
    except Exception as exc:  # a defect: the table still shows it
        row.reason = f"unexpected {type(exc).__name__}: {_one_line(exc)}"
    row.seconds = time.perf_counter() - start
    return row


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| model | format | weights | done | result | max abs diff | s | reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = f"{r.max_abs_diff:.2g}" if r.max_abs_diff is not None else "-"
        lines.append(
            f"| {r.model} | {r.format_version} | {r.weights or '-'} | {r.done} | "
            f"{'pass' if r.passed else 'FAIL'} | {diff} | {r.seconds:.1f} | "
            f"{r.reason.replace('|', '/') or '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument(
        "--trust-code",
        action="store_true",
        help="consent to run the architecture code of state-dict packages",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--home", type=Path, default=None, help="ZOODESK_HOME to use")
    parser.add_argument("--json", type=Path, default=REPO / "bench-results" / "zoo_coverage.json")
    args = parser.parse_args(argv)
    home = args.home or Path(tempfile.mkdtemp(prefix="zoodesk-coverage-"))
    os.environ["ZOODESK_HOME"] = str(home)
    packages = sorted(p for p in args.folder.iterdir() if p.is_dir())
    rows = []
    for folder in packages:
        print(f"{folder.name} ...", file=sys.stderr, flush=True)
        rows.append(cover(folder, args.trust_code, args.device))
    print(table(rows))
    passed = sum(r.passed for r in rows)
    print(f"\n{passed} of {len(rows)} packages passed their own test; cache: {home}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
