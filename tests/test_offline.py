"""ZooDesk writes only where it says, and the runtime under it stays offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

from tests.conftest import NUCLEI, REPO


def test_predict_leaves_the_home_and_temporary_folders_untouched(tmp_path: Path) -> None:
    """ONNX Runtime's telemetry (device id under ~/.cache, a session file in TMPDIR,
    an uploader) stays off: a whole import-and-predict leaves HOME and TMPDIR empty."""
    home, scratch, zoodesk_home = tmp_path / "home", tmp_path / "tmp", tmp_path / "zoodesk"
    for folder in (home, scratch, zoodesk_home):
        folder.mkdir()
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "cells.tif", np.zeros((128, 128), np.uint8))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ORT_", "XDG_", "ZOODESK_"))
    }
    env.update(HOME=str(home), TMPDIR=str(scratch), ZOODESK_HOME=str(zoodesk_home))
    script = (
        "import sys\n"
        "from zoodesk.cli import main\n"
        f"assert main(['models', 'import', {str(NUCLEI)!r}]) == 0\n"
        "sys.exit(main(['predict', '--model', 'unet-2d-nuclei-broad', '--input', "
        f"{str(images)!r}, '--output', {str(tmp_path / 'out')!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "out").glob("cells*.tif"))
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == []
    assert sorted(p.relative_to(scratch) for p in scratch.rglob("*")) == []
