"""Reading model descriptions the way the zoo's own tools do.

A description is validated in its own format version, as bioimageio.core does by
default (``format_version="discover"``): what the zoo's tools accept is accepted
here.  The engine then needs the description in the latest format (0.5), so a 0.4
description is converted.  That conversion is stricter than format 0.4 about some
metadata (a citation ``url`` must be a URL in 0.5), which would refuse models that
run perfectly well.  Metadata never changes what a model computes, so entries of
metadata fields that fail only the conversion are repaired where their meaning is
plain (a bare DOI given as ``url`` is the DOI) or left out, each with a warning;
a failure in any field that affects running the model still refuses it.

Problems are reported one line per problem, each naming the field.
"""

from __future__ import annotations

import copy
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoodesk.errors import ModelPackageError
from zoodesk.fileutils import MAX_DEPTH, NestingError, parse_json
from zoodesk.models.spec import ModelSpec, model_spec_from_descr

#: Fields that describe a model without changing what it computes.  Entries of these
#: that the conversion to format 0.5 refuses are repaired or left out, with a warning.
METADATA_FIELDS = frozenset(
    {
        "attachments",
        "authors",
        "badges",
        "cite",
        "covers",
        "description",
        "documentation",
        "git_repo",
        "icon",
        "id_emoji",
        "license",
        "links",
        "maintainers",
        "packaged_by",
        "parent",
        "tags",
        "timestamp",
        "training_data",
        "uploader",
    }
)
#: Format versions that bioimageio.spec (and so ZooDesk) reads.
OLDEST_FORMAT = (0, 4)
_MAX_REPAIR_ROUNDS = 4
#: Largest description, counted in values after its YAML aliases are expanded: real
#: descriptions hold a few thousand; nested aliases can make billions.
MAX_EXPANDED_NODES = 200_000
_DOI = re.compile(r"^(?:doi:\s*)?(10\.\d{4,9}/\S+)$", re.IGNORECASE)

# bioimageio.spec parses and validates with shared state that breaks when two threads
# use it at once (the desktop application loads models in worker threads).
SPEC_LOCK = threading.Lock()


