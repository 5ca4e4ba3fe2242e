"""The people a model description names, with their affiliation and ORCID.

The engine's :class:`zoodesk.models.spec.ModelSpec` keeps the authors' names only
(what a citation needs); the model library shows who they are, as the description
gives it.  Formats 0.4 and 0.5 write authors alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoodesk.models.description import parse_description_text


@dataclass(frozen=True)
class Author:
    """One author of a model; empty strings where the description says nothing."""

    name: str
    affiliation: str = ""
    orcid: str = ""
    github_user: str = ""


def authors_from_data(value: Any) -> tuple[Author, ...]:
    """The authors of a description's ``authors`` field (entries without a name are
    left out; a bare string is a name)."""
    found = []
    for entry in value if isinstance(value, list) else ():
        if isinstance(entry, str) and entry.strip():
            found.append(Author(entry.strip()))
        elif isinstance(entry, dict) and str(entry.get("name") or "").strip():
            found.append(
                Author(
                    name=str(entry["name"]).strip(),
                    affiliation=str(entry.get("affiliation") or "").strip(),
                    orcid=str(entry.get("orcid") or "").strip(),
                    github_user=str(entry.get("github_user") or "").strip(),
                )
            )
    return tuple(found)


def authors_of_description(path: Path) -> tuple[Author, ...]:
    """The authors named in a description file (read safely, not validated)."""
    text = Path(path).read_text(encoding="utf-8")
    return authors_from_data(parse_description_text(text, str(path)).get("authors"))
