"""Offline bundles: export on a connected machine, import on an air-gapped one."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import NUCLEI
from tests.zoo_server import NUCLEI_ID, running_zoo
from zoodesk.cli import main
from zoodesk.errors import ModelPackageError
from zoodesk.models import resolve_model
from zoodesk.models.bundle import BUNDLE_MANIFEST, BundleError, export_bundle, import_bundle
from zoodesk.models.cache import MANIFEST_NAME, CacheError, ModelCache
from zoodesk.models.catalogue import CatalogueError, load_catalogue


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
    now = datetime.now(UTC).replace(microsecond=0)  # after the bundle's refresh
    data["fetched_at"] = now.isoformat()
    path.write_text(json.dumps(data))
    second = import_bundle(bundle_file)
    assert second.catalogue is None
    assert "kept the local catalogue" in second.catalogue_note
    assert load_catalogue().fetched_at == now
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


def test_a_changed_weights_file_with_a_matching_manifest_is_refused(
    bundle_file: Path, isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bundle's model manifest is rewritten to match a changed weights file: the
    sha256 the description declares still refuses it."""
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(bundle_file) as zf:
        zf.extractall(unpacked)
        order = zf.infolist()
    model = unpacked / "models" / "unet2d-nuclei-broad-v0"
    weights = model / "weights.onnx"
    data = bytearray(weights.read_bytes())
    data[5000] ^= 0xFF
    weights.write_bytes(bytes(data))
    manifest = json.loads((model / MANIFEST_NAME).read_text())
    for f in manifest["files"]:
        if f["path"] == "weights.onnx":
            f["sha256"] = hashlib.sha256(data).hexdigest()
    (model / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    bad = tmp_path / "edited.zdbundle"
    with zipfile.ZipFile(bad, "w") as zf:
        for info in order:
            zf.write(unpacked / info.filename, info.filename, info.compress_type)

    assert main(["bundle", "import", str(bad)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {bad}: model 'unet2d-nuclei-broad-v0': weights.onnx: ")
    assert "sha256 mismatch with its description" in lines[0]
    assert lines[0].endswith("; nothing installed")
    assert ModelCache.from_settings().list() == []
    assert not (isolated_home / "catalogue").exists()


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


# ------------------------------------------------------ catalogues and manifests that lie

SECRET = b"name: a file outside the catalogue, never to be exported 7c1e5a\n"


def _with_catalogue(bundle: Path, target: Path, edit: Any) -> Path:
    """A copy of an exported bundle whose catalogue.json ``edit`` changed in place."""
    with zipfile.ZipFile(bundle) as zf:
        data = json.loads(zf.read("catalogue/catalogue.json"))
    edit(data)
    return _rewrite(bundle, target, {"catalogue/catalogue.json": json.dumps(data).encode()})


def _entry(data: dict[str, Any], nickname: str) -> dict[str, Any]:
    return next(e for e in data["entries"] if e["id"] == f"bioimage-io/{nickname}")


def _warnings(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith(("warning:", "error:"))]


def test_bundle_catalogue_naming_files_outside_is_refused(
    bundle_file: Path, isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_bytes(SECRET)
    escape = os.path.relpath(secret, isolated_home / "catalogue")
    assert escape.startswith("../")

    def point_outside(data: dict[str, Any]) -> None:
        # rdf_sha256 stays that of the index: a refresh would reuse "the saved copy".
        _entry(data, "affable-shark")["rdf_file"] = escape
        _entry(data, "polite-pig")["rdf_file"] = "../../../../etc/hostname"

    bad = _with_catalogue(bundle_file, tmp_path / "outside.zdbundle", point_outside)
    assert main(["bundle", "import", str(bad)]) == 0
    out, err = capsys.readouterr()
    (line,) = _warnings(err)
    assert line.startswith(f"warning: {bad}: the bundle's catalogue is not installed: ")
    assert "catalogue/catalogue.json: refused the entry 'bioimage-io/affable-shark': " in line
    assert f"rdf_file {escape!r} leads out of its folder (and 1 more)" in line
    assert "installed UNet 2D Nuclei Broad as unet2d-nuclei-broad-v0" in out
    assert len(ModelCache.from_settings().list()) == 2
    assert not (isolated_home / "catalogue").exists()

    # An installation that adopted such a catalogue earlier (or whose catalogue was
    # edited): its refresh and its next bundle never carry the outside file.
    with zipfile.ZipFile(bad) as zf:
        for name in zf.namelist():
            if name.startswith("catalogue/"):
                zf.extract(name, isolated_home)
    sloth = isolated_home / "catalogue" / "rdfs" / "ambitious-sloth.yaml"
    sloth.unlink()
    sloth.symlink_to(secret)
    for zoo in running_zoo():
        zoo.fail("/artifacts/polite-pig/files/rdf.yaml", "status", status=404, times=None)
        assert main(["catalogue", "refresh", "--index-url", zoo.index_url]) == 0
        refetched = {r.path.split("/")[2] for r in zoo.requests_for("rdf.yaml")}
    lines = _warnings(capsys.readouterr().err)
    catalogue_json = isolated_home / "catalogue" / "catalogue.json"
    assert sorted(lines) == [
        f"warning: {catalogue_json}: refused the entry 'bioimage-io/affable-shark': "
        f"rdf_file {escape!r} leads out of its folder; its description is fetched again",
        f"warning: {catalogue_json}: refused the entry 'bioimage-io/ambitious-sloth': "
        "rdf_file 'rdfs/ambitious-sloth.yaml' links outside its folder; its description "
        "is fetched again",
        f"warning: {catalogue_json}: refused the entry 'bioimage-io/polite-pig': "
        "rdf_file '../../../../etc/hostname' leads out of its folder; its description is "
        "fetched again",
    ]
    assert {"affable-shark", "ambitious-sloth", "polite-pig"} <= refetched
    catalogue = load_catalogue()
    assert catalogue.warnings == []
    assert catalogue.get("affable-shark").valid
    assert "HTTP 404" in catalogue.get("polite-pig").problems[0]
    saved = [p for p in (isolated_home / "catalogue").rglob("*") if p.is_file()]
    assert not any(p.is_symlink() or SECRET in p.read_bytes() for p in saved)

    exported = tmp_path / "again.zdbundle"
    assert main(["bundle", "export", str(exported), "-m", "unet2d-nuclei-broad-v0"]) == 0
    with zipfile.ZipFile(exported) as zf:
        assert not any(SECRET in zf.read(name) for name in zf.namelist())
    assert secret.read_bytes() == SECRET


def test_catalogues_dated_in_the_future_are_not_adopted(
    bundle_file: Path, isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    future = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)

    def postdate(data: dict[str, Any]) -> None:
        data["fetched_at"] = future.isoformat()

    bad = _with_catalogue(bundle_file, tmp_path / "future.zdbundle", postdate)
    assert main(["bundle", "import", str(bad)]) == 0
    (line,) = _warnings(capsys.readouterr().err)
    assert line.startswith(f"warning: {bad}: the bundle's catalogue is not installed: ")
    assert f"catalogue/catalogue.json: refused: the catalogue is dated {future.isoformat()}" in line
    assert not (isolated_home / "catalogue").exists()

    # A saved catalogue dated in the future is refused where it is read, so that it
    # blocks no later catalogue (the newer one wins).
    first = import_bundle(bundle_file)
    assert first.catalogue is not None
    path = isolated_home / "catalogue" / "catalogue.json"
    data = json.loads(path.read_text())
    data["fetched_at"] = "2999-01-01T00:00:00+00:00"
    path.write_text(json.dumps(data))
    with pytest.raises(CatalogueError, match=r"refused: the catalogue is dated 2999-01-01"):
        load_catalogue()
    assert main(["catalogue", "search", "nuclei"]) == 1
    (line,) = _warnings(capsys.readouterr().err)
    assert line.startswith(f"error: {path}: refused: the catalogue is dated 2999-01-01T00:00:00")
    again = import_bundle(bundle_file)
    assert again.catalogue is not None and not again.catalogue_refused
    assert load_catalogue().fetched_at == first.catalogue.fetched_at


def test_manifests_naming_files_outside_the_model_are_refused(
    isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = ModelCache.from_settings()
    model = cache.import_package(NUCLEI)
    manifest = model.root / MANIFEST_NAME
    original = manifest.read_text()
    # The outside file has the very size and sha256 the manifest records: only the
    # path check stands between it and an export.
    outside = tmp_path / "test_input.npy"
    outside.write_bytes((model.root / "test_input.npy").read_bytes())
    escape = os.path.relpath(outside, model.root)
    manifest.write_text(original.replace('"path": "test_input.npy"', f'"path": "{escape}"'))
    with pytest.raises(CacheError) as info:
        cache.get(model.key)
    assert str(info.value) == f"{manifest}: refused: path {escape!r} leads out of its folder"
    assert main(["bundle", "export", str(tmp_path / "out"), "-m", model.key]) == 1
    (line,) = _warnings(capsys.readouterr().err)
    assert line == f"error: {manifest}: refused: path {escape!r} leads out of its folder"
    assert not (tmp_path / "out.zdbundle").exists()

    # A link inside the model's folder to a file elsewhere is refused the same way.
    manifest.write_text(original)
    (model.root / "test_input.npy").unlink()
    (model.root / "test_input.npy").symlink_to(outside)
    with pytest.raises(CacheError, match=r"refused: path 'test_input\.npy' links outside"):
        cache.get(model.key)
    with pytest.raises(CacheError):
        export_bundle(tmp_path / "out.zdbundle", [model.key])
    assert not (tmp_path / "out.zdbundle").exists()
