"""One bad input never stops a batch: each fails with its reason, the rest is processed.

The acceptance test puts every kind of bad input next to good images and checks the
record, the console and the folders: good files processed, each bad one failed with
its reason, inputs untouched, nothing else written.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from tests.batch_helpers import (
    box_filter,
    box_package,
    errors,
    leftovers,
    output_array,
    request,
    run,
    statuses,
    tree_hashes,
)
from tests.test_images import BAD_FILES
from zoodesk.batch.runner import FileFinished, RunStarted, exit_code, run_prediction
from zoodesk.cli import main
from zoodesk.errors import ZooDeskError
from zoodesk.inference.streaming import StreamingPolicy
from zoodesk.models.package import ModelPackage

RECORD = "zoodesk-run.json"
LOCK = ".zoodesk-run.lock"


@pytest.fixture(scope="module")
def box2d(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    return box_package(tmp_path_factory.mktemp("box2d"))


def _good(folder: Path, name: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).random(shape).astype(np.float32)
    tifffile.imwrite(folder / name, pixels)
    return pixels


# Each bad input and the words its error must contain.
BAD_INPUTS: dict[str, tuple[Any, str]] = {
    "corrupt.tif": (BAD_FILES["corrupt_zlib.tif"], "corrupt TIFF pixel data"),
    "truncated.tif": (BAD_FILES["truncated.tif"], "truncated or corrupt"),
    "empty.tif": (lambda tmp: b"", "file is empty (0 bytes)"),
    "notes.tif": (lambda tmp: b"shopping list: agar, pipette tips", "not a recognised image"),
    "absurd.tif": (BAD_FILES["absurd.tif"], "declares 3.4 GiB"),
    "absurd.png": (BAD_FILES["absurd.png"], "limit (corrupt header or too large"),
}


def _write_bad_inputs(folder: Path) -> dict[str, str]:
    expected = {}
    for name, (content, reason) in BAD_INPUTS.items():
        (folder / name).write_bytes(content(folder))
        expected[name] = reason
    nan = np.ones((32, 32), np.float32)
    nan[5, 7] = np.nan
    tifffile.imwrite(folder / "nan.tif", nan)
    expected["nan.tif"] = "NaN or infinite values"
    inf = np.ones((32, 32), np.float64)
    inf[0, 0] = np.inf
    np.save(folder / "inf.npy", inf)
    expected["inf.npy"] = "NaN or infinite values"
    tifffile.imwrite(folder / "dot.tif", np.ones((1, 1), np.uint16))
    expected["dot.tif"] = "image too small along y: 1 pixel(s)"
    return expected


@pytest.mark.parametrize("stream", ["never", "always"])
def test_bad_inputs_next_to_good_ones(
    tmp_path: Path, box2d: ModelPackage, capsys: pytest.CaptureFixture[str], stream: str
) -> None:
    inputs = tmp_path / "acquisition"
    inputs.mkdir()
    good = {
        "good_a.tif": _good(inputs, "good_a.tif", (40, 48), 1),
        "good_b.tif": _good(inputs, "good_b.tif", (24, 16), 2),
    }
    expected = _write_bad_inputs(inputs)
    before = tree_hashes(inputs)
    out = tmp_path / "results"
    code = main(
        ["predict", "-m", str(box2d.description_path), "-i", str(inputs), "-o", str(out),
         "--device", "cpu", "--settle-seconds", "0", "--stream", stream]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    # Inputs untouched, nothing added to their folder.
    assert tree_hashes(inputs) == before
    # Only the good files' outputs, the record and the lock in the output folder.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [LOCK, RECORD, "good_a_out.ome.tif", "good_b_out.ome.tif"]
    )
    from zoodesk.batch.record import RunRecord

    record = RunRecord.load(out / RECORD)
    assert record.status == "finished"
    by_name = {Path(f.input).name: f for f in record.files}
    assert set(by_name) == set(good) | set(expected)
    for name, pixels in good.items():
        assert by_name[name].status == "ok", by_name[name].error
        assert by_name[name].streamed is (stream == "always")
        np.testing.assert_allclose(
            output_array(out, f"{Path(name).stem}_out.ome.tif"), box_filter(pixels), atol=1e-6
        )
    for name, reason in expected.items():
        entry = by_name[name]
        assert entry.status == "failed"
        assert entry.outputs == []
        assert entry.error is not None and entry.error.startswith(str(inputs / name))
        assert reason in entry.error, entry.error
        assert "\n" not in entry.error
        # The console names every failure with its reason too.
        assert f"{name}: {entry.error}" in " ".join(captured.err.split())


def test_a_file_that_disappears_before_it_is_read(tmp_path: Path, box2d: ModelPackage) -> None:
    for i, name in enumerate(("a.tif", "b.tif", "c.tif")):
        _good(tmp_path, name, (16, 16), i)
    events = []
    for event in run_prediction(request(box2d, [tmp_path], tmp_path / "out")):
        if isinstance(event, RunStarted):
            (tmp_path / "c.tif").unlink()
        events.append(event)
    finished = events[-1]
    assert statuses(finished) == {"a.tif": "ok", "b.tif": "ok", "c.tif": "failed"}
    assert errors(finished)["c.tif"].endswith("c.tif: the file disappeared before it could be read")


def test_a_file_still_being_written_is_not_read(tmp_path: Path, box2d: ModelPackage) -> None:
    _good(tmp_path, "done.tif", (16, 16), 0)
    growing = tmp_path / "growing.tif"
    _good(tmp_path, "growing.tif", (16, 16), 1)
    stop = threading.Event()

    def keep_writing() -> None:
        with growing.open("ab") as fh:
            while not stop.is_set():
                fh.write(b"\0" * 512)
                fh.flush()
                time.sleep(0.05)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        _events, finished = run(request(box2d, [tmp_path], tmp_path / "out", settle_seconds=0.5))
    finally:
        stop.set()
        writer.join()
    assert statuses(finished) == {"done.tif": "ok", "growing.tif": "failed"}
    message = errors(finished)["growing.tif"]
    assert "still being written" in message and "run the batch again" in message
    # Once the file is complete, the same command processes it and skips the other.
    _events, finished = run(request(box2d, [tmp_path], tmp_path / "out", settle_seconds=0.2))
    assert statuses(finished) == {"done.tif": "skipped", "growing.tif": "ok"}


def test_an_output_folder_that_is_a_file_stops_the_run(tmp_path: Path, box2d: ModelPackage) -> None:
    _good(tmp_path, "a.tif", (16, 16), 0)
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    with pytest.raises(ZooDeskError, match=r"out/sub: the output folder is not writable \(Not a"):
        run(request(box2d, [tmp_path / "a.tif"], blocker / "sub"))


def _failing_on(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the TIFF writer fail with a full disk when it writes ``name``'s output."""
    original = tifffile.TiffWriter.write

    def write(self: tifffile.TiffWriter, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if name in str(self._fh.name):
            raise OSError(errno.ENOSPC, "No space left on device", str(self._fh.name))
        return result

    monkeypatch.setattr(tifffile.TiffWriter, "write", write)


@pytest.mark.parametrize("stream", ["never", "always"])
def test_a_full_disk_fails_the_file_being_written_and_the_run_goes_on(
    tmp_path: Path, box2d: ModelPackage, monkeypatch: pytest.MonkeyPatch, stream: str
) -> None:
    for i, name in enumerate(("a.tif", "b.tif", "c.tif")):
        _good(tmp_path, name, (32, 32), i)
    _failing_on("b_out", monkeypatch)
    out = tmp_path / "out"
    _events, finished = run(
        request(box2d, [tmp_path], out, streaming=StreamingPolicy(mode=stream))  # type: ignore[arg-type]
    )
    assert statuses(finished) == {"a.tif": "ok", "b.tif": "failed", "c.tif": "ok"}
    assert errors(finished)["b.tif"] == (
        f"{tmp_path / 'b.tif'}: the disk is full: no space left on the device holding "
        f"{out.resolve()}"
    )
    assert leftovers(out) == []
    assert not (out / "b_out.ome.tif").exists()
    assert exit_code(finished.record) == 1


# --- real file systems: a tiny tmpfs, a read-only one (needs root on Linux) ------------


def _mount(target: Path, options: str) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _mount(tmp_path / "small-disk", "size=768k")


@pytest.fixture
def read_only_sub(tmp_path: Path) -> Iterator[Path]:
    yield from _mount(tmp_path / "out" / "sub", "ro,size=64k")


@pytest.mark.parametrize(
    ("stream", "compression"), [("never", "zlib"), ("always", "zlib"), ("never", "none")]
)
def test_a_really_full_disk(
    tmp_path: Path, box2d: ModelPackage, small_disk: Path, stream: str, compression: str
) -> None:
    """Uncompressed outputs are written by numpy, whose short write on a full disk
    says only "N requested and M written": it is named as a full disk all the same."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    small = _good(inputs, "small.tif", (32, 32), 0)
    _good(inputs, "wide.tif", (512, 512), 1)  # 1 MiB of float32 noise: does not fit
    _events, finished = run(
        request(
            box2d,
            [inputs],
            small_disk,
            streaming=StreamingPolicy(mode=stream),  # type: ignore[arg-type]
            compression=compression,
        )
    )
    assert statuses(finished) == {"small.tif": "ok", "wide.tif": "failed"}
    assert errors(finished)["wide.tif"] == (
        f"{inputs / 'wide.tif'}: the disk is full: no space left on the device holding "
        f"{small_disk.resolve()}"
    )
    assert leftovers(small_disk) == []
    assert finished.record_saved
    np.testing.assert_allclose(
        output_array(small_disk, "small_out.ome.tif"), box_filter(small), atol=1e-6
    )


def _limit_file_size() -> None:
    # In the child before it starts: files may not grow past 256 KiB, and going past
    # the limit makes write() fail (EFBIG, or a short count) instead of killing the
    # process with SIGXFSZ.
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


@pytest.mark.skipif(sys.platform == "win32", reason="file size limits are POSIX")
@pytest.mark.parametrize(
    ("compression", "words"),
    [
        # numpy writes uncompressed data (ndarray.tofile): its write stops short and it
        # says only "N requested and M written", as on a full disk.
        ("none", "the disk is full: no space left on the device holding {out}"),
        # Compressed data is written by Python, which reports the system's EFBIG.
        (
            "zlib",
            "cannot write the output: the file is too large for the file system of {out} "
            "(or for the file size limit of this process)",
        ),
    ],
)
def test_writes_cut_short_by_a_real_limit_are_named(
    tmp_path: Path, box2d: ModelPackage, compression: str, words: str
) -> None:
    """The writes fail for real: ``zoodesk predict`` runs in a process whose file
    size limit (RLIMIT_FSIZE) the wide image's output exceeds."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    _good(inputs, "small.tif", (32, 32), 0)
    _good(inputs, "wide.tif", (512, 512), 1)  # 1 MiB of float32 noise: over the limit
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "zoodesk.cli", "predict", "-m", str(box2d.description_path),
         "-i", str(inputs), "-o", str(out), "--device", "cpu", "--settle-seconds", "0",
         "--compression", compression],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200"},
        preexec_fn=_limit_file_size,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    record = json.loads((out / RECORD).read_text(encoding="utf-8"))
    errors_ = {Path(f["input"]).name: f["error"] for f in record["files"]}
    expected = f"{inputs / 'wide.tif'}: {words.format(out=out.resolve())}"
    assert errors_ == {"small.tif": None, "wide.tif": expected}
    assert f"failed   wide.tif: {expected}" in done.stderr
    assert leftovers(out) == []
    assert not (out / "wide_out.ome.tif").exists()


