"""``zoodesk gui`` where the desktop window cannot open: one line, not Qt's abort.

On a Linux desktop without the X11 libraries that Qt 6.5+ needs (libxcb-cursor0
and others), or without any display, Qt prints several lines and aborts.  ZooDesk
checks first (``zoodesk.desktop_check``) and says in one line what to install.

The missing libraries are simulated with ``tools/desktop_sandbox.py``: a private
mount namespace where the system's copies are hidden, and an Xvfb display.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from installers.build import DEB_BASE_DEPENDS, deb_depends, missing_bundled_libraries
from tools.desktop_sandbox import BARE_DESKTOP_LACKS, XvfbDisplay, hiding_prefix

from tests.conftest import REPO
from zoodesk.cli import EXIT_NO_DESKTOP
from zoodesk.desktop_check import (
    XCB_LIBRARY_PACKAGES,
    desktop_problem,
    library_in_message,
    missing_libraries_message,
    plugin_problem,
    requested_platforms,
    xcb_plugin_file,
)

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the xcb platform and its check are Linux's"
)
#: The packages a Linux pip installation needs for the desktop window.
PACKAGES = list(dict.fromkeys(BARE_DESKTOP_LACKS.values()))
#: What Qt prints when it aborts for want of a platform plugin.
QT_ABORT_WORDS = ("qt.qpa.plugin", "no Qt platform plugin could be initialized")
#: The line the application prints once its main window is shown (zoodesk.gui.app).
SHOWN_MARKER = "zoodesk-gui-shown"


# ------------------------------------------------------------ which platform Qt tries


def test_qt_tries_xcb_unless_the_session_or_the_environment_says_otherwise() -> None:
    assert requested_platforms({}) == ["xcb"]
    assert requested_platforms({"XDG_SESSION_TYPE": "x11"}) == ["xcb"]
    assert requested_platforms({"XDG_SESSION_TYPE": "wayland"}) == ["wayland", "xcb"]
    assert requested_platforms({"QT_QPA_PLATFORM": "offscreen"}) == ["offscreen"]
    assert requested_platforms({"QT_QPA_PLATFORM": "wayland;xcb:nograb"}) == ["wayland", "xcb"]
    assert requested_platforms({"QT_QPA_PLATFORM": " ; "}) == ["xcb"]


@linux_only
def test_other_platforms_than_xcb_are_left_to_qt() -> None:
    assert desktop_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert desktop_problem({"QT_QPA_PLATFORM": "minimal"}) is None


@linux_only
def test_without_any_display_one_line_says_so_and_names_the_headless_platform() -> None:
    problem = desktop_problem({})
    assert problem is not None
    assert "\n" not in problem
    assert "no display" in problem
    assert "DISPLAY is not set" in problem
    assert "QT_QPA_PLATFORM=offscreen" in problem


@linux_only
def test_a_wayland_session_with_its_compositor_needs_no_x11(tmp_path: Path) -> None:
    env = {"XDG_SESSION_TYPE": "wayland", "XDG_RUNTIME_DIR": str(tmp_path)}
    problem = desktop_problem(env)
    assert problem is not None
    assert "no Wayland compositor is running" in problem
    (tmp_path / "wayland-0").touch()  # the compositor's socket, where clients look
    assert desktop_problem(env) is None
    assert desktop_problem({**env, "WAYLAND_DISPLAY": "wayland-1"}) is not None


@linux_only
def test_a_display_without_an_x_server_is_said_in_one_line(free_display: str) -> None:
    problem = desktop_problem({"DISPLAY": free_display, "QT_QPA_PLATFORM": "xcb"})
    assert problem is not None
    assert "\n" not in problem
    assert f"cannot connect to the display {free_display}" in problem


# ------------------------------------------------------------------ libraries' names


@linux_only
def test_the_library_is_read_from_the_loaders_own_messages(tmp_path: Path) -> None:
    with pytest.raises(OSError) as absent:
        ctypes.CDLL("libzoodesk-absent.so.7")
    assert library_in_message(str(absent.value)) == "libzoodesk-absent.so.7"
    empty = tmp_path / "libzoodesk-empty.so.0.1"
    empty.write_bytes(b"")
    with pytest.raises(OSError) as broken:
        ctypes.CDLL(str(empty))
    assert library_in_message(str(broken.value)) == "libzoodesk-empty.so.0.1"
    assert library_in_message("nothing of the kind") is None


def test_the_instruction_names_every_missing_package_in_one_line() -> None:
    message = missing_libraries_message(list(BARE_DESKTOP_LACKS))
    assert "\n" not in message
    assert f"sudo apt install {' '.join(PACKAGES)}" in message
    assert "sudo dnf install xcb-util-cursor xcb-util-wm xcb-util-keysyms" in message
    for name in BARE_DESKTOP_LACKS:
        assert name in message


def test_an_unknown_library_is_named_as_the_loader_named_it() -> None:
    message = missing_libraries_message(["libxcb-cursor.so.0", "libzoodesk-absent.so.7"])
    assert "sudo apt install libxcb-cursor0`" in message
    assert "the system packages that provide libzoodesk-absent.so.7" in message


@linux_only
def test_a_plugin_that_does_not_load_is_reported_with_the_loaders_reason(
    tmp_path: Path,
) -> None:
    if any(_loads_not(name) for name in XCB_LIBRARY_PACKAGES):
        pytest.skip("this machine lacks some of the xcb libraries itself")
    plugin = tmp_path / "libqxcb.so"
    plugin.write_bytes(b"not a library")
    problem = plugin_problem(plugin)
    assert problem is not None
    assert "\n" not in problem
    assert "xcb platform plugin does not load" in problem
    assert str(plugin) in problem


@linux_only
def test_the_installed_xcb_plugin_is_found_and_loads_here() -> None:
    plugin = xcb_plugin_file()
    if plugin is None:
        pytest.skip("this PySide6 has no xcb platform plugin")
    if any(_loads_not(name) for name in BARE_DESKTOP_LACKS):
        pytest.skip("this machine lacks the xcb libraries itself")
    assert plugin.name == "libqxcb.so"
    assert plugin_problem(plugin) is None


@linux_only
def test_every_library_of_the_xcb_plugin_has_its_packages() -> None:
    """A PySide6 update that brings a new library must name its package too."""
    plugin = xcb_plugin_file()
    readelf = shutil.which("readelf")
    if plugin is None or readelf is None:
        pytest.skip("needs PySide6's xcb plugin and readelf (binutils)")
    needed: set[str] = set()
    for library in (plugin, plugin.parents[2] / "lib" / "libQt6XcbQpa.so.6"):
        out = subprocess.run([readelf, "-d", str(library)], capture_output=True, text=True)
        needed |= set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out.stdout))
    own = {n for n in needed if n.startswith(("libQt6", "libicu"))}
    system = {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1"}
    assert needed, "readelf listed no libraries"
    assert needed - own - system <= set(XCB_LIBRARY_PACKAGES)


# -------------------------------------------------- one list: check, .deb, README


def test_the_sandbox_list_agrees_with_the_packages_the_check_names() -> None:
    for name, package in BARE_DESKTOP_LACKS.items():
        assert XCB_LIBRARY_PACKAGES[name][0] == package


def test_the_deb_depends_on_the_xcb_libraries() -> None:
    depends = [d.strip() for d in deb_depends().split(",")]
    assert depends[: len(DEB_BASE_DEPENDS)] == list(DEB_BASE_DEPENDS)
    assert set(PACKAGES) <= set(depends)


def test_the_build_finds_the_xcb_libraries_missing_from_a_bundle(tmp_path: Path) -> None:
    internal = tmp_path / "zoodesk" / "_internal"
    internal.mkdir(parents=True)
    for name in BARE_DESKTOP_LACKS:
        (internal / name).write_bytes(b"")
    assert missing_bundled_libraries(tmp_path / "zoodesk") == []
    (internal / "libxcb-cursor.so.0").unlink()
    assert missing_bundled_libraries(tmp_path / "zoodesk") == ["libxcb-cursor.so.0"]


@linux_only
def test_the_build_refuses_a_machine_without_the_xcb_libraries(
    hidden_xcb_libraries: list[str],
) -> None:
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'installers')!r})\n"
        "import build\n"
        "try:\n"
        "    build.check_build_libraries()\n"
        "except build.BuildError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [*hidden_xcb_libraries, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"sudo apt install {' '.join(PACKAGES)}" in done.stdout
    assert "--without-xcb-libraries" in done.stdout


def test_the_readme_gives_the_apt_line_of_a_linux_pip_install() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    lines = [line for line in readme.splitlines() if line.startswith("sudo apt install")]
    assert lines, "the README has no apt line"
    assert set(PACKAGES) <= set(lines[0].split()[3:])


# ---------------------------------------------------------- the real command, started


def test_version_does_not_load_the_check() -> None:
    code = (
        "import sys\n"
        "from zoodesk.cli import main\n"
        "main(['--version'])\n"
        "print('zoodesk.desktop_check' in sys.modules)\n"
    )
    done = _python(code, {})
    assert done.stdout.split()[-1] == "False"


@linux_only
def test_the_check_does_not_import_qt() -> None:
    code = (
        "import sys\n"
        "from zoodesk.desktop_check import desktop_problem, xcb_plugin_file\n"
        "xcb_plugin_file()\n"
        "desktop_problem({'DISPLAY': ':0'})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('PySide6', 'shiboken6'))))\n"
    )
    done = _python(code, {})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@linux_only
def test_gui_without_a_display_says_so_in_one_line_and_fails(tmp_path: Path) -> None:
    done = _zoodesk_gui(tmp_path, {})
    assert done.returncode == EXIT_NO_DESKTOP
    assert done.stderr.strip().count("\n") == 0
    assert "no display" in done.stderr
    assert not any(word in done.stderr for word in QT_ABORT_WORDS)


@linux_only
@pytest.mark.gui
def test_gui_without_the_xcb_libraries_prints_what_to_install_and_fails(
    tmp_path: Path, xvfb: str, hidden_xcb_libraries: list[str]
) -> None:
    done = _zoodesk_gui(tmp_path, {"DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb"},
                        prefix=hidden_xcb_libraries)  # fmt: skip
    assert done.returncode == EXIT_NO_DESKTOP, done.stderr
    assert SHOWN_MARKER not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"sudo apt install {' '.join(PACKAGES)}" in lines[0]
    assert not any(word in done.stderr for word in QT_ABORT_WORDS)


@linux_only
@pytest.mark.gui
def test_gui_with_the_xcb_libraries_shows_its_window_on_xcb(tmp_path: Path, xvfb: str) -> None:
    if any(_loads_not(name) for name in BARE_DESKTOP_LACKS):
        pytest.skip("this machine lacks the xcb libraries itself")
    done = _zoodesk_gui(tmp_path, {"DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb",
                                   "ZOODESK_EXIT_AFTER_SHOWN": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert SHOWN_MARKER in done.stdout
    assert "error:" not in done.stderr


# ---------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    """The DISPLAY of a virtual X server for this module's tests."""
    try:
        with XvfbDisplay() as display:
            yield display.name
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def hidden_xcb_libraries() -> list[str]:
    """A command prefix under which the system's xcb libraries cannot load."""
    prefix, note = hiding_prefix(list(BARE_DESKTOP_LACKS))
    if prefix is None:
        pytest.skip(note)
    return prefix


@pytest.fixture
def free_display() -> str:
    """A DISPLAY value that no X server answers."""
    for number in range(199, 99, -1):
        if (
            not Path(f"/tmp/.X11-unix/X{number}").exists()
            and not Path(f"/tmp/.X{number}-lock").exists()
        ):
            return f":{number}"
    pytest.skip("no free X display number")


def _loads_not(library: str) -> bool:
    try:
        ctypes.CDLL(library)
    except OSError:
        return True
    return False


def _environment(home: Path, extra: dict[str, str]) -> dict[str, str]:
    """A bare environment: no display and no Qt platform unless ``extra`` gives them."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ZOODESK_HOME": str(home / "zoodesk-home"),
        "PYTHONPATH": os.pathsep.join(sys.path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "COLUMNS": "200",
    }
    env.update(extra)
    return env


def _python(code: str, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **extra},
        timeout=120,
        check=False,
    )


def _zoodesk_gui(
    home: Path, extra: dict[str, str], prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``zoodesk gui`` of this installation, as a user starts it."""
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "zoodesk.cli", "gui"],
        capture_output=True,
        text=True,
        env=_environment(home, extra),
        timeout=120,
        check=False,
    )
