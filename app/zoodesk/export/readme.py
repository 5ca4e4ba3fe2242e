"""``README.md``: the package explained to a person (what, how made, how to redo it)."""

from __future__ import annotations

import shlex

from zoodesk.export.annotations import instance_facts, instance_method_short, threshold_text
from zoodesk.export.layout import INSTANCE_LABELS, MEASUREMENTS_FOLDER, ExportPlan
from zoodesk.export.provenance import MODEL_RDF_PATH, RUN_JSON_PATH, ModelSummary, effective_tiling
from zoodesk.export.rembi import coverage
from zoodesk.export.study import StudyMetadata
from zoodesk.export.tables import SCHEMAS_FOLDER


def _reproduce_command(plan: ExportPlan, model: ModelSummary) -> str:
    params = plan.record.parameters
    model_arg = model.id or "MODEL_FOLDER"
    folder = "images" if plan.mode == "include" else "ORIGINAL_IMAGES"
    parts = ["zoodesk", "predict", "--model", model_arg, "--input", folder, "--output", "results"]
    device = plan.record.device.get("requested") or "auto"
    parts += ["--device", str(device)]
    if params.get("axes"):
        parts += ["--axes", str(params["axes"])]
    for channel in params.get("channels") or []:
        parts += ["--channel", str(channel)]
    tile = params.get("tile")
    if isinstance(tile, dict) and tile:
        parts += ["--tile", *(str(v) for v in tile.values())]
    if plan.record.model.get("weights", {}).get("format"):
        parts += ["--weights", str(plan.record.model["weights"]["format"])]
    if params.get("output_format") == "ome-zarr":
        parts += ["--format", "ome-zarr"]
    parts += _instance_options(params.get("instances"))
    return " ".join(shlex.quote(p) for p in parts)


def _instance_options(settings: object) -> list[str]:
    """The ``predict`` options that make the same objects as the run's settings."""
    if not isinstance(settings, dict):
        return []
    parts = ["--instances", str(settings.get("method"))]
    options = (
        ("--instance-output", "source"),
        ("--instance-channel", "channel"),
        ("--boundary-channel", "boundary_channel"),
        ("--threshold", "threshold"),
        ("--min-size", "min_size"),
        ("--max-size", "max_size"),
        ("--min-distance", "min_distance"),
    )
    for flag, key in options:
        if settings.get(key) is not None:
            parts += [flag, str(settings[key])]
    if settings.get("fill_holes"):
        parts.append("--fill-holes")
    return parts


