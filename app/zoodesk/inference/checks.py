"""Remembering reproducibility-test results, so the model library can show them.

A result belongs to one exact description file: it is stored under the sha256 of
the description (``ZOODESK_HOME/checks/<sha256>.json``), so adding converted weights
or re-importing a changed package shows the model as untested again.  Results are
kept per device (``cpu``, ``cuda``, ``directml``...): a model that passed on the CPU
has not shown that it runs on the GPU.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from zoodesk.fileutils import atomic_write_text, sha256_file
from zoodesk.models.package import ModelPackage
from zoodesk.settings import Settings, load_settings

if TYPE_CHECKING:
    # Only for annotations: the reproducibility test records its results here.
    from zoodesk.inference.reproducibility import TestReport

CHECKS_DIR = "checks"


@dataclass(frozen=True)
class TestStatus:
    """The outcome of the last reproducibility test of one description.

    Attributes
    ----------
    passed
        True when every output matched its test tensor within the tolerances.
    device, weights_format
        What ran.
    tested_at
        UTC time of the test, ISO 8601.
    summary
        One readable line, e.g. ``"passed on cpu (onnx): max abs diff 2.1e-06"``.
    description_sha256
        The description the result belongs to.
    """

    passed: bool
    device: str
    weights_format: str
    tested_at: str
    summary: str
    description_sha256: str


def summarize_report(report: TestReport) -> str:
    """One readable line about a test report (verdict, device, worst difference)."""
    verdict = "passed" if report.passed else "FAILED"
    worst = max((o.max_abs_diff for o in report.outputs), default=0.0)
    failing = [o.output_id for o in report.outputs if not o.passed]
    text = f"{verdict} on {report.device} ({report.weights_format}): max abs diff {worst:.3g}"
    if failing:
        text += f"; outputs differing: {', '.join(failing)}"
    return text


def _status_path(settings: Settings, description_sha256: str) -> Path:
    return settings.home / CHECKS_DIR / f"{description_sha256}.json"


def record_test_report(
    package: ModelPackage, report: TestReport, settings: Settings | None = None
) -> TestStatus:
    """Store the result of a reproducibility test of ``package``; return it.

    Parameters
    ----------
    package
        The package that was tested.
    report
        What :func:`zoodesk.inference.reproducibility.run_reproducibility_test` returned.
    settings
        Where ZOODESK_HOME is (default: :func:`load_settings`).
    """
    settings = settings or load_settings()
    sha = sha256_file(package.description_path)
    status = TestStatus(
        passed=report.passed,
        device=report.device,
        weights_format=report.weights_format,
        tested_at=datetime.now(UTC).isoformat(timespec="seconds"),
        summary=summarize_report(report),
        description_sha256=sha,
    )
    statuses = test_statuses(package.description_path, settings)
    statuses[status.device] = status
    document = {"devices": {device: asdict(st) for device, st in sorted(statuses.items())}}
    atomic_write_text(_status_path(settings, sha), json.dumps(document, indent=2))
    return status


def test_statuses(
    description: Path | ModelPackage, settings: Settings | None = None
) -> dict[str, TestStatus]:
    """The stored results for this description file, by device (empty: never tested).

    An unreadable status file counts as never tested: the test is cheap to repeat.
    """
    settings = settings or load_settings()
    path = description.description_path if isinstance(description, ModelPackage) else description
    try:
        sha = sha256_file(Path(path))
        data = json.loads(_status_path(settings, sha).read_text(encoding="utf-8"))
        entries = data["devices"] if "devices" in data else {data["device"]: data}
        return {str(device): TestStatus(**entry) for device, entry in entries.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def last_test_status(
    description: Path | ModelPackage, settings: Settings | None = None
) -> TestStatus | None:
    """The most recent stored result for this description file, on any device.

    None when it was never tested (or the stored result cannot be read).
    """
    statuses = test_statuses(description, settings)
    return max(statuses.values(), key=lambda st: st.tested_at, default=None)
