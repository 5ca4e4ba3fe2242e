"""The deposition package as the BioImage Archive's own validator sees it.

``bia-ro-crate validate`` (PyPI ``bia-ro-crate-validator``, Python >= 3.13) runs from
a virtual environment of its own (``.venv/bia-validator``, made by tools/test.sh),
offline: ``tests/bia_offline/sitecustomize.py`` serves it the RO-Crate 1.1 context
from ../shared/data.  Its JSON report hides crashes (it then exits 0 with no
issues), so each test reads the report and the plain run's exit status.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from tests.batch_helpers import box_package, request, run
from tests.conftest import SHARED
from tests.test_export import ARCHIVE_FIELDS, crate_graph, predict, types
from zoodesk.cli import main
from zoodesk.export import ExportRequest, check_package, run_export
from zoodesk.export.study import Author, StudyMetadata

REPO = Path(__file__).resolve().parents[1]
CONTEXT = SHARED / "data" / "ro-crate-1.1-context.jsonld"
OFFLINE = REPO / "tests" / "bia_offline"


def _validator() -> Path:
    found = os.environ.get("ZOODESK_BIA_VALIDATOR") or str(
        REPO / ".venv" / "bia-validator" / "bin" / "bia-ro-crate"
    )
    if not Path(found).is_file():
        pytest.fail(
            "bia-ro-crate-validator is not installed; tools/test.sh installs it into "
            ".venv/bia-validator with Python 3.13"
        )
    return Path(found)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(OFFLINE),
        "ZOODESK_ROCRATE_CONTEXT": str(CONTEXT),
        "NO_COLOR": "1",
    }


def validate(package: Path) -> tuple[list[str], int]:
    """The validator's ERROR (and CRITICAL) messages, and the plain run's exit status.

    An error the validator raises instead of reporting (its report is then empty)
    is returned as one message, from the plain run's last line.
    """
    validator = _validator()
    report_run = subprocess.run(
        [str(validator), "validate", "--report-json", str(package)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = report_run.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("{"))
    report = json.loads("\n".join(lines[start:]))
    plain = subprocess.run(
        [str(validator), "validate", str(package)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = [i["message"] for level in ("CRITICAL", "ERROR") for i in report["issues"][level]]
    if plain.returncode != 0 and not errors:
        output = [ln for ln in (plain.stdout + plain.stderr).splitlines() if ln.strip()]
        errors = output[-1:]
    return errors, plain.returncode


def _images(folder: Path, count: int, broken: bool = False) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    paths = []
    for n in range(count):
        path = folder / f"cell_{n:02d}.tif"
        tifffile.imwrite(path, (rng.random((96, 80)) * 4000).astype(np.uint16))
        paths.append(path)
    if broken:
        (folder / "broken.tif").write_bytes(b"II*\x00 not really a TIFF")
        paths.append(folder / "broken.tif")
    return paths


FILLED = StudyMetadata(
    title="Nuclei of HeLa cells",
    description="DAPI-stained HeLa nuclei, segmented with a zoo model.",
    authors=[Author(name="Ada Example", orcid="0000-0002-1825-0097", affiliation="Examples")],
    biosample={"organism": {"scientific_name": "Homo sapiens", "common_name": "human"}},
    acquisition={"imaging_method": "widefield fluorescence microscopy", "instrument": "Scope"},
)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory, nuclei_dir: Path) -> dict[str, Path]:
    """The nuclei model on 2 images (empty template) and on 40 plus a broken one (filled)."""
    root = tmp_path_factory.mktemp("bia")
    predict(nuclei_dir, _images(root / "two", 2), root / "run-two")
    predict(nuclei_dir, _images(root / "forty", 40, broken=True), root / "run-forty")
    empty = root / "empty"
    assert main(["export", "--template", str(root / "study.yaml")]) == 0
    assert main(["export", str(root / "run-two"), "--to", str(empty)]) == 0
    filled = root / "filled"
    run_export(ExportRequest(root / "run-forty", filled, study=FILLED))
    return {"empty": empty, "filled": filled, "root": root}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["empty", "filled"])
def test_the_archives_validator_accepts_the_package(packages: dict[str, Path], which: str) -> None:
    errors, status = validate(packages[which])
    assert errors == [] and status == 0


def _rows(package: Path) -> list[dict[str, str]]:
    with (package / "filelists" / "bia_file_list.tsv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_the_file_list_names_every_image_and_annotation(packages: dict[str, Path]) -> None:
    package = packages["filled"]
    rows = _rows(package)
    images = [r for r in rows if r["type"] == "http://bia/Image"]
    annotations = [r for r in rows if r["type"] == "http://bia/AnnotationData"]
    assert len(images) == len(annotations) == 40  # the broken input has no results
    on_disk = {p.relative_to(package).as_posix() for p in (package / "annotations").rglob("*.tif")}
    assert {r["file_path"] for r in annotations} == on_disk
    assert {r["source_image"] for r in annotations} == {r["file_path"] for r in images}
    # The same files and source images as BioStudies' own list.
    with (package / "filelists" / "annotations_probability.tsv").open(encoding="utf-8") as fh:
        biostudies = {r["Files"]: r["Source Image"] for r in csv.DictReader(fh, delimiter="\t")}
    assert biostudies == {r["file_path"]: r["source_image"] for r in annotations}


def test_the_study_crate_carries_the_form_and_the_model(packages: dict[str, Path]) -> None:
    data = json.loads((packages["filled"] / "ro-crate-metadata.json").read_text("utf-8"))
    graph = {e["@id"]: e for e in data["@graph"]}
    study = graph["./"]
    assert types(study) == {"Dataset", "bia:Study"}
    assert study["name"] == FILLED.title
    person = graph["https://orcid.org/0000-0002-1825-0097"]
    assert person["name"] == "Ada Example" and "bia:Contributor" in types(person)
    taxon = next(e for e in graph.values() if "bia:Taxon" in types(e))
    assert taxon["scientificName"] == "Homo sapiens"
    (method,) = [e for e in graph.values() if "bia:AnnotationMethod" in types(e)]
    assert "model-generated" in method["name"]
    assert "not curated" in method["description"] and "sha256" in method["description"]
    assert [e["@id"] for e in graph.values() if "bia:FileList" in types(e)] == [
        "filelists/bia_file_list.tsv"
    ]
    # The provenance crate is named from the top.
    assert "provenance/" in {p["@id"] for p in study["hasPart"]}


def test_the_provenance_crate_keeps_the_failed_input(packages: dict[str, Path]) -> None:
    graph = crate_graph(packages["filled"])
    actions = [e for e in graph.values() if "CreateAction" in types(e)]
    assert len(actions) == 41
    failed = [a for a in actions if a["actionStatus"].endswith("FailedActionStatus")]
    assert len(failed) == 1 and failed[0]["error"]


def test_a_draft_says_what_is_missing(
    packages: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = [str(p) for p in check_package(packages["empty"]) if "draft:" in p.message]
    assert [m.split("study's ")[1].split(",")[0] for m in missing] == ARCHIVE_FIELDS
    assert [p for p in check_package(packages["filled"]) if "draft:" in p.message] == []


def _copy(packages: dict[str, Path], tmp_path: Path) -> Path:
    package = tmp_path / "package"
    shutil.copytree(packages["empty"], package)
    return package


@pytest.mark.slow
def test_without_the_file_list_the_validator_objects(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    package = _copy(packages, tmp_path)
    metadata = package / "ro-crate-metadata.json"
    data = json.loads(metadata.read_text(encoding="utf-8"))
    data["@graph"] = [e for e in data["@graph"] if "bia:FileList" not in types(e)]
    for entity in data["@graph"]:
        if entity["@id"] == "./":
            entity["hasPart"] = [p for p in entity["hasPart"] if not p["@id"].endswith(".tsv")]
    metadata.write_text(json.dumps(data), encoding="utf-8")
    errors, status = validate(package)
    assert status != 0 and any("number of file lists: 0" in e for e in errors), errors


@pytest.mark.slow
def test_a_broken_source_image_reference_is_caught(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    package = _copy(packages, tmp_path)
    listing = package / "filelists" / "bia_file_list.tsv"
    text = listing.read_text(encoding="utf-8")
    image = _rows(package)[0]["file_path"]
    listing.write_text(text.replace(f"\t{image}\t", "\timages/no_such_image.tif\t"), "utf-8")
    errors, status = validate(package)
    assert status != 0 and any("no_such_image" in e for e in errors), errors
    assert any("no_such_image" in p.message for p in check_package(package))


@pytest.mark.slow
def test_3d_images_and_label_outputs_export_and_validate(tmp_path: Path) -> None:
    model = box_package(tmp_path / "model", ndim=3)
    images = tmp_path / "stacks"
    images.mkdir()
    for n in range(2):
        stack = np.random.default_rng(n).random((20, 24, 28)).astype(np.float32)
        tifffile.imwrite(images / f"stack_{n}.tif", stack, metadata={"axes": "ZYX"})
    _events, finished = run(request(model, [images], tmp_path / "run"))
    assert finished.record.summary()["ok"] == 2
    package = tmp_path / "package"
    run_export(ExportRequest(tmp_path / "run", package, study=FILLED))
    errors, status = validate(package)
    assert errors == [] and status == 0
    from zoodesk.demo import demo_image_paths, demo_model_path

    predict(demo_model_path(), demo_image_paths(), tmp_path / "demo-run")
    labels = tmp_path / "labels"
    run_export(ExportRequest(tmp_path / "demo-run", labels, study=FILLED))
    methods = {r["annotation_method"] for r in _rows(labels)} - {""}
    assert methods == {"#annotation-method-mask", "#annotation-method-probability"}
    data = json.loads((labels / "ro-crate-metadata.json").read_text(encoding="utf-8"))
    kinds = {
        e["@id"]: e["methodType"] for e in data["@graph"] if "bia:AnnotationMethod" in types(e)
    }
    assert kinds["#annotation-method-mask"] == ["segmentation_mask"]
    errors, status = validate(labels)
    assert errors == [] and status == 0


def test_check_runs_the_archives_validator(
    packages: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("ZOODESK_BIA_VALIDATOR", str(_validator()))
    for key, value in _env().items():
        monkeypatch.setenv(key, value)
    assert main(["export", "--check", str(packages["filled"]), "--json"]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert document["ok"] is True and document["archive_validator"]
    monkeypatch.setenv("ZOODESK_BIA_VALIDATOR", "/no/such/validator")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["export", "--check", str(packages["filled"])]) == 0
    assert "pip install bia-ro-crate-validator" in capsys.readouterr().err


@pytest.mark.slow
def test_a_multi_scene_file_is_copied_once_and_listed_once(tmp_path: Path) -> None:
    """Three scenes of one CZI are three inputs with results, and one file in the package
    (one copy, one row in each file list); the archive's validator accepts it."""
    czi = SHARED / "sample-images" / "czi" / "S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi"
    box = box_package(tmp_path / "box")
    _events, finished = run(request(box, [czi], tmp_path / "run", channels=[0]))
    assert [e.status for e in finished.record.files] == ["ok"] * 3
    package = tmp_path / "package"
    result = run_export(ExportRequest(tmp_path / "run", package, study=FILLED))
    assert not result.draft
    copies = sorted(p.name for p in (package / "images").rglob("*") if p.is_file())
    assert copies == [czi.name]
    rows = _rows(package)
    images = [r["file_path"] for r in rows if r["type"] == "http://bia/Image"]
    assert images == [f"images/{czi.name}"]
    assert len([r for r in rows if r["type"] != "http://bia/Image"]) == 3
    assert check_package(package) == []
    errors, status = validate(package)
    assert errors == [] and status == 0


