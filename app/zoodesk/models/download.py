"""Model downloads from the zoo into the cache.

A download is a plain generator (:func:`download_model`) yielding
:class:`~zoodesk.models.http.Progress` events and accepting a cancel check, so the GUI
can run it in a worker; :func:`download` is the blocking form with a progress bar for
the command line.  The network rules are :mod:`zoodesk.models.http`'s.

Partial files live in ``<cache>/.downloads/`` so that a transfer interrupted for good
(cancelled, network gone) resumes on the next attempt; they are deleted when their
content turns out wrong.  Complete, verified files are assembled in a staging folder
and installed atomically (:mod:`zoodesk.models.cache`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from zoodesk.errors import ChecksumError
from zoodesk.models.cache import (
    CachedModel,
    InstallInfo,
    ModelCache,
    PackageFile,
    referenced_files,
)
from zoodesk.models.catalogue import locate_model
from zoodesk.models.compat import assess
from zoodesk.models.description import parse_description_text
from zoodesk.models.http import (
    CancelCheck,
    DownloadError,
    HttpClient,
    NetworkDisabledError,
    NetworkOptions,
    Progress,
    check_url,
    file_url,
    never_cancelled,
    run_with_progress,
)
from zoodesk.models.package import load_model_package
from zoodesk.settings import Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "WEIGHTS_PREFERENCE",
    "DownloadError",
    "HttpClient",
    "NetworkDisabledError",
    "NetworkOptions",
    "Progress",
    "check_url",
    "choose_weights",
    "download",
    "download_model",
    "file_url",
    "plan_files",
    "run_with_progress",
]

#: Weights formats a download picks, best first.
WEIGHTS_PREFERENCE = ("onnx", "torchscript", "pytorch_state_dict")

# ----------------------------------------------------------------------- model files


def choose_weights(data: Mapping[str, Any], preferred: str | None = None) -> str:
    """The weights format a download fetches: ONNX, else torchscript, else
    pytorch_state_dict; only formats whose file is part of the package count.

    Raises
    ------
    DownloadError
        When ``preferred`` is not offered, or nothing ZooDesk can use is.
    """
    weights = data.get("weights")
    offered = (
        [str(f) for f, w in weights.items() if isinstance(w, Mapping)]
        if isinstance(weights, Mapping)
        else []
    )
    if preferred is not None:
        if preferred not in offered:
            raise DownloadError(
                f"the model has no {preferred!r} weights (it has: {', '.join(offered) or 'none'})"
            )
        return preferred
    for fmt in WEIGHTS_PREFERENCE:
        entry = weights.get(fmt) if isinstance(weights, Mapping) else None
        source = entry.get("source") if isinstance(entry, Mapping) else None
        if source and not str(source).startswith(("http://", "https://")):
            return fmt
    reason = assess(offered).reason
    raise DownloadError(f"nothing to download that ZooDesk can use: {reason}")


def plan_files(
    data: Mapping[str, Any], weights_format: str, origin: str
) -> tuple[list[PackageFile], list[str]]:
    """The package files to fetch for one weights format, and notes on what is skipped."""
    files = []
    notes = []
    for f in referenced_files(data, weights=[weights_format], optional=False, origin=origin):
        if f.is_remote:
            if f.role.startswith("weights:"):
                raise DownloadError(
                    f"{origin}: the {weights_format} weights are only referenced by URL "
                    f"({f.path}); the cache holds package files only"
                )
            notes.append(f"{f.role} {f.path} is outside the package and was not downloaded")
            continue
        files.append(f)
    return files, notes


def _partial_path(folder: Path, url: str, sha256: str | None) -> Path:
    name = sha256 or hashlib.sha256(url.encode()).hexdigest()
    return folder / f"{name[:40]}.part"


def _description_name(url: str) -> str:
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    return name if name.endswith((".yaml", ".yml")) and "/" not in name else "rdf.yaml"


def download_model(
    ref: str,
    *,
    settings: Settings | None = None,
    index_url: str | None = None,
    weights: str | None = None,
    options: NetworkOptions | None = None,
    cancel: CancelCheck | None = None,
    cache: ModelCache | None = None,
) -> Iterator[Progress[CachedModel]]:
    """Download a zoo model into the cache, yielding progress events.

    Parameters
    ----------
    ref
        ``ID`` or ``ID/VERSION``; the ``bioimage-io/`` prefix is optional.  Without a
        version the latest one is fetched.
    settings
        Network settings and cache location (default: :func:`load_settings`).
    index_url
        Collection index to look the model up in when the saved catalogue does not
        know it (default: the settings').
    weights
        Weights format to fetch (default: ONNX, else torchscript, else
        pytorch_state_dict with its architecture file).
    options
        Timeouts, retries and limits.
    cancel
        Called often; returning True stops the download with :class:`CancelledError`
        (finished partial files are kept to resume later).
    cache
        The cache to install into (default: the settings').

    Yields
    ------
    Progress
        The last event carries the installed :class:`CachedModel` as ``result``.

    Raises
    ------
    DownloadError, ChecksumError, CancelledError, ModelPackageError
        Nothing is installed in any of these cases.
    """
    settings = settings or load_settings()
    cache = cache or ModelCache.from_settings(settings)
    cancel = cancel or never_cancelled
    url = index_url or settings.index_url
    with HttpClient(settings, options, zoo=url) as client:

        def index_event(done: int, total: int | None) -> Progress[CachedModel]:
            return Progress("index", f"looking up {ref} in {url}", None, done, total)

        raw_index = yield from client.get_document(url, event=index_event, cancel=cancel)
        where = locate_model(ref, raw_index, url, settings=settings)
        label = f"{where.id} {where.version}"

        def description_event(done: int, total: int | None) -> Progress[CachedModel]:
            return Progress(
                "description", f"fetching the description of {label}", None, done, total
            )

        raw = yield from client.get_document(where.source, event=description_event, cancel=cancel)
        if where.sha256 and hashlib.sha256(raw).hexdigest() != where.sha256:
            raise ChecksumError(
                f"{where.source}: the description does not match the sha256 in the index: refused"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DownloadError(f"{where.source}: the description is not UTF-8 text") from exc
        data = parse_description_text(text, where.source)
        fmt = choose_weights(data, weights)
        files, notes = plan_files(data, fmt, where.source)
        description = _description_name(where.source)
        partials = cache.root / ".downloads"
        try:
            with cache.staging(f"{where.id}-{where.version}", source=where.source) as stage:
                package = stage / "package"
                package.mkdir()
                (package / description).write_bytes(raw)
                known: dict[str, str] = {}
                for index, f in enumerate(files):
                    known[f.path] = yield from _fetch_one(
                        client, where.source, f, package, partials, index, len(files), cancel
                    )
                yield Progress("install", f"checking and installing {label}", unit="items")
                loaded = load_model_package(package / description)
                key = cache.unique_key(where.id, where.version, loaded.spec.name)
                info = InstallInfo(
                    name=loaded.spec.name,
                    id=where.id,
                    version=where.version,
                    model_version=loaded.spec.version,
                    source=where.source,
                    origin="download",
                    description=description,
                    notes=(f"downloaded {fmt} weights", *notes),
                    known_sha256=known,
                    declared=frozenset(f.path for f in files if f.sha256),
                )
                model = cache.install(package, key, info)
        finally:
            with contextlib.suppress(OSError):
                partials.rmdir()  # only when empty
        yield Progress(
            "done",
            f"installed {label} as {model.key}",
            files_done=len(files),
            files_total=len(files),
            unit="items",
            result=model,
        )


def _fetch_one(
    client: HttpClient,
    description_url: str,
    f: PackageFile,
    package: Path,
    partials: Path,
    index: int,
    count: int,
    cancel: CancelCheck,
) -> Generator[Progress[Any], None, str]:
    url = file_url(description_url, f.path)
    part = _partial_path(partials, url, f.sha256)

    def event(done: int, total: int | None) -> Progress[Any]:
        return Progress("file", f"downloading {f.path}", f.path, done, total, "bytes", index, count)

    expected = f.sha256
    for _ in range(2):
        sha, resumed = yield from client.stream_to_file(url, part, event=event, cancel=cancel)
        if expected is None or sha == expected:
            target = package / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            part.replace(target)
            return sha
        part.unlink()
        if not resumed:
            break
        # A resumed transfer may have glued two versions of a file together: one
        # fresh download decides.
    raise ChecksumError(
        f"{url}: sha256 mismatch (the description says {(expected or '')[:12]}..., the downloaded "
        f"file is {sha[:12]}...): refused, nothing was installed"
    )


def download(
    ref: str,
    *,
    settings: Settings | None = None,
    index_url: str | None = None,
    weights: str | None = None,
    options: NetworkOptions | None = None,
    console: Console | None = None,
    show_progress: bool = True,
) -> CachedModel:
    """Blocking :func:`download_model` with a progress bar; returns the cached model."""
    return run_with_progress(
        download_model(
            ref, settings=settings, index_url=index_url, weights=weights, options=options
        ),
        console=console,
        show=show_progress,
    )
