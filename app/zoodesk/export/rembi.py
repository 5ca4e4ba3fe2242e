"""``metadata/rembi_mifa.yaml``: REMBI study metadata and MIFA annotation metadata.

REMBI (Recommended Metadata for Biological Images) groups what an archive needs to
know about a study: study, biosample, specimen, image acquisition.  The first three
come from the user (:class:`~zoodesk.export.study.StudyMetadata`); acquisition is
prefilled from the images' own metadata (dimensions, pixel sizes, channels,
microscope and objective when the files record them).  MIFA (Metadata, Incentives,
Formats and Accessibility for annotations) fields are filled in from the run: the
annotation type from the BioImage Archive vocabulary, the method (model, weights,
software, device), confidence (not human-verified) and coverage with the failures.
The label images of objects of a run made with ``--instances`` have a section of
their own (:mod:`zoodesk.export.annotations`), and its tables of measurements are
described under ``image_analysis.measurements``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoodesk.export.annotations import NOT_CURATED, instances_section
from zoodesk.export.filelists import IMAGES_LIST, MEASUREMENTS_LIST, annotation_type, method_text
from zoodesk.export.layout import INSTANCE_LABELS, ExportPlan
from zoodesk.export.provenance import ModelSummary, threshold_of
from zoodesk.export.study import StudyMetadata
from zoodesk.export.tables import TableSchema, features_text, measurement_method

log = logging.getLogger(__name__)

REMBI_PATH = "metadata/rembi_mifa.yaml"

CONFIDENCE = "not human-verified"


def image_info(path: Path, series: int = 0) -> dict[str, Any]:
    """What an input image records about its acquisition (read with ``read_image``).

    Returns an empty dict when the image cannot be read.
    """
    from zoodesk.images import read_image

    try:
        image = read_image(path, series=series)
    except Exception as exc:
        log.debug("cannot read %s for its metadata: %s", path, exc)
        return {}
    meta = image.metadata
    info: dict[str, Any] = {
        "dtype": str(image.dtype),
        "axes": image.axes,
        "shape": list(image.shape),
        "pixel_sizes": {k: [v[0], v[1]] for k, v in image.pixel_sizes.items()},
        "channel_names": list(image.channel_names or []),
        "format": meta.get("format"),
    }
    for key in ("acquisition_date", "microscope", "objective", "channels", "time_increment"):
        if meta.get(key):
            info[key] = meta[key]
    return info


def _distinct(values: list[Any]) -> list[Any]:
    found: list[Any] = []
    for v in values:
        if v not in found and v not in (None, "", [], {}):
            found.append(v)
    return found


def _quantity(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"{value[0]:g} {value[1]}"
    return str(value)


def acquisition_section(
    study: StudyMetadata, plan: ExportPlan, infos: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """REMBI image acquisition: the user's fields plus what the images record."""
    items = [infos.get(i.number, {}) for i in plan.done]
    dims = _distinct(
        [
            f"{i.get('axes')} {' x '.join(str(n) for n in i.get('shape', []))} {i.get('dtype')}"
            for i in items
            if i.get("axes")
        ]
    )
    sizes = _distinct(
        [{k: _quantity(v) for k, v in sorted(i.get("pixel_sizes", {}).items())} for i in items]
    )
    section: dict[str, Any] = {
        "imaging_method": study.acquisition.imaging_method,
        "imaging_instrument_description": study.acquisition.instrument,
        "image_acquisition_parameters": study.acquisition.parameters,
        **study.acquisition.extra_fields(),
        "from_image_metadata": {
            "images": len(plan.done),
            "dimensions": dims,
            "physical_pixel_sizes": sizes,
            "channel_names": _distinct([n for i in items for n in i.get("channel_names", [])]),
            "file_formats": _distinct([i.get("format") for i in items]),
            "acquisition_dates": _distinct([i.get("acquisition_date") for i in items]),
            "microscopes": _distinct([i.get("microscope") for i in items]),
            "objectives": _distinct([i.get("objective") for i in items]),
            "channels": _distinct([c for i in items for c in i.get("channels", [])]),
        },
    }
    return section


def coverage(plan: ExportPlan) -> dict[str, Any]:
    """MIFA coverage: how many inputs have results, and which did not and why."""
    total = len(plan.inputs)
    done = len(plan.done)
    failures = [
        {"image": i.entry.input, "status": i.entry.status, "error": i.entry.error or ""}
        for i in plan.not_done
    ]
    text = f"{done} of {total} images"
    if failures:
        text += (
            f"; {len(failures)} not annotated ("
            + "; ".join(f"{f['image']}: {f['status']}" for f in failures)
            + ")"
        )
    return {"text": text, "annotated": done, "total": total, "failures": failures}


