"""The objects of a run as annotations: how they were made, in the metadata's words.

A run made with ``--instances`` turns one output of the model into label images of
objects (``instance-labels``: 0 = background, one integer per object).  In the
package they are annotations of the archive's type ``segmentation_mask``, a set of
their own beside the model's outputs (whose probability maps stay ``other``): an
OME-TIFF label image is listed in ``filelists/annotations_instances.tsv``; an NGFF
label image inside an OME-Zarr output store (``labels/instances``) is copied and
listed with its store, whose entries say that it holds the mask.

This module says how the objects were made: from which model output and channel,
by which method with which parameters (the run's ``parameters.instances`` and each
image's ``instances``), the threshold each image used, and that they are
model-generated, not curated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zoodesk.export.filelists import MEASUREMENTS_LIST, method_text
from zoodesk.export.layout import ExportPlan, PlannedInput
from zoodesk.export.provenance import ModelSummary

#: The archive's (MIFA) annotation type of label images of objects.
SEGMENTATION_MASK = "segmentation_mask"

#: What the metadata says of the objects' curation.
NOT_CURATED = "model-generated, not manually curated"

# Thresholds of more images than this are summarised by their range.
_LISTED = 5


@dataclass
class InstanceFacts:
    """What the run record says about the objects of the exported images."""

    #: The distinct settings used (``InstanceSettings.as_dict()``), run's first.
    settings: list[dict[str, Any]] = field(default_factory=list)
    #: Threshold each image used, by input name (None: the method has none).
    thresholds: dict[str, float | None] = field(default_factory=dict)
    #: Objects found, by input name.
    counts: dict[str, int] = field(default_factory=dict)
    #: Images whose objects could not be made: (input, error).
    failures: list[tuple[str, str]] = field(default_factory=list)


def instance_facts(plan: ExportPlan) -> InstanceFacts:
    """The objects' settings, thresholds, counts and failures, from the run record."""
    facts = InstanceFacts()
    recorded = plan.record.parameters.get("instances")
    if isinstance(recorded, Mapping):
        facts.settings.append(dict(recorded))
    for item in plan.done:
        found = item.entry.instances
        if not isinstance(found, Mapping):
            continue
        settings = found.get("settings")
        if isinstance(settings, Mapping) and dict(settings) not in facts.settings:
            facts.settings.append(dict(settings))
        if "error" in found:
            facts.failures.append((item.entry.input, str(found["error"])))
            continue
        threshold = found.get("threshold")
        facts.thresholds[item.name] = float(threshold) if threshold is not None else None
        facts.counts[item.name] = int(found.get("count") or 0)
    return facts


def _describe(settings: Mapping[str, Any]) -> str:
    from zoodesk.instances import InstanceSettings, InstanceSettingsError

    try:
        return InstanceSettings.from_dict(settings).describe()
    except InstanceSettingsError:
        return json.dumps(dict(settings), sort_keys=True)


def instance_method_short(plan: ExportPlan) -> str:
    """The method and its parameters in a few words (``watershed, threshold 0.5, ...``)."""
    facts = instance_facts(plan)
    return "; ".join(_describe(s) for s in facts.settings) or "no objects made"


def threshold_text(facts: InstanceFacts) -> str:
    """The threshold setting and the values the images used."""
    settings = facts.settings[0] if facts.settings else {}
    setting = settings.get("threshold")
    used = {k: v for k, v in facts.thresholds.items() if v is not None}
    if not used:
        return "none (the method uses no threshold)"
    values = sorted(set(used.values()))
    if isinstance(setting, int | float) and not isinstance(setting, bool):
        return f"{float(setting):g} (fixed)"
    origin = {
        "otsu": "Otsu's threshold of each image's histogram",
        "model": "the model's own binarisation threshold",
    }.get(str(setting), str(setting))
    if len(values) == 1:
        return f"{origin}: {values[0]:g}"
    if len(used) <= _LISTED:
        return f"{origin}: " + ", ".join(f"{k} {v:g}" for k, v in used.items())
    return f"{origin}: {values[0]:g} to {values[-1]:g} over {len(used)} images"


