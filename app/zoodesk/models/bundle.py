"""Offline bundles: the catalogue and chosen cached models in one file.

A bundle moves everything an air-gapped workstation needs on a USB stick.  It is a
zip file, named ``*.zdbundle`` by convention, laid out as::

    zoodesk-bundle.json          what the bundle holds (format, models, catalogue)
    catalogue/catalogue.json     the saved catalogue (optional), with
    catalogue/index.json         the collection index and
    catalogue/rdfs/*.yaml        the descriptions it was built from
    models/<key>/...             each model's cache folder, manifest included

Model files are stored uncompressed (weights do not compress and a ratio check
guards the import against zip bombs); the catalogue is compressed.

Importing validates the archive (:mod:`zoodesk.models.archive`), checks every
member's size against the model manifests before extracting anything, extracts
into the cache's staging area, re-checks every file's sha256 against its model's
manifest and against the sha256 the model's description declares (a manifest edited
to match a changed file does not pass), loads every description, and only then
installs each model atomically.  The catalogue replaces the local one when there is
none or when the bundle's is newer; a bundle catalogue that
:func:`~zoodesk.models.catalogue.install_catalogue_folder` refuses (an entry naming a
file outside the catalogue, a date in the future) is not installed, and the models
are installed all the same.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from zoodesk import __version__
from zoodesk.errors import ModelPackageError, ZooDeskError
from zoodesk.fileutils import atomic_path, parse_json
from zoodesk.models.archive import safe_extract_zip, validate_zip
from zoodesk.models.cache import (
    MANIFEST_NAME,
    CachedModel,
    CacheError,
    ModelCache,
    check_declared,
    check_folder,
)
from zoodesk.models.catalogue import (
    CATALOGUE_FILE,
    Catalogue,
    CatalogueError,
    check_complete,
    install_catalogue_folder,
    load_catalogue,
)
from zoodesk.settings import Settings, load_settings

BUNDLE_SUFFIX = ".zdbundle"
BUNDLE_MANIFEST = "zoodesk-bundle.json"
BUNDLE_FORMAT = 1
#: Largest bundle that will be unpacked (several large models).
MAX_BUNDLE_BYTES = 64 * 1024**3
_MAX_MANIFEST_BYTES = 16 * 1024**2


class BundleError(ZooDeskError):
    """A bundle cannot be written or read, or is not trustworthy."""


@dataclass(frozen=True)
class BundleExport:
    """What :func:`export_bundle` wrote."""

    path: Path
    models: tuple[CachedModel, ...]
    catalogue: Catalogue | None
    size: int


@dataclass(frozen=True)
class BundleImport:
    """What :func:`import_bundle` installed.

    ``catalogue`` is the installed catalogue, None when the bundle has none, the
    local one is newer, or the bundle's is refused (``catalogue_refused``);
    ``catalogue_note`` says which in one line.
    """

    path: Path
    models: tuple[CachedModel, ...]
    catalogue: Catalogue | None
    catalogue_note: str
    catalogue_refused: bool = False


def _bundle_path(path: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.suffix else path.with_suffix(BUNDLE_SUFFIX)


def export_bundle(
    path: Path,
    models: Sequence[str],
    *,
    settings: Settings | None = None,
    include_catalogue: bool = True,
) -> BundleExport:
    """Write the saved catalogue and the given cached models into one bundle file.

    Every model is verified first: a damaged model is never exported.

    Parameters
    ----------
    path
        The bundle to write (``.zdbundle`` is appended when the name has no suffix);
        written under a temporary name and renamed when complete.
    models
        Cached model keys or ids (``ID[/VERSION]``).
    settings
        Locations of the cache and catalogue (default: :func:`load_settings`).
    include_catalogue
        Also carry the saved catalogue, when there is one.
    """
    settings = settings or load_settings()
    cache = ModelCache.from_settings(settings)
    chosen: dict[str, CachedModel] = {}
    for ref in models:
        model = cache.find(ref)
        chosen[model.key] = model
    for model in chosen.values():
        report = cache.verify(model)
        if not report.ok:
            first = report.damage[0]
            raise BundleError(
                f"{model.root}: not exported: {first.path} is {first.problem}; "
                "run 'zoodesk models verify' and download or import the model again"
            )
    catalogue: Catalogue | None = None
    if include_catalogue:
        try:
            catalogue = load_catalogue(settings.catalogue_dir)
        except CatalogueError:
            catalogue = None
    manifest: dict[str, Any] = {
        "format": "zoodesk-bundle",
        "format_version": BUNDLE_FORMAT,
        "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "zoodesk_version": __version__,
        "catalogue": None
        if catalogue is None
        else {
            "fetched_at": catalogue.fetched_at.isoformat(),
            "index_url": catalogue.index_url,
            "models": len(catalogue.entries),
        },
        "models": [
            {
                "key": m.key,
                "id": m.id,
                "version": m.version,
                "name": m.name,
                "files": len(m.files),
                "size": m.size,
            }
            for m in chosen.values()
        ],
    }
    target = _bundle_path(path)
    with atomic_path(target, suffix=BUNDLE_SUFFIX) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr(BUNDLE_MANIFEST, json.dumps(manifest, indent=2), zipfile.ZIP_DEFLATED)
        if catalogue is not None and catalogue.folder is not None:
            for file in _files_under(catalogue.folder):
                rel = file.relative_to(catalogue.folder).as_posix()
                zf.write(file, f"catalogue/{rel}", zipfile.ZIP_DEFLATED)
        for model in chosen.values():
            for rel in [MANIFEST_NAME, *(f.path for f in model.files)]:
                zf.write(model.root / rel, f"models/{model.key}/{rel}", zipfile.ZIP_STORED)
    return BundleExport(target, tuple(chosen.values()), catalogue, target.stat().st_size)


def _files_under(folder: Path) -> Iterable[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def read_bundle_manifest(path: Path) -> dict[str, Any]:
    """The ``zoodesk-bundle.json`` of a bundle, after checking it is one."""
    path = Path(path).expanduser()
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(BUNDLE_MANIFEST)
            if info.file_size > _MAX_MANIFEST_BYTES:
                raise BundleError(f"{path}: refused: {BUNDLE_MANIFEST} is implausibly large")
            data = parse_json(zf.read(info))
    except KeyError as exc:
        raise BundleError(f"{path}: not a ZooDesk bundle (no {BUNDLE_MANIFEST})") from exc
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BundleError(f"{path}: not a readable ZooDesk bundle ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != "zoodesk-bundle":
        raise BundleError(f"{path}: not a ZooDesk bundle ({BUNDLE_MANIFEST} is not ours)")
    if data.get("format_version") != BUNDLE_FORMAT:
        raise BundleError(
            f"{path}: bundle format {data.get('format_version')!r} is not supported "
            f"by this ZooDesk {__version__} (expected {BUNDLE_FORMAT})"
        )
    return data


def _check_members(path: Path, members: list[zipfile.ZipInfo], keys: set[str]) -> None:
    """Refuse members outside the bundle layout or whose size differs from the manifests."""
    declared: dict[str, int] = {}
    with zipfile.ZipFile(path) as zf:
        for key in keys:
            name = f"models/{key}/{MANIFEST_NAME}"
            try:
                info = zf.getinfo(name)
            except KeyError as exc:
                raise BundleError(f"{path}: model {key!r} has no {MANIFEST_NAME}") from exc
            if info.file_size > _MAX_MANIFEST_BYTES:
                raise BundleError(f"{path}: refused: {name} is implausibly large")
            try:
                files = parse_json(zf.read(info))["files"]
                for f in files:
                    declared[f"models/{key}/{f['path']}"] = int(f["size"])
            except (ValueError, KeyError, TypeError) as exc:
                raise BundleError(f"{path}: {name} is not a readable manifest ({exc})") from exc
    for info in members:
        parts = PurePosixPath(info.filename).parts
        if info.filename == BUNDLE_MANIFEST or parts[0] == "catalogue":
            continue
        if len(parts) < 3 or parts[0] != "models" or parts[1] not in keys:
            raise BundleError(f"{path}: refused member {info.filename!r}: not part of the bundle")
        if parts[2:] == (MANIFEST_NAME,):
            continue
        size = declared.get(info.filename)
        if size is None:
            raise BundleError(
                f"{path}: refused member {info.filename!r}: not listed in its model's manifest"
            )
        if info.file_size != size:
            raise BundleError(
                f"{path}: refused member {info.filename!r}: {info.file_size} bytes where "
                f"the manifest declares {size}"
            )


def import_bundle(path: Path, *, settings: Settings | None = None) -> BundleImport:
    """Install the models (and the catalogue) of a bundle; no network is used.

    Either every model of the bundle is installed or none: all are checked before
    the first is installed.  Models already cached with the same id and version are
    replaced.

    Raises
    ------
    BundleError, ModelPackageError, ChecksumError
        With a one-line message naming the bundle and the problem.
    """
    settings = settings or load_settings()
    path = Path(path).expanduser()
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    manifest = read_bundle_manifest(path)
    members = validate_zip(path, MAX_BUNDLE_BYTES)
    try:
        keys = {str(m["key"]) for m in manifest.get("models") or ()}
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{path}: {BUNDLE_MANIFEST} lists models without keys") from exc
    if any(k.startswith(".") or "/" in k or "\\" in k or not k for k in keys):
        raise BundleError(f"{path}: refused: a model key in {BUNDLE_MANIFEST} is not a plain name")
    _check_members(path, members, keys)
    cache = ModelCache.from_settings(settings)
    with cache.staging("bundle", source=str(path)) as stage:
        unpacked = safe_extract_zip(path, stage / "bundle", MAX_BUNDLE_BYTES)
        pending: list[tuple[Path, CachedModel]] = []
        for key in sorted(keys):
            root = unpacked / "models" / key
            try:
                model = CachedModel.from_manifest(root)
            except CacheError as exc:
                raise BundleError(f"{path}: model {key!r}: {exc}") from exc
            # The bundle's manifest is written by whoever made the bundle: the sha256
            # the description declares must hold too, as for 'models import'.
            damage = check_folder(root, model) or check_declared(
                root, model.description, origin=f"{path}: model {key!r}"
            )
            if damage:
                first = damage[0]
                more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
                raise BundleError(
                    f"{path}: model {key!r}: {first.path}: {first.problem}{more}; nothing installed"
                )
            try:
                model.load()
            except ModelPackageError as exc:
                raise BundleError(f"{path}: model {key!r} does not load: {exc}") from exc
            pending.append((root, model))
        installed = tuple(
            cache.reinstall_from(root, model, checked=True) for root, model in pending
        )
        try:
            catalogue, note = _install_catalogue(unpacked / "catalogue", settings)
        except CatalogueError as exc:
            # Named as inside the bundle, not by the staging folder that is gone next.
            shown = str(exc).replace(f"{unpacked}{os.sep}", "")
            refused = f"{path}: the bundle's catalogue is not installed: {shown}"
            return BundleImport(path, installed, None, refused, catalogue_refused=True)
    return BundleImport(path, installed, catalogue, note)


def _install_catalogue(folder: Path, settings: Settings) -> tuple[Catalogue | None, str]:
    if not (folder / CATALOGUE_FILE).is_file():
        return None, "the bundle carries no catalogue"
    incoming = check_complete(load_catalogue(folder))
    try:
        local = load_catalogue(settings.catalogue_dir)
    except CatalogueError:
        local = None
    if local is not None and local.fetched_at >= incoming.fetched_at:
        return None, f"kept the local {local.describe_age()} (not older than the bundle's)"
    installed = install_catalogue_folder(folder, settings.catalogue_dir)
    return installed, f"installed the {installed.describe_age()}"
