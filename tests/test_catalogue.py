"""Catalogue: every real zoo description, search and filters, refresh over HTTP, offline use."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.zoo_server import NUCLEI_ID, SNAPSHOT, ZooServer, running_zoo
from zoodesk.cli import main
from zoodesk.models.catalogue import (
    CatalogueError,
    catalogue_from_snapshot,
    load_catalogue,
    refresh_catalogue,
)
from zoodesk.models.download import (
    DownloadError,
    NetworkDisabledError,
    NetworkOptions,
    check_url,
)
from zoodesk.settings import Settings

# Generous timeout (the machine may be busy), tiny backoff: fast retries.
FAST = NetworkOptions(timeout=15.0, attempts=3, backoff=0.01, backoff_max=0.02)

# --------------------------------------------------------- independent expectations


def _descriptions() -> dict[str, dict[str, Any]]:
    return {
        p.stem: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((SNAPSHOT / "rdfs").glob("*.json"))
    }


DESCRIPTIONS = _descriptions()


def _formats(d: dict[str, Any]) -> list[str]:
    weights = d.get("weights") or {}
    return [f for f, entry in weights.items() if isinstance(entry, dict)]


def _dims(d: dict[str, Any]) -> int | None:
    counts = []
    for t in d.get("inputs") or []:
        axes = t["axes"]
        if isinstance(axes, str):
            counts.append(sum(c in "xyz" for c in axes))
        else:
            counts.append(sum(a.get("type") == "space" for a in axes))
    return max(counts) if counts else None


def _accepted_by_bioimageio_core(d: dict[str, Any]) -> bool:
    """bioimageio.core's default check: the description valid in its own format."""
    from bioimageio.spec import InvalidDescr, ValidationContext, build_description

    d = copy.deepcopy(d)
    for t in d.get("inputs", []) + d.get("outputs", []):
        rng = t.get("data_range")
        if isinstance(rng, list):  # JSON lost the YAML infinities
            t["data_range"] = [
                -math.inf if rng[0] is None else rng[0],
                math.inf if rng[1] is None else rng[1],
            ]
    with ValidationContext(perform_io_checks=False):
        return not isinstance(build_description(d, format_version="discover"), InvalidDescr)


def _expected_action(d: dict[str, Any]) -> str:
    if not _accepted_by_bioimageio_core(d):
        return "none"
    formats = _formats(d)
    for fmt, action in (
        ("onnx", "run"),
        ("torchscript", "convert"),
        ("pytorch_state_dict", "convert-with-consent"),
        ("keras_hdf5", "convert-tensorflow"),
        ("tensorflow_saved_model_bundle", "convert-tensorflow"),
    ):
        if fmt in formats:
            return action
    return "none"


EXPECTED_ACTIONS = {name: _expected_action(d) for name, d in DESCRIPTIONS.items()}


@pytest.fixture(scope="module")
def snapshot_catalogue() -> Any:
    return catalogue_from_snapshot(SNAPSHOT)


@pytest.fixture
def home(isolated_home: Path) -> Path:
    """The test's empty ZOODESK_HOME (from conftest)."""
    return isolated_home


@pytest.fixture
def zoo() -> Iterator[ZooServer]:
    yield from running_zoo()


