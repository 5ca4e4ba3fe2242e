"""A real run that makes objects: the nuclei model on two 512 x 512 images.

Shared by the tests of the objects tables (core) and of the results page (GUI).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import NUCLEI
from zoodesk.batch.record import RECORD_NAME
from zoodesk.batch.runner import PredictionRequest, run_prediction
from zoodesk.images import write_ome_tiff
from zoodesk.instances import InstanceSettings

#: The pixel size written into the images, so that physical measurements exist.
PIXEL_UM = 0.5


def nuclei_images(folder: Path) -> list[Path]:
    """Two 512 x 512 images from the nuclei model's test input: as it is, and turned."""
    folder.mkdir(parents=True, exist_ok=True)
    base = np.load(NUCLEI / "test_input.npy")[0, 0]
    scaled = (base / float(base.max()) * 4000).astype(np.uint16)
    paths = []
    for name, image in (("nuclei_a", scaled), ("nuclei_b", np.rot90(scaled))):
        path = folder / f"{name}.ome.tif"
        write_ome_tiff(
            path,
            np.ascontiguousarray(image),
            "YX",
            pixel_sizes={"X": (PIXEL_UM, "µm"), "Y": (PIXEL_UM, "µm")},
        )
        paths.append(path)
    return paths


def objects_run(inputs: Path, output: Path, settings: InstanceSettings) -> Path:
    """Run the nuclei model over ``inputs`` making objects; the run record's path."""
    request = PredictionRequest(
        model=NUCLEI / "bioimageio.yaml",
        inputs=[inputs],
        output_dir=output,
        device="cpu",
        instances=settings,
        settle_seconds=0.0,
    )
    for _event in run_prediction(request):
        pass
    return output / RECORD_NAME
