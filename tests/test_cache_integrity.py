"""The model cache under hostile conditions: crashes, edited files, full disks, huge shapes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import zoodesk
from tests.conftest import NUCLEI
from zoodesk.cli import main
from zoodesk.errors import ModelPackageError
from zoodesk.models.bundle import export_bundle
from zoodesk.models.cache import MANIFEST_NAME, CachedModel, ModelCache
from zoodesk.models.package import load_model_package

APP = Path(zoodesk.__file__).resolve().parents[1]
DAY = 86400


def _child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ZOODESK_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(APP), str(APP.parent), env.get("PYTHONPATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip_byte(path: Path, offset: int = 5000) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _rewrite_manifest(model: CachedModel, rel: str) -> None:
    """Record the current sha256 of ``rel`` in the cache manifest, as a tamperer would."""
    path = model.root / MANIFEST_NAME
    data = json.loads(path.read_text())
    for f in data["files"]:
        if f["path"] == rel:
            f["sha256"] = _sha(model.root / rel)
            f["size"] = (model.root / rel).stat().st_size
    path.write_text(json.dumps(data, indent=2))


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "unexpected error" not in err
    return lines[0]


# ------------------------------------------------------- replacing a model (crash)

_CRASH_AFTER_FIRST_RENAME = """
import os, signal, sys
from pathlib import Path
from zoodesk.models.cache import ModelCache

real_rename = Path.rename

def rename(self, target):
    result = real_rename(self, target)
    if Path(target).name.startswith(".trash-"):
        os.kill(os.getpid(), signal.SIGKILL)  # the old model is in the trash, nothing else
    return result

