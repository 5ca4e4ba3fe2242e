"""``metadata/submission.pagetab.tsv``: the BioStudies PageTab of the submission.

PageTab TSV is a sequence of blocks separated by blank lines: ``Submission`` first,
then the root section (``Study``), then subsections (authors, organisations, funding,
biosample, specimen, acquisition, study component, annotations), each a list of
``Name<TAB>Value`` lines.  ``<affiliation>`` refers to an ``Organization`` block by
its identifier, and ``File List`` names one of the package's file lists.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from zoodesk.export.filelists import IMAGES_LIST
from zoodesk.export.layout import ExportPlan
from zoodesk.export.provenance import ModelSummary
from zoodesk.export.study import StudyMetadata

PAGETAB_PATH = "metadata/submission.pagetab.tsv"

# The BioImage Archive's spelling of the licences it accepts.
_ARCHIVE_LICENSES = {"CC-BY-4.0": "CC BY 4.0", "CC0-1.0": "CC0"}


def archive_license(spdx: str) -> str:
    """The licence as the BioImage Archive writes it (``CC BY 4.0``, ``CC0``)."""
    return _ARCHIVE_LICENSES.get(spdx, spdx)


def _clean(value: Any) -> str:
    return " ".join(str(value).split()) if value not in (None, "") else ""


def _block(header: list[str], pairs: list[tuple[str, Any]]) -> list[str]:
    lines = ["\t".join(_clean(h) for h in header if h is not None)]
    lines += [f"{_clean(k)}\t{_clean(v)}" for k, v in pairs if _clean(v)]
    return lines


def pagetab(
    study: StudyMetadata,
    plan: ExportPlan,
    model: ModelSummary,
    rembi: dict[str, Any],
    *,
    release_date: str | None = None,
) -> str:
    """The PageTab TSV text of the submission.

    Parameters
    ----------
    study, plan, model
        The user's metadata, the export plan and the model summary.
    rembi
        The content of ``rembi_mifa.yaml`` (annotation sections are reused).
    release_date
        ``YYYY-MM-DD``; default today.
    """
    title = study.title or f"Predictions of {model.name} on {len(plan.done)} images"
    when = release_date or datetime.now(UTC).date().isoformat()
    blocks: list[list[str]] = [
        _block(
            ["Submission"], [("Title", title), ("ReleaseDate", when), ("AttachTo", "BioImages")]
        ),
    ]
    study_pairs: list[tuple[str, Any]] = [
        ("Title", title),
        ("Description", study.description),
        ("License", archive_license(study.license)),
    ]
    study_pairs += [("Keyword", k) for k in study.clean_keywords]
    study_pairs += [(str(k).replace("_", " ").capitalize(), v) for k, v in study.study.items()]
    study_pairs += [
        (str(k), v) for k, v in study.extra_fields().items() if not isinstance(v, dict | list)
    ]
    blocks.append(_block(["Study"], study_pairs))

    organisations: dict[str, str] = {}
    for author in study.named_authors:
        pairs: list[tuple[str, Any]] = [
            ("Name", author.name),
            ("E-mail", author.email),
            ("ORCID", author.orcid),
            ("Role", author.role),
        ]
        if author.affiliation:
            ref = organisations.setdefault(author.affiliation, f"o{len(organisations) + 1}")
            pairs.append(("<affiliation>", ref))
        blocks.append(_block(["Author"], pairs))
    for name, ref in organisations.items():
        blocks.append(_block(["Organization", ref], [("Name", name)]))
    for grant in study.named_funding:
        blocks.append(_block(["Funding"], [("Agency", grant.funder), ("grant_id", grant.grant_id)]))

    bio = study.biosample
    organism = " ".join(
        x
        for x in (
            bio.organism.scientific_name,
            f"({bio.organism.common_name})" if bio.organism.common_name else "",
        )
        if x
    )
    blocks.append(
        _block(
            ["Biosample", "Biosample-1"],
            [
                ("Title", bio.biological_entity or "biosample"),
                ("Organism", organism),
                ("NCBI taxon", bio.organism.ncbi_taxon),
                ("Biological entity", bio.biological_entity),
                ("Description", bio.description),
                ("Intrinsic variable", bio.intrinsic_variables),
                ("Extrinsic variable", bio.extrinsic_variables),
                ("Experimental variable", bio.experimental_variables),
                *((k, v) for k, v in bio.extra_fields().items() if not isinstance(v, dict | list)),
            ],
        )
    )
    spec = study.specimen
    blocks.append(
        _block(
            ["Specimen", "Specimen-1"],
            [
                ("Title", "specimen"),
                ("Sample preparation protocol", spec.preparation),
                ("Growth protocol", spec.growth_protocol),
                ("Signal/contrast mechanism", spec.signal_contrast_mechanism),
                ("Channel content", spec.channel_content),
                *((k, v) for k, v in spec.extra_fields().items() if not isinstance(v, dict | list)),
            ],
        )
    )
    acq = rembi.get("image_acquisition", {})
    found = acq.get("from_image_metadata", {})
    blocks.append(
        _block(
            ["Image acquisition", "Image acquisition-1"],
            [
                ("Title", "image acquisition"),
                ("Imaging method", acq.get("imaging_method")),
                ("Imaging instrument", acq.get("imaging_instrument_description")),
                ("Image acquisition parameters", acq.get("image_acquisition_parameters")),
                (
                    "Physical pixel sizes",
                    "; ".join(
                        ", ".join(f"{k} {v}" for k, v in s.items())
                        for s in found.get("physical_pixel_sizes", [])
                    ),
                ),
                ("Image dimensions", "; ".join(found.get("dimensions", []))),
                ("Channel names", ", ".join(found.get("channel_names", []))),
            ],
        )
    )
    blocks.append(
        _block(
            ["Study Component", "Study Component-1"],
            [
                ("Name", "images"),
                ("Description", rembi.get("study_component", {}).get("description")),
                ("Biosample", "Biosample-1"),
                ("Specimen", "Specimen-1"),
                ("Image acquisition", "Image acquisition-1"),
                ("File List", IMAGES_LIST),
            ],
        )
    )
    for n, section in enumerate(rembi.get("annotations", []), start=1):
        blocks.append(
            _block(
                ["Annotations", f"Annotations-{n}"],
                [
                    ("Title", section.get("title") or f"model output {section['output_id']}"),
                    ("Annotation overview", section["annotation_overview"]),
                    ("Annotation type", section["annotation_type"]),
                    ("Annotation method", section["annotation_method"]),
                    ("Annotation criteria", section["annotation_criteria"]),
                    ("Annotation coverage", section["annotation_coverage"]),
                    ("Annotation confidence level", section["annotation_confidence_level"]),
                    ("Transformations", section["transformations"]),
                    ("Spatial information", section["spatial_information"]),
                    ("File List", section["file_list"]),
                ],
            )
        )
    for n, section in enumerate(rembi.get("processed_images", []), start=1):
        blocks.append(
            _block(
                ["Image analysis", f"Image analysis-{n}"],
                [
                    ("Title", f"model output {section['output_id']}"),
                    ("Image analysis overview", section["description"]),
                    ("Method", section["method"]),
                    ("File List", section["file_list"]),
                ],
            )
        )
    measured = rembi.get("image_analysis", {}).get("measurements")
    if measured:
        n = len(rembi.get("processed_images", [])) + 1
        blocks.append(
            _block(
                ["Image analysis", f"Image analysis-{n}"],
                [
                    ("Title", "measurements of the objects"),
                    ("Image analysis overview", measured["description"]),
                    ("Method", measured["method"]),
                    ("Features analysed", measured["columns"]),
                    ("File List", measured["file_list"]),
                ],
            )
        )
    if model.crate_id.startswith("http"):
        blocks.append(
            _block(["Link", model.crate_id], [("Description", f"bioimage.io model {model.label}")])
        )
    return "\n\n".join("\n".join(b) for b in blocks if b) + "\n"