@pytest.fixture(scope="module")
def saved_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue folder refreshed once from a local zoo that is gone afterwards."""
    folder = tmp_path_factory.mktemp("saved") / "catalogue"
    for server in running_zoo():
        refresh_catalogue(
            settings=Settings(), index_url=server.index_url, options=FAST, folder=folder
        )
    return folder


def _install(saved: Path, home: Path) -> None:
    shutil.copytree(saved, home / "catalogue")


# ------------------------------------------------------------ the 137 descriptions


def test_snapshot_holds_the_documented_models() -> None:
    # Anchors from the snapshot's README, counted here from the JSON itself.
    assert len(DESCRIPTIONS) == 137
    formats = Counter(f for d in DESCRIPTIONS.values() for f in _formats(d))
    assert formats["pytorch_state_dict"] == 103
    assert formats["torchscript"] == 41
    assert formats["tensorflow_saved_model_bundle"] == 12
    assert formats["keras_hdf5"] == 8
    assert formats["onnx"] == 5


def test_every_snapshot_description_becomes_an_entry(snapshot_catalogue: Any) -> None:
    entries = {e.nickname: e for e in snapshot_catalogue.entries}
    assert set(entries) == set(DESCRIPTIONS)
    for name, d in DESCRIPTIONS.items():
        e = entries[name]
        assert e.id == f"bioimage-io/{name}"
        assert e.compatibility.action == EXPECTED_ACTIONS[name], name
        assert set(e.weights_formats) == set(_formats(d)), name
        assert e.spatial_dims == _dims(d), name
        if "name" in d:
            assert e.name == d["name"]
        if e.compatibility.action == "none":
            assert e.compatibility.reason
            assert not e.runnable


def test_rejected_descriptions_keep_what_could_be_read(snapshot_catalogue: Any) -> None:
    invalid = {e.nickname: e for e in snapshot_catalogue.entries if not e.valid}
    # bioimageio.core's default check (each description in its own format) rejects
    # these two; what it accepts is read (see test_descriptions.py).
    assert set(invalid) == {
        n for n, d in DESCRIPTIONS.items() if not _accepted_by_bioimageio_core(d)
    }
    assert set(invalid) == {"independent-mouse", "modest-spider"}
    spider = invalid["modest-spider"]
    assert spider.name == DESCRIPTIONS["modest-spider"]["name"]
    assert spider.weights_formats == ("torchscript",)
    assert spider.compatibility.reason.startswith("invalid description: outputs.0.axes")
    mouse = invalid["independent-mouse"]
    assert mouse.name == "independent-mouse"
    assert "unreadable" in mouse.compatibility.reason
    assert "mapping values are not allowed" in mouse.compatibility.reason


def test_compatibility_reasons(snapshot_catalogue: Any) -> None:
    owl = snapshot_catalogue.get("humorous-owl")
    assert owl.compatibility.action == "convert-tensorflow"
    assert owl.compatibility.weights_format == "keras_hdf5"
    assert "TensorFlow" in owl.compatibility.reason
    # All formats but torchscript are listed with null entries: not offered.
    whale = snapshot_catalogue.get("bioimage-io/charismatic-whale")
    assert whale.weights_formats == ("torchscript",)
    assert whale.compatibility.action == "convert"
    shark = snapshot_catalogue.get("affable-shark")
    assert shark.compatibility.action == "convert"
    assert shark.compatibility.weights_format == "torchscript"
    consent = [e for e in snapshot_catalogue.entries if e.compatibility.needs_consent]
    assert consent
    assert all(e.weights_formats and "torchscript" not in e.weights_formats for e in consent)
    assert all("consent" in e.compatibility.reason for e in consent)


def test_totals_match_independent_counts(snapshot_catalogue: Any) -> None:
    expected = Counter(EXPECTED_ACTIONS.values())
    dims = Counter(_dims(d) for d in DESCRIPTIONS.values())
    totals = snapshot_catalogue.totals()
    assert totals["models"] == 137
    for action in ("run", "convert", "convert-with-consent", "convert-tensorflow", "none"):
        assert totals[action] == expected[action]
    assert totals["2D"] == dims[2]
    assert totals["3D"] == dims[3]
    assert totals["invalid"] == 2
    assert expected["run"] == 5  # every ONNX model in the snapshot is valid


def _words(d: dict[str, Any], name: str) -> str:
    parts = [f"bioimage-io/{name}", str(d.get("name", name)), str(d.get("id", ""))]
    parts += [str(d.get("description", "")), " ".join(d.get("tags") or [])]
    return " ".join(parts).lower()


def test_search_and_filters(snapshot_catalogue: Any) -> None:
    cat = snapshot_catalogue

    def names(entries: Any) -> set[str]:
        return {e.nickname for e in entries}

    def where(pred: Any) -> set[str]:
        return {n for n, d in DESCRIPTIONS.items() if pred(n, d)}

    assert names(cat.search(weights_format="onnx")) == where(lambda n, d: "onnx" in _formats(d))
    assert len(cat.search(weights_format="torchscript")) == 41
    assert names(cat.search(tags=["nuclei"])) == where(
        lambda n, d: "nuclei" in [t.lower() for t in d.get("tags") or []]
    )
    assert names(cat.search(tags=["NUCLEI", "2d"])) == where(
        lambda n, d: {"nuclei", "2d"} <= {t.lower() for t in d.get("tags") or []}
    )
    assert names(cat.search(license="mit")) == where(
        lambda n, d: str(d.get("license", "")).lower() == "mit"
    )
    assert names(cat.search("Segmentation nucle")) == where(
        lambda n, d: "segmentation" in _words(d, n) and "nucle" in _words(d, n)
    )
    assert names(cat.search(dims=3)) == where(lambda n, d: _dims(d) == 3)
    assert names(cat.search(runnable=True)) == where(lambda n, d: EXPECTED_ACTIONS[n] != "none")
    assert names(cat.search(runnable=False)) == where(lambda n, d: EXPECTED_ACTIONS[n] == "none")
    combined = cat.search(weights_format="pytorch_state_dict", dims=3, runnable=True)
    assert names(combined) == where(
        lambda n, d: (
            "pytorch_state_dict" in _formats(d) and _dims(d) == 3 and EXPECTED_ACTIONS[n] != "none"
        )
    )
    assert combined  # the filters are not vacuous on this data
    assert cat.search("no-such-word-anywhere") == []


# ------------------------------------------------------------------ over the network


def test_refresh_then_browse_offline(home: Path, zoo: ZooServer) -> None:
    cat = refresh_catalogue(index_url=zoo.index_url, options=FAST)
    assert len(cat.entries) == 138
    fetched = {r.path.split("/")[2] for r in zoo.requests if r.file == "rdf.yaml"}
    assert len(fetched) == 138
    for e in cat.entries:
        if e.id != NUCLEI_ID:
            assert e.compatibility.action == EXPECTED_ACTIONS[e.nickname], e.id
    nuclei = cat.get(NUCLEI_ID)
    assert nuclei.compatibility.action == "run"
    assert nuclei.spatial_dims == 2
    assert nuclei.latest is not None
    assert nuclei.latest.source == zoo.rdf_url("unet2d-nuclei-broad")
    zoo.stop()

    offline = load_catalogue()
    assert offline.folder == home / "catalogue"
    assert [e.as_dict() for e in offline.entries] == [e.as_dict() for e in cat.entries]
    assert offline.age < timedelta(minutes=5)
    assert "fetched just now" in offline.describe_age()
    assert len(offline.search(weights_format="onnx")) == 6
    assert (home / "catalogue" / "rdfs" / "affable-shark.yaml").is_file()

    # An older catalogue shows its age.
    path = home / "catalogue" / "catalogue.json"
    data = json.loads(path.read_text())
    data["fetched_at"] = (datetime.now(UTC) - timedelta(days=3, hours=2)).isoformat()
    path.write_text(json.dumps(data))
    assert "(3 days old)" in load_catalogue().describe_age()
    assert load_catalogue().age > timedelta(days=3)


def test_refresh_uses_the_environment_index_url_and_reuses_unchanged(
    home: Path, zoo: ZooServer, monkeypatch: pytest.MonkeyPatch, saved_catalogue: Path
) -> None:
    _install(saved_catalogue, home)
    before = load_catalogue()
    monkeypatch.setenv("ZOODESK_INDEX_URL", zoo.index_url)
    zoo.overrides["/artifacts/affable-shark/files/rdf.yaml"] = (
        b"name: Shark, revised\ntype: model\nformat_version: 0.5.4\n"
    )
    cat = refresh_catalogue(options=FAST)
    assert cat.index_url == zoo.index_url
    # Only the index and the one description whose sha256 changed are fetched.
    assert sorted(r.path.split("?")[0] for r in zoo.requests) == [
        "/artifacts/affable-shark/files/rdf.yaml",
        "/collection/index.json",
    ]
    shark = cat.get("affable-shark")
    assert shark.name == "Shark, revised"
    assert not shark.valid
    unchanged = cat.get("polite-pig")
    assert (
        unchanged.as_dict()["compatibility"] == before.get("polite-pig").as_dict()["compatibility"]
    )
    assert unchanged.latest is not None
    assert unchanged.latest.source == zoo.rdf_url("polite-pig")  # versions from the new index


def test_refresh_keeps_models_whose_description_fails(home: Path, zoo: ZooServer) -> None:
    zoo.fail("/artifacts/affable-shark/files/rdf.yaml", "status", status=404, times=None)
    zoo.fail("/artifacts/polite-pig/files/rdf.yaml", "status", status=500, times=None)
    cat = refresh_catalogue(index_url=zoo.index_url, options=FAST)
    assert len(cat.entries) == 138
    shark = cat.get("affable-shark")
    assert not shark.runnable
    assert zoo.rdf_url("affable-shark") in shark.problems[0]
    assert "HTTP 404" in shark.problems[0]
    pig = cat.get("polite-pig")
    assert "HTTP 500" in pig.problems[0]
    assert "gave up after 3 attempts" in pig.problems[0]
    assert len(zoo.requests_for("rdf.yaml")) == 137 + 1 + 2  # 404 once, 500 three times
    assert cat.get("ambitious-sloth").runnable


def test_index_errors_are_reported_with_url_and_status(home: Path, zoo: ZooServer) -> None:
    zoo.fail("index.json", "status", status=404)
    with pytest.raises(
        DownloadError,
        match=r"GET http://127\.0\.0\.1:\d+/collection/index\.json: HTTP 404 Not Found$",
    ):
        refresh_catalogue(index_url=zoo.index_url, options=FAST)
    assert len(zoo.requests) == 1  # a 404 is not retried

    zoo.fail("index.json", "status", status=500, times=None)
    with pytest.raises(DownloadError) as info:
        refresh_catalogue(index_url=zoo.index_url, options=FAST)
    assert zoo.index_url in str(info.value)
    assert "HTTP 500 Internal Server Error (gave up after 3 attempts)" in str(info.value)
    assert len(zoo.requests) == 4
    with pytest.raises(CatalogueError, match="catalogue refresh"):
        load_catalogue()  # nothing was saved

    zoo.faults.clear()
    zoo.fail("index.json", "stall", seconds=2.0, times=None)
    options = NetworkOptions(timeout=0.2, attempts=2, backoff=0.01)
    with pytest.raises(DownloadError) as info:
        refresh_catalogue(index_url=zoo.index_url, options=options)
    assert f"GET {zoo.index_url}: no answer within 0.2 s (timed out)" in str(info.value)


def test_network_switch_and_http_policy(home: Path, zoo: ZooServer) -> None:
    with pytest.raises(NetworkDisabledError, match="network_enabled"):
        refresh_catalogue(
            settings=Settings(network_enabled=False), index_url=zoo.index_url, options=FAST
        )
    assert zoo.requests == []
    with pytest.raises(DownloadError, match="refused plain http"):
        check_url("http://example.org/index.json", Settings())
    check_url("http://example.org/index.json", Settings(allow_http=True))
    local_zoo = "http://localhost:8000/index.json"
    check_url("http://localhost:8000/index.json", Settings(index_url=local_zoo))
    check_url("https://example.org/index.json", Settings())
    with pytest.raises(DownloadError, match="only https"):
        check_url("ftp://example.org/index.json", Settings(allow_http=True))


# ------------------------------------------------------------------------------ CLI


def test_cli_refresh_search_and_report(
    home: Path, zoo: ZooServer, capsys: pytest.CaptureFixture[str], saved_catalogue: Path
) -> None:
    assert main(["catalogue", "search", "nuclei"]) == 1
    assert "zoodesk catalogue refresh" in capsys.readouterr().err

    _install(saved_catalogue, home)
    assert main(["catalogue", "refresh", "--index-url", zoo.index_url]) == 0
    out = capsys.readouterr().out
    assert f"saved 138 models from {zoo.index_url}" in out
    zoo.stop()

    assert main(["catalogue", "search", "nuclei", "--format", "onnx", "--2d", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"] == 138
    assert doc["age_seconds"] < 300
    found = {m["id"] for m in doc["matches"]}
    assert NUCLEI_ID in found
    assert all("onnx" in m["weights_formats"] and m["spatial_dims"] == 2 for m in doc["matches"])

    assert main(["catalogue", "search", "--3d", "--runnable"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("catalogue of ")
    expected_3d = sum(
        1 for n, d in DESCRIPTIONS.items() if _dims(d) == 3 and EXPECTED_ACTIONS[n] != "none"
    )
    assert out[-1] == f"{expected_3d} of 138 models match"

    assert main(["models", "report", "--catalogue", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = Counter(EXPECTED_ACTIONS.values())
    assert report["totals"]["models"] == 138
    assert report["totals"]["run"] == expected["run"] + 1  # the nuclei model
    assert report["totals"]["none"] == expected["none"]


def test_cli_report_over_the_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "report", "--catalogue", "--snapshot", str(SNAPSHOT)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = Counter(EXPECTED_ACTIONS.values())
    # A title, the column header, one line per model, the expected and the here totals.
    assert len(lines) == 137 + 4
    assert lines[-2].startswith(
        f"expected: 137 models, {expected['run']} run ONNX directly, {expected['convert']} "
        f"after torchscript conversion, {expected['convert-with-consent']} after "
        f"pytorch_state_dict conversion (needs consent), {expected['convert-tensorflow']} "
        f"after Keras/TensorFlow conversion, {expected['none']} cannot run"
    )
    assert lines[-1].startswith("this installation: ")
    owl = next(line for line in lines if line.startswith("humorous-owl "))
    assert "converts here" in owl or "needs TensorFlow" in owl


# --------------------------------------------------------------------- hostile input


def _zoodesk(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line in its own process (ZOODESK_HOME from the environment)."""
    return subprocess.run(
        [sys.executable, "-m", "zoodesk.cli", *args], capture_output=True, text=True, timeout=300
    )


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