Path.rename = rename
ModelCache.from_settings().import_package(sys.argv[1])
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_replacement_killed_between_its_renames_leaves_the_old_model_usable(
    isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A process replacing a cached model is killed with SIGKILL right after renaming
    the old folder to the trash; the next use of the cache puts the old model back."""
    cache = ModelCache.from_settings()
    original = cache.import_package(NUCLEI)
    child = subprocess.run(
        [sys.executable, "-c", _CRASH_AFTER_FIRST_RENAME, str(NUCLEI)],
        env=_child_env(isolated_home),
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    # The state the crash leaves: no model under its key, the old one in the trash.
    assert not original.root.exists()
    trash = [p for p in cache.root.iterdir() if p.name.startswith(f".trash-{original.key}-")]
    assert len(trash) == 1

    # The next write (which cleans up leftovers) must not delete the trash...
    with cache.staging("next-write"):
        pass
    # ...and the model is back, unchanged and whole.
    assert main(["models", "verify", original.key]) == 0
    assert f"{original.key}: ok" in capsys.readouterr().out
    [restored] = cache.list()
    assert restored.installed_at == original.installed_at
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".trash-")]


def test_the_crash_state_is_recovered_by_a_read_as_well(isolated_home: Path) -> None:
    """The on-disk state of the crash above, built by hand: listing puts the model back;
    a folder left half-way through a removal is deleted, never put back."""
    cache = ModelCache.from_settings()
    model = cache.import_package(NUCLEI)
    model.root.rename(cache.root / f".trash-{model.key}-0123abcd")
    assert [m.key for m in cache.list()] == [model.key]
    assert cache.verify(model.key).ok

    removed = cache.root / f".removed-{model.key}-4567cdef"
    shutil.copytree(model.root, removed)
    with cache.staging("next-write"):
        pass
    assert not removed.exists()
    assert [m.key for m in cache.list()] == [model.key]


def test_replacing_a_model_leaves_no_trash(isolated_home: Path) -> None:
    cache = ModelCache.from_settings()
    first = cache.import_package(NUCLEI)
    second = cache.import_package(NUCLEI)
    assert second.key == first.key
    assert sorted(p.name for p in cache.root.iterdir()) == [first.key]
    assert cache.verify(first.key).ok


# ------------------------------------------------- files changed after installation


def test_verify_checks_what_the_description_declares_not_only_the_manifest(
    isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ModelCache.from_settings().import_package(NUCLEI)
    weights = model.root / "weights.onnx"
    _flip_byte(weights)
    _rewrite_manifest(model, "weights.onnx")
    assert main(["models", "verify", model.key]) == 1
    err = capsys.readouterr().err
    assert f"{weights}: sha256 mismatch with its description (declares 85f5ac80fa97" in err
    assert f"{model.key}: DAMAGED (1 of {len(model.files)} files)" in err


def _predict(model: str, tmp_path: Path) -> int:
    inputs = tmp_path / "in"
    inputs.mkdir(exist_ok=True)
    np.save(inputs / "image.npy", np.load(NUCLEI / "test_input.npy")[0, 0])
    output = tmp_path / "out"
    return main(
        [
            "predict",
            "--model",
            model,
            "--input",
            str(inputs),
            "--output",
            str(output),
            "--device",
            "cpu",
        ]
    )


def test_an_edited_cached_description_is_refused_by_predict_and_test(
    isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ModelCache.from_settings().import_package(NUCLEI)
    description = model.description_path
    text = description.read_text()
    assert "      - id: sigmoid\n" in text
    description.write_text(text.replace("      - id: sigmoid\n", ""))

    assert main(["models", "verify", model.key]) == 1
    verify_line = f"{description}: sha256 mismatch (recorded "
    assert verify_line in capsys.readouterr().err
    verdict = f"{model.key}: DAMAGED; remove it and download or import it again"

    assert _predict(model.key, tmp_path) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert verify_line in line and verdict in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.tif"))

    assert main(["models", "test", model.key, "--device", "cpu"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert verify_line in line and verdict in line


def test_an_edited_cached_test_tensor_is_refused_by_models_test(
    isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A test tensor whose sha256 the description does not declare is still checked
    against the cache manifest."""
    package = tmp_path / "package"
    shutil.copytree(NUCLEI, package)
    description = package / "bioimageio.yaml"
    description.chmod(0o644)
    text = description.read_text()
    for name in ("test_input.npy", "test_output.npy"):
        start = text.index(f"source: {name}\n")
        end = text.index("\n", text.index("sha256:", start)) + 1
        text = text[:start] + f"source: {name}\n" + text[end:]
    description.write_text(text)
    model = ModelCache.from_settings().import_package(package)
    assert main(["models", "test", model.key, "--device", "cpu"]) == 0
    capsys.readouterr()

    expected = model.root / "test_output.npy"
    np.save(expected, np.load(expected) * 0.5)
    assert main(["models", "test", model.key, "--device", "cpu"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"{expected}: sha256 mismatch (recorded " in line
    assert f"{model.key}: DAMAGED; remove it and download or import it again" in line


# ------------------------------------------------------------ zips used in place


def _zip(folder: Path, target: Path, extra: bytes = b"") -> Path:
    with zipfile.ZipFile(target, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f.name)
        if extra:
            zf.writestr("notes.txt", extra)
    return target


def _copies(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not p.name.startswith("."))


def test_a_zip_is_unpacked_once_per_content(isolated_home: Path, tmp_path: Path) -> None:
    first = _zip(NUCLEI, tmp_path / "nuclei.zip")
    elsewhere = tmp_path / "usb"
    elsewhere.mkdir()
    second = elsewhere / "nuclei.zip"
    shutil.copyfile(first, second)
    a = load_model_package(first)
    b = load_model_package(second)
    assert a.root == b.root
    assert len(_copies(isolated_home / "unpacked")) == 1


def test_a_half_unpacked_copy_is_never_used(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _zip(NUCLEI, tmp_path / "nuclei.zip")
    real_read = zipfile.ZipExtFile.read

    def failing_read(self: zipfile.ZipExtFile, n: int = -1) -> bytes:
        if self.name == "weights.onnx":
            raise OSError(errno.EIO, "Input/output error")
        return real_read(self, n)

    with monkeypatch.context() as m:
        m.setattr(zipfile.ZipExtFile, "read", failing_read)
        with pytest.raises(ModelPackageError, match="cannot unpack"):
            load_model_package(archive)
    assert list((isolated_home / "unpacked").iterdir()) == []
    package = load_model_package(archive)
    assert package.verify(package.executable_weights().source).is_file()


def _tiny_zip(tmp_path: Path, n: int) -> Path:
    path = tmp_path / f"model{n}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bioimageio.yaml", f"name: model {n}\n")
    return path


def _set_last_use(folder: Path, seconds_ago: float) -> None:
    from zoodesk.models.unpacked import IN_USE_FILE

    marker = folder / IN_USE_FILE
    now = marker.stat().st_mtime
    os.utime(marker, (now - seconds_ago, now - seconds_ago))


def test_unpacked_copies_are_cleaned_up_but_never_one_in_use(
    isolated_home: Path, tmp_path: Path
) -> None:
    from zoodesk.models.unpacked import KEEP_RECENT, clean_unpacked, open_unpacked

    root = isolated_home / "unpacked"
    zips = [_tiny_zip(tmp_path, n) for n in range(KEEP_RECENT + 2)]
    folders = []
    for n, archive in enumerate(zips):
        folder, lease = open_unpacked(archive)
        lease.close()
        _set_last_use(folder, (KEEP_RECENT + 2 - n) * 60)  # older first
        folders.append(folder)
    # Each use cleans up: the most recently used KEEP_RECENT remain.
    assert _copies(root) == sorted(folders[-KEEP_RECENT:])

    # A copy in use by another process survives, however old; once released it goes.
    in_use = folders[-1]
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from zoodesk.models.unpacked import open_unpacked; "
            "folder, lease = open_unpacked(sys.argv[1]); print(folder, flush=True); "
            "sys.stdin.read()",
            str(zips[-1]),
        ],
        env=_child_env(isolated_home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert Path(child.stdout.readline().strip()) == in_use
        for folder in folders[-KEEP_RECENT:]:
            _set_last_use(folder, 40 * DAY)
        clean_unpacked()
        assert _copies(root) == [in_use]
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    clean_unpacked()
    assert _copies(root) == []


# ------------------------------------------------------------------- full disk

_IMPORT_WITH_FILE_SIZE_LIMIT = """
import resource, signal, sys
from zoodesk.cli import main

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
for command in sys.argv[2:]:
    print("rc", main(command.split("\\t")), flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE")
def test_a_disk_filling_up_during_imports_is_one_line_and_changes_nothing(
    isolated_home: Path, tmp_path: Path
) -> None:
    """The disk "fills up" for real: a child process runs the imports with
    RLIMIT_FSIZE below the size of the weights (a write past it fails with EFBIG, the
    error a full file system gives for a file it cannot hold; SIGXFSZ is ignored)."""
    cache = ModelCache.from_settings()
    model = cache.import_package(NUCLEI)
    bundle = export_bundle(tmp_path / "transfer.zdbundle", [model.key]).path
    archive = _zip(NUCLEI, tmp_path / "nuclei.zip")
    before = {p.name: p.stat().st_mtime_ns for p in cache.root.iterdir()}
    manifest = (model.root / MANIFEST_NAME).read_text()
    sources = {str(NUCLEI): "models\timport", str(archive): "models\timport"}
    commands = [f"{cmd}\t{src}" for src, cmd in sources.items()] + [f"bundle\timport\t{bundle}"]
    child = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITH_FILE_SIZE_LIMIT, str(512 * 1024), *commands],
        env=_child_env(isolated_home),
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.stdout.split() == ["rc", "1"] * 3, child.stderr
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    assert len(lines) == 3 and "Traceback" not in child.stderr, child.stderr
    for line, source in zip(lines, [str(NUCLEI), str(archive), str(bundle)], strict=True):
        assert line.startswith(f"error: {source}: "), line
        assert f"{cache.root}" in line, line
        assert "no space left on the device" in line, line
    # Nothing half-written anywhere, the cached model untouched.
    assert {p.name: p.stat().st_mtime_ns for p in cache.root.iterdir()} == before
    assert (model.root / MANIFEST_NAME).read_text() == manifest
    assert cache.verify(model.key).ok


def test_no_space_reads_the_same_whatever_the_system_says() -> None:
    from zoodesk.fileutils import write_error_reason

    assert write_error_reason(OSError(errno.ENOSPC, "No space left on device")) == (
        "no space left on the device"
    )
    assert write_error_reason(OSError(errno.EFBIG, "File too large")) == (
        "no space left on the device (File too large)"
    )
    assert write_error_reason(OSError(errno.EACCES, "Permission denied")) == "Permission denied"


# ------------------------------------------------------------------- huge shapes


def test_models_test_with_an_enormous_minimum_shape_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A description declaring a minimum input of 2**23 x 2**23 pixels (256 TiB as
    float32, beyond any address space): the test cannot allocate its input."""
    package = tmp_path / "huge"
    package.mkdir()
    for name in ("weights.onnx", "test_input.npy", "test_output.npy", "cover0.png", "README.md"):
        shutil.copyfile(NUCLEI / name, package / name)
    text = (NUCLEI / "bioimageio.yaml").read_text()
    fixed = (
        "      - size: 512\n        id: y\n        type: space\n"
        "      - size: 512\n        type: space\n"
    )
    huge = "        size:\n          min: 8388608\n          step: 16\n"
    assert fixed in text
    text = text.replace(
        fixed, f"      - id: y\n        type: space\n{huge}      - type: space\n{huge}"
    )
    description = package / "bioimageio.yaml"
    description.write_text(text)
    assert main(["models", "test", str(description), "--device", "cpu"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"{description}: not enough memory to run the model's test" in line
