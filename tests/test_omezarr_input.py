"""OME-Zarr inputs (NGFF 0.4, ../shared/sample-images/ome-zarr), as SOURCES.md records them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.conftest import SHARED
from zoodesk.errors import ImageReadError
from zoodesk.images import find_images, output_stem, read_image, series_names

FOLDER = SHARED / "sample-images" / "ome-zarr"
CAT = FOLDER / "cat.ome.zarr"
SERIES = FOLDER / "fake-series-2.zarr"
PLATE = FOLDER / "plate-rows-2.zarr"


def test_the_full_resolution_level_of_a_multiscale_image_is_read() -> None:
    image = read_image(CAT)
    assert image.axes == "YX" and image.shape == (300, 451) and image.dtype == np.float64
    np.testing.assert_array_equal(image.array, zarr.open_array(str(CAT / "0"), mode="r")[...])
    assert image.metadata["format"] == "ome-zarr"
    assert image.metadata["levels"] == 5
    # The scale is 1.0 with no unit: no physical size is claimed.
    assert image.pixel_sizes == {}


def test_bioformats2raw_output_gives_one_series_per_image() -> None:
    assert series_names(SERIES) == ["series", "series 2"]
    for index in (0, 1):
        image = read_image(SERIES, series=index)
        assert image.shape == (512, 512) and image.dtype == np.uint8
        expected = zarr.open_array(str(SERIES / str(index) / "0"), mode="r")[0, 0, 0]
        np.testing.assert_array_equal(image.array, expected)
    with pytest.raises(ImageReadError, match="series 2 does not exist"):
        read_image(SERIES, series=2)


def test_a_plate_gives_one_series_per_field_of_each_well() -> None:
    assert series_names(PLATE) == ["A/1/0", "B/1/0"]
    assert read_image(PLATE, series=1).shape == (512, 512)


def test_axes_units_and_channel_names_come_from_the_metadata(tmp_path: Path) -> None:
    store = tmp_path / "stack.ome.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=2)
    pixels = np.arange(2 * 3 * 16 * 20, dtype=np.uint16).reshape(2, 3, 16, 20)
    group.create_array("0", data=pixels, chunks=(1, 1, 16, 20))
    group.attrs.update(
        {
            "multiscales": [
                {
                    "version": "0.4",
                    "axes": [
                        {"name": "c", "type": "channel"},
                        {"name": "z", "type": "space", "unit": "micrometer"},
                        {"name": "y", "type": "space", "unit": "micrometer"},
                        {"name": "x", "type": "space", "unit": "micrometer"},
                    ],
                    "datasets": [
                        {
                            "path": "0",
                            "coordinateTransformations": [
                                {"type": "scale", "scale": [1.0, 2.0, 0.25, 0.25]}
                            ],
                        }
                    ],
                }
            ],
            "omero": {"channels": [{"label": "DAPI"}, {"label": "GFP"}]},
        }
    )
    image = read_image(store)
    assert image.axes == "CZYX" and image.shape == (2, 3, 16, 20)
    assert image.pixel_sizes == {"Z": (2.0, "µm"), "Y": (0.25, "µm"), "X": (0.25, "µm")}
    assert image.channel_names == ["DAPI", "GFP"]
    np.testing.assert_array_equal(image.array, pixels)


def test_a_metadata_path_leading_out_of_the_store_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "evil.ome.zarr"
    shutil.copytree(CAT, store)
    attributes = json.loads((store / ".zattrs").read_text())
    attributes["multiscales"][0]["datasets"][0]["path"] = "../../elsewhere"
    (store / ".zattrs").write_text(json.dumps(attributes))
    with pytest.raises(ImageReadError, match="refused") as info:
        read_image(store)
    assert str(store) in str(info.value) and "\n" not in str(info.value)


def test_folders_list_ome_zarr_stores_as_images_and_name_their_outputs() -> None:
    found = find_images([FOLDER])
    assert found == [CAT, SERIES, PLATE]
    assert find_images([CAT]) == [CAT]
    assert [output_stem(p) for p in found] == ["cat", "fake-series-2", "plate-rows-2"]


def test_a_large_store_is_decompressed_into_a_mapped_file_not_into_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zoodesk.images import _scratch

    monkeypatch.setattr(_scratch, "MAP_ABOVE_BYTES", 1024)
    image = read_image(SERIES, series=1)
    assert isinstance(image.array, np.memmap) and image.metadata["memory_mapped"]
    assert not image.array.flags.writeable
    expected = zarr.open_array(str(SERIES / "1" / "0"), mode="r")[0, 0, 0]
    np.testing.assert_array_equal(image.array, expected)
