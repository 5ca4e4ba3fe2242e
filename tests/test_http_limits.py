"""The HTTP layer against hostile servers: local addresses, deadlines, announced sizes.

Everything runs over real HTTP on 127.0.0.1 (tests/zoo_server.py).  A zoo that is
*not* on this computer is configured as ``http://zoo.example.invalid``: its requests
go through a proxy, which is the local test server standing in (it serves requests
in absolute form like any other), so nothing ever leaves the machine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import NUCLEI
from tests.zoo_server import NUCLEI_NAME, ZooServer, running_zoo
from zoodesk.cli import main
from zoodesk.models._netguard import LocalAddressError, RequestGuard
from zoodesk.models.cache import ModelCache
from zoodesk.models.catalogue import (
    CatalogueError,
    load_catalogue,
    refresh_catalogue,
    refresh_catalogue_events,
)
from zoodesk.models.download import DownloadError, NetworkOptions, check_url, download_model
from zoodesk.settings import Settings

FAST = NetworkOptions(timeout=15.0, attempts=3, backoff=0.01, backoff_max=0.02, chunk_size=65536)
REMOTE = "http://zoo.example.invalid"
REMOTE_INDEX = f"{REMOTE}/collection/index.json"
SLOW = "the settings transfer_base_seconds and transfer_min_bytes_per_second set the deadline"


@pytest.fixture
def home(isolated_home: Path) -> Path:
    """The test's empty ZOODESK_HOME (from conftest)."""
    return isolated_home


@pytest.fixture
def zoo(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ZooServer]:
    for server in running_zoo():
        monkeypatch.setenv("ZOODESK_INDEX_URL", server.index_url)
        yield server


def _remote_settings(zoo: ZooServer) -> Settings:
    """A zoo that is not on this computer, reached through the local server as a proxy."""
    return Settings(index_url=REMOTE_INDEX, proxy=zoo.base_url, allow_http=True)


def _serve_index_as_remote(zoo: ZooServer, names: tuple[str, ...]) -> None:
    """Make the index list only these models, at the remote zoo's address."""
    index = json.loads(zoo.body("/collection/index.json") or b"")
    index["items"] = [i for i in index["items"] if i["id"].split("/", 1)[1] in names]
    for item in index["items"]:
        for v in item["versions"]:
            v["source"] = v["source"].replace(zoo.base_url, REMOTE)
    zoo.overrides["/collection/index.json"] = json.dumps(index).encode()


def _slow_settings(monkeypatch: pytest.MonkeyPatch, zoo: ZooServer) -> None:
    # Every request may take 2 s; its size adds next to nothing.
    monkeypatch.setenv("ZOODESK_TRANSFER_BASE_SECONDS", "2")
    monkeypatch.setenv("ZOODESK_TRANSFER_MIN_BYTES_PER_SECOND", "1e9")
    # The server builds its index once, slowly: not on the clock of a request.
    zoo.body("/collection/index.json")


# ------------------------------------------------------------------- local services

LOCAL_URLS = [
    "http://127.0.0.1:8000/rdf.yaml",
    "https://127.0.0.2/rdf.yaml",
    "http://localhost:8000/rdf.yaml",
    "https://LOCALHOST./rdf.yaml",
    "https://api.localhost/rdf.yaml",
    "https://[::1]:8443/rdf.yaml",
    "http://169.254.169.254/latest/meta-data/",
    "https://[fe80::1]/rdf.yaml",
    "http://0.0.0.0:8000/rdf.yaml",
    "https://[::]/rdf.yaml",
    "https://[::ffff:127.0.0.1]/rdf.yaml",
    # Shorthand the system resolver reads as 127.0.0.1.
    "http://127.1/rdf.yaml",
    "http://2130706433/rdf.yaml",
    "http://0x7f.0.0.1/rdf.yaml",
]


