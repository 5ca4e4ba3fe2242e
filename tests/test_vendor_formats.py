"""The files microscopes write (../shared/sample-images), read series by series.

Expected values are those SOURCES.md records from bioio and the vendors' readers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED
from zoodesk.errors import ImageReadError
from zoodesk.images import find_images, read_image
from zoodesk.images.vendor import vendor_format, vendor_series

SAMPLES = SHARED / "sample-images"
CZI_CELLS = SAMPLES / "czi" / "CellDivision_T3_Z5_CH2_X240_Y170.czi"
CZI_SCENES = SAMPLES / "czi" / "S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi"
CZI_RGB = SAMPLES / "czi" / "RGB-multichannel.czi"
ND2 = SAMPLES / "nd2" / "cluster.nd2"
LIF_TILES = SAMPLES / "lif" / "PR2729_frameOrderCombinedScanTypes.lif"
LIF_LAMBDA = SAMPLES / "lif" / "LeicaLASX_wavelength-sweep_example.lif"
LIF_XZ = SAMPLES / "lif" / "testdata_2channel_xz.lif"
OIB = SAMPLES / "oib" / "test.oib"


def _size(image, axis: str) -> float:  # type: ignore[no-untyped-def]
    return image.pixel_sizes[axis][0]


def test_a_time_lapse_z_stack_czi_reads_with_its_calibration() -> None:
    image = read_image(CZI_CELLS)
    assert image.axes == "TCZYX"
    assert image.shape == (3, 2, 5, 170, 240)
    assert image.dtype == np.uint16
    assert _size(image, "X") == pytest.approx(0.0906, abs=1e-4)
    assert _size(image, "Z") == pytest.approx(0.32)
    assert image.pixel_sizes["X"][1] == "µm"
    assert image.channel_names == ["LED555", "LED470"]
    assert image.metadata["format"] == "czi"


def test_a_multi_scene_czi_gives_one_series_per_scene_of_its_own_size() -> None:
    assert vendor_series(CZI_SCENES, "czi") == ["TR1", "P1", "TR2"]
    shapes = [read_image(CZI_SCENES, series=s).shape for s in range(3)]
    assert shapes == [(2, 2, 3, 122, 295), (2, 2, 3, 64, 64), (2, 2, 3, 237, 352)]
    p1 = read_image(CZI_SCENES, series=1)
    assert p1.metadata["scene"] == "P1" and p1.metadata["series_count"] == 3
    assert _size(p1, "X") == pytest.approx(1.6) and _size(p1, "Z") == pytest.approx(1.0)
    assert p1.channel_names == ["DAPI", "EGFP"]
    with pytest.raises(ImageReadError, match=r"series 3 does not exist \(the file has 3"):
        read_image(CZI_SCENES, series=3)


def test_each_czi_scene_holds_the_pixels_of_its_place_in_the_whole_mosaic() -> None:
    import czifile

    with czifile.CziFile(str(CZI_SCENES)) as czi:
        # HSTCZYX0, all scenes on one canvas; one worker pastes overlapping tiles in
        # the file's order (several would paste them in any order).  The canvas starts
        # as zeros: czifile's own is uninitialised memory where no tile lies (zeros in
        # a fresh process, whatever was freed before it in a long one).
        whole = czi.asarray(out=np.zeros(czi.shape, czi.dtype), max_workers=1)
        origin = czi.start
        starts = {}
        for entry in czi.filtered_subblock_directory:
            scene = next(d.start for d in entry.dimension_entries if d.dimension == "S")
            y, x = entry.start[-3], entry.start[-2]
            old = starts.get(scene, (y, x))
            starts[scene] = (min(old[0], y), min(old[1], x))
    for s in range(3):
        image = read_image(CZI_SCENES, series=s)
        y0, x0 = starts[s][0] - origin[-3], starts[s][1] - origin[-2]
        h, w = image.shape[-2:]
        expected = whole[0, s, :, :, :, y0 : y0 + h, x0 : x0 + w, 0]
        np.testing.assert_array_equal(image.array, expected)


def test_an_rgb_czi_keeps_its_colour_samples_and_channels() -> None:
    image = read_image(CZI_RGB)
    assert image.axes == "CYXS"
    assert image.shape == (7, 81, 147, 3)
    assert image.channel_names == ["Bright"] + [f"Pol_{a}" for a in range(0, 90, 15)]
    assert _size(image, "X") == pytest.approx(2.958, abs=1e-3)
    assert "Z" not in image.pixel_sizes


def test_nd2_reads_with_voxel_size_channels_and_the_same_pixels_as_nd2() -> None:
    import nd2

    image = read_image(ND2)
    assert image.sizes == {"T": 3, "Z": 10, "C": 2, "Y": 31, "X": 38}
    assert _size(image, "X") == pytest.approx(0.1678, abs=1e-4)
    assert _size(image, "Z") == pytest.approx(0.5)
    assert image.channel_names == ["5-FAM/pH 9.0", "FM 4-64/2% CHAPS"]
    np.testing.assert_array_equal(image.array, nd2.imread(str(ND2)))


def test_a_lif_tile_scan_gives_each_tile_as_a_series() -> None:
    names = vendor_series(LIF_TILES, "lif")
    assert names == [f"TileScan_001 tile {i}" for i in (1, 2, 3, 4)]
    image = read_image(LIF_TILES, series=2)
    assert image.sizes == {"T": 2, "Z": 3, "C": 2, "Y": 64, "X": 64}
    assert _size(image, "X") == pytest.approx(3.968, abs=1e-3)
    # The file's Z step is negative (the stack goes down): the size is its length.
    assert _size(image, "Z") > 0
    assert image.channel_names == ["Green", "Red"]


def test_lif_spectral_axes_are_kept_as_channels() -> None:
    assert vendor_series(LIF_LAMBDA, "lif") == [
        "x_y_lambdaEmi",
        "x_y_lambdaExc",
        "x_y_z_t_lambdaEmi",
    ]
    assert read_image(LIF_LAMBDA, series=0).sizes == {"C": 20, "Y": 64, "X": 64}
    assert read_image(LIF_LAMBDA, series=1).sizes == {"C": 15, "Y": 64, "X": 64}
    assert read_image(LIF_LAMBDA, series=2).sizes == {"T": 2, "C": 10, "Z": 11, "Y": 64, "X": 64}
    assert _size(read_image(LIF_LAMBDA, series=2), "Z") == pytest.approx(0.5, abs=1e-3)


def test_lif_xz_scans_read_with_their_scan_plane_as_the_image() -> None:
    xzt, xzy, xz = (read_image(LIF_XZ, series=s) for s in range(3))
    assert xzt.sizes == {"T": 20, "C": 2, "Y": 128, "X": 128}
    assert xzy.sizes == {"Z": 23, "C": 2, "Y": 128, "X": 128}
    assert xz.sizes == {"C": 2, "Y": 512, "X": 512}
    assert xz.metadata["plane"] == "XZ"


def test_oib_reads_with_its_pixel_size() -> None:
    import oiffile

    image = read_image(OIB)
    assert image.axes == "CYX" and image.shape == (3, 256, 256) and image.dtype == np.uint16
    assert _size(image, "X") == pytest.approx(0.177)
    np.testing.assert_array_equal(image.array, oiffile.imread(str(OIB)))


def test_objective_microscope_and_time_step_are_read_where_the_file_has_them() -> None:
    cells = read_image(CZI_CELLS)
    assert cells.metadata["objective"]["model"] == "Plan-Apochromat 50x/1.2"
    assert cells.metadata["objective"]["lens_na"] == pytest.approx(1.2)
    assert cells.metadata["time_increment"][1] == "s" and cells.metadata["time_increment"][0] > 0
    assert read_image(LIF_LAMBDA, series=0).metadata["objective"]["model"].startswith("HC PL APO")
    assert read_image(ND2).metadata["objective"]["nominal_magnification"] == 60


def test_folders_list_the_vendor_files(tmp_path: Path) -> None:
    found = {p.name for p in find_images([SAMPLES], recursive=True)}
    assert {CZI_CELLS.name, ND2.name, LIF_TILES.name, OIB.name} <= found


def test_formats_are_known_by_content_not_by_name(tmp_path: Path) -> None:
    renamed = tmp_path / "acquisition.dat"
    renamed.write_bytes(ND2.read_bytes())
    assert vendor_format(renamed, renamed.read_bytes()[:16]) == "nd2"
    assert read_image(renamed).sizes["Z"] == 10


@pytest.mark.parametrize("source", [CZI_SCENES, ND2, LIF_TILES])
def test_a_truncated_vendor_file_fails_in_one_line_naming_it(tmp_path: Path, source: Path) -> None:
    cut = tmp_path / source.name
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 3])
    with pytest.raises(ImageReadError) as info:
        read_image(cut)
    message = str(info.value)
    assert message.startswith(f"{cut}: ") and "\n" not in message


def test_large_images_are_decoded_plane_by_plane_into_a_mapped_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above the size limit each format is decoded plane by plane (tiles, frames) into
    a mapped file: the pixels and axes are those of the whole read, series by series."""
    from zoodesk.images import _scratch

    whole = {
        (path, s): read_image(path, series=s)
        for path in (CZI_CELLS, CZI_SCENES, CZI_RGB, ND2, LIF_TILES, LIF_LAMBDA, LIF_XZ)
        for s in range(len(vendor_series(path, vendor_format(path, path.read_bytes()[:16]))))
    }
    monkeypatch.setattr(_scratch, "MAP_ABOVE_BYTES", 1024)
    for (path, series), expected in whole.items():
        mapped = read_image(path, series=series)
        assert isinstance(mapped.array, np.memmap), (path.name, series)
        assert mapped.metadata["memory_mapped"] is True
        assert (mapped.axes, mapped.shape) == (expected.axes, expected.shape), path.name
        np.testing.assert_array_equal(mapped.array, expected.array, err_msg=f"{path}[{series}]")


