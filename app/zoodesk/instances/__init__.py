"""Objects from model outputs: instance segmentation, measurements and counts.

A layer above inference and below batch: :mod:`~zoodesk.instances.settings` says how
objects are made (and proposes a method from a model's outputs),
:mod:`~zoodesk.instances.segment` labels them block by block,
:mod:`~zoodesk.instances.measure` measures them, :mod:`~zoodesk.instances.step` does
all of it for one image and writes the label image and the table.
"""

from typing import TYPE_CHECKING, Any

from zoodesk.instances.settings import (
    CHOICES,
    METHODS,
    InstanceSettings,
    InstanceSettingsError,
    method_unavailable,
    propose,
    resolve,
)

if TYPE_CHECKING:
    from zoodesk.instances.step import InstanceResult, find_instances


def __getattr__(name: str) -> Any:
    # The labelling itself needs scipy and scikit-image, which take a second to
    # import: a run without objects never loads them.
    if name in ("InstanceResult", "find_instances"):
        from zoodesk.instances import step

        return getattr(step, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHOICES",
    "METHODS",
    "InstanceResult",
    "InstanceSettings",
    "InstanceSettingsError",
    "find_instances",
    "method_unavailable",
    "propose",
    "resolve",
]
