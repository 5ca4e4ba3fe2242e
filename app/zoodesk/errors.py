"""Errors that carry a message meant for the user.

Every error raised on purpose by ZooDesk derives from :class:`ZooDeskError`.  Its
message is a single readable line naming the file or model concerned and the
problem; the command line prints it without a traceback and the GUI shows it in a
dialog.
"""

from __future__ import annotations


class ZooDeskError(Exception):
    """Base class of all errors whose message is written for the user."""


class ModelPackageError(ZooDeskError):
    """A model package or description cannot be loaded or is inconsistent."""


class ChecksumError(ModelPackageError):
    """A file's sha256 does not match the one its description declares."""


class UnsupportedWeightsError(ModelPackageError):
    """The package offers no weights format that ZooDesk can execute."""


class ImageReadError(ZooDeskError):
    """An input image cannot be read or is not usable."""


class AxesMismatchError(ZooDeskError):
    """An image's axes cannot be mapped to the model's input axes."""


class ShapeError(ZooDeskError):
    """An image's shape cannot be brought to a shape the model accepts."""


class DeviceError(ZooDeskError):
    """The requested execution device cannot be used."""


class CancelledError(ZooDeskError):
    """The user cancelled a long-running task."""


class NotEnoughMemoryError(ZooDeskError):
    """An array the task needs is larger than the memory that can be allocated."""


def not_enough_memory(exc: MemoryError, subject: object = None, task: str = "for this task") -> str:
    """The one line for an allocation that failed.

    ``subject`` (a file, a model) starts the line when given; numpy's own message,
    which says how much it tried to allocate, follows in brackets.
    """
    head = f"{subject}: " if subject is not None else ""
    detail = str(exc).strip()
    return f"{head}not enough memory {task}" + (f" ({detail})" if detail else "")
