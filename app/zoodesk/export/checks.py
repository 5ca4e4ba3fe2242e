"""Re-verify a deposition package (``zoodesk export --check``).

Every check reads the package as it is on disk, independently of how it was made:
the manifest (every file listed, every checksum right), the path rules, the file
lists (every listed file exists; every annotation names exactly one existing source
image), the OME-XML of every OME-TIFF and companion (valid against the OME 2016-06
schema; outputs keep their source's pixel sizes), the tables of measured objects
(each listed, with exactly the columns its schema describes) and the RO-Crate (the
entities the profile needs, every input's action, every described file present with
the right size and sha256).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoodesk.export.crate import (
    COMPLETED,
    CRATE_METADATA,
    FAILED,
    PROCESS_RUN_CRATE,
    PROVENANCE_FOLDER,
    read_provenance_graph,
)
from zoodesk.export.filelists import (
    ANNOTATION_COLUMNS,
    IMAGES_LIST,
    INSTANCE_COLUMNS,
    MEASUREMENTS_LIST,
    PROCESSED_COLUMNS,
    read_tsv,
)
from zoodesk.export.layout import COMPANION_SUFFIX, MEASUREMENTS_FOLDER
from zoodesk.export.naming import is_safe_path
from zoodesk.export.ome import ome_xml_of, pixel_sizes_of, schema_problems
from zoodesk.export.package import MANIFEST, README
from zoodesk.export.pagetab import PAGETAB_PATH
from zoodesk.export.provenance import MODEL_RDF_PATH, RUN_JSON_PATH
from zoodesk.export.rembi import REMBI_PATH
from zoodesk.export.tables import check_tables
from zoodesk.export.zenodo import ZENODO_PATH
from zoodesk.fileutils import sha256_file

REQUIRED_FILES = (
    CRATE_METADATA,
    README,
    IMAGES_LIST,
    REMBI_PATH,
    PAGETAB_PATH,
    ZENODO_PATH,
    MODEL_RDF_PATH,
    RUN_JSON_PATH,
    MANIFEST,
)


@dataclass(frozen=True)
class Problem:
    """One problem found in a package: the file concerned and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _package_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    )


def _stores(root: Path) -> set[str]:
    """The OME-Zarr stores of a package: folders that file lists name as one image."""
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*.zarr")
        if p.is_dir() and ((p / "zarr.json").is_file() or (p / ".zattrs").is_file())
    }


def _in_store(rel: str, stores: set[str]) -> bool:
    return any(rel.startswith(f"{store}/") for store in stores)


def _check_manifest(root: Path, files: list[str]) -> list[Problem]:
    problems: list[Problem] = []
    path = root / MANIFEST
    if not path.is_file():
        return [Problem(MANIFEST, "missing")]
    listed: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        sha, sep, rel = line.partition("  ")
        if not sep or len(sha) != 64:
            problems.append(Problem(MANIFEST, f"line {n} is not '<sha256>  <path>'"))
            continue
        listed[rel] = sha
    for rel, sha in listed.items():
        target = root / rel
        if not target.is_file():
            problems.append(Problem(rel, "listed in the manifest but missing"))
        elif sha256_file(target) != sha:
            problems.append(Problem(rel, "sha256 does not match the manifest (file changed)"))
    for rel in files:
        if rel != MANIFEST and rel not in listed:
            problems.append(Problem(rel, "not listed in the manifest"))
    return problems


def _check_paths(files: list[str], stores: set[str]) -> list[Problem]:
    problems = []
    for rel in files:
        store = next((s for s in stores if rel.startswith(f"{s}/")), None)
        # Inside an OME-Zarr store the format names the files (".zattrs", "zarr.json").
        inner_ok = store is not None and bool(_STORE_PART.fullmatch(rel[len(store) + 1 :]))
        if not is_safe_path(store if store is not None else rel) or (store and not inner_ok):
            problems.append(
                Problem(rel, "path breaks the package rules (relative, '/', [A-Za-z0-9._-] only)")
            )
    return problems


