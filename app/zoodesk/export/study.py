"""The user's description of the study: who, what, which sample, which licence.

It is what an archive asks for and what no image file records: title, description,
authors with ORCID and affiliation, licence, keywords, funding, and the REMBI study,
biosample, specimen and acquisition fields.  It is read from a YAML file (written
from :func:`zoodesk.export.template.template_text` and filled in by the user), or
comes from the desktop application's form, and the last one used is remembered in
``ZOODESK_HOME`` so that the next export starts from it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zoodesk.errors import ZooDeskError
from zoodesk.fileutils import atomic_write_text
from zoodesk.settings import zoodesk_home

#: Licence used when the user names none (what the BioImage Archive recommends).
DEFAULT_LICENSE = "CC-BY-4.0"

LAST_STUDY_FILE = "last-study.yaml"

_ORCID = re.compile(r"^(\d{4}-){3}\d{3}[\dX]$")


class _Model(BaseModel):
    # Unknown keys are kept (extra="allow") so that a field an archive adds later
    # survives a round trip through the template and the export.
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True, coerce_numbers_to_str=True)

    def extra_fields(self) -> dict[str, Any]:
        """Fields the user added beyond the named ones, without empty values."""
        return {k: v for k, v in (self.model_extra or {}).items() if not _is_empty(v)}


class Author(_Model):
    """One author; ``affiliation`` is the organisation's name."""

    name: str = ""
    orcid: str = ""
    affiliation: str = ""
    email: str = ""
    role: str = ""

    @field_validator("orcid")
    @classmethod
    def _check_orcid(cls, value: str) -> str:
        value = value.removeprefix("https://orcid.org/").removeprefix("http://orcid.org/")
        if value and not _ORCID.match(value):
            raise ValueError(f"{value!r} is not an ORCID iD (0000-0000-0000-0000)")
        return value


class Funding(_Model):
    """A grant that paid for the work."""

    funder: str = ""
    grant_id: str = ""


class Organism(_Model):
    """The organism imaged, ideally with its NCBI taxon (e.g. ``NCBITaxon_9606``)."""

    scientific_name: str = ""
    common_name: str = ""
    ncbi_taxon: str = ""


class Biosample(_Model):
    """REMBI biosample: what was imaged and which variables differ between images."""

    organism: Organism = Field(default_factory=Organism)
    biological_entity: str = ""
    description: str = ""
    intrinsic_variables: str = ""
    extrinsic_variables: str = ""
    experimental_variables: str = ""


class Specimen(_Model):
    """REMBI specimen: how the sample was prepared for imaging."""

    preparation: str = ""
    growth_protocol: str = ""
    signal_contrast_mechanism: str = ""
    channel_content: str = ""


class Acquisition(_Model):
    """REMBI image acquisition fields the image files do not carry."""

    imaging_method: str = ""
    instrument: str = ""
    parameters: str = ""


class StudyMetadata(_Model):
    """Everything the user says about the study.

    Empty strings mean "not given"; :meth:`is_empty` tells whether anything is.
    """

    title: str = ""
    description: str = ""
    authors: list[Author] = Field(default_factory=list)
    license: str = DEFAULT_LICENSE
    keywords: list[str] = Field(default_factory=list)
    funding: list[Funding] = Field(default_factory=list)
    study: dict[str, Any] = Field(default_factory=dict)
    biosample: Biosample = Field(default_factory=Biosample)
    specimen: Specimen = Field(default_factory=Specimen)
    acquisition: Acquisition = Field(default_factory=Acquisition)

    @field_validator("license", mode="before")
    @classmethod
    def _default_license(cls, value: Any) -> Any:
        return DEFAULT_LICENSE if value in (None, "") else value

    @field_validator("authors", "keywords", "funding", "study", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return value if value is not None else []

    @property
    def named_authors(self) -> list[Author]:
        """Authors with a name (template rows left blank are ignored)."""
        return [a for a in self.authors if a.name]

    @property
    def named_funding(self) -> list[Funding]:
        return [f for f in self.funding if f.funder or f.grant_id]

    @property
    def clean_keywords(self) -> list[str]:
        return [k for k in (str(k).strip() for k in self.keywords) if k]

    def is_empty(self) -> bool:
        """True when the user gave nothing but (possibly) the default licence."""
        data = self.to_dict()
        data.pop("license", None)
        return _is_empty(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for YAML and JSON."""
        return self.model_dump(mode="json")


def _is_empty(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_is_empty(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_is_empty(v) for v in value)
    return value is None or value == ""


def study_from_dict(data: Any, source: str = "study metadata") -> StudyMetadata:
    """Validate plain data (as read from YAML) into :class:`StudyMetadata`.

    Raises
    ------
    ZooDeskError
        Naming ``source`` and the first field that is wrong.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ZooDeskError(f"{source}: expected a mapping of fields (title, authors, ...)")
    try:
        return StudyMetadata.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ZooDeskError(f"{source}: field {where!r}: {first['msg']}") from exc


def load_study_metadata(path: Path) -> StudyMetadata:
    """Read a study metadata YAML file (as written by ``zoodesk export --template``).

    Raises
    ------
    ZooDeskError
        When the file cannot be read, is not YAML, or a field is invalid.
    """
    from ruyaml import YAML
    from ruyaml.error import YAMLError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ZooDeskError(f"{path}: cannot read the study metadata ({exc.strerror})") from exc
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ZooDeskError(f"{path}: not valid YAML ({problem})") from exc
    return study_from_dict(data, str(path))


def dump_yaml(data: Any) -> str:
    """Block-style YAML text for plain data (keys in the given order, Unicode kept)."""
    import io

    from ruyaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.allow_unicode = True
    # Keep the keys in the order they were built (sections read top-down).
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    return buffer.getvalue()


def last_study_path() -> Path:
    """Where the last-used study metadata is remembered (under ZOODESK_HOME)."""
    return zoodesk_home() / "export" / LAST_STUDY_FILE


def save_last_study_metadata(study: StudyMetadata) -> Path:
    """Remember ``study`` as the starting point of the next export; returns the file."""
    path = last_study_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, dump_yaml(study.to_dict()))
    return path


def load_last_study_metadata() -> StudyMetadata | None:
    """The study metadata used last, or None when there is none (or it is unreadable)."""
    path = last_study_path()
    if not path.is_file():
        return None
    try:
        return load_study_metadata(path)
    except ZooDeskError:
        return None
