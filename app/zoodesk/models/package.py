"""Loading model packages: a folder, a description file, or a zip archive.

A package is read with bioimageio.spec (format 0.4 is converted to 0.5) without
touching the network: file checks are done here, and only for the files a task will
actually use, so that weight entries pointing to missing or remote files (common in
the zoo) do not prevent a package from loading.

A package in a folder of the model cache (one holding a cache manifest) is also
checked against the sha256 recorded at installation (:mod:`zoodesk.models.integrity`):
its description when it is loaded, every other file when a task uses it.  A zip is
used through an unpacked copy (:mod:`zoodesk.models.unpacked`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoodesk.errors import ChecksumError, ModelPackageError, UnsupportedWeightsError
from zoodesk.fileutils import sha256_file
from zoodesk.models.description import (
    ReadDescription,
    read_description_data,
    read_model_description,
)
from zoodesk.models.integrity import (
    DamagedModelError,
    damaged_message,
    recorded_checksums,
    recorded_mismatch,
)
from zoodesk.models.remembered import recall, remember
from zoodesk.models.spec import (
    CONVERTIBLE_WEIGHTS_FORMATS,
    EXECUTABLE_WEIGHTS_FORMATS,
    FileRef,
    ModelSpec,
    WeightsSpec,
)
from zoodesk.models.unpacked import UnpackedLease, open_unpacked
from zoodesk.paths import zoodesk_home

DESCRIPTION_NAMES = ("bioimageio.yaml", "rdf.yaml")


@dataclass
class ModelPackage:
    """A loaded model package: its folder, description file and parsed spec.

    ``recorded`` holds the sha256 of each file (by POSIX path relative to ``root``)
    that the cache manifest records, for a package in the model cache; empty otherwise.
    """

    root: Path
    description_path: Path
    spec: ModelSpec
    #: bioimageio.spec's description, when it has been validated in this process
    #: (see :attr:`descr`).
    _descr: Any = field(default=None, repr=False, compare=False)
    warnings: tuple[str, ...] = ()
    recorded: Mapping[str, str] = field(default_factory=dict, repr=False)
    _verified: dict[Path, str] = field(default_factory=dict, repr=False)
    #: Keeps the unpacked copy of a zip in use while the package is alive.
    _lease: UnpackedLease | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def descr(self) -> Any:
        """bioimageio.spec's ``ModelDescr`` (format 0.5) of the package.

        Running a model needs only :attr:`spec`, which may come from a remembered
        validation (:mod:`zoodesk.models.remembered`); the full description is
        validated here, on first use, by the tasks that need it (conversion).
        """
        if self._descr is None:
            self._descr = load_description_file(self.description_path).descr
        return self._descr

    def path_of(self, ref: FileRef) -> Path:
        """The local path of a package file; raises if the file is remote."""
        if ref.is_remote:
            raise ModelPackageError(
                f"{self.description_path}: {ref.source} is not in the package (remote file)"
            )
        return (self.root / ref.source).resolve()

    def executable_weights(self, preferred: str | None = None) -> WeightsSpec:
        """The weights entry to run: ONNX, or a clear error saying what is there."""
        weights = self.spec.weights
        if preferred is not None:
            if preferred not in weights:
                raise UnsupportedWeightsError(
                    f"{self.description_path}: no {preferred!r} weights "
                    f"(the package has: {', '.join(weights) or 'none'})"
                )
            if preferred not in EXECUTABLE_WEIGHTS_FORMATS:
                raise UnsupportedWeightsError(
                    f"{self.description_path}: {preferred} weights cannot be run directly; "
                    "ZooDesk runs ONNX weights"
                )
            return weights[preferred]
        for fmt in EXECUTABLE_WEIGHTS_FORMATS:
            if fmt in weights:
                return weights[fmt]
        convertible = [f for f in weights if f in CONVERTIBLE_WEIGHTS_FORMATS]
        hint = (
            f"convert the {', '.join(convertible)} weights first with 'zoodesk models "
            "convert' (PyTorch weights: the full variant of the installers or the 'convert' "
            "extra; Keras/TensorFlow weights: the 'tensorflow' extra)"
            if convertible
            else "no conversion to ONNX is available for these formats"
        )
        raise UnsupportedWeightsError(
            f"{self.description_path}: model {self.spec.name!r} has "
            f"{', '.join(weights) or 'no'} weights; ZooDesk needs ONNX weights: {hint}"
        )

    def verify(self, ref: FileRef) -> Path:
        """Check that a package file exists and matches its sha256; return its path.

        The sha256 is the description's and, for a cached model, the one its cache
        manifest records.  Each file is hashed once per loaded package.
        """
        path = self.path_of(ref)
        if not path.is_file():
            raise ModelPackageError(
                f"{path}: file listed in {self.description_path.name} is missing"
            )
        recorded = self._recorded_sha256(path)
        if ref.sha256 is None and recorded is None:
            return path
        actual = self._verified.get(path) or sha256_file(path)
        if ref.sha256 is not None and actual != ref.sha256:
            raise ChecksumError(
                f"{path}: sha256 mismatch (description says {ref.sha256[:12]}..., "
                f"file is {actual[:12]}...): the file is damaged or was replaced"
            )
        if recorded is not None and actual != recorded:
            raise DamagedModelError(
                damaged_message(path, recorded_mismatch(recorded, actual), self.root.name)
            )
        self._verified[path] = actual
        return path

    def _recorded_sha256(self, path: Path) -> str | None:
        try:
            rel = path.relative_to(self.root).as_posix()
        except ValueError:
            return None
        return self.recorded.get(rel)


#: Other names under which descriptions are found, after DESCRIPTION_NAMES.  Format
#: 0.3 packages named theirs ``<name>.model.yaml``; they are found so that the
#: message can say what they are.
DESCRIPTION_PATTERNS = ("*.bioimageio.yaml", "*rdf.yaml", "*.model.yaml")


def find_description(folder: Path, origin: Path | str | None = None) -> Path:
    """The model description in a package folder.

    ``origin`` names the folder in messages (default: ``folder``).
    """
    for name in DESCRIPTION_NAMES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted({p for pattern in DESCRIPTION_PATTERNS for p in folder.glob(pattern)})
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ModelPackageError(
            f"{origin or folder}: no model description (bioimageio.yaml or rdf.yaml) in this folder"
        )
    names = ", ".join(c.name for c in candidates)
    raise ModelPackageError(f"{origin or folder}: several descriptions ({names}); name one of them")


def load_description_file(path: Path, source: str | None = None) -> ReadDescription:
    """Read, validate and flatten a description file (see :mod:`zoodesk.models.description`).

    ``source`` names the description in messages (default: ``path``).
    """
    return read_model_description(
        read_description_data(path),
        source or str(path),
        root=path.parent,
        file_name=path.name,
    )


def _user_name(given: Path, description: Path, display_name: str | None) -> str:
    """How messages name a description: as the user gave it, never an internal copy."""
    if display_name:
        return display_name
    if given.is_file() and given.suffix.lower() == ".zip":
        return f"{given} ({description.name})"
    return str(description)


def load_model_package(source: str | Path, *, display_name: str | None = None) -> ModelPackage:
    """Load a model package from a folder, a description file or a ``.zip``.

    ``display_name`` names the description in messages when ``source`` is a copy the
    user never saw (a staging folder of the cache).  Raises :class:`ModelPackageError`
    with a message naming the file, one line per problem.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelPackageError(f"{path}: no such file or folder")
    lease: UnpackedLease | None = None
    if path.is_dir():
        description = find_description(path)
    elif path.suffix.lower() == ".zip":
        unpacked, lease = open_unpacked(path)
        description = find_description(unpacked)
    elif path.suffix.lower() in (".yaml", ".yml"):
        description = path
    else:
        raise ModelPackageError(
            f"{path}: not a model package "
            "(expected a folder, a .zip, or a bioimageio.yaml/rdf.yaml file)"
        )
    description = description.resolve()
    digest = sha256_file(description)
    recorded = recorded_checksums(description.parent)
    if recorded is not None:
        _check_recorded(description, recorded, digest)
    home = zoodesk_home()
    known = recall(home, digest)
    descr = None
    if known is not None:
        spec, warnings = known
    else:
        read = load_description_file(
            description, source=_user_name(path, description, display_name)
        )
        spec, warnings, descr = read.spec, read.warnings, read.descr
        remember(home, digest, spec, warnings)
    return ModelPackage(
        root=description.parent,
        description_path=description,
        spec=spec,
        _descr=descr,
        warnings=warnings,
        recorded=recorded or {},
        _lease=lease,
    )


def _check_recorded(description: Path, recorded: Mapping[str, str], actual: str) -> None:
    """Refuse a cached description that changed since it was installed (cheap: it is small).

    ``actual`` is the description's sha256.  Its other files are checked when used
    (:meth:`ModelPackage.verify`).
    """
    expected = recorded.get(description.name)
    if expected is None:
        return
    if actual != expected:
        raise DamagedModelError(
            damaged_message(
                description, recorded_mismatch(expected, actual), description.parent.name
            )
        )
