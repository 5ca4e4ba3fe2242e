"""The model library (built-in, cached and catalogue models) and remembered test results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import SNAPSHOT
from zoodesk.inference.checks import last_test_status, record_test_report
from zoodesk.inference.reproducibility import OutputComparison
from zoodesk.inference.reproducibility import TestReport as Report
from zoodesk.models.cache import ModelCache
from zoodesk.models.catalogue import INDEX_FILE, catalogue_from_snapshot, save_catalogue
from zoodesk.models.library import DEMO_ITEM_ID, build_library
from zoodesk.models.package import load_model_package
from zoodesk.settings import load_settings


def _save_snapshot_subset(tmp_path: Path, ids: list[str]) -> None:
    index = json.loads((SNAPSHOT / INDEX_FILE).read_text(encoding="utf-8"))
    index["items"] = [i for i in index["items"] if i["id"].split("/")[-1] in ids]
    folder = tmp_path / "snap"
    (folder / "rdfs").mkdir(parents=True)
    raw = json.dumps(index).encode()
    (folder / INDEX_FILE).write_bytes(raw)
    for name in ids:
        shutil.copy(SNAPSHOT / "rdfs" / f"{name}.json", folder / "rdfs" / f"{name}.json")
    catalogue = catalogue_from_snapshot(folder)
    rdfs = {e.rdf_file: (folder / e.rdf_file).read_bytes() for e in catalogue.entries if e.rdf_file}
    save_catalogue(catalogue, load_settings().catalogue_dir, raw, rdfs)


def test_fresh_install_has_only_the_demo_model() -> None:
    library = build_library()
    assert [i.item_id for i in library.items] == [DEMO_ITEM_ID]
    demo = library.items[0]
    assert demo.name == "ZooDesk demo blob detector"
    assert demo.origin == "builtin" and demo.installed
    assert demo.compatibility.action == "run"
    assert demo.description_path is not None and demo.description_path.name == "bioimageio.yaml"
    assert library.catalogue is None
    assert library.catalogue_note.startswith("no saved catalogue")
    assert build_library(include_demo=False).items == []


def test_cached_catalogue_and_builtin_models_in_one_list(tmp_path: Path, nuclei_dir: Path) -> None:
    _save_snapshot_subset(tmp_path, ["affable-shark", "nice-peacock", "humorous-owl"])
    cached = ModelCache.from_settings().import_package(nuclei_dir)
    library = build_library()
    ids = [i.item_id for i in library.items]
    assert ids[:2] == [DEMO_ITEM_ID, f"cache:{cached.key}"]
    assert sorted(ids[2:]) == sorted(
        f"zoo:bioimage-io/{n}" for n in ("affable-shark", "nice-peacock", "humorous-owl")
    )
    nuclei = library.get(f"cache:{cached.key}")
    assert nuclei is not None and nuclei.origin == "cached" and nuclei.installed
    assert nuclei.cached == cached
    assert set(nuclei.weights_formats) == {"onnx", "torchscript"}  # files in the package
    assert nuclei.compatibility.action == "run"
    shark = library.get("zoo:bioimage-io/affable-shark")
    assert shark is not None and not shark.installed
    assert shark.download_ref == "bioimage-io/affable-shark"
    assert shark.compatibility.action == "convert"
    assert "days old" in library.catalogue_note

    assert [i.item_id for i in library.search(show="installed")] == ids[:2]
    assert len(library.search(show="catalogue")) == 3
    assert [i.name for i in library.search("nuclei boundary")] == [
        "NucleiSegmentationBoundaryModel"
    ]
    assert [i.name for i in library.search(dims=3)] == [
        "Cell Segmentation from Membrane Staining for Plant Tissues"
    ]
    runnable = {i.name for i in library.search(runnable_only=True)}
    # A Keras model: it runs once converted with TensorFlow.
    assert "Cell Segmentation from Membrane Staining for Plant Tissues" in runnable
    assert "EmbryoNet base model" in runnable
    assert {i.name for i in library.search(weights_format="onnx")} >= {
        "UNet 2D Nuclei Broad",
        "ZooDesk demo blob detector",
        "EmbryoNet base model",
    }
    with pytest.raises(ValueError, match="unknown library filter"):
        library.search(show="everything")


def test_a_cached_zoo_model_appears_once_with_the_catalogue_information(
    tmp_path: Path,
) -> None:
    from zoodesk.models.cache import InstallInfo

    _save_snapshot_subset(tmp_path, ["nice-peacock"])
    entry = build_library().get("zoo:bioimage-io/nice-peacock")
    assert entry is not None and entry.entry is not None
    # Install a package under the zoo id, as a download would.
    cache = ModelCache.from_settings()
    from zoodesk.demo import demo_model_dir

    with cache.staging("test") as stage:
        package = stage / "package"
        shutil.copytree(demo_model_dir(), package)
        cache.install(
            package,
            "nice-peacock-v0",
            InstallInfo(
                name="EmbryoNet base model",
                id="bioimage-io/nice-peacock",
                version="v0",
                source="test",
                origin="download",
                description="bioimageio.yaml",
            ),
        )
    library = build_library()
    matching = [i for i in library.items if "peacock" in i.item_id]
    assert [i.item_id for i in matching] == ["cache:nice-peacock-v0"]
    assert matching[0].entry is not None
    assert matching[0].tags == entry.tags
    assert matching[0].license == entry.license


def test_test_results_are_remembered_per_description(tmp_path: Path, nuclei_dir: Path) -> None:
    package = load_model_package(nuclei_dir)
    assert last_test_status(package) is None
    report = Report(
        model=package.spec.name,
        passed=True,
        device="cpu",
        weights_format="onnx",
        outputs=[OutputComparison("probability", 1.5e-6, 0.0, 1e-3, 1e-3, 100.0, True)],
    )
    status = record_test_report(package, report)
    assert status.passed
    assert status.summary == "passed on cpu (onnx): max abs diff 1.5e-06"
    again = last_test_status(package.description_path)
    assert again == status
    # A changed description is a different model: untested.
    copy = tmp_path / "copy"
    shutil.copytree(nuclei_dir, copy)
    text = (copy / "bioimageio.yaml").read_text(encoding="utf-8")
    (copy / "bioimageio.yaml").write_text(text + "\n# changed\n", encoding="utf-8")
    assert last_test_status(copy / "bioimageio.yaml") is None
    failed = Report(
        model="m",
        passed=False,
        device="cpu",
        weights_format="onnx",
        outputs=[OutputComparison("probability", 0.5, 2000.0, 1e-3, 1e-3, 100.0, False)],
    )
    status = record_test_report(package, failed)
    assert (
        status.summary == "FAILED on cpu (onnx): max abs diff 0.5; outputs differing: probability"
    )
    assert last_test_status(package) == status
