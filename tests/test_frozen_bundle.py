"""The frozen bundle (``dist/zoodesk``) runs on its own.

The bundle checks run only where ``python installers/build.py --variant cpu`` (or
PyInstaller on ``packaging.spec``) has made the bundle; they are the checks of
``tools/smoke_bundle.py``: an empty ZOODESK_HOME, PATH holding only the bundle, no
network where the system allows a network namespace.

The desktop entry's argument handling is tested without a bundle.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from installers.entry_gui import BUNDLE_SUFFIX, OPEN_FILES_VARIABLE, gui_argv, started_as_cli
from tools.smoke_bundle import (
    CONTENTS_DIR,
    DEFAULT_BUNDLE,
    EXE_SUFFIX,
    MIN_NUCLEI,
    BundleSmoke,
    Check,
    demo_resources,
    folder_size,
    plane_from_npy,
)

import zoodesk
from zoodesk.models.bundle import BUNDLE_SUFFIX as ENGINE_BUNDLE_SUFFIX

#: The unpacked size that the CPU bundle must stay under (issue: < 300 MB).
CPU_BUNDLE_LIMIT_BYTES = 300 * 1000**2
#: The full variant (torch inside) stays well under the ilastik GPU build (about 1.8 GB).
FULL_BUNDLE_LIMIT_BYTES = 1000 * 1000**2

needs_bundle = pytest.mark.skipif(
    not (DEFAULT_BUNDLE / f"zoodesk-cli{EXE_SUFFIX}").is_file(),
    reason=f"no bundle at {DEFAULT_BUNDLE}: build it with installers/build.py",
)


# ------------------------------------------------------------ desktop entry arguments


def test_desktop_entry_without_arguments_opens_the_gui() -> None:
    assert gui_argv([]) == ["gui"]


def test_desktop_entry_hands_opened_bundles_to_the_gui(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(OPEN_FILES_VARIABLE, raising=False)
    first, second = tmp_path / "a.zdbundle", tmp_path / "B.ZDBUNDLE"
    assert gui_argv([str(first), str(second)]) == ["gui"]
    assert os.environ[OPEN_FILES_VARIABLE].split(os.pathsep) == [str(first), str(second)]


def test_desktop_entry_passes_commands_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPEN_FILES_VARIABLE, raising=False)
    argv = ["bundle", "import", "x.zdbundle"]
    assert gui_argv(argv) == argv
    assert gui_argv(["--version"]) == ["--version"]
    assert OPEN_FILES_VARIABLE not in os.environ


def test_desktop_entry_knows_the_engines_bundle_suffix() -> None:
    assert BUNDLE_SUFFIX == ENGINE_BUNDLE_SUFFIX


def test_entry_started_as_zoodesk_cli_runs_the_command_line_only() -> None:
    # On Linux zoodesk-cli is a link to the desktop entry's executable.
    assert started_as_cli("/opt/zoodesk/zoodesk-cli")
    assert started_as_cli("zoodesk-cli")
    assert started_as_cli("C:/ZooDesk/zoodesk-cli.exe")
    assert not started_as_cli("/opt/zoodesk/zoodesk")
    assert not started_as_cli("/usr/bin/zoodesk")


def test_smoke_image_is_the_plane_of_a_npy_test_input(tmp_path: Path) -> None:
    import numpy as np

    array = np.arange(2 * 3 * 5, dtype="<f4").reshape(1, 1, 6, 5)
    np.save(tmp_path / "input.npy", array)
    plane_from_npy(tmp_path / "input.npy", tmp_path / "plane.npy")
    plane = np.load(tmp_path / "plane.npy")
    assert plane.shape == (6, 5)
    assert plane.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(plane, array[0, 0])
    np.save(tmp_path / "stack.npy", np.zeros((2, 6, 5), dtype="<f4"))
    with pytest.raises(ValueError, match="one C-ordered plane"):
        plane_from_npy(tmp_path / "stack.npy", tmp_path / "not-written.npy")


# ---------------------------------------------------------------------- frozen bundle


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> BundleSmoke:
    return BundleSmoke(DEFAULT_BUNDLE, tmp_path_factory.mktemp("bundle-smoke"))


def _assert_ok(check: Check) -> None:
    assert check.status == "ok", f"{check.name}: {check.detail}"


@needs_bundle
def test_bundle_layout(smoke: BundleSmoke) -> None:
    check = smoke.check_layout()
    _assert_ok(check)
    if (smoke.bundle / CONTENTS_DIR / "PySide6").is_dir() and os.name == "posix":
        plugins = check.data["qt_platform_plugins"]
        assert any("offscreen" in p for p in plugins)
        if not (
            smoke.bundle / "_internal" / "PySide6" / "Qt" / "lib" / "QtCore.framework"
        ).exists():
            assert any("xcb" in p for p in plugins)


@needs_bundle
def test_cpu_bundle_stays_under_the_size_target(smoke: BundleSmoke) -> None:
    runtimes = [p.name for p in (smoke.bundle / CONTENTS_DIR).glob("onnxruntime*.dist-info")]
    if not any(name.startswith("onnxruntime-") and name[12].isdigit() for name in runtimes):
        pytest.skip(f"not a CPU bundle ({runtimes})")
    if smoke.carries_torch():
        assert folder_size(smoke.bundle) < FULL_BUNDLE_LIMIT_BYTES
    else:
        assert folder_size(smoke.bundle) < CPU_BUNDLE_LIMIT_BYTES


@needs_bundle
def test_bundle_prints_the_package_version(smoke: BundleSmoke) -> None:
    check = smoke.check_version(expected=zoodesk.__version__, repeats=1)
    _assert_ok(check)


@needs_bundle
def test_bundle_offers_the_cpu(smoke: BundleSmoke) -> None:
    check = smoke.check_devices()
    _assert_ok(check)
    assert "cpu" in check.data["devices"]


@needs_bundle
def test_bundle_runs_the_demo_offline(smoke: BundleSmoke) -> None:
    check = smoke.check_demo()
    _assert_ok(check)
    assert check.data["frozen"] is True
    assert check.data["files"] == len(demo_resources(smoke.bundle)[1])


@needs_bundle
def test_bundle_tests_its_demo_model(smoke: BundleSmoke) -> None:
    model, _ = demo_resources(smoke.bundle)
    _assert_ok(smoke.check_models_test(model))


@needs_bundle
def test_bundle_tests_the_nuclei_model(smoke: BundleSmoke, nuclei_dir: Path) -> None:
    check = smoke.check_models_test(nuclei_dir)
    _assert_ok(check)
    assert check.data["passed"] is True


@needs_bundle
def test_bundle_predicts_a_folder_with_the_nuclei_model(
    smoke: BundleSmoke, nuclei_dir: Path
) -> None:
    _, samples = demo_resources(smoke.bundle)
    check = smoke.check_predict(nuclei_dir, samples)
    _assert_ok(check)
    assert check.data["files"] == len(samples)
    assert check.data["device"] == "cpu"


@needs_bundle
def test_bundle_exports_the_run_for_deposition(smoke: BundleSmoke, nuclei_dir: Path) -> None:
    _, samples = demo_resources(smoke.bundle)
    run_dir = smoke.workdir / "export-run"
    predicted = smoke.run(["predict", "--model", str(nuclei_dir), "--input", str(samples[0]),
                           "--output", str(run_dir), "--device", "cpu", "--quiet"])  # fmt: skip
    assert predicted.returncode == 0, predicted.tail()
    check = smoke.check_export(run_dir)
    _assert_ok(check)
    assert check.data["files"] > 0


@needs_bundle
def test_bundle_finds_and_measures_the_nuclei_of_the_test_image(
    smoke: BundleSmoke, nuclei_dir: Path
) -> None:
    found = smoke.check_instances(nuclei_dir)
    _assert_ok(found)
    assert found.data["objects"] > MIN_NUCLEI
    measured = smoke.check_measure()
    _assert_ok(measured)
    assert measured.data["objects"] > MIN_NUCLEI


@needs_bundle
def test_bundle_shows_the_gui_offscreen_and_quits(smoke: BundleSmoke) -> None:
    check = smoke.check_gui()
    if check.status == "skipped":
        pytest.skip(check.detail)
    _assert_ok(check)
    assert check.data["cold_start_seconds"] > 0


@needs_bundle
def test_bundle_shows_the_gui_on_xcb_without_the_systems_xcb_libraries(
    smoke: BundleSmoke,
) -> None:
    # A bare Linux desktop: the system's copies of the libraries that Qt 6.5+'s xcb
    # plugin needs are hidden; the bundle's own copies must load.
    check = smoke.check_gui_xcb()
    if check.status == "skipped":
        pytest.skip(check.detail)
    _assert_ok(check)
    assert check.data["cold_start_seconds"] > 0