def test_a_declared_size_the_file_cannot_hold_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged header declaring a huge image is refused before anything is decoded
    (here the allowed expansion is lowered so that the real files count as damaged)."""
    from zoodesk.images import vendor

    monkeypatch.setattr(vendor, "MAX_EXPANSION", 0)
    monkeypatch.setattr(vendor._scratch, "MAP_ABOVE_BYTES", 1024)
    for path in (CZI_CELLS, ND2, LIF_TILES):
        with pytest.raises(ImageReadError, match="more than a file of") as info:
            read_image(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_decoding_that_would_fill_the_disk_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from zoodesk.images import _scratch

    monkeypatch.setattr(_scratch, "MAP_ABOVE_BYTES", 1024)
    monkeypatch.setattr(_scratch, "KEEP_FREE_BYTES", 2**62)
    with pytest.raises(ImageReadError, match="of temporary space") as info:
        read_image(ND2)
    assert str(info.value).startswith(f"{ND2}: ") and "TMPDIR" in str(info.value)


def test_a_czi_whose_metadata_is_lost_still_gives_its_pixels(tmp_path: Path) -> None:
    import czifile

    with czifile.CziFile(str(CZI_CELLS)) as czi:
        metadata = int(czi.header.metadata_position)
    damaged = bytearray(CZI_CELLS.read_bytes())
    damaged[metadata : metadata + 10] = b"ZISRAWXXXX"  # the segment's id, unreadable
    path = tmp_path / "no-metadata.czi"
    path.write_bytes(bytes(damaged))
    image = read_image(path)
    whole = read_image(CZI_CELLS)
    assert (image.axes, image.shape) == (whole.axes, whole.shape)
    np.testing.assert_array_equal(image.array, whole.array)
    assert image.pixel_sizes == {} and image.channel_names is None
