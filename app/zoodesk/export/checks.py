"""Re-verify a deposition package (``zoodesk export --check``).

Every check reads the package as it is on disk, independently of how it was made:
the manifest (every file listed, every checksum right), the path rules, the file
lists (every listed file exists; every annotation names exactly one existing source
image), the OME-XML of every OME-TIFF and companion (valid against the OME 2016-06
schema; outputs keep their source's pixel sizes) and the RO-Crate (the entities the
profile needs, every input's action, every described file present with the right
size and sha256).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoodesk.export.crate import COMPLETED, CRATE_METADATA, FAILED, PROCESS_RUN_CRATE
from zoodesk.export.filelists import ANNOTATION_COLUMNS, IMAGES_LIST, PROCESSED_COLUMNS, read_tsv
from zoodesk.export.layout import COMPANION_SUFFIX
from zoodesk.export.naming import is_safe_path
from zoodesk.export.ome import ome_xml_of, pixel_sizes_of, schema_problems
from zoodesk.export.package import MANIFEST, README
from zoodesk.export.pagetab import PAGETAB_PATH
from zoodesk.export.provenance import MODEL_RDF_PATH, RUN_JSON_PATH
from zoodesk.export.rembi import REMBI_PATH
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


def _check_paths(files: list[str]) -> list[Problem]:
    return [
        Problem(rel, "path breaks the package rules (relative, '/', [A-Za-z0-9._-] only)")
        for rel in files
        if not is_safe_path(rel)
    ]


def _check_file_lists(root: Path, files: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    lists = sorted(f for f in files if f.startswith("filelists/") and f.endswith(".tsv"))
    if IMAGES_LIST not in files:
        problems.append(Problem(IMAGES_LIST, "missing"))
    for rel in lists:
        header, rows = read_tsv(root / rel)
        if not header or header[0] != "Files":
            problems.append(Problem(rel, "first header cell is not 'Files'"))
            continue
        name = rel.rsplit("/", 1)[-1]
        if name.startswith("annotations_") and tuple(header) != ANNOTATION_COLUMNS:
            problems.append(Problem(rel, f"header is not {' | '.join(ANNOTATION_COLUMNS)}"))
        if name.startswith("processed_") and tuple(header) != PROCESSED_COLUMNS:
            problems.append(Problem(rel, f"header is not {' | '.join(PROCESSED_COLUMNS)}"))
        for n, row in enumerate(rows, start=2):
            listed = row.get("Files", "")
            if listed not in files:
                problems.append(Problem(rel, f"line {n}: file {listed!r} is not in the package"))
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
    path = root / CRATE_METADATA
    if not path.is_file():
        return [Problem(CRATE_METADATA, "missing")]
    try:
        crate = json.loads(path.read_text(encoding="utf-8"))
        graph = {e["@id"]: e for e in crate["@graph"]}
    except (ValueError, KeyError, TypeError) as exc:
        return [Problem(CRATE_METADATA, f"not a readable RO-Crate ({exc})")]
    problems: list[Problem] = []

    def problem(message: str) -> None:
        problems.append(Problem(CRATE_METADATA, message))

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
        if entity["@id"] == CRATE_METADATA:
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
    present = set(files)
    problems = [Problem(rel, "missing") for rel in REQUIRED_FILES if rel not in present]
    run: dict[str, Any] | None = None
    if RUN_JSON_PATH in present:
        try:
            run = json.loads((root / RUN_JSON_PATH).read_text(encoding="utf-8"))
        except ValueError as exc:
            problems.append(Problem(RUN_JSON_PATH, f"not valid JSON ({exc})"))
    problems += _check_paths(files)
    problems += _check_manifest(root, files)
    problems += _check_file_lists(root, present)
    problems += _check_ome(root, files, run)
    problems += [p for p in _check_crate(root, present, run) if p not in problems]
    return problems
