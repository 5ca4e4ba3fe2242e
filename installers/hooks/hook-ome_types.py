"""PyInstaller hook for ome-types (OME-XML schema checks of ``zoodesk export --check``).

ome-types validates against the OME schema file it ships (``ome-2016-06.xsd``, with
its XSL transforms), and registers its xsdata plugin through an entry point of its
distribution metadata: xsdata imports ``xsdata_pydantic_basemodel.hooks`` by name
when it starts.  The napari widget is left out.
"""

from __future__ import annotations

from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata

datas = collect_data_files("ome_types") + copy_metadata("ome-types")
hiddenimports = collect_submodules("xsdata_pydantic_basemodel")
excludedimports = ["napari", "qtpy", "ome_types.widget"]
