"""Validation problems in plain words: "Author 1: ORCID: ..." for ``authors.0.orcid``.

pydantic and bioimageio.spec name a problem by its location in the data
(``authors.0.orcid``) and word it for programmers (``Value error, ...``,
``Input should be a valid string``).  The command line shows them as they are,
since its users edit the YAML; a form-based front end shows the same problem with
the names people see.  Every name lives in the tables below, in one place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

#: Fields holding a list, by the name of one of their items ("authors.0" -> "Author 1").
LIST_ITEM_NAMES = {
    "authors": "Author",
    "maintainers": "Maintainer",
    "cite": "Citation",
    "covers": "Cover image",
    "tags": "Tag",
    "keywords": "Keyword",
    "funding": "Funding",
    "attachments": "Attachment",
    "inputs": "Input",
    "outputs": "Output",
    "axes": "Axis",
    "preprocessing": "Preprocessing step",
    "postprocessing": "Postprocessing step",
    "test_tensors": "Test tensor",
    "sample_tensors": "Sample tensor",
    "dependencies": "Dependency",
}

#: Field names as people read them; a field not listed is written out ("grant_id" ->
#: "Grant id").
FIELD_NAMES = {
    "orcid": "ORCID",
    "email": "E-mail",
    "github_user": "GitHub user",
    "doi": "DOI",
    "url": "URL",
    "id": "ID",
    "license": "Licence",
    "sha256": "Checksum (sha256)",
    "source": "File",
    "git_repo": "Git repository",
    "format_version": "Format version",
    "onnx": "ONNX",
    "torchscript": "TorchScript",
    "pytorch_state_dict": "PyTorch state dict",
    "keras_hdf5": "Keras HDF5",
    "tensorflow_saved_model_bundle": "TensorFlow SavedModel",
    "tensorflow_js": "TensorFlow.js",
    "kwargs": "Parameters",
    "ncbi_taxon": "NCBI taxon",
    "grant_id": "Grant ID",
    "biosample": "Biosample",
    "specimen": "Specimen",
    "acquisition": "Acquisition",
    "preparation": "Sample preparation",
    "test_tensor": "Test input",
    "sample_tensor": "Sample input",
    "config": "Configuration",
}

#: pydantic's wording, by prefix, and what people read instead.
_MESSAGE_PREFIXES = (
    ("Value error, ", ""),
    ("Assertion failed, ", ""),
    ("Field required", "missing (required)"),
    ("Extra inputs are not permitted", "not a known field"),
    ("Input should be a valid string", "should be text"),
    ("Input should be a valid integer", "should be a whole number"),
    ("Input should be a valid number", "should be a number"),
    ("Input should be a valid list", "should be a list"),
    ("Input should be a valid dictionary", "should be a group of fields"),
    ("Input should be ", "should be "),
    ("String should ", "should "),
    ("List should ", "should "),
    ("Value should ", "should "),
)

#: A location as bioimageio.spec and ZooDesk print it: dotted names and indices.
_LOCATION = re.compile(r"^[A-Za-z_][\w\-]*(?:\.[\w\-]+)*$")
#: A location quoted in a message: ``field 'authors.0.orcid': ...``.
_QUOTED_FIELD = re.compile(r"\b(?:field|setting) '([\w.\-]+)': ")


def field_name(name: str) -> str:
    """How people read one field name: ``"orcid"`` -> ``"ORCID"``."""
    if name in FIELD_NAMES:
        return FIELD_NAMES[name]
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def plain_location(loc: Sequence[str | int]) -> str:
    """``("authors", 0, "orcid")`` -> ``"Author 1: ORCID"``.

    An index after a list field names its item, counted from 1; each further field
    follows after a colon.
    """
    parts: list[str] = []
    items = list(loc)
    i = 0
    while i < len(items):
        name = str(items[i])
        index = _as_index(items[i + 1]) if i + 1 < len(items) else None
        if index is not None:
            item = LIST_ITEM_NAMES.get(name) or field_name(name)
            parts.append(f"{item} {index + 1}")
            i += 2
            continue
        as_index = _as_index(items[i])
        parts.append(f"item {as_index + 1}" if as_index is not None else field_name(name))
        i += 1
    return ": ".join(parts)


def plain_message(message: str) -> str:
    """pydantic's wording of one problem in plain words (``"Field required"`` ->
    ``"missing (required)"``)."""
    text = " ".join(str(message).split())
    for prefix, plain in _MESSAGE_PREFIXES:
        if text.startswith(prefix):
            return plain + text[len(prefix) :]
    return text


def plain_problem(loc: Sequence[str | int], message: str) -> str:
    """One problem: ``"Author 1: ORCID: '12' is not an ORCID iD ..."``."""
    where = plain_location(loc)
    return f"{where}: {plain_message(message)}" if where else plain_message(message)


def plain_problem_line(line: str) -> str:
    """A problem printed as ``"authors.0.orcid: Value error, ..."`` in plain words;
    a line without a location keeps its text, reworded."""
    where, sep, message = line.partition(": ")
    if sep and _LOCATION.match(where):
        return plain_problem(where.split("."), message)
    return plain_message(line)


def plain_validation_errors(errors: Iterable[Any]) -> list[str]:
    """Every problem of a pydantic ``ValidationError.errors()`` in plain words."""
    lines = [plain_problem(tuple(e.get("loc") or ()), str(e.get("msg", ""))) for e in errors]
    return list(dict.fromkeys(lines))


def plain_quoted_fields(text: str) -> str:
    """A message quoting a location (``"study form: field 'authors.0.orcid': Value
    error, ..."``) with the location and its problem in plain words."""
    match = _QUOTED_FIELD.search(text)
    if match is None:
        return text
    loc = match.group(1).split(".")
    return f"{text[: match.start()]}{plain_problem(loc, text[match.end() :])}"


def _as_index(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
