"""PyInstaller hook for bioimageio.spec.

The package reads its JSON resources (tag categories, SPDX licence list, schema)
through ``importlib.resources`` at import time, and picks description classes by
format version at run time; both are invisible to the import graph.
"""

from __future__ import annotations

from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata

datas = collect_data_files("bioimageio.spec") + copy_metadata("bioimageio.spec")

# Format versions are looked up by name; the Hugging Face helpers need a hub client
# that is not installed and never used offline.
hiddenimports = collect_submodules(
    "bioimageio.spec", filter=lambda name: not name.startswith("bioimageio.spec._hf")
)

excludedimports = ["huggingface_hub", "bioimageio.core"]
