"""Deposition packages: a real nuclei-model run exported and every part read back."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import xmlschema
from ruyaml import YAML

from tests.conftest import NUCLEI, REPO
from zoodesk.batch.record import RECORD_NAME
from zoodesk.batch.runner import PredictionRequest, run_prediction
from zoodesk.cli import main
from zoodesk.errors import CancelledError, ZooDeskError
from zoodesk.export import (
    ExportProgress,
    ExportRequest,
    StudyMetadata,
    check_package,
    export_run,
    load_last_study_metadata,
    load_study_metadata,
    run_export,
    save_last_study_metadata,
)
from zoodesk.images import read_image, write_ome_tiff

SAFE_PATH = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
ANNOTATION_HEADER = [
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
]
# (name, shape, pixel size in µm)
SAMPLES = [
    ("cell image 0.ome.tif", (200, 240), 0.65),
    ("cell image 1.ome.tif", (256, 256), 0.65),
    ("Zelle-ä 2.ome.tif", (180, 300), 0.5),
]
BROKEN = "broken.tif"

#: What the BioImage Archive requires from the study form, in the order it is named.
ARCHIVE_FIELDS = ["title", "description", "authors", "organism", "imaging method", "instrument"]

# What the filled-in template says (the round trip must carry each value through).
STUDY_VALUES = {
    "title": "Nuclei of HeLa cells segmented with a zoo model",
    "description": "Widefield images of DAPI-stained HeLa nuclei.",
    "author_name": "Ada Example",
    "orcid": "0000-0002-1825-0097",
    "affiliation": "Institute of Examples",
    "keyword": "nuclei",
    "organism": "Homo sapiens",
    "preparation": "fixed with 4% PFA, stained with DAPI",
    "funder": "Example Foundation",
    "grant": "EF-12345",
    "instrument": "Example widefield scope",
    "imaging_method": "widefield fluorescence microscopy",
}


# ----------------------------------------------------------------------------- helpers


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file below ``folder`` with its sha256 and modification time."""
    return {
        p.relative_to(folder).as_posix(): (sha256(p), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def read_tsv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return header, [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def _package_id(entity_id: str) -> str:
    """A provenance-crate id as a package path (the crate lives in provenance/)."""
    if entity_id.startswith("../"):
        return entity_id[3:]
    if (
        entity_id.startswith(("#", "./", "http:", "https:"))
        or entity_id == "ro-crate-metadata.json"
    ):
        return entity_id
    return f"provenance/{entity_id}"


def _with_package_ids(value: Any) -> Any:
    if isinstance(value, list):
        return [_with_package_ids(v) for v in value]
    if isinstance(value, dict):
        return {
            k: _package_id(v) if k == "@id" and isinstance(v, str) else _with_package_ids(v)
            for k, v in value.items()
        }
    return value


def crate_graph(package: Path) -> dict[str, dict[str, Any]]:
    """The provenance crate (provenance/ro-crate-metadata.json), ids as package paths."""
    path = package / "provenance" / "ro-crate-metadata.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return {e["@id"]: e for e in _with_package_ids(data["@graph"])}


def ids(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [i["@id"] for i in items if isinstance(i, dict)]


def types(entity: dict[str, Any]) -> set[str]:
    value = entity.get("@type", [])
    return set(value if isinstance(value, list) else [value])


def ome_schema() -> xmlschema.XMLSchema:
    xsd = resources.files("ome_types") / "ome-2016-06.xsd"
    return xmlschema.XMLSchema(str(xsd))


def fill_template(template: Path, target: Path) -> None:
    """Fill the template the way a user would: edit its YAML, keep its comments."""
    yaml = YAML()  # round-trip: comments stay
    data = yaml.load(template.read_text(encoding="utf-8"))
    v = STUDY_VALUES
    data["title"] = v["title"]
    data["description"] = v["description"]
    author = data["authors"][0]
    author["name"], author["orcid"], author["affiliation"] = (
        v["author_name"],
        v["orcid"],
        v["affiliation"],
    )
    data["keywords"] = [v["keyword"], "segmentation"]
    data["funding"][0]["funder"], data["funding"][0]["grant_id"] = v["funder"], v["grant"]
    data["biosample"]["organism"]["scientific_name"] = v["organism"]
    data["specimen"]["preparation"] = v["preparation"]
    data["acquisition"]["instrument"] = v["instrument"]
    data["acquisition"]["imaging_method"] = v["imaging_method"]
    with target.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)


def make_inputs(folder: Path) -> None:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True)
    for name, (h, w), size in SAMPLES:
        image = rng.normal(100, 10, (h, w))
        yy, xx = np.mgrid[:h, :w]
        for _ in range(6):
            cy, cx = rng.integers(20, h - 20), rng.integers(20, w - 20)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < 120] += 500
        write_ome_tiff(
            folder / name,
            image.astype(np.uint16),
            "YX",
            pixel_sizes={"X": (size, "µm"), "Y": (size, "µm")},
            channel_names=["DAPI"],
        )
    (folder / BROKEN).write_bytes(b"II*\x00" + b"not an image" * 20)


def predict(model: Path | str, inputs: list[Path], out: Path) -> None:
    events = list(
        run_prediction(PredictionRequest(model=model, inputs=inputs, output_dir=out, device="cpu"))
    )
    assert type(events[-1]).__name__ == "RunFinished"


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A real nuclei-model run (3 images and a corrupt file) exported through the CLI."""
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOODESK_HOME", str(root / "home"))
        make_inputs(root / "inputs")
        run_dir = root / "run"
        predict(NUCLEI, [root / "inputs"], run_dir)
        before = tree_digest(run_dir)
        template = root / "study-template.yaml"
        assert main(["export", "--template", str(template)]) == 0
        study = root / "study.yaml"
        fill_template(template, study)
        package = root / "package"
        assert main(["export", str(run_dir), "--to", str(package), "--metadata", str(study)]) == 0
        yield {
            "root": root,
            "inputs": root / "inputs",
            "run": run_dir,
            "package": package,
            "template": template,
            "study": study,
            "run_before": before,  # type: ignore[dict-item]
        }


@pytest.fixture(scope="module")
def record(workspace: dict[str, Path]) -> dict[str, Any]:
    return json.loads((workspace["run"] / RECORD_NAME).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ layout


def test_run_has_a_failure_and_successes(record: dict[str, Any]) -> None:
    statuses = sorted(f["status"] for f in record["files"])
    assert statuses == ["failed", "ok", "ok", "ok"]


def test_package_layout_and_path_rules(workspace: dict[str, Path]) -> None:
    package = workspace["package"]
    files = sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file())
    for required in (
        "ro-crate-metadata.json",
        "README.md",
        "filelists/images.tsv",
        "filelists/annotations_probability.tsv",
        "metadata/rembi_mifa.yaml",
        "metadata/submission.pagetab.tsv",
        "metadata/zenodo.json",
        "provenance/model/rdf.yaml",
        "provenance/run.json",
        "manifest-sha256.txt",
    ):
        assert required in files
    for path in files:
        assert SAFE_PATH.fullmatch(path), path
    top = {p.split("/")[0] for p in files}
    assert top <= {
        "ro-crate-metadata.json",
        "README.md",
        "images",
        "annotations",
        "processed",
        "filelists",
        "metadata",
        "provenance",
        "manifest-sha256.txt",
    }
    assert sorted(f for f in files if f.startswith("images/")) == [
        "images/Zelle-a_2.ome.tif",
        "images/cell_image_0.ome.tif",
        "images/cell_image_1.ome.tif",
    ]
    assert len([f for f in files if f.startswith("annotations/probability/")]) == 3
    # No temporary folder is left beside the package.
    assert [p.name for p in package.parent.iterdir() if p.name.startswith(".")] == []


def test_model_description_copied(workspace: dict[str, Path], record: dict[str, Any]) -> None:
    copy = workspace["package"] / "provenance/model/rdf.yaml"
    assert copy.read_bytes() == (NUCLEI / "bioimageio.yaml").read_bytes()
    assert sha256(copy) == record["model"]["description_sha256"]


def test_run_dir_unchanged(workspace: dict[str, Path]) -> None:
    assert tree_digest(workspace["run"]) == workspace["run_before"]


# ------------------------------------------------------------------------------ images


def test_inputs_and_outputs_byte_for_byte(
    workspace: dict[str, Path], record: dict[str, Any]
) -> None:
    package = workspace["package"]
    copied_inputs = {sha256(p) for p in (package / "images").iterdir()}
    originals = {sha256(workspace["inputs"] / name) for name, _, _ in SAMPLES}
    assert copied_inputs == originals
    run_outputs = {o["sha256"] for f in record["files"] for o in f["outputs"]}
    exported = {sha256(p) for p in (package / "annotations/probability").iterdir()}
    assert exported == run_outputs
    for f in record["files"]:
        for o in f["outputs"]:
            assert sha256(workspace["run"] / o["path"]) == o["sha256"]


def test_outputs_are_valid_ome_with_source_pixel_sizes(workspace: dict[str, Path]) -> None:
    package = workspace["package"]
    schema = ome_schema()
    sizes = {name: size for name, _, size in SAMPLES}
    outputs = sorted((package / "annotations/probability").iterdir())
    assert len(outputs) == 3
    for output in outputs:
        with tifffile.TiffFile(output) as tif:
            xml = tif.ome_metadata
        assert xml is not None
        schema.validate(xml)
        image = read_image(output)
        provenance = image.metadata["provenance"]
        source_name = provenance["source_image"]
        assert image.pixel_sizes["X"] == pytest.approx((sizes[source_name], "µm"))
        assert image.pixel_sizes["Y"] == pytest.approx((sizes[source_name], "µm"))
        assert provenance["description"] == "model-generated, not manually curated"
        assert image.dtype == np.float32
        assert float(image.array.min()) >= 0.0 and float(image.array.max()) <= 1.0


# --------------------------------------------------------------------------- file lists


def test_image_file_list(workspace: dict[str, Path]) -> None:
    package = workspace["package"]
    header, rows = read_tsv(package / "filelists/images.tsv")
    assert header[0] == "Files"
    assert sorted(r["Files"] for r in rows) == sorted(
        p.relative_to(package).as_posix() for p in (package / "images").iterdir()
    )
    # Only attributes that tell the images apart: sizes and pixel sizes differ,
    # axes, pixel type and channel name are the same for all.
    assert "Dimensions" in header and "Physical Size X" in header
    assert "Axes" not in header and "Pixel Type" not in header and "Channels" not in header


def test_annotation_file_list(workspace: dict[str, Path], record: dict[str, Any]) -> None:
    package = workspace["package"]
    header, rows = read_tsv(package / "filelists/annotations_probability.tsv")
    assert header == ANNOTATION_HEADER
    assert len(rows) == 3
    weights = record["model"]["weights"]
    for row in rows:
        annotation = package / row["Files"]
        source = package / row["Source Image"]
        assert annotation.is_file() and source.is_file()
        assert row["Source Image"].startswith("images/")
        # The source image named is the one the annotation's own provenance names.
        assert read_image(annotation).metadata["provenance"]["source_image_sha256"] == sha256(
            source
        )
        assert row["Annotation Type"] == "other"  # probability maps
        assert row["Weights SHA256"] == weights["sha256"]
        assert row["Weights Format"] == "onnx"
        assert row["Run ID"] == record["run_id"]
        assert row["Model ID"] == "UNet 2D Nuclei Broad"  # the description has no id
        assert row["Annotation Creation Time"].startswith("20")


def test_manifest_lists_every_file(workspace: dict[str, Path]) -> None:
    package = workspace["package"]
    lines = (package / "manifest-sha256.txt").read_text(encoding="utf-8").splitlines()
    listed = {}
    for line in lines:
        digest, path = line.split("  ", 1)
        listed[path] = digest
    files = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*")
        if p.is_file() and p.name != "manifest-sha256.txt"
    }
    assert set(listed) == files
    for path, digest in listed.items():
        assert sha256(package / path) == digest


# ---------------------------------------------------------------------------- metadata


def test_failed_input_is_in_the_provenance(workspace: dict[str, Path]) -> None:
    package = workspace["package"]
    broken = str(workspace["inputs"] / BROKEN)
    run = json.loads((package / "provenance/run.json").read_text(encoding="utf-8"))
    failed = [f for f in run["files"] if f["input"] == broken]
    assert len(failed) == 1 and failed[0]["status"] == "failed" and failed[0]["error"]
    assert run["run_record"]["summary"] == {"total": 4, "failed": 1, "ok": 3}

    rembi = load_yaml(package / "metadata/rembi_mifa.yaml")
    annotation = rembi["annotations"][0]
    assert annotation["annotation_coverage"].startswith("3 of 4 images")
    assert [f["image"] for f in annotation["failures"]] == [broken]
    assert annotation["failures"][0]["error"] == failed[0]["error"]

    graph = crate_graph(package)
    actions = [e for e in graph.values() if "CreateAction" in types(e)]
    failed_actions = [
        a for a in actions if a["actionStatus"] == "http://schema.org/FailedActionStatus"
    ]
    assert len(failed_actions) == 1
    action = failed_actions[0]
    assert action["error"] == failed[0]["error"]
    source = graph[ids(action["object"])[0]]
    assert source["identifier"] == broken
    assert BROKEN in (package / "README.md").read_text(encoding="utf-8")


def test_mifa_annotation_fields(workspace: dict[str, Path], record: dict[str, Any]) -> None:
    rembi = load_yaml(workspace["package"] / "metadata/rembi_mifa.yaml")
    (annotation,) = rembi["annotations"]
    assert annotation["annotation_type"] == "other"
    assert annotation["annotation_confidence_level"] == "not human-verified"
    method = annotation["annotation_method"]
    for needed in (
        "UNet 2D Nuclei Broad",
        record["model"]["weights"]["sha256"],
        "onnx",
        record["software"]["onnxruntime"],
        record["software"]["zoodesk"],
        record["device"]["used"],
    ):
        assert needed in method
    assert annotation["file_list"] == "filelists/annotations_probability.tsv"


def test_acquisition_prefilled_from_images(workspace: dict[str, Path]) -> None:
    rembi = load_yaml(workspace["package"] / "metadata/rembi_mifa.yaml")
    found = rembi["image_acquisition"]["from_image_metadata"]
    assert found["images"] == 3
    assert found["channel_names"] == ["DAPI"]
    assert {"X": "0.65 µm", "Y": "0.65 µm"} in found["physical_pixel_sizes"]
    assert {"X": "0.5 µm", "Y": "0.5 µm"} in found["physical_pixel_sizes"]
    assert "YX 200 x 240 uint16" in found["dimensions"]


def test_template_round_trip(workspace: dict[str, Path]) -> None:
    package = workspace["package"]
    v = STUDY_VALUES
    template = workspace["template"].read_text(encoding="utf-8")
    assert "# " in template and "license: CC-BY-4.0" in template and "orcid" in template

    rembi = load_yaml(package / "metadata/rembi_mifa.yaml")
    assert rembi["study"]["title"] == v["title"]
    assert rembi["study"]["authors"][0]["orcid"] == v["orcid"]
    assert rembi["study"]["authors"][0]["affiliation"] == v["affiliation"]
    assert rembi["study"]["license"] == "CC-BY-4.0"
    assert v["keyword"] in rembi["study"]["keywords"]
    assert rembi["study"]["funding"] == [{"funder": v["funder"], "grant_id": v["grant"]}]
    assert rembi["biosample"]["organism"]["scientific_name"] == v["organism"]
    assert rembi["specimen"]["preparation"] == v["preparation"]
    assert rembi["image_acquisition"]["imaging_instrument_description"] == v["instrument"]

    pagetab = (package / "metadata/submission.pagetab.tsv").read_text(encoding="utf-8")
    lines = set(pagetab.splitlines())
    for line in (
        f"Title\t{v['title']}",
        f"Description\t{v['description']}",
        f"Name\t{v['author_name']}",
        f"ORCID\t{v['orcid']}",
        f"Name\t{v['affiliation']}",
        "License\tCC BY 4.0",
        f"Keyword\t{v['keyword']}",
        f"Organism\t{v['organism']}",
        f"Sample preparation protocol\t{v['preparation']}",
        f"grant_id\t{v['grant']}",
        "File List\tfilelists/images.tsv",
        "File List\tfilelists/annotations_probability.tsv",
    ):
        assert line in lines, line
    assert pagetab.splitlines()[0] == "Submission"

    zenodo = json.loads((package / "metadata/zenodo.json").read_text(encoding="utf-8"))["metadata"]
    assert zenodo["title"] == v["title"]
    assert zenodo["upload_type"] == "dataset"
    assert zenodo["license"] == "cc-by-4.0"
    assert zenodo["creators"] == [
        {"name": "Example, Ada", "affiliation": v["affiliation"], "orcid": v["orcid"]}
    ]
    assert v["keyword"] in zenodo["keywords"]
    assert v["description"] in zenodo["description"]
    related = {r["identifier"] for r in zenodo["related_identifiers"]}
    assert "10.1007/978-3-319-24574-4_28" in related  # the model's citation


def test_study_metadata_remembered(workspace: dict[str, Path]) -> None:
    assert load_last_study_metadata() is None  # this test's own, empty ZOODESK_HOME
    study = load_study_metadata(workspace["study"])
    save_last_study_metadata(study)
    again = load_last_study_metadata()
    assert again is not None and again.title == STUDY_VALUES["title"]
    assert again.authors[0].orcid == STUDY_VALUES["orcid"]


def test_bad_metadata_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "study.yaml"
    bad.write_text("authors:\n  - name: X\n    orcid: 12-34\n", encoding="utf-8")
    with pytest.raises(ZooDeskError, match=r"study.yaml: field 'authors.0.orcid'"):
        load_study_metadata(bad)


# ------------------------------------------------------------------------------- crate


def test_crate_actions_for_every_input(workspace: dict[str, Path], record: dict[str, Any]) -> None:
    package = workspace["package"]
    graph = crate_graph(package)
    root = graph["./"]
    assert "https://w3id.org/ro/wfrun/process/0.5" in ids(root["conformsTo"])
    assert root["name"] == STUDY_VALUES["title"] and root["license"] and root["datePublished"]
    actions = {a: graph[a] for a in ids(root["mentions"])}
    assert len(actions) == len(record["files"]) == 4

    by_input: dict[str, dict[str, Any]] = {}
    for action in actions.values():
        assert "CreateAction" in types(action)
        (app_id,) = ids(action["instrument"])
        app = graph[app_id]
        assert "SoftwareApplication" in types(app) and app["name"] == "ZooDesk"
        assert app["version"] == record["software"]["zoodesk"]
        requirements = {
            graph[r]["name"]: graph[r]["version"] for r in ids(app["softwareRequirements"])
        }
        for name in ("onnxruntime", "bioimageio.spec", "tifffile"):
            assert requirements[name] == record["software"][name]
        objects = [graph[o] for o in ids(action["object"])]
        source = objects[0]
        by_input[source.get("identifier") or source["description"]] = action
        model = next(o for o in objects if o.get("name") == "UNet 2D Nuclei Broad")
        assert graph[ids(model["subjectOf"])[0]]["@id"] == "provenance/model/rdf.yaml"
        assert "https://spdx.org/licenses/MIT" in ids(model["license"])
        assert ids(model["citation"])
        params = {o["name"]: o["value"] for o in objects if "PropertyValue" in types(o)}
        assert params["device"] == record["device"]["used"]
        assert params["weights_format"] == "onnx"
        assert action["startTime"] <= action["endTime"]
        if action["actionStatus"] == "http://schema.org/CompletedActionStatus":
            assert params["tile"] == "y=512 x x=512" and params["batch_size"] == "1"
            assert "halo" in params
            results = [graph[r] for r in ids(action["result"])]
            assert [r["@id"].split("/")[0] for r in results] == ["annotations"]
            assert all((package / r["@id"]).is_file() for r in results)
    for entry in record["files"]:
        action = next(a for key, a in by_input.items() if entry["input"] in key)
        expected = (
            "http://schema.org/CompletedActionStatus"
            if entry["status"] == "ok"
            else "http://schema.org/FailedActionStatus"
        )
        assert action["actionStatus"] == expected


def test_crate_files_have_format_size_and_checksum(workspace: dict[str, Path]) -> None:
    package = workspace["package"]
    graph = crate_graph(package)
    files = [e for e in graph.values() if "File" in types(e) and not e["@id"].startswith("#")]
    described = {e["@id"] for e in files if e["@id"] != "ro-crate-metadata.json"}
    on_disk = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*")
        if p.is_file() and p.name not in ("ro-crate-metadata.json", "manifest-sha256.txt")
    }
    # The provenance crate describes every file but the crates and the manifest.
    assert {p.relative_to(package).as_posix() for p in package.rglob("ro-crate-metadata.json")} == {
        "ro-crate-metadata.json",
        "provenance/ro-crate-metadata.json",
    }
    assert described == on_disk
    for entity in files:
        if entity["@id"] == "ro-crate-metadata.json":
            continue
        path = package / entity["@id"]
        assert entity["encodingFormat"]
        assert entity["contentSize"] == str(path.stat().st_size)
        assert entity["sha256"] == sha256(path)


def _validator() -> Path:
    candidates = [
        os.environ.get("ZOODESK_ROCRATE_VALIDATOR", ""),
        str(REPO / ".venv" / "rocrate-validator" / "bin" / "rocrate-validator"),
        shutil.which("rocrate-validator") or "",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.fail(
        "rocrate-validator (roc-validator==0.13.0) is not installed; tools/test.sh installs "
        "it into .venv/rocrate-validator (it cannot share .venv: it pins rich<14)"
    )


_WARM_CACHE = """
import io, sys
from pathlib import Path
import requests
from requests.adapters import BaseAdapter
from requests_cache import CachedSession
from urllib3 import HTTPResponse

cache, url, document = sys.argv[1:4]
body = Path(document).read_bytes()

class Local(BaseAdapter):
    def send(self, request, **kwargs):
        response = requests.Response()
        response.status_code = 200
        response.headers["Content-Type"] = "application/ld+json"
        response.raw = HTTPResponse(body=io.BytesIO(body), headers=dict(response.headers),
                                    status=200, preload_content=False, request_url=request.url)
        response._content = body
        response.url, response.request, response.encoding = request.url, request, "utf-8"
        return response
    def close(self):
        pass

session = CachedSession(cache_name=cache, backend="sqlite", expire_after=-1)
session.mount(url, Local())
assert session.get(url, headers={"Accept": "application/ld+json"}).status_code == 200
"""


def validator_env(validator: Path, cache_home: Path) -> dict[str, str]:
    """An environment whose validator HTTP cache holds the RO-Crate 1.1 context.

    Offline, the validator can expand the crate's JSON-LD only from its cache; with an
    empty cache it skips nearly every check and still reports success.  The context
    document is the one the ``rocrate`` package ships (RO-Crate 1.3's, whose terms are
    a superset of 1.1's with the same IRIs for every term the crate uses), stored for
    the 1.1 context URL as the validator's ``cache warm`` would store it.
    """
    document = resources.files("rocrate") / "data" / "ro-crate.jsonld"
    context = json.loads(document.read_text(encoding="utf-8"))["@context"]
    for term in (
        "CreateAction",
        "SoftwareApplication",
        "PropertyValue",
        "File",
        "instrument",
        "object",
        "result",
        "actionStatus",
        "error",
        "mentions",
        "conformsTo",
        "contentSize",
        "encodingFormat",
        "startTime",
        "endTime",
    ):
        assert context[term].startswith(("http://schema.org/", "http://purl.org/dc/terms/"))
    python = validator.parent / "python"
    cache = cache_home / "rocrate-validator" / "http_cache"
    cache.parent.mkdir(parents=True)
    subprocess.run(
        [
            str(python if python.exists() else sys.executable),
            "-c",
            _WARM_CACHE,
            str(cache),
            "https://w3id.org/ro/crate/1.1/context",
            str(document),
        ],
        check=True,
        timeout=120,
    )
    return {**os.environ, "XDG_CACHE_HOME": str(cache_home), "NO_COLOR": "1", "COLUMNS": "200"}


def test_rocrate_validator_passes(workspace: dict[str, Path], tmp_path: Path) -> None:
    validator = _validator()
    env = validator_env(validator, tmp_path / "cache")
    command = [
        str(validator),
        "-y",
        "validate",
        "-p",
        "process-run-crate-0.5",
        "-l",
        "required",
        "--offline",
        "-s",
        "ro-crate-1.1_3.1",
        "-s",
        "ro-crate-1.1_3.2",
        str(workspace["package"] / "provenance"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is a valid process-run-crate-0.5" in done.stdout
    # The same run, reported as JSON: no issue, and only the two configured skips
    # (a check that could not run offline would show up here as skipped too).
    done = subprocess.run(
        [*command[:-1], "-f", "json", command[-1]],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(done.stdout)
    assert report["passed"] is True and report["issues"] == []
    skipped = sorted(s["identifier"] for s in report["skipped_check_details"])
    assert skipped == ["ro-crate-1.1_3.1", "ro-crate-1.1_3.2"]


def test_rocrate_validator_catches_a_broken_crate(
    workspace: dict[str, Path], tmp_path: Path
) -> None:
    """The validator run above is meaningful: without the profile link it fails."""
    validator = _validator()
    env = validator_env(validator, tmp_path / "cache")
    package = tmp_path / "package"
    shutil.copytree(workspace["package"], package)
    metadata = package / "provenance" / "ro-crate-metadata.json"
    data = json.loads(metadata.read_text(encoding="utf-8"))
    for entity in data["@graph"]:
        if entity["@id"] == "./":
            entity.pop("conformsTo")
    metadata.write_text(json.dumps(data), encoding="utf-8")
    done = subprocess.run(
        [
            str(validator),
            "-y",
            "validate",
            "-p",
            "process-run-crate-0.5",
            "-l",
            "required",
            "--offline",
            "-s",
            "ro-crate-1.1_3.1",
            "-s",
            "ro-crate-1.1_3.2",
            "-f",
            "json",
            str(package / "provenance"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert json.loads(done.stdout)["passed"] is False


# ------------------------------------------------------------------------ check, refuse


def test_check_passes_then_reports_tampering(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_package(workspace["package"]) == []
    assert main(["export", "--check", str(workspace["package"])]) == 0
    package = tmp_path / "package"
    shutil.copytree(workspace["package"], package)
    target = sorted((package / "annotations/probability").iterdir())[0]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    (package / "images" / "extra.txt").write_text("stray", encoding="utf-8")
    capsys.readouterr()
    assert main(["export", "--check", str(package)]) == 1
    out = capsys.readouterr().out.splitlines()
    rel = target.relative_to(package).as_posix()
    assert f"{rel}: sha256 does not match the manifest (file changed)" in out
    assert "images/extra.txt: not listed in the manifest" in out
    assert any(
        line.startswith("provenance/ro-crate-metadata.json: ") and rel in line for line in out
    )


def test_check_reports_missing_source_image(workspace: dict[str, Path], tmp_path: Path) -> None:
    package = tmp_path / "package"
    shutil.copytree(workspace["package"], package)
    removed = sorted((package / "images").iterdir())[0]
    removed.unlink()
    messages = [str(p) for p in check_package(package)]
    rel = removed.relative_to(package).as_posix()
    assert f"{rel}: listed in the manifest but missing" in messages
    assert any(
        "annotations_probability.tsv" in m and "Source Image" in m and rel in m for m in messages
    )


def test_check_reports_invalid_ome_and_wrong_pixel_size(
    workspace: dict[str, Path], tmp_path: Path
) -> None:
    package = tmp_path / "package"
    shutil.copytree(workspace["package"], package)
    target = sorted((package / "annotations/probability").iterdir())[0]
    image = read_image(target)
    write_ome_tiff(
        target,
        np.asarray(image.array),
        image.axes,
        pixel_sizes={"X": (9.0, "µm"), "Y": (9.0, "µm")},
    )
    with tifffile.TiffFile(target) as tif:
        xml = tif.ome_metadata
    rel = target.relative_to(package).as_posix()
    messages = [str(p) for p in check_package(package)]
    assert any(m.startswith(f"{rel}: physical size X is (9.0") for m in messages)
    # Now an OME-XML that breaks the schema.
    broken = xml.replace('SizeX="', 'SizeQ="')
    with tifffile.TiffFile(target) as tif:
        pixels = tif.pages[0].asarray()
    tifffile.imwrite(target, pixels, description=broken.encode("utf-8"), metadata=None)
    messages = [str(p) for p in check_package(package)]
    assert any(m.startswith(f"{rel}: OME-XML is not valid") for m in messages)


def test_second_export_refuses_without_overwrite(workspace: dict[str, Path]) -> None:
    before = tree_digest(workspace["package"])
    assert main(["export", str(workspace["run"]), "--to", str(workspace["package"])]) == 1
    assert tree_digest(workspace["package"]) == before


def test_overwrite_replaces_an_earlier_export(workspace: dict[str, Path], tmp_path: Path) -> None:
    package = tmp_path / "package"
    run_export(ExportRequest(workspace["run"], package))
    result = run_export(ExportRequest(workspace["run"], package, overwrite=True))
    assert result.destination == package.resolve()
    assert result.kept_folder is None and result.kept_files == ()
    # Exported without study metadata: a draft, whose missing fields are named.
    problems = check_package(package)
    assert drafts_aside(problems) == []
    assert [p.message.split("study's ")[1].split(",")[0] for p in problems] == ARCHIVE_FIELDS
    assert result.draft and result.missing_for_archive[0] == "title"
    assert [p.name for p in tmp_path.iterdir()] == ["package"]


def test_overwrite_moves_aside_what_zoodesk_did_not_write(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = tmp_path / "package"
    run_export(ExportRequest(workspace["run"], package))
    # The user's additions and edits to the earlier export.
    (package / "notes.txt").write_text("reviewer asked for tile 256", encoding="utf-8")
    (package / "figures").mkdir()
    (package / "figures" / "fig1.png").write_bytes(b"\x89PNG user figure")
    (package / "README.md").write_text("my own words", encoding="utf-8")
    code = main(["export", str(workspace["run"]), "--to", str(package), "--overwrite"])
    assert code == 0
    (kept,) = [p for p in tmp_path.iterdir() if p.name != "package"]
    assert re.fullmatch(r"package-kept-files-\d{8}-\d{6}", kept.name)
    assert {p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()} == {
        "notes.txt",
        "figures/fig1.png",
        "README.md",
    }
    assert (kept / "notes.txt").read_text(encoding="utf-8") == "reviewer asked for tile 256"
    assert (kept / "README.md").read_text(encoding="utf-8") == "my own words"
    err = capsys.readouterr().err
    assert (
        f"warning: {package.resolve()}: 3 file(s) there that ZooDesk had not written (added "
        f"or changed since the earlier export) were moved to {kept.resolve()}: README.md, "
        "figures/fig1.png, notes.txt"
    ) in err
    # The new export is whole and valid, with nothing of the user's left in it.
    assert drafts_aside(check_package(package)) == []
    assert not (package / "notes.txt").exists() and not (package / "figures").exists()
    assert (package / "README.md").read_text(encoding="utf-8") != "my own words"


def test_overwrite_never_deletes_a_folder_that_is_not_an_export(
    workspace: dict[str, Path], tmp_path: Path
) -> None:
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ZooDeskError, match="not a ZooDesk export"):
        run_export(ExportRequest(workspace["run"], precious, overwrite=True))
    assert (precious / "chapter1.txt").read_text(encoding="utf-8") == "keep me"


def test_export_inside_the_run_is_refused(workspace: dict[str, Path]) -> None:
    with pytest.raises(ZooDeskError, match="never modifies the run"):
        run_export(ExportRequest(workspace["run"], workspace["run"] / "package"))
    assert tree_digest(workspace["run"]) == workspace["run_before"]


def test_changed_output_fails_and_leaves_nothing(
    workspace: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(workspace["run"], run)
    output = sorted(run.glob("*.ome.tif"))[-1]
    data = bytearray(output.read_bytes())
    data[-1] ^= 0xFF
    output.write_bytes(bytes(data))
    destination = tmp_path / "out" / "package"
    with pytest.raises(ZooDeskError, match="changed since the run"):
        run_export(ExportRequest(run, destination))
    assert list((tmp_path / "out").iterdir()) == []


def test_missing_model_description_is_a_clear_error(
    workspace: dict[str, Path], record: dict[str, Any], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(workspace["run"], run)
    data = json.loads((run / RECORD_NAME).read_text(encoding="utf-8"))
    data["model"]["source"] = str(tmp_path / "gone" / "bioimageio.yaml")
    (run / RECORD_NAME).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ZooDeskError) as info:
        run_export(ExportRequest(run, tmp_path / "package"))
    message = str(info.value)
    assert "gone" in message and record["model"]["description_sha256"] in message
    assert not (tmp_path / "package").exists()


def test_cancel_leaves_nothing(workspace: dict[str, Path], tmp_path: Path) -> None:
    destination = tmp_path / "package"
    seen: list[Any] = []

    def cancelled() -> bool:
        return any(isinstance(e, ExportProgress) for e in seen)

    with pytest.raises(CancelledError):
        for event in export_run(ExportRequest(workspace["run"], destination), cancelled=cancelled):
            seen.append(event)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- other run kinds


def test_reference_inputs(workspace: dict[str, Path], tmp_path: Path) -> None:
    package = tmp_path / "package"
    result = run_export(ExportRequest(workspace["run"], package, inputs="reference"))
    assert result.mode == "reference"
    originals = {sha256(workspace["inputs"] / name) for name, _, _ in SAMPLES}
    in_package = {sha256(p) for p in package.rglob("*") if p.is_file()}
    assert not originals & in_package  # no input was copied
    header, rows = read_tsv(package / "filelists/images.tsv")
    assert header[0] == "Files" and "Original Path" in header and "Original SHA256" in header
    assert {r["Original SHA256"] for r in rows} == originals
    schema = ome_schema()
    for row in rows:
        companion = package / row["Files"]
        assert companion.name.endswith(".companion.ome")
        schema.validate(companion.read_text(encoding="utf-8"))
    _, annotations = read_tsv(package / "filelists/annotations_probability.tsv")
    assert {a["Source Image"] for a in annotations} == {r["Files"] for r in rows}
    graph = crate_graph(package)
    referenced = [
        e
        for e in graph.values()
        if e.get("identifier") in {str(workspace["inputs"] / n) for n, _, _ in SAMPLES}
    ]
    assert len(referenced) == 3
    for entity in referenced:
        assert entity["@id"].startswith("#") and entity["sha256"] in originals
    assert drafts_aside(check_package(package)) == []


@pytest.fixture(scope="module")
def demo_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in demo model (probability + mask outputs) run and exported."""
    from zoodesk.demo import demo_image_paths, demo_model_path

    root = tmp_path_factory.mktemp("demo-export")
    predict(demo_model_path(), demo_image_paths(), root / "run")
    package = root / "package"
    run_export(ExportRequest(root / "run", package, study=StudyMetadata(title="Demo")))
    return package


def drafts_aside(problems: list[Any]) -> list[Any]:
    """The problems of a package exported as a draft, less the draft's own (by name)."""
    return [p for p in problems if not p.message.startswith("draft: ")]


def test_labels_are_segmentation_masks(demo_package: Path) -> None:
    _, masks = read_tsv(demo_package / "filelists/annotations_mask.tsv")
    _, probabilities = read_tsv(demo_package / "filelists/annotations_probability.tsv")
    assert len(masks) == len(probabilities) == 3
    assert {r["Annotation Type"] for r in masks} == {"segmentation_mask"}
    assert {r["Annotation Type"] for r in probabilities} == {"other"}
    assert {r["Model ID"] for r in masks} == {"zoodesk-demo-blobs"}
    rembi = load_yaml(demo_package / "metadata/rembi_mifa.yaml")
    types_by_output = {a["output_id"]: a["annotation_type"] for a in rembi["annotations"]}
    assert types_by_output == {"probability": "other", "mask": "segmentation_mask"}
    for row in masks:
        image = read_image(demo_package / row["Files"])
        assert np.issubdtype(image.dtype, np.unsignedinteger)
        assert (demo_package / row["Source Image"]).is_file()
    assert drafts_aside(check_package(demo_package)) == []
