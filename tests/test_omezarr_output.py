"""OME-Zarr outputs (--format ome-zarr): NGFF 0.5 stores, checked with independent readers
(zarr, ome-zarr-py and ome-zarr-models' validation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from tests.batch_helpers import box_filter, box_package, request, run, statuses
from tests.conftest import SHARED
from zoodesk.batch.outfolder import clean_leftovers
from zoodesk.images.zarr_writer import PYRAMID_STOP, TiledOmeZarrWriter
from zoodesk.inference.streaming import StreamingPolicy
from zoodesk.models.package import ModelPackage


@pytest.fixture(scope="module")
def box2d(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    return box_package(tmp_path_factory.mktemp("box2d"))


def _validated(store: Path) -> object:
    """The store as ome-zarr-models reads and validates it against NGFF 0.5."""
    from ome_zarr_models.v05.image import Image

    return Image.from_zarr(zarr.open_group(str(store), mode="r"))


def test_outputs_are_ngff_stores_with_axes_scale_and_the_same_pixels(
    tmp_path: Path, box2d: ModelPackage
) -> None:
    czi = SHARED / "sample-images" / "czi" / "S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi"
    out = tmp_path / "out"
    _events, finished = run(
        request(box2d, [czi], out, channels=[0], scenes=["P1"], output_format="ome-zarr")
    )
    (entry,) = finished.record.files
    assert entry.status == "ok", entry.error
    (output,) = entry.outputs
    assert output.path == "S3_1Pos_2Mosaic_T2_Z3_CH2_sm[P1]_out.ome.zarr"
    store = out / output.path
    image = _validated(store)
    multiscale = image.ome_attributes.multiscales[0]  # type: ignore[attr-defined]
    # The model's output channel stays an axis, as in the OME-TIFF outputs.
    assert [a.name for a in multiscale.axes] == ["t", "c", "z", "y", "x"]
    assert [a.type for a in multiscale.axes] == ["time", "channel", "space", "space", "space"]
    assert [a.unit for a in multiscale.axes[2:]] == ["micrometer"] * 3
    scale = multiscale.datasets[0].coordinateTransformations[0].scale
    assert list(scale) == [1.0, 1.0, 1.0, 1.6, 1.6]
    group = zarr.open_group(str(store), mode="r")
    attributes = dict(group.attrs)
    assert attributes["zoodesk"]["provenance"]["source_image_sha256"] == entry.input_sha256
    from zoodesk.images import read_image

    source = read_image(czi, series=1).array[:, 0].astype(np.float32)  # T, Z, Y, X
    expected = np.stack([[box_filter(p) for p in t] for t in source])
    pixels = np.asarray(group["0"][...])
    assert pixels.shape == (2, 1, 3, 64, 64)
    np.testing.assert_allclose(pixels[:, 0], expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("stream", ["never", "always"])
def test_a_large_output_gets_a_pyramid_and_a_rerun_skips_it(
    tmp_path: Path, box2d: ModelPackage, stream: str
) -> None:
    """Written whole, or block by block from disk (the tiled writer's path)."""
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(1)
    side = PYRAMID_STOP * 2 + 40
    tifffile.imwrite(images / "big.tif", rng.integers(0, 4000, (side, side), dtype=np.uint16))
    out = tmp_path / "out"
    policy = StreamingPolicy(mode=stream)  # type: ignore[arg-type]
    _events, finished = run(
        request(box2d, [images], out, output_format="ome-zarr", streaming=policy)
    )
    assert statuses(finished) == {"big.tif": "ok"}
    assert finished.record.files[0].streamed == (stream == "always")
    store = out / "big_out.ome.zarr"
    group = zarr.open_group(str(store), mode="r")
    shapes = [group[str(n)].shape for n in range(3)]
    assert shapes == [(1, side, side), (1, side // 2, side // 2), (1, side // 4, side // 4)]
    assert "3" not in group
    level0 = np.asarray(group["0"][0], dtype=np.float64)
    halved = level0.reshape(side // 2, 2, side // 2, 2)
    np.testing.assert_allclose(group["1"][0], halved.mean(axis=(1, 3)), rtol=1e-5)
    datasets = _validated(store).ome_attributes.multiscales[0].datasets  # type: ignore[attr-defined]
    assert [list(d.coordinateTransformations[0].scale) for d in datasets] == [
        [1.0, 1.0, 1.0],
        [1.0, 2.0, 2.0],
        [1.0, 4.0, 4.0],
    ]
    _events, again = run(request(box2d, [images], out, output_format="ome-zarr", streaming=policy))
    assert statuses(again) == {"big.tif": "skipped"}


def test_label_pyramids_keep_label_values(tmp_path: Path) -> None:
    labels = np.zeros((2100, 1500), np.uint16)
    labels[100:900, 200:700] = 7
    labels[1000:2000, 800:1400] = 12
    with TiledOmeZarrWriter(
        tmp_path / "l.ome.zarr", labels.shape, labels.dtype, "YX", labels=True
    ) as w:
        w.write_block((slice(0, 1000), slice(None)), labels[:1000])
        w.write_block((slice(1000, None), slice(None)), labels[1000:])
    group = zarr.open_group(str(tmp_path / "l.ome.zarr"), mode="r")
    np.testing.assert_array_equal(group["0"][...], labels)
    assert set(np.unique(group["1"][...])) == {0, 7, 12}
    np.testing.assert_array_equal(group["1"][...], labels[::2, ::2][:1050, :750])


def test_an_aborted_store_leaves_nothing_under_its_name_and_leftovers_are_cleaned(
    tmp_path: Path,
) -> None:
    writer = TiledOmeZarrWriter(tmp_path / "a_out.ome.zarr", (64, 64), np.float32, "YX")
    writer.write_block((slice(None), slice(None)), np.ones((64, 64), np.float32))
    assert not (tmp_path / "a_out.ome.zarr").exists()
    # As a killed run leaves it: the hidden .part store is still there.
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".a_out.ome.zarr.")
    assert clean_leftovers(tmp_path, {"a_out.ome.zarr"}) == leftovers
    assert list(tmp_path.iterdir()) == []
    writer.abort()


def test_channel_names_go_to_the_omero_block(tmp_path: Path) -> None:
    data = np.zeros((2, 32, 48), np.float32)
    with TiledOmeZarrWriter(
        tmp_path / "c.ome.zarr", data.shape, data.dtype, "CYX", channel_names=["nuclei", "edges"]
    ) as writer:
        writer.write_block((slice(None),) * 3, data)
    attributes = json.loads((tmp_path / "c.ome.zarr" / "zarr.json").read_text())["attributes"]
    assert [c["label"] for c in attributes["ome"]["omero"]["channels"]] == ["nuclei", "edges"]
    assert "null" not in json.dumps(attributes)