def _truncated_tiled_stack(path: Path) -> None:
    """A tiled, compressed 6-page TIFF cut in half: tifffile logs ERROR records for
    its page offsets while reading it."""
    pixels = (np.random.default_rng(3).random((6, 64, 64)) * 1000).astype(np.uint16)
    tifffile.imwrite(path, pixels, compression="zlib", tile=(32, 32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_library_log_records_go_to_the_log_file_not_the_console(
    tmp_path: Path, box2d: ModelPackage, isolated_home: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    _good(inputs, "good.tif", (32, 32), 0)
    _truncated_tiled_stack(inputs / "truncated.tif")
    done = subprocess.run(
        [sys.executable, "-m", "zoodesk.cli", "predict", "-m", str(box2d.description_path),
         "-i", str(inputs), "-o", str(tmp_path / "out"), "--device", "cpu",
         "--settle-seconds", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 1
    # Only ZooDesk's own lines, one per file, each naming it.
    lines = done.stderr.splitlines()
    assert sorted(line[6:].split()[:2] for line in lines) == [
        ["failed", "truncated.tif:"],
        ["ok", "good.tif"],
    ], done.stderr
    (failed,) = [line for line in lines if "failed" in line]
    assert f"{inputs / 'truncated.tif'}: truncated or corrupt TIFF" in failed
    # tifffile's own records are in the log file, naming the file.
    log = (isolated_home / "logs" / "zoodesk.log").read_text(encoding="utf-8")
    assert f"ERROR tifffile: {inputs / 'truncated.tif'}: " in log
    assert "invalid page offset" in log


def test_a_read_only_output_folder(tmp_path: Path, box2d: ModelPackage) -> None:
    _good(tmp_path, "a.tif", (16, 16), 0)
    target = tmp_path / "ro"
    for _mounted in _mount(target, "ro,size=64k"):
        with pytest.raises(ZooDeskError, match="the output folder is not writable"):
            run(request(box2d, [tmp_path / "a.tif"], target))


def test_a_read_only_sub_folder_fails_its_files_only(
    tmp_path: Path, box2d: ModelPackage, read_only_sub: Path
) -> None:
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    _good(inputs, "top.tif", (16, 16), 0)
    _good(inputs / "sub", "deep.tif", (16, 16), 1)
    out = read_only_sub.parent
    events, finished = run(request(box2d, [inputs], out, recursive=True))
    assert statuses(finished) == {"top.tif": "ok", "deep.tif": "failed"}
    assert "read-only" in errors(finished)["deep.tif"]
    assert sorted(e.entry.status for e in events if isinstance(e, FileFinished)) == ["failed", "ok"]


@pytest.mark.parametrize("output", ["parent", "same"])
def test_inputs_inside_the_output_folder_are_named(tmp_path: Path, output: str) -> None:
    model = box_package(tmp_path / "model")
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    tifffile.imwrite(images / "a.tif", np.zeros((32, 32), np.uint16))
    out = images.parent if output == "parent" else images
    with pytest.raises(ZooDeskError) as info:
        list(run_prediction(request(model, [images], out)))
    message = str(info.value)
    assert str(images) in message and "inside the output folder" in message
    assert "no readable images" not in message


def test_library_warnings_go_to_the_log_file_not_the_console(
    tmp_path: Path, box2d: ModelPackage, isolated_home: Path
) -> None:
    """czifile warns (``warnings.warn``) about a CZI whose directory segment is damaged;
    ZooDesk still reads it, and the warning goes to the log file."""
    import czifile

    source = Path(__file__).resolve().parents[2] / "shared" / "sample-images" / "czi"
    source = source / "CellDivision_T3_Z5_CH2_X240_Y170.czi"
    with czifile.CziFile(str(source)) as czi:
        directory = int(czi.header.directory_position)
    damaged = bytearray(source.read_bytes())
    damaged[directory : directory + 10] = b"ZISRAWXXXX"
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "damaged.czi").write_bytes(bytes(damaged))
    done = subprocess.run(
        [sys.executable, "-m", "zoodesk.cli", "predict", "-m", str(box2d.description_path),
         "-i", str(inputs), "-o", str(tmp_path / "out"), "--device", "cpu",
         "--settle-seconds", "0", "--channel", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "unknown segment type" not in done.stderr and "Warning" not in done.stderr
    log = (isolated_home / "logs" / "zoodesk.log").read_text(encoding="utf-8")
    assert "unknown segment type" in log
