"""Deposition packages of runs that made objects (``zoodesk predict --instances``).

A real nuclei-model run (its own test input, with a pixel size and a channel name)
segmented with the distance watershed, written as OME-TIFF and as OME-Zarr, then
exported: the label images are annotations of type ``segmentation_mask`` (the
probability maps stay ``other``), every column of the tables is described with its
unit, the archive's metadata says how the objects were made, ``export --check``
verifies the new files, and both validators accept the packages.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from ruyaml import YAML

from tests.conftest import NUCLEI
from tests.test_export import _validator as rocrate_validator
from tests.test_export import crate_graph, ids, types, validator_env
from tests.test_export_bia import FILLED, validate
from zoodesk.batch.record import RECORD_NAME
from zoodesk.cli import main
from zoodesk.export import ExportRequest, check_package, run_export
from zoodesk.images import write_ome_tiff

FORMATS = ("ome-tiff", "ome-zarr")
PIXEL_UM = 0.5
CHANNEL = "DAPI"

# What a column name's unit suffix means (the tables' documented naming rule).
UNIT_OF_SUFFIX = {"_px": "pixel", "_um": "µm", "_um2": "µm²", "_um3": "µm³"}


def _unit_in_name(name: str) -> str | None:
    suffix = "_" + name.rsplit("_", 1)[-1] if "_" in name else ""
    return UNIT_OF_SUFFIX.get(suffix)


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _objects_in(labels: np.ndarray) -> list[int]:
    """The label values of a label image, background (0) left out."""
    return [int(v) for v in np.unique(labels) if v]


def _submission(package: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((package / "ro-crate-metadata.json").read_text(encoding="utf-8"))
    return {e["@id"]: e for e in data["@graph"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Path]]]:
    """The nuclei model with ``--instances watershed`` in both formats, each exported."""
    root = tmp_path_factory.mktemp("export-instances")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOODESK_HOME", str(root / "home"))
        inputs = root / "inputs"
        inputs.mkdir()
        image = np.load(NUCLEI / "test_input.npy")[0, 0]
        write_ome_tiff(
            inputs / "nuclei.ome.tif",
            image,
            "YX",
            pixel_sizes={"X": (PIXEL_UM, "µm"), "Y": (PIXEL_UM, "µm")},
            channel_names=[CHANNEL],
        )
        found: dict[str, dict[str, Path]] = {}
        for fmt in FORMATS:
            run_dir = root / f"run-{fmt}"
            command = ["predict", "--model", str(NUCLEI / "bioimageio.yaml")]
            command += ["--input", str(inputs), "--output", str(run_dir), "--device", "cpu"]
            command += ["--format", fmt, "--instances", "watershed"]
            assert main(command) == 0
            package = root / f"package-{fmt}"
            run_export(ExportRequest(run_dir, package, study=FILLED))
            found[fmt] = {"run": run_dir, "package": package}
        yield found


def _record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / RECORD_NAME).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------ annotations


def test_tiff_label_images_are_segmentation_masks_and_probabilities_stay_other(
    runs: dict[str, dict[str, Path]],
) -> None:
    package = runs["ome-tiff"]["package"]
    masks = _tsv(package / "filelists" / "annotations_instances.tsv")
    probabilities = _tsv(package / "filelists" / "annotations_probability.tsv")
    assert [r["Annotation Type"] for r in masks] == ["segmentation_mask"]
    assert [r["Annotation Type"] for r in probabilities] == ["other"]
    row = masks[0]
    assert row["Source Image"] == "images/nuclei.ome.tif"
    assert (package / row["Source Image"]).is_file()
    labels = tifffile.imread(package / row["Files"])
    _header, objects = _csv(package / row["Objects Table"])
    # A label image: integers, 0 = background, one value per row of the objects table.
    assert labels.dtype.kind == "u" and labels.shape == (512, 512)
    assert _objects_in(labels) == sorted(int(r["label"]) for r in objects)
    assert int(row["Objects"]) == len(objects) > 10
    assert float(row["Threshold"]) == 0.5
    assert row["Segmentation Mask"] == row["Files"]
    assert "watershed" in row["Annotation Method"]
    assert "no manual curation" in row["Annotation Method"]

    bia = _tsv(package / "filelists" / "bia_file_list.tsv")
    by_path = {r["file_path"]: r for r in bia}
    graph = _submission(package)
    method = graph[by_path[row["Files"]]["annotation_method"]]
    assert method["methodType"] == ["segmentation_mask"]
    assert "watershed" in method["description"]
    other = graph[by_path[probabilities[0]["Files"]]["annotation_method"]]
    assert other["methodType"] == ["other"]
    outputs = graph["#dataset-model-outputs"]["associatedAnnotationMethod"]
    assert {method["@id"], other["@id"]} <= set(ids(outputs))


def test_zarr_store_is_copied_once_and_says_it_holds_the_segmentation_mask(
    runs: dict[str, dict[str, Path]],
) -> None:
    run_dir, package = runs["ome-zarr"]["run"], runs["ome-zarr"]["package"]
    rows = _tsv(package / "filelists" / "annotations_probability.tsv")
    assert [r["Annotation Type"] for r in rows] == ["other"]
    store = rows[0]["Files"]
    assert store.endswith(".ome.zarr")
    mask = rows[0]["Segmentation Mask"]
    assert mask == f"{store}/labels/instances"
    group = zarr.open_group(str(package / mask), mode="r")
    labels = np.asarray(group["0"])
    _header, objects = _csv(package / rows[0]["Objects Table"])
    assert _objects_in(labels) == sorted(int(r["label"]) for r in objects)
    assert int(rows[0]["Objects"]) == len(objects)
    # The store's labels are what the run wrote, byte for byte, and nowhere else.
    source = run_dir / store.rsplit("/", 1)[-1] / "labels" / "instances"
    for file in (p for p in source.rglob("*") if p.is_file()):
        copy = package / mask / file.relative_to(source)
        assert copy.read_bytes() == file.read_bytes()
    assert not (package / "annotations" / "instances").exists()
    assert not (package / "filelists" / "annotations_instances.tsv").exists()
    manifest = (package / "manifest-sha256.txt").read_text(encoding="utf-8").splitlines()
    inner = [line for line in manifest if "/labels/instances/" in line]
    assert inner and all(line.split("  ", 1)[1].startswith(f"{mask}/") for line in inner)
    assert len({line.split("  ", 1)[1] for line in inner}) == len(inner)

    for list_file in (package / "filelists").glob("*.tsv"):
        listed = [r.get("Files") or r.get("file_path") for r in _tsv(list_file)]
        assert not [p for p in listed if p and p.startswith(f"{store}/")], list_file
    bia = {r["file_path"]: r for r in _tsv(package / "filelists" / "bia_file_list.tsv")}
    assert bia[store]["includes"] == mask
    graph = _submission(package)
    masks = [
        e
        for e in graph.values()
        if "bia:AnnotationMethod" in types(e) and e["methodType"] == ["segmentation_mask"]
    ]
    assert len(masks) == 1 and "watershed" in masks[0]["description"]
    assert masks[0]["@id"] in ids(graph["#dataset-model-outputs"]["associatedAnnotationMethod"])

    crate = crate_graph(package)
    entity = crate[f"{store}/"]
    assert "segmentation mask" in entity["description"]
    assert "labels/instances" in entity["description"]
    assert not [k for k in crate if k.startswith(f"{store}/") and k != f"{store}/"]


# ----------------------------------------------------------------------------- tables


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_column_of_the_tables_is_described_with_its_unit(
    runs: dict[str, dict[str, Path]], fmt: str
) -> None:
    package = runs[fmt]["package"]
    listed = _tsv(package / "filelists" / "measurements.tsv")
    assert {r["Table"] for r in listed} == {"objects", "summary"}
    crate = crate_graph(package)
    for row in listed:
        table = package / row["Files"]
        header, rows = _csv(table)
        assert int(row["Rows"]) == len(rows) > 0
        # The provenance crate: the table is a File whose variables are its columns.
        entity = crate[row["Files"]]
        assert "File" in types(entity)
        variables = [crate[i] for i in ids(entity["variableMeasured"])]
        assert [v["name"] for v in variables] == header
        for variable in variables:
            assert variable["@type"] == "PropertyValue" and variable["description"]
            unit = _unit_in_name(variable["name"])
            if unit:
                assert variable["unitText"] == unit, variable
        # The schema document the file lists name (CSV on the Web).
        schema = json.loads((package / row["Table Schema"]).read_text(encoding="utf-8"))
        columns = schema["columns"]
        assert [c["name"] for c in columns] == header
        for column in columns:
            assert column["dc:description"]
            if _unit_in_name(column["name"]):
                assert column["schema:unitText"] == _unit_in_name(column["name"])
            for value in (r[column["name"]] for r in rows):
                if value and column["datatype"] == "integer":
                    int(value)
                elif value and column["datatype"] == "number":
                    float(value)
        if row["Table"] == "objects":
            assert row["Source Image"] == "images/nuclei.ome.tif"
            assert (package / row["Label Image"]).exists()
            assert f"mean_intensity_{CHANNEL}" in header
            # The image had a pixel size: the physical columns are filled in.
            area = [(float(r["area_px"]), float(r["area_um2"])) for r in rows]
            assert all(um == pytest.approx(px * PIXEL_UM**2) for px, um in area)
        else:
            assert header[:5] == ["image", "input", "scene", "frames", "count"]
    bia = {r["file_path"]: r for r in _tsv(package / "filelists" / "bia_file_list.tsv")}
    for row in listed:
        assert bia[row["Files"]]["table_schema"] == row["Table Schema"]
        assert bia[row["Files"]]["dataset"] == "#dataset-measurements"
    graph = _submission(package)
    analysis = graph[ids(graph["#dataset-measurements"]["associatedImageAnalysisMethod"])[0]]
    assert "bia:ImageAnalysisMethod" in types(analysis)
    assert "area_um2 [µm²]" in analysis["featuresAnalysed"]


# ------------------------------------------------------------------------ REMBI / MIFA


@pytest.mark.parametrize("fmt", FORMATS)
def test_rembi_says_how_the_objects_were_made(runs: dict[str, dict[str, Path]], fmt: str) -> None:
    run_dir, package = runs[fmt]["run"], runs[fmt]["package"]
    rembi = YAML(typ="safe").load((package / "metadata" / "rembi_mifa.yaml").read_text("utf-8"))
    sections = {s["annotation_type"]: s for s in rembi["annotations"]}
    assert set(sections) == {"other", "segmentation_mask"}
    objects = sections["segmentation_mask"]
    recorded = _record(run_dir)["parameters"]["instances"]
    assert recorded["method"] == "watershed"
    assert objects["instances"]["method"] == "watershed"
    assert objects["instances"]["source_output"] == "probability"
    assert objects["instances"]["parameters"] == recorded
    assert objects["instances"]["thresholds_used"] == {"nuclei.ome.tif": 0.5}
    assert "watershed" in objects["annotation_method"]
    assert "threshold used: 0.5" in objects["annotation_method"]
    assert "probability" in objects["annotation_method"]
    assert objects["model_generated"] is True and objects["curated"] is False
    assert objects["annotation_confidence_level"] == "not human-verified"
    assert (package / objects["file_list"]).is_file()
    measured = rembi["image_analysis"]["measurements"]
    assert measured["file_list"] == "filelists/measurements.tsv"
    assert "watershed" in measured["method"]
    pagetab = (package / "metadata" / "submission.pagetab.tsv").read_text(encoding="utf-8")
    assert "Annotation type\tsegmentation_mask" in pagetab
    assert "File List\tfilelists/measurements.tsv" in pagetab
    readme = (package / "README.md").read_text(encoding="utf-8")
    assert "--instances watershed" in readme


# ----------------------------------------------------------------------------- checks


@pytest.mark.parametrize("fmt", FORMATS)
def test_check_passes_and_catches_a_changed_objects_table(
    runs: dict[str, dict[str, Path]], fmt: str, tmp_path: Path
) -> None:
    package = runs[fmt]["package"]
    assert check_package(package) == []
    assert main(["export", "--check", str(package)]) == 0
    changed = tmp_path / "changed"
    shutil.copytree(package, changed)
    table = next((changed / "measurements").glob("*_objects.csv"))
    text = table.read_text(encoding="utf-8").splitlines(keepends=True)
    table.write_text("".join(text[:-1]), encoding="utf-8")  # one object less
    rel = table.relative_to(changed).as_posix()
    problems = [str(p) for p in check_package(changed)]
    assert f"{rel}: sha256 does not match the manifest (file changed)" in problems
    assert any(p.endswith(f"file {rel}: sha256 does not match") for p in problems)
    assert main(["export", "--check", str(changed)]) != 0


def test_check_catches_a_table_whose_columns_are_not_its_schema(
    runs: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(runs["ome-tiff"]["package"], changed)
    schema = changed / "measurements" / "schemas" / "objects.json"
    document = json.loads(schema.read_text(encoding="utf-8"))
    document["columns"] = [c for c in document["columns"] if c["name"] != "solidity"]
    schema.write_text(json.dumps(document), encoding="utf-8")
    (changed / "measurements" / "summary.csv").unlink()
    problems = [str(p) for p in check_package(changed)]
    assert any("columns not in its schema: solidity" in p for p in problems)
    assert "measurements/summary.csv: listed in the manifest but missing" in problems


# ------------------------------------------------------------------------- validators


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_archives_validator_accepts_the_package(
    runs: dict[str, dict[str, Path]], fmt: str
) -> None:
    errors, status = validate(runs[fmt]["package"])
    assert errors == [] and status == 0


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_process_run_crate_validator_accepts_the_package(
    runs: dict[str, dict[str, Path]], fmt: str, tmp_path: Path
) -> None:
    validator = rocrate_validator()
    command = [str(validator), "-y", "validate", "-p", "process-run-crate-0.5", "-l", "required"]
    command += ["--offline", "-s", "ro-crate-1.1_3.1", "-s", "ro-crate-1.1_3.2", "-f", "json"]
    command.append(str(runs[fmt]["package"] / "provenance"))
    env = validator_env(validator, tmp_path / "cache")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is True and report["issues"] == []
