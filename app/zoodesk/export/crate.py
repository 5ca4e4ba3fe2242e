"""``ro-crate-metadata.json``: the run's provenance as an RO-Crate (Process Run Crate).

The crate follows RO-Crate 1.1 and the Process Run Crate 0.5 profile: the root
dataset names the profile in ``conformsTo`` and ``mentions`` one ``CreateAction``
per input image.  Each action has ZooDesk (a ``SoftwareApplication`` with its key
requirements) as ``instrument``; the input file, the model and the parameters
(``PropertyValue``: tile, halo, device, batch size, threshold, ...) as ``object``;
the outputs as ``result``; start and end time; and ``actionStatus`` with ``error``
for an input that failed.  Every file of the package (except the manifest, which
lists the crate itself) is a ``File`` with encodingFormat, contentSize and sha256.
A run that made objects adds the instance step's parameters to each action, its
label images and tables to the action's results, and describes every column of
each table (``variableMeasured``: ``PropertyValue`` with ``unitText``).

The crate is built with the ``rocrate`` library; only the metadata file is written
by it, the payload is already in place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoodesk.export.annotations import instance_parameters
from zoodesk.export.layout import INSTANCE_LABELS, ExportPlan, PlannedInput, PlannedOutput
from zoodesk.export.provenance import KEY_REQUIREMENTS, ModelSummary, threshold_of
from zoodesk.export.study import StudyMetadata
from zoodesk.export.tables import TableSchema, table_description

CRATE_METADATA = "ro-crate-metadata.json"
RO_CRATE_VERSION = "1.1"
PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
APPLICATION_ID = "#zoodesk"

# RO-Crate 1.1's context has no term for sha256; schema.org's property is declared
# locally (RO-Crate 1.1, "Extending RO-Crate": an extra context object).
EXTRA_TERMS = {"sha256": "http://schema.org/sha256"}

COMPLETED = "http://schema.org/CompletedActionStatus"
FAILED = "http://schema.org/FailedActionStatus"

_FORMATS = (
    (".ome.tiff", "image/tiff"),
    (".ome.tif", "image/tiff"),
    (".tiff", "image/tiff"),
    (".tif", "image/tiff"),
    (".companion.ome", "application/xml"),
    (".png", "image/png"),
    (".jpg", "image/jpeg"),
    (".jpeg", "image/jpeg"),
    (".bmp", "image/bmp"),
    (".npy", "application/octet-stream"),
    (".tsv", "text/tab-separated-values"),
    (".csv", "text/csv"),
    (".yaml", "application/yaml"),
    (".yml", "application/yaml"),
    (".json", "application/json"),
    (".md", "text/markdown"),
    (".txt", "text/plain"),
)


def encoding_format(name: str) -> str:
    """The media type of a package file, from its name."""
    lower = name.lower()
    return next(
        (fmt for suffix, fmt in _FORMATS if lower.endswith(suffix)), "application/octet-stream"
    )


@dataclass(frozen=True)
class FileFacts:
    """Size and checksum of one package file (as written)."""

    size: int
    sha256: str


def _license_properties(spdx: str) -> dict[str, str]:
    return {"@type": "CreativeWork", "name": spdx, "identifier": spdx}


def license_id(spdx: str) -> str:
    """The licence's URL (SPDX page)."""
    return f"https://spdx.org/licenses/{spdx}"


def _iso_seconds(value: str | None) -> str | None:
    # Process Run Crate expects "YYYY-MM-DDThh:mm:ss+hh:mm"; the run record already
    # writes that form, but a "Z" suffix from an older record is normalised too.
    if not value:
        return None
    return value[:-1] + "+00:00" if value.endswith("Z") else value


#: What an OME-Zarr store in a package conforms to (its format, as RO-Crate asks
#: of a Dataset that is one image).
NGFF_SPECIFICATION = "https://ngff.openmicroscopy.org/0.5/"


def is_store(path: str) -> bool:
    """Whether a package path names an OME-Zarr store (a folder that is one image)."""
    return path.lower().endswith(".zarr")


def _describe_file(
    crate: Any, path: str, facts: FileFacts, properties: Mapping[str, Any] | None = None
) -> Any:
    if is_store(path):
        # A Dataset (its @id ends with "/"); the checksum covers its files in order.
        store = {
            "name": path.rsplit("/", 1)[-1],
            "encodingFormat": NGFF_SPECIFICATION,
            "contentSize": str(facts.size),
            "sha256": facts.sha256,
            **(properties or {}),
        }
        return crate.add_dataset(source=None, dest_path=path, properties=store)
    props = {
        "name": path.rsplit("/", 1)[-1],
        "encodingFormat": encoding_format(path),
        "contentSize": str(facts.size),
        "sha256": facts.sha256,
        **(properties or {}),
    }
    return crate.add_file(source=None, dest_path=path, properties=props)


