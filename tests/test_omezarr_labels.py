"""Objects of an OME-Zarr run are an NGFF label image inside the output's store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import zarr

from tests.conftest import NUCLEI
from zoodesk.cli import main


def test_the_label_image_is_found_and_validated_by_ngff_readers(tmp_path: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader
    from ome_zarr_models.v05.image_label import ImageLabel
    from ome_zarr_models.v05.labels import Labels

    images = tmp_path / "in"
    images.mkdir()
    raw = np.load(NUCLEI / "test_input.npy")[0, 0]
    tifffile.imwrite(images / "nuc.tif", raw)
    out = tmp_path / "out"
    code = main(
        [
            "predict", "-m", str(NUCLEI), "-i", str(images), "-o", str(out),
            "--format", "ome-zarr", "--instances", "threshold", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    store = out / "nuc_probability.ome.zarr"
    labels = Labels.from_zarr(zarr.open_group(str(store / "labels"), mode="r"))
    assert labels.attributes.ome.labels == ["instances"]
    image_label = ImageLabel.from_zarr(zarr.open_group(str(store / "labels/instances"), mode="r"))
    assert image_label.attributes.ome.image_label.source.image == "../../"
    nodes = list(Reader(parse_url(str(store)))())
    label_nodes = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert len(label_nodes) == 1
    values = np.asarray(label_nodes[0].data[0])
    assert values.shape == raw.shape and values.dtype == np.uint16
    # The objects are the thresholded probability's components, numbered 1..N.
    probability = np.asarray(zarr.open_array(str(store / "0"), mode="r"))[0]
    assert np.array_equal(values > 0, probability > 0.5)
    assert set(np.unique(values)) == set(range(int(values.max()) + 1))
