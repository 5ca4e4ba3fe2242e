"""Loading model packages: a folder, a description file, or a zip archive.

A package is read with bioimageio.spec (format 0.4 is converted to 0.5) without
touching the network: file checks are done here, and only for the files a task will
actually use, so that weight entries pointing to missing or remote files (common in
the zoo) do not prevent a package from loading.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoodesk.errors import ChecksumError, ModelPackageError, UnsupportedWeightsError
from zoodesk.fileutils import sha256_file
from zoodesk.models.archive import safe_extract_zip
from zoodesk.models.spec import (
    CONVERTIBLE_WEIGHTS_FORMATS,
    EXECUTABLE_WEIGHTS_FORMATS,
    FileRef,
    ModelSpec,
    WeightsSpec,
    model_spec_from_descr,
)
from zoodesk.settings import zoodesk_home

DESCRIPTION_NAMES = ("bioimageio.yaml", "rdf.yaml")
_SPEC_LOCK = threading.Lock()


@dataclass
class ModelPackage:
    """A loaded model package: its folder, description file and parsed spec."""

    root: Path
    description_path: Path
    spec: ModelSpec
    descr: Any = field(repr=False)
    _verified: dict[Path, str] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

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
            f"convert them with 'zoodesk models convert' (needs the 'convert' extra: torch) "
            f"from {', '.join(convertible)}"
            if convertible
            else "no conversion to ONNX is available for these formats"
        )
        raise UnsupportedWeightsError(
            f"{self.description_path}: model {self.spec.name!r} has "
            f"{', '.join(weights) or 'no'} weights; ZooDesk needs ONNX weights: {hint}"
        )

    def verify(self, ref: FileRef) -> Path:
        """Check that a package file exists and matches its sha256; return its path.

        Each file is hashed once per loaded package.
        """
        path = self.path_of(ref)
        if not path.is_file():
            raise ModelPackageError(
                f"{path}: file listed in {self.description_path.name} is missing"
            )
        if ref.sha256 is None:
            return path
        if self._verified.get(path) != ref.sha256:
            actual = sha256_file(path)
            if actual != ref.sha256:
                raise ChecksumError(
                    f"{path}: sha256 mismatch (description says {ref.sha256[:12]}..., "
                    f"file is {actual[:12]}...): the file is damaged or was replaced"
                )
            self._verified[path] = actual
        return path


def _find_description(folder: Path) -> Path:
    for name in DESCRIPTION_NAMES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(folder.glob("*.bioimageio.yaml")) + sorted(folder.glob("*rdf.yaml"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ModelPackageError(
            f"{folder}: no model description (bioimageio.yaml or rdf.yaml) in this folder"
        )
    names = ", ".join(c.name for c in candidates)
    raise ModelPackageError(f"{folder}: several descriptions ({names}); name one of them")


def _unpack_dir_for(archive: Path) -> Path:
    digest = hashlib.sha256()
    st = archive.stat()
    digest.update(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return zoodesk_home() / "unpacked" / f"{archive.stem}-{digest.hexdigest()[:16]}"


def _validation_errors(descr: Any) -> str:
    summary = getattr(descr, "validation_summary", None)
    messages: list[str] = []
    for detail in getattr(summary, "details", None) or ():
        for err in getattr(detail, "errors", None) or ():
            loc = ".".join(str(p) for p in getattr(err, "loc", ()))
            messages.append(f"{loc}: {err.msg}" if loc else str(err.msg))
    if not messages:
        return "invalid description"
    more = f" (and {len(messages) - 3} more)" if len(messages) > 3 else ""
    return "; ".join(messages[:3]) + more


def _original_weights_sha256(path: Path) -> dict[str, str]:
    """Weights checksums as written in the file (0.4 -> 0.5 conversion drops some)."""
    from bioimageio.spec import load_description

    with _SPEC_LOCK, warnings.catch_warnings():
        # The same conversion notes as in load_description_file: not the user's concern.
        warnings.simplefilter("ignore")
        original = load_description(path, perform_io_checks=False, format_version="discover")
    weights = getattr(original, "weights", None)
    result: dict[str, str] = {}
    for fmt in ("onnx", "torchscript", "pytorch_state_dict", "keras_hdf5"):
        entry = getattr(weights, fmt, None)
        if entry is not None and getattr(entry, "sha256", None):
            result[fmt] = str(entry.sha256)
    return result


def load_description_file(path: Path) -> tuple[Any, ModelSpec]:
    """Parse and validate a description file; return the spec object and the flat spec."""
    from bioimageio.spec import InvalidDescr, load_model_description
    from bioimageio.spec.model import v0_5

    try:
        # bioimageio.spec parses YAML with a shared parser that breaks when two threads
        # use it at once (the desktop application loads models in worker threads).
        with _SPEC_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            descr = load_model_description(path, perform_io_checks=False, format_version="latest")
    except Exception as exc:
        # bioimageio.spec raises YAML and validation errors of many kinds here.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelPackageError(f"{path}: cannot read the description ({first})") from exc
    if isinstance(descr, InvalidDescr) or not isinstance(descr, v0_5.ModelDescr):
        kind = getattr(descr, "type", None)
        if kind and kind != "model":
            raise ModelPackageError(f"{path}: describes a {kind}, not a model")
        raise ModelPackageError(
            f"{path}: not a valid model description: {_validation_errors(descr)}"
        )
    original_sha = {}
    if any(
        getattr(getattr(descr.weights, f, None), "sha256", 1) is None
        for f in ("onnx", "torchscript")
    ):
        original_sha = _original_weights_sha256(path)
    try:
        spec = model_spec_from_descr(descr, original_sha)
    except (ValueError, AttributeError, TypeError) as exc:
        raise ModelPackageError(f"{path}: unsupported description content ({exc})") from exc
    return descr, spec


def load_model_package(source: str | Path) -> ModelPackage:
    """Load a model package from a folder, a description file or a ``.zip``.

    Raises :class:`ModelPackageError` with a one-line message naming the file.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelPackageError(f"{path}: no such file or folder")
    if path.is_dir():
        description = _find_description(path)
    elif path.suffix.lower() == ".zip":
        unpacked = _unpack_dir_for(path)
        if not unpacked.is_dir():
            safe_extract_zip(path, unpacked)
        description = _find_description(unpacked)
    elif path.suffix.lower() in (".yaml", ".yml"):
        description = path
    else:
        raise ModelPackageError(
            f"{path}: not a model package "
            "(expected a folder, a .zip, or a bioimageio.yaml/rdf.yaml file)"
        )
    description = description.resolve()
    descr, spec = load_description_file(description)
    return ModelPackage(
        root=description.parent, description_path=description, spec=spec, descr=descr
    )
