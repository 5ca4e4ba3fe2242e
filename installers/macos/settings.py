"""dmgbuild settings of the ZooDesk disk image (macOS).

installers/build.py runs, from the repository root::

    dmgbuild -s installers/macos/settings.py -D app=dist/ZooDesk.app \\
        -D icon=resources/icons/zoodesk.icns \\
        "ZooDesk 0.1.0" dist/installers/zoodesk-0.1.0-macos-arm64-cpu.dmg

The image shows ZooDesk.app next to a link to /Applications, to drag it across.
dmgbuild runs this file with ``defines`` holding the ``-D`` values.
"""

from pathlib import Path

_defines = globals().get("defines", {})

application = _defines.get("app", "dist/ZooDesk.app")
appname = Path(application).name

# Compressed, read-only image (zlib): opens on every supported macOS version.
format = _defines.get("format", "UDZO")
compression_level = 9
size = None

files = [application]
symlinks = {"Applications": "/Applications"}
# The volume's icon (-D icon=resources/icons/zoodesk.icns), else the default disk icon.
icon = _defines.get("icon")

window_rect = ((200, 200), (600, 320))
default_view = "icon-view"
show_status_bar = False
show_tab_view = False
show_toolbar = False
show_pathbar = False
show_sidebar = False
arrange_by = None
icon_size = 128
text_size = 13
icon_locations = {appname: (150, 140), "Applications": (450, 140)}
