"""The zoo catalogue: what models exist, what they offer, and what ZooDesk can do with them.

A refresh fetches the collection index (``Settings.index_url``, which the environment
variable ``ZOODESK_INDEX_URL`` overrides, or an explicit URL) and every model's
description (the ``source`` of its latest version), and saves everything in
``ZOODESK_HOME/catalogue`` so that it can be browsed offline later:

- ``catalogue.json``: the parsed entries, the index URL and the time of the refresh;
- ``index.json``: the index as fetched;
- ``rdfs/<name>.yaml``: each description as fetched.

Every description yields an entry, whatever its state: one that bioimageio.spec
rejects, that cannot be parsed or fetched, still appears with what could be read and
the reason it cannot run.

A folder laid out like the zoo snapshot (``index.json`` and ``rdfs/<name>.json`` or
``.yaml``) can be read with :func:`catalogue_from_snapshot`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import secrets
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from zoodesk import __version__
from zoodesk.errors import CancelledError, ModelPackageError, ZooDeskError
from zoodesk.fileutils import NestingError, UnsafePathError, parse_json, path_inside
from zoodesk.models.cache import natural_sort_key, slugify, strip_zoo_prefix
from zoodesk.models.compat import Compatibility, assess, compatibility_of_spec
from zoodesk.models.description import parse_description_text
from zoodesk.models.http import (
    HttpClient,
    NetworkOptions,
    Progress,
    run_with_progress,
)
from zoodesk.settings import Settings, load_settings

CATALOGUE_FORMAT = 1
CATALOGUE_FILE = "catalogue.json"
INDEX_FILE = "index.json"
RDFS_DIR = "rdfs"
#: How far in the future a saved catalogue's date may lie (clocks of offline
#: workstations drift, or run on the wrong time zone).  A later date is refused: it
#: would make every catalogue that comes after it look older (the newer one wins).
CLOCK_SKEW = timedelta(days=1)

CancelCheck = Callable[[], bool]


class CatalogueError(ZooDeskError):
    """The catalogue cannot be fetched, read, or does not know a model."""


@dataclass(frozen=True)
class ModelVersion:
    """One published version of a zoo model, as the collection index lists it."""

    version: str
    source: str
    sha256: str | None = None
    created_at: str | None = None
    comment: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source,
            "sha256": self.sha256,
            "created_at": self.created_at,
            "comment": self.comment,
        }


@dataclass(frozen=True)
class ModelLocation:
    """Where to download one version of a model from."""

    id: str
    version: str
    source: str
    sha256: str | None = None


@dataclass(frozen=True)
class CatalogueEntry:
    """A zoo model as the catalogue shows it.

    Attributes
    ----------
    id
        The collection id, e.g. ``bioimage-io/affable-shark``.
    versions
        Published versions, oldest first; the description read is the latest's.
    valid
        True when bioimageio.spec accepts the description (ZooDesk can load it).
    problems
        Why the description cannot be used (validation errors, fetch errors).
    notes
        Remarks that do not prevent use.
    compatibility
        What ZooDesk would do with the model.
    rdf_file
        The saved description, relative to the catalogue folder.
    """

    id: str
    name: str
    versions: tuple[ModelVersion, ...]
    compatibility: Compatibility
    description: str = ""
    tags: tuple[str, ...] = ()
    license: str | None = None
    authors: tuple[str, ...] = ()
    weights_formats: tuple[str, ...] = ()
    format_version: str | None = None
    model_id: str | None = None
    model_version: str | None = None
    spatial_dims: int | None = None
    covers: tuple[str, ...] = ()
    documentation: str | None = None
    valid: bool = False
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    rdf_file: str | None = None
    rdf_sha256: str | None = None

    @property
    def nickname(self) -> str:
        """The id without the collection prefix (``affable-shark``)."""
        return strip_zoo_prefix(self.id)

    @property
    def latest(self) -> ModelVersion | None:
        return self.versions[-1] if self.versions else None

    @property
    def runnable(self) -> bool:
        return self.compatibility.runnable

    def version(self, version: str | None = None) -> ModelVersion:
        """The given version (default: the latest); raises if it does not exist."""
        if version is None and self.latest is not None:
            return self.latest
        for v in self.versions:
            if v.version == version:
                return v
        known = ", ".join(v.version for v in self.versions) or "none"
        raise CatalogueError(f"model {self.id} has no version {version!r} (versions: {known})")

    def file_url(self, path: str, version: str | None = None) -> str:
        """The URL of a package file (e.g. a cover) of the given version."""
        from zoodesk.models.http import file_url

        return file_url(self.version(version).source, path)

    def search_text(self) -> str:
        return " ".join(
            (self.id, self.name, self.model_id or "", self.description, " ".join(self.tags))
        ).lower()

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (inverse of :meth:`from_dict`)."""
        return {
            "id": self.id,
            "name": self.name,
            "versions": [v.as_dict() for v in self.versions],
            "compatibility": self.compatibility.as_dict(),
            "description": self.description,
            "tags": list(self.tags),
            "license": self.license,
            "authors": list(self.authors),
            "weights_formats": list(self.weights_formats),
            "format_version": self.format_version,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "spatial_dims": self.spatial_dims,
            "covers": list(self.covers),
            "documentation": self.documentation,
            "valid": self.valid,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "rdf_file": self.rdf_file,
            "rdf_sha256": self.rdf_sha256,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CatalogueEntry:
        """Rebuild an entry saved with :meth:`as_dict`."""

        def strings(key: str) -> tuple[str, ...]:
            return tuple(str(x) for x in data.get(key) or ())

        dims = data.get("spatial_dims")
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            versions=tuple(
                ModelVersion(
                    version=str(v["version"]),
                    source=str(v["source"]),
                    sha256=v.get("sha256"),
                    created_at=v.get("created_at"),
                    comment=v.get("comment"),
                )
                for v in data.get("versions") or ()
            ),
            compatibility=Compatibility.from_dict(data["compatibility"]),
            description=str(data.get("description") or ""),
            tags=strings("tags"),
            license=data.get("license"),
            authors=strings("authors"),
            weights_formats=strings("weights_formats"),
            format_version=data.get("format_version"),
            model_id=data.get("model_id"),
            model_version=data.get("model_version"),
            spatial_dims=int(dims) if dims is not None else None,
            covers=strings("covers"),
            documentation=data.get("documentation"),
            valid=bool(data.get("valid")),
            problems=strings("problems"),
            notes=strings("notes"),
            rdf_file=data.get("rdf_file"),
            rdf_sha256=data.get("rdf_sha256"),
        )


