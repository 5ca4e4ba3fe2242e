"""A folder through the nuclei model with bare ONNX Runtime, as one process.

The whole-process baseline of ``bench_predict.py``: import, one CPU session, then
for each TIFF file of the folder read it, normalise it (zero mean, unit variance),
``session.run``, sigmoid, and write the result with tifffile (deflate at level 1,
as ZooDesk writes by default).  No threads, checks, checksums or metadata.

Usage: ``python bare_predict.py WEIGHTS.onnx INPUT_FOLDER OUTPUT_FOLDER``
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tifffile


def main() -> None:
    weights, inputs, outputs = (Path(a) for a in sys.argv[1:4])
    outputs.mkdir(parents=True, exist_ok=True)
    session = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for path in sorted(inputs.glob("*.tif")):
        x = tifffile.imread(path).astype(np.float32)
        x = (x - x.mean()) / (x.std() + 1e-6)
        logits = session.run(None, {name: x[None, None]})[0]
        result = (1 / (1 + np.exp(-logits)))[0, 0].astype(np.float32)
        tifffile.imwrite(
            outputs / path.name, result, compression="zlib", compressionargs={"level": 1}
        )


if __name__ == "__main__":
    main()
