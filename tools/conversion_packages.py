"""Build small model packages that exercise weights conversion, with real torch weights.

Each package is a complete bioimage.io 0.5 model: weights made here with torch, its
test input and the output torch computes for it, and a description.  The networks
are tiny (a few convolutions) but have the shapes of what the zoo ships:

==========================  ==========================================================
kind                        what it exercises
==========================  ==========================================================
torchscript-tuple           traced torchscript returning a tuple of two outputs
torchscript-list-2in        scripted torchscript, two inputs, returning a list
torchscript-dict            scripted torchscript returning a dict of two outputs
state-dict                  a state dict with its architecture ``.py`` in the package
state-dict-3d               a 3D state dict (z, y, x)
state-dict-half             output at half the input's size (``scale: 2``)
state-dict-import-from      architecture from an installed module that is missing
==========================  ==========================================================

Usage (with a Python that has torch)::

    python tools/conversion_packages.py OUT_FOLDER [--kind KIND ...]

The descriptions are written as JSON (valid YAML) so that nothing beyond torch and
numpy is needed.  The tests and ``tools/smoke_bundle.py`` use it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

KINDS = (
    "torchscript-tuple",
    "torchscript-list-2in",
    "torchscript-dict",
    "state-dict",
    "state-dict-3d",
    "state-dict-half",
    "state-dict-import-from",
)

#: Architecture code shipped in the state-dict packages.
ARCHITECTURE = '''\
"""Tiny networks for conversion tests."""
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv, 2x2 max pooling, conv, 2x upsampling: even sizes in, same sizes out."""

    def __init__(self, channels=4, dims=2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        self.conv1 = conv(1, channels, 3, padding=1)
        self.pool = pool(2)
        self.conv2 = conv(channels, 1, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        return self.up(self.conv2(torch.relu(self.pool(self.conv1(x)))))


class HalfNet(nn.Module):
    """conv then 2x2 average pooling: the output is half the input's size."""

    def __init__(self, channels=4):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.head = nn.Conv2d(channels, 1, 1)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        return self.pool(self.head(torch.relu(self.conv(x))))


class TwoHeads(nn.Module):
    """One input, two outputs (foreground and boundaries, say) as a tuple."""

    def __init__(self, channels=4):
        super().__init__()
        self.body = TinyNet(channels)
        self.other = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        y = self.body(x)
        return torch.sigmoid(y), self.other(y)


class TwoInputsList(nn.Module):
    """Two inputs, two outputs as a list (as unet2d_multi_tensor does)."""

    def __init__(self, channels=4):
        super().__init__()
        self.a = TinyNet(channels)
        self.b = TinyNet(channels)

    def forward(self, x0, x1):
        return [self.a(x0), self.b(x1) + x0.mean()]


class DictHeads(nn.Module):
    """One input, outputs in a dict keyed by name."""

    def __init__(self, channels=4):
        super().__init__()
        self.body = TinyNet(channels)

    def forward(self, x):
        y = self.body(x)
        return {"probability": torch.sigmoid(y), "logits": y}
'''


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _axes(dims: int, channel: str, size: int) -> list:
    space = [{"type": "space", "id": a, "size": size} for a in "zyx"[3 - dims :]]
    return [{"type": "batch"}, {"type": "channel", "channel_names": [channel]}, *space]


def _tensor(folder: Path, tensor_id: str, axes: list, array: Any) -> dict[str, Any]:
    import numpy as np

    name = f"test_{tensor_id}.npy"
    np.save(folder / name, np.ascontiguousarray(array))
    return {
        "id": tensor_id,
        "axes": axes,
        "test_tensor": {"source": name, "sha256": _sha(folder / name)},
    }


def build(kind: str, folder: Path) -> Path:
    """Write the package ``kind`` into ``folder`` (created); return the folder."""
    import numpy as np
    import torch

    folder.mkdir(parents=True)
    arch_file = folder / "tiny_nets.py"
    arch_file.write_text(ARCHITECTURE, encoding="utf-8")
    # Imported from its file: torch.jit.script reads the source of the classes.
    spec = importlib.util.spec_from_file_location("tiny_nets", arch_file)
    assert spec is not None and spec.loader is not None
    nets = importlib.util.module_from_spec(spec)
    sys.modules["tiny_nets"] = nets
    spec.loader.exec_module(nets)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    dims = 3 if kind == "state-dict-3d" else 2
    size = 16 if dims == 3 else 64
    x = rng.standard_normal((1, 1, *([size] * dims))).astype(np.float32)
    in_axes = _axes(dims, "intensity", size)

    def same_as(tensor_id: str) -> list:
        """Output axes sized like the input ``tensor_id``'s."""
        return [
            {"type": "batch"},
            {"type": "channel", "channel_names": ["prediction"]},
            *(
                {"type": "space", "id": a, "size": {"tensor_id": tensor_id, "axis_id": a}}
                for a in "zyx"[3 - dims :]
            ),
        ]

    inputs = [_tensor(folder, "raw", in_axes, x)]
    weights: dict[str, Any]
    with torch.no_grad():
        if kind == "torchscript-tuple":
            model = nets.TwoHeads().eval()
            traced = torch.jit.trace(model, torch.from_numpy(x))
            traced.save(str(folder / "weights.pt"))
            a, b = model(torch.from_numpy(x))
            outputs = [
                _tensor(folder, "foreground", same_as("raw"), a.numpy()),
                _tensor(folder, "boundaries", same_as("raw"), b.numpy()),
            ]
            weights = {"torchscript": {"source": "weights.pt"}}
        elif kind == "torchscript-list-2in":
            model = nets.TwoInputsList().eval()
            x1 = rng.standard_normal(x.shape).astype(np.float32)
            inputs.append(_tensor(folder, "raw2", in_axes, x1))
            torch.jit.script(model).save(str(folder / "weights.pt"))
            a, b = model(torch.from_numpy(x), torch.from_numpy(x1))
            outputs = [
                _tensor(folder, "out0", same_as("raw"), a.numpy()),
                _tensor(folder, "out1", same_as("raw2"), b.numpy()),
            ]
            weights = {"torchscript": {"source": "weights.pt"}}
        elif kind == "torchscript-dict":
            model = nets.DictHeads().eval()
            torch.jit.script(model).save(str(folder / "weights.pt"))
            result = model(torch.from_numpy(x))
            outputs = [
                _tensor(folder, "probability", same_as("raw"), result["probability"].numpy()),
                _tensor(folder, "logits", same_as("raw"), result["logits"].numpy()),
            ]
            weights = {"torchscript": {"source": "weights.pt"}}
        elif kind.startswith("state-dict"):
            half = kind == "state-dict-half"
            model = (nets.HalfNet() if half else nets.TinyNet(dims=dims)).eval()
            y = model(torch.from_numpy(x)).numpy()
            torch.save(model.state_dict(), folder / "weights.pt")
            out_axes = same_as("raw")
            if half:
                for axis in out_axes[2:]:
                    axis["scale"] = 2.0
            outputs = [_tensor(folder, "out", out_axes, y)]
            architecture: dict[str, Any] = {
                "callable": "HalfNet" if half else "TinyNet",
                "kwargs": {} if half else {"channels": 4, "dims": dims},
            }
            entry: dict[str, Any] = {"source": "weights.pt", "architecture": architecture}
            if kind == "state-dict-import-from":
                architecture["import_from"] = "zoodesk_absent_architectures.nets"
                (folder / "environment.yaml").write_text(
                    "name: tiny\ndependencies:\n  - pip:\n    - zoodesk-absent-architectures\n",
                    encoding="utf-8",
                )
                entry["dependencies"] = {
                    "source": "environment.yaml",
                    "sha256": _sha(folder / "environment.yaml"),
                }
            else:
                architecture["source"] = arch_file.name
                architecture["sha256"] = _sha(arch_file)
            weights = {"pytorch_state_dict": entry}
        else:
            raise SystemExit(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    for entry in weights.values():
        entry["sha256"] = _sha(folder / entry["source"])
        entry["pytorch_version"] = torch.__version__.split("+")[0]
    (folder / "README.md").write_text(f"# {kind}\n\nA tiny test network.\n", encoding="utf-8")
    description = {
        "format_version": "0.5.4",
        "type": "model",
        "name": f"tiny {kind}",
        "description": f"A tiny network for conversion tests ({kind}).",
        "authors": [{"name": "ZooDesk tests"}],
        "cite": [{"text": "ZooDesk", "url": "https://example.com/zoodesk"}],
        "license": "MIT",
        "documentation": "README.md",
        "timestamp": "2026-01-01T00:00:00",
        "inputs": inputs,
        "outputs": outputs,
        "weights": weights,
    }
    (folder / "bioimageio.yaml").write_text(json.dumps(description, indent=1), encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the packages into")
    parser.add_argument("--kind", action="append", choices=KINDS, default=None)
    args = parser.parse_args(argv)
    for kind in args.kind or KINDS:
        print(build(kind, args.out / kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
