"""Models: descriptions, packages, the local cache, the zoo catalogue, downloads, bundles.

:func:`resolve_model` turns what a user types as MODEL (a path, a cache key, a zoo
id) into a loaded :class:`ModelPackage`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoodesk.errors import ModelPackageError

if TYPE_CHECKING:
    from zoodesk.models.bundle import (
        BUNDLE_SUFFIX,
        BundleError,
        BundleExport,
        BundleImport,
        export_bundle,
        import_bundle,
    )
    from zoodesk.models.cache import (
        CachedFile,
        CachedModel,
        CacheError,
        ModelCache,
        VerifyReport,
        model_key,
    )
    from zoodesk.models.catalogue import (
        Catalogue,
        CatalogueEntry,
        CatalogueError,
        catalogue_from_snapshot,
        load_catalogue,
        refresh_catalogue,
        refresh_catalogue_events,
    )
    from zoodesk.models.compat import Compatibility, assess, compatibility_of_spec
    from zoodesk.models.download import (
        DownloadError,
        NetworkDisabledError,
        NetworkOptions,
        Progress,
        download,
        download_model,
        run_with_progress,
    )
    from zoodesk.models.package import ModelPackage, load_model_package
    from zoodesk.settings import Settings

#: Where each public name lives: imported on first use, so that a command that only
#: loads a package never imports the catalogue's network stack (httpx) or bundles.
_HOMES = {
    **dict.fromkeys(
        ("BUNDLE_SUFFIX", "BundleError", "BundleExport", "BundleImport", "export_bundle",
         "import_bundle"),
        "bundle",
    ),
    **dict.fromkeys(
        ("CachedFile", "CachedModel", "CacheError", "ModelCache", "VerifyReport", "model_key"),
        "cache",
    ),
    **dict.fromkeys(
        ("Catalogue", "CatalogueEntry", "CatalogueError", "catalogue_from_snapshot",
         "load_catalogue", "refresh_catalogue", "refresh_catalogue_events"),
        "catalogue",
    ),
    **dict.fromkeys(("Compatibility", "assess", "compatibility_of_spec"), "compat"),
    **dict.fromkeys(
        ("DownloadError", "NetworkDisabledError", "NetworkOptions", "Progress", "download",
         "download_model", "run_with_progress"),
        "download",
    ),
    **dict.fromkeys(("ModelPackage", "load_model_package"), "package"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"zoodesk.models.{home}"), name)


__all__ = [
    "BUNDLE_SUFFIX",
    "BundleError",
    "BundleExport",
    "BundleImport",
    "CacheError",
    "CachedFile",
    "CachedModel",
    "Catalogue",
    "CatalogueEntry",
    "CatalogueError",
    "Compatibility",
    "DownloadError",
    "ModelCache",
    "ModelPackage",
    "NetworkDisabledError",
    "NetworkOptions",
    "Progress",
    "VerifyReport",
    "assess",
    "catalogue_from_snapshot",
    "compatibility_of_spec",
    "download",
    "download_model",
    "export_bundle",
    "import_bundle",
    "load_catalogue",
    "load_model_package",
    "model_key",
    "refresh_catalogue",
    "refresh_catalogue_events",
    "resolve_model",
    "run_with_progress",
]

_PACKAGE_SUFFIXES = (".zip", ".yaml", ".yml")


def resolve_model(name_or_path: str, settings: Settings | None = None) -> ModelPackage:
    """Load the model a user named: a package path, a cache key or a zoo id.

    Parameters
    ----------
    name_or_path
        A model folder, description file (``.yaml``) or ``.zip``, loaded directly;
        otherwise a cache key (``affable-shark-v0``) or a zoo id with or without the
        ``bioimage-io/`` prefix and with an optional ``/VERSION``, resolved to the
        cached package.
    settings
        Where the cache is (default: :func:`load_settings`).

    Raises
    ------
    ModelPackageError
        When nothing matches; the message lists what was tried.
    """
    from zoodesk.models.cache import ModelCache
    from zoodesk.models.package import load_model_package

    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if path.exists():
        return load_model_package(path)
    cache = ModelCache.from_settings(settings)
    cached = cache.lookup(text) if text else None
    if cached is not None:
        return cached.load()
    keys = [m.key for m in cache.list()]
    tried = [f"no file or folder {str(path)!r}", f"no cached model with key or id {text!r}"]
    looks_like_path = path.suffix.lower() in _PACKAGE_SUFFIXES or text.startswith((".", "~"))
    hint = (
        "check the path"
        if looks_like_path
        else f"download it with 'zoodesk models download {text}' or import it with "
        "'zoodesk models import PATH'"
    )
    listing = f"cached: {', '.join(keys)}" if keys else f"the cache {cache.root} is empty"
    raise ModelPackageError(f"model {text!r} not found: {'; '.join(tried)} ({listing}); {hint}")
