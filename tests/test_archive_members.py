"""Model archives whose member names are odd get one clear line, never a traceback."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import pytest

from tests.conftest import NUCLEI
from zoodesk.cli import main
from zoodesk.models.cache import ModelCache


def _archive(path: Path, extra: list[tuple[str, bytes]]) -> Path:
    """The nuclei package as a zip, plus ``extra`` members."""
    with zipfile.ZipFile(path, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        for file in NUCLEI.iterdir():
            if file.is_file() and file.suffix in (".yaml", ".npy", ".md", ".onnx"):
                z.write(file, file.name)
        for name, data in extra:
            z.writestr(zipfile.ZipInfo(name), data)
    return path


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([(".", b"x")], "it names no file"),
        ([("notes.md", b"a"), ("notes.md/evil", b"b")], "is a file in the archive"),
        ([("x" * 300, b"long")], "longer than 255 bytes"),
        ([("test_input.npy", b"second copy")], "it appears twice"),
    ],
)
def test_odd_member_names_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], members: list, reason: str
) -> None:
    archive = _archive(tmp_path / "model.zip", members)
    assert main(["models", "import", str(archive)]) == 1
    err = capsys.readouterr().err
    assert reason in err and str(archive) in err.replace("\n", "")
    assert "Traceback" not in err
    assert ModelCache.from_settings().list() == []
    root = ModelCache.from_settings().root
    assert not root.exists() or [p.name for p in root.iterdir() if not p.name.startswith(".")] == []


def test_a_dot_folder_in_a_member_path_is_harmless(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "model.zip", [("./notes/./readme.txt", b"fine")])
    model = ModelCache.from_settings().import_package(archive)
    assert model.name == "UNet 2D Nuclei Broad"


def test_a_redirect_loop_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Loop(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", self.path + "x")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Loop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.json"
        code = main(["catalogue", "refresh", "--index-url", url])
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert code == 1
    assert "redirects too many times" in err and "Traceback" not in err
