"""The local model cache: ``ZOODESK_HOME/models/<key>/``.

Each cached model is a folder holding the package files (the description and the
files it refers to) and a cache manifest, ``zoodesk-cache.json``: the model's id,
version, where it came from, when it was installed, and every file with its size and
sha256.  A folder without a readable manifest is not a cached model.

Writes are atomic: a model is assembled in a hidden staging folder next to its final
place (same file system), checked, given its manifest, and only then renamed to
``<key>``.  A failed download or import therefore never leaves anything that looks
usable.  Replacing a model renames the old folder to ``.trash-<key>-<hex>`` and the new
one to ``<key>``; a process that dies between the two renames leaves the old model in
the trash, and the next use of the cache puts it back.  Folders are deleted by
renaming them to ``.removed-...`` first, so a half-deleted folder never looks usable.

The key names a model on the command line: ``<id>-<version>`` made file-name safe
(``affable-shark-v0``), or a slug of the model's name when the description has no id.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zoodesk.errors import ChecksumError, ModelPackageError, ZooDeskError
from zoodesk.fileutils import (
    UnsafePathError,
    is_no_space,
    parse_json,
    path_inside,
    relative_parts,
    sha256_file,
    write_error_reason,
)
from zoodesk.models.archive import safe_extract_zip
from zoodesk.models.description import read_description_data
from zoodesk.models.integrity import (
    MANIFEST_NAME,
    declared_mismatch,
    recorded_mismatch,
)
from zoodesk.models.package import (
    ModelPackage,
    find_description,
    load_model_package,
)
from zoodesk.settings import Settings, load_settings

MANIFEST_FORMAT = 1
#: Zoo ids carry this collection prefix; ZooDesk accepts ids with or without it.
ZOO_PREFIX = "bioimage-io/"
#: Leftover staging folders older than this are removed (a crashed install).
_STALE_SECONDS = 3600
#: A replaced model until its replacement has the final name: ``.trash-<key>-<hex>``.
_TRASH = re.compile(r"\.trash-(?P<key>.+)-[0-9a-f]{8}")
#: A folder being deleted.
_REMOVED_PREFIX = ".removed-"


class CacheError(ZooDeskError):
    """A cached model is missing, damaged or cannot be installed."""


# ---------------------------------------------------------------------- descriptions


def dump_description(data: Mapping[str, Any]) -> str:
    """Serialize a description dictionary as YAML."""
    from ruyaml import YAML

    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.allow_unicode = True
    buffer = io.StringIO()
    yaml.dump(dict(data), buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class PackageFile:
    """A file a description refers to.

    ``path`` is a relative POSIX path inside the package, or a URL for remote files;
    ``role`` says what the file is for (``weights:onnx``, ``test_input``, ``cover``...).
    """

    path: str
    sha256: str | None
    role: str

    @property
    def is_remote(self) -> bool:
        return self.path.startswith(("http://", "https://"))


def safe_relative_path(path: str, origin: str) -> str:
    """Normalise a file reference of a description; refuse ones that leave the package
    (the rules of :func:`zoodesk.fileutils.relative_parts`)."""
    try:
        return "/".join(relative_parts(path.strip()))
    except UnsafePathError as exc:
        raise ModelPackageError(
            f"{origin}: refused file reference {path!r}: it leaves the package"
        ) from exc


def _manifest_path(root: Path, path: Any) -> str:
    """A path from a manifest, relative to ``root``, once sure to stay inside it."""
    return path_inside(root, str(path)).relative_to(root).as_posix()


def _source_and_sha(value: Any) -> tuple[str | None, str | None]:
    if isinstance(value, str):
        return value, None
    if isinstance(value, Mapping):
        source = value.get("source")
        sha = value.get("sha256")
        return (str(source) if source else None), (str(sha) if sha else None)
    return None, None


def _listed(value: object) -> list[Any]:
    """``value`` if it is a list; nothing otherwise (validation names the mistake later)."""
    return value if isinstance(value, list) else []


def _is_v04(data: Mapping[str, Any]) -> bool:
    return str(data.get("format_version", "")).startswith("0.4") or "test_inputs" in data


def referenced_files(
    data: Mapping[str, Any],
    *,
    weights: Iterable[str] | None = None,
    optional: bool = True,
    origin: str = "description",
) -> list[PackageFile]:
    """The files a raw description refers to (formats 0.4 and 0.5).

    Parameters
    ----------
    data
        The parsed description.
    weights
        Weights formats to include (with their architecture and dependency files);
        None includes all.
    optional
        Include sample tensors and attachments as well (test tensors, covers and the
        documentation are always included).
    origin
        Named in errors.

    Returns
    -------
    list of PackageFile
        Each file once, relative paths checked with :func:`safe_relative_path`.
    """
    found: dict[str, PackageFile] = {}

    def add(source: str | None, sha256: str | None, role: str) -> None:
        if not source:
            return
        source = str(source)
        path = source if source.startswith(("http://", "https://")) else None
        if path is None:
            path = safe_relative_path(source, origin)
        if path not in found or (sha256 and not found[path].sha256):
            found[path] = PackageFile(path, sha256, role)

    v04 = _is_v04(data)
    wanted = None if weights is None else set(weights)
    all_weights = data.get("weights")
    for fmt, entry in all_weights.items() if isinstance(all_weights, Mapping) else ():
        if (wanted is not None and fmt not in wanted) or not isinstance(entry, Mapping):
            continue
        add(*_source_and_sha(entry), f"weights:{fmt}")
        arch = entry.get("architecture")
        if v04 and isinstance(arch, str) and ".py:" in arch:
            add(arch.rsplit(":", 1)[0], entry.get("architecture_sha256"), "architecture")
        elif isinstance(arch, Mapping) and arch.get("source"):
            add(*_source_and_sha(arch), "architecture")
        deps = entry.get("dependencies")
        if isinstance(deps, str) and ":" in deps:
            add(deps.split(":", 1)[1], None, "dependencies")
        elif isinstance(deps, Mapping):
            add(*_source_and_sha(deps), "dependencies")
    if v04:
        for key, role in (("test_inputs", "test_input"), ("test_outputs", "test_output")):
            for item in _listed(data.get(key)):
                add(*_source_and_sha(item), role)
        if optional:
            for key in ("sample_inputs", "sample_outputs"):
                for item in _listed(data.get(key)):
                    add(*_source_and_sha(item), "sample")
    else:
        for key, role in (("inputs", "test_input"), ("outputs", "test_output")):
            for tensor in _listed(data.get(key)):
                if not isinstance(tensor, Mapping):
                    continue
                add(*_source_and_sha(tensor.get("test_tensor")), role)
                if optional:
                    add(*_source_and_sha(tensor.get("sample_tensor")), "sample")
    for cover in _listed(data.get("covers")):
        add(*_source_and_sha(cover), "cover")
    add(*_source_and_sha(data.get("documentation")), "documentation")
    if optional:
        attachments = data.get("attachments")
        if isinstance(attachments, Mapping):  # format 0.4: {"files": [...]}
            attachments = attachments.get("files")
        for item in attachments if isinstance(attachments, list) else ():
            add(*_source_and_sha(item), "attachment")
    return list(found.values())


# ----------------------------------------------------------------------- keys, names


def strip_zoo_prefix(model_id: str) -> str:
    """``bioimage-io/affable-shark`` -> ``affable-shark``."""
    return model_id[len(ZOO_PREFIX) :] if model_id.startswith(ZOO_PREFIX) else model_id


def slugify(text: str, max_length: int = 60) -> str:
    """A lower-case file-name-safe slug: letters, digits, ``.``, ``_`` and ``-``."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-._")
    return slug[:max_length].rstrip("-._") or "model"