def readme_text(
    study: StudyMetadata,
    plan: ExportPlan,
    model: ModelSummary,
    file_lists: list[str],
) -> str:
    """The README of the package, in Markdown."""
    record = plan.record
    cover = coverage(plan)
    weights = model.weights
    title = study.title or f"Predictions of {model.name}"
    lines: list[str] = [f"# {title}", ""]
    if study.description:
        lines += [study.description, ""]
    lines += [
        "This folder is a deposition package written by ZooDesk "
        f"{record.software.get('zoodesk', '')}.  It holds the results of running the "
        f"bioimage.io model **{model.label}** on {cover['text']}, with their full "
        "provenance.  The results are model-generated and not manually curated.",
        "",
        "It serves three purposes at once: a BioImage Archive submission (an RO-Crate in "
        "the archive's own submission profile, with REMBI/MIFA metadata and BioStudies "
        "file lists), a record of the run (a second RO-Crate, a Process Run Crate 0.5, "
        "in `provenance/`), and a folder that can be zipped unchanged for Zenodo.",
        "",
        "Two crates, because the archive's profile gives every entity one of its own "
        "classes (study, dataset, file list, annotation method...) while the run's "
        "provenance is told in the Process Run Crate's terms (one action per input). The "
        "top-level crate names the provenance crate among its parts "
        "(`provenance/`, which conforms to the Process Run Crate profile); the paths in "
        "the provenance crate are relative to its folder (`../images/...`).",
        "",
        "## Contents",
        "",
        "| path | what |",
        "| --- | --- |",
        "| `ro-crate-metadata.json` | the submission: RO-Crate 1.1 in the BioImage Archive's "
        "profile (study, datasets, annotation methods, file list) |",
        "| `filelists/bia_file_list.tsv` | the archive's file list: every image and "
        "annotation, its dataset and source image |",
        "| `provenance/ro-crate-metadata.json` | the run: RO-Crate 1.1, Process Run Crate "
        "0.5, one action per input |",
    ]
    if plan.mode == "include":
        lines.append("| `images/` | the input images, byte-for-byte copies |")
    else:
        lines.append(
            "| `images/` | metadata-only OME-XML companions standing for the input images, "
            "which are referenced (original path, size, sha256), not included |"
        )
    for output_id in plan.output_ids:
        group = plan.group_of(output_id)
        what = "model-generated annotations" if group == "annotations" else "model-restored images"
        if plan.kind_of(output_id) == INSTANCE_LABELS:
            what = "label images of objects (segmentation masks), model-generated"
        outputs = plan.outputs_of(output_id)
        stores = any(o.package_path.endswith(".zarr") for o in outputs)
        form = "OME-Zarr stores" if stores else "OME-TIFF"
        if any(o.contains for o in outputs):
            form += "; each also holds the label image of its objects, `labels/instances`"
        lines.append(f"| `{group}/{output_id}/` | {what} ({plan.kind_of(output_id)}), {form} |")
    if plan.tables:
        lines += [
            f"| `{MEASUREMENTS_FOLDER}/` | tables of the measured objects: one per image (a row "
            "per object) and the run's `summary.csv` (a row per image) |",
            f"| `{SCHEMAS_FOLDER}/` | the tables' schemas (W3C CSV on the Web): every "
            "column's meaning, datatype and unit |",
        ]
    lines += [f"| `{path}` | BioStudies file list |" for path in file_lists]
    lines += [
        "| `metadata/rembi_mifa.yaml` | REMBI study metadata and MIFA annotation metadata |",
        "| `metadata/submission.pagetab.tsv` | BioStudies PageTab of the submission |",
        "| `metadata/zenodo.json` | Zenodo deposition metadata |",
        f"| `{MODEL_RDF_PATH}` | the exact model description used |",
        f"| `{RUN_JSON_PATH}` | parameters, device, versions, timings, per-file status |",
        "| `manifest-sha256.txt` | sha256 of every other file |",
        "",
        "## How the results were made",
        "",
        f"- Model: {model.label}; licence {model.license or 'not stated'}; description "
        f"sha256 `{model.rdf_sha256}`.",
        f"- Weights: {weights.get('format', '?')} (`{weights.get('source', '?')}`), sha256 "
        f"`{weights.get('sha256', '?')}`"
        + (f", converted from {weights['parent']}" if weights.get("parent") else "")
        + ".  The weights are referenced by checksum, not included.",
        f"- Device: {record.device.get('used', '?')} ({record.device.get('description', '')}), "
        f"requested {record.device.get('requested', '?')}.",
        f"- Run {record.run_id}: started {record.started}, finished {record.finished}, "
        f"status {record.status}.",
        "- Software: "
        + ", ".join(f"{k} {v}" for k, v in record.software.items() if k != "platform")
        + f"; platform {record.software.get('platform', '?')}.",
    ]
    if plan.has_instances:
        lines.append(
            f"- Objects: {instance_method_short(plan)}; threshold used "
            f"{threshold_text(instance_facts(plan))}.  The label images are model-generated "
            "segmentation masks, not manually curated."
        )
    for tiling in effective_tiling(plan):
        block = tiling["tiling"]
        lines.append(
            f"- Tiling: blocks {block.get('block_shape')}, halo {block.get('halo')}, "
            f"batch size {block.get('batch_size')} ({len(tiling['inputs'])} images)."
        )
    lines += ["", f"Coverage: {cover['text']}.", ""]
    if cover["failures"]:
        lines += ["Inputs without results (listed in the provenance with their errors):", ""]
        lines += [f"- `{f['image']}`: {f['status']}: {f['error']}" for f in cover["failures"]]
        lines.append("")
    lines += [
        "## How to reproduce",
        "",
        "Install ZooDesk, get the same model"
        + (
            f" (`zoodesk models download {model.id}`)"
            if model.id
            else f" (the run used the package at `{record.model.get('root', '?')}`)"
        )
        + f", check that its {weights.get('format', '?')} weights have the sha256 above, then:",
        "",
        "```",
        _reproduce_command(plan, model),
        "```",
        "",
        "Results on another device or ONNX Runtime version can differ in the last "
        "digits of floating-point values; compare within the model's tolerance rather "
        "than by checksum.",
        "",
        "## How to verify this package",
        "",
        "```",
        "zoodesk export --check .",
        "sha256sum -c manifest-sha256.txt",
        "```",
        "",
        "## Licence",
        "",
        f"The data in this package: {study.license}.  The model: "
        f"{model.license or 'see its description'}.",
        "",
    ]
    return "\n".join(lines)