@pytest.mark.parametrize("url", LOCAL_URLS)
def test_only_a_local_zoo_may_point_to_local_addresses(url: str) -> None:
    settings = Settings(allow_http=True)
    host = re.escape(httpx.URL(url).host)
    with pytest.raises(DownloadError) as info:
        check_url(url, settings, zoo=f"{REMOTE}/collection/index.json")
    assert re.fullmatch(
        rf"{re.escape(url)}: refused: it points to a local address \({host}\) but the zoo "
        rf"{re.escape(REMOTE_INDEX)} is not on this computer",
        str(info.value),
    )
    # The zoo's own index URL decides, whether given or from the settings.
    with pytest.raises(DownloadError, match="refused: it points to a local address"):
        check_url(url, Settings(allow_http=True, index_url="https://bioimage.io/index.json"))
    check_url(url, settings, zoo="http://127.0.0.1:8000/collection/index.json")
    check_url(url, settings, zoo="http://localhost/collection/index.json")


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/rdf.yaml",
        "https://127.example.org/rdf.yaml",
        "https://10.1.2.3/rdf.yaml",
        "https://[2001:db8::1]/rdf.yaml",
    ],
)
def test_a_remote_zoo_may_point_to_other_remote_hosts(url: str) -> None:
    check_url(url, Settings(), zoo=REMOTE_INDEX)


def test_a_remote_zoo_cannot_send_the_refresh_to_local_services(home: Path, zoo: ZooServer) -> None:
    # The remote zoo's index (served through the proxy) lists every description on
    # 127.0.0.1: none is fetched, the entries say why, and the catalogue is saved.
    cat = refresh_catalogue(settings=_remote_settings(zoo), options=FAST)
    assert [r.path for r in zoo.requests] == [REMOTE_INDEX]
    assert len(cat.entries) == 138
    shark = cat.get("affable-shark")
    assert shark.problems == (
        f"description could not be fetched: {zoo.rdf_url('affable-shark')}: refused: it "
        f"points to a local address (127.0.0.1) but the zoo {REMOTE_INDEX} is not on this "
        "computer",
    )
    assert all("refused: it points to a local address" in e.problems[0] for e in cat.entries)
    assert list((home / "catalogue" / "rdfs").iterdir()) == []


def test_a_remote_zoo_cannot_redirect_to_local_services(home: Path, zoo: ZooServer) -> None:
    _serve_index_as_remote(zoo, ("affable-shark", "polite-pig", NUCLEI_NAME))
    local = zoo.rdf_url("affable-shark")
    zoo.fail("/artifacts/affable-shark/files/rdf.yaml", "redirect", location=local)
    cat = refresh_catalogue(settings=_remote_settings(zoo), options=FAST)
    shark = cat.get("affable-shark")
    assert shark.problems == (
        f"description could not be fetched: {local}: refused: it points to a local address "
        f"(127.0.0.1) but the zoo {REMOTE_INDEX} is not on this computer",
    )
    assert shark.rdf_file is None
    assert cat.get("polite-pig").valid  # the rest was fetched from the remote zoo
    # Every request went to the remote zoo (through the proxy), none to 127.0.0.1.
    assert all(r.path.startswith(f"{REMOTE}/") for r in zoo.requests)
    assert len(zoo.requests) == 1 + 3

    # A package file redirected to this computer: the download stops, nothing is kept.
    zoo.fail(
        "weights.onnx",
        "redirect",
        location=f"{zoo.base_url}/artifacts/{NUCLEI_NAME}/files/weights.onnx",
    )
    with pytest.raises(DownloadError, match=r"weights\.onnx: refused: it points to a local"):
        list(download_model(NUCLEI_NAME, settings=_remote_settings(zoo), options=FAST))
    assert all(r.path.startswith(f"{REMOTE}/") for r in zoo.requests)
    assert ModelCache(home / "models").list() == []


def test_a_name_that_resolves_to_a_local_address_is_refused_on_connecting(
    zoo: ZooServer,
) -> None:
    # Host names can hide a local address; the connection itself is checked.
    # ``localhost`` stands for any such name (HttpClient refuses it from the URL
    # already, so the guard under it is driven directly).
    guard = RequestGuard(refuse_local=lambda host: True)
    url = zoo.index_url.replace("127.0.0.1", "localhost")
    with (
        httpx.Client(transport=guard.transport(verify=True, proxy=None)) as client,
        pytest.raises(LocalAddressError) as info,
    ):
        client.get(url)
    assert info.value.host == "localhost"
    assert info.value.address in ("127.0.0.1", "::1")
    assert zoo.requests == []


# ------------------------------------------------------------------------ deadlines


