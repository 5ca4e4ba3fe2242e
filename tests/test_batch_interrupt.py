"""Runs killed (SIGKILL) or interrupted (Ctrl-C, SIGINT) part-way, then run again.

``zoodesk predict`` runs in a subprocess whose output is redirected, so it prints
one line per finished file; the signal is sent after the first finished file (plus
a delay, to land at different moments: reading, computing, writing, renaming,
saving the record).  The same command run again must finish with outputs identical
to those of an uninterrupted run and no temporary file left anywhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.batch_helpers import leftovers
from zoodesk.batch.record import RunRecord
from zoodesk.cli import main
from zoodesk.demo import demo_model_path
from zoodesk.fileutils import sha256_file
from zoodesk.images import read_image

RECORD = "zoodesk-run.json"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mixed sizes; the largest (above 1 megapixel) is processed block by block."""
    folder = tmp_path_factory.mktemp("acquisition")
    rng = np.random.default_rng(11)
    sizes = [(160, 200), (512, 384), (96, 128), (300, 300), (448, 512), (200, 96)] * 3
    sizes.insert(4, (1100, 1000))
    for i, shape in enumerate(sizes):
        pixels = (rng.random(shape) * 3000).astype(np.uint16)
        tifffile.imwrite(folder / f"img_{i:02d}.tif", pixels)
    return folder


def _command(images: Path, out: Path, *extra: str) -> list[str]:
    return [
        "predict", "-m", str(demo_model_path()), "-i", str(images), "-o", str(out),
        "--device", "cpu", "--settle-seconds", "0", "--stream-above", "1", *extra,
    ]  # fmt: skip


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "zoodesk.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200"},
    )


def _wait_for_finished_files(process: subprocess.Popen[str], count: int = 1) -> list[str]:
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if sum("] ok " in s for s in seen) >= count:
            return seen
    pytest.fail(f"the run ended before finishing {count} file(s): {''.join(seen)}")


# Small blocks make every file take many session calls, so that there is time to
# interrupt the run at various points even on a fast machine.
SLOW = ("--tile", "64", "64")


@pytest.fixture(scope="module")
def reference(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    assert main([*_command(images, out, *SLOW), "--quiet"]) == 0
    return out


def _assert_same_results(out: Path, reference: Path) -> None:
    record = RunRecord.load(out / RECORD)
    expected = RunRecord.load(reference / RECORD)
    assert len(record.files) == len(expected.files)
    for entry in record.files:
        assert entry.status in ("ok", "skipped"), entry.error
        for output in entry.outputs:
            path = out / output.path
            assert sha256_file(path) == output.sha256
            got = read_image(path)
            want = read_image(reference / output.path)
            assert got.axes == want.axes
            np.testing.assert_array_equal(np.asarray(got.array), np.asarray(want.array))
    assert sorted(p.name for p in out.glob("*.ome.tif")) == sorted(
        p.name for p in reference.glob("*.ome.tif")
    )
    assert leftovers(out) == []


@pytest.mark.parametrize(("files", "delay"), [(1, 0.0), (3, 0.03), (6, 0.01), (9, 0.05)])
def test_a_run_killed_at_any_moment_finishes_correctly_when_run_again(
    images: Path, reference: Path, tmp_path: Path, files: int, delay: float
) -> None:
    out = tmp_path / "out"
    process = _start(_command(images, out, *SLOW))
    _wait_for_finished_files(process, files)
    time.sleep(delay)
    process.kill()
    process.wait()
    assert process.returncode == -signal.SIGKILL
    record = RunRecord.load(out / RECORD)
    assert record.status == "running"
    # The same command again: finishes, skipping what is verified.
    assert main([*_command(images, out, *SLOW), "--quiet"]) == 0
    finished = RunRecord.load(out / RECORD)
    assert finished.status == "finished"
    assert any(f.status == "skipped" for f in finished.files)
    assert finished.history[-1]["run_id"] == record.run_id
    _assert_same_results(out, reference)


def test_ctrl_c_stops_after_the_current_block_and_keeps_what_is_finished(
    images: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    process = _start(_command(images, out, *SLOW))
    seen = _wait_for_finished_files(process)
    process.send_signal(signal.SIGINT)
    assert process.stderr is not None
    seen += process.stderr.readlines()
    process.wait(timeout=120)
    output = "".join(seen)
    assert process.returncode == 130, output
    assert "stopping after the current block" in output
    record = RunRecord.load(out / RECORD)
    assert record.status == "cancelled"
    done = [f for f in record.files if f.status == "ok"]
    not_done = [f for f in record.files if f.status == "not done"]
    assert done and not_done
    assert len(done) + len(not_done) == len(record.files)
    for entry in done:
        for output_entry in entry.outputs:
            assert sha256_file(out / output_entry.path) == output_entry.sha256
    for entry in not_done:
        assert not list(out.glob(f"{entry.key}_*"))
    assert leftovers(out) == []
    # Resuming finishes the rest with the same tile size, skipping what is done.
    assert main([*_command(images, out, *SLOW), "--quiet"]) == 0
    resumed = RunRecord.load(out / RECORD)
    assert {f.input for f in resumed.files if f.status == "skipped"} == {f.input for f in done}
    assert leftovers(out) == []