class _Parameters:
    """PropertyValue entities, one per distinct (name, value)."""

    def __init__(self, crate: Any) -> None:
        self.crate = crate
        self.ids: dict[tuple[str, str], Any] = {}

    def get(self, name: str, value: Any, unit: str | None = None) -> Any:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        key = (name, text)
        if key not in self.ids:
            from rocrate.model.contextentity import ContextEntity

            props: dict[str, Any] = {
                "@type": "PropertyValue",
                "name": name,
                "propertyID": name,
                "value": text,
            }
            if unit:
                props["unitText"] = unit
            entity = ContextEntity(
                self.crate, f"#param-{name}-{len(self.ids) + 1}", properties=props
            )
            self.ids[key] = self.crate.add(entity)
        return self.ids[key]


def _output_text(out: PlannedOutput, image: str) -> str:
    """What an output file (or store) is, for its crate entity."""
    if out.kind == INSTANCE_LABELS:
        what = (
            f"label image of the objects of {image} (segmentation mask: 0 = background, "
            f"one integer per object), made from model output {out.tensor}"
        )
    else:
        what = f"model output {out.tensor} ({out.kind}) for {image}"
    for inner in out.contains:
        what += (
            f"; includes the segmentation mask of its objects, the NGFF label image "
            f"{inner.package_path[len(out.package_path) + 1 :]}"
        )
    return f"{what}; model-generated, not manually curated"


def _holds(out: PlannedOutput, path: str | None) -> bool:
    """Whether ``out`` is the label image at ``path`` or the store that holds it."""
    return path is not None and (
        out.package_path == path or any(i.package_path == path for i in out.contains)
    )


def _describe_table(
    crate: Any,
    path: str,
    facts: FileFacts,
    schema: TableSchema | None,
    description: str,
    based_on: list[Any],
) -> Any:
    """A table as a ``File`` whose ``variableMeasured`` are its columns."""
    from rocrate.model.contextentity import ContextEntity

    props: dict[str, Any] = {
        "description": description,
        "isBasedOn": [b for b in based_on if b is not None],
    }
    if schema is not None:
        columns = []
        for column in schema.columns:
            entity = crate.get(schema.column_id(column))
            if entity is None:
                described = {
                    "@type": "PropertyValue",
                    "name": column.name,
                    "propertyID": column.name,
                    "description": column.description,
                }
                if column.unit:
                    described["unitText"] = column.unit
                entity = crate.add(
                    ContextEntity(crate, schema.column_id(column), properties=described)
                )
            columns.append(entity)
        props["variableMeasured"] = columns
    return _describe_file(crate, path, facts, props)


def _tile_text(tiling: Mapping[str, Any], key: str) -> str | None:
    value = tiling.get(key)
    if isinstance(value, Mapping):
        return " x ".join(f"{k}={v}" for k, v in value.items())
    return None if value is None else str(value)


def _action_parameters(
    params: _Parameters, plan: ExportPlan, item: PlannedInput, thresholds: Mapping[str, float]
) -> list[Any]:
    record = plan.record
    found = [
        params.get("device", record.device.get("used", "")),
        params.get("device_requested", record.device.get("requested", "")),
        params.get("execution_provider", record.device.get("provider", "")),
        params.get("weights_format", record.model.get("weights", {}).get("format", "")),
        params.get("pad_mode", record.parameters.get("pad_mode", "")),
    ]
    tiling = item.entry.tiling or {}
    for name, key in (("tile", "block_shape"), ("halo", "halo")):
        text = _tile_text(tiling, key)
        if text is not None:
            found.append(params.get(name, text, "pixels"))
    if tiling.get("batch_size") is not None:
        found.append(params.get("batch_size", str(tiling["batch_size"])))
    if tiling.get("blocks") is not None:
        found.append(params.get("blocks", str(tiling["blocks"])))
    for output_id, value in thresholds.items():
        found.append(params.get(f"threshold_{output_id}", f"{value:g}"))
    if item.entry.axes_mapping:
        found.append(params.get("axes_mapping", item.entry.axes_mapping))
    found += [params.get(name, value) for name, value in instance_parameters(item)]
    return found


