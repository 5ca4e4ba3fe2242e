"""Whether the desktop window can open here, asked before Qt is started.

Qt's X11 platform plugin (xcb) needs system libraries that a bare Linux desktop
lacks (from Qt 6.5 ``libxcb-cursor0``, and ``libxcb-icccm4``, ``libxcb-keysyms1``
and a few more).  Without them, or without any display, Qt prints several lines
about platform plugins and aborts the process.  ``zoodesk gui`` asks
:func:`desktop_problem` first and, when there is a problem, prints one line saying
what to install (or that there is no display) and exits.

This module does not import Qt: it finds the xcb plugin file of the installed
PySide6 (in the standalone bundle, the bundle's copy) and loads it with the system's
dynamic loader, which resolves the plugin's whole chain of libraries exactly as Qt
would moments later.  Loading it costs a few tens of milliseconds, spent on
libraries the application loads anyway.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Libraries of Qt's xcb platform plugin (``libqxcb.so`` and ``libQt6XcbQpa.so.6``)
#: that a system may lack, with the packages that provide them: (Debian and Ubuntu,
#: Fedora).
XCB_LIBRARY_PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
}
#: Where the xcb plugin lies inside the PySide6 package folder.
XCB_PLUGIN = Path("Qt", "plugins", "platforms", "libqxcb.so")
#: Qt's platform when the environment names none (a Linux build of Qt).
DEFAULT_PLATFORM = "xcb"
#: How the dynamic loader's messages name a library: ``[/dir/]libname.so[.N...]``.
_LIBRARY_IN_MESSAGE = re.compile(r"(?:^|[\s/])(lib[\w.+-]*?\.so(?:\.\d+)*)\b")

#: What the dynamic loader says of a library it cannot find.
_NOT_FOUND = "cannot open shared object file"


def desktop_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """Why the desktop window cannot open here, in one line; None when it can.

    Checked on Linux only, for the platforms Qt will try (``QT_QPA_PLATFORM``, or
    what Qt picks from the session type): a Wayland platform with a compositor to
    talk to, or any platform other than xcb and Wayland (``offscreen``), is left to
    Qt; xcb needs a display (``DISPLAY``) and its system libraries.

    Parameters
    ----------
    environ
        The environment to judge (default: this process's).
    """
    if not sys.platform.startswith("linux"):
        return None
    env = os.environ if environ is None else environ
    platforms = requested_platforms(env)
    first_problem: str | None = None
    for platform in platforms:
        if platform == "wayland" or platform.startswith("wayland-"):
            if wayland_display_exists(env):
                return None
        elif platform == "xcb":
            display = env.get("DISPLAY")
            if not display:
                continue
            problem = xcb_problem(display)
            if problem is None:
                return None
            # Qt goes on to the next platform of the list, and so does this check.
            first_problem = first_problem or problem
        else:
            return None
    return first_problem or no_display_message(platforms)


def xcb_problem(display: str) -> str | None:
    """Why Qt's xcb platform cannot open a window on ``display``; None when it can."""
    plugin = xcb_plugin_file()
    if plugin is not None and (problem := plugin_problem(plugin)) is not None:
        return problem
    return x11_connection_problem(display)


def requested_platforms(environ: Mapping[str, str]) -> list[str]:
    """The platform plugins Qt will try, in order, without their arguments.

    ``QT_QPA_PLATFORM`` when set (a list separated by ``;``, each name possibly
    followed by ``:arguments``); otherwise Qt's choice on Linux: Wayland first, then
    xcb, in a Wayland session (``XDG_SESSION_TYPE=wayland``), else xcb.
    """
    value = environ.get("QT_QPA_PLATFORM", "").strip()
    if not value:
        session = environ.get("XDG_SESSION_TYPE", "").strip().lower()
        value = f"wayland;{DEFAULT_PLATFORM}" if session == "wayland" else DEFAULT_PLATFORM
    names = [entry.split(":", 1)[0].strip().lower() for entry in value.split(";")]
    return [name for name in names if name] or [DEFAULT_PLATFORM]


def wayland_display_exists(environ: Mapping[str, str]) -> bool:
    """Whether a Wayland compositor's socket is there to connect to.

    ``WAYLAND_DISPLAY`` names it (an absolute path, or a name in ``XDG_RUNTIME_DIR``);
    unset, clients try ``wayland-0``.
    """
    name = environ.get("WAYLAND_DISPLAY") or "wayland-0"
    if Path(name).is_absolute():
        return Path(name).exists()
    runtime = environ.get("XDG_RUNTIME_DIR")
    return runtime is not None and runtime != "" and (Path(runtime) / name).exists()


def xcb_plugin_file() -> Path | None:
    """The xcb platform plugin of the PySide6 that the application will use.

    Found from the package's location without importing it (in the standalone
    bundle, the bundle's folder); None when PySide6 or the plugin is not there.
    """
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        plugin = Path(folder) / XCB_PLUGIN
        if plugin.is_file():
            return plugin
    return None


def plugin_problem(plugin: Path) -> str | None:
    """What keeps the xcb plugin from loading, as an instruction; None when it loads.

    When the plugin does not load, each library of :data:`XCB_LIBRARY_PACKAGES` is
    tried on its own, so that the instruction names every missing package at once
    (the loader stops at the first library it cannot find).
    """
    try:
        ctypes.CDLL(str(plugin))
    except OSError as exc:
        failure = str(exc)
    else:
        return None
    missing = [name for name in XCB_LIBRARY_PACKAGES if not _loads(name)]
    first = library_in_message(failure)
    if first is not None and first not in missing and _NOT_FOUND in failure:
        # A library this module does not know of: named as the loader named it.
        missing.insert(0, first)
    if not missing:
        return f"the desktop window cannot open: Qt's xcb platform plugin does not load ({failure})"
    return missing_libraries_message(missing)


def library_in_message(message: str) -> str | None:
    """The file name of the first library a dynamic loader's message names."""
    match = _LIBRARY_IN_MESSAGE.search(message)
    return match.group(1) if match else None


def missing_libraries_message(libraries: list[str]) -> str:
    """One line naming the packages to install for the missing ``libraries``."""
    debian = _unique(XCB_LIBRARY_PACKAGES[n][0] for n in libraries if n in XCB_LIBRARY_PACKAGES)
    fedora = _unique(XCB_LIBRARY_PACKAGES[n][1] for n in libraries if n in XCB_LIBRARY_PACKAGES)
    unknown = [n for n in libraries if n not in XCB_LIBRARY_PACKAGES]
    message = (
        f"the desktop window needs system libraries that are missing ({', '.join(libraries)}): "
    )
    if debian:
        message += (
            f"install them with `sudo apt install {' '.join(debian)}` "
            f"(Fedora: `sudo dnf install {' '.join(fedora)}`)"
        )
    if unknown:
        message += "; " if debian else ""
        message += f"install the system packages that provide {', '.join(unknown)}"
    return message


def x11_connection_problem(display: str) -> str | None:
    """Why the X server of ``display`` cannot be reached, in one line; None when it can.

    Asked of libxcb, as Qt does: a ``DISPLAY`` left over from another session, or an
    X server that refuses the connection, would otherwise end in Qt's abort.
    """
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return None  # the plugin loaded, so this does not happen; Qt says more if it does
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    connection = xcb.xcb_connect(os.fsencode(display), None)
    # xcb_connect always returns a connection object, in an error state on failure.
    failed = bool(xcb.xcb_connection_has_error(connection))
    xcb.xcb_disconnect(connection)
    if not failed:
        return None
    return (
        f"cannot connect to the display {display} (DISPLAY): is the X server running "
        "and may this user open windows on it (xhost, XAUTHORITY)?"
    )


def no_display_message(platforms: list[str]) -> str:
    """The line said when none of ``platforms`` (xcb, Wayland) has a display to use."""
    missing = []
    if "xcb" in platforms:
        missing.append("DISPLAY is not set")
    if any(p.startswith("wayland") for p in platforms):
        missing.append("no Wayland compositor is running")
    return (
        f"there is no display to open the desktop window on ({' and '.join(missing)}): "
        "start ZooDesk in a desktop session or over `ssh -X`; QT_QPA_PLATFORM=offscreen "
        "runs it without a screen"
    )


def _loads(library: str) -> bool:
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
