"""``metadata/zenodo.json``: deposition metadata for a Zenodo upload of the package.

The fields are those of Zenodo's deposition API (``metadata``: title, upload_type,
description, creators, license, keywords, related identifiers, grants, notes), which
follow DataCite: the package can be zipped as it is and uploaded with this file.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from zoodesk import __version__
from zoodesk.export.layout import ExportPlan
from zoodesk.export.provenance import ModelSummary
from zoodesk.export.rembi import coverage
from zoodesk.export.study import StudyMetadata

ZENODO_PATH = "metadata/zenodo.json"


def _creator_name(name: str) -> str:
    # Zenodo wants "Family, Given"; a name already containing a comma is kept.
    if "," in name:
        return name
    parts = name.split()
    return f"{parts[-1]}, {' '.join(parts[:-1])}" if len(parts) > 1 else name


def _related(model: ModelSummary) -> list[dict[str, str]]:
    related: list[dict[str, str]] = []
    if model.doi:
        related.append(
            {
                "identifier": model.doi,
                "relation": "isCompiledBy",
                "scheme": "doi",
                "resource_type": "software",
            }
        )
    elif model.crate_id.startswith("http"):
        related.append(
            {
                "identifier": model.crate_id,
                "relation": "isCompiledBy",
                "scheme": "url",
                "resource_type": "software",
            }
        )
    for cite in model.cite:
        if cite.get("doi"):
            related.append(
                {"identifier": str(cite["doi"]), "relation": "references", "scheme": "doi"}
            )
        elif cite.get("url"):
            related.append(
                {"identifier": str(cite["url"]), "relation": "references", "scheme": "url"}
            )
    return related


def zenodo_metadata(
    study: StudyMetadata, plan: ExportPlan, model: ModelSummary, *, date: str | None = None
) -> dict[str, Any]:
    """The content of ``metadata/zenodo.json`` (``{"metadata": {...}}``)."""
    title = study.title or f"Predictions of {model.name} on {len(plan.done)} images"
    cover = coverage(plan)
    summary = (
        f"Model-generated results (not manually curated) of the bioimage.io model "
        f"{model.label} on {cover['text']}, produced with ZooDesk "
        f"{plan.record.software.get('zoodesk', __version__)}.  The package holds the "
        "outputs as OME-TIFF, BioImage Archive file lists and REMBI/MIFA metadata, and "
        "an RO-Crate (Process Run Crate) with the full provenance."
    )
    if plan.tables:
        summary += (
            "  Objects were segmented in the model's output (label images) and measured: "
            "a table per image and one for the run, each column described with its unit."
        )
    description = "".join(
        f"<p>{html.escape(text)}</p>" for text in (study.description, summary) if text
    )
    creators = []
    for author in study.named_authors:
        creator: dict[str, str] = {"name": _creator_name(author.name)}
        if author.affiliation:
            creator["affiliation"] = author.affiliation
        if author.orcid:
            creator["orcid"] = author.orcid
        creators.append(creator)
    metadata: dict[str, Any] = {
        "title": title,
        "upload_type": "dataset",
        "publication_date": date or datetime.now(UTC).date().isoformat(),
        "description": description,
        "creators": creators,
        "access_right": "open",
        "license": study.license.lower(),
        "keywords": study.clean_keywords or ["bioimage.io", "model-generated annotations"],
        "related_identifiers": _related(model),
        "notes": (
            f"Run {plan.record.run_id}; model weights ({model.weights.get('format', '?')}) "
            f"sha256 {model.weights.get('sha256', '?')}; not human-verified."
        ),
    }
    grants = [g.grant_id for g in study.named_funding if g.grant_id]
    if grants:
        # Zenodo resolves grants of known funders only; the funder names go to the
        # notes too so that none is lost.
        metadata["grants"] = [{"id": g} for g in grants]
        metadata["notes"] += (
            " Funding: "
            + "; ".join(f"{g.funder} {g.grant_id}".strip() for g in study.named_funding)
            + "."
        )
    return {"metadata": metadata}
