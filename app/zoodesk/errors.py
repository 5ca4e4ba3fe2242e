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
