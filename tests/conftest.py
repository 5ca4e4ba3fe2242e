"""Shared fixtures: an isolated ZOODESK_HOME and the real zoo packages in ../shared."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
NUCLEI = SHARED / "zoo-models" / "unet2d_nuclei_broad"
SNAPSHOT = SHARED / "zoo-snapshot"

# Qt never needs a display in tests.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test gets its own empty ZOODESK_HOME and no inherited ZOODESK_ settings."""
    for key in list(os.environ):
        if key.startswith("ZOODESK_"):
            monkeypatch.delenv(key)
    home = tmp_path_factory.mktemp("zoodesk-home")
    monkeypatch.setenv("ZOODESK_HOME", str(home))
    yield home


@pytest.fixture(scope="session")
def nuclei_dir() -> Path:
    """The real UNet 2D nuclei model package (read-only)."""
    if not (NUCLEI / "bioimageio.yaml").is_file():
        pytest.fail(f"test data missing: {NUCLEI} (the shared folder must sit beside the repo)")
    return NUCLEI


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A real Dask cluster for one test module: 2 worker processes on loopback (the
    scheduler's web server on a free port); its client."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client
