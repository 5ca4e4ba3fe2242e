"""What a short prediction loads: nothing that it does not use.

A one-image ``zoodesk predict`` with a cached model is what a microscopist trying a
few images, the desktop application's preview and every cluster worker pay for at
each start.  These tests run the real command in a fresh interpreter and check the
modules it imported, and the two facts that replaced psutil on Linux.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

#: Imported by none of a plain prediction's steps (each has a lighter path).
NOT_FOR_A_PLAIN_RUN = (
    "bioimageio.spec",  # the description is remembered in ZooDesk's own form
    "pydantic",  # the settings are checked by hand
    "psutil",  # cores and memory come from /proc and /sys on Linux
    "rich.progress",  # no terminal: no progress bars
    "scipy",  # objects are not asked for
    "skimage",
    "distributed",  # no cluster
    "zarr",  # OME-TIFF output
    "logging.handlers",  # the log file rotates by itself
    "importlib.metadata",  # versions come from the dist-info folders' names
    "zoodesk.batch.objects",  # objects are not asked for
    "zoodesk.instances.measure",
    "zoodesk.images.zarr_writer",  # OME-TIFF output
)


def _modules_after_predict(
    model: str, inputs: Path, output: Path, home: Path, *options: str
) -> set[str]:
    arguments = ["predict", "-m", model, "-i", str(inputs), "-o", str(output), "--device", "cpu"]
    code = (
        "import sys\n"
        "from zoodesk.cli import main\n"
        f"code = main({[*arguments, *options]!r})\n"
        "assert code == 0, code\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOODESK_")}
    env["ZOODESK_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(done.stdout.split())


def test_a_prediction_with_a_cached_model_imports_only_what_it_uses(
    nuclei_dir: Path, isolated_home: Path, tmp_path: Path
) -> None:
    from zoodesk.models.cache import ModelCache

    key = ModelCache(isolated_home / "models").import_package(nuclei_dir).key
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(1)
    tifffile.imwrite(inputs / "a.tif", rng.integers(0, 4000, (256, 256), dtype=np.uint16))

    first = _modules_after_predict(key, inputs, tmp_path / "out1", isolated_home)
    assert "onnxruntime" in first and "tifffile" in first  # the check sees real imports
    second = _modules_after_predict(key, inputs, tmp_path / "out2", isolated_home)
    loaded = sorted(
        name
        for name in second
        if any(name == banned or name.startswith(banned + ".") for banned in NOT_FOR_A_PLAIN_RUN)
    )
    assert loaded == []
    assert (tmp_path / "out2" / "zoodesk-run.json").is_file()
    # rich draws the summary table above; a quiet run, as scripts and schedulers make
    # it, writes its few lines (warnings, errors) as they are.
    assert "rich" in second
    quiet = _modules_after_predict(key, inputs, tmp_path / "out3", isolated_home, "--quiet")
    assert "onnxruntime" in quiet
    assert sorted(name for name in quiet if name.split(".")[0] == "rich") == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="read from /sys on Linux")
def test_physical_cores_match_psutil() -> None:
    psutil = pytest.importorskip("psutil")
    from zoodesk.inference.session import default_threads

    assert default_threads() == max(1, psutil.cpu_count(logical=False) or 1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="read from /proc on Linux")
def test_available_memory_matches_psutil() -> None:
    psutil = pytest.importorskip("psutil")
    from zoodesk.images import available_memory

    ours = available_memory()
    theirs = psutil.virtual_memory().available
    assert ours is not None
    assert abs(ours - theirs) <= 0.1 * theirs


def test_installed_versions_agree_with_importlib_metadata() -> None:
    from importlib import metadata

    from zoodesk.versions import installed_versions

    names = ["numpy", "onnxruntime", "tifffile", "bioimageio.spec", "no-such-distribution"]
    expected = {}
    for name in names:
        try:
            expected[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    assert "numpy" in expected and "no-such-distribution" not in expected
    assert installed_versions(names) == expected
