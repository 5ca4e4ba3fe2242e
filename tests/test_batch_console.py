"""``zoodesk predict`` on the console: options, per-file lines, summary, exit codes."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from rich.console import Console

from tests.batch_helpers import box_package
from tests.unprivileged import run_unprivileged, unreadable
from zoodesk.batch.console import _ProgressView, summary_table
from zoodesk.batch.record import FileEntry, RunRecord
from zoodesk.batch.runner import FileFinished, FileStarted, RunStarted
from zoodesk.cli import main
from zoodesk.models.package import ModelPackage
from zoodesk.units import duration, human_size


@pytest.fixture(scope="module")
def box2d(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    return box_package(tmp_path_factory.mktemp("box2d"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(images / name, rng.random((24, 32)).astype(np.float32))
    (images / "broken.tif").write_bytes(b"II*\x00garbage")
    return images


def _predict(box2d: ModelPackage, *args: str) -> int:
    return main(
        ["predict", "-m", str(box2d.description_path), "--device", "cpu", "--settle-seconds", "0",
         *args]
    )  # fmt: skip


def test_per_file_lines_summary_and_exit_codes(
    tmp_path: Path, box2d: ModelPackage, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _predict(box2d, "-i", str(folder), "-o", str(out)) == 1
    captured = capsys.readouterr()
    # One line per file, numbered in the order they finish (reading overlaps computing).
    lines = captured.err.splitlines()
    assert sorted(line[:6] for line in lines) == ["[1/3] ", "[2/3] ", "[3/3] "], captured.err
    by_name = {line[6:].split()[1].rstrip(":"): line[6:] for line in lines}
    assert re.fullmatch(r"ok +a\.tif +\d+\.\d\d s", by_name["a.tif"])
    assert re.fullmatch(r"ok +b\.tif +\d+\.\d\d s", by_name["b.tif"])
    assert by_name["broken.tif"].startswith(f"failed   broken.tif: {folder / 'broken.tif'}: ")
    assert "run " in captured.out and "broken.tif" in captured.out
    assert "2 ok, 0 already done, 1 failed, 0 not done" in captured.out
    # Only the good files: everything done, exit 0, and the re-run skips them.
    assert _predict(box2d, "-i", str(folder / "a.tif"), str(folder / "b.tif"), "-o", str(out)) == 0
    captured = capsys.readouterr()
    assert "0 of 2 file(s) to do, 2 already done" in captured.out
    assert "0 ok, 2 already done" in captured.out


def test_quiet_prints_nothing_and_json_prints_one_document(
    tmp_path: Path, box2d: ModelPackage, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _predict(box2d, "-i", str(folder), "-o", str(tmp_path / "q"), "--quiet") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert _predict(box2d, "-i", str(folder), "-o", str(tmp_path / "j"), "--json") == 1
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["summary"] == {"total": 3, "ok": 2, "failed": 1}
    assert {Path(f["input"]).name: f["status"] for f in document["files"]} == {
        "a.tif": "ok",
        "b.tif": "ok",
        "broken.tif": "failed",
    }


def test_list_files_series_and_missing_inputs(
    tmp_path: Path, box2d: ModelPackage, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "todo.lst"
    listing.write_text("in/a.tif\n# not this one: in/broken.tif\n", encoding="utf-8")
    out = tmp_path / "out"
    assert _predict(box2d, "--list", str(listing), "-o", str(out), "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert [Path(f["input"]).name for f in document["files"]] == ["a.tif"]
    assert _predict(box2d, "-o", str(out)) == 1
    assert "--input PATH... and/or --list FILE" in capsys.readouterr().err
    assert _predict(box2d, "-i", str(folder / "a.tif"), "-o", str(tmp_path / "s"), "--series",
                    "1", "--json") == 1  # fmt: skip
    [entry] = json.loads(capsys.readouterr().out)["files"]
    assert "series 1 does not exist (the file has 1 series)" in entry["error"]


def test_progress_shows_throughput_and_an_eta_from_the_bytes_left() -> None:
    console = Console(file=io.StringIO(), force_terminal=False)

    class _Out:
        err = console
        out = console

        def info(self, message: str) -> None: ...

        def warn(self, message: str) -> None: ...

    view = _ProgressView(_Out(), quiet=True)
    view.handle(
        RunStarted(
            run_id="r",
            total=4,
            to_do=4,
            device="cpu",
            device_description="CPU",
            weights_format="onnx",
            record_path=Path("x"),
            to_do_bytes=4000,
        )
    )
    view.handle(FileStarted(0, Path("a.tif")))
    view.started -= 10.0  # ten seconds in, one quarter of the bytes done
    entry = FileEntry(
        input="a.tif", status="ok", input_size=1000, shape=[1000, 1000], started="now"
    )
    view.handle(FileFinished(0, Path("a.tif"), entry))
    detail = view._detail()
    assert "0.1 MP/s" in detail and "0.10 files/s" in detail
    assert "ETA 30 s" in detail and "a.tif" in detail
    assert duration(4000) == "1 h 06 min"
    assert duration(75) == "1 min 15 s"
    assert duration(float("inf")) == "–"
    assert [human_size(n) for n in (512, 1_500, 6_000_000, 2_300_000_000)] == [
        "512 B",
        "1.5 kB",
        "6.0 MB",
        "2.3 GB",
    ]


def test_long_runs_list_only_the_inputs_that_are_not_ok(tmp_path: Path) -> None:
    record = RunRecord(path=tmp_path / "zoodesk-run.json")
    record.files = [FileEntry(input=f"/d/img{i}.tif", status="ok") for i in range(60)]
    record.files[7] = FileEntry(input="/d/bad[red].tif", status="failed", error="x [bold]y[/]")
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(summary_table(record))
    text = console.export_text()
    assert "bad[red].tif" in text and "x [bold]y[/]" in text
    assert "img8.tif" not in text
    assert "59 ok" in text and "1 failed" in text


def test_a_newline_in_a_file_name_stays_on_its_line(
    tmp_path: Path, box2d: ModelPackage, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "in"
    images.mkdir()
    (images / "bad\nname.tif").write_bytes(b"II*\x00garbage")
    tifffile.imwrite(images / "good.tif", np.zeros((24, 32), np.float32))
    assert _predict(box2d, "-i", str(images), "-o", str(tmp_path / "out")) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    (failed,) = [line for line in lines if "failed" in line]
    assert "bad\\nname.tif" in failed


def test_folders_not_looked_into_are_warned_recorded_and_in_the_json(
    tmp_path: Path, box2d: ModelPackage
) -> None:
    """An unreadable sub-folder (a real ``chmod 000``, read by a process without
    root's capabilities), a link to another folder and a link looping back up the
    tree: each is one warning line naming it, an entry of the record and of --json."""
    data, other = tmp_path / "in", tmp_path / "other"
    for folder in (data, data / "locked", data / "sub", other):
        folder.mkdir(parents=True)
    for path in (data / "a.tif", data / "locked" / "b.tif", other / "c.tif"):
        tifffile.imwrite(path, np.zeros((24, 32), np.float32))
    try:
        (data / "link").symlink_to(other, target_is_directory=True)
        (data / "sub" / "loop").symlink_to(data, target_is_directory=True)
    except OSError as exc:
        pytest.skip(f"cannot create a symbolic link here: {exc}")
    expected = [
        f"{data / 'link'}: a link to the folder {other.resolve()}, not followed (give that "
        "folder as an input of its own to process it); its images are not processed",
        f"{data / 'locked'}: cannot be read (permission denied); its images are not processed",
        f"{data / 'sub' / 'loop'}: a link back to {data.resolve()} (a loop), not followed; "
        "its images are not processed",
    ]
    command = [sys.executable, "-m", "zoodesk.cli", "predict", "-m", str(box2d.description_path),
               "--device", "cpu", "--settle-seconds", "0", "--recursive",
               "-i", str(data)]  # fmt: skip
    with unreadable(data / "locked"):
        plain = run_unprivileged([*command, "-o", str(tmp_path / "out")])
        as_json = run_unprivileged([*command, "-o", str(tmp_path / "json"), "--json"])
        nothing = run_unprivileged([*command[:-1], str(data / "locked"), "-o", str(tmp_path / "x")])
    assert plain.returncode == 0, plain.stderr
    warnings = [line for line in plain.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {message}" for message in expected]
    record = json.loads((tmp_path / "out" / "zoodesk-run.json").read_text(encoding="utf-8"))
    assert record["warnings"] == expected
    assert [Path(f["input"]).name for f in record["files"]] == ["a.tif"]
    document = json.loads(as_json.stdout)
    assert document["warnings"] == expected
    assert [f"warning: {m}" for m in expected] == [
        line for line in as_json.stderr.splitlines() if line.startswith("warning: ")
    ]
    # Nothing readable at all: the error says why.
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == (
        f"error: no readable images found in {data / 'locked'} ({data / 'locked'}: cannot be "
        "read (permission denied))"
    )