def instance_method_text(plan: ExportPlan, model: ModelSummary) -> str:
    """One line saying how the label images were made (file lists, archive metadata)."""
    facts = instance_facts(plan)
    settings = facts.settings[0] if facts.settings else {}
    channel = settings.get("channel")
    source = f"output {settings.get('source')!r}" + (
        f" channel {channel}" if channel is not None else ""
    )
    return (
        f"objects (instance segmentation) made by ZooDesk from the model's {source}: "
        f"{instance_method_short(plan)}; threshold used: {threshold_text(facts)}; "
        f"the model output: {method_text(model, plan)}"
    )


def _location(plan: ExportPlan) -> tuple[str, str]:
    """The file list that names the label images, and where they lie."""
    labels = plan.label_images()
    inside = [(path, out) for _, path, out in labels if path != out.package_path]
    if inside:
        _path, store = inside[0]
        return (
            plan.file_list_of(store.set_id),
            f"inside each OME-Zarr store of the model output {store.tensor!r}, as its NGFF "
            "label image labels/instances (the file list's 'Segmentation Mask' column "
            "names it); copied and listed with its store",
        )
    return (
        plan.file_list_of(plan.instances_set),
        f"OME-TIFF files in annotations/{plan.instances_set}/",
    )


def instances_section(
    plan: ExportPlan, model: ModelSummary, common: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The MIFA annotation section of the objects' label images (None: no objects).

    ``common`` holds the fields every annotation section shares (model, software,
    device).
    """
    labels = plan.label_images()
    if not labels:
        return None
    facts = instance_facts(plan)
    file_list, location = _location(plan)
    images = len({item.number for item, _, _ in labels})
    coverage = f"{images} of {len(plan.inputs)} images"
    if facts.failures:
        coverage += f"; objects not made for {len(facts.failures)} (" + "; ".join(
            f"{i}: {e}" for i, e in facts.failures
        )
        coverage += ")"
    settings = facts.settings[0] if facts.settings else {}
    return {
        "output_id": plan.instances_set,
        "title": "objects (instance segmentation)",
        "file_list": file_list,
        "location": location,
        "annotation_overview": "Label images of objects (0 = background, one integer per "
        f"object) made from the output {settings.get('source')!r} of the model "
        f"{model.label}; {sum(facts.counts.values())} objects in {images} "
        + ("image" if images == 1 else "images"),
        "annotation_type": SEGMENTATION_MASK,
        "annotation_method": instance_method_text(plan, model),
        "annotation_criteria": "the model's prediction turned into objects by the method "
        "and parameters below; no manual correction or selection",
        "annotation_coverage": coverage,
        "annotation_confidence_level": "not human-verified",
        "transformations": "none: label images are on the source images' pixel grid",
        "spatial_information": "same pixel grid and pixel sizes as the source image",
        "model_generated": True,
        "curated": False,
        "curation": NOT_CURATED,
        "instances": {
            "source_output": settings.get("source"),
            "channel": settings.get("channel"),
            "method": settings.get("method"),
            "method_description": instance_method_short(plan),
            "parameters": settings,
            "other_parameters": facts.settings[1:],
            "threshold": threshold_text(facts),
            "thresholds_used": facts.thresholds,
            "objects": facts.counts,
            "measurements": MEASUREMENTS_LIST if plan.tables else None,
        },
        **common,
        "failures": [{"image": i, "error": e} for i, e in facts.failures],
    }


def instance_parameters(item: PlannedInput) -> list[tuple[str, str]]:
    """The instance step's parameters of one image, as (name, value) for the crate."""
    found = item.entry.instances
    if not isinstance(found, Mapping):
        return []
    settings = found.get("settings")
    params: list[tuple[str, str]] = []
    if isinstance(settings, Mapping):
        params.append(("instances_method", str(settings.get("method"))))
        params.append(("instances_source", str(settings.get("source"))))
        params.append(("instances_settings", json.dumps(dict(settings), sort_keys=True)))
    if found.get("threshold") is not None:
        params.append(("instances_threshold", f"{float(found['threshold']):g}"))
    return params
