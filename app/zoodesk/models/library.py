"""The model library: built-in, cached and catalogue models in one searchable list.

The desktop application shows every model a user can reach in one list: the
built-in demo model, the models in the local cache, and the zoo catalogue (the
saved one: nothing here touches the network).  A catalogue model that is also
cached appears once, as the cached model, with the catalogue's information
attached.  Building the list reads manifests and the saved catalogue only; loading
a model package (slow: it validates the description) is left to the caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from zoodesk.errors import ZooDeskError
from zoodesk.models.cache import CachedModel, ModelCache, strip_zoo_prefix
from zoodesk.models.catalogue import Catalogue, CatalogueEntry, CatalogueError, load_catalogue
from zoodesk.models.compat import Compatibility, architecture_missing, assess
from zoodesk.settings import Settings, load_settings

Origin = Literal["builtin", "cached", "catalogue"]
#: The filter values of :meth:`Library.search`'s ``show`` argument.
SHOW_CHOICES = ("all", "installed", "catalogue")

DEMO_ITEM_ID = "builtin:demo"


@dataclass(frozen=True)
class LibraryItem:
    """One model of the library.

    Attributes
    ----------
    item_id
        Unique within a library: ``builtin:demo``, ``cache:<key>`` or ``zoo:<id>``.
    origin
        ``"builtin"`` (ships with ZooDesk), ``"cached"`` (installed) or
        ``"catalogue"`` (in the zoo, not installed).
    description_path
        The local description file of an installed model; None for catalogue models.
    cached, entry
        The cache manifest and the catalogue entry, where they exist.
    compatibility
        What ZooDesk can do with the model, as far as known without loading it.
    """

    item_id: str
    name: str
    origin: Origin
    compatibility: Compatibility
    description: str = ""
    model_id: str | None = None
    version: str | None = None
    tags: tuple[str, ...] = ()
    license: str | None = None
    authors: tuple[str, ...] = ()
    weights_formats: tuple[str, ...] = ()
    spatial_dims: int | None = None
    description_path: Path | None = None
    cached: CachedModel | None = None
    entry: CatalogueEntry | None = None

    @property
    def installed(self) -> bool:
        """True when the model can be used without downloading anything."""
        return self.description_path is not None

    @property
    def origin_label(self) -> str:
        """``"built in"``, ``"installed"`` or ``"in the zoo"``."""
        return {"builtin": "built in", "cached": "installed", "catalogue": "in the zoo"}[
            self.origin
        ]

    @property
    def download_ref(self) -> str | None:
        """What :func:`zoodesk.models.download_model` needs to fetch this model."""
        if self.entry is not None:
            return self.entry.id
        return None

    def search_text(self) -> str:
        """Lower-case text that a search query is matched against."""
        return " ".join(
            (
                self.name,
                self.model_id or "",
                self.cached.key if self.cached else "",
                self.description,
                " ".join(self.tags),
                " ".join(self.authors),
            )
        ).lower()


@dataclass
class Library:
    """The models a user can reach, and where the catalogue part comes from.

    Attributes
    ----------
    items
        Installed models first (built-in, then cached by name), then the catalogue.
    catalogue
        The saved catalogue, None when there is none.
    catalogue_note
        A readable line: the catalogue's date and age, or why there is none.
    """

    items: list[LibraryItem]
    catalogue: Catalogue | None
    catalogue_note: str

    def get(self, item_id: str) -> LibraryItem | None:
        """The item with this id, or None."""
        return next((i for i in self.items if i.item_id == item_id), None)

    def search(
        self,
        query: str = "",
        *,
        show: str = "all",
        runnable_only: bool = False,
        dims: int | None = None,
        weights_format: str | None = None,
    ) -> list[LibraryItem]:
        """Items matching every criterion.

        Parameters
        ----------
        query
            Words that must all occur in the name, id, description, tags or authors.
        show
            ``"all"``, ``"installed"`` (built-in and cached) or ``"catalogue"`` (not
            installed).
        runnable_only
            Only models ZooDesk can run, possibly after converting their weights.
        dims
            2 or 3: the number of spatial axes of the input.
        weights_format
            A weights format the model must offer, e.g. ``"onnx"``.
        """
        if show not in SHOW_CHOICES:
            raise ValueError(f"unknown library filter {show!r}: use one of {SHOW_CHOICES}")
        words = query.lower().split()
        found = []
        for item in self.items:
            if show == "installed" and not item.installed:
                continue
            if show == "catalogue" and item.installed:
                continue
            if runnable_only and not item.compatibility.runnable:
                continue
            if dims is not None and item.spatial_dims != dims:
                continue
            if weights_format and weights_format not in item.weights_formats:
                continue
            if words and not all(w in item.search_text() for w in words):
                continue
            found.append(item)
        return found

    def weights_formats(self) -> list[str]:
        """Every weights format some item offers, sorted."""
        return sorted({f for i in self.items for f in i.weights_formats})


def _demo_item() -> LibraryItem | None:
    from zoodesk.demo import demo_model_path

    try:
        path = demo_model_path()
    except ZooDeskError:
        return None
    # The demo description is fixed: read the few fields shown in the list without
    # the (slow) validation that loading the package performs.
    from zoodesk.models.cache import read_description_data

    data = read_description_data(path)
    formats = tuple(str(f) for f in data.get("weights") or {})
    return LibraryItem(
        item_id=DEMO_ITEM_ID,
        name=str(data.get("name", "demo")),
        origin="builtin",
        compatibility=assess(formats, spatial_dims=2),
        description=str(data.get("description", "")),
        model_id=str(data.get("id")) if data.get("id") else None,
        version=str(data.get("version")) if data.get("version") else None,
        tags=tuple(str(t) for t in data.get("tags") or ()),
        license=str(data.get("license")) if data.get("license") else None,
        authors=tuple(str(a.get("name")) for a in data.get("authors") or () if isinstance(a, dict)),
        weights_formats=formats,
        spatial_dims=2,
        description_path=path,
    )


def _missing_architecture(model: CachedModel) -> str | None:
    """The architecture file a cached state dict names but the cache lacks, if any."""
    from zoodesk.models.cache import read_description_data, referenced_files

    try:
        data = read_description_data(model.description_path)
        files = referenced_files(data, weights=["pytorch_state_dict"], optional=False)
    except ZooDeskError:
        return None
    return next(
        (
            f.path
            for f in files
            if f.role == "architecture" and not f.is_remote and not (model.root / f.path).is_file()
        ),
        None,
    )


def _cached_item(model: CachedModel, entry: CatalogueEntry | None) -> LibraryItem:
    if entry is not None:
        compat = entry.compatibility
        # The cache may hold fewer formats than the zoo offers (a download fetches one).
        if set(model.weights_formats) != set(entry.weights_formats):
            compat = assess(model.weights_formats, spatial_dims=entry.spatial_dims)
    else:
        compat = assess(model.weights_formats)
    if compat.weights_format == "pytorch_state_dict":
        missing = _missing_architecture(model)
        if missing is not None:
            compat = architecture_missing(compat, missing)
    return LibraryItem(
        item_id=f"cache:{model.key}",
        name=model.name,
        origin="cached",
        compatibility=compat,
        description=entry.description if entry else "",
        model_id=model.id,
        version=model.version or model.model_version,
        tags=entry.tags if entry else (),
        license=entry.license if entry else None,
        authors=entry.authors if entry else (),
        weights_formats=model.weights_formats,
        spatial_dims=entry.spatial_dims if entry else compat.spatial_dims,
        description_path=model.description_path,
        cached=model,
        entry=entry,
    )


def _catalogue_item(entry: CatalogueEntry) -> LibraryItem:
    latest = entry.latest
    return LibraryItem(
        item_id=f"zoo:{entry.id}",
        name=entry.name,
        origin="catalogue",
        compatibility=entry.compatibility,
        description=entry.description,
        model_id=entry.id,
        version=latest.version if latest else entry.model_version,
        tags=entry.tags,
        license=entry.license,
        authors=entry.authors,
        weights_formats=entry.weights_formats,
        spatial_dims=entry.spatial_dims,
        entry=entry,
    )


def _entry_for(model: CachedModel, entries: Iterable[CatalogueEntry]) -> CatalogueEntry | None:
    if not model.id:
        return None
    wanted = strip_zoo_prefix(model.id).lower()
    for entry in entries:
        ids = (entry.id, entry.model_id)
        if any(i and strip_zoo_prefix(i).lower() == wanted for i in ids):
            return entry
    return None


def build_library(
    settings: Settings | None = None,
    *,
    include_demo: bool = True,
    catalogue: Catalogue | None = None,
) -> Library:
    """Gather the built-in, cached and saved-catalogue models into one :class:`Library`.

    Parameters
    ----------
    settings
        Where the cache and the saved catalogue are (default: :func:`load_settings`).
    include_demo
        List the built-in demo model first.
    catalogue
        Use this catalogue instead of the saved one.
    """
    settings = settings or load_settings()
    note = ""
    if catalogue is None:
        try:
            catalogue = load_catalogue(settings.catalogue_dir)
        except CatalogueError as exc:
            note = f"no saved catalogue ({exc})"
    if catalogue is not None:
        note = catalogue.describe_age()
    entries = list(catalogue.entries) if catalogue is not None else []
    items: list[LibraryItem] = []
    if include_demo:
        with contextlib.suppress(ZooDeskError):
            demo = _demo_item()
            if demo is not None:
                items.append(demo)
    claimed: set[str] = set()
    cached_items = []
    for model in ModelCache.from_settings(settings).list():
        entry = _entry_for(model, entries)
        if entry is not None:
            claimed.add(entry.id)
        cached_items.append(_cached_item(model, entry))
    items.extend(sorted(cached_items, key=lambda i: (i.name.lower(), i.item_id)))
    items.extend(
        sorted(
            (_catalogue_item(e) for e in entries if e.id not in claimed),
            key=lambda i: i.name.lower(),
        )
    )
    return Library(items, catalogue, note)