def _input_entity(
    crate: Any, item: PlannedInput, facts: Mapping[str, FileFacts], original: FileFacts | None
) -> Any:
    from rocrate.model.contextentity import ContextEntity

    entry = item.entry
    if item.included and item.package_path:
        known = crate.get(item.package_path)
        if known is not None:  # another scene of the same file
            return known
        return _describe_file(
            crate,
            item.package_path,
            facts[item.package_path],
            {"description": f"input image, byte-for-byte copy of {entry.input}"},
        )
    source = Path(entry.input)
    if entry.input_sha256 or original is not None:
        # An input that is referenced, not included: a File with a local identifier.
        props: dict[str, Any] = {
            "@type": "File",
            "name": source.name,
            "description": f"input image, not included; original path {entry.input}",
            "encodingFormat": encoding_format(source.name),
            "identifier": entry.input,
        }
        size = original.size if original is not None else entry.input_size
        if size is not None:
            props["contentSize"] = str(size)
        sha = original.sha256 if original is not None else entry.input_sha256
        if sha:
            props["sha256"] = sha
        entity = crate.add(ContextEntity(crate, item.crate_id, properties=props))
        crate.root_dataset.append_to("hasPart", entity)
        return entity
    # Missing at run time: nothing to describe as a file.
    return crate.add(
        ContextEntity(
            crate,
            item.crate_id,
            properties={
                "@type": "CreativeWork",
                "name": source.name,
                "description": f"input that could not be read; original path {entry.input}",
                "identifier": entry.input,
            },
        )
    )


def _model_entities(
    crate: Any, model: ModelSummary, facts: Mapping[str, FileFacts], rdf_path: str
) -> Any:
    from rocrate.model.contextentity import ContextEntity

    props: dict[str, Any] = {
        "@type": "CreativeWork",
        "name": model.name,
        "description": str(model.data.get("description", "")) or f"bioimage.io model {model.name}",
        "additionalType": "https://bioimage.io/#/?type=model",
    }
    if model.version:
        props["version"] = model.version
    identifiers = [x for x in (model.id, model.doi) if x]
    if identifiers:
        props["identifier"] = identifiers if len(identifiers) > 1 else identifiers[0]
    if model.license:
        props["license"] = {"@id": license_id(model.license)}
        crate.add(
            ContextEntity(
                crate,
                license_id(model.license),
                properties=_license_properties(model.license),
            )
        )
    citations = []
    for n, cite in enumerate(model.cite, start=1):
        cid = (
            f"https://doi.org/{cite['doi']}"
            if cite.get("doi")
            else cite.get("url") or f"#model-cite-{n}"
        )
        citations.append(
            crate.add(
                ContextEntity(
                    crate,
                    cid,
                    properties={"@type": "ScholarlyArticle", "name": cite.get("text", cid)},
                )
            )
        )
    if citations:
        props["citation"] = citations
    authors = []
    for n, author in enumerate(model.authors, start=1):
        aid = (
            f"https://orcid.org/{author['orcid']}" if author.get("orcid") else f"#model-author-{n}"
        )
        a_props = {"@type": "Person", "name": author.get("name", "")}
        if author.get("affiliation"):
            a_props["affiliation"] = author["affiliation"]
        authors.append(crate.add(ContextEntity(crate, aid, properties=a_props)))
    if authors:
        props["author"] = authors
    tags = model.data.get("tags")
    if tags:
        props["keywords"] = [str(t) for t in tags]
    weights = model.weights
    weights_entity = crate.add(
        ContextEntity(
            crate,
            "#model-weights",
            properties={
                "@type": "CreativeWork",
                "name": f"{weights.get('format', '?')} weights {weights.get('source', '')}".strip(),
                "encodingFormat": str(weights.get("format", "")),
                "sha256": str(weights.get("sha256", "")),
                "description": (
                    "the weights that ran, referenced by sha256 (not included); converted from "
                    f"{weights['parent']}"
                    if weights.get("parent")
                    else "the weights that ran, referenced by sha256 (not included)"
                ),
            },
        )
    )
    props["hasPart"] = [weights_entity]
    entity = crate.add(ContextEntity(crate, model.crate_id, properties=props))
    rdf = _describe_file(
        crate,
        rdf_path,
        facts[rdf_path],
        {"description": "the exact model description the run used", "about": entity},
    )
    entity["subjectOf"] = rdf
    return entity


def _application(crate: Any, plan: ExportPlan) -> Any:
    from rocrate.model.softwareapplication import SoftwareApplication

    software = plan.record.software
    requirements = []
    for name in KEY_REQUIREMENTS:
        version = software.get(name)
        if not version:
            continue
        requirements.append(
            crate.add(
                SoftwareApplication(
                    crate,
                    f"https://pypi.org/project/{name}/{version}/",
                    properties={
                        "name": name,
                        "version": version,
                        "url": f"https://pypi.org/project/{name}/",
                    },
                )
            )
        )
    app = SoftwareApplication(
        crate,
        APPLICATION_ID,
        properties={
            "name": "ZooDesk",
            "version": software.get("zoodesk", ""),
            "description": "runs BioImage Model Zoo models offline with ONNX Runtime",
            "softwareRequirements": requirements,
        },
    )
    return crate.add(app)


