"""BioStudies file lists: one TSV per study component and per annotation set.

A file list's first header cell is ``Files`` and each row names one file of the
package by its relative path; the other columns are attributes of that file.  The
BioImage Archive asks for the images' list to carry only attributes that tell the
images apart (those shared by all images belong in the study metadata), and for
every annotation to name the image it annotates (``Source Image``).

Where a run made objects, the lists that name their label images have four more
columns (:data:`INSTANCE_COLUMNS`): the label image (for an OME-Zarr store, the
NGFF label image inside it), the number of objects, the threshold used and the
objects' table; the tables themselves are listed in ``filelists/measurements.tsv``
(:mod:`zoodesk.export.tables`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoodesk.export.layout import INSTANCE_LABELS, ExportPlan, PlannedInput, PlannedOutput
from zoodesk.export.provenance import ModelSummary

IMAGES_LIST = "filelists/images.tsv"
MEASUREMENTS_LIST = "filelists/measurements.tsv"

#: Header of every annotation file list, in this order.
ANNOTATION_COLUMNS = (
    "Files",
    "Source Image",
    "Annotation Type",
    "Annotation Method",
    "Annotation Creation Time",
    "Model ID",
    "Model Version",
    "Weights Format",
    "Weights SHA256",
    "Run ID",
)

#: Columns added to an annotation list whose files are (or hold) label images of objects.
INSTANCE_COLUMNS = ("Segmentation Mask", "Objects", "Threshold", "Objects Table")

#: Header of the file lists of processed (restored) images.
PROCESSED_COLUMNS = (
    "Files",
    "Source Image",
    "Processing Method",
    "Processing Creation Time",
    "Model ID",
    "Model Version",
    "Weights Format",
    "Weights SHA256",
    "Run ID",
)

#: MIFA annotation type (BioImage Archive vocabulary) of each output kind.
ANNOTATION_TYPES = {
    "labels": "segmentation_mask",
    INSTANCE_LABELS: "segmentation_mask",
    "probabilities": "other",
}


def _cell(value: Any) -> str:
    # Tabs and line breaks would break the TSV; archives do not want them in cells.
    text = "" if value is None else str(value)
    return " ".join(text.split())


def tsv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Tab-separated text with a header line and ``\\n`` line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow([_cell(h) for h in header])
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buffer.getvalue()


def read_tsv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows (as dicts) of a TSV file written by :func:`tsv_text`."""
    with Path(path).open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        rows = list(reader)
    if not rows:
        return [], []
    header = rows[0]
    return header, [dict(zip(header, r, strict=False)) for r in rows[1:] if any(r)]


def annotation_type(kind: str) -> str:
    """The archive's annotation type for an output kind (``other`` when none fits)."""
    return ANNOTATION_TYPES.get(kind, "other")


def method_text(model: ModelSummary, plan: ExportPlan) -> str:
    """One line saying how the files were made: model, weights, software, device."""
    weights = model.weights
    software = plan.record.software
    return (
        f"fully automatic, model-generated (no manual curation): bioimage.io model "
        f"{model.label}, {weights.get('format', '?')} weights sha256 "
        f"{weights.get('sha256', '?')}, run with ZooDesk {software.get('zoodesk', '?')} and "
        f"ONNX Runtime {software.get('onnxruntime', '?')} on "
        f"{plan.record.device.get('used', '?')}"
    )


def _image_attributes(item: PlannedInput, info: dict[str, Any]) -> dict[str, str]:
    entry = item.entry
    attrs: dict[str, str] = {}
    if entry.axes and entry.shape:
        attrs["Axes"] = entry.axes
        attrs["Dimensions"] = " x ".join(str(n) for n in entry.shape)
    if info.get("dtype"):
        attrs["Pixel Type"] = str(info["dtype"])
    for axis in "XYZ":
        size = (entry.pixel_sizes or {}).get(axis)
        if size:
            attrs[f"Physical Size {axis}"] = f"{size[0]:g} {size[1]}"
    if info.get("channel_names"):
        attrs["Channels"] = ", ".join(info["channel_names"])
    if info.get("acquisition_date"):
        attrs["Acquisition Date"] = str(info["acquisition_date"])
    return attrs


def images_list(plan: ExportPlan, image_info: dict[int, dict[str, Any]]) -> str:
    """``filelists/images.tsv``: the images with results, and their varying attributes.

    In reference mode the listed files are the OME-XML companions that stand for the
    referenced images, and the original path, size and sha256 are always given.

    Parameters
    ----------
    plan
        The export plan.
    image_info
        Per input number: ``dtype``, ``channel_names``, ``acquisition_date`` read
        from the image.
    """
    # One row per file: the scenes of a multi-scene file share its copy.
    items: list[PlannedInput] = []
    for item in plan.done:
        if item.package_path and item.package_path not in {i.package_path for i in items}:
            items.append(item)
    attrs = [_image_attributes(i, image_info.get(i.number, {})) for i in items]
    names: list[str] = []
    for a in attrs:
        names.extend(k for k in a if k not in names)
    varying = [n for n in names if len({a.get(n, "") for a in attrs}) > 1]
    header = ["Files", *varying]
    if plan.mode == "reference":
        header += ["Original Path", "Original Size", "Original SHA256"]
    rows = []
    for item, a in zip(items, attrs, strict=True):
        row: list[Any] = [item.package_path, *(a.get(n, "") for n in varying)]
        if plan.mode == "reference":
            row += [item.entry.input, item.entry.input_size, item.entry.input_sha256]
        rows.append(row)
    return tsv_text(header, rows)


def _instance_cells(plan: ExportPlan, out: PlannedOutput) -> list[Any]:
    """The :data:`INSTANCE_COLUMNS` of a label image, or of a store that holds one."""
    item = plan.input_of(out)
    mask = out.package_path if out.kind == INSTANCE_LABELS else ""
    if out.contains:
        mask = out.contains[0].package_path
    if not mask:
        return ["", "", "", ""]
    found = item.entry.instances if isinstance(item.entry.instances, dict) else {}
    threshold = found.get("threshold")
    table = item.tables[0].package_path if item.tables else ""
    return [
        mask,
        found.get("count", ""),
        f"{float(threshold):g}" if threshold is not None else "",
        table,
    ]


def output_lists(
    plan: ExportPlan,
    model: ModelSummary,
    created: dict[str, str],
    instance_method: str = "",
) -> dict[str, str]:
    """One file list per output id: ``annotations_<id>.tsv`` or ``processed_<id>.tsv``.

    Parameters
    ----------
    plan, model
        The export plan and the model summary.
    created
        Creation time of each output, by package path (from the file's provenance).
    instance_method
        How the label images of objects were made
        (:func:`zoodesk.export.annotations.instance_method_text`).

    Returns
    -------
    dict
        Package path of each file list -> its text.
    """
    weights = model.weights
    method = method_text(model, plan)
    lists: dict[str, str] = {}
    for output_id in plan.output_ids:
        annotations = plan.group_of(output_id) == "annotations"
        outputs = plan.outputs_of(output_id)
        masks = annotations and any(o.kind == INSTANCE_LABELS or o.contains for o in outputs)
        rows = []
        for out in outputs:
            source = plan.input_of(out).package_path
            common = [
                model.display_id,
                model.version or "",
                weights.get("format", ""),
                weights.get("sha256", ""),
                plan.record.run_id,
            ]
            when = created.get(out.package_path) or plan.input_of(out).entry.finished or ""
            how = instance_method if out.kind == INSTANCE_LABELS else method
            if annotations:
                row = [out.package_path, source, annotation_type(out.kind), how, when, *common]
                rows.append(row + (_instance_cells(plan, out) if masks else []))
            else:
                rows.append([out.package_path, source, method, when, *common])
        header = ANNOTATION_COLUMNS if annotations else PROCESSED_COLUMNS
        if masks:
            header = (*header, *INSTANCE_COLUMNS)
        lists[plan.file_list_of(output_id)] = tsv_text(header, rows)
    return lists
