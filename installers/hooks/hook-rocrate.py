"""PyInstaller hook for rocrate (RO-Crate metadata of exported packages).

rocrate reads its JSON-LD vocabularies (``rocrate/data``) through
``importlib.resources`` when imported, and the Jinja template of the HTML preview
(``rocrate/templates``) from a path next to its modules: neither shows in the import
graph.  Its version is recorded in the crates it writes, from the metadata.
"""

from __future__ import annotations

from PyInstaller.utils.hooks import collect_data_files, copy_metadata

datas = collect_data_files("rocrate") + copy_metadata("rocrate")
