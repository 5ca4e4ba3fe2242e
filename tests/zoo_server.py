"""A local stand-in for the BioImage Model Zoo, served over real HTTP on 127.0.0.1.

It serves, on an ephemeral port:

- ``/collection/index.json``: the snapshot's collection index with every model's
  ``source`` rewritten to this server (and ``sha256`` matching what is served), plus
  an entry for the nuclei model under the id ``bioimage-io/unet2d-nuclei-broad``;
- ``/artifacts/<name>/files/rdf.yaml?version=<v>``: each snapshot description as
  YAML.  The snapshot stores descriptions as JSON, which cannot hold infinities: the
  ``null`` limits of format 0.4 ``data_range`` are written back as ``-.inf``/``.inf``
  as in the zoo's original files.  The one snapshot entry that only records a parse
  error of the uploaded file is served as such a broken upload;
- ``/artifacts/unet2d-nuclei-broad/files/<file>``: the nuclei model package, its
  ``bioimageio.yaml`` as ``rdf.yaml``.

``Range`` requests are honoured.  Faults can be injected per file name: drop the
connection mid-file, answer an HTTP error, stall, serve corrupted bytes, redirect,
trickle the body a byte at a time, or announce a huge ``Content-Length`` and wait.
Requests in absolute form (as sent to a proxy) are served like any other, so a second
server can stand in for a proxy.  Every request is recorded.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

from ruyaml import YAML

from tests.conftest import NUCLEI, SNAPSHOT

NUCLEI_DIR = NUCLEI
NUCLEI_NAME = "unet2d-nuclei-broad"
NUCLEI_ID = f"bioimage-io/{NUCLEI_NAME}"
NUCLEI_FILES = {
    "rdf.yaml": "bioimageio.yaml",
    **{p.name: p.name for p in NUCLEI_DIR.iterdir() if p.name != "bioimageio.yaml"},
}

FaultKind = Literal["drop", "status", "stall", "corrupt", "redirect", "trickle", "announce"]


@dataclass
class Fault:
    """A misbehaviour for requests whose path ends with a file name.

    ``times`` is how many requests it affects (None: all of them).  ``trickle``
    sends the first byte of the body at once, then one every ``interval`` seconds for
    at most ``seconds`` in all.  ``announce`` sends the headers with a
    ``Content-Length`` of ``length`` and no body, and waits up to ``seconds`` for the
    client to close the connection.
    """

    kind: FaultKind
    status: int = 500
    times: int | None = 1
    seconds: float = 3.0
    location: str = ""
    interval: float = 0.05
    length: int = 0


@dataclass
class Request:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    status: int = 0
    #: ``announce``: whether the client closed the connection before any body byte.
    closed_unread: bool = False
    #: Set when the server is done with the request (``trickle``, ``announce``).
    handled: threading.Event = field(default_factory=threading.Event)

    @property
    def file(self) -> str:
        return urlsplit(self.path).path.rsplit("/", 1)[-1]


def _broken_upload() -> bytes:
    # What the zoo holds for that model: a multipart form upload instead of YAML.
    return (
        b"------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
        b'Content-Disposition: form-data; name="rdf.yaml"; filename="rdf.yaml"\r\n'
        b"Content-Type: application/x-yaml\r\n\r\n"
    )


def _restore_infinities(data: dict[str, Any]) -> dict[str, Any]:
    for key in ("inputs", "outputs"):
        for tensor in data.get(key) or ():
            rng = tensor.get("data_range")
            if isinstance(rng, list) and len(rng) == 2:
                tensor["data_range"] = [
                    float("-inf") if rng[0] is None else rng[0],
                    float("inf") if rng[1] is None else rng[1],
                ]
    return data


@functools.cache
def snapshot_descriptions() -> dict[str, bytes]:
    """The served ``rdf.yaml`` of every snapshot model, by name (built once)."""
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    served = {}
    for path in sorted((SNAPSHOT / "rdfs").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if set(data) == {"error"}:
            served[path.stem] = _broken_upload()
            continue
        buffer = io.StringIO()
        yaml.dump(_restore_infinities(data), buffer)
        served[path.stem] = buffer.getvalue().encode("utf-8")
    return served


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log."""

    def do_GET(self) -> None:
        zoo = self.server.zoo
        record = Request(self.path, dict(self.headers.items()))
        zoo.requests.append(record)
        path = urlsplit(self.path).path
        fault = zoo.take_fault(path)
        if fault is not None and fault.kind == "stall":
            zoo.stopped.wait(fault.seconds)
            self.close_connection = True
            return
        if fault is not None and fault.kind == "status":
            record.status = fault.status
            self._send_plain(fault.status, b"injected failure\n")
            return
        if fault is not None and fault.kind == "announce":
            self._announce(record, fault)
            return
        if fault is not None and fault.kind == "redirect":
            record.status = 302
            self.send_response(302)
            self.send_header("Location", fault.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = zoo.body(path)
        if body is None:
            record.status = 404
            self._send_plain(404, b"not found\n")
            return
        if fault is not None and fault.kind == "corrupt":
            middle = len(body) // 2
            body = (
                body[:middle]
                + bytes(b ^ 0xFF for b in body[middle : middle + 16])
                + body[middle + 16 :]
            )
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and int(match.group(1)) < len(body):
            start = int(match.group(1))
            record.status = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        elif match:
            record.status = 416
            self._send_plain(416, b"range not satisfiable\n")
            return
        else:
            record.status = 200
            self.send_response(200)
        part = body[start:]
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if fault is not None and fault.kind == "drop":
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if fault is not None and fault.kind == "trickle":
            self._trickle(record, part, fault)
            return
        self.wfile.write(part)

    def _trickle(self, record: Request, part: bytes, fault: Fault) -> None:
        self.close_connection = True
        end = time.monotonic() + fault.seconds
        try:
            for i in range(len(part)):
                self.wfile.write(part[i : i + 1])
                self.wfile.flush()
                if self.server.zoo.stopped.wait(fault.interval) or time.monotonic() > end:
                    break
        finally:
            record.handled.set()

    def _announce(self, record: Request, fault: Fault) -> None:
        self.close_connection = True
        try:
            record.status = 200
            self.send_response(200)
            self.send_header("Content-Length", str(fault.length))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.flush()
            self.connection.settimeout(fault.seconds)
            try:
                data: bytes | None = self.rfile.read(1)
            except TimeoutError:
                data = None
            except ConnectionError:  # reset by the client
                data = b""
            record.closed_unread = data == b""
        finally:
            record.handled.set()

    def _send_plain(self, status: int, text: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    zoo: ZooServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that give up (timeouts, cancelled downloads) are part of the tests.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class ZooServer:
    """The running server; use :func:`running_zoo` or ``start``/``stop``."""

    requests: list[Request] = field(default_factory=list)
    faults: dict[str, Fault] = field(default_factory=dict)
    stopped: threading.Event = field(default_factory=threading.Event)
    _server: _Server | None = None
    _thread: threading.Thread | None = None
    #: Content served instead of the regular one, by path.
    overrides: dict[str, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the server is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def index_url(self) -> str:
        return f"{self.base_url}/collection/index.json"

    def rdf_url(self, name: str, version: str = "v0") -> str:
        return f"{self.base_url}/artifacts/{name}/files/rdf.yaml?version={version}"

    def start(self) -> ZooServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.zoo = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def fail(self, target: str, kind: FaultKind, **kwargs: Any) -> None:
        """Inject a fault for requests of a file name (``"weights.onnx"``) or a path
        (``"/artifacts/affable-shark/files/rdf.yaml"``)."""
        self.faults[target] = Fault(kind, **kwargs)

    def take_fault(self, path: str) -> Fault | None:
        with self._lock:
            name = path if path in self.faults else path.rsplit("/", 1)[-1]
            fault = self.faults.get(name)
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self.faults[name]
            return fault

    def requests_for(self, file_name: str) -> list[Request]:
        return [r for r in self.requests if r.file == file_name]

    def body(self, path: str) -> bytes | None:
        if path in self.overrides:
            return self.overrides[path]
        if path == "/collection/index.json":
            return self._build_index()
        match = re.fullmatch(r"/artifacts/([^/]+)/files/(.+)", path)
        if match is None:
            return None
        name, file = match.groups()
        if name == NUCLEI_NAME:
            source = NUCLEI_FILES.get(file)
            return (NUCLEI_DIR / source).read_bytes() if source else None
        if file == "rdf.yaml":
            return snapshot_descriptions().get(name)
        return None

    def _build_index(self) -> bytes:
        index = json.loads((SNAPSHOT / "index.json").read_text(encoding="utf-8"))
        for item in index["items"]:
            name = item["id"].split("/", 1)[1]
            rdf = self.body(f"/artifacts/{name}/files/rdf.yaml")
            for v in item["versions"]:
                v["source"] = self.rdf_url(name, v["version"])
                if rdf is not None:
                    v["sha256"] = hashlib.sha256(rdf).hexdigest()
        nuclei_rdf = self.body(f"/artifacts/{NUCLEI_NAME}/files/rdf.yaml") or b""
        index["items"].append(
            {
                "id": NUCLEI_ID,
                "type": "model",
                "versions": [
                    {
                        "version": "v0",
                        "source": self.rdf_url(NUCLEI_NAME, "v0"),
                        "sha256": hashlib.sha256(nuclei_rdf).hexdigest(),
                        "created_at": "2026-05-01T00:00:00Z",
                        "comment": None,
                    }
                ],
            }
        )
        index["count_per_type"]["model"] += 1
        index["total"] += 1
        return json.dumps(index, indent=1).encode("utf-8")


def running_zoo() -> Iterator[ZooServer]:
    """Generator for a pytest fixture: a started server, stopped afterwards."""
    server = ZooServer().start()
    try:
        yield server
    finally:
        server.stop()


def snapshot_model_names() -> list[str]:
    """Names of the snapshot's models (the index ids without ``bioimage-io/``)."""
    index = json.loads((SNAPSHOT / "index.json").read_text(encoding="utf-8"))
    return [i["id"].split("/", 1)[1] for i in index["items"] if i["type"] == "model"]