_STORE_PART = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


def _check_file_lists(root: Path, files: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    from zoodesk.export.bia import BIA_FILE_LIST

    # BioStudies' lists; the archive's RO-Crate file list has its own check.
    lists = sorted(
        f
        for f in files
        if f.startswith("filelists/")
        and f.endswith(".tsv")
        and f not in (BIA_FILE_LIST, MEASUREMENTS_LIST)  # checked with the tables
    )
    if IMAGES_LIST not in files:
        problems.append(Problem(IMAGES_LIST, "missing"))
    for rel in lists:
        header, rows = read_tsv(root / rel)
        if not header or header[0] != "Files":
            problems.append(Problem(rel, "first header cell is not 'Files'"))
            continue
        name = rel.rsplit("/", 1)[-1]
        if name.startswith("annotations_") and tuple(header) not in (
            ANNOTATION_COLUMNS,
            (*ANNOTATION_COLUMNS, *INSTANCE_COLUMNS),
        ):
            problems.append(Problem(rel, f"header is not {' | '.join(ANNOTATION_COLUMNS)}"))
        if name.startswith("processed_") and tuple(header) != PROCESSED_COLUMNS:
            problems.append(Problem(rel, f"header is not {' | '.join(PROCESSED_COLUMNS)}"))
        for n, row in enumerate(rows, start=2):
            listed = row.get("Files", "")
            if listed not in files:
                problems.append(Problem(rel, f"line {n}: file {listed!r} is not in the package"))
            for column in ("Segmentation Mask", "Objects Table"):
                # A label image inside a store is a folder of it, not a file of its own.
                value = row.get(column, "")
                if value and value not in files and not (root / value).is_dir():
                    problems.append(Problem(rel, f"line {n}: {column} {value!r} is not there"))
            if "Source Image" in header:
                source = row.get("Source Image", "")
                if not source or ";" in source or "," in source or source not in files:
                    problems.append(
                        Problem(
                            rel,
                            f"line {n}: Source Image {source!r} does not name one file "
                            "of the package",
                        )
                    )
    return problems


def _check_ome(root: Path, files: list[str], run: dict[str, Any] | None) -> list[Problem]:
    problems: list[Problem] = []
    xml_of: dict[str, str] = {}
    for rel in files:
        lower = rel.lower()
        try:
            if lower.endswith((".ome.tif", ".ome.tiff")):
                xml = ome_xml_of(root / rel)
                if xml is None:
                    problems.append(Problem(rel, "named .ome.tif but holds no OME-XML"))
                    continue
            elif lower.endswith(COMPANION_SUFFIX):
                xml = (root / rel).read_text(encoding="utf-8")
            else:
                continue
        except (OSError, ValueError) as exc:
            problems.append(Problem(rel, f"cannot be read ({exc})"))
            continue
        xml_of[rel] = xml
        problems += [Problem(rel, f"OME-XML is not valid: {p}") for p in schema_problems(xml)]
    for entry in (run or {}).get("files", []):
        source = {k: (float(v[0]), str(v[1])) for k, v in (entry.get("pixel_sizes") or {}).items()}
        in_sizes = dict(zip(entry.get("axes") or "", entry.get("shape") or [], strict=False))
        for out in entry.get("outputs", []):
            rel = out.get("package_path", "")
            if rel not in xml_of:
                continue
            written = pixel_sizes_of(xml_of[rel])
            out_sizes = dict(zip(out.get("axes", ""), out.get("shape", []), strict=False))
            for axis, (size, unit) in source.items():
                if in_sizes.get(axis) != out_sizes.get(axis):
                    continue
                got = written.get(axis)
                if got is None or abs(got[0] - size) > 1e-9 * max(1.0, abs(size)) or got[1] != unit:
                    problems.append(
                        Problem(
                            rel,
                            f"physical size {axis} is {got}, the source image has {(size, unit)}",
                        )
                    )
    return problems


def _ids(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [i["@id"] for i in items if isinstance(i, dict) and "@id" in i]


def _types(entity: dict[str, Any]) -> set[str]:
    value = entity.get("@type", [])
    return set(value if isinstance(value, list) else [value])


def _check_crate(root: Path, files: set[str], run: dict[str, Any] | None) -> list[Problem]:
    """The provenance crate (Process Run Crate, nested in provenance/)."""
    where = f"{PROVENANCE_FOLDER}/{CRATE_METADATA}"
    if not (root / where).is_file():
        return [Problem(where, "missing")]
    try:
        graph = read_provenance_graph(root)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [Problem(where, f"not a readable RO-Crate ({exc})")]
    problems: list[Problem] = []

    def problem(message: str) -> None:
        problems.append(Problem(where, message))

    root_entity = graph.get("./")
    if root_entity is None:
        problem("no root dataset './'")
        return problems
    if CRATE_METADATA not in graph:
        problem("no metadata descriptor entity")
    for key in ("name", "description", "datePublished", "license"):
        if not root_entity.get(key):
            problem(f"the root dataset has no {key}")
    if PROCESS_RUN_CRATE not in _ids(root_entity.get("conformsTo", [])):
        problem(f"the root dataset does not conform to {PROCESS_RUN_CRATE}")
    apps = [e for e in graph.values() if "SoftwareApplication" in _types(e)]
    if not any(e.get("name") == "ZooDesk" and e.get("version") for e in apps):
        problem("no SoftwareApplication ZooDesk with a version")
    actions = [e for e in graph.values() if "CreateAction" in _types(e)]
    mentioned = set(_ids(root_entity.get("mentions", [])))
    for action in actions:
        aid = action["@id"]
        if aid not in mentioned:
            problem(f"action {aid} is not mentioned by the root dataset")
        for key in ("instrument", "object"):
            if not _ids(action.get(key, [])):
                problem(f"action {aid} has no {key}")
        status = action.get("actionStatus")
        if status not in (COMPLETED, FAILED):
            problem(f"action {aid} has no actionStatus (completed or failed)")
        if status == COMPLETED and not _ids(action.get("result", [])):
            problem(f"completed action {aid} has no result")
        if status == FAILED and not action.get("error"):
            problem(f"failed action {aid} has no error")
        for ref in _ids(action.get("object", [])) + _ids(action.get("result", [])):
            if ref not in graph:
                problem(f"action {aid} refers to {ref}, which the crate does not describe")
    if run is not None and len(actions) != len(run.get("files", [])):
        problem(f"{len(actions)} actions for {len(run.get('files', []))} inputs of the run")
    for entity in graph.values():
        if "File" not in _types(entity) or entity["@id"].startswith(("#", "http:", "https:")):
            continue
        rel = entity["@id"]
        if rel in (CRATE_METADATA, where):
            continue
        if rel not in files:
            problem(f"describes {rel}, which is not in the package")
            continue
        for key in ("encodingFormat", "contentSize", "sha256"):
            if not entity.get(key):
                problem(f"file {rel} has no {key}")
        if str(entity.get("contentSize")) != str((root / rel).stat().st_size):
            problem(f"file {rel}: contentSize {entity.get('contentSize')} is not its size")
        if entity.get("sha256") and entity["sha256"] != sha256_file(root / rel):
            problem(f"file {rel}: sha256 does not match")
    return problems


#: The archive's classes: every entity of the submission crate has exactly one.
BIA_CLASSES = frozenset(
    {
        "CreativeWork",
        *(
            f"bia:{name}"
            for name in [
                "Study",
                "Contributor",
                "Affiliation",
                "Publication",
                "Grant",
                "FundingBody",
                "ExternalReference",
                "Dataset",
                "FileList",
                "Image",
                "AnnotationData",
                "Specimen",
                "CreationProcess",
                "BioSample",
                "Taxon",
                "Protocol",
                "SpecimenImagingPreparationProtocol",
                "SignalChannel",
                "ImageAcquisitionProtocol",
                "AnnotationMethod",
                "ImageAnalysisMethod",
                "ImageCorrelationMethod",
            ]
        ),
        "csvw:Schema",
        "csvw:Column",
    }
)


def draft_fields(root: Path) -> list[str]:
    """What the archive requires that the package's study metadata does not give."""
    from ruyaml import YAML
    from ruyaml.error import YAMLError

    from zoodesk.export.bia import missing_for_archive
    from zoodesk.export.study import StudyMetadata

    try:
        rembi = YAML(typ="safe").load((root / REMBI_PATH).read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, YAMLError):
        rembi = {}  # the REMBI file's own problems are reported by the other checks
    section = rembi.get("study") or {}
    acquisition = rembi.get("image_acquisition") or {}
    study = StudyMetadata.model_validate(
        {
            "title": section.get("title") or "",
            "description": section.get("description") or "",
            "authors": [a for a in section.get("authors") or () if isinstance(a, dict)],
            "biosample": {
                "organism": (rembi.get("biosample") or {}).get("organism") or {},
            },
            "acquisition": {
                "imaging_method": acquisition.get("imaging_method") or "",
                "instrument": acquisition.get("imaging_instrument_description") or "",
            },
        }
    )
    return missing_for_archive(study)


def _check_submission(root: Path, present: set[str]) -> list[Problem]:
    """The top-level crate (the archive's submission profile) and its file list."""
    from zoodesk.export.bia import BIA_FILE_LIST, IMAGES_DATASET

    try:
        crate = json.loads((root / CRATE_METADATA).read_text(encoding="utf-8"))
        graph = {e["@id"]: e for e in crate["@graph"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [Problem(CRATE_METADATA, f"not a readable RO-Crate ({exc})")]
    problems: list[Problem] = []
    study = graph.get("./", {})
    if "bia:Study" not in _types(study):
        problems.append(Problem(CRATE_METADATA, "the root is not a bia:Study"))
    for entity_id, entity in graph.items():
        found = _types(entity) & BIA_CLASSES
        if len(found) != 1:
            problems.append(
                Problem(CRATE_METADATA, f"{entity_id}: has {len(found)} archive classes, not 1")
            )
    lists = [e for e in graph.values() if "bia:FileList" in _types(e)]
    if [e["@id"] for e in lists] != [BIA_FILE_LIST]:
        problems.append(Problem(CRATE_METADATA, f"needs exactly one bia:FileList, {BIA_FILE_LIST}"))
    if BIA_FILE_LIST not in present:
        return [*problems, Problem(BIA_FILE_LIST, "missing")]
    _header, rows = read_tsv(root / BIA_FILE_LIST)
    images = {r["file_path"] for r in rows if r.get("dataset") == IMAGES_DATASET}
    listed = {r["file_path"] for r in rows}
    for row in rows:
        if row["file_path"] not in present:
            problems.append(Problem(BIA_FILE_LIST, f"{row['file_path']}: not in the package"))
        if row.get("dataset") not in graph:
            problems.append(Problem(BIA_FILE_LIST, f"{row['file_path']}: unknown dataset"))
        source = row.get("source_image")
        if source and source not in images:
            problems.append(
                Problem(BIA_FILE_LIST, f"{row['file_path']}: source image {source} is not listed")
            )
    stores = {rel for rel in present if (root / rel).is_dir()}
    for rel in sorted(present):
        if _in_store(rel, stores):
            continue  # the store is listed, not each of its chunks
        table = rel.startswith(f"{MEASUREMENTS_FOLDER}/") and rel.endswith(".csv")
        if (table or rel.startswith(("annotations/", "processed/"))) and rel not in listed:
            problems.append(Problem(BIA_FILE_LIST, f"{rel}: not listed"))
    problems += [
        Problem(
            CRATE_METADATA,
            f"draft: the archive requires the study's {name}, which was not given",
        )
        for name in draft_fields(root)
    ]
    return problems


def check_package(folder: Path) -> list[Problem]:
    """Every problem found in the package at ``folder`` (empty when it is sound).

    Raises
    ------
    ZooDeskError
        If ``folder`` is not a folder.
    """
    from zoodesk.errors import ZooDeskError

    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ZooDeskError(f"{root}: no such package folder")
    files = _package_files(root)
    # An OME-Zarr store is one image made of many files: file lists name the store.
    present = set(files) | _stores(root)
    problems = [Problem(rel, "missing") for rel in REQUIRED_FILES if rel not in present]
    run: dict[str, Any] | None = None
    if RUN_JSON_PATH in present:
        try:
            run = json.loads((root / RUN_JSON_PATH).read_text(encoding="utf-8"))
        except ValueError as exc:
            problems.append(Problem(RUN_JSON_PATH, f"not valid JSON ({exc})"))
    problems += _check_paths(files, _stores(root))
    problems += _check_manifest(root, files)
    problems += _check_file_lists(root, present)
    problems += [Problem(path, message) for path, message in check_tables(root, present)]
    problems += _check_ome(root, files, run)
    problems += [p for p in _check_crate(root, present, run) if p not in problems]
    if CRATE_METADATA in present:
        problems += _check_submission(root, present)
    return problems


#: Environment variable naming the archive's validator (``bia-ro-crate``).
ARCHIVE_VALIDATOR_VARIABLE = "ZOODESK_BIA_VALIDATOR"
ARCHIVE_VALIDATOR_HINT = (
    "the BioImage Archive's own validator is not installed: install it with "
    "'pip install bia-ro-crate-validator' (needs Python 3.13 or newer), then put "
    f"bia-ro-crate on PATH or name it in {ARCHIVE_VALIDATOR_VARIABLE}"
)


def archive_validator() -> Path | None:
    """The BioImage Archive's validator (``bia-ro-crate``), if installed."""
    import os
    import shutil

    named = os.environ.get(ARCHIVE_VALIDATOR_VARIABLE, "")
    if named and Path(named).is_file():
        return Path(named)
    found = shutil.which("bia-ro-crate")
    return Path(found) if found else None


def archive_validation(folder: Path, validator: Path) -> list[Problem]:
    """Run the archive's validator on a package; each ERROR it reports is a problem.

    Its JSON report hides a crash (it then exits 0 with no issues), so the plain run's
    exit status is checked too.
    """
    import subprocess

    root = Path(folder).expanduser().resolve()
    command = [str(validator), "validate", str(root)]
    try:
        report_run = subprocess.run(
            [*command[:2], "--report-json", command[2]],
            capture_output=True,
            text=True,
            timeout=600,
        )
        plain = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Problem(CRATE_METADATA, f"the archive's validator did not run ({exc})")]
    report = _last_json_object(report_run.stdout)
    errors = [
        str(issue.get("message", "")).strip()
        for level in ("CRITICAL", "ERROR")
        for issue in ((report or {}).get("issues") or {}).get(level) or ()
    ]
    problems = [Problem(CRATE_METADATA, f"archive validator: {e}") for e in errors]
    if not problems and (report is None or plain.returncode != 0):
        tail = (plain.stderr or plain.stdout).strip().splitlines()[-1:] or ["no output"]
        problems.append(Problem(CRATE_METADATA, f"the archive's validator failed: {tail[0]}"))
    return problems


def _last_json_object(text: str) -> dict[str, Any] | None:
    """The JSON report at the end of the validator's output (log lines come first)."""
    lines = text.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if not lines[start].startswith("{"):
            continue
        try:
            value = json.loads("\n".join(lines[start:]))
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None