def annotation_sections(plan: ExportPlan, model: ModelSummary) -> list[dict[str, Any]]:
    """One MIFA annotation section per annotation output of the model, and the objects'."""
    method = method_text(model, plan)
    thresholds = threshold_of(model)
    cover = coverage(plan)
    post = {
        str(t.get("id")): ", ".join(str(op.get("id")) for op in t.get("postprocessing", []))
        for t in model.data.get("outputs", [])
    }

    def common() -> dict[str, Any]:
        # A fresh copy per section: shared objects would be YAML anchors in the file.
        return copy.deepcopy(shared)

    shared = {
        "model": {
            "id": model.id,
            "name": model.name,
            "version": model.version,
            "weights_format": model.weights.get("format"),
            "weights_sha256": model.weights.get("sha256"),
            "rdf_sha256": model.rdf_sha256,
        },
        "software": {
            k: v
            for k, v in plan.record.software.items()
            if k in ("zoodesk", "onnxruntime", "bioimageio.spec", "bioimageio.core", "tifffile")
        },
        "device": plan.record.device.get("used"),
    }
    sections = []
    for output_id in plan.output_ids:
        kind = plan.kind_of(output_id)
        if plan.group_of(output_id) != "annotations" or kind == INSTANCE_LABELS:
            continue
        atype = annotation_type(kind)
        overview = (
            f"Label images (0 = background) predicted by the model {model.label}"
            if kind == "labels"
            else f"Probability maps (float32 in [0, 1]) predicted by the model {model.label}; "
            "annotation type 'other': per-pixel probabilities, not a thresholded mask"
        )
        sections.append(
            {
                "output_id": output_id,
                "file_list": plan.file_list_of(output_id),
                "annotation_overview": overview,
                "annotation_type": atype,
                "annotation_method": method,
                "annotation_criteria": "the model's prediction; no manual correction or selection",
                "annotation_coverage": cover["text"],
                "annotation_confidence_level": CONFIDENCE,
                "transformations": "none: outputs are on the source images' pixel grid",
                "spatial_information": "same pixel grid and pixel sizes as the source image",
                "postprocessing": post.get(output_id, "") or "none",
                "threshold": thresholds.get(output_id),
                **common(),
                "failures": cover["failures"],
            }
        )
    objects = instances_section(plan, model, common())
    if objects is not None:
        sections.append(objects)
    return sections


def measurements_section(
    plan: ExportPlan, schemas: Mapping[str, TableSchema]
) -> dict[str, Any] | None:
    """The tables of measured objects: where they are, what they hold, how they were made."""
    if not schemas:
        return None
    return {
        "file_list": MEASUREMENTS_LIST,
        "tables": len(schemas),
        "description": "tables of the objects measured in the label images (one per image, "
        "one row per object) and the run's summary (one row per image)",
        "method": measurement_method(plan),
        "schemas": sorted({s.path for s in schemas.values()}),
        "columns": features_text(schemas),
        "curation": NOT_CURATED,
    }


def rembi_mifa(
    study: StudyMetadata,
    plan: ExportPlan,
    model: ModelSummary,
    infos: dict[int, dict[str, Any]],
    schemas: Mapping[str, TableSchema] | None = None,
) -> dict[str, Any]:
    """The content of ``metadata/rembi_mifa.yaml``.

    ``schemas`` are those of the measurement tables (:func:`zoodesk.export.tables.plan_schemas`).
    """
    processed = [
        {
            "output_id": output_id,
            "file_list": plan.file_list_of(output_id),
            "method": method_text(model, plan),
            "description": f"Images restored by the model {model.label} (not manually curated)",
        }
        for output_id in plan.output_ids
        if plan.group_of(output_id) == "processed"
    ]
    return {
        "study": {
            "title": study.title,
            "description": study.description,
            "authors": [a.model_dump(mode="json") for a in study.named_authors],
            "license": study.license,
            "keywords": study.clean_keywords,
            "funding": [f.model_dump(mode="json") for f in study.named_funding],
            **{k: v for k, v in study.study.items() if v not in (None, "")},
            **study.extra_fields(),
        },
        "biosample": study.biosample.model_dump(mode="json"),
        "specimen": study.specimen.model_dump(mode="json"),
        "image_acquisition": acquisition_section(study, plan, infos),
        "study_component": {
            "name": "images",
            "description": (
                "the input images, byte-for-byte"
                if plan.mode == "include"
                else "the input images are referenced, not included: each is represented "
                "by a metadata-only OME-XML companion with its original path and sha256"
            ),
            "file_list": IMAGES_LIST,
            "images": len(plan.done),
        },
        "annotations": annotation_sections(plan, model),
        "processed_images": processed,
        "image_analysis": {
            "method": method_text(model, plan),
            "provenance": "provenance/run.json, ro-crate-metadata.json",
            **(
                {"measurements": measured}
                if (measured := measurements_section(plan, schemas or {}))
                else {}
            ),
        },
    }
