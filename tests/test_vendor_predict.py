"""The nuclei model on every microscope file in ../shared/sample-images.

Every file (each scene, position, image or tile of it) with an image plane of at
least 64 x 64 pixels is predicted; the outputs are checked with tifffile, an
independent reader, against the shapes and pixel sizes SOURCES.md records.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tifffile

from tests.batch_helpers import errors, request, run
from tests.conftest import NUCLEI, SHARED
from zoodesk.models.package import load_model_package

SAMPLES = SHARED / "sample-images"

#: Output file -> (sizes of T, Z, Y, X in the output, pixel size in µm or None).
EXPECTED: dict[str, tuple[dict[str, int], float | None]] = {
    "czi/CellDivision_T3_Z5_CH2_X240_Y170": ({"T": 3, "Z": 5, "Y": 170, "X": 240}, 0.0906),
    "czi/RGB-multichannel": ({"Y": 81, "X": 147}, 2.958),
    "czi/S3_1Pos_2Mosaic_T2_Z3_CH2_sm[TR1]": ({"T": 2, "Z": 3, "Y": 122, "X": 295}, 1.6),
    "czi/S3_1Pos_2Mosaic_T2_Z3_CH2_sm[P1]": ({"T": 2, "Z": 3, "Y": 64, "X": 64}, 1.6),
    "czi/S3_1Pos_2Mosaic_T2_Z3_CH2_sm[TR2]": ({"T": 2, "Z": 3, "Y": 237, "X": 352}, 1.6),
    "lif/LeicaLASX_wavelength-sweep_example[x_y_lambdaEmi]": ({"Y": 64, "X": 64}, 0.1048),
    "lif/LeicaLASX_wavelength-sweep_example[x_y_lambdaExc]": ({"Y": 64, "X": 64}, 0.1048),
    "lif/LeicaLASX_wavelength-sweep_example[x_y_z_t_lambdaEmi]": (
        {"T": 2, "Z": 11, "Y": 64, "X": 64},
        0.1048,
    ),
    **{
        f"lif/PR2729_frameOrderCombinedScanTypes[TileScan_001_tile_{i}]": (
            {"T": 2, "Z": 3, "Y": 64, "X": 64},
            3.968,
        )
        for i in (1, 2, 3, 4)
    },
    # XZ scans: the scan plane (Z by X) is the image.
    "lif/testdata_2channel_xz[xzt]": ({"T": 20, "Y": 128, "X": 128}, None),
    "lif/testdata_2channel_xz[xzy]": ({"Z": 23, "Y": 128, "X": 128}, None),
    "lif/testdata_2channel_xz[xz]": ({"Y": 512, "X": 512}, None),
    "oib/test": ({"Y": 256, "X": 256}, 0.177),
    # Bio-Formats wrote no physical size into this one.
    "ome-tiff/FOV7_HV110_P0500510000": ({"Y": 512, "X": 512}, None),
    # OME-Zarr: the full-resolution level; scales without units claim no size.
    "ome-zarr/cat": ({"Y": 300, "X": 451}, None),
    "ome-zarr/fake-series-2[series]": ({"Y": 512, "X": 512}, None),
    "ome-zarr/fake-series-2[series_2]": ({"Y": 512, "X": 512}, None),
    "ome-zarr/plate-rows-2[A-1-0]": ({"Y": 512, "X": 512}, None),
    "ome-zarr/plate-rows-2[B-1-0]": ({"Y": 512, "X": 512}, None),
}


#: Z steps of the stacks, run plane by plane through the 2D model, kept in the output.
EXPECTED_Z = {
    "czi/CellDivision_T3_Z5_CH2_X240_Y170": 0.32,
    "czi/S3_1Pos_2Mosaic_T2_Z3_CH2_sm[P1]": 1.0,
    "lif/LeicaLASX_wavelength-sweep_example[x_y_z_t_lambdaEmi]": 0.5,
}


@pytest.mark.slow
def test_every_sample_scene_is_predicted_with_its_shape_and_pixel_size(tmp_path: Path) -> None:
    nuclei = load_model_package(NUCLEI)
    out = tmp_path / "out"
    inputs = [p for p in sorted(SAMPLES.iterdir()) if p.is_dir()]
    # cluster.nd2 runs too; its 31 x 38 pixel planes are below the 64 px of the list.
    _events, finished = run(request(nuclei, inputs, out, channels=[0], recursive=False))
    record = finished.record
    by_key = {}
    for entry in record.files:
        folder = Path(entry.input).parent.name
        by_key[f"{folder}/{entry.key}"] = entry
    assert set(EXPECTED) <= set(by_key), sorted(set(EXPECTED) - set(by_key))
    failed = {k: e.error for k, e in by_key.items() if e.status != "ok" and k in EXPECTED}
    assert failed == {}, errors(finished)
    for key, (sizes, pixel_size) in EXPECTED.items():
        entry = by_key[key]
        if "[" in key:
            assert entry.scene is not None
        (output,) = entry.outputs
        path = out / output.path
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            got = {a: n for a, n in zip(series.axes, series.shape, strict=True) if n > 1}
            ome = tif.ome_metadata or ""
        assert {a: n for a, n in got.items() if a != "C"} == sizes, (key, series.axes)
        match = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', ome)
        if pixel_size is None:
            continue
        assert match is not None, f"{key}: no PhysicalSizeX in the output"
        assert float(match.group(1)) == pytest.approx(pixel_size, rel=2e-3)
        assert re.search(r'PhysicalSizeXUnit="µm"', ome)
        if key in EXPECTED_Z:
            z = re.search(r'PhysicalSizeZ="([0-9.eE+-]+)"', ome)
            assert z is not None, f"{key}: no PhysicalSizeZ in the output"
            assert float(z.group(1)) == pytest.approx(EXPECTED_Z[key], rel=2e-3)