def format_age(age: timedelta) -> str:
    """``"3 days"``, ``"5 hours"``, ``"2 minutes"``, ``"just now"``."""
    seconds = max(0, int(age.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return "just now"


@dataclass
class Catalogue:
    """The models of the zoo at the time of ``fetched_at``."""

    entries: list[CatalogueEntry]
    fetched_at: datetime
    index_url: str
    folder: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: The ZooDesk version that assessed the entries.
    zoodesk_version: str = __version__
    #: Entries refused while reading the saved catalogue, one line each (not saved).
    warnings: list[str] = field(default_factory=list)

    @property
    def age(self) -> timedelta:
        """How old the catalogue is."""
        return datetime.now(UTC) - self.fetched_at

    def describe_age(self) -> str:
        """E.g. ``"catalogue of 2026-05-20 03:53 UTC (3 days old)"``."""
        when = self.fetched_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        age = format_age(self.age)
        age = "fetched just now" if age == "just now" else f"{age} old"
        return f"catalogue of {when} ({age}), from {self.index_url}"

    def search(
        self,
        query: str | None = None,
        *,
        tags: Iterable[str] = (),
        license: str | None = None,
        weights_format: str | None = None,
        dims: int | None = None,
        runnable: bool | None = None,
    ) -> list[CatalogueEntry]:
        """Entries matching every given criterion.

        Parameters
        ----------
        query
            Words that must all occur in the id, name, description or tags
            (case-insensitive).
        tags
            Tags the entry must all carry (case-insensitive).
        license
            SPDX licence identifier (case-insensitive).
        weights_format
            A weights format the model must offer, e.g. ``"onnx"``.
        dims
            2 or 3: the number of spatial axes of the input.
        runnable
            True: only models ZooDesk can run (possibly after conversion); False: only
            those it cannot.
        """
        words = (query or "").lower().split()
        wanted_tags = {t.lower() for t in tags}
        result = []
        for e in self.entries:
            if words and not all(w in e.search_text() for w in words):
                continue
            if wanted_tags and not wanted_tags <= {t.lower() for t in e.tags}:
                continue
            if license and (e.license or "").lower() != license.lower():
                continue
            if weights_format and weights_format not in e.weights_formats:
                continue
            if dims is not None and e.spatial_dims != dims:
                continue
            if runnable is not None and e.runnable != runnable:
                continue
            result.append(e)
        return result

    def lookup(self, ref: str) -> tuple[CatalogueEntry, str | None] | None:
        """The entry for ``ID`` or ``ID/VERSION`` (zoo prefix optional) and the version."""
        return _lookup(ref, self.entries, lambda e: (e.id, e.model_id))

    def get(self, ref: str) -> CatalogueEntry:
        """The entry for ``ref``; raises :class:`CatalogueError` naming the catalogue."""
        found = self.lookup(ref)
        if found is None:
            raise CatalogueError(f"no model {ref!r} in the {self.describe_age()}")
        entry, version = found
        if version is not None:
            entry.version(version)
        return entry

    def totals(self) -> dict[str, int]:
        """Counts over all entries: per action, 2D/3D, invalid descriptions."""
        actions = Counter(e.compatibility.action for e in self.entries)
        return {
            "models": len(self.entries),
            "run": actions["run"],
            "convert": actions["convert"],
            "convert-with-consent": actions["convert-with-consent"],
            "convert-tensorflow": actions["convert-tensorflow"],
            "none": actions["none"],
            "2D": sum(1 for e in self.entries if e.spatial_dims == 2),
            "3D": sum(1 for e in self.entries if e.spatial_dims == 3),
            "invalid": sum(1 for e in self.entries if not e.valid),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": CATALOGUE_FORMAT,
            "index_url": self.index_url,
            "fetched_at": self.fetched_at.isoformat(),
            "zoodesk_version": self.zoodesk_version,
            "notes": list(self.notes),
            "entries": [e.as_dict() for e in self.entries],
        }


def _lookup(
    ref: str, entries: Iterable[Any], ids: Callable[[Any], tuple[str | None, ...]]
) -> tuple[Any, str | None] | None:
    ref = ref.strip()
    candidates: list[tuple[str, str | None]] = [(ref, None)]
    if "/" in ref:
        head, tail = ref.rsplit("/", 1)
        candidates.append((head, tail))
    items = list(entries)
    for wanted, version in candidates:
        key = strip_zoo_prefix(wanted).lower()
        for item in items:
            if any(i and strip_zoo_prefix(i).lower() == key for i in ids(item)):
                return item, version
    return None


# --------------------------------------------------------------------- reading rdfs


def _strings(values: Any) -> tuple[str, ...]:
    if isinstance(values, str):
        return (values,)
    if not isinstance(values, list):
        return ()
    return tuple(str(v) for v in values if isinstance(v, str | int | float))


def _authors(values: Any) -> tuple[str, ...]:
    names = []
    for a in values if isinstance(values, list) else ():
        if isinstance(a, Mapping) and a.get("name"):
            names.append(str(a["name"]))
        elif isinstance(a, str):
            names.append(a)
    return tuple(names)


def _raw_spatial_dims(data: Mapping[str, Any]) -> int | None:
    dims: list[int] = []
    for tensor in data.get("inputs") or ():
        axes = tensor.get("axes") if isinstance(tensor, Mapping) else None
        if isinstance(axes, str):  # format 0.4: "bcyx"
            dims.append(sum(1 for c in axes.lower() if c in "xyz"))
        elif isinstance(axes, list):
            dims.append(sum(1 for a in axes if isinstance(a, Mapping) and a.get("type") == "space"))
    return max(dims) if dims and max(dims) > 0 else None


def _raw_ops(data: Mapping[str, Any]) -> list[str]:
    ops = []
    for key in ("inputs", "outputs"):
        for tensor in data.get(key) or ():
            if not isinstance(tensor, Mapping):
                continue
            for step in (tensor.get("preprocessing") or []) + (tensor.get("postprocessing") or []):
                if isinstance(step, Mapping):
                    op = step.get("id") or step.get("name")  # 0.5 / 0.4
                    if op:
                        ops.append(str(op))
    return ops


def _validate(data: Mapping[str, Any]) -> tuple[Compatibility | None, list[str], list[str]]:
    """Validate as ZooDesk loads a package: (compatibility when valid, problems, warnings)."""
    from zoodesk.models.description import InvalidDescriptionError, read_model_description

    try:
        read = read_model_description(data, "the description")
    except InvalidDescriptionError as exc:
        return None, list(exc.problems), []
    except ModelPackageError as exc:
        return None, [str(exc).removeprefix("the description: ")], []
    return compatibility_of_spec(read.spec), [], list(read.warnings)


def _restore_json_infinities(data: dict[str, Any]) -> dict[str, Any]:
    """Undo a loss of converting a 0.4 description to JSON.

    YAML writes unbounded ``data_range`` limits as ``-.inf``/``.inf``; JSON cannot hold
    infinities and the zoo's JSON copies carry ``null`` there instead, which format 0.4
    does not allow.
    """
    for key in ("inputs", "outputs"):
        for tensor in data.get(key) or ():
            rng = tensor.get("data_range") if isinstance(tensor, dict) else None
            if isinstance(rng, list) and len(rng) == 2:
                tensor["data_range"] = [
                    -math.inf if rng[0] is None else rng[0],
                    math.inf if rng[1] is None else rng[1],
                ]
    return data


def entry_from_description(
    entry_id: str,
    versions: Iterable[ModelVersion],
    data: Mapping[str, Any] | None,
    *,
    problem: str | None = None,
    notes: Iterable[str] = (),
    rdf_file: str | None = None,
    rdf_sha256: str | None = None,
) -> CatalogueEntry:
    """Build a catalogue entry from a parsed description; never raises on its content.

    Parameters
    ----------
    entry_id
        The collection id.
    versions
        The versions the index lists.
    data
        The parsed description, or None when it could not be obtained.
    problem
        Why there is no description (with ``data`` None).
    notes, rdf_file, rdf_sha256
        Stored on the entry.
    """
    versions = tuple(versions)
    nickname = strip_zoo_prefix(entry_id)
    if data is None or (set(data) == {"error"}):
        reason = problem or f"description unreadable: {str((data or {}).get('error', '')).strip()}"
        reason = reason.splitlines()[0] if reason else "description unavailable"
        return CatalogueEntry(
            id=entry_id,
            name=nickname,
            versions=versions,
            compatibility=Compatibility("none", None, reason),
            problems=(reason,),
            notes=tuple(notes),
            rdf_file=rdf_file,
            rdf_sha256=rdf_sha256,
        )
    weights = data.get("weights")
    # Zoo descriptions may list a format with a null entry: it is not offered.
    formats = (
        tuple(str(f) for f, w in weights.items() if isinstance(w, Mapping))
        if isinstance(weights, Mapping)
        else ()
    )
    raw_dims = _raw_spatial_dims(data)
    problems: list[str] = []
    kind = data.get("type")
    compat: Compatibility | None = None
    if kind != "model":
        problems.append(f"not a model description (type: {kind or 'missing'})")
    else:
        compat, problems, warned = _validate(data)
        notes = (*notes, *warned)
    if compat is None:
        compat = assess(formats, problems=problems, ops=_raw_ops(data), spatial_dims=raw_dims)
    documentation = data.get("documentation")
    version = data.get("version")
    model_id = data.get("id")
    return CatalogueEntry(
        id=entry_id,
        name=str(data.get("name") or nickname),
        versions=versions,
        compatibility=compat,
        description=str(data.get("description") or ""),
        tags=_strings(data.get("tags")),
        license=str(data["license"]) if data.get("license") else None,
        authors=_authors(data.get("authors")),
        weights_formats=formats,
        format_version=str(data["format_version"]) if data.get("format_version") else None,
        model_id=str(model_id) if model_id else None,
        model_version=str(version) if version is not None else None,
        spatial_dims=compat.spatial_dims or raw_dims,
        covers=_strings(data.get("covers")),
        documentation=str(documentation) if isinstance(documentation, str) else None,
        valid=not problems,
        problems=tuple(problems),
        notes=tuple(notes),
        rdf_file=rdf_file,
        rdf_sha256=rdf_sha256,
    )


# ------------------------------------------------------------------------- the index


@dataclass(frozen=True)
class IndexItem:
    """A model listed by the collection index."""

    id: str
    versions: tuple[ModelVersion, ...]

    @property
    def latest(self) -> ModelVersion:
        return self.versions[-1]


def parse_index(raw: bytes, url: str) -> tuple[list[IndexItem], dict[str, Any]]:
    """The model items of a collection index (other item types are skipped)."""
    try:
        index = parse_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        # NestingError says "nested too deeply"; the others are JSON syntax errors.
        what = "" if isinstance(exc, NestingError) else "invalid JSON: "
        raise CatalogueError(f"{url}: not a collection index ({what}{exc})") from exc
    raw_items = index.get("items") if isinstance(index, dict) else None
    if not isinstance(raw_items, list):
        raise CatalogueError(f"{url}: not a collection index (no list of items)")
    items = []
    for item in raw_items:
        if not isinstance(item, Mapping) or item.get("type") != "model" or not item.get("id"):
            continue
        versions = []
        for v in item.get("versions") or ():
            if isinstance(v, Mapping) and v.get("source") and v.get("version") is not None:
                versions.append(
                    ModelVersion(
                        version=str(v["version"]),
                        source=urljoin(url, str(v["source"])),
                        sha256=str(v["sha256"]) if v.get("sha256") else None,
                        created_at=str(v["created_at"]) if v.get("created_at") else None,
                        comment=str(v["comment"]) if v.get("comment") else None,
                    )
                )
        if versions:
            versions.sort(key=lambda v: (v.created_at or "", natural_sort_key(v.version)))
            items.append(IndexItem(str(item["id"]), tuple(versions)))
    return items, index


def _parse_time(text: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# ------------------------------------------------------------------ saving, loading


def catalogue_dir(settings: Settings | None = None) -> Path:
    """Where the catalogue is saved (``ZOODESK_HOME/catalogue``)."""
    return (settings or load_settings()).catalogue_dir


def _rdf_name(entry_id: str) -> str:
    return f"{RDFS_DIR}/{slugify(strip_zoo_prefix(entry_id), 100)}.yaml"


def save_catalogue(
    catalogue: Catalogue, folder: Path, raw_index: bytes, rdfs: Mapping[str, bytes]
) -> Path:
    """Write the catalogue folder atomically (a complete new folder replaces the old).

    ``rdfs`` maps each entry's ``rdf_file`` to the description's bytes.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}-staging-{secrets.token_hex(4)}")
    try:
        (staging / RDFS_DIR).mkdir(parents=True)
        (staging / INDEX_FILE).write_bytes(raw_index)
        for rel, raw in rdfs.items():
            (staging / rel).write_bytes(raw)
        catalogue.folder = folder
        text = json.dumps(catalogue.as_dict(), indent=1, ensure_ascii=False)
        (staging / CATALOGUE_FILE).write_text(text, encoding="utf-8")
        trash = folder.with_name(f".{folder.name}-old-{secrets.token_hex(4)}")
        if folder.exists():
            folder.rename(trash)
        staging.rename(folder)
        shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def check_complete(catalogue: Catalogue) -> Catalogue:
    """``catalogue`` itself when reading it refused none of its entries.

    Raises
    ------
    CatalogueError
        Naming the first refused entry (one line), e.g. for a catalogue that comes
        from elsewhere and is to be adopted as a whole.
    """
    if catalogue.warnings:
        more = len(catalogue.warnings) - 1
        raise CatalogueError(catalogue.warnings[0] + (f" (and {more} more)" if more else ""))
    return catalogue


def install_catalogue_folder(source: Path, folder: Path) -> Catalogue:
    """Copy a saved catalogue folder (e.g. from a bundle) over ``folder`` atomically.

    Raises
    ------
    CatalogueError
        Before anything is copied, when the catalogue is unreadable, dated in the
        future, or has an entry that :func:`load_catalogue` refuses (one line, naming
        the first such entry).
    """
    check_complete(load_catalogue(source))
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}-staging-{secrets.token_hex(4)}")
    try:
        shutil.copytree(source, staging, symlinks=True)
        trash = folder.with_name(f".{folder.name}-old-{secrets.token_hex(4)}")
        if folder.exists():
            folder.rename(trash)
        staging.rename(folder)
        shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_catalogue(folder)


def load_catalogue(folder: Path | None = None) -> Catalogue:
    """Read the saved catalogue (default: ``ZOODESK_HOME/catalogue``) without network.

    An entry whose saved description (``rdf_file``) is not a path inside ``folder``
    (links resolved) is left out, with a line in :attr:`Catalogue.warnings`: such a
    path would make the next refresh copy a file from elsewhere into the catalogue.

    Raises
    ------
    CatalogueError
        When none is saved, it is unreadable, or it is dated more than
        :data:`CLOCK_SKEW` in the future; the message says how to get another.
    """
    folder = Path(folder) if folder is not None else catalogue_dir()
    path = folder / CATALOGUE_FILE
    if not path.is_file():
        raise CatalogueError(
            f"{folder}: no saved catalogue; fetch one with 'zoodesk catalogue refresh' "
            "or import a bundle with 'zoodesk bundle import FILE'"
        )
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
        fetched_at = _parse_time(data["fetched_at"])
        if fetched_at is None:
            raise ValueError(f"bad time {data['fetched_at']!r}")
        entries = [CatalogueEntry.from_dict(e) for e in data["entries"]]
        catalogue = Catalogue(
            entries=[],
            fetched_at=fetched_at,
            index_url=str(data.get("index_url", "")),
            folder=folder,
            notes=[str(n) for n in data.get("notes") or ()],
            zoodesk_version=str(data.get("zoodesk_version", "")),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CatalogueError(
            f"{path}: the saved catalogue is unreadable ({exc}); run 'zoodesk catalogue refresh'"
        ) from exc
    latest = datetime.now(UTC) + CLOCK_SKEW
    if fetched_at > latest:
        raise CatalogueError(
            f"{path}: refused: the catalogue is dated {fetched_at.isoformat()}, later than "
            f"this machine's clock allows ({latest.replace(microsecond=0).isoformat()}); "
            "run 'zoodesk catalogue refresh' or import a bundle to replace it"
        )
    for entry in entries:
        try:
            if entry.rdf_file is not None:
                path_inside(folder, str(entry.rdf_file))
        except UnsafePathError as exc:
            catalogue.warnings.append(f"{path}: refused the entry {entry.id!r}: rdf_file {exc}")
        else:
            catalogue.entries.append(entry)
    return catalogue


def _read_saved_rdf(folder: Path, entry: CatalogueEntry | None) -> bytes | None:
    """The saved description of ``entry``, when it has one inside ``folder``."""
    if entry is None or not entry.rdf_file:
        return None
    try:
        return path_inside(folder, str(entry.rdf_file)).read_bytes()
    except (OSError, UnsafePathError):  # refused with a warning when it was loaded
        return None


def catalogue_from_snapshot(folder: Path) -> Catalogue:
    """Build a catalogue from a folder holding ``index.json`` and ``rdfs/<name>.json|yaml``.

    That is the layout of the zoo snapshot, and of a saved catalogue.  Nothing is
    fetched; a model whose description is missing gets an entry saying so.
    """
    folder = Path(folder).resolve()
    index_path = folder / INDEX_FILE
    try:
        raw_index = index_path.read_bytes()
    except OSError as exc:
        raise CatalogueError(f"{index_path}: cannot read the collection index ({exc})") from exc
    items, index = parse_index(raw_index, index_path.as_uri())
    fetched_at = _parse_time(index.get("timestamp")) or datetime.fromtimestamp(
        index_path.stat().st_mtime, UTC
    )
    entries = []
    for item in items:
        nickname = slugify(strip_zoo_prefix(item.id), 100)
        data: dict[str, Any] | None = None
        problem = None
        rdf_sha = None
        candidates = [folder / RDFS_DIR / f"{nickname}{ext}" for ext in (".json", ".yaml")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            problem = "description not in the snapshot"
        else:
            try:
                raw = path_inside(folder, path.relative_to(folder).as_posix()).read_bytes()
                rdf_sha = hashlib.sha256(raw).hexdigest()
                if path.suffix == ".json":
                    data = _restore_json_infinities(parse_json(raw))
                else:
                    data = parse_description_text(raw.decode("utf-8"), str(path))
            except UnsafePathError as exc:
                problem = f"description refused: {exc}"
            except (ValueError, ModelPackageError) as exc:
                problem = f"description unreadable: {exc}"
        entries.append(
            entry_from_description(
                item.id,
                item.versions,
                data,
                problem=problem,
                rdf_file=path.relative_to(folder).as_posix() if path else None,
                rdf_sha256=rdf_sha,
            )
        )
    return Catalogue(entries, fetched_at, str(index.get("url") or index_path.as_uri()), folder)


# ------------------------------------------------------------------------- refresh


def _fetch_rdf(
    client: HttpClient, version: ModelVersion, cancel: CancelCheck
) -> tuple[bytes | None, str | None]:
    try:
        return client.get_bytes(version.source, cancel=cancel), None
    except CancelledError:
        raise
    except ZooDeskError as exc:
        return None, f"description could not be fetched: {exc}"


def _parse_rdf(raw: bytes, origin: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return parse_description_text(raw.decode("utf-8"), origin), None
    except UnicodeDecodeError:
        return None, "description unreadable: not UTF-8 text"
    except ModelPackageError as exc:
        return None, f"description unreadable: {exc}"


def refresh_catalogue_events(
    *,
    settings: Settings | None = None,
    index_url: str | None = None,
    options: NetworkOptions | None = None,
    cancel: CancelCheck | None = None,
    folder: Path | None = None,
    workers: int = 8,
) -> Iterator[Progress[Catalogue]]:
    """Fetch the index and the descriptions, save the catalogue, yielding progress.

    Descriptions whose sha256 equals that of the saved catalogue's copy are not
    fetched again.  A description that cannot be fetched keeps the previous copy when
    there is one (with a note), else its entry says why it is missing.

    Parameters
    ----------
    settings
        Network settings and ``index_url`` (default: :func:`load_settings`).
    index_url
        Overrides the settings' index URL.
    options
        Timeouts and retries.
    cancel
        Returns True to stop; nothing is saved then.
    folder
        Where to save (default: ``ZOODESK_HOME/catalogue``).
    workers
        Descriptions fetched in parallel.

    Yields
    ------
    Progress
        The last one carries the saved :class:`Catalogue`.
    """
    settings = settings or load_settings()
    url = index_url or settings.index_url
    folder = Path(folder) if folder is not None else settings.catalogue_dir
    cancelled = cancel or (lambda: False)
    previous: dict[str, CatalogueEntry] = {}
    refused: list[str] = []
    # Entries are reused only if this very version of ZooDesk assessed them.
    same_assessment = False
    with contextlib.suppress(CatalogueError):
        saved = load_catalogue(folder)
        previous = {e.id: e for e in saved.entries}
        refused = [f"{line}; its description is fetched again" for line in saved.warnings]
        same_assessment = saved.zoodesk_version == __version__
    with HttpClient(settings, options, zoo=url) as client:

        def index_event(done: int, total: int | None) -> Progress[Catalogue]:
            return Progress("index", f"fetching the collection index {url}", None, done, total)

        raw_index = yield from client.get_document(url, event=index_event, cancel=cancelled)
        items, _ = parse_index(raw_index, url)
        reused: dict[str, bytes] = {}
        for item in items:
            old = previous.get(item.id)
            if old and old.rdf_sha256 and old.rdf_sha256 == item.latest.sha256:
                saved_rdf = _read_saved_rdf(folder, old)
                if saved_rdf is not None:
                    reused[item.id] = saved_rdf
        todo = [i for i in items if i.id not in reused]
        fetched: dict[str, tuple[bytes | None, str | None]] = {}
        total = len(items)
        yield Progress(
            "description", "fetching descriptions", done=len(reused), total=total, unit="items"
        )
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures: dict[Future[tuple[bytes | None, str | None]], IndexItem] = {
                pool.submit(_fetch_rdf, client, i.latest, cancelled): i for i in todo
            }
            try:
                for future in as_completed(futures):
                    item = futures[future]
                    fetched[item.id] = future.result()
                    if cancelled():
                        raise CancelledError("catalogue refresh cancelled")
                    yield Progress(
                        "description",
                        f"fetched {strip_zoo_prefix(item.id)}",
                        done=len(reused) + len(fetched),
                        total=total,
                        unit="items",
                    )
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    entries: list[CatalogueEntry] = []
    rdfs: dict[str, bytes] = {}
    for item in items:
        notes: list[str] = []
        raw, problem = (reused[item.id], None) if item.id in reused else fetched[item.id]
        if raw is None:
            raw = _read_saved_rdf(folder, previous.get(item.id))
            if raw is not None:
                notes.append(f"kept the description of the previous refresh ({problem})")
                problem = None
        if item.id in reused and same_assessment:
            rdfs[_rdf_name(item.id)] = reused[item.id]
            entries.append(
                replace(previous[item.id], versions=item.versions, rdf_file=_rdf_name(item.id))
            )
            continue
        data = None
        rdf_file: str | None = None
        rdf_sha = None
        if raw is not None:
            rdf_file = _rdf_name(item.id)
            rdfs[rdf_file] = raw
            rdf_sha = hashlib.sha256(raw).hexdigest()
            if item.latest.sha256 and rdf_sha != item.latest.sha256 and not notes:
                notes.append("the description does not match the sha256 in the index")
            data, problem = _parse_rdf(raw, item.latest.source)
        entries.append(
            entry_from_description(
                item.id,
                item.versions,
                data,
                problem=problem,
                notes=notes,
                rdf_file=rdf_file,
                rdf_sha256=rdf_sha,
            )
        )
    catalogue = Catalogue(entries, datetime.now(UTC).replace(microsecond=0), url, warnings=refused)
    save_catalogue(catalogue, folder, raw_index, rdfs)
    failed = sum(1 for e in entries if e.problems and e.problems[0].startswith("description could"))
    message = f"catalogue saved: {len(entries)} models"
    if failed:
        message += f" ({failed} descriptions could not be fetched)"
    yield Progress("done", message, done=total, total=total, unit="items", result=catalogue)


def refresh_catalogue(
    *,
    settings: Settings | None = None,
    index_url: str | None = None,
    options: NetworkOptions | None = None,
    folder: Path | None = None,
    show_progress: bool = False,
) -> Catalogue:
    """Blocking :func:`refresh_catalogue_events`; returns the saved catalogue."""
    return run_with_progress(
        refresh_catalogue_events(
            settings=settings, index_url=index_url, options=options, folder=folder
        ),
        show=show_progress,
    )


def locate_model(ref: str, raw_index: bytes, url: str, *, settings: Settings) -> ModelLocation:
    """Where to download ``ID[/VERSION]`` from, according to the live collection index.

    A download fetches the index (``raw_index``, from ``url``) every time, so sources
    and checksums are current even when the saved catalogue is old.  The saved
    catalogue only helps to recognise a description's own id (e.g. the DOI of a
    format 0.4 model) and map it to the collection id.

    Raises
    ------
    CatalogueError
        When the index does not list the model or the version.
    """
    items, _ = parse_index(raw_index, url)
    hit = _lookup(ref, items, lambda i: (i.id,))
    if hit is None:
        with contextlib.suppress(CatalogueError):
            found = load_catalogue(settings.catalogue_dir).lookup(ref)
            if found is not None:
                entry, version = found
                by_id = _lookup(entry.id, items, lambda i: (i.id,))
                hit = (by_id[0], version) if by_id is not None else None
    if hit is None:
        raise CatalogueError(f"no model {ref!r} in the collection index {url}")
    item, version = hit
    if version is None:
        v = item.latest
    else:
        match = [x for x in item.versions if x.version == version]
        if not match:
            known = ", ".join(x.version for x in item.versions)
            raise CatalogueError(f"model {item.id} has no version {version!r} (versions: {known})")
        v = match[0]
    return ModelLocation(item.id, v.version, v.source, v.sha256)
