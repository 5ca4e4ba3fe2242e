"""ZooDesk: run BioImage Model Zoo models offline on folders of microscopy images."""

import os

__version__ = "0.1.0"

__all__ = ["__version__"]

# ONNX Runtime (1.29 and later) starts a telemetry uploader on Linux and macOS when its
# first session is created: it writes a device id under ~/.cache/Microsoft, a session
# file in the temporary folder, and tries to reach Microsoft's servers.  ZooDesk runs
# offline on lab workstations and writes only where it says, so it is switched off
# before onnxruntime can be imported (the runtime reads the variable once, at start).
# A user who sets the variable explicitly keeps their choice.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