DEPTH = 100_000
DEEP_LIST = b"[" * DEPTH + b"]" * DEPTH
DEEP_OBJECT = b'{"a":' * DEPTH + b"1" + b"}" * DEPTH


@pytest.mark.parametrize("deep", [DEEP_LIST, DEEP_OBJECT], ids=["list", "object"])
def test_an_index_nested_too_deeply_is_one_line(home: Path, zoo: ZooServer, deep: bytes) -> None:
    zoo.overrides["/collection/index.json"] = deep
    line = _error_line(_zoodesk("catalogue", "refresh", "--index-url", zoo.index_url))
    assert line.startswith(f"error: {zoo.index_url}: not a collection index (nested too deeply")
    assert not (home / "catalogue").exists()


def test_a_saved_catalogue_nested_too_deeply_is_one_line(home: Path, zoo: ZooServer) -> None:
    folder = home / "catalogue"
    folder.mkdir()
    (folder / "catalogue.json").write_bytes(b'{"entries":' + DEEP_LIST + b"}")
    line = _error_line(_zoodesk("catalogue", "search", "nuclei"))
    assert line.startswith(f"error: {folder / 'catalogue.json'}: the saved catalogue is unreadable")
    assert "nested too deeply" in line
    # A refresh replaces it.
    done = _zoodesk("catalogue", "refresh", "--index-url", zoo.index_url)
    assert done.returncode == 0, done.stderr
    assert len(load_catalogue().entries) == 138


def test_an_alias_bomb_in_one_entry_fails_that_entry_and_the_others_refresh(
    home: Path, zoo: ZooServer
) -> None:
    """Under a 3 GiB address-space cap, as the alias bomb would pass it by far."""
    from tests.test_descriptions import ALIAS_BOMB
    from tests.zoo_server import snapshot_model_names

    bombed = snapshot_model_names()[0]
    zoo.overrides[f"/artifacts/{bombed}/files/rdf.yaml"] = ALIAS_BOMB.encode()
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))\n"
        "from zoodesk.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "catalogue", "refresh", "--index-url", zoo.index_url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    entries = {e.id.split("/", 1)[-1]: e for e in load_catalogue().entries}
    assert len(entries) == 138
    assert any("aliases" in p for p in entries[bombed].problems), entries[bombed].problems
    assert sum(1 for e in entries.values() if e.valid) > 100
