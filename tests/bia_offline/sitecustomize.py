"""Serve the RO-Crate 1.1 JSON-LD context from a local file to the BIA validator.

The BioImage Archive's validator (``bia-ro-crate validate``) downloads the RO-Crate
1.1 context through three clients: rdflib (urllib), roc-validator (requests with
requests_cache) and pyld (its document loader).  With no network, each gets the local
copy named by ``ZOODESK_ROCRATE_CONTEXT``.  Loaded by Python at start-up when this
folder is on ``PYTHONPATH``; the installed validator is not changed.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

_FILE = os.environ.get("ZOODESK_ROCRATE_CONTEXT", "")
_URLS = {
    f"{scheme}://w3id.org/ro/crate/1.1/context{slash}"
    for scheme in ("https", "http")
    for slash in ("", "/")
}


def _body() -> bytes:
    return Path(_FILE).read_bytes()


def _serve_urllib() -> None:
    import urllib.request
    from email.message import Message

    class LocalContext(urllib.request.BaseHandler):
        handler_order = 100  # before the HTTP handlers

        def default_open(self, request: urllib.request.Request):  # type: ignore[no-untyped-def]
            url = request.get_full_url()
            if url not in _URLS:
                return None
            headers = Message()
            headers["Content-Type"] = "application/ld+json"
            response = urllib.response.addinfourl(io.BytesIO(_body()), headers, url, 200)
            response.msg = "OK"  # urllib's response processing reads it
            return response

    urllib.request.install_opener(urllib.request.build_opener(LocalContext()))


def _serve_requests() -> None:
    try:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3 import HTTPResponse
    except ImportError:
        return
    original = HTTPAdapter.send

    def send(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        if request.url not in _URLS:
            return original(self, request, *args, **kwargs)
        body = _body()
        response = requests.Response()
        response.status_code = 200
        response.headers["Content-Type"] = "application/ld+json"
        # A real urllib3 response: requests_cache reads its request_url.
        response.raw = HTTPResponse(
            body=io.BytesIO(body),
            headers=dict(response.headers),
            status=200,
            preload_content=False,
            request_url=request.url,
        )
        response._content = body
        response.url, response.request, response.encoding = request.url, request, "utf-8"
        return response

    HTTPAdapter.send = send


def _serve_pyld() -> None:
    try:
        import json

        from pyld import jsonld
    except ImportError:
        return
    fallback = jsonld.get_document_loader()

    def loader(url: str, options=None):  # type: ignore[no-untyped-def]
        if url in _URLS:
            return {
                "contentType": "application/ld+json",
                "contextUrl": None,
                "documentUrl": url,
                "document": json.loads(_body()),
            }
        return fallback(url, options or {})

    jsonld.set_document_loader(loader)


if _FILE:
    _serve_urllib()
    _serve_requests()
    _serve_pyld()