def test_a_trickling_download_stops_at_its_deadline(
    home: Path, zoo: ZooServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _slow_settings(monkeypatch, zoo)
    zoo.fail("weights.onnx", "trickle", seconds=10.0, times=None)
    events: list[Any] = []
    options = NetworkOptions(timeout=15.0, attempts=3, backoff=0.01, chunk_size=1)
    with pytest.raises(DownloadError) as info:
        for event in download_model(NUCLEI_NAME, options=options):
            events.append(event)
    url = f"{zoo.base_url}/artifacts/{NUCLEI_NAME}/files/weights.onnx?version=v0"
    size = (NUCLEI / "weights.onnx").stat().st_size
    assert re.fullmatch(
        rf"GET {re.escape(url)}: too slow: not complete within its deadline of 2\.0 s "
        rf"\([\d,]+ of {size:,} bytes received\); {SLOW}",
        str(info.value),
    ), str(info.value)
    # The bytes were reported as they trickled in, and the attempt was not repeated.
    assert any(e.file == "weights.onnx" and e.done > 0 for e in events)
    assert len(zoo.requests_for("weights.onnx")) == 1
    # Nothing is installed; what arrived is kept to resume from.
    assert ModelCache(home / "models").list() == []
    assert [p.suffix for p in (home / "models").iterdir()] == [""]
    assert [p.suffix for p in (home / "models" / ".downloads").iterdir()] == [".part"]


def test_a_trickling_index_stops_the_refresh_at_its_deadline(
    home: Path, zoo: ZooServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _slow_settings(monkeypatch, zoo)
    zoo.fail("index.json", "trickle", seconds=10.0, times=None)
    events: list[Any] = []
    options = NetworkOptions(timeout=15.0, attempts=3, backoff=0.01, chunk_size=1)
    with pytest.raises(DownloadError) as info:
        for event in refresh_catalogue_events(options=options):
            events.append(event)
    assert re.fullmatch(
        rf"GET {re.escape(zoo.index_url)}: too slow: not complete within its deadline of "
        rf"2\.0 s \([\d,]+ of [\d,]+ bytes received\); {SLOW}",
        str(info.value),
    ), str(info.value)
    assert any(e.stage == "index" and e.done > 0 and e.total for e in events)
    assert len(zoo.requests) == 1
    with pytest.raises(CatalogueError):
        load_catalogue()  # nothing was saved


def test_the_deadline_covers_the_wait_for_an_answer(
    home: Path, zoo: ZooServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server accepts and says nothing: the per-read timeout (15 s) would let it
    # hold the request much longer than the deadline (2 s).
    _slow_settings(monkeypatch, zoo)
    zoo.fail("index.json", "stall", seconds=10.0, times=None)
    with pytest.raises(DownloadError) as info:
        refresh_catalogue(options=FAST)
    assert str(info.value) == (
        f"GET {zoo.index_url}: too slow: not complete within its deadline of 2.0 s "
        f"(0 bytes received); {SLOW}"
    )
    assert len(zoo.requests) == 1


# ---------------------------------------------------------------- announced sizes


def test_an_answer_announcing_more_than_the_limit_is_refused_from_its_headers(
    home: Path, zoo: ZooServer, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = 5 * 1024**4
    zoo.fail("index.json", "announce", length=huge, seconds=10.0)
    assert main(["catalogue", "refresh"]) == 1
    # (The progress bar, gone, may leave an empty line.)
    assert [line for line in capsys.readouterr().err.splitlines() if line] == [
        f"error: GET {zoo.index_url}: refused: the server announces 5,120 GB, more than "
        "the 64 MB accepted for an index or description"
    ]
    request = zoo.requests_for("index.json")[0]
    assert request.handled.wait(15)
    assert request.closed_unread  # the client hung up without waiting for the body
    assert len(zoo.requests) == 1

    zoo.fail("weights.onnx", "announce", length=huge, seconds=10.0)
    with pytest.raises(DownloadError) as info:
        list(download_model(NUCLEI_NAME, options=FAST))
    url = f"{zoo.base_url}/artifacts/{NUCLEI_NAME}/files/weights.onnx?version=v0"
    assert str(info.value) == (
        f"GET {url}: refused: the server announces 5,120 GB, more than the 16 GB accepted "
        "for a package file"
    )
    request = zoo.requests_for("weights.onnx")[0]
    assert request.handled.wait(15)
    assert request.closed_unread
    assert ModelCache(home / "models").list() == []
