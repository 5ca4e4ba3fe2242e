"""What ZooDesk can do, measured: ``models report`` and ``benchmarks/zoo_coverage.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED
from zoodesk.cli import main

REPO = Path(__file__).resolve().parents[1]
ZOO = SHARED / "zoo-models"


def _report(capsys: pytest.CaptureFixture) -> dict:
    assert main(["models", "report", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_keeps_tested_here_apart_from_expected(
    nuclei_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["models", "import", str(nuclei_dir)]) == 0
    assert main(["models", "import", str(ZOO / "unet2d_fixed_shape")]) == 0
    capsys.readouterr()
    rows = {r["name"]: r for r in _report(capsys)["models"]}
    nuclei, fixed = rows["UNet 2D Nuclei Broad"], rows["Fixed-shape"]
    # Expected to run, but nothing has run here yet.
    assert nuclei["here"]["verdict"] == "runs" and nuclei["tested_here"] == {}
    assert fixed["here"]["verdict"] == "cannot run"
    assert "unet.py" in fixed["here"]["label"]

    assert main(["models", "test", nuclei["model"], "--device", "cpu"]) == 0
    capsys.readouterr()
    report = _report(capsys)
    tested = {r["name"]: r["tested_here"] for r in report["models"]}
    assert tested["UNet 2D Nuclei Broad"]["cpu"]["passed"] is True
    assert tested["Fixed-shape"] == {}
    assert report["totals"]["passed_test_here"] == 1


def test_catalogue_report_says_what_this_installation_does(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "report", "--snapshot", str(SHARED / "zoo-snapshot"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    verdicts = {r["here"]["verdict"] for r in report["models"]}
    assert verdicts <= {
        "runs",
        "converts here",
        "needs the full variant",
        "needs the convert extra",
        "needs TensorFlow",
        "cannot run",
    }
    assert report["totals"]["models"] == 137
    assert report["totals"]["run"] == 5
    # The TensorFlow-only models are told apart from those that cannot run at all.
    assert report["totals"]["convert-tensorflow"] == 13


@pytest.mark.slow
def test_zoo_coverage_prints_one_row_per_package_with_its_reason(tmp_path: Path) -> None:
    folder = tmp_path / "packages"
    folder.mkdir()
    for name in ("unet2d_nuclei_broad", "tiktorch_unet2d_onnx_v0_3", "unet2d_keras_tf"):
        (folder / name).symlink_to(ZOO / name, target_is_directory=True)
    out = tmp_path / "coverage.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "zoo_coverage.py"),
            str(folder),
            "--json",
            str(out),
            "--home",
            str(tmp_path / "home"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = {r["model"]: r for r in json.loads(out.read_text())}
    assert rows["unet2d_nuclei_broad"]["passed"] is True
    assert rows["unet2d_nuclei_broad"]["max_abs_diff"] < 1e-4
    assert "0.3.0" in rows["tiktorch_unet2d_onnx_v0_3"]["reason"]
    assert "keras_weights.hdf5" in rows["unet2d_keras_tf"]["reason"]
    assert all("\n" not in r["reason"] for r in rows.values())
    assert "| unet2d_nuclei_broad | 0.5.4 |" in done.stdout
