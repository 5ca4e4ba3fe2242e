"""Re-running a batch into the same output folder: skip what is verified, redo the rest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.batch_helpers import (
    box_filter,
    box_package,
    leftovers,
    output_array,
    request,
    run,
    statuses,
)
from zoodesk.batch.outfolder import FolderLock
from zoodesk.batch.record import RECORD_NAME, RunRecord
from zoodesk.batch.runner import RunStarted
from zoodesk.cli import main
from zoodesk.errors import ZooDeskError
from zoodesk.models.package import ModelPackage


@pytest.fixture(scope="module")
def box2d(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    return box_package(tmp_path_factory.mktemp("box2d"))


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, np.ndarray]:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    images = {}
    for name in ("a.tif", "b.tif", "c.tif"):
        images[name] = rng.random((24, 32)).astype(np.float32)
        tifffile.imwrite(folder / name, images[name])
    return images


def _started(events: list[object]) -> RunStarted:
    return next(e for e in events if isinstance(e, RunStarted))


def test_a_rerun_skips_verified_outputs_and_redoes_the_rest(
    tmp_path: Path, box2d: ModelPackage, inputs: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    _events, first = run(request(box2d, [tmp_path / "in"], out))
    assert set(statuses(first).values()) == {"ok"}
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.ome.tif")}

    events, second = run(request(box2d, [tmp_path / "in"], out))
    assert statuses(second) == dict.fromkeys(inputs, "skipped")
    assert _started(events).skipped == 3 and _started(events).to_do == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.ome.tif")} == stamps
    assert second.record.history[-1]["run_id"] == first.record.run_id
    # Skipped entries name the run that wrote their outputs.
    assert {f.run_id for f in second.record.files} == {first.record.run_id}

    # A changed input, a damaged output and a deleted output are redone.
    changed = inputs["a.tif"] * 2
    tifffile.imwrite(tmp_path / "in" / "a.tif", changed)
    damaged = bytearray((out / "b_out.ome.tif").read_bytes())
    damaged[-20] ^= 0xFF
    (out / "b_out.ome.tif").write_bytes(bytes(damaged))
    (out / "c_out.ome.tif").unlink()
    _events, third = run(request(box2d, [tmp_path / "in"], out))
    assert statuses(third) == dict.fromkeys(inputs, "ok")
    np.testing.assert_allclose(output_array(out, "a_out.ome.tif"), box_filter(changed), atol=1e-6)
    for name in ("b", "c"):
        np.testing.assert_allclose(
            output_array(out, f"{name}_out.ome.tif"), box_filter(inputs[f"{name}.tif"]), atol=1e-6
        )
    assert len(third.record.history) == 2


def test_outputs_written_before_a_crash_saved_the_record_are_redone(
    tmp_path: Path, box2d: ModelPackage, inputs: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    run(request(box2d, [tmp_path / "in"], out))
    # As if killed after b's outputs were renamed into place but before the record
    # said so: the entry is still pending, and the output on disk is not what the
    # model gives (say, from an earlier set-up).
    data = json.loads((out / "zoodesk-run.json").read_text())
    entry = next(f for f in data["files"] if f["input"].endswith("b.tif"))
    entry.update(status="pending", outputs=[], finished=None)
    (out / "zoodesk-run.json").write_text(json.dumps(data))
    tifffile.imwrite(out / "b_out.ome.tif", np.zeros((24, 32), np.float32))
    _events, finished = run(request(box2d, [tmp_path / "in"], out))
    assert statuses(finished) == {"a.tif": "skipped", "b.tif": "ok", "c.tif": "skipped"}
    np.testing.assert_allclose(
        output_array(out, "b_out.ome.tif"), box_filter(inputs["b.tif"]), atol=1e-6
    )


def test_a_folder_with_results_of_another_setup_is_refused(
    tmp_path: Path, box2d: ModelPackage, inputs: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    _events, first = run(request(box2d, [tmp_path / "in"], out))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ZooDeskError, match=r"different --tile.*--overwrite"):
        run(request(box2d, [tmp_path / "in"], out, tile={"y": 16, "x": 16}))
    with pytest.raises(ZooDeskError, match=r"different --channel"):
        run(request(box2d, [tmp_path / "in"], out, channels=[0]))
    other = box_package(tmp_path / "other", radius=2, halo=3)
    with pytest.raises(ZooDeskError, match=r"different model description, model weights"):
        run(request(other, [tmp_path / "in"], out))
    # The refusals changed nothing.
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    _events, finished = run(request(other, [tmp_path / "in"], out, overwrite=True))
    assert statuses(finished) == dict.fromkeys(inputs, "ok")
    np.testing.assert_allclose(
        output_array(out, "a_out.ome.tif"), box_filter(inputs["a.tif"], radius=2), atol=1e-6
    )
    assert finished.record.history[-1]["run_id"] == first.record.run_id
    assert finished.record.signature != first.record.signature
    # The new set-up is now the folder's: the same command skips everything.
    _events, again = run(request(other, [tmp_path / "in"], out))
    assert set(statuses(again).values()) == {"skipped"}


def test_leftover_temporary_files_of_ours_are_deleted_and_nothing_else(
    tmp_path: Path, box2d: ModelPackage, inputs: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ours = [
        ".a_out.ome.tif.k2j4h5g6.ome.tif.part",
        ".b_out.ome.tif.x8c7v6b5.raw.part",
        ".zoodesk-run.json.q1w2e3r4.part",
        ".zoodesk-write-test-4242.part",
    ]
    theirs = [
        ".notes.txt.abcdefgh.part",
        "download.part",
        ".a_out.ome.tif.backup",
        "a_out.ome.tif.part",
    ]
    for name in ours + theirs:
        (out / name).write_bytes(b"partial")
    events, finished = run(request(box2d, [tmp_path / "in"], out))
    assert sorted(_started(events).cleaned) == sorted(ours)
    for name in ours:
        assert not (out / name).exists()
    for name in theirs:
        assert (out / name).read_bytes() == b"partial"
    assert set(statuses(finished).values()) == {"ok"}


def test_two_runs_never_write_into_one_folder_at_once(
    tmp_path: Path, box2d: ModelPackage, inputs: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    held = FolderLock(out)
    try:
        with pytest.raises(ZooDeskError, match="another ZooDesk run is writing to this folder"):
            run(request(box2d, [tmp_path / "in"], out))
    finally:
        held.release()
    _events, finished = run(request(box2d, [tmp_path / "in"], out))
    assert set(statuses(finished).values()) == {"ok"}
    assert leftovers(out) == []


def test_records_of_other_versions_load(tmp_path: Path) -> None:
    path = tmp_path / "zoodesk-run.json"
    path.write_text(
        json.dumps(
            {
                "schema": "zoodesk-run/1",
                "run_id": "r1",
                "status": "finished",
                "started": "2026-01-01T00:00:00+00:00",
                "files": [
                    {
                        "input": "/data/a.tif",
                        "status": "ok",
                        "key": "a",
                        "future_field": 1,
                        "outputs": [
                            {
                                "tensor": "out",
                                "path": "a_out.ome.tif",
                                "sha256": "0" * 64,
                                "axes": "YX",
                                "shape": [4, 4],
                                "dtype": "float32",
                                "checksum_kind": "sha256",
                            }
                        ],
                    }
                ],
                "summary": {"total": 1, "ok": 1},
                "another_future_field": {},
            }
        )
    )
    record = RunRecord.load(path)
    assert record.files[0].outputs[0].path == "a_out.ome.tif"
    assert record.signature == {}
    path.write_text(json.dumps({"schema": "zoodesk-run/1", "files": [{"status": "ok"}]}))
    with pytest.raises(ZooDeskError, match="damaged run record"):
        RunRecord.load(path)


def test_records_naming_paths_outside_their_folder_are_refused(
    tmp_path: Path,
    box2d: ModelPackage,
    inputs: dict[str, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    run(request(box2d, [tmp_path / "in"], out))
    record_path = out / RECORD_NAME
    original = json.loads(record_path.read_text())

    def edited(name: str, **changes: object) -> None:
        data = json.loads(json.dumps(original))
        next(f for f in data["files"] if f["input"].endswith(name)).update(changes)
        record_path.write_text(json.dumps(data))

    # An output "outside" with the recorded sha256: a re-run would take it as done,
    # an export would copy it into the package.
    outside = tmp_path / "secret_out.ome.tif"
    secret = (out / "a_out.ome.tif").read_bytes()
    outside.write_bytes(secret)
    [output] = next(f for f in original["files"] if f["input"].endswith("a.tif"))["outputs"]
    edited("a.tif", outputs=[{**output, "path": "../secret_out.ome.tif"}])
    with pytest.raises(ZooDeskError) as info:
        RunRecord.load(record_path)
    assert str(info.value) == (
        f"{record_path}: refused: output path '../secret_out.ome.tif' leads out of its "
        f"folder (input {str(tmp_path / 'in' / 'a.tif')!r})"
    )
    assert main(["export", str(out), "--to", str(tmp_path / "package")]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"error: {info.value}"]
    assert not (tmp_path / "package").exists()

    # A key (the stem of output names) leading out: a re-run would write there.
    edited("b.tif", key="../b", status="pending", outputs=[])
    events, finished = run(request(box2d, [tmp_path / "in"], out))
    [started] = [e for e in events if isinstance(e, RunStarted)]
    assert any(
        w.startswith(f"{record_path}: refused: key '../b' leads out of its folder")
        and w.endswith("every input is processed again")
        for w in started.warnings
    )
    assert set(statuses(finished).values()) == {"ok"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "secret_out.ome.tif"]
    assert outside.read_bytes() == secret


def test_outputs_of_inputs_left_out_of_a_rerun_are_not_overwritten(
    tmp_path: Path, box2d: ModelPackage, inputs: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    run(request(box2d, [tmp_path / "in" / "a.tif"], out))
    kept = (out / "a_out.ome.tif").read_bytes()
    other = tmp_path / "elsewhere"
    other.mkdir()
    pixels = np.full((16, 24), 3.0, np.float32)
    tifffile.imwrite(other / "a.tif", pixels)
    _events, finished = run(request(box2d, [other / "a.tif"], out, add_to_earlier=True))
    entry = next(f for f in finished.record.files if f.input == str(other / "a.tif"))
    assert entry.key == "a-2"
    assert {f.key for f in finished.record.files} == {"a", "a-2"}
    assert (out / "a_out.ome.tif").read_bytes() == kept
    np.testing.assert_allclose(output_array(out, "a-2_out.ome.tif"), box_filter(pixels), atol=1e-6)


def test_a_run_that_would_drop_an_earlier_runs_inputs_is_refused_unless_added(
    tmp_path: Path, box2d: ModelPackage, inputs: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "out"
    _events, first = run(request(box2d, [tmp_path / "in"], out))
    other = tmp_path / "other"
    other.mkdir()
    tifffile.imwrite(other / "d.tif", inputs["a.tif"] + 1)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ZooDeskError) as refused:
        run(request(box2d, [other], out))
    message = str(refused.value)
    assert str(out) in message and "3 input(s)" in message and "--add" in message
    # Nothing was written: the earlier record still names its inputs and outputs.
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    # Added: the earlier inputs stay in the record, with their outputs, as done.
    _events, added = run(request(box2d, [other], out, add_to_earlier=True))
    assert statuses(added) == {
        "d.tif": "ok",
        "a.tif": "skipped",
        "b.tif": "skipped",
        "c.tif": "skipped",
    }
    kept = {Path(f.input).name: f.run_id for f in added.record.files}
    assert kept["a.tif"] == first.record.run_id and kept["d.tif"] == added.record.run_id
    # The command line says the same, and --add adds; a folder that holds several
    # runs' inputs takes --add for every later run over a part of them.
    third = tmp_path / "third"
    third.mkdir()
    tifffile.imwrite(third / "e.tif", inputs["b.tif"])
    command = ["predict", "-m", str(box2d.root), "-i", str(third), "-o", str(out)]
    assert main([*command, "--device", "cpu"]) == 1
    assert main([*command, "--device", "cpu", "--add"]) == 0
    names = {Path(f["input"]).name for f in json.loads((out / RECORD_NAME).read_text())["files"]}
    assert names == {"a.tif", "b.tif", "c.tif", "d.tif", "e.tif"}
