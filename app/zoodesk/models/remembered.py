"""Validated model descriptions, remembered in ZooDesk's own fast form.

Validating a description with bioimageio.spec takes most of a short run's time
(importing its pydantic models alone takes over a second).  The result the engine
needs, a :class:`~zoodesk.models.spec.ModelSpec`, depends on nothing but the
description's bytes, so it is kept as JSON under ``ZOODESK_HOME/descriptions``,
named by the sha256 of those bytes: a description seen once (from the cache or given
by path) is read back from there, and a changed description has another sha256 and
is validated again.  Each file also names the ZooDesk and bioimageio.spec versions
that made it; another version validates again.  A remembered file that cannot be
read is ignored (and replaced).
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import json
import logging
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from zoodesk import __version__
from zoodesk.fileutils import atomic_write_text
from zoodesk.models import spec as spec_module
from zoodesk.models.spec import ModelSpec
from zoodesk.versions import installed_versions

log = logging.getLogger(__name__)

SCHEMA = "zoodesk-description/1"
FOLDER_NAME = "descriptions"
_TUPLE = "__tuple__"


@cache
def _versions() -> dict[str, str]:
    spec_version = installed_versions(["bioimageio.spec"]).get("bioimageio.spec", "")
    return {"zoodesk": __version__, "bioimageio.spec": spec_version}


def _encode(value: Any) -> Any:
    """JSON-ready, with tuples marked so that they come back as tuples."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(spec_module))


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds (directly or as ``X | None``), if any."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if isinstance(arg, type) and dataclasses.is_dataclass(arg):
            return arg
    return None


def _decode(value: Any, hint: Any) -> Any:
    if isinstance(value, dict) and set(value) == {_TUPLE}:
        inner = typing.get_args(hint)
        item_hint = inner[0] if inner else Any
        return tuple(_decode(v, item_hint) for v in value[_TUPLE])
    origin = typing.get_origin(hint)
    if isinstance(value, dict) and origin in (Mapping, dict, collections.abc.Mapping):
        args = typing.get_args(hint)
        value_hint = args[1] if len(args) == 2 else Any
        return {k: _decode(v, value_hint) for k, v in value.items()}
    target = _dataclass_of(hint)
    if target is not None and isinstance(value, dict):
        return _build(target, value)
    if isinstance(value, dict):
        return {k: _decode(v, Any) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, Any) for v in value]
    return value


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    hints = _hints(cls)
    return cls(**{name: _decode(data[name], hints[name]) for name in hints if name in data})


def spec_to_data(spec: ModelSpec) -> dict[str, Any]:
    """The spec as JSON-ready data (:func:`spec_from_data` gives it back, equal)."""
    return typing.cast(dict[str, Any], _encode(spec))


def spec_from_data(data: Mapping[str, Any]) -> ModelSpec:
    """The spec from :func:`spec_to_data`'s output."""
    return typing.cast(ModelSpec, _build(ModelSpec, data))


def _path(home: Path, sha256: str) -> Path:
    return home / FOLDER_NAME / f"{sha256}.json"


def recall(home: Path, sha256: str) -> tuple[ModelSpec, tuple[str, ...]] | None:
    """The remembered spec and warnings of the description with this sha256, if any."""
    path = _path(home, sha256)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if (
            data.get("schema") != SCHEMA
            or data.get("description_sha256") != sha256
            or data.get("versions") != _versions()
        ):
            return None
        return spec_from_data(data["spec"]), tuple(str(w) for w in data.get("warnings", ()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # A damaged or foreign file: validate again and replace it.
        log.debug("ignoring remembered description %s", path, exc_info=True)
        return None


def remember(home: Path, sha256: str, spec: ModelSpec, warnings: tuple[str, ...]) -> None:
    """Keep a validated description's spec for :func:`recall` (best effort)."""
    document = {
        "schema": SCHEMA,
        "description_sha256": sha256,
        "versions": _versions(),
        "warnings": list(warnings),
        "spec": spec_to_data(spec),
    }
    with contextlib.suppress(OSError):
        path = _path(home, sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(document, allow_nan=True))
