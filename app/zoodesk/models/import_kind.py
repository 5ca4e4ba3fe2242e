"""What a file or folder given to the model library is: a model package, a bundle, or neither.

Used where paths arrive without saying what they are (dropped on the library,
opened from the file manager), to pick the import that takes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from zoodesk.models.package import DESCRIPTION_NAMES, DESCRIPTION_PATTERNS

ImportKind = Literal["model", "bundle"]

#: What the library imports, for messages refusing anything else.
IMPORTABLE = (
    "a model zip, a model folder (with rdf.yaml or bioimageio.yaml) or an offline bundle "
    "(.zdbundle)"
)


def import_kind(path: Path) -> ImportKind | None:
    """``"bundle"`` for an offline bundle, ``"model"`` for a model zip, a model
    description or a folder holding one, None for anything else."""
    from zoodesk.models.bundle import BUNDLE_SUFFIX

    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix == BUNDLE_SUFFIX:
            return "bundle"
        if suffix == ".zip" or _is_description_name(path.name):
            return "model"
        return None
    if path.is_dir():
        if any((path / name).is_file() for name in DESCRIPTION_NAMES):
            return "model"
        if any(next(path.glob(pattern), None) for pattern in DESCRIPTION_PATTERNS):
            return "model"
    return None


def _is_description_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in DESCRIPTION_NAMES or lowered.endswith(
        tuple(p.lstrip("*") for p in DESCRIPTION_PATTERNS)
    )
