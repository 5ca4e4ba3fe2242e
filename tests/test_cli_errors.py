"""Bad input on the command line: one clear line naming the problem, no traceback."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests import yaml_writer
from zoodesk.cli import main


def _zoodesk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zoodesk.cli", *args], capture_output=True, text=True, timeout=120
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_model_path(tmp_path: Path) -> None:
    line = _one_error_line(_zoodesk("models", "test", str(tmp_path / "nope")))
    assert str(tmp_path / "nope") in line


def test_unreadable_description(tmp_path: Path) -> None:
    bad = tmp_path / "bioimageio.yaml"
    bad.write_text("format_version: 0.5.4\ntype: model\nname: [unclosed\n")
    line = _one_error_line(_zoodesk("models", "test", str(bad)))
    assert "bioimageio.yaml" in line


def test_description_of_something_else(tmp_path: Path) -> None:
    descr = tmp_path / "rdf.yaml"
    yaml_writer.dump({"format_version": "0.3.0", "type": "dataset", "name": "x"}, descr)
    line = _one_error_line(_zoodesk("models", "test", str(descr)))
    assert "rdf.yaml" in line


def test_unsupported_weights_names_what_the_package_has(nuclei_dir: Path, tmp_path: Path) -> None:
    # The same package without its ONNX entry: torchscript and state dict remain.
    copy = tmp_path / "nuclei"
    shutil.copytree(nuclei_dir, copy)
    from ruyaml import YAML

    yaml = YAML(typ="safe")
    descr = yaml.load((copy / "bioimageio.yaml").read_text())
    del descr["weights"]["onnx"]
    (copy / "bioimageio.yaml").chmod(0o644)
    yaml_writer.dump(descr, copy / "bioimageio.yaml")
    line = _one_error_line(_zoodesk("models", "test", str(copy)))
    assert "torchscript" in line and "pytorch_state_dict" in line
    assert "ONNX" in line and "zoodesk models convert" in line


def test_wrong_axes_is_a_per_file_failure_naming_both_layouts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zoodesk.demo import demo_model_path

    image = tmp_path / "rgb_stack.tif"
    tifffile.imwrite(
        image, np.zeros((5, 3, 64, 64), np.uint16), metadata={"axes": "ZCYX"}, imagej=True
    )
    code = main(
        [
            "predict",
            "-m",
            str(demo_model_path()),
            "-i",
            str(image),
            "-o",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--json",
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    [entry] = doc["files"]
    assert entry["status"] == "failed"
    assert "rgb_stack.tif" in entry["error"]
    assert "ZCYX" in entry["error"] and "bcyx" in entry["error"]
    assert not list((tmp_path / "out").glob("*.tif"))


def test_too_small_image_is_a_per_file_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zoodesk.demo import demo_model_path

    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "tiny.tif", np.ones((2, 2), np.uint16))
    tifffile.imwrite(
        folder / "fine.tif", (np.random.default_rng(0).random((80, 90)) * 999).astype(np.uint16)
    )
    code = main(
        [
            "predict",
            "-m",
            str(demo_model_path()),
            "-i",
            str(folder),
            "-o",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--json",
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    status = {Path(f["input"]).name: f for f in doc["files"]}
    assert status["fine.tif"]["status"] == "ok"
    assert status["tiny.tif"]["status"] == "failed"
    assert "tiny.tif" in status["tiny.tif"]["error"] and "too small" in status["tiny.tif"]["error"]
    # Nothing is written under a final name for the failed input.
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tif")) == [
        "fine_mask.ome.tif",
        "fine_probability.ome.tif",
    ]
    assert not list((tmp_path / "out").glob(".*.part"))


def test_missing_input_file_is_reported_and_the_rest_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zoodesk.demo import demo_image_paths, demo_model_path

    sample = demo_image_paths()[0]
    code = main(
        [
            "predict",
            "-m",
            str(demo_model_path()),
            "-i",
            str(sample),
            str(tmp_path / "gone.tif"),
            "-o",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--json",
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    by_name = {Path(f["input"]).name: f for f in doc["files"]}
    assert by_name["gone.tif"]["status"] == "failed"
    assert "no such file" in by_name["gone.tif"]["error"]
    assert by_name[sample.name]["status"] == "ok"


def test_gpu_request_without_gpu_falls_back_with_a_warning(nuclei_dir: Path) -> None:
    from zoodesk.inference.devices import available_devices

    if any(d.is_gpu for d in available_devices()):
        pytest.skip("this machine has a GPU provider")
    result = _zoodesk("models", "test", str(nuclei_dir), "--device", "gpu", "--json")
    assert result.returncode == 0
    assert "warning:" in result.stderr and "running on the CPU" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["device"] == "cpu"
    assert any("GPU" in w for w in doc["warnings"])


# ------------------------------------------------------------- lines as they are written


def test_lines_off_a_terminal_are_written_verbatim_without_rich(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from zoodesk.cli import _Console

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    console = _Console()
    console.info("plate [1] :warning: done")
    console.warn("a_:smile:.tif: skipped")
    console.error("[red]not markup[/]")
    captured = capsys.readouterr()
    assert captured.out == "plate [1] :warning: done\n"
    assert captured.err == ("warning: a_:smile:.tif: skipped\nerror: [red]not markup[/]\n")
    assert console._out is None and console._err is None  # rich never drew

    quiet = _Console(quiet=True)
    quiet.info("not shown")
    quiet.warn("shown")
    assert capsys.readouterr() == ("", "warning: shown\n")


def test_names_a_stream_cannot_encode_are_escaped_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zoodesk.cli import _Console

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stderr", stream)
    _Console().warn("Zellkern-Übersicht_α.tif: skipped")
    stream.flush()
    assert raw.getvalue() == b"warning: Zellkern-\\xdcbersicht_\\u03b1.tif: skipped\n"


def test_forced_colour_draws_with_rich_and_still_keeps_names_verbatim(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from zoodesk.cli import _Console

    monkeypatch.setenv("FORCE_COLOR", "1")
    console = _Console()
    console.warn("a_:smile:.tif: skipped")
    err = capsys.readouterr().err
    assert console._err is not None  # drawn by rich, in colour
    assert "\x1b[" in err
    assert "a_:smile:.tif: skipped" in err


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_reader_that_went_away_is_not_an_error(
    nuclei_dir: Path, isolated_home: Path, json_flag: list[str]
) -> None:
    """``zoodesk models list | head``: the reader may stop before ZooDesk writes."""
    from zoodesk.models.cache import ModelCache

    ModelCache(isolated_home / "models").import_package(nuclei_dir)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes anything
    try:
        done = subprocess.run(
            [sys.executable, "-m", "zoodesk.cli", "models", "list", *json_flag],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env={**os.environ, "ZOODESK_HOME": str(isolated_home)},
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_a_run_whose_reader_went_away_still_finishes(tmp_path: Path) -> None:
    """``zoodesk demo | head -1``: the run is the work; its lines are not."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "zoodesk.cli", "demo", "-o", str(tmp_path / "out")],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            env={**os.environ, "ZOODESK_HOME": str(tmp_path / "home")},
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "out" / "zoodesk-run.json").read_text())
    assert record["status"] == "finished"
    assert len(record["files"]) >= 2
    assert {f["status"] for f in record["files"]} == {"ok"}