def model_key(model_id: str | None, version: str | None, name: str) -> str:
    """The cache key for a model: ``<id>-<version>``, or a slug of its name without id."""
    base = slugify(strip_zoo_prefix(model_id)) if model_id else slugify(name)
    return f"{base}-{slugify(version, 20)}" if version else base


def natural_sort_key(text: str | None) -> tuple[tuple[int, int | str], ...]:
    """Sort versions like people do: ``v2`` before ``v10``, ``1.2`` before ``1.10``."""
    parts = re.split(r"(\d+)", text or "")
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in parts if p)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# -------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class CachedFile:
    """One file of a cached model, as recorded at installation."""

    path: str
    sha256: str
    size: int
    declared: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "declared": self.declared,
        }


@dataclass(frozen=True)
class CachedModel:
    """A model installed in the cache, as its manifest describes it.

    Attributes
    ----------
    key
        The folder name and the name commands accept as MODEL.
    id, version
        Zoo id (``bioimage-io/affable-shark``) and zoo version (``v0``) for downloads;
        the description's own id and version for imports (None when absent).
    model_version
        The ``version`` field of the description.
    source
        The description's URL, or the path it was imported from.
    origin
        ``"download"``, ``"import"`` or ``"bundle"``.
    description
        The description file, relative to ``root``.
    files
        Every file of the folder except the manifest.
    weights_formats
        The weights formats whose files are present in the cache.
    """

    key: str
    root: Path
    name: str
    id: str | None
    version: str | None
    source: str
    origin: str
    description: str
    files: tuple[CachedFile, ...]
    installed_at: datetime
    model_version: str | None = None
    weights_formats: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def description_path(self) -> Path:
        return self.root / self.description

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def load(self) -> ModelPackage:
        """Load the cached package: validates the description and checks it against the
        manifest; the other files are checked when used (:meth:`ModelPackage.verify`)."""
        return load_model_package(self.description_path)

    def matches_id(self, model_id: str, version: str | None = None) -> bool:
        """True when this is model ``model_id`` (zoo prefix optional) at ``version``."""
        if not self.id:
            return False
        if strip_zoo_prefix(self.id).lower() != strip_zoo_prefix(model_id).lower():
            return False
        return version is None or version in (self.version, self.model_version)

    def as_dict(self) -> dict[str, Any]:
        """The manifest content (JSON-ready)."""
        return {
            "format": MANIFEST_FORMAT,
            "key": self.key,
            "name": self.name,
            "id": self.id,
            "version": self.version,
            "model_version": self.model_version,
            "source": self.source,
            "origin": self.origin,
            "description": self.description,
            "installed_at": self.installed_at.isoformat(),
            "weights_formats": list(self.weights_formats),
            "notes": list(self.notes),
            "files": [f.as_dict() for f in self.files],
        }

    @classmethod
    def from_manifest(cls, root: Path) -> CachedModel:
        """Read the manifest of the cached model in ``root``.

        Every path it lists must stay inside ``root`` (links resolved): a manifest
        that names a file elsewhere on the machine is refused, so that neither a
        check nor an export ever reads that file.
        """
        path = root / MANIFEST_NAME
        try:
            data = parse_json(path.read_text(encoding="utf-8"))
            files = tuple(
                CachedFile(
                    path=_manifest_path(root, f["path"]),
                    sha256=str(f["sha256"]),
                    size=int(f["size"]),
                    declared=bool(f.get("declared", False)),
                )
                for f in data["files"]
            )
            return cls(
                key=root.name,
                root=root,
                name=str(data["name"]),
                id=data.get("id"),
                version=data.get("version"),
                model_version=data.get("model_version"),
                source=str(data.get("source", "")),
                origin=str(data.get("origin", "import")),
                description=_manifest_path(root, data["description"]),
                files=files,
                installed_at=datetime.fromisoformat(str(data["installed_at"])),
                weights_formats=tuple(str(w) for w in data.get("weights_formats") or ()),
                notes=tuple(str(n) for n in data.get("notes") or ()),
            )
        except UnsafePathError as exc:
            raise CacheError(f"{path}: refused: path {exc}") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"{path}: not a readable cache manifest ({exc})") from exc


