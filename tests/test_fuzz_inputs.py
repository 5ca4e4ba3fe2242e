"""Mutated model packages, bundles and images never crash ZooDesk (tools/fuzz_inputs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

#: How long the cases run; the driver runs longer by hand (``--seconds``).
FUZZ_SECONDS = 45
#: Address space and peak resident memory the whole run must stay under.
ADDRESS_SPACE_CAP = 6 * 2**30
RSS_CAP = 1536 * 2**20


@pytest.mark.slow
def test_mutated_inputs_give_clear_lines_write_nothing_stray_and_stay_small(
    tmp_path: Path,
) -> None:
    """Import, test and predict on mutated descriptions, zips, bundle manifests and
    TIFF headers: no traceback or "unexpected error" on stderr, nothing written outside
    ZOODESK_HOME and the output folder (HOME and TMPDIR included), memory capped."""
    cap = (
        "import resource, runpy, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE_CAP}, {ADDRESS_SPACE_CAP}))\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    home = tmp_path / "user-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOODESK_", "ORT_"))}
    env["HOME"] = str(home)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            cap,
            str(REPO / "tools" / "fuzz_inputs.py"),
            "--seconds",
            str(FUZZ_SECONDS),
            "--seed",
            "20261201",
            "--work",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=FUZZ_SECONDS + 240,
    )
    assert done.stdout, done.stderr
    report = json.loads(done.stdout)
    counts = report["cases_by_kind"]
    print(f"fuzz: {report['cases']} cases, {report['commands']} commands: {counts}")
    assert report["failures"] == [], json.dumps(report["failures"], indent=1)[:4000]
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(report["cases_by_kind"]) == {"description", "zip", "bundle", "tiff"}
    assert report["peak_rss_bytes"] < RSS_CAP
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == []
