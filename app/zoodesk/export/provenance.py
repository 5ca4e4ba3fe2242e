"""What the package says about how its results were made: model, run, versions.

:func:`describe_model` collects the model fields that an archive or a reviewer needs
(identity, authors, citation, licence, training data, the weights entry that ran,
tensors with their pre/post-processing) from the exact description file used.
:func:`run_provenance` is the content of ``provenance/run.json``: the whole run
record, plus that model summary, the effective tiling, the versions, and where each
input and output is in the package.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from zoodesk import __version__
from zoodesk.batch.record import now_iso
from zoodesk.errors import ZooDeskError
from zoodesk.export.layout import ExportPlan

log = logging.getLogger(__name__)

RUN_JSON_SCHEMA = "zoodesk-export-provenance/1"

#: Package path of the copied model description.
MODEL_RDF_PATH = "provenance/model/rdf.yaml"
RUN_JSON_PATH = "provenance/run.json"

# The libraries whose versions shape the results (a subset of the run record's).
KEY_REQUIREMENTS = ("onnxruntime", "bioimageio.spec", "bioimageio.core", "tifffile", "numpy")


@dataclass
class ModelSummary:
    """The model as the package describes it (JSON-ready in :attr:`data`)."""

    name: str
    id: str | None
    version: str | None
    license: str | None
    doi: str | None
    rdf_sha256: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``name (id, version)`` with whatever is known."""
        extra = ", ".join(
            x for x in (self.id, f"version {self.version}" if self.version else None) if x
        )
        return f"{self.name} ({extra})" if extra else self.name

    @property
    def crate_id(self) -> str:
        """The model's RO-Crate ``@id``: its DOI, its zoo page, or a local identifier."""
        if self.doi:
            return f"https://doi.org/{self.doi}"
        if self.id:
            return f"https://bioimage.io/#/?id={self.id}"
        return "#model"

    @property
    def display_id(self) -> str:
        """The zoo id, or the name when the description has no id."""
        return self.id or self.name

    @property
    def authors(self) -> list[dict[str, Any]]:
        return list(self.data.get("authors", []))

    @property
    def cite(self) -> list[dict[str, Any]]:
        return list(self.data.get("cite", []))

    @property
    def weights(self) -> dict[str, Any]:
        return dict(self.data.get("weights_used", {}))


def _ops(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": op.get("id"), "kwargs": op.get("kwargs", {})} for op in ops or []]


def _axes(tensor: dict[str, Any]) -> str:
    letters = []
    for ax in tensor.get("axes", []):
        kind = ax.get("type")
        letters.append(
            {"batch": "b", "channel": "c", "index": "i"}.get(kind, str(ax.get("id", "?")))
        )
    return "".join(letters)


def describe_model(
    description: Path, record_model: dict[str, Any], rdf_sha256: str
) -> ModelSummary:
    """Summarise the description file that the run used.

    Parameters
    ----------
    description
        The model description (``bioimageio.yaml`` / ``rdf.yaml``) the run used.
    record_model
        The run record's ``model`` section (weights that ran, ids as recorded).
    rdf_sha256
        The description's sha256 (verified against the record by the caller).

    Returns
    -------
    ModelSummary
        Fields from the parsed description; when bioimageio.spec cannot parse it
        any more (e.g. a newer format), those of the run record.
    """
    from zoodesk.models.package import load_description_file

    data: dict[str, Any] = {}
    doi = None
    try:
        descr = load_description_file(description).descr
        full = descr.model_dump(mode="json", exclude_none=True)
        for key in (
            "name",
            "description",
            "authors",
            "cite",
            "license",
            "documentation",
            "tags",
            "training_data",
            "git_repo",
            "format_version",
        ):
            if key in full:
                data[key] = full[key]
        data["id"] = full.get("id")
        data["version"] = full.get("version")
        data["inputs"] = [
            {"id": t.get("id"), "axes": _axes(t), "preprocessing": _ops(t.get("preprocessing", []))}
            for t in full.get("inputs", [])
        ]
        data["outputs"] = [
            {
                "id": t.get("id"),
                "axes": _axes(t),
                "postprocessing": _ops(t.get("postprocessing", [])),
            }
            for t in full.get("outputs", [])
        ]
        config = full.get("config", {}).get("bioimageio", {})
        doi = config.get("doi") or full.get("doi")
    except ZooDeskError as exc:
        log.warning("%s", exc)
        data["note"] = f"the description could not be parsed again at export time: {exc}"
    weights = dict(record_model.get("weights", {}))
    data["weights_used"] = weights
    data["rdf_sha256"] = rdf_sha256
    data["rdf_file"] = MODEL_RDF_PATH
    name = str(data.get("name") or record_model.get("name") or "unnamed model")
    model_id = data.get("id") or record_model.get("id")
    version = data.get("version") or record_model.get("version")
    data["name"], data["id"], data["version"] = name, model_id, version
    license_ = data.get("license") or record_model.get("license")
    data["license"] = license_
    return ModelSummary(
        name=name,
        id=str(model_id) if model_id else None,
        version=str(version) if version else None,
        license=str(license_) if license_ else None,
        doi=str(doi) if doi else None,
        rdf_sha256=rdf_sha256,
        data=data,
    )


def software_versions(record_software: dict[str, str]) -> dict[str, str]:
    """Versions that made the results (from the record) and that made the package."""
    versions = dict(record_software)
    exported: dict[str, str] = {"zoodesk": __version__}
    for name in ("rocrate", "bioimageio.spec", "bioimageio.core"):
        try:
            exported[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {**versions, **{f"export:{k}": v for k, v in exported.items()}}


def effective_tiling(plan: ExportPlan) -> list[dict[str, Any]]:
    """The distinct tilings used (block shape, halo, batch size), with their inputs."""
    found: list[dict[str, Any]] = []
    for item in plan.done:
        tiling = item.entry.tiling
        if not tiling:
            continue
        core = {k: v for k, v in tiling.items() if k != "frames"}
        for known in found:
            if known["tiling"] == core:
                known["inputs"].append(item.name)
                break
        else:
            found.append({"tiling": core, "inputs": [item.name]})
    return found


def threshold_of(model: ModelSummary) -> dict[str, float]:
    """Binarisation thresholds of the outputs that have one, by output id."""
    found: dict[str, float] = {}
    for tensor in model.data.get("outputs", []):
        for op in tensor.get("postprocessing", []):
            if op.get("id") == "binarize" and "threshold" in op.get("kwargs", {}):
                value = op["kwargs"]["threshold"]
                if isinstance(value, int | float):
                    found[str(tensor.get("id"))] = float(value)
    return found


def run_provenance(plan: ExportPlan, model: ModelSummary) -> dict[str, Any]:
    """The content of ``provenance/run.json``."""
    record = plan.record
    files = []
    for item in plan.inputs:
        files.append(
            {
                "number": item.number,
                "input": item.entry.input,
                "status": item.entry.status,
                "error": item.entry.error,
                "input_sha256": item.entry.input_sha256,
                "package_path": item.package_path,
                "included": item.included,
                "crate_id": item.crate_id,
                "pixel_sizes": item.entry.pixel_sizes,
                "shape": item.entry.shape,
                "axes": item.entry.axes,
                "outputs": [
                    {
                        "tensor": o.tensor,
                        "kind": o.kind,
                        "run_path": o.entry.path,
                        "package_path": o.package_path,
                        "sha256": o.entry.sha256,
                        "axes": o.entry.axes,
                        "shape": o.entry.shape,
                        "dtype": o.entry.dtype,
                        "contains": [
                            {
                                "kind": c.entry.kind,
                                "run_path": c.entry.path,
                                "package_path": c.package_path,
                            }
                            for c in o.contains
                        ],
                    }
                    for o in item.outputs
                ],
                "tables": [
                    {
                        "run_path": t.entry.path if t.entry else None,
                        "package_path": t.package_path,
                        "sha256": t.entry.sha256 if t.entry else None,
                        "label_image": t.labels,
                    }
                    for t in item.tables
                ],
                "instances": item.entry.instances,
            }
        )
    return {
        "schema": RUN_JSON_SCHEMA,
        "exported": now_iso(),
        "input_mode": plan.mode,
        "run_dir": str(plan.run_dir),
        "model": model.data,
        "device": record.device,
        "parameters": record.parameters,
        "tiling": effective_tiling(plan),
        "versions": software_versions(record.software),
        "summary": record.summary(),
        "objects_summary": plan.summary.package_path if plan.summary else None,
        "files": files,
        "run_record": record.to_json(),
    }