def build_crate(
    plan: ExportPlan,
    model: ModelSummary,
    study: StudyMetadata,
    facts: Mapping[str, FileFacts],
    *,
    originals: Mapping[int, FileFacts],
    rdf_path: str,
    title: str,
    description: str,
    date_published: str,
    schemas: Mapping[str, TableSchema] | None = None,
) -> Any:
    """Build the crate (a :class:`rocrate.rocrate.ROCrate`) for a written package.

    Parameters
    ----------
    plan, model, study
        The export plan, the model summary and the user's study metadata.
    facts
        Size and sha256 of every payload file already written, by package path.
    originals
        Size and sha256 of the inputs not included in the package, measured at
        export time, by input number (missing inputs have none).
    rdf_path
        Package path of the model description copy.
    title, description, date_published
        The root dataset's name, description and publication date.
    schemas
        The schema of each table of measurements, by its package path: each table is
        a ``File`` whose ``variableMeasured`` are its columns (``PropertyValue`` with
        ``unitText`` and ``description``).
    """
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    crate = ROCrate(version=RO_CRATE_VERSION)
    crate.metadata.extra_terms.update(EXTRA_TERMS)
    root = crate.root_dataset
    root["name"] = title
    root["description"] = description
    root["datePublished"] = date_published
    root["license"] = {"@id": license_id(study.license)}
    crate.add(
        ContextEntity(
            crate,
            license_id(study.license),
            properties=_license_properties(study.license),
        )
    )
    profile = crate.add(
        ContextEntity(
            crate,
            PROCESS_RUN_CRATE,
            properties={"@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"},
        )
    )
    root["conformsTo"] = [profile]
    if study.clean_keywords:
        root["keywords"] = study.clean_keywords

    people = []
    organisations: dict[str, Any] = {}
    for n, author in enumerate(study.named_authors, start=1):
        pid = f"https://orcid.org/{author.orcid}" if author.orcid else f"#author-{n}"
        person: dict[str, Any] = {"@type": "Person", "name": author.name}
        if author.email:
            person["email"] = author.email
        if author.affiliation:
            if author.affiliation not in organisations:
                organisations[author.affiliation] = crate.add(
                    ContextEntity(
                        crate,
                        f"#organization-{len(organisations) + 1}",
                        properties={"@type": "Organization", "name": author.affiliation},
                    )
                )
            person["affiliation"] = organisations[author.affiliation]
        people.append(crate.add(ContextEntity(crate, pid, properties=person)))
    if people:
        root["author"] = people
    for n, grant in enumerate(study.named_funding, start=1):
        funder = crate.add(
            ContextEntity(
                crate,
                f"#funding-{n}",
                properties={
                    "@type": "Grant",
                    "name": grant.grant_id or grant.funder,
                    "identifier": grant.grant_id,
                    "funder": grant.funder,
                },
            )
        )
        root.append_to("funding", funder)

    app = _application(crate, plan)
    model_entity = _model_entities(crate, model, facts, rdf_path)
    params = _Parameters(crate)
    thresholds = threshold_of(model)
    listed: set[str] = {rdf_path}
    actions = []
    for item in plan.inputs:
        source = _input_entity(crate, item, facts, originals.get(item.number))
        if item.package_path:
            listed.add(item.package_path)
        if item.package_path and not item.included:
            _describe_file(
                crate,
                item.package_path,
                facts[item.package_path],
                {
                    "description": f"metadata-only OME-XML of the referenced {item.entry.input}",
                    "about": source,
                },
            )
        results = []
        for out in item.outputs:
            listed.add(out.package_path)
            results.append(
                _describe_file(
                    crate,
                    out.package_path,
                    facts[out.package_path],
                    {"description": _output_text(out, item.name), "isBasedOn": source},
                )
            )
        written = list(zip(item.outputs, results, strict=True))
        for table in item.tables:
            listed.add(table.package_path)
            labels = next((r for o, r in written if _holds(o, table.labels)), source)
            results.append(
                _describe_table(
                    crate,
                    table.package_path,
                    facts[table.package_path],
                    (schemas or {}).get(table.package_path),
                    table_description(plan, table, item),
                    [labels, source],
                )
            )
        status = item.entry.status
        props: dict[str, Any] = {
            "@type": "CreateAction",
            "name": f"Run {model.name} on {item.name}",
            "description": f"input {item.number} of {len(plan.inputs)}: {status}",
            # The profile expects the status IRI as a plain string.
            "actionStatus": COMPLETED if item.done else FAILED,
        }
        start, end = _iso_seconds(item.entry.started), _iso_seconds(item.entry.finished)
        if start:
            props["startTime"] = start
        if end:
            props["endTime"] = end
        if not item.done:
            props["error"] = item.entry.error or (
                "not processed: the run ended before this input"
                if status in ("not done", "pending")
                else f"no result ({status})"
            )
        if people:
            props["agent"] = people[0]
        action = crate.add_action(
            app,
            identifier=f"#action-{item.number}",
            object=[source, model_entity, *_action_parameters(params, plan, item, thresholds)],
            result=results or None,
            properties=props,
        )
        actions.append(action)
    root["mentions"] = actions
    if plan.summary is not None and plan.summary.package_path in facts:
        listed.add(plan.summary.package_path)
        _describe_table(
            crate,
            plan.summary.package_path,
            facts[plan.summary.package_path],
            (schemas or {}).get(plan.summary.package_path),
            table_description(plan, plan.summary, None),
            [crate.get(t.package_path) for i in plan.inputs for t in i.tables],
        )
    for schema in {s.path: s for s in (schemas or {}).values()}.values():
        if schema.path in facts:
            listed.add(schema.path)
            _describe_file(
                crate,
                schema.path,
                facts[schema.path],
                {
                    "description": f"schema of the {schema.kind} tables (W3C CSV on the Web): "
                    "every column's name, datatype, description and unit",
                    "about": [crate.get(t) for t, v in (schemas or {}).items() if v is schema],
                },
            )
    stores = {path for path in facts if is_store(path)}
    for path in sorted(set(facts) - listed):
        # The files inside a store are its parts, not entities of their own.
        if not path.startswith("#") and not any(path.startswith(f"{s}/") for s in stores):
            _describe_file(crate, path, facts[path])
    return crate


