"""PyInstaller hook for PySide6.QtGui (replaces PyInstaller's own, then trims it).

PyInstaller's hook collects every plugin that QtGui can use.  A few of them only
serve embedded devices or another toolkit, and each drags its own dependencies
into the bundle:

- ``platforms``: eglfs, linuxfb, vnc, minimalegl and vkkhrdisplay drive a screen
  without a window system (kiosks, boards); ``egldeviceintegrations`` belong to
  eglfs.  Kept: xcb and wayland (Linux desktops), offscreen and minimal (headless
  runs and checks), windows, cocoa.
- ``platformthemes``: the GTK 3 theme would bring GLib, Cairo, Pango and ATK from
  the build machine, which can clash with the desktop's own GTK; Qt then uses its
  generic theme or the xdg-desktop-portal one (kept).
- ``generic``: input plugins (evdev keyboards, mice, touch screens and tablets read
  from /dev/input, and TUIO touch over the network) that Qt loads only when asked
  to (``-plugin``, ``QT_QPA_GENERIC_PLUGINS``), for the screens above without a
  window system; desktops deliver input through xcb or Wayland.  The TUIO plugin
  alone brings QtNetwork (2 MB).
- ``imageformats``: Qt reads pictures from files only for the model library's cover
  images, which the model description format allows as PNG (built into QtGui),
  JPEG, GIF or SVG; the TIFF, WebP, TGA, WBMP and ICNS readers (1.1 MB) stay out.
"""

from __future__ import annotations

from pathlib import PurePath

from PyInstaller.utils.hooks.qt import add_qt6_dependencies

#: Plugin files left out, by name without the platform's prefix and suffix.
UNUSED_PLUGINS = frozenset(
    {"qeglfs", "qlinuxfb", "qvnc", "qminimalegl", "qvkkhrdisplay", "qgtk3"}
    | {"qtiff", "qwebp", "qtga", "qwbmp", "qicns"}
)
#: Plugin types left out whole.
UNUSED_PLUGIN_TYPES = frozenset({"egldeviceintegrations", "generic"})


def _plugin_name(path: str) -> str:
    stem = PurePath(path).name.split(".")[0]
    return stem.removeprefix("lib")


def _wanted(src: str, dest: str) -> bool:
    parts = PurePath(dest).parts
    if "plugins" not in parts:
        return True
    kind = parts[parts.index("plugins") + 1 :]
    if kind and kind[0] in UNUSED_PLUGIN_TYPES:
        return False
    return _plugin_name(src) not in UNUSED_PLUGINS


hiddenimports, binaries, datas = add_qt6_dependencies(__file__)
binaries = [(src, dest) for src, dest in binaries if _wanted(src, dest)]
