"""Offline bundles: export on a connected machine, import on an air-gapped one."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import NUCLEI
from tests.zoo_server import NUCLEI_ID, running_zoo
from zoodesk.cli import main
from zoodesk.errors import ModelPackageError
from zoodesk.models import resolve_model
from zoodesk.models.bundle import BUNDLE_MANIFEST, BundleError, export_bundle, import_bundle
from zoodesk.models.cache import MANIFEST_NAME, ModelCache
from zoodesk.models.catalogue import load_catalogue


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle exported with the CLI on a 'connected' machine: the local zoo's
    catalogue, the downloaded nuclei model and an imported copy of it."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("connected")
    out = tmp_path_factory.mktemp("usb") / "transfer"
    try:
        mp.setenv("ZOODESK_HOME", str(home))
        for server in running_zoo():
            mp.setenv("ZOODESK_INDEX_URL", server.index_url)
            assert main(["catalogue", "refresh"]) == 0
            assert main(["models", "download", NUCLEI_ID]) == 0
        assert main(["models", "import", str(NUCLEI)]) == 0
        assert (
            main(
                [
                    "bundle",
                    "export",
                    str(out),
                    "-m",
                    "unet2d-nuclei-broad",
                    "--model",
                    "unet-2d-nuclei-broad",
                ]
            )
            == 0
        )
    finally:
        mp.undo()
    return out.with_suffix(".zdbundle")


def _run_onnx_test(root_ref: str) -> float:
    """Run the cached model's ONNX weights on its test input; return the max error."""
    package = resolve_model(root_ref)
    spec = package.spec
    (inp,), (outp,) = spec.inputs, spec.outputs
    assert [op.id for op in inp.preprocessing] == [
        "ensure_dtype",
        "zero_mean_unit_variance",
        "ensure_dtype",
    ]
    assert [op.id for op in outp.postprocessing] == ["sigmoid", "ensure_dtype"]
    x = np.load(package.verify(inp.test_tensor)).astype("float32")  # type: ignore[arg-type]
    expected = np.load(package.verify(outp.test_tensor))  # type: ignore[arg-type]
    x = (x - x.mean()) / (x.std() + 1e-6)
    weights = package.verify(package.executable_weights().source)
    session = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
    (raw,) = session.run(None, {session.get_inputs()[0].name: x})
    prediction = 1.0 / (1.0 + np.exp(-raw))
    assert prediction.shape == expected.shape
    return float(np.abs(prediction - expected).max())


def test_bundle_layout(bundle_file: Path) -> None:
    with zipfile.ZipFile(bundle_file) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read(BUNDLE_MANIFEST))
        infos = {i.filename: i for i in zf.infolist()}
    assert manifest["format"] == "zoodesk-bundle"
    assert manifest["catalogue"]["models"] == 138
    assert {m["key"] for m in manifest["models"]} == {
        "unet2d-nuclei-broad-v0",
        "unet-2d-nuclei-broad",
    }
    assert {"catalogue/catalogue.json", "catalogue/index.json"} <= names
    assert "catalogue/rdfs/affable-shark.yaml" in names
    assert f"models/unet2d-nuclei-broad-v0/{MANIFEST_NAME}" in names
    assert "models/unet2d-nuclei-broad-v0/weights.onnx" in names
    assert "models/unet-2d-nuclei-broad/weights.pt" in names
    assert infos["models/unet2d-nuclei-broad-v0/weights.onnx"].compress_type == zipfile.ZIP_STORED


