"""Weights conversion to ONNX: PyTorch, Keras and TensorFlow weights, tested before use.

This layer sits above :mod:`zoodesk.inference`, whose reproducibility check decides
whether converted weights are kept.  The frameworks themselves are only ever
imported by the worker process (:mod:`zoodesk.conversion._worker`).

- :mod:`zoodesk.conversion.pipeline`: the conversion of a cached model
  (:func:`~zoodesk.conversion.pipeline.convert_model`);
- :mod:`zoodesk.conversion.sizes`: which input sizes a converted graph accepts;
- :mod:`zoodesk.conversion.launch`: what this installation can convert, and how
  the worker process starts (also from the standalone application).

Nothing is imported here, so that the command line's start-up stays cheap.
"""