#: Where the provenance crate lives in the package: a crate of its own, because the
#: package's top-level crate follows the BioImage Archive's submission profile.
PROVENANCE_FOLDER = "provenance"


def _rebased(value: Any, folder: str) -> Any:
    """``value`` with every package path made relative to ``folder`` (``../images/...``)."""
    if isinstance(value, list):
        return [_rebased(v, folder) for v in value]
    if not isinstance(value, dict):
        return value
    rebased = {}
    for key, item in value.items():
        if key == "@id" and isinstance(item, str) and _is_package_path(item):
            prefix = f"{folder}/"
            item = item.removeprefix(prefix) if item.startswith(prefix) else f"../{item}"
        rebased[key] = _rebased(item, folder)
    return rebased


def _is_package_path(entity_id: str) -> bool:
    return not (
        entity_id.startswith(("#", "./", "../"))
        or entity_id == CRATE_METADATA
        or "://" in entity_id
        or entity_id.split("/")[0].endswith(":")
    )


def read_provenance_graph(package: Path) -> dict[str, dict[str, Any]]:
    """The provenance crate's entities by ``@id``, with ids as package paths again.

    Raises ``OSError`` or ``ValueError`` (also ``KeyError``, ``TypeError``) when the
    crate is missing or unreadable.
    """
    data = json.loads((package / PROVENANCE_FOLDER / CRATE_METADATA).read_text(encoding="utf-8"))

    def unbased(value: Any) -> Any:
        if isinstance(value, list):
            return [unbased(v) for v in value]
        if not isinstance(value, dict):
            return value
        result = {}
        for key, item in value.items():
            if key == "@id" and isinstance(item, str):
                if item.startswith("../"):
                    item = item[3:]
                elif _is_package_path(item):
                    item = f"{PROVENANCE_FOLDER}/{item}"
            result[key] = unbased(item)
        return result

    return {e["@id"]: e for e in unbased(data["@graph"])}


def write_crate(crate: Any, folder: Path) -> Path:
    """Write ``crate``'s metadata as the nested crate ``folder/provenance``.

    The crate is built with package paths (``images/a.tif``); in the nested crate
    they are relative to its own root (``../images/a.tif``), which keeps it a valid
    Process Run Crate whose data are the package's files.
    """
    data = crate.metadata.generate()
    data["@graph"] = _rebased(data["@graph"], PROVENANCE_FOLDER)
    target = folder / PROVENANCE_FOLDER / CRATE_METADATA
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
    return target