@pytest.mark.slow
def test_ome_zarr_inputs_and_outputs_are_packaged_as_stores(tmp_path: Path) -> None:
    """An OME-Zarr input and --format ome-zarr outputs: each store copied whole, listed
    once by its folder, its files in the manifest, a Dataset in both crates; the
    package passes export --check, the archive's validator and the Process Run Crate
    validator."""
    from tests.test_export import _validator as run_crate_validator
    from tests.test_export import validator_env

    cat = SHARED / "sample-images" / "ome-zarr" / "cat.ome.zarr"
    box = box_package(tmp_path / "box")
    _events, finished = run(request(box, [cat], tmp_path / "run", output_format="ome-zarr"))
    (entry,) = finished.record.files
    assert entry.status == "ok", entry.error
    package = tmp_path / "package"
    result = run_export(ExportRequest(tmp_path / "run", package, study=FILLED))
    assert not result.draft and not result.warnings, result.warnings
    store_in = package / "images" / cat.name
    (store_out,) = [p for p in (package / "processed").rglob("*.ome.zarr") if p.is_dir()]
    assert (store_in / ".zattrs").is_file() and (store_out / "zarr.json").is_file()
    # Byte-for-byte copies of every file of both stores.
    for source, copy in ((cat, store_in), (tmp_path / "run" / entry.outputs[0].path, store_out)):
        originals = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
        assert originals == sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file())
        for rel in originals:
            assert (source / rel).read_bytes() == (copy / rel).read_bytes()
    manifest = (package / "manifest-sha256.txt").read_text().splitlines()
    listed = {line.split("  ", 1)[1] for line in manifest}
    assert f"images/{cat.name}/.zattrs" in listed and f"images/{cat.name}" not in listed
    rows = _rows(package)
    assert f"images/{cat.name}" in [r["file_path"] for r in rows]
    assert str(store_out.relative_to(package)) in [r["file_path"] for r in rows]
    graph = crate_graph(package)
    stores = [e for e in graph.values() if str(e["@id"]).endswith(".zarr/")]
    assert len(stores) == 2 and all("Dataset" in types(e) for e in stores)
    assert check_package(package) == []
    errors, status = validate(package)
    assert errors == [] and status == 0
    validator = run_crate_validator()
    done = subprocess.run(
        [str(validator), "-y", "validate", "-p", "process-run-crate-0.5", "-l", "required",
         "--offline", "-s", "ro-crate-1.1_3.1", "-s", "ro-crate-1.1_3.2",
         str(package / "provenance")],
        env=validator_env(validator, tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # A changed chunk inside a store is caught by export --check.
    chunk = next(p for p in sorted((store_in / "0").rglob("*")) if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    problems = [str(p) for p in check_package(package)]
    assert any(str(chunk.relative_to(package)) in p and "sha256" in p for p in problems), problems
