"""Downloads over real HTTP (checksums, resume, retries, failures), the cache, imports."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import NUCLEI
from tests.zoo_server import NUCLEI_ID, ZooServer, running_zoo
from zoodesk.cli import main
from zoodesk.errors import CancelledError, ChecksumError, ModelPackageError
from zoodesk.models import resolve_model
from zoodesk.models.cache import MANIFEST_NAME, CachedModel, CacheError, ModelCache
from zoodesk.models.catalogue import CatalogueError
from zoodesk.models.download import (
    DownloadError,
    NetworkDisabledError,
    NetworkOptions,
    Progress,
    download_model,
)
from zoodesk.settings import Settings

FAST = NetworkOptions(timeout=15.0, attempts=3, backoff=0.01, backoff_max=0.02, chunk_size=65536)
# What a download of the nuclei model fetches: the description, the ONNX weights (the
# preferred format), the test tensors, the cover and the documentation.
NUCLEI_DOWNLOAD = {
    "rdf.yaml": "bioimageio.yaml",
    "weights.onnx": "weights.onnx",
    "test_input.npy": "test_input.npy",
    "test_output.npy": "test_output.npy",
    "cover0.png": "cover0.png",
    "README.md": "README.md",
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def home(isolated_home: Path) -> Path:
    """The test's empty ZOODESK_HOME (from conftest)."""
    return isolated_home


@pytest.fixture
def zoo(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ZooServer]:
    for server in running_zoo():
        monkeypatch.setenv("ZOODESK_INDEX_URL", server.index_url)
        yield server


def _download(
    ref: str = "unet2d-nuclei-broad", options: NetworkOptions = FAST
) -> list[Progress[CachedModel]]:
    return list(download_model(ref, options=options))


def _assert_nothing_installed(home: Path) -> None:
    models = home / "models"
    leftovers = sorted(p.name for p in models.iterdir()) if models.is_dir() else []
    assert leftovers == [], leftovers
    assert ModelCache(models).list() == []


# ------------------------------------------------------------------------- download


def test_download_verifies_and_installs(home: Path, zoo: ZooServer) -> None:
    events = _download("bioimage-io/unet2d-nuclei-broad/v0")
    model = events[-1].result
    assert model is not None
    assert model.key == "unet2d-nuclei-broad-v0"
    assert (model.id, model.version) == (NUCLEI_ID, "v0")
    assert model.root == home / "models" / "unet2d-nuclei-broad-v0"
    # Byte progress was reported for the weights, up to their full size.
    onnx_events = [e for e in events if e.file == "weights.onnx"]
    size = (NUCLEI / "weights.onnx").stat().st_size
    assert onnx_events[-1].done == onnx_events[-1].total == size
    assert len(onnx_events) > 2
    # Exactly the needed files, byte-identical to the package, recorded with sha256.
    on_disk = {p.name for p in model.root.iterdir()}
    assert on_disk == {*NUCLEI_DOWNLOAD, MANIFEST_NAME}
    recorded = {f.path: f.sha256 for f in model.files}
    for name, source in NUCLEI_DOWNLOAD.items():
        assert recorded[name] == _sha(NUCLEI / source) == _sha(model.root / name)
    manifest = json.loads((model.root / MANIFEST_NAME).read_text())
    assert manifest["source"] == zoo.rdf_url("unet2d-nuclei-broad")
    assert manifest["installed_at"]
    assert {f["path"] for f in manifest["files"] if f["declared"]} == {
        "weights.onnx",
        "test_input.npy",
        "test_output.npy",
    }
    assert model.weights_formats == ("onnx",)
    assert not (home / "models" / ".downloads").exists()
    # The same id now resolves wherever a MODEL is expected.
    for ref in ("unet2d-nuclei-broad", NUCLEI_ID, f"{NUCLEI_ID}/v0", "unet2d-nuclei-broad-v0"):
        package = resolve_model(ref)
        assert package.root == model.root
        assert package.spec.name == "UNet 2D Nuclei Broad"
    assert ModelCache.from_settings().verify(model.key).ok