@dataclass(frozen=True)
class FileDamage:
    """A file of a cached model that is missing or no longer matches its sha256."""

    path: str
    problem: str


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of re-checking every file of a cached model."""

    model: CachedModel
    checked: int
    damage: tuple[FileDamage, ...]

    @property
    def ok(self) -> bool:
        return not self.damage

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.model.key,
            "ok": self.ok,
            "checked": self.checked,
            "damage": [{"path": d.path, "problem": d.problem} for d in self.damage],
        }


@dataclass(frozen=True)
class InstallInfo:
    """What the caller knows about a model being installed (the rest is computed)."""

    name: str
    id: str | None
    version: str | None
    source: str
    origin: str
    description: str
    model_version: str | None = None
    notes: tuple[str, ...] = ()
    #: sha256 already computed (e.g. while downloading), to avoid hashing twice.
    known_sha256: Mapping[str, str] = field(default_factory=dict)
    #: Files whose sha256 the description declares.
    declared: frozenset[str] = frozenset()


# ----------------------------------------------------------------------------- cache


class ModelCache:
    """The models installed under one folder (normally ``ZOODESK_HOME/models``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ModelCache:
        """The cache the settings point to."""
        return cls((settings or load_settings()).models_dir)

    # ---- reading

    def list(self) -> list[CachedModel]:
        """Every cached model with a readable manifest, sorted by key."""
        if not self.root.is_dir():
            return []
        self._recover()
        models = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not (child / MANIFEST_NAME).is_file():
                continue
            with contextlib.suppress(CacheError):
                models.append(CachedModel.from_manifest(child))
        return models

    def get(self, key: str) -> CachedModel:
        """The cached model with this exact key."""
        root = self.root / key
        self._recover()
        if key.startswith(".") or "/" in key or "\\" in key or not (root / MANIFEST_NAME).is_file():
            raise CacheError(f"no cached model with key {key!r} in {self.root}")
        return CachedModel.from_manifest(root)

    def find(self, ref: str) -> CachedModel:
        """Find a cached model by key, or by id with an optional ``/VERSION``.

        Ids may carry the ``bioimage-io/`` prefix or not.  Without a version the
        highest cached version is returned.

        Raises
        ------
        CacheError
            Naming what was tried and the keys that are cached.
        """
        found = self.lookup(ref)
        if found is not None:
            return found
        if (self.root / ref / MANIFEST_NAME).is_file():
            return self.get(ref)  # a model whose manifest is refused: say why
        keys = [m.key for m in self.list()]
        cached = f"cached: {', '.join(keys)}" if keys else "the cache is empty"
        raise CacheError(
            f"no cached model {ref!r} in {self.root}: no key {ref!r}, no model with id "
            f"{strip_zoo_prefix(ref)!r} ({cached})"
        )

    def lookup(self, ref: str) -> CachedModel | None:
        """Like :meth:`find` but returns None when nothing matches."""
        ref = ref.strip()
        if not ref:
            return None
        models = self.list()
        for m in models:
            if m.key == ref or m.key == ref.lower():
                return m
        candidates: list[tuple[str, str | None]] = [(ref, None)]
        if "/" in ref:
            head, tail = ref.rsplit("/", 1)
            candidates.append((head, tail))
        for model_id, version in candidates:
            matches = [m for m in models if m.matches_id(model_id, version)]
            if matches:
                matches.sort(key=lambda m: (natural_sort_key(m.version), m.installed_at))
                return matches[-1]
        return None

    def verify(self, model: CachedModel | str) -> VerifyReport:
        """Re-check every file of a cached model against its recorded sha256."""
        if isinstance(model, str):
            model = self.find(model)
        damage: list[FileDamage] = []
        hashes: dict[str, str] = {}
        for f in model.files:
            path = model.root / f.path
            if not path.is_file():
                damage.append(FileDamage(f.path, "missing"))
                continue
            actual = hashes[f.path] = sha256_file(path)
            if actual != f.sha256:
                damage.append(FileDamage(f.path, recorded_mismatch(f.sha256, actual)))
        # A file and the manifest can be rewritten together: the sha256 the description
        # declares must hold as well (the description itself is checked above).
        flagged = {d.path for d in damage}
        declared = check_declared(
            model.root, model.description, origin=str(model.description_path), hashes=hashes
        )
        damage.extend(d for d in declared if d.path not in flagged)
        return VerifyReport(model, len(model.files), tuple(damage))

    # ---- writing

    def remove(self, model: CachedModel | str) -> CachedModel:
        """Remove a cached model (renamed away first, so it disappears at once)."""
        if isinstance(model, str):
            model = self.find(model)
        try:
            self._discard(model.root, strict=True)
        except OSError as exc:
            raise CacheError(f"{model.root}: cannot remove the cached model ({exc})") from exc
        return model

    def _discard(self, folder: Path, *, strict: bool = False) -> None:
        """Delete a folder of the cache: renamed away first, so it disappears at once."""
        removed = self.root / f"{_REMOVED_PREFIX}{folder.name.lstrip('.')}-{secrets.token_hex(4)}"
        try:
            folder.rename(removed)
        except OSError:
            if strict:
                raise
            return  # the next clean-up tries again
        shutil.rmtree(removed, ignore_errors=True)

    def _recover(self) -> None:
        """Put back a model whose replacement was interrupted between its two renames.

        A ``.trash-<key>-<hex>`` folder without a ``<key>`` folder is the old model of
        a process that died while replacing it (:meth:`install`).
        """
        with contextlib.suppress(OSError):  # a read-only cache: nothing to do
            for child in sorted(self.root.iterdir()):
                found = _TRASH.fullmatch(child.name)
                if found is None or not (child / MANIFEST_NAME).is_file():
                    continue
                final = self.root / found["key"]
                if not os.path.lexists(final):
                    with contextlib.suppress(OSError):
                        child.rename(final)

    def _clean_leftovers(self) -> None:
        """Remove what interrupted writes left: trash, folders being deleted, old staging."""
        if not self.root.is_dir():
            return
        self._recover()
        now = time.time()
        for child in self.root.iterdir():
            name = child.name
            with contextlib.suppress(OSError):
                if name.startswith(_REMOVED_PREFIX):
                    shutil.rmtree(child, ignore_errors=True)
                elif _TRASH.fullmatch(name) or (
                    name.startswith(".staging-") and now - child.stat().st_mtime > _STALE_SECONDS
                ):
                    # A trash folder left now has its replacement in place (_recover).
                    self._discard(child)

    @contextlib.contextmanager
    def staging(self, label: str = "model", *, source: str | None = None) -> Iterator[Path]:
        """A fresh hidden folder in the cache to assemble a model in.

        It is removed when the block ends, whether the model was installed from it
        (its content then moved away) or not.  A disk that fills up meanwhile is
        reported in one line (:class:`CacheError`) naming ``source`` (what was being
        installed) and the cache folder.
        """
        path = self.root / f".staging-{slugify(label, 40)}-{secrets.token_hex(4)}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._clean_leftovers()
            path.mkdir()
            yield path
        except OSError as exc:
            if not is_no_space(exc):
                raise
            head = f"{source}: " if source else ""
            raise CacheError(
                f"{head}cannot write into {self.root}: {write_error_reason(exc)}"
            ) from exc
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def unique_key(self, model_id: str | None, version: str | None, name: str) -> str:
        """The key for a model; a suffix is added if another model already uses it.

        A cached model with the same id and version (or, without id, the same name)
        keeps its key: installing it again replaces it.
        """
        base = model_key(model_id, version, name)
        key = base
        n = 1
        while (self.root / key).exists():
            try:
                existing = CachedModel.from_manifest(self.root / key)
            except CacheError:
                existing = None
            same = existing is not None and (existing.id, existing.version) == (model_id, version)
            if same and existing is not None and (model_id or existing.name == name):
                return key
            n += 1
            key = f"{base}-{n}"
        return key

    def install(self, package_root: Path, key: str, info: InstallInfo) -> CachedModel:
        """Give ``package_root`` (a folder inside a staging folder) its manifest and
        move it into the cache under ``key``, replacing a model with that key.

        The package must already be checked; this only records and renames.
        """
        package_root = Path(package_root)
        files: list[CachedFile] = []
        for path in sorted(p for p in package_root.rglob("*") if p.is_file() or p.is_symlink()):
            rel = path.relative_to(package_root).as_posix()
            if path.is_symlink():
                raise CacheError(f"{path}: refused: links are not allowed in a cached model")
            if rel == MANIFEST_NAME:
                continue
            sha = info.known_sha256.get(rel) or sha256_file(path)
            files.append(CachedFile(rel, sha, path.stat().st_size, rel in info.declared))
        formats = _present_weights_formats(package_root / info.description)
        model = CachedModel(
            key=key,
            root=self.root / key,
            name=info.name,
            id=info.id,
            version=info.version,
            model_version=info.model_version,
            source=info.source,
            origin=info.origin,
            description=info.description,
            files=tuple(files),
            installed_at=_now(),
            weights_formats=formats,
            notes=info.notes,
        )
        manifest = package_root / MANIFEST_NAME
        manifest.write_text(json.dumps(model.as_dict(), indent=2), encoding="utf-8")
        final = self.root / key
        if not final.exists():
            package_root.rename(final)
            return model
        trash = self.root / f".trash-{key}-{secrets.token_hex(4)}"
        try:
            final.rename(trash)
        except OSError as exc:
            raise CacheError(f"{final}: cannot replace the cached model ({exc})") from exc
        # A crash from here until the new folder has the final name leaves the old model
        # in the trash: the next use of the cache puts it back (_recover).  The trash is
        # deleted only once the new folder is in place.
        try:
            package_root.rename(final)
        except OSError as exc:
            with contextlib.suppress(OSError):  # gone if another process put it back
                trash.rename(final)
            raise CacheError(f"{final}: cannot replace the cached model ({exc})") from exc
        self._discard(trash)
        return model

    # ---- import

    def import_package(self, source: str | Path) -> CachedModel:
        """Copy a model package (zip, folder or description file) into the cache.

        The package is validated with bioimageio.spec and every file whose sha256 the
        description declares is checked; a zip is extracted safely
        (:mod:`zoodesk.models.archive`) straight into the cache's staging area, so no
        file is written outside the cache.

        Returns
        -------
        CachedModel
            The installed model; its ``key`` is the name later commands accept.
        """
        path = Path(source).expanduser()
        if not path.exists():
            raise ModelPackageError(f"{path}: no such file or folder")
        with self.staging("import", source=str(path)) as stage:
            if path.is_file() and path.suffix.lower() == ".zip":
                unpacked = safe_extract_zip(path, stage / "package")
                package_root, description = _locate_description(unpacked, path)
            elif path.is_dir() or path.suffix.lower() in (".yaml", ".yml"):
                folder, description = (
                    _locate_description(path, path) if path.is_dir() else (path.parent, path.name)
                )
                package_root = stage / "package"
                _copy_package_files(folder.resolve(), description, package_root)
            else:
                raise ModelPackageError(
                    f"{path}: not a model package "
                    "(expected a folder, a .zip or a description .yaml)"
                )
            display = (
                f"{path} ({description})"
                if path.is_file() and path.suffix.lower() == ".zip"
                else str(path / description if path.is_dir() else path)
            )
            return self._check_and_install(
                package_root, description, str(path.resolve()), display_name=display
            )

    def _check_and_install(
        self,
        package_root: Path,
        description: str,
        source: str,
        origin: str = "import",
        *,
        display_name: str | None = None,
    ) -> CachedModel:
        # A cache manifest carried by the package (a zipped cache folder) is not ours:
        # the installed model gets its own.
        (package_root / MANIFEST_NAME).unlink(missing_ok=True)
        package = load_model_package(package_root / description, display_name=display_name)
        data = read_description_data(package_root / description)
        # bioimageio.spec's warnings, and the metadata read leniently, stay with the model.
        notes: list[str] = [f"description: {w}" for w in package.warnings]
        for ref in referenced_files(data, origin=source):
            if not ref.is_remote and not (package_root / ref.path).is_file():
                notes.append(f"{ref.path} ({ref.role}) is not in the package")
        known: dict[str, str] = {}
        damage = check_declared(package_root, description, origin=source, hashes=known)
        if damage:
            raise ChecksumError(f"{source}: {damage[0].path}: {damage[0].problem}: refused")
        declared = set(known)
        spec = package.spec
        key = self.unique_key(spec.id, spec.version, spec.name)
        info = InstallInfo(
            name=spec.name,
            id=spec.id,
            version=spec.version,
            model_version=spec.version,
            source=source,
            origin=origin,
            description=description,
            notes=tuple(notes),
            known_sha256=known,
            declared=frozenset(declared),
        )
        return self.install(package_root, key, info)

    # ---- converted weights

    def add_weights(
        self,
        model: CachedModel | str,
        weights_format: str,
        weights_file: Path,
        *,
        parent: str,
        fields: Mapping[str, Any] | None = None,
        note: str | None = None,
        zoodesk_config: Mapping[str, Any] | None = None,
    ) -> CachedModel:
        """Add a weights entry (e.g. ONNX converted from torchscript) to a cached model.

        The file is copied into the model's folder, the description gains the entry
        ``weights.<format>`` with ``source``, ``sha256``, ``parent`` and ``fields``
        (e.g. ``opset_version``), and the model is re-validated and swapped in
        atomically; on any error the cached model is left as it was.

        Parameters
        ----------
        model
            The cached model or its key/id.
        weights_format
            The new entry's format, e.g. ``"onnx"``.
        weights_file
            The weights to add; copied under its own file name.
        parent
            The weights format it was converted from.
        fields
            Further fields of the entry.
        note
            Recorded in the manifest's notes.
        zoodesk_config
            Entries set in the description's ``config.zoodesk`` in the same step (e.g.
            the input sizes converted weights accept, see
            :func:`zoodesk.models.spec.apply_onnx_input_sizes`).
        """
        if isinstance(model, str):
            model = self.find(model)
        weights_file = Path(weights_file)
        name = safe_relative_path(weights_file.name, str(weights_file))
        if name == MANIFEST_NAME or name == model.description:
            raise CacheError(f"{weights_file}: this file name is reserved in the cache")
        with self.staging(f"{model.key}-weights", source=str(weights_file)) as stage:
            package_root = stage / "package"
            shutil.copytree(model.root, package_root, symlinks=True)
            # The description changes: the copied manifest would call it damaged.
            (package_root / MANIFEST_NAME).unlink()
            shutil.copyfile(weights_file, package_root / name)
            sha = sha256_file(package_root / name)
            data = read_description_data(package_root / model.description)
            weights = data.get("weights")
            if not isinstance(weights, dict):
                raise CacheError(f"{model.description_path}: the description has no weights")
            entry: dict[str, Any] = {"source": name, "sha256": sha, "parent": parent}
            entry.update(fields or {})
            weights[weights_format] = entry
            if zoodesk_config:
                config = data.setdefault("config", {})
                section = config.setdefault("zoodesk", {}) if isinstance(config, dict) else None
                if not isinstance(section, dict):
                    raise CacheError(f"{model.description_path}: config.zoodesk is not a mapping")
                section.update(zoodesk_config)
            (package_root / model.description).write_text(dump_description(data), encoding="utf-8")
            load_model_package(
                package_root / model.description, display_name=str(model.description_path)
            )
            declared = {f.path for f in model.files if f.declared} | {name}
            known = {f.path: f.sha256 for f in model.files if f.path != model.description}
            known[name] = sha
            info = InstallInfo(
                name=model.name,
                id=model.id,
                version=model.version,
                model_version=model.model_version,
                source=model.source,
                origin=model.origin,
                description=model.description,
                notes=(*model.notes, note) if note else model.notes,
                known_sha256=known,
                declared=frozenset(declared),
            )
            return self.install(package_root, model.key, info)

    def reinstall_from(
        self, package_root: Path, model: CachedModel, *, checked: bool = False
    ) -> CachedModel:
        """Install a package folder carrying an existing manifest (bundle import).

        Unless the caller did so already (``checked``), every file is checked against
        the manifest and the description is loaded first.  The model keeps its key
        unless another model already uses it.
        """
        if not checked:
            damage = check_folder(package_root, model) or check_declared(
                package_root, model.description, origin=model.key
            )
            if damage:
                first = damage[0]
                raise ChecksumError(
                    f"{model.key}: {first.path}: {first.problem}"
                    + (f" (and {len(damage) - 1} more)" if len(damage) > 1 else "")
                )
            load_model_package(
                package_root / model.description,
                display_name=f"{model.key}/{model.description} (from the bundle)",
            )
        key = self.unique_key(model.id, model.version, model.name)
        info = InstallInfo(
            name=model.name,
            id=model.id,
            version=model.version,
            model_version=model.model_version,
            source=model.source,
            origin="bundle",
            description=model.description,
            notes=model.notes,
            known_sha256={f.path: f.sha256 for f in model.files},
            declared=frozenset(f.path for f in model.files if f.declared),
        )
        return self.install(package_root, key, info)


def check_folder(root: Path, model: CachedModel) -> list[FileDamage]:
    """Compare a folder with a model manifest: missing, changed and unlisted files."""
    damage: list[FileDamage] = []
    listed = {f.path for f in model.files} | {MANIFEST_NAME}
    for f in model.files:
        path = root / safe_relative_path(f.path, model.key)
        if not path.is_file():
            damage.append(FileDamage(f.path, "missing"))
        elif path.stat().st_size != f.size or sha256_file(path) != f.sha256:
            damage.append(FileDamage(f.path, "does not match the sha256 in its manifest"))
    for path in root.rglob("*"):
        if path.is_file() and path.relative_to(root).as_posix() not in listed:
            damage.append(FileDamage(path.relative_to(root).as_posix(), "not in the manifest"))
    return damage


def check_declared(
    root: Path, description: str, *, origin: str, hashes: dict[str, str] | None = None
) -> list[FileDamage]:
    """Compare the files in ``root`` with the sha256 their description declares.

    Files the description names but ``root`` lacks are not damage here (a download
    fetches one weights format).  ``hashes`` (by path) holds sha256 computed already
    and receives those computed here.
    """
    hashes = {} if hashes is None else hashes
    try:
        refs = referenced_files(read_description_data(root / description), origin=origin)
    except ModelPackageError as exc:
        return [FileDamage(description, f"not a readable description ({exc})")]
    damage: list[FileDamage] = []
    for ref in refs:
        target = root / ref.path
        if ref.is_remote or not ref.sha256 or not target.is_file():
            continue
        actual = hashes[ref.path] = hashes.get(ref.path) or sha256_file(target)
        if actual != ref.sha256:
            damage.append(FileDamage(ref.path, declared_mismatch(ref.sha256, actual)))
    return damage


def _present_weights_formats(description: Path) -> tuple[str, ...]:
    try:
        data = read_description_data(description)
    except ModelPackageError:
        return ()
    weights = data.get("weights")
    present = []
    for fmt, entry in weights.items() if isinstance(weights, Mapping) else ():
        source, _ = _source_and_sha(entry)
        if source and not source.startswith(("http://", "https://")):
            with contextlib.suppress(ModelPackageError):
                if (description.parent / safe_relative_path(source, "")).is_file():
                    present.append(str(fmt))
    return tuple(present)


def _locate_description(folder: Path, origin: Path) -> tuple[Path, str]:
    """The package root and description name in ``folder`` (or its only sub-folder)."""
    roots = (folder, *_single_subfolder(folder))
    for root in roots:
        try:
            found = find_description(root, origin)
        except ModelPackageError:
            if root is roots[-1]:
                raise
            continue
        return root, found.name
    raise ModelPackageError(f"{origin}: no model description (bioimageio.yaml or rdf.yaml) found")


def _single_subfolder(folder: Path) -> list[Path]:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    return entries if len(entries) == 1 and entries[0].is_dir() else []


def _copy_package_files(folder: Path, description: str, target: Path) -> None:
    """Copy a description and the local files it refers to into ``target``."""
    data = read_description_data(folder / description)
    target.mkdir(parents=True)
    names = [description] + [
        f.path for f in referenced_files(data, origin=str(folder / description)) if not f.is_remote
    ]
    for rel in dict.fromkeys(names):
        src = folder / rel
        if not src.is_file():
            continue
        # A link may point anywhere on the machine: only files inside the package
        # are copied into the cache.
        if not src.resolve().is_relative_to(folder):
            raise ModelPackageError(f"{src}: refused: it links outside the package folder")
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