def test_import_into_an_empty_home_without_network(
    bundle_file: Path, isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No server runs now; the network is even switched off.
    (isolated_home / "settings.json").parent.mkdir(parents=True, exist_ok=True)
    (isolated_home / "settings.json").write_text(json.dumps({"network_enabled": False}))
    assert main(["bundle", "import", str(bundle_file)]) == 0
    out = capsys.readouterr().out
    assert "installed UNet 2D Nuclei Broad as unet2d-nuclei-broad-v0" in out
    assert "installed the catalogue of" in out

    cache = ModelCache.from_settings()
    assert [m.key for m in cache.list()] == ["unet-2d-nuclei-broad", "unet2d-nuclei-broad-v0"]
    for model in cache.list():
        assert model.origin == "bundle"
        assert cache.verify(model).ok
    catalogue = load_catalogue()
    assert len(catalogue.entries) == 138
    assert catalogue.get(NUCLEI_ID).runnable
    assert len(catalogue.search("nuclei", runnable=True)) >= 1

    # The zoo id works as MODEL, and the model reproduces its test output.
    assert _run_onnx_test(NUCLEI_ID) < 1e-4
    assert _run_onnx_test("unet-2d-nuclei-broad") < 1e-4
    assert main(["models", "show", f"{NUCLEI_ID}/v0"]) == 0
    assert "runs the ONNX weights directly" in capsys.readouterr().out


def test_models_test_command_passes_on_the_imported_model(
    bundle_file: Path, isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_bundle(bundle_file)
    assert main(["models", "test", NUCLEI_ID, "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "passed"


def test_local_catalogue_newer_than_the_bundle_is_kept(
    bundle_file: Path, isolated_home: Path
) -> None:
    first = import_bundle(bundle_file)
    assert first.catalogue is not None
    path = isolated_home / "catalogue" / "catalogue.json"
    data = json.loads(path.read_text())
    data["fetched_at"] = "2999-01-01T00:00:00+00:00"
    path.write_text(json.dumps(data))
    second = import_bundle(bundle_file)
    assert second.catalogue is None
    assert "kept the local catalogue" in second.catalogue_note
    assert load_catalogue().fetched_at.year == 2999
    # Importing again replaces the models under their keys.
    assert sorted(m.key for m in second.models) == sorted(m.key for m in first.models)
    assert len(ModelCache.from_settings().list()) == 2


def _rewrite(bundle: Path, target: Path, change: dict[str, bytes | None]) -> Path:
    """Copy a bundle, replacing (bytes) or dropping (None) members, adding new ones."""
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            if info.filename in change:
                continue
            dst.writestr(info, src.read(info))
        for name, data in change.items():
            if data is not None:
                dst.writestr(name, data)
    return target


def test_tampered_bundles_are_refused(
    bundle_file: Path, isolated_home: Path, tmp_path: Path
) -> None:
    member = "models/unet2d-nuclei-broad-v0/weights.onnx"
    with zipfile.ZipFile(bundle_file) as zf:
        weights = bytearray(zf.read(member))
    same_size = bytearray(weights)
    same_size[5000] ^= 0xFF
    cases = {
        "same size, other bytes": (
            {member: bytes(same_size)},
            "weights.onnx: does not match the sha256 in its manifest; nothing installed",
        ),
        "larger than declared": (
            {member: bytes(weights) + bytes(1_000_000)},
            f"refused member '{member}': {len(weights) + 1_000_000} bytes where the manifest "
            f"declares {len(weights)}",
        ),
        "member outside the layout": (
            {"elsewhere/evil.txt": b"x"},
            "refused member 'elsewhere/evil.txt': not part of the bundle",
        ),
        "file not in the manifest": (
            {"models/unet2d-nuclei-broad-v0/extra.py": b"import os"},
            "not listed in its model's manifest",
        ),
        "escaping path": ({"models/../../evil.txt": b"x"}, "path leaves the package"),
    }
    for label, (change, message) in cases.items():
        bad = _rewrite(bundle_file, tmp_path / f"{label}.zdbundle", change)
        with pytest.raises((BundleError, ModelPackageError)) as info:
            import_bundle(bad)
        assert message in str(info.value), label
        assert str(bad) in str(info.value)
        assert ModelCache.from_settings().list() == [], label
        models = isolated_home / "models"
        assert not models.exists() or list(models.iterdir()) == [], label
        assert not (isolated_home / "catalogue").exists(), label
    assert not (tmp_path.parent / "evil.txt").exists()


def test_not_a_bundle(isolated_home: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("rdf.yaml", "name: x\n")
    with pytest.raises(BundleError, match="not a ZooDesk bundle"):
        import_bundle(plain)
    text = tmp_path / "text.zdbundle"
    text.write_text("hello")
    with pytest.raises(BundleError, match="not a readable ZooDesk bundle"):
        import_bundle(text)


def test_export_refuses_damaged_models(isolated_home: Path, tmp_path: Path) -> None:
    cache = ModelCache.from_settings()
    model = cache.import_package(NUCLEI)
    (model.root / "test_output.npy").unlink()
    with pytest.raises(BundleError, match=r"test_output\.npy is missing"):
        export_bundle(tmp_path / "out.zdbundle", [model.key])
    assert not (tmp_path / "out.zdbundle").exists()
    assert list(tmp_path.iterdir()) == []