class InvalidDescriptionError(ModelPackageError):
    """A description that bioimageio.spec refuses; one problem per line.

    Attributes
    ----------
    problems
        ``"field.path: message"`` for each problem.
    """

    def __init__(self, source: str, what: str, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        first, *rest = self.problems or ("no details given",)
        lines = [f"{source}: {what}: {first}", *(f"  {p}" for p in rest)]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ReadDescription:
    """A validated model description.

    Attributes
    ----------
    descr
        bioimageio.spec's ``ModelDescr`` in format 0.5.
    spec
        The flat view the engine uses.
    format_version
        The format version the file is written in.
    warnings
        bioimageio.spec's warnings and the metadata left out or repaired, one line each.
    """

    descr: Any
    spec: ModelSpec
    format_version: str
    warnings: tuple[str, ...] = ()


def parse_description_text(text: str, origin: str) -> dict[str, Any]:
    """Parse the text of a description (YAML or JSON) safely into a dictionary.

    Only plain YAML types are constructed (no tags naming Python objects).
    """
    from ruyaml import YAML
    from ruyaml.error import YAMLError

    try:
        # JSON is YAML, but a YAML parser reads JSON's escaped surrogate pairs (emoji
        # such as id_emoji) as two broken characters: JSON text goes to the JSON parser.
        data = parse_json(text) if text.lstrip().startswith("{") else YAML(typ="safe").load(text)
    except (RecursionError, NestingError) as exc:
        raise ModelPackageError(f"{origin}: refused: {NestingError()}") from exc
    except (YAMLError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelPackageError(f"{origin}: not readable YAML ({first})") from exc
    if not isinstance(data, dict):
        raise ModelPackageError(f"{origin}: the description is not a mapping of fields")
    size = expanded_size(data)
    if size > MAX_EXPANDED_NODES:
        raise ModelPackageError(
            f"{origin}: refused: once its YAML aliases are expanded it holds more than "
            f"{MAX_EXPANDED_NODES:,} values, or nests deeper than {MAX_DEPTH} levels"
        )
    return data


def expanded_size(data: Any) -> int:
    """How many values ``data`` holds once every shared (aliased) part is copied out.

    YAML aliases make one parsed object appear in many places; a deep copy (which
    bioimageio.spec makes) multiplies it.  Counted with a memo per object, so the
    count itself stays linear in the parsed size.
    """
    memo: dict[int, int] = {}

    def count(value: Any, depth: int) -> int:
        if not isinstance(value, dict | list):
            return 1
        key = id(value)
        if key in memo:
            return memo[key]
        if depth > MAX_DEPTH:
            return MAX_EXPANDED_NODES + 1
        children = value.values() if isinstance(value, dict) else value
        total = 1
        for child in children:
            total += count(child, depth + 1)
            if total > MAX_EXPANDED_NODES:
                break
        memo[key] = total
        return total

    return count(data, 0)


def read_description_data(path: Path) -> dict[str, Any]:
    """Read and safely parse a description file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelPackageError(f"{path}: cannot read the description ({exc})") from exc
    return parse_description_text(text, str(path))


def format_version_of(data: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The description's ``format_version`` as numbers, or None when it has none."""
    text = data.get("format_version")
    if not isinstance(text, str | int | float):
        return None
    numbers = re.findall(r"\d+", str(text))
    return tuple(int(n) for n in numbers) or None


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _location(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc)


def _entries(descr: Any, kind: str) -> list[tuple[tuple[Any, ...], str]]:
    summary = getattr(descr, "validation_summary", None)
    found = []
    for detail in getattr(summary, "details", None) or ():
        for entry in getattr(detail, kind, None) or ():
            found.append((tuple(getattr(entry, "loc", ()) or ()), _one_line(entry.msg)))
    return list(dict.fromkeys(found))


def _problem_lines(entries: Sequence[tuple[tuple[Any, ...], str]]) -> list[str]:
    return [f"{_location(loc)}: {msg}" if loc else msg for loc, msg in entries]


def _build(
    data: Mapping[str, Any], format_version: str, root: Path | None, name: str | None
) -> Any:
    from bioimageio.spec import ValidationContext, build_description

    context = ValidationContext(
        root=root or Path(), file_name=name, perform_io_checks=False, log_warnings=False
    )
    try:
        with SPEC_LOCK, warnings.catch_warnings(), context:
            # Conversion notes from 0.4 to 0.5 are bioimageio.spec's, not the user's.
            warnings.simplefilter("ignore")
            return build_description(copy.deepcopy(dict(data)), format_version=format_version)
    except Exception as exc:
        # bioimageio.spec raises errors of many kinds on odd input.
        raise ModelPackageError(
            f"bioimageio.spec failed on this description ({_one_line(exc) or type(exc).__name__})"
        ) from exc


def _is_metadata(loc: Sequence[Any]) -> bool:
    """True for fields that never change what the model computes.

    The top-level metadata fields, and the environment file a weights entry names
    (it documents how the weights were made; ZooDesk runs ONNX).
    """
    if not loc:
        return False
    if loc[0] in METADATA_FIELDS:
        return True
    return len(loc) >= 3 and loc[0] == "weights" and loc[2] == "dependencies"


def _repair_metadata(
    data: dict[str, Any], errors: Sequence[tuple[tuple[Any, ...], str]]
) -> list[str] | None:
    """Repair or leave out the metadata entries that ``errors`` name, in place.

    Returns the warnings saying what was done, or None when an error lies outside
    the metadata (nothing is changed then).
    """
    if not errors or not all(_is_metadata(loc) for loc, _ in errors):
        return None
    notes: list[str] = []
    dropped: dict[str, set[int]] = {}
    for loc, msg in errors:
        if loc[0] == "weights":
            entry = (data.get("weights") or {}).get(loc[1])
            if isinstance(entry, dict) and entry.pop("dependencies", None) is not None:
                notes.append(f"{_location(loc)}: {msg}; the environment file is left out")
            continue
        field = str(loc[0])
        value = data.get(field)
        where = _location(loc)
        if isinstance(value, list) and len(loc) > 1 and isinstance(loc[1], int):
            index = loc[1]
            if not 0 <= index < len(value):
                return None
            item = value[index]
            url = item.get("url") if isinstance(item, dict) else None
            doi = _DOI.match(url.strip()) if field == "cite" and isinstance(url, str) else None
            if doi is not None and loc[2:] == ("url",) and not item.get("doi"):
                item.pop("url")
                item["doi"] = doi.group(1)
                notes.append(f"{where}: {url!r} is a DOI, read as the citation's doi")
                continue
            if index not in dropped.setdefault(field, set()):
                dropped[field].add(index)
                notes.append(f"{where}: {msg}; this {field} entry is left out")
        elif field in data:
            data.pop(field)
            notes.append(f"{where}: {msg}; the field is left out")
    for field, indices in dropped.items():
        data[field] = [v for i, v in enumerate(data[field]) if i not in indices]
    return notes


def _rewrite_for_conversion(data: dict[str, Any]) -> list[str]:
    """Rewrite what format 0.4 allows and the 0.5 conversion refuses, keeping the meaning."""
    return _fixed_outputs_as_references(data) + _scalar_scale_linear_without_axes(data)


def _scalar_scale_linear_without_axes(data: dict[str, Any]) -> list[str]:
    """Drop ``axes`` from 0.4 ``scale_linear`` steps whose gain and offset are scalars.

    A scalar gain and offset apply to every element whatever the axes: format 0.4
    allowed naming axes anyway, the conversion to 0.5 refuses it.
    """
    notes: list[str] = []
    for key in ("inputs", "outputs"):
        for index, tensor in enumerate(data.get(key) or ()):
            if not isinstance(tensor, dict):
                continue
            for stage in ("preprocessing", "postprocessing"):
                for step_index, step in enumerate(tensor.get(stage) or ()):
                    kwargs = step.get("kwargs") if isinstance(step, dict) else None
                    if (
                        step.get("name") == "scale_linear"
                        and isinstance(kwargs, dict)
                        and "axes" in kwargs
                        and not isinstance(kwargs.get("gain", 1.0), list)
                        and not isinstance(kwargs.get("offset", 0.0), list)
                    ):
                        kwargs.pop("axes")
                        notes.append(
                            f"{key}.{index}.{stage}.{step_index}: scale_linear with a scalar "
                            "gain and offset names axes; they do not matter and are left out"
                        )
    return notes


def _smallest_shape_is(tensor: dict[str, Any], out: dict[str, Any]) -> bool:
    """True when ``tensor`` has the axes of ``out`` and, at its smallest, its shape."""
    declared = tensor.get("shape")
    smallest = declared.get("min") if isinstance(declared, dict) else declared
    return tensor.get("axes") == out.get("axes") and smallest == out["shape"]


def _fixed_outputs_as_references(data: dict[str, Any]) -> list[str]:
    """Write 0.4 outputs of fixed shape with a halo as references to the input's shape.

    Format 0.5 allows a halo only on outputs sized by reference to an input.  An
    output whose fixed shape equals the fixed shape of an input with the same axes
    has exactly the sizes of a reference to that input (scale 1, offset 0), so it is
    written that way; nothing the model computes changes.  An input of parameterized
    shape whose smallest size is the output's shape is fixed at that size first.
    """
    notes: list[str] = []
    inputs = [t for t in data.get("inputs") or () if isinstance(t, dict)]
    for index, out in enumerate(data.get("outputs") or ()):
        if (
            not isinstance(out, dict)
            or not out.get("halo")
            or not isinstance(out.get("shape"), list)
        ):
            continue
        same = next((t for t in inputs if _smallest_shape_is(t, out)), None)
        if same is None or not same.get("name"):
            continue
        if isinstance(same.get("shape"), dict):
            # The output is declared for the input's smallest size only: the input
            # keeps that size, the one for which the description is consistent.
            same["shape"] = list(out["shape"])
            notes.append(
                f"input {same['name']!r}: fixed at its smallest size {out['shape']}, the "
                "only one for which the fixed shape of its output holds"
            )
        ndim = len(out["shape"])
        out["shape"] = {
            "reference_tensor": same["name"],
            "scale": [1.0] * ndim,
            "offset": [0] * ndim,
        }
        notes.append(
            f"outputs.{index}.shape: a fixed shape with a halo, read as the shape of input "
            f"{same['name']!r} (the same sizes), as format 0.5 requires"
        )
    return notes


def read_model_description(
    data: Mapping[str, Any],
    source: str,
    *,
    root: Path | None = None,
    file_name: str | None = None,
    original_sha256: Mapping[str, str] | None = None,
) -> ReadDescription:
    """Validate a parsed model description and flatten it for the engine.

    Parameters
    ----------
    data
        The parsed description (not changed).
    source
        Names the description in messages (the user's path or URL).
    root, file_name
        The package folder and the description's file name, for relative paths.
    original_sha256
        Weights checksums known from elsewhere, for entries that lack one.

    Raises
    ------
    ModelPackageError
        Not a model, a format before 0.4, or a description that bioimageio.spec
        refuses in its own format version (:class:`InvalidDescriptionError`).
    """
    from bioimageio.spec import InvalidDescr
    from bioimageio.spec.model import v0_5

    version = format_version_of(data)
    declared = str(data.get("format_version", "")).strip()
    if version is not None and version[:2] < OLDEST_FORMAT:
        raise ModelPackageError(
            f"{source}: a format {declared} description, older than 0.4: ZooDesk, like the "
            "zoo's own tools, reads formats 0.4 and 0.5 only; this one cannot be read"
        )
    kind = data.get("type")
    if kind is not None and kind != "model":
        raise ModelPackageError(f"{source}: describes a {kind}, not a model")
    try:
        own = _build(data, "discover", root, file_name)
    except ModelPackageError as exc:
        raise ModelPackageError(f"{source}: {exc}") from exc
    if isinstance(own, InvalidDescr):
        raise InvalidDescriptionError(
            source, "not a valid model description", _problem_lines(_entries(own, "errors"))
        )
    notes = _problem_lines(_entries(own, "warnings"))
    sha = dict(original_sha256 or {})
    for fmt in ("onnx", "torchscript", "pytorch_state_dict", "keras_hdf5"):
        entry = getattr(getattr(own, "weights", None), fmt, None)
        if entry is not None and getattr(entry, "sha256", None):
            sha.setdefault(fmt, str(entry.sha256))
    descr = own
    working = copy.deepcopy(dict(data))
    for _ in range(_MAX_REPAIR_ROUNDS):
        if isinstance(descr, v0_5.ModelDescr):
            break
        descr = _build(working, "latest", root, file_name)
        if isinstance(descr, v0_5.ModelDescr):
            break
        errors = _entries(descr, "errors")
        repaired = _repair_metadata(working, errors)
        if repaired is None and version is not None and version[:2] == OLDEST_FORMAT:
            repaired = _rewrite_for_conversion(working) or None
        if repaired is None:
            raise InvalidDescriptionError(
                source,
                f"valid as format {declared} but not convertible to format 0.5",
                _problem_lines(errors),
            )
        notes += repaired
    else:
        raise InvalidDescriptionError(
            source, "not convertible to format 0.5", _problem_lines(_entries(descr, "errors"))
        )
    if descr is not own:
        notes += [n for n in _problem_lines(_entries(descr, "warnings")) if n not in notes]
    try:
        spec = model_spec_from_descr(descr, sha)
    except (ValueError, AttributeError, TypeError) as exc:
        raise ModelPackageError(f"{source}: unsupported description content ({exc})") from exc
    return ReadDescription(descr, spec, declared, tuple(notes))