def test_download_resumes_after_the_connection_drops(home: Path, zoo: ZooServer) -> None:
    zoo.fail("weights.onnx", "drop")
    model = _download()[-1].result
    assert model is not None
    requests = zoo.requests_for("weights.onnx")
    assert [r.status for r in requests] == [200, 206]
    half = (NUCLEI / "weights.onnx").stat().st_size // 2
    assert "Range" not in requests[0].headers
    # It resumes from what reached the disk: at most what the server sent before
    # dropping the connection (half the file).
    resumed_from = int(requests[1].headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_from <= half
    assert _sha(model.root / "weights.onnx") == _sha(NUCLEI / "weights.onnx")


def test_download_resumes_a_transfer_cancelled_earlier(home: Path, zoo: ZooServer) -> None:
    def cancel_after_some_bytes() -> bool:
        return any(r.file == "weights.onnx" for r in zoo.requests)

    small = NetworkOptions(timeout=15.0, attempts=3, backoff=0.01, chunk_size=1024)
    with pytest.raises(CancelledError):
        list(download_model("unet2d-nuclei-broad", options=small, cancel=cancel_after_some_bytes))
    assert ModelCache(home / "models").list() == []
    assert not any(p.name.startswith(".staging") for p in (home / "models").iterdir())
    partial = list((home / "models" / ".downloads").iterdir())
    assert len(partial) == 1
    kept = partial[0].stat().st_size
    assert 0 < kept < (NUCLEI / "weights.onnx").stat().st_size

    model = _download(options=small)[-1].result
    assert model is not None
    assert zoo.requests_for("weights.onnx")[-1].headers["Range"] == f"bytes={kept}-"
    assert _sha(model.root / "weights.onnx") == _sha(NUCLEI / "weights.onnx")


def test_corrupted_file_is_refused_and_nothing_is_installed(home: Path, zoo: ZooServer) -> None:
    zoo.fail("weights.onnx", "corrupt", times=None)
    with pytest.raises(ChecksumError) as info:
        _download()
    message = str(info.value)
    assert message.startswith(f"{zoo.base_url}/artifacts/unet2d-nuclei-broad/files/weights.onnx")
    assert "sha256 mismatch" in message
    assert "nothing was installed" in message
    _assert_nothing_installed(home)
    with pytest.raises(ModelPackageError):
        resolve_model("unet2d-nuclei-broad")


def test_description_not_matching_the_index_is_refused(home: Path, zoo: ZooServer) -> None:
    zoo.fail("/artifacts/unet2d-nuclei-broad/files/rdf.yaml", "corrupt")
    with pytest.raises(ChecksumError, match="does not match the sha256 in the index"):
        _download()
    _assert_nothing_installed(home)


def test_description_escaping_the_package_is_refused(home: Path, zoo: ZooServer) -> None:
    text = (NUCLEI / "bioimageio.yaml").read_text()
    zoo.overrides["/artifacts/unet2d-nuclei-broad/files/rdf.yaml"] = text.replace(
        "source: weights.onnx", "source: ../../escape.onnx"
    ).encode()
    with pytest.raises(ModelPackageError, match=r"'\.\./\.\./escape\.onnx': it leaves the package"):
        _download()
    _assert_nothing_installed(home)
    assert not any(r.file == "escape.onnx" for r in zoo.requests)


def test_http_errors_are_reported_with_url_and_status(home: Path, zoo: ZooServer) -> None:
    zoo.fail("test_output.npy", "status", status=404)
    with pytest.raises(DownloadError) as info:
        _download()
    url = f"{zoo.base_url}/artifacts/unet2d-nuclei-broad/files/test_output.npy?version=v0"
    assert str(info.value) == f"GET {url}: HTTP 404 Not Found"
    assert len(zoo.requests_for("test_output.npy")) == 1
    _assert_nothing_installed(home)

    zoo.fail("weights.onnx", "status", status=500, times=None)
    before = len(zoo.requests_for("weights.onnx"))
    with pytest.raises(DownloadError) as info:
        _download()
    assert "weights.onnx?version=v0: HTTP 500 Internal Server Error" in str(info.value)
    assert "(gave up after 3 attempts)" in str(info.value)
    assert len(zoo.requests_for("weights.onnx")) - before == 3
    _assert_nothing_installed(home)

    # A transient error that goes away is retried transparently.
    zoo.faults.clear()
    zoo.fail("weights.onnx", "status", status=503, times=2)
    assert _download()[-1].result is not None


def test_timeouts_are_reported(home: Path, zoo: ZooServer) -> None:
    zoo.fail("weights.onnx", "stall", seconds=3.0, times=None)
    options = NetworkOptions(timeout=0.3, attempts=2, backoff=0.01)
    with pytest.raises(DownloadError) as info:
        _download(options=options)
    url = f"{zoo.base_url}/artifacts/unet2d-nuclei-broad/files/weights.onnx?version=v0"
    assert str(info.value) == (
        f"GET {url}: no answer within 0.3 s (timed out) (gave up after 2 attempts)"
    )
    _assert_nothing_installed(home)


def test_unknown_model_and_version(home: Path, zoo: ZooServer) -> None:
    with pytest.raises(CatalogueError, match="no model 'no-such-model' in the collection index"):
        _download("no-such-model")
    with pytest.raises(CatalogueError, match=r"has no version 'v9' \(versions: v0\)"):
        _download("unet2d-nuclei-broad/v9")


def test_no_connection_when_the_network_is_off(home: Path, zoo: ZooServer) -> None:
    with pytest.raises(NetworkDisabledError, match="network_enabled is false"):
        list(download_model("unet2d-nuclei-broad", settings=Settings(network_enabled=False)))
    assert zoo.requests == []


def test_redirect_to_plain_http_is_refused(home: Path, zoo: ZooServer) -> None:
    zoo.fail("weights.onnx", "redirect", location="http://zoo.example.org/weights.onnx")
    with pytest.raises(
        DownloadError, match=r"http://zoo\.example\.org/weights\.onnx: refused plain"
    ):
        _download()
    _assert_nothing_installed(home)
    # A redirect that stays on an allowed URL is followed.
    zoo.fail(
        "weights.onnx",
        "redirect",
        location=f"{zoo.base_url}/artifacts/unet2d-nuclei-broad/files/weights.onnx?version=v0",
    )
    assert _download()[-1].result is not None


def test_proxy_and_ca_bundle_settings(home: Path, zoo: ZooServer) -> None:
    # A second local server stands in for the proxy: it receives absolute-form requests.
    for proxy in running_zoo():
        settings = Settings(proxy=proxy.base_url)
        events = list(
            download_model(
                "unet2d-nuclei-broad", settings=settings, index_url=zoo.index_url, options=FAST
            )
        )
        assert events[-1].result is not None
        assert zoo.requests == []  # nothing went to the server directly
        assert proxy.requests[0].path == zoo.index_url
        assert all(r.path.startswith("http://127.0.0.1:") for r in proxy.requests)
    missing = home / "missing-ca.pem"
    with pytest.raises(DownloadError, match=f"{missing}: cannot use this CA bundle"):
        list(download_model("unet2d-nuclei-broad", settings=Settings(ca_bundle=str(missing))))


# ----------------------------------------------------------------------------- cache


def test_verify_reports_damage_and_remove(
    home: Path, zoo: ZooServer, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _download()[-1].result
    assert model is not None
    cache = ModelCache.from_settings()
    weights = model.root / "weights.onnx"
    weights.chmod(stat.S_IWUSR | stat.S_IRUSR)
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF
    weights.write_bytes(bytes(data))
    (model.root / "test_input.npy").unlink()
    report = cache.verify(model.key)
    assert not report.ok
    assert report.checked == 6
    problems = {d.path: d.problem for d in report.damage}
    assert set(problems) == {"weights.onnx", "test_input.npy"}
    assert problems["test_input.npy"] == "missing"
    assert problems["weights.onnx"].startswith("sha256 mismatch")

    assert main(["models", "verify", model.key]) == 1
    err = capsys.readouterr().err
    assert f"{weights}: sha256 mismatch" in err
    assert "DAMAGED (2 of 6 files)" in err

    assert main(["models", "remove", NUCLEI_ID]) == 0
    assert f"removed {model.key}" in capsys.readouterr().out
    assert cache.list() == []
    assert not model.root.exists()
    with pytest.raises(CacheError, match="no cached model"):
        cache.find(model.key)


def test_cli_download_list_show(
    home: Path, zoo: ZooServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "download", "unet2d-nuclei-broad"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "unet2d-nuclei-broad-v0"
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["key"] for m in listed] == ["unet2d-nuclei-broad-v0"]
    assert listed[0]["id"] == NUCLEI_ID
    assert main(["models", "show", "unet2d-nuclei-broad", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["cached"] is True
    assert shown["compatibility"]["action"] == "run"
    assert shown["compatibility"]["spatial_dims"] == 2
    assert main(["models", "report", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"] == {
        "models": 1,
        "run": 1,
        "convert": 0,
        "convert-with-consent": 0,
        "convert-tensorflow": 0,
        "none": 0,
        "2D": 1,
        "3D": 0,
        "here": {"runs": 1},
        "passed_test_here": 0,
    }
    assert report["models"][0]["model"] == "unet2d-nuclei-broad-v0"
    assert main(["models", "verify", "--all"]) == 0
    assert "unet2d-nuclei-broad-v0: ok (6 files match their sha256)" in capsys.readouterr().out
    assert main(["models", "show", "nothing-like-this"]) == 1
    assert "no model 'nothing-like-this' in the cache" in capsys.readouterr().err


# ---------------------------------------------------------------------------- import


def test_import_folder_prints_the_key_last(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "import", str(NUCLEI)]) == 0
    lines = capsys.readouterr().out.splitlines()
    key = lines[-1]
    # The description has no id: the key comes from the name.
    assert key == "unet-2d-nuclei-broad"
    model = ModelCache.from_settings().get(key)
    assert model.origin == "import"
    assert Path(model.source) == NUCLEI.resolve()
    copied = {f.path for f in model.files}
    assert copied == {
        "bioimageio.yaml",
        "weights.onnx",
        "weights.pt",
        "environment.yaml",
        "test_input.npy",
        "test_output.npy",
        "test_input.png",
        "test_output.png",
        "cover0.png",
        "README.md",
    }
    for f in model.files:
        assert f.sha256 == _sha(NUCLEI / f.path)
    assert "unet2d.py (architecture) is not in the package" in model.notes
    assert resolve_model(key).root == model.root
    # Importing again replaces the model under the same key.
    again = ModelCache.from_settings().import_package(NUCLEI)
    assert again.key == key
    assert [m.key for m in ModelCache.from_settings().list()] == [key]


def _zip_folder(folder: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, prefix + p.name)
    return target


def test_import_zip(home: Path, tmp_path: Path) -> None:
    archive = _zip_folder(NUCLEI, tmp_path / "nuclei.zip", prefix="unet2d_nuclei_broad/")
    model = ModelCache.from_settings().import_package(archive)
    assert model.key == "unet-2d-nuclei-broad"
    # A zip is taken as it is, all files.
    assert {f.path for f in model.files} == {p.name for p in NUCLEI.iterdir()}
    package = resolve_model(model.key)
    assert package.verify(package.spec.weights["onnx"].source) == model.root / "weights.onnx"
    assert not (home / "unpacked").exists()  # nothing outside the cache
    assert sorted(p.name for p in (home / "models").iterdir()) == [model.key]


def test_import_refuses_damaged_packages(home: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(NUCLEI, damaged)
    (damaged / "weights.onnx").chmod(0o644)
    with (damaged / "weights.onnx").open("r+b") as fh:
        fh.seek(500)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ChecksumError, match=r"weights\.onnx: sha256 mismatch"):
        ModelCache.from_settings().import_package(damaged)
    _assert_nothing_installed(home)
    with pytest.raises(ModelPackageError, match="no such file"):
        ModelCache.from_settings().import_package(tmp_path / "missing.zip")


def _evil_zip(path: Path, name: str, data: bytes = b"x", *, link: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(NUCLEI / "bioimageio.yaml", "bioimageio.yaml")
        info = zipfile.ZipInfo(name)
        if link:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, data, zipfile.ZIP_DEFLATED)
    return path


@pytest.mark.parametrize(
    ("member", "data", "link", "reason"),
    [
        ("../outside.txt", b"x", False, "path leaves the package"),
        ("/etc/outside.txt", b"x", False, "path leaves the package"),
        ("C:/outside.txt", b"x", False, "path leaves the package"),
        ("weights.onnx", b"/etc/passwd", True, "it is a link"),
        ("bomb.bin", bytes(20_000_000), False, "implausible compression ratio"),
    ],
)
def test_import_refuses_unsafe_zips(
    home: Path, tmp_path: Path, member: str, data: bytes, link: bool, reason: str
) -> None:
    archive = _evil_zip(tmp_path / "evil.zip", member, data, link=link)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ModelPackageError, match=reason):
        ModelCache.from_settings().import_package(archive)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not Path("/etc/outside.txt").exists()
    _assert_nothing_installed(home)


def test_import_refuses_a_member_larger_than_its_header(home: Path, tmp_path: Path) -> None:
    archive = tmp_path / "lying.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(NUCLEI / "bioimageio.yaml", "bioimageio.yaml")
        zf.writestr("weights.onnx", bytes(range(256)) * 64)
    # Rewrite the declared size of the last member (local header and central directory).
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("weights.onnx")
    true_size = info.file_size.to_bytes(4, "little")
    fake_size = (100).to_bytes(4, "little")
    assert raw.count(true_size) == 2
    raw = bytearray(bytes(raw).replace(true_size, fake_size))
    archive.write_bytes(bytes(raw))
    with pytest.raises(ModelPackageError, match="does not match its header"):
        ModelCache.from_settings().import_package(archive)
    _assert_nothing_installed(home)


def test_description_yaml_is_loaded_safely(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "rdf.yaml").write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ModelPackageError, match="not readable YAML"):
        ModelCache.from_settings().import_package(folder)
    assert not (folder / "pwned").exists()
    assert not Path("pwned").exists()


# -------------------------------------------------------------- converted weights hook


def test_add_converted_weights_entry(home: Path, tmp_path: Path) -> None:
    # A package without ONNX weights, as one whose ONNX entry is yet to be converted.
    folder = tmp_path / "no-onnx"
    shutil.copytree(NUCLEI, folder)
    text = (folder / "bioimageio.yaml").read_text()
    start = text.index("  onnx:\n")
    end = text.index("  pytorch_state_dict:\n")
    (folder / "bioimageio.yaml").chmod(0o644)
    (folder / "bioimageio.yaml").write_text(text[:start] + text[end:])
    (folder / "weights.onnx").chmod(0o644)
    (folder / "weights.onnx").unlink()
    cache = ModelCache.from_settings()
    model = cache.import_package(folder)
    assert "onnx" not in model.load().spec.weights
    assert resolve_model(model.key).spec.weights.keys() == {"pytorch_state_dict", "torchscript"}

    converted = tmp_path / "out" / "weights_converted.onnx"
    converted.parent.mkdir()
    shutil.copyfile(NUCLEI / "weights.onnx", converted)
    updated = cache.add_weights(
        model.key,
        "onnx",
        converted,
        parent="torchscript",
        fields={"opset_version": 20},
        note="onnx weights converted from torchscript",
    )
    assert updated.key == model.key
    spec = resolve_model(model.key).spec
    onnx = spec.weights["onnx"]
    assert onnx.parent == "torchscript"
    assert onnx.opset_version == 20
    assert onnx.source.source == "weights_converted.onnx"
    assert onnx.source.sha256 == _sha(NUCLEI / "weights.onnx")
    assert "onnx" in updated.weights_formats
    assert "onnx weights converted from torchscript" in updated.notes
    assert cache.verify(updated).ok


# ------------------------------------------------------------------------- resolution


def test_resolve_model_explains_what_was_tried(home: Path) -> None:
    with pytest.raises(ModelPackageError) as info:
        resolve_model("bioimage-io/affable-shark/v0")
    message = str(info.value)
    assert "no file or folder 'bioimage-io/affable-shark/v0'" in message
    assert "no cached model with key or id 'bioimage-io/affable-shark/v0'" in message
    assert "is empty" in message
    assert "zoodesk models download bioimage-io/affable-shark/v0" in message
    # A path to a package loads directly, without the cache.
    assert resolve_model(str(NUCLEI)).root == NUCLEI.resolve()
