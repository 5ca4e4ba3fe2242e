"""A folder through a model with bioimageio.core, as one process.

The whole-process comparison of ``bench_predict.py``: load the description, build
bioimageio.core's prediction pipeline on the CPU with the ONNX weights, then for
each TIFF file of the folder read it (tifffile), predict with the pipeline (its own
pre- and postprocessing) and write the output with tifffile (deflate, level 1).

Usage: ``python core_predict.py PACKAGE_FOLDER INPUT_FOLDER OUTPUT_FOLDER``
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import tifffile
from bioimageio.core import (
    Sample,
    Tensor,
    create_prediction_pipeline,
    load_description,
)


def main() -> None:
    package, inputs, outputs = (Path(a) for a in sys.argv[1:4])
    outputs.mkdir(parents=True, exist_ok=True)
    descr = load_description(package / "bioimageio.yaml", perform_io_checks=False)
    input_id = descr.inputs[0].id
    with create_prediction_pipeline(descr, weight_format="onnx", devices=["cpu"]) as pipeline:
        for i, path in enumerate(sorted(inputs.glob("*.tif"))):
            x = tifffile.imread(path).astype(np.float32)[None, None]
            tensor = Tensor.from_numpy(x, dims=("batch", "channel", "y", "x"))
            sample = Sample(members={input_id: tensor}, stat={}, id=i)
            out = pipeline.predict_sample_with_blocking(sample)
            result = next(iter(out.members.values())).data.to_numpy()[0, 0]
            tifffile.imwrite(
                outputs / path.name,
                result.astype(np.float32),
                compression="zlib",
                compressionargs={"level": 1},
            )


if __name__ == "__main__":
    main()
