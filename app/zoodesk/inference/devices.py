"""Execution devices offered by the installed ONNX Runtime.

ONNX Runtime ships as different packages per platform (onnxruntime,
onnxruntime-gpu, onnxruntime-directml); which execution providers exist is only
known at run time.  ``auto`` prefers DirectML, then CUDA, then CoreML, then CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DeviceRequest = Literal["auto", "cpu", "gpu"]

#: GPU providers in order of preference, with the short device name shown to users.
GPU_PROVIDERS: tuple[tuple[str, str, str], ...] = (
    ("DmlExecutionProvider", "directml", "DirectML (Windows GPU)"),
    ("CUDAExecutionProvider", "cuda", "NVIDIA CUDA"),
    ("CoreMLExecutionProvider", "coreml", "Apple CoreML"),
)
CPU_PROVIDER = ("CPUExecutionProvider", "cpu", "CPU")


@dataclass(frozen=True)
class Device:
    """An execution device: its short name, ONNX Runtime provider and description."""

    name: str
    provider: str
    description: str

    @property
    def is_gpu(self) -> bool:
        return self.name != "cpu"

    def as_dict(self) -> dict[str, str | bool]:
        return {
            "name": self.name,
            "provider": self.provider,
            "description": self.description,
            "gpu": self.is_gpu,
        }


def _installed_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def available_devices() -> list[Device]:
    """Devices this installation can use, best first; the CPU is always last."""
    installed = set(_installed_providers())
    devices = [Device(n, p, d) for p, n, d in (*GPU_PROVIDERS, CPU_PROVIDER) if p in installed]
    if not any(d.name == "cpu" for d in devices):
        devices.append(Device(CPU_PROVIDER[1], CPU_PROVIDER[0], CPU_PROVIDER[2]))
    return devices


def device_for_provider(provider: str) -> Device:
    """The :class:`Device` that an ONNX Runtime provider name stands for."""
    for p, n, d in (*GPU_PROVIDERS, CPU_PROVIDER):
        if p == provider:
            return Device(n, p, d)
    return Device(provider.removesuffix("ExecutionProvider").lower(), provider, provider)


def choose_device(request: str) -> tuple[Device, list[str]]:
    """Pick the device for a request of ``auto``, ``cpu`` or ``gpu``.

    Returns the device and the warnings to show: asking for a GPU where none is
    offered falls back to the CPU, and says so.
    """
    devices = available_devices()
    cpu = devices[-1]
    gpus = [d for d in devices if d.is_gpu]
    if request == "cpu":
        return cpu, []
    if request == "gpu":
        if gpus:
            return gpus[0], []
        return cpu, [
            "no GPU execution provider in this installation "
            f"(ONNX Runtime offers: {', '.join(d.provider for d in devices)}); running on the CPU"
        ]
    if request == "auto":
        return (gpus[0] if gpus else cpu), []
    raise ValueError(f"unknown device {request!r}: use auto, cpu or gpu")
