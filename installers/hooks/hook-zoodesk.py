"""PyInstaller hook for ZooDesk itself.

The built-in demo model and sample images (``zoodesk/resources``) are package data
that ``zoodesk demo`` and the GUI open through ``importlib.resources``.  Command
handlers import their modules lazily, so every submodule is listed explicitly.
The metadata of the libraries named in run records is copied so that a frozen run
records the same software versions as an installed one.
"""

from __future__ import annotations

from importlib import metadata

from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata

datas = collect_data_files("zoodesk", includes=["resources/**/*"])

hiddenimports = collect_submodules("zoodesk")

# zoodesk.batch.record.software_versions (the runtimes' own hooks copy theirs).
for _name in ("numpy", "tifffile"):
    try:
        datas += copy_metadata(_name)
    except metadata.PackageNotFoundError:
        continue
